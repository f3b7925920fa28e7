//! The gRPC health checking protocol (`grpc.health.v1.Health`, Check and Watch) on the proxy's
//! port, for load balancers and Kubernetes gRPC probes in front of a row of proxies. It needs
//! no credentials, as probes carry none.
//!
//! A proxy serves when it can do its job: a NameServer of its list answers. Both the overall
//! status (service `""`) and `apache.rocketmq.v2.MessagingService` are SERVING then and
//! NOT_SERVING while no NameServer answers (a load balancer moves clients to a proxy that can
//! route them). At shutdown the status turns NOT_SERVING as the server stops (for Watch
//! streams still open); there is no drain period. Other service names answer NOT_FOUND.

use std::time::Duration;

use rocketraft_remoting::api::MqClientApi;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

/// The service name clients and probes ask about, besides `""`.
pub const MESSAGING_SERVICE: &str = "apache.rocketmq.v2.MessagingService";

/// How often the NameServers are asked.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// Sets the status of `""` and the messaging service.
pub async fn set(reporter: &HealthReporter, status: ServingStatus) {
    for name in ["", MESSAGING_SERVICE] {
        reporter.set_service_status(name, status).await;
    }
}

/// Asks the NameServers of `namesrv` (a `;` list) every `interval` and reports the outcome,
/// logging each change; runs until aborted.
pub async fn watch(
    reporter: HealthReporter,
    api: MqClientApi,
    namesrv: String,
    interval: Duration,
) {
    let mut last = None;
    loop {
        let status = match api.cluster_info(&namesrv).await {
            Ok(_) => ServingStatus::Serving,
            Err(e) => {
                if last != Some(ServingStatus::NotServing) {
                    tracing::warn!(%namesrv, error = %e, "no NameServer answers: the proxy reports NOT_SERVING to health checks");
                }
                ServingStatus::NotServing
            }
        };
        if last != Some(status) {
            if status == ServingStatus::Serving && last.is_some() {
                tracing::info!(%namesrv, "a NameServer answers again: the proxy reports SERVING");
            }
            set(&reporter, status).await;
            last = Some(status);
        }
        tokio::time::sleep(interval).await;
    }
}
