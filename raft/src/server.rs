//! The peer gRPC server: openraft's RPCs, and client requests forwarded by other nodes.
//!
//! Requests forwarded by a follower are executed here only if this node leads; otherwise the
//! answer names the leader and the follower retries there (a forwarded request is never forwarded
//! again, so requests cannot loop).

use std::sync::Arc;

use openraft::raft::AppendEntriesRequest;
use openraft::raft::TransferLeaderRequest;
use openraft::raft::VoteRequest;
use openraft::Snapshot;
use tonic::Response;
use tonic::Status;

use crate::auth::method;
use crate::network::from_blob;
use crate::network::to_blob;
use crate::network::PeerRefusal;
use crate::network::ANSWERED_BY_PEER;
use crate::network::MAX_MESSAGE_BYTES;
use crate::node::AdminRequest;
use crate::node::NodeCore;
use crate::pb;
use crate::pb::raft_peer_server::RaftPeer;
use crate::pb::raft_peer_server::RaftPeerServer;
use crate::types::Request;
use crate::types::TypeConfig;

pub(crate) struct PeerService {
    core: Arc<NodeCore>,
}

/// An error this server answers with: marked so the client side tells it from an unreachable
/// peer (and prefixed "raft:" for whoever reads it).
fn answered(mut status: Status) -> Status {
    status.metadata_mut().insert(
        ANSWERED_BY_PEER,
        tonic::metadata::MetadataValue::from_static("1"),
    );
    status
}

fn bad_request(e: impl std::fmt::Display) -> Status {
    answered(Status::invalid_argument(format!("raft: {e}")))
}

fn answer<T: serde::Serialize>(v: &T) -> Result<Response<pb::Blob>, Status> {
    to_blob(v)
        .map(Response::new)
        .map_err(|e| answered(Status::internal(format!("raft: {e}"))))
}

impl PeerService {
    pub(crate) fn new(core: Arc<NodeCore>) -> Self {
        PeerService { core }
    }

    /// The one check of every RPC's authentication ([`crate::auth`]); before anything is
    /// decoded.
    fn authenticate<T>(
        &self,
        request: &tonic::Request<T>,
        method: &str,
        body: &[&[u8]],
    ) -> Result<(), Status> {
        self.core
            .verifier
            .check(request.metadata(), request.remote_addr(), method, body)
            .map_err(answered)
    }

    pub(crate) fn into_server(self) -> RaftPeerServer<Self> {
        RaftPeerServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }
}

#[tonic::async_trait]
impl RaftPeer for PeerService {
    async fn append_entries(
        &self,
        request: tonic::Request<pb::Blob>,
    ) -> Result<Response<pb::Blob>, Status> {
        self.authenticate(&request, method::APPEND_ENTRIES, &[&request.get_ref().json])?;
        let rpc: AppendEntriesRequest<TypeConfig> =
            from_blob(request.get_ref()).map_err(bad_request)?;
        let result = self
            .core
            .raft
            .append_entries(rpc)
            .await
            .map_err(PeerRefusal::new);
        answer(&result)
    }

    async fn vote(&self, request: tonic::Request<pb::Blob>) -> Result<Response<pb::Blob>, Status> {
        self.authenticate(&request, method::VOTE, &[&request.get_ref().json])?;
        let rpc: VoteRequest<TypeConfig> = from_blob(request.get_ref()).map_err(bad_request)?;
        let result = self.core.raft.vote(rpc).await.map_err(PeerRefusal::new);
        answer(&result)
    }

    async fn install_snapshot(
        &self,
        request: tonic::Request<pb::SnapshotTransfer>,
    ) -> Result<Response<pb::Blob>, Status> {
        let t = request.get_ref();
        self.authenticate(&request, method::INSTALL_SNAPSHOT, &[&t.header, &t.data])?;
        let transfer = request.into_inner();
        type Header = (
            openraft::alias::VoteOf<TypeConfig>,
            openraft::alias::SnapshotMetaOf<TypeConfig>,
        );
        let (vote, meta): Header = serde_json::from_slice(&transfer.header)
            .map_err(|e| bad_request(format!("snapshot header: {e}")))?;
        tracing::info!(?meta, bytes = transfer.data.len(), "receiving snapshot");
        let snapshot = Snapshot {
            meta,
            snapshot: transfer.data,
        };
        let result = self
            .core
            .raft
            .install_full_snapshot(vote, snapshot)
            .await
            .map_err(PeerRefusal::new);
        answer(&result)
    }

    async fn write(&self, request: tonic::Request<pb::Blob>) -> Result<Response<pb::Blob>, Status> {
        self.authenticate(&request, method::WRITE, &[&request.get_ref().json])?;
        let req: Request = from_blob(request.get_ref()).map_err(bad_request)?;
        answer(&self.core.write_local(req).await)
    }

    async fn read(&self, request: tonic::Request<pb::Blob>) -> Result<Response<pb::Blob>, Status> {
        self.authenticate(&request, method::READ, &[&request.get_ref().json])?;
        let query: String = from_blob(request.get_ref()).map_err(bad_request)?;
        answer(&self.core.read_local(&query).await)
    }

    async fn admin(&self, request: tonic::Request<pb::Blob>) -> Result<Response<pb::Blob>, Status> {
        self.authenticate(&request, method::ADMIN, &[&request.get_ref().json])?;
        let (req, route): (AdminRequest, bool) =
            from_blob(request.get_ref()).map_err(bad_request)?;
        let result = if route {
            self.core.admin(req).await
        } else {
            self.core.admin_local(req).await
        };
        answer(&result)
    }

    async fn transfer_leader(
        &self,
        request: tonic::Request<pb::Blob>,
    ) -> Result<Response<pb::Blob>, Status> {
        self.authenticate(
            &request,
            method::TRANSFER_LEADER,
            &[&request.get_ref().json],
        )?;
        let req: TransferLeaderRequest<TypeConfig> =
            from_blob(request.get_ref()).map_err(bad_request)?;
        tracing::info!(%req, "leadership transfer announced");
        let result = self
            .core
            .raft
            .handle_transfer_leader(req)
            .await
            .map_err(PeerRefusal::new);
        answer(&result)
    }

    async fn status(
        &self,
        request: tonic::Request<pb::Blob>,
    ) -> Result<Response<pb::Blob>, Status> {
        self.authenticate(&request, method::STATUS, &[&request.get_ref().json])?;
        answer(&self.core.status())
    }
}
