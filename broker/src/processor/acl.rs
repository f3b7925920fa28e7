//! ACL 2.0 administration (RocketMQ's `AdminBrokerProcessor` auth requests): AUTH_CREATE_USER
//! (3001), AUTH_UPDATE_USER (3002), AUTH_DELETE_USER (3003), AUTH_GET_USER (3004),
//! AUTH_LIST_USER (3005), AUTH_CREATE_ACL (3006), AUTH_UPDATE_ACL (3007), AUTH_DELETE_ACL (3008),
//! AUTH_GET_ACL (3009), AUTH_LIST_ACL (3010).
//!
//! Headers as RocketMQ names them: `username` (users), `filter` (list users), `subject`
//! (ACLs), `policyType` and `resource` (delete ACL), `subjectFilter` and `resourceFilter` (list
//! ACLs). Bodies are `UserInfo` / `AclInfo` JSON. A GET of something that does not exist answers
//! USER_NOT_EXIST (3001) / POLICY_NOT_EXIST (3002). Changes go through the metadata log
//! ([`crate::metalog`]): in controller mode they are answered only once every SyncStateSet member
//! holds them, and a slave refuses them (SERVICE_NOT_AVAILABLE).

use std::sync::{Arc, OnceLock};

use rocketraft_common::acl::{AclInfo, UserInfo};
use rocketraft_remoting::codes::{request_code, response_code};
use rocketraft_remoting::server::{BoxFuture, RequestContext, RequestProcessor};
use rocketraft_remoting::{Refusal, RemotingCommand};

use super::Handled;
use crate::acl::AclStoreError;
use crate::BrokerInner;

/// The request codes served here.
pub const CODES: &[i32] = &[
    request_code::AUTH_CREATE_USER,
    request_code::AUTH_UPDATE_USER,
    request_code::AUTH_DELETE_USER,
    request_code::AUTH_GET_USER,
    request_code::AUTH_LIST_USER,
    request_code::AUTH_CREATE_ACL,
    request_code::AUTH_UPDATE_ACL,
    request_code::AUTH_DELETE_ACL,
    request_code::AUTH_GET_ACL,
    request_code::AUTH_LIST_ACL,
];

impl From<AclStoreError> for Refusal {
    fn from(e: AclStoreError) -> Self {
        let code = match &e {
            AclStoreError::Invalid(_) => response_code::INVALID_PARAMETER,
            AclStoreError::UserNotFound(_) => response_code::USER_NOT_EXIST,
            AclStoreError::PolicyNotFound(_) => response_code::POLICY_NOT_EXIST,
            AclStoreError::UserExists(_)
            | AclStoreError::Store(_)
            | AclStoreError::Corrupt { .. } => response_code::SYSTEM_ERROR,
        };
        Refusal::new(code, e.to_string())
    }
}

/// Serves the ACL requests (registered beside [`super::BrokerProcessor`]).
pub struct AclProcessor {
    pub inner: Arc<OnceLock<Arc<BrokerInner>>>,
    /// With authentication off no guard checks signed times, so the password reveal does: a
    /// replayed or expired Super signature gets the users without passwords. `None` with
    /// authentication on (the server's guard checked the request already).
    pub password_replay: Option<Arc<rocketraft_remoting::auth::ReplayGuard>>,
}

impl RequestProcessor for AclProcessor {
    fn process(
        &self,
        ctx: RequestContext,
        request: RemotingCommand,
    ) -> BoxFuture<Option<RemotingCommand>> {
        let inner = self.inner.get().cloned();
        let replay = self.password_replay.clone();
        Box::pin(async move {
            if request.is_oneway() {
                return None;
            }
            let Some(inner) = inner else {
                return Some(request.response_to(
                    response_code::SYSTEM_BUSY,
                    "the broker is still starting".to_string(),
                ));
            };
            let result = if is_change(request.code) {
                change(&inner, &request).await
            } else {
                // RocksDB reads: off the async workers.
                let (req, broker) = (request.clone(), inner.clone());
                tokio::task::spawn_blocking(move || handle(&broker, &req))
                    .await
                    .unwrap_or_else(|e| {
                        Err(Refusal::system_error(format!(
                            "ACL request task failed: {e}"
                        )))
                    })
            };
            let result = match result {
                Ok(response) if shows_passwords(request.code) => {
                    hide_passwords_from_non_super(
                        &inner,
                        replay.as_deref(),
                        &ctx,
                        &request,
                        response,
                    )
                    .await
                }
                other => other,
            };
            Some(match result {
                Ok(response) => response,
                Err(refusal) => {
                    tracing::debug!(code = request.code, response = refusal.code, remark = %refusal.remark, peer = %ctx.peer, "ACL request refused");
                    refusal.response_to(&request)
                }
            })
        })
    }
}

fn shows_passwords(code: i32) -> bool {
    matches!(
        code,
        request_code::AUTH_GET_USER | request_code::AUTH_LIST_USER
    )
}

/// Only a `Super` caller sees passwords: one whose request carries a valid signature of an
/// enabled `Super` user (stored, or a config user such as `innerClientAuthenticationCredentials`),
/// or a server of the cluster on a connection that proved the cluster secret. Everyone else gets
/// the users without them, whether `authentication_enabled` is on or off (RocketMQ answers
/// passwords to anyone its ACL lets through; with authentication off, that is anyone). The
/// proxy and the NameServer, which verify signatures with these passwords, sign with the inner
/// credentials or prove the cluster secret.
async fn hide_passwords_from_non_super(
    inner: &Arc<BrokerInner>,
    replay: Option<&rocketraft_remoting::auth::ReplayGuard>,
    ctx: &RequestContext,
    request: &RemotingCommand,
    response: RemotingCommand,
) -> Handled {
    if response.body.is_empty() {
        return Ok(response);
    }
    let slot = Arc::new(OnceLock::new());
    let _ = slot.set(inner.clone());
    let metadata = crate::auth::BrokerAuthMetadata {
        inner: slot,
        config_users: crate::auth::config_users(&inner.config),
    };
    if rocketraft_remoting::auth::caller_is_super(&metadata, ctx, request).await {
        // A trusted connection, or an in-process request attested by the caller's own
        // credentials, has no signature to replay.
        let signed =
            !ctx.connection.is_trusted() && !rocketraft_remoting::auth::is_attested(ctx, request);
        let fresh = match replay.filter(|_| signed) {
            None => Ok(()),
            Some(guard) => guard.check(request, rocketraft_common::time::now_ms()),
        };
        match fresh {
            Ok(()) => return Ok(response),
            Err(refusal) => {
                tracing::warn!(peer = %ctx.peer, remark = %refusal.remark, "a Super user's signature on a user read is stale or replayed: passwords hidden");
            }
        }
    }
    let body = if request.code == request_code::AUTH_GET_USER {
        let mut user: UserInfo = serde_json::from_slice(&response.body)
            .map_err(|e| Refusal::system_error(format!("cannot re-read the user: {e}")))?;
        user.password = None;
        serde_json::to_vec(&user)
    } else {
        let mut users: Vec<UserInfo> = serde_json::from_slice(&response.body)
            .map_err(|e| Refusal::system_error(format!("cannot re-read the users: {e}")))?;
        users.iter_mut().for_each(|u| u.password = None);
        serde_json::to_vec(&users)
    };
    let body = body.map_err(|e| Refusal::system_error(e.to_string()))?;
    Ok(response.with_body(body))
}

fn is_change(code: i32) -> bool {
    matches!(
        code,
        request_code::AUTH_CREATE_USER
            | request_code::AUTH_UPDATE_USER
            | request_code::AUTH_DELETE_USER
            | request_code::AUTH_CREATE_ACL
            | request_code::AUTH_UPDATE_ACL
            | request_code::AUTH_DELETE_ACL
    )
}

/// A user or ACL change: planned from the applied state and committed through the metadata log
/// (in controller mode answered only once every SyncStateSet member holds it).
async fn change(inner: &BrokerInner, request: &RemotingCommand) -> Handled {
    // Parse before taking the metadata lane.
    let user = match request.code {
        request_code::AUTH_CREATE_USER | request_code::AUTH_UPDATE_USER => {
            Some(user_body(request)?)
        }
        _ => None,
    };
    let acl_info = match request.code {
        request_code::AUTH_CREATE_ACL | request_code::AUTH_UPDATE_ACL => Some(acl_body(request)?),
        _ => None,
    };
    let code = request.code;
    inner
        .metalog
        .commit(inner, |inner| {
            let acl = &inner.acl;
            let change = match (code, &user, &acl_info) {
                (request_code::AUTH_CREATE_USER, Some(user), _) => acl.plan_create_user(user)?,
                (request_code::AUTH_UPDATE_USER, Some(user), _) => acl.plan_update_user(user)?,
                (request_code::AUTH_DELETE_USER, ..) => {
                    acl.plan_delete_user(request.require_ext("username")?)?
                }
                (request_code::AUTH_CREATE_ACL | request_code::AUTH_UPDATE_ACL, _, Some(info)) => {
                    acl.plan_put_acl(info)?
                }
                (request_code::AUTH_DELETE_ACL, ..) => acl.plan_delete_acl(
                    request.require_ext("subject")?,
                    request.ext("policyType"),
                    request.ext("resource"),
                )?,
                (other, ..) => {
                    return Err(Refusal::new(
                        response_code::REQUEST_CODE_NOT_SUPPORTED,
                        format!("request code {other} is not an ACL change"),
                    ))
                }
            };
            Ok(vec![change])
        })
        .await?;
    Ok(request.response_to(response_code::SUCCESS, None))
}

/// The ACL reads.
fn handle(inner: &BrokerInner, request: &RemotingCommand) -> Handled {
    let acl = &inner.acl;
    match request.code {
        request_code::AUTH_GET_USER => {
            let username = request.require_ext("username")?;
            // A Super user of the config (`initAuthenticationUser`, inner credentials) when
            // none is stored under the name.
            let from_config = || {
                crate::auth::config_users(&inner.config)
                    .into_iter()
                    .find(|u| u.username == username)
            };
            match acl.get_user(username)?.or_else(from_config) {
                Some(user) => json_response(request, &user),
                None => Err(AclStoreError::UserNotFound(username.to_string()).into()),
            }
        }
        request_code::AUTH_LIST_USER => {
            // The applied offset before the state is read (see `MetadataLog::copy_allowed`).
            let offset = inner.metalog.applied();
            json_response(request, &acl.list_users(request.ext("filter"))?)
                .map(|r| with_offset(inner, r, offset))
        }
        request_code::AUTH_GET_ACL => {
            let subject = request.require_ext("subject")?;
            match acl.get_acl(subject)? {
                Some(info) => json_response(request, &info),
                None => Err(AclStoreError::PolicyNotFound(format!("{subject} has no ACL")).into()),
            }
        }
        request_code::AUTH_LIST_ACL => {
            let offset = inner.metalog.applied();
            json_response(
                request,
                &acl.list_acls(request.ext("subjectFilter"), request.ext("resourceFilter"))?,
            )
            .map(|r| with_offset(inner, r, offset))
        }
        other => Err(Refusal::new(
            response_code::REQUEST_CODE_NOT_SUPPORTED,
            format!("request code {other} is not an ACL read"),
        )),
    }
}

/// Adds the metadata log offset the state was read at (controller mode), for slaves' copies.
pub(crate) fn with_offset(
    inner: &BrokerInner,
    response: RemotingCommand,
    offset: i64,
) -> RemotingCommand {
    if inner.ha.is_some() {
        response.with_ext(crate::metalog::OFFSET_HEADER, offset)
    } else {
        response
    }
}

fn user_body(request: &RemotingCommand) -> Result<UserInfo, Refusal> {
    let mut user: UserInfo = serde_json::from_slice(&request.body).map_err(|e| {
        Refusal::new(
            response_code::INVALID_PARAMETER,
            format!("the body is not a UserInfo JSON object: {e}"),
        )
    })?;
    match request.ext("username").filter(|u| !u.is_empty()) {
        Some(name) if user.username.is_empty() => user.username = name.to_string(),
        Some(name) if name != user.username => {
            return Err(Refusal::new(
                response_code::INVALID_PARAMETER,
                format!(
                    "the username header {name:?} differs from the body's {:?}",
                    user.username
                ),
            ))
        }
        _ => {}
    }
    Ok(user)
}

fn acl_body(request: &RemotingCommand) -> Result<AclInfo, Refusal> {
    let mut info: AclInfo = serde_json::from_slice(&request.body).map_err(|e| {
        Refusal::new(
            response_code::INVALID_PARAMETER,
            format!("the body is not an AclInfo JSON object: {e}"),
        )
    })?;
    match request.ext("subject").filter(|s| !s.is_empty()) {
        Some(subject) if info.subject.is_empty() => info.subject = subject.to_string(),
        Some(subject) if subject != info.subject => {
            return Err(Refusal::new(
                response_code::INVALID_PARAMETER,
                format!(
                    "the subject header {subject:?} differs from the body's {:?}",
                    info.subject
                ),
            ))
        }
        _ => {}
    }
    Ok(info)
}

fn json_response<T: serde::Serialize>(request: &RemotingCommand, value: &T) -> Handled {
    let body = serde_json::to_vec(value).map_err(|e| Refusal::system_error(e.to_string()))?;
    Ok(request
        .response_to(response_code::SUCCESS, None)
        .with_body(body))
}
