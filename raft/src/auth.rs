//! Authentication of the Raft peer RPCs with the cluster secret
//! ([`RaftConfig::cluster_secret`](crate::RaftConfig::cluster_secret)).
//!
//! With a secret, every call to a node's peer gRPC port (append, vote, snapshot, leadership
//! transfer, forwarded writes and reads, membership changes, status) carries three ASCII
//! metadata entries:
//!
//! | key | value |
//! |---|---|
//! | [`SENDER_KEY`] `x-rocketraft-raft-sender` | the sender's node id in decimal, or `tool` (admin CLI, harness) |
//! | [`RECEIVER_KEY`] `x-rocketraft-raft-receiver` | the receiver's node id in decimal, or `any` (status queries only) |
//! | [`NONCE_KEY`] `x-rocketraft-raft-nonce` | 16 fresh random bytes, lower-case hex |
//! | [`PROOF_KEY`] `x-rocketraft-raft-proof` | HMAC-SHA256, lower-case hex (64 characters) |
//!
//! The proof is [`ClusterSecret::prove`] in the context [`CONTEXT`] (`rocketraft-raft-rpc`)
//! over the length-prefixed parts: the gRPC method path (e.g.
//! `/rocketraft.raft.v1.RaftPeer/Vote`, [`method`]), the request's body bytes (the JSON of a
//! `Blob`; the header JSON then the data of a snapshot transfer), the sender text, the receiver
//! text, and the nonce's 16 bytes. A proof therefore covers exactly one request to one method
//! of one node: a server refuses a proof made for another node (a request recorded on its way
//! to one member cannot be played to another), and accepts `any` only for a status query, which
//! changes nothing (a tool asks a node's status, and so its id, before it asks for a change).
//!
//! The server checks it before it decodes anything and refuses a missing or wrong one with
//! `UNAUTHENTICATED` (logged with the peer's address and the method). It also refuses a nonce
//! it has already accepted: accepted nonces are remembered for [`REPLAY_WINDOW`] (ten minutes)
//! on the monotonic clock, at most [`REPLAY_CAPACITY`] of them (the oldest are forgotten first
//! when more arrive within the window). No wall clock is read, so skewed clocks change
//! nothing; the price is that a request recorded on the wire and replayed after its nonce was
//! forgotten (ten minutes later, or after a restart of the receiver) is not refused here:
//! openraft's own checks refuse a stale append, vote or snapshot (terms and log ids only move
//! forward), but a replayed status query, forwarded read, or membership change would run
//! again. Without a secret nothing is sent or checked, as before.

use std::collections::HashSet;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;
use std::time::Instant;

use parking_lot::Mutex;
use rocketraft_common::trust::hex;
use rocketraft_common::trust::nonce;
use rocketraft_common::trust::unhex;
use rocketraft_common::trust::ClusterSecret;
use rocketraft_common::trust::NONCE_LEN;
use tonic::metadata::MetadataMap;
use tonic::metadata::MetadataValue;
use tonic::Status;

use crate::pb;
use crate::types::NodeId;

/// The HMAC context of a Raft RPC's proof.
pub const CONTEXT: &[u8] = b"rocketraft-raft-rpc";
/// Metadata key of the sender: its node id in decimal, or [`TOOL_SENDER`].
pub const SENDER_KEY: &str = "x-rocketraft-raft-sender";
/// Metadata key of the receiver: its node id in decimal, or [`ANY_RECEIVER`].
pub const RECEIVER_KEY: &str = "x-rocketraft-raft-receiver";
/// The receiver text of a status query sent before the receiver's id is known.
pub const ANY_RECEIVER: &str = "any";
/// Metadata key of the nonce (hex of [`NONCE_LEN`] bytes).
pub const NONCE_KEY: &str = "x-rocketraft-raft-nonce";
/// Metadata key of the proof (hex of the HMAC-SHA256).
pub const PROOF_KEY: &str = "x-rocketraft-raft-proof";
/// The sender text of a caller that is not a node (the admin CLI, the test harness).
pub const TOOL_SENDER: &str = "tool";
/// How long a server remembers the nonces it accepted (monotonic clock).
pub const REPLAY_WINDOW: Duration = Duration::from_secs(600);
/// How many accepted nonces a server remembers at most (about 16 MiB at worst); beyond that
/// the oldest are forgotten first, so the window shrinks under more than ~430 RPCs a second.
pub const REPLAY_CAPACITY: usize = 1 << 18;

/// The gRPC method paths of the peer service (what the proofs cover).
pub mod method {
    pub const APPEND_ENTRIES: &str = "/rocketraft.raft.v1.RaftPeer/AppendEntries";
    pub const VOTE: &str = "/rocketraft.raft.v1.RaftPeer/Vote";
    pub const INSTALL_SNAPSHOT: &str = "/rocketraft.raft.v1.RaftPeer/InstallSnapshot";
    pub const WRITE: &str = "/rocketraft.raft.v1.RaftPeer/Write";
    pub const READ: &str = "/rocketraft.raft.v1.RaftPeer/Read";
    pub const ADMIN: &str = "/rocketraft.raft.v1.RaftPeer/Admin";
    pub const STATUS: &str = "/rocketraft.raft.v1.RaftPeer/Status";
    pub const TRANSFER_LEADER: &str = "/rocketraft.raft.v1.RaftPeer/TransferLeader";
}

/// The sender text of node `id`, or of a tool (`None`).
pub fn sender_text(sender: Option<NodeId>) -> String {
    sender.map_or_else(|| TOOL_SENDER.to_string(), |id| id.to_string())
}

/// The receiver text of node `id`, or of any node (`None`, status queries only).
pub fn receiver_text(receiver: Option<NodeId>) -> String {
    receiver.map_or_else(|| ANY_RECEIVER.to_string(), |id| id.to_string())
}

fn parts<'a>(
    method: &'a str,
    body: &[&'a [u8]],
    sender: &'a str,
    receiver: &'a str,
    nonce: &'a [u8],
) -> Vec<&'a [u8]> {
    let mut out = Vec::with_capacity(body.len() + 4);
    out.push(method.as_bytes());
    out.extend_from_slice(body);
    out.push(sender.as_bytes());
    out.push(receiver.as_bytes());
    out.push(nonce);
    out
}

/// Adds the authentication of a call to `method` with `body` from `sender` (a node id, or
/// `None` for a tool) to `receiver` (a node id, or `None`: any node, for a status query) to
/// `metadata`, with a fresh nonce.
pub fn sign(
    metadata: &mut MetadataMap,
    secret: &ClusterSecret,
    sender: Option<NodeId>,
    receiver: Option<NodeId>,
    method: &str,
    body: &[&[u8]],
) {
    let sender = sender_text(sender);
    let receiver = receiver_text(receiver);
    let nonce = nonce();
    let proof = secret.prove(CONTEXT, &parts(method, body, &sender, &receiver, &nonce));
    for (key, value) in [
        (SENDER_KEY, sender),
        (RECEIVER_KEY, receiver),
        (NONCE_KEY, hex(&nonce)),
        (PROOF_KEY, hex(&proof)),
    ] {
        // Decimal digits, "tool" and hex are always valid ASCII metadata.
        if let Ok(value) = MetadataValue::try_from(value) {
            metadata.insert(key, value);
        }
    }
}

/// The metadata of a call: its authentication if there is a secret, empty otherwise.
pub fn metadata(
    secret: Option<&ClusterSecret>,
    sender: Option<NodeId>,
    receiver: Option<NodeId>,
    method: &str,
    body: &[&[u8]],
) -> MetadataMap {
    let mut metadata = MetadataMap::new();
    if let Some(secret) = secret {
        sign(&mut metadata, secret, sender, receiver, method, body);
    }
    metadata
}

/// A request to `method` carrying `blob`, authenticated if there is a secret.
pub fn blob_request(
    blob: pb::Blob,
    secret: Option<&ClusterSecret>,
    sender: Option<NodeId>,
    receiver: Option<NodeId>,
    method: &str,
) -> tonic::Request<pb::Blob> {
    let metadata = metadata(secret, sender, receiver, method, &[&blob.json]);
    tonic::Request::from_parts(metadata, tonic::Extensions::default(), blob)
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refused {
    Missing,
    Malformed,
    BadProof,
    Replayed,
    OtherReceiver,
}

impl Refused {
    fn text(self) -> &'static str {
        match self {
            Refused::Missing => {
                "no authentication (set the same cluster_secret on every member and tool)"
            }
            Refused::Malformed => "malformed authentication",
            Refused::BadProof => {
                "the proof of the cluster secret does not match (another cluster_secret?)"
            }
            Refused::Replayed => "replayed request (its nonce was already used)",
            Refused::OtherReceiver => {
                "the proof was made for another node (only a status query may name any node)"
            }
        }
    }
}

/// The nonces a server accepted within the window, oldest first.
pub(crate) struct ReplayCache {
    window: Duration,
    capacity: usize,
    order: VecDeque<(Instant, u128)>,
    seen: HashSet<u128>,
}

impl ReplayCache {
    pub(crate) fn new(window: Duration, capacity: usize) -> Self {
        ReplayCache {
            window,
            capacity: capacity.max(1),
            order: VecDeque::new(),
            seen: HashSet::new(),
        }
    }

    /// Records `nonce` seen at `now` (monotonic, never earlier than a previous call's); false
    /// if it is already remembered.
    pub(crate) fn first_use(&mut self, nonce: u128, now: Instant) -> bool {
        // Forget what is older than the window.
        while let Some(&(at, old)) = self.order.front() {
            if now.saturating_duration_since(at) < self.window {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&old);
        }
        if self.seen.contains(&nonce) {
            return false;
        }
        // Full: forget the oldest.
        while self.order.len() >= self.capacity {
            if let Some((_, old)) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        self.seen.insert(nonce);
        self.order.push_back((now, nonce));
        true
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.order.len()
    }
}

/// The server side: checks the authentication of each request (nothing without a secret).
pub(crate) struct Verifier {
    secret: Option<ClusterSecret>,
    /// This node's id: the receiver a proof must name.
    id: NodeId,
    seen: Mutex<ReplayCache>,
}

impl Verifier {
    pub(crate) fn new(secret: Option<ClusterSecret>, id: NodeId) -> Self {
        Verifier {
            secret,
            id,
            seen: Mutex::new(ReplayCache::new(REPLAY_WINDOW, REPLAY_CAPACITY)),
        }
    }

    /// Accepts the request if there is no secret, or if its metadata proves the secret over
    /// `method` and `body` with a nonce not used before; otherwise `UNAUTHENTICATED`, logged.
    pub(crate) fn check(
        &self,
        metadata: &MetadataMap,
        peer: Option<SocketAddr>,
        method: &str,
        body: &[&[u8]],
    ) -> Result<(), Status> {
        let Some(secret) = &self.secret else {
            return Ok(());
        };
        let sender = metadata.get(SENDER_KEY).and_then(|v| v.to_str().ok());
        match self.verify(secret, metadata, method, body) {
            Ok(()) => Ok(()),
            Err(why) => {
                let peer = peer.map_or_else(|| "unknown".to_string(), |p| p.to_string());
                tracing::warn!(
                    %peer,
                    method,
                    claimed_sender = sender.unwrap_or("-"),
                    reason = why.text(),
                    "refused a Raft RPC that does not prove the cluster secret"
                );
                Err(Status::unauthenticated(format!(
                    "raft: {method} refused: {}",
                    why.text()
                )))
            }
        }
    }

    fn verify(
        &self,
        secret: &ClusterSecret,
        metadata: &MetadataMap,
        method: &str,
        body: &[&[u8]],
    ) -> Result<(), Refused> {
        let text = |key: &str| {
            metadata
                .get(key)
                .map(|v| v.to_str().map_err(|_| Refused::Malformed))
        };
        let (Some(sender), Some(receiver), Some(nonce), Some(proof)) = (
            text(SENDER_KEY),
            text(RECEIVER_KEY),
            text(NONCE_KEY),
            text(PROOF_KEY),
        ) else {
            return Err(Refused::Missing);
        };
        let (sender, receiver, nonce, proof) = (sender?, receiver?, nonce?, proof?);
        let nonce = unhex(nonce)
            .filter(|n| n.len() == NONCE_LEN)
            .ok_or(Refused::Malformed)?;
        let proof = unhex(proof).ok_or(Refused::Malformed)?;
        if !secret.verify(
            CONTEXT,
            &parts(method, body, sender, receiver, &nonce),
            &proof,
        ) {
            return Err(Refused::BadProof);
        }
        let for_me = if receiver == ANY_RECEIVER {
            method == method::STATUS
        } else {
            receiver.parse::<NodeId>().ok() == Some(self.id)
        };
        if !for_me {
            return Err(Refused::OtherReceiver);
        }
        let mut key = [0u8; NONCE_LEN];
        key.copy_from_slice(&nonce);
        let key = u128::from_be_bytes(key);
        // Only proven nonces are remembered, so nobody without the secret can fill the cache.
        let mut seen = self.seen.lock();
        if !seen.first_use(key, Instant::now()) {
            return Err(Refused::Replayed);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(text: &str) -> ClusterSecret {
        ClusterSecret::new(text).expect("long enough")
    }

    #[test]
    fn a_signed_request_verifies_once_and_only_for_its_method_and_body() {
        let s = secret("0123456789abcdef");
        let verifier = Verifier::new(Some(s.clone()), 1);
        let md = &metadata(Some(&s), Some(2), Some(1), method::VOTE, &[b"{}"]);
        assert_eq!(md.get(SENDER_KEY).map(|v| v.to_str().ok()), Some(Some("2")));
        assert!(verifier
            .check(md, None, method::APPEND_ENTRIES, &[b"{}"])
            .is_err());
        assert!(verifier.check(md, None, method::VOTE, &[b"{ }"]).is_err());
        verifier
            .check(md, None, method::VOTE, &[b"{}"])
            .expect("valid");
        let replay = verifier
            .check(md, None, method::VOTE, &[b"{}"])
            .expect_err("replayed");
        assert_eq!(replay.code(), tonic::Code::Unauthenticated);
        assert!(
            replay.message().contains("replayed"),
            "{}",
            replay.message()
        );

        let other = Verifier::new(Some(secret("0123456789abcdeX")), 1);
        let md = metadata(Some(&s), None, None, method::STATUS, &[b"null"]);
        assert_eq!(
            md.get(SENDER_KEY).map(|v| v.to_str().ok()),
            Some(Some("tool"))
        );
        assert!(other.check(&md, None, method::STATUS, &[b"null"]).is_err());
        assert!(metadata(None, Some(1), None, method::STATUS, &[]).is_empty());
        let missing = other
            .check(&MetadataMap::new(), None, method::STATUS, &[b"null"])
            .expect_err("missing");
        assert!(missing.message().contains("no authentication"));
        // Without a secret nothing is checked.
        Verifier::new(None, 1)
            .check(&MetadataMap::new(), None, method::STATUS, &[])
            .expect("open");
    }

    #[test]
    fn a_proof_is_for_one_receiver_and_any_receiver_only_for_status() {
        let s = secret("0123456789abcdef");
        let (node1, node2) = (
            Verifier::new(Some(s.clone()), 1),
            Verifier::new(Some(s.clone()), 2),
        );
        let md = metadata(Some(&s), Some(3), Some(1), method::WRITE, &[b"{}"]);
        assert_eq!(
            md.get(RECEIVER_KEY).map(|v| v.to_str().ok()),
            Some(Some("1"))
        );
        let elsewhere = node2
            .check(&md, None, method::WRITE, &[b"{}"])
            .expect_err("made for node 1");
        assert!(
            elsewhere.message().contains("another node"),
            "{elsewhere:?}"
        );
        node1
            .check(&md, None, method::WRITE, &[b"{}"])
            .expect("for node 1");
        // "any" names every node, for a status query and nothing else.
        let any = metadata(Some(&s), None, None, method::ADMIN, &[b"{}"]);
        assert!(node1.check(&any, None, method::ADMIN, &[b"{}"]).is_err());
        let status = metadata(Some(&s), None, None, method::STATUS, &[b"null"]);
        node2
            .check(&status, None, method::STATUS, &[b"null"])
            .expect("a status query to any node");
        // The receiver is covered by the proof: rewriting it breaks the proof.
        let mut forged = metadata(Some(&s), Some(3), Some(1), method::WRITE, &[b"{}"]);
        forged.insert(RECEIVER_KEY, MetadataValue::from_static("2"));
        let bad = node2
            .check(&forged, None, method::WRITE, &[b"{}"])
            .expect_err("rewritten receiver");
        assert!(bad.message().contains("does not match"), "{bad:?}");
    }

    #[test]
    fn the_replay_cache_forgets_after_the_window_and_beyond_its_capacity() {
        let start = Instant::now();
        let mut cache = ReplayCache::new(Duration::from_secs(600), 3);
        assert!(cache.first_use(1, start));
        assert!(!cache.first_use(1, start + Duration::from_secs(599)));
        assert!(cache.first_use(1, start + Duration::from_secs(600)));
        let mut cache = ReplayCache::new(Duration::from_secs(600), 3);
        for n in 1..=3 {
            assert!(cache.first_use(n, start));
        }
        assert!(!cache.first_use(2, start));
        assert!(cache.first_use(4, start));
        assert_eq!(cache.len(), 3);
        // 1 was the oldest: forgotten to make room.
        assert!(cache.first_use(1, start));
        assert!(!cache.first_use(3, start));
        // Ten minutes later everything is forgotten.
        assert!(cache.first_use(3, start + Duration::from_secs(601)));
        assert_eq!(cache.len(), 1);
    }
}
