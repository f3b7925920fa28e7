//! Cluster trust on Remoting connections: a server with a cluster secret serves the codes it
//! protects (role notifications, controller writes, broker registrations) only on connections
//! whose peer proved the secret.
//!
//! The handshake, run by [`crate::RemotingClient`] right after it connects when its
//! [`crate::ClientConfig::cluster_secret`] is set:
//! 1. `TRUST_CHALLENGE` with `clientNonce`: the server answers `serverNonce` and `proof` =
//!    HMAC(secret, "rocketraft-trust-server", clientNonce, serverNonce). The client checks it,
//!    so it never talks to an impostor of a server either.
//! 2. `TRUST_PROVE` with `proof` = HMAC(secret, "rocketraft-trust-client", serverNonce,
//!    clientNonce): the server marks the connection trusted.
//!
//! Both nonces are fresh per connection, so a recorded handshake proves nothing on another
//! connection, whatever the clocks say. A protected request on an untrusted connection is
//! answered NO_PERMISSION (oneway ones are dropped) and logged.

use std::sync::Arc;
use std::time::Duration;

use rocketraft_common::trust::{hex, nonce, unhex, ClusterSecret};
use tracing::warn;

use crate::codes::{request_code, response_code};
use crate::connection::ConnectionHandle;
use crate::server::{BoxFuture, RequestContext, RequestProcessor};
use crate::RemotingCommand;

const SERVER_ROLE: &[u8] = b"rocketraft-trust-server";
const CLIENT_ROLE: &[u8] = b"rocketraft-trust-client";

/// Serves TRUST_CHALLENGE and TRUST_PROVE.
pub(crate) struct Handshake {
    pub secret: ClusterSecret,
}

impl RequestProcessor for Handshake {
    fn process(
        &self,
        ctx: RequestContext,
        request: RemotingCommand,
    ) -> BoxFuture<Option<RemotingCommand>> {
        let response = match request.code {
            request_code::TRUST_CHALLENGE => self.challenge(&ctx.connection, &request),
            _ => self.prove(&ctx, &request),
        };
        Box::pin(async move { Some(response) })
    }
}

impl Handshake {
    fn challenge(&self, conn: &ConnectionHandle, request: &RemotingCommand) -> RemotingCommand {
        let Some(client_nonce) = request.ext("clientNonce").and_then(unhex) else {
            return request.response_to(
                response_code::NO_PERMISSION,
                Some("TRUST_CHALLENGE needs a hex clientNonce".to_string()),
            );
        };
        let server_nonce = nonce().to_vec();
        let proof = self
            .secret
            .prove(SERVER_ROLE, &[&client_nonce, &server_nonce]);
        let response = request
            .response_to(response_code::SUCCESS, None)
            .with_ext("serverNonce", hex(&server_nonce))
            .with_ext("proof", hex(&proof));
        conn.trust().challenge = Some((client_nonce, server_nonce));
        response
    }

    fn prove(&self, ctx: &RequestContext, request: &RemotingCommand) -> RemotingCommand {
        let challenge = ctx.connection.trust().challenge.take();
        let proof = request.ext("proof").and_then(unhex);
        let proved = match (&challenge, &proof) {
            (Some((client_nonce, server_nonce)), Some(proof)) => {
                self.secret
                    .verify(CLIENT_ROLE, &[server_nonce, client_nonce], proof)
            }
            _ => false,
        };
        if proved {
            ctx.connection.trust().trusted = true;
            return request.response_to(response_code::SUCCESS, None);
        }
        warn!(peer = %ctx.peer, "a peer failed to prove the cluster secret; its connection stays untrusted");
        request.response_to(
            response_code::NO_PERMISSION,
            Some("the proof of the cluster secret does not match: check cluster_secret on both servers".to_string()),
        )
    }
}

/// A protected code's processor: runs only for trusted connections.
pub(crate) struct Guarded {
    pub inner: Arc<dyn RequestProcessor>,
}

impl RequestProcessor for Guarded {
    fn process(
        &self,
        ctx: RequestContext,
        request: RemotingCommand,
    ) -> BoxFuture<Option<RemotingCommand>> {
        if ctx.connection.is_trusted() {
            return self.inner.process(ctx, request);
        }
        warn!(
            peer = %ctx.peer,
            code = request.code,
            "refused a cluster-internal request from a peer that did not prove the cluster secret"
        );
        let response = (!request.is_oneway()).then(|| {
            request.response_to(
                response_code::NO_PERMISSION,
                Some(format!(
                    "request code {} is cluster-internal: the connection must prove the cluster secret first (set cluster_secret)",
                    request.code
                )),
            )
        });
        Box::pin(async move { response })
    }
}

/// Why the client side of the handshake failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    #[error("the server does not authenticate with a cluster secret (answered code {code}: {remark}); set the same cluster_secret on it")]
    NotSupported { code: i32, remark: String },
    #[error("the server's proof of the cluster secret does not match: it holds another secret, or it is not ours")]
    BadServerProof,
    #[error("the server refused our proof of the cluster secret (code {code}: {remark})")]
    Refused { code: i32, remark: String },
}

/// The client side: proves the secret on `conn` and checks the server's proof.
pub(crate) async fn authenticate(
    conn: &ConnectionHandle,
    secret: &ClusterSecret,
    deadline: tokio::time::Instant,
    timeout: Duration,
) -> Result<(), crate::RemotingError> {
    let addr = conn.peer_addr().to_string();
    let untrusted = |why: HandshakeError| crate::RemotingError::Untrusted {
        addr: addr.clone(),
        why,
    };
    let client_nonce = nonce();
    let challenge = RemotingCommand::request(request_code::TRUST_CHALLENGE)
        .with_ext("clientNonce", hex(&client_nonce));
    let answer = conn.invoke_until(challenge, deadline, timeout).await?;
    if answer.code != response_code::SUCCESS {
        return Err(untrusted(HandshakeError::NotSupported {
            code: answer.code,
            remark: answer.remark.unwrap_or_default(),
        }));
    }
    let server_nonce = answer.ext("serverNonce").and_then(unhex);
    let server_proof = answer.ext("proof").and_then(unhex);
    let (Some(server_nonce), Some(server_proof)) = (server_nonce, server_proof) else {
        return Err(untrusted(HandshakeError::BadServerProof));
    };
    if !secret.verify(SERVER_ROLE, &[&client_nonce, &server_nonce], &server_proof) {
        return Err(untrusted(HandshakeError::BadServerProof));
    }
    let proof = secret.prove(CLIENT_ROLE, &[&server_nonce, &client_nonce]);
    let prove = RemotingCommand::request(request_code::TRUST_PROVE).with_ext("proof", hex(&proof));
    let answer = conn.invoke_until(prove, deadline, timeout).await?;
    if answer.code != response_code::SUCCESS {
        return Err(untrusted(HandshakeError::Refused {
            code: answer.code,
            remark: answer.remark.unwrap_or_default(),
        }));
    }
    Ok(())
}
