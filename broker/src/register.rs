//! Registration with the NameServers (`BrokerOuterAPI.registerBrokerAll`): at start, every
//! `register_interval_ms`, and at once after a topic change; UNREGISTER_BROKER at shutdown.

use std::sync::Arc;
use std::time::Duration;

use rocketraft_common::protocol::RegisterBrokerBody;
use rocketraft_remoting::codes::{request_code, response_code};
use rocketraft_remoting::{RemotingClient, RemotingCommand};

use crate::BrokerInner;

const REGISTER_TIMEOUT: Duration = Duration::from_secs(6);

/// Registers with every NameServer once; returns how many accepted.
pub async fn register_all(inner: &BrokerInner, client: &RemotingClient) -> usize {
    let Some(broker_id) = inner.registered_broker_id() else {
        tracing::debug!("no role from the controller yet; not registering with the NameServers");
        return 0;
    };
    if broker_id == 0 && inner.replicas.is_some() {
        // A new master serves every topic its log holds, not only those copied from the old one.
        crate::replica::adopt_store_topics(inner);
    }
    let body = RegisterBrokerBody {
        topic_config_serialize_wrapper: inner.topics.wrapper(),
        filter_server_list: Vec::new(),
    };
    let body = match serde_json::to_vec(&body) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "cannot encode the registration body");
            return 0;
        }
    };
    let crc = (crc32fast::hash(&body) & 0x7FFF_FFFF) as i32;
    // Every NameServer at once, as RocketMQ's `registerBrokerAll` does on its executor: one that
    // is unreachable (a partition makes it wait out the timeout) does not hold back the others.
    let registrations = inner.config.namesrv_addrs().into_iter().map(|namesrv| {
        let request = RemotingCommand::request(request_code::REGISTER_BROKER)
            .with_ext("brokerName", inner.config.broker_name.clone())
            .with_ext("brokerAddr", inner.advertised.to_string())
            .with_ext("clusterName", inner.config.cluster_name.clone())
            .with_ext("haServerAddr", inner.ha_addr())
            .with_ext("brokerId", broker_id)
            .with_ext("compressed", "false")
            .with_ext("bodyCrc32", crc)
            .with_body(body.clone());
        async move {
            match client.invoke(&namesrv, request, REGISTER_TIMEOUT).await {
                Ok(r) if r.code == response_code::SUCCESS => true,
                Ok(r) => {
                    tracing::warn!(namesrv, code = r.code, remark = ?r.remark, "NameServer refused the registration");
                    false
                }
                Err(e) => {
                    tracing::warn!(namesrv, error = %e, "cannot register with the NameServer");
                    false
                }
            }
        }
    });
    futures::future::join_all(registrations)
        .await
        .into_iter()
        .filter(|accepted| *accepted)
        .count()
}

/// Re-registers periodically and whenever `register_trigger` fires, until aborted.
pub async fn registration_loop(inner: Arc<BrokerInner>, client: RemotingClient) {
    let mut ticker = tokio::time::interval(inner.config.register_interval());
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = inner.register_trigger.notified() => {}
        }
        register_all(&inner, &client).await;
    }
}

/// UNREGISTER_BROKER on every NameServer at once (best effort, at shutdown: one that is cut
/// off costs its timeout once, not once per NameServer).
pub async fn unregister_all(inner: &BrokerInner, client: &RemotingClient) {
    let broker_id = inner
        .registered_broker_id()
        .unwrap_or(inner.config.broker_id);
    let calls = inner.config.namesrv_addrs().into_iter().map(|namesrv| {
        let request = RemotingCommand::request(request_code::UNREGISTER_BROKER)
            .with_ext("brokerName", inner.config.broker_name.clone())
            .with_ext("brokerAddr", inner.advertised.to_string())
            .with_ext("clusterName", inner.config.cluster_name.clone())
            .with_ext("brokerId", broker_id);
        async move {
            if let Err(e) = client
                .invoke(&namesrv, request, Duration::from_secs(3))
                .await
            {
                tracing::debug!(namesrv, error = %e, "unregister failed");
            }
        }
    });
    futures::future::join_all(calls).await;
}
