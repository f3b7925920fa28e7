//! The gRPC transport between Raft peers (client side): openraft's [`RaftNetworkV2`] over tonic.
//!
//! Every call has a deadline (openraft's per-RPC TTL, capped by the configured RPC timeout). A
//! peer that cannot be connected to is reported as [`Unreachable`], which makes openraft back off
//! instead of hammering it; other failures are [`NetworkError`]s. Failures of this module's own
//! helpers (a bad address, JSON coding) are [`TransportError`]s.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use openraft::alias::SnapshotOf;
use openraft::alias::VoteOf;
use openraft::errors::NetworkError;
use openraft::errors::RPCError;
use openraft::errors::ReplicationClosed;
use openraft::errors::StreamingError;
use openraft::errors::Unreachable;
use openraft::network::RPCOption;
use openraft::network::RaftNetworkFactory;
use openraft::raft::AppendEntriesRequest;
use openraft::raft::AppendEntriesResponse;
use openraft::raft::SnapshotResponse;
use openraft::raft::TransferLeaderRequest;
use openraft::raft::TransferLeaderResponse;
use openraft::raft::VoteRequest;
use openraft::raft::VoteResponse;
use openraft::BasicNode;
use openraft::RaftNetworkV2;
use rocketraft_common::trust::ClusterSecret;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde::Serialize;
use tonic::transport::Channel;
use tonic::transport::Endpoint;

use crate::auth;
use crate::auth::blob_request;
use crate::auth::method;
use crate::pb;
use crate::pb::raft_peer_client::RaftPeerClient;
use crate::types::NodeId;
use crate::types::TypeConfig;

/// The largest gRPC message a peer accepts or sends (snapshots travel in one message).
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

/// What went wrong in the transport before or after a call reached the peer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    /// The peer address is not a valid URI.
    #[error("bad peer address {addr:?}: {source}")]
    BadAddress {
        addr: String,
        #[source]
        source: Arc<tonic::transport::Error>,
    },
    /// A message could not be encoded as JSON.
    #[error("encoding: {0}")]
    Encode(#[source] Arc<serde_json::Error>),
    /// A message could not be decoded from JSON.
    #[error("decoding: {0}")]
    Decode(#[source] Arc<serde_json::Error>),
}

/// A peer's refusal of a Raft RPC (openraft's error on that peer), carried as its text: a JSON
/// string on the wire, as before this type existed, so peers of either version understand it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(transparent)]
#[error("{0}")]
pub(crate) struct PeerRefusal(String);

impl PeerRefusal {
    pub(crate) fn new(e: impl std::fmt::Display) -> Self {
        PeerRefusal(e.to_string())
    }
}

/// The gRPC metadata key the peer server sets on the errors it answers with itself (a request it
/// could not decode, an answer it could not encode), so the client side tells them from an
/// unreachable peer without reading the message.
pub(crate) const ANSWERED_BY_PEER: &str = "x-rocketraft-raft-answer";

/// Opens a lazily connecting channel to a peer's gRPC address (`host:port`).
pub(crate) fn channel(addr: &str, connect_timeout: Duration) -> Result<Channel, TransportError> {
    let uri = if addr.starts_with("http://") || addr.starts_with("https://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    let endpoint = Endpoint::from_shared(uri)
        .map_err(|e| TransportError::BadAddress {
            addr: addr.to_string(),
            source: Arc::new(e),
        })?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5));
    Ok(endpoint.connect_lazy())
}

pub(crate) fn peer_client(channel: Channel) -> RaftPeerClient<Channel> {
    RaftPeerClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

pub(crate) fn to_blob<T: Serialize>(v: &T) -> Result<pb::Blob, TransportError> {
    serde_json::to_vec(v)
        .map(|json| pb::Blob { json })
        .map_err(|e| TransportError::Encode(Arc::new(e)))
}

pub(crate) fn from_blob<T: DeserializeOwned>(b: &pb::Blob) -> Result<T, TransportError> {
    serde_json::from_slice(&b.json).map_err(|e| TransportError::Decode(Arc::new(e)))
}

/// Whether a gRPC failure means the peer could not be reached at all (and not an answer of the
/// peer server, which marks those with [`ANSWERED_BY_PEER`]).
pub(crate) fn is_unreachable(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
    ) && status.metadata().get(ANSWERED_BY_PEER).is_none()
}

/// Creates one [`PeerNetwork`] per target.
#[derive(Clone)]
pub struct NetworkFactory {
    pub(crate) rpc_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    /// This node's id, the sender of its RPCs.
    pub(crate) node_id: NodeId,
    /// With a secret, every RPC carries its proof ([`crate::auth`]).
    pub(crate) secret: Option<ClusterSecret>,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerNetwork;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerNetwork {
        let client = channel(&node.addr, self.connect_timeout)
            .map(peer_client)
            .map_err(Unreachable::from_string);
        PeerNetwork {
            target,
            addr: node.addr.clone(),
            client,
            rpc_timeout: self.rpc_timeout,
            node_id: self.node_id,
            secret: self.secret.clone(),
        }
    }
}

/// The connection to one peer.
pub struct PeerNetwork {
    target: NodeId,
    addr: String,
    client: Result<RaftPeerClient<Channel>, Unreachable<TypeConfig>>,
    rpc_timeout: Duration,
    node_id: NodeId,
    secret: Option<ClusterSecret>,
}

impl PeerNetwork {
    fn deadline(&self, option: &RPCOption) -> Duration {
        option
            .hard_ttl()
            .min(self.rpc_timeout.max(option.soft_ttl()))
    }

    fn client(&self) -> Result<RaftPeerClient<Channel>, RPCError<TypeConfig>> {
        self.client.clone().map_err(RPCError::Unreachable)
    }

    fn map_status(&self, what: &str, status: tonic::Status) -> RPCError<TypeConfig> {
        let msg = format!("{what} to node {} at {}: {status}", self.target, self.addr);
        if is_unreachable(&status) {
            RPCError::Unreachable(Unreachable::from_string(msg))
        } else {
            RPCError::Network(NetworkError::from_string(msg))
        }
    }

    async fn unary<Req: Serialize, Resp: DeserializeOwned>(
        &mut self,
        what: &'static str,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<TypeConfig>> {
        let mut client = self.client()?;
        let blob = to_blob(req).map_err(|e| RPCError::Network(NetworkError::from_string(e)))?;
        let path = match what {
            "append" => method::APPEND_ENTRIES,
            "transfer-leader" => method::TRANSFER_LEADER,
            _ => method::VOTE,
        };
        let mut request = blob_request(
            blob,
            self.secret.as_ref(),
            Some(self.node_id),
            Some(self.target),
            path,
        );
        request.set_timeout(self.deadline(option));
        let fut = async {
            match what {
                "append" => client.append_entries(request).await,
                "transfer-leader" => client.transfer_leader(request).await,
                _ => client.vote(request).await,
            }
        };
        let response = tokio::time::timeout(self.deadline(option), fut)
            .await
            .map_err(|_| {
                RPCError::Network(NetworkError::from_string(format!(
                    "{what} to node {} timed out",
                    self.target
                )))
            })?
            .map_err(|s| self.map_status(what, s))?;
        let result: Result<Resp, PeerRefusal> = from_blob(response.get_ref())
            .map_err(|e| RPCError::Network(NetworkError::from_string(e)))?;
        result.map_err(|e| {
            RPCError::Network(NetworkError::from_string(format!(
                "node {} refused {what}: {e}",
                self.target
            )))
        })
    }
}

impl RaftNetworkV2<TypeConfig> for PeerNetwork {
    type SnapshotData = Vec<u8>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.unary("append", &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.unary("vote", &rpc, &option).await
    }

    /// The leader hands leadership to `req`'s target: every voter is told (the target starts an
    /// election at once, the others stop waiting for the old leader's lease).
    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.unary("transfer-leader", &req, &option).await
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<TypeConfig>,
        snapshot: SnapshotOf<TypeConfig, Vec<u8>>,
        cancel: impl Future<Output = ReplicationClosed> + openraft::OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let mut client = self.client().map_err(|e| match e {
            RPCError::Unreachable(u) => StreamingError::Unreachable(u),
            other => StreamingError::Network(NetworkError::from_string(other.to_string())),
        })?;
        let header = serde_json::to_vec(&(&vote, &snapshot.meta))
            .map_err(|e| StreamingError::Network(NetworkError::from_string(e.to_string())))?;
        let bytes = snapshot.snapshot.len();
        let metadata = auth::metadata(
            self.secret.as_ref(),
            Some(self.node_id),
            Some(self.target),
            method::INSTALL_SNAPSHOT,
            &[&header, &snapshot.snapshot],
        );
        let mut request = tonic::Request::from_parts(
            metadata,
            tonic::Extensions::default(),
            pb::SnapshotTransfer {
                header,
                data: snapshot.snapshot,
            },
        );
        let ttl = option.hard_ttl();
        request.set_timeout(ttl);
        tracing::info!(target = self.target, bytes, "sending snapshot");
        let call = client.install_snapshot(request);
        let response = tokio::select! {
            closed = cancel => return Err(StreamingError::Closed(closed)),
            r = tokio::time::timeout(ttl, call) => r,
        };
        let response = response
            .map_err(|_| {
                StreamingError::Network(NetworkError::from_string(format!(
                    "snapshot to node {} timed out",
                    self.target
                )))
            })?
            .map_err(|s| match self.map_status("snapshot", s) {
                RPCError::Unreachable(u) => StreamingError::Unreachable(u),
                other => StreamingError::Network(NetworkError::from_string(other.to_string())),
            })?;
        let result: Result<SnapshotResponse<TypeConfig>, PeerRefusal> =
            from_blob(response.get_ref())
                .map_err(|e| StreamingError::Network(NetworkError::from_string(e)))?;
        result.map_err(|e| StreamingError::Network(NetworkError::from_string(e)))
    }
}
