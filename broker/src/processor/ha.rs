//! Replication requests: EXCHANGE_BROKER_HA_INFO (906, a slave asks the master for its HA
//! address), GET_BROKER_HA_STATUS (907, `rocketraft admin broker replicas`) and
//! NOTIFY_BROKER_ROLE_CHANGED (1008, from the controller).

use rocketraft_remoting::codes::response_code;
use rocketraft_remoting::{Refusal, RemotingCommand};

use super::Handled;
use crate::BrokerInner;

fn not_controller_mode() -> Refusal {
    Refusal::new(
        response_code::SERVICE_NOT_AVAILABLE,
        "this broker does not run in controller mode (enable_controller_mode = false)",
    )
}

/// 906: answers this broker's HA address and flushed offset (ExchangeHAInfoResponseHeader).
pub fn exchange_ha_info(inner: &BrokerInner, request: &RemotingCommand) -> Handled {
    let Some(replicas) = &inner.replicas else {
        return Err(not_controller_mode());
    };
    Ok(request
        .response_to(response_code::SUCCESS, None)
        .with_ext("masterHaAddress", replicas.ha_addr().to_string())
        .with_ext("masterFlushOffset", inner.store.flushed_phy_offset())
        .with_ext("masterAddress", inner.advertised.to_string()))
}

/// The body of GET_BROKER_HA_STATUS.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct HaStatus {
    broker_name: String,
    broker_id: i64,
    broker_addr: String,
    #[serde(flatten)]
    ha: crate::ha::HaSnapshot,
    max_phy_offset: i64,
    confirm_offset: i64,
    flushed_offset: i64,
    epochs: Vec<Epoch>,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Epoch {
    epoch: i32,
    start_offset: i64,
}

/// 907: role, epochs, offsets, SyncStateSet and, on a master, every slave's ack and lag.
pub fn ha_status(inner: &BrokerInner, request: &RemotingCommand) -> Handled {
    let (Some(ha), Some(replicas)) = (&inner.ha, &inner.replicas) else {
        return Err(not_controller_mode());
    };
    let status = HaStatus {
        broker_name: inner.config.broker_name.clone(),
        broker_id: replicas.broker_id(),
        broker_addr: inner.advertised.to_string(),
        ha: ha.snapshot(),
        max_phy_offset: inner.store.max_phy_offset(),
        confirm_offset: inner.store.confirm_offset(),
        flushed_offset: inner.store.flushed_phy_offset(),
        epochs: inner
            .store
            .epoch_entries()
            .into_iter()
            .map(|e| Epoch {
                epoch: e.epoch,
                start_offset: e.start_offset,
            })
            .collect(),
    };
    let body =
        serde_json::to_vec(&status).map_err(|e| Refusal::system_error(format!("encode: {e}")))?;
    Ok(request
        .response_to(response_code::SUCCESS, None)
        .with_body(body))
}

/// 1008: a controller (or the new master, telling the master it followed) says who the master
/// is now; applied in the background (a role change may truncate the log), only if its master
/// epoch is not older than the current one.
pub fn role_changed(inner: &BrokerInner, request: &RemotingCommand) -> Handled {
    let Some(replicas) = inner.replicas.clone() else {
        return Err(not_controller_mode());
    };
    let info = crate::replica::parse_role_notification(request)
        .ok_or_else(|| Refusal::system_error("NOTIFY_BROKER_ROLE_CHANGED without a masterEpoch"))?;
    tracing::info!(master = ?info.master_broker_id, epoch = info.master_epoch, "role change notified");
    tokio::spawn(async move { replicas.on_notification(info).await });
    Ok(request.response_to(response_code::SUCCESS, None))
}
