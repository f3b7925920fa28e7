//! ACL 2.0 on the Remoting protocol (RocketMQ 5's `auth` module for brokers and NameServers):
//! clients sign requests, servers check the signature and the permissions.
//!
//! **Signing** (`AclClientRPCHook` / `AclUtils` in apache/rocketmq): the client adds the ext
//! fields `AccessKey` (the username) and, if it has one, `SecurityToken`; the content is the
//! values of all ext fields (the request's custom header is already in them) sorted by key,
//! concatenated, then the body bytes; `Signature` = Base64(HMAC-SHA1(secret key, content)) is
//! added as one more ext field. [`sign`] does it; a [`crate::RemotingClient`] whose
//! [`crate::ClientConfig::credentials`] are set signs every request it sends.
//!
//! **Checking** (`DefaultAuthenticationContextBuilder`, `DefaultAuthenticationHandler`): the
//! server rebuilds the same content from the ext fields minus `Signature` (and minus
//! `_UNIQUE_KEY_QUERY` for peers at or below V4_9_3, as RocketMQ does), looks the access key up as
//! a user and compares. An unsigned request, an unknown or disabled user and a wrong signature
//! are refused with NO_PERMISSION (16) and a remark, as RocketMQ's `AuthenticationPipeline` does.
//!
//! **Authorization** (`DefaultAuthorizationContextBuilder`): [`crate::auth_map::requirement`]
//! names the resources and actions a request needs; `Super` users pass, a `Normal` user needs an
//! ACL entry that allows one of the actions on every resource ([`Acl::decide_any`]). Refused:
//! NO_PERMISSION with the user, the resource and the action in the remark.
//!
//! **Signed time (Rocketraft's own, opt-in).** `AclClientRPCHook` signs no time, so a captured
//! request can be replayed. Our signer ([`sign`]) adds one more ext field, [`SIGNED_AT`]
//! (`<milliseconds since the epoch>.<unique suffix>`), which the signature covers like every
//! ext field. A server that authenticates a request carrying it refuses (NO_PERMISSION) one
//! signed outside [`AuthSettings::signed_time_window`] of its clock, and one whose (access key,
//! signature) it already saw within the window ([`ReplayGuard`]: a time-bucketed set of bounded
//! size). With [`AuthSettings::require_signed_time`] (`authRequireSignedTimestamp`, off by
//! default so that third-party RocketMQ clients keep working) a signed request without the field
//! is refused too. The suffix makes every signature unique, so two identical requests of one
//! client in the same millisecond are not taken for a replay.
//!
//! [`RemotingServerBuilder::auth`](crate::RemotingServerBuilder::auth) installs [`AuthGuard`] in
//! front of every processor. A connection whose peer proved the cluster secret
//! ([`crate::trust`]) is a server of the same cluster and is not asked to sign (RocketMQ signs
//! such calls with `innerClientAuthenticationCredentials`, which servers here accept as well).

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rocketraft_common::acl::{
    hmac_sha1_base64_parts, user_subject, verify_hmac_sha1_base64_parts, Acl, Decision, UserInfo,
    UserStatus, UserType,
};
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::auth_map::{requirement, Need, Requirement};
use crate::codes::response_code;
use crate::server::{BoxFuture, RequestContext, RequestProcessor};
use crate::{Refusal, RemotingCommand};

/// The ext field that names the signing user (`SessionCredentials.ACCESS_KEY`).
pub const ACCESS_KEY: &str = "AccessKey";
/// The ext field that carries the signature (`SessionCredentials.SIGNATURE`).
pub const SIGNATURE: &str = "Signature";
/// The optional ext field of a security token (`SessionCredentials.SECURITY_TOKEN`).
pub const SECURITY_TOKEN: &str = "SecurityToken";
/// The ext field of the signing time our signer adds (Rocketraft's own; RocketMQ's servers
/// ignore it and their signature check covers it like any ext field).
pub const SIGNED_AT: &str = "RocketraftSignedAt";
/// `MixAll.UNIQUE_MSG_QUERY_FLAG`: left out of the content for peers at or below V4_9_3.
const UNIQUE_MSG_QUERY_FLAG: &str = "_UNIQUE_KEY_QUERY";
/// The ordinal of `MQVersion.Version.V4_9_3`.
const V4_9_3: i32 = 399;

/// An access key and secret key (RocketMQ's `SessionCredentials`; JSON `{"accessKey": ...,
/// "secretKey": ...}` as in `innerClientAuthenticationCredentials`, or `{"username": ...,
/// "password": ...}` as in `initAuthenticationUser`). `Debug` never shows the secret key or the
/// token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionCredentials {
    #[serde(alias = "username")]
    pub access_key: String,
    #[serde(alias = "password")]
    pub secret_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_token: Option<String>,
}

impl fmt::Debug for SessionCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionCredentials")
            .field("access_key", &self.access_key)
            .field("secret_key", &"<redacted>")
            .field(
                "security_token",
                &self.security_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Credentials that cannot sign (an empty access key or secret key).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    #[error("the access key is empty")]
    EmptyAccessKey,
    #[error("the secret key is empty (HMAC-SHA1 needs a key; RocketMQ refuses it too)")]
    EmptySecretKey,
    #[error("credentials are not JSON {{\"accessKey\": ..., \"secretKey\": ...}}: {0}")]
    Json(String),
}

impl SessionCredentials {
    /// These credentials as an enabled `Super` user (the users a server's config defines:
    /// `initAuthenticationUser`, `innerClientAuthenticationCredentials`).
    pub fn super_user(&self) -> UserInfo {
        UserInfo {
            username: self.access_key.clone(),
            password: Some(self.secret_key.clone()),
            user_type: Some(UserType::Super.as_str().to_string()),
            user_status: Some(UserStatus::Enable.as_str().to_string()),
        }
    }

    pub fn new(
        access_key: impl Into<String>,
        secret_key: impl Into<String>,
    ) -> Result<Self, CredentialsError> {
        let credentials = SessionCredentials {
            access_key: access_key.into(),
            secret_key: secret_key.into(),
            security_token: None,
        };
        credentials.validate()?;
        Ok(credentials)
    }

    /// Parses RocketMQ's JSON form (`innerClientAuthenticationCredentials`,
    /// `initAuthenticationUser`).
    pub fn from_json(text: &str) -> Result<Self, CredentialsError> {
        let credentials: SessionCredentials =
            serde_json::from_str(text).map_err(|e| CredentialsError::Json(e.to_string()))?;
        credentials.validate()?;
        Ok(credentials)
    }

    pub fn validate(&self) -> Result<(), CredentialsError> {
        if self.access_key.is_empty() {
            return Err(CredentialsError::EmptyAccessKey);
        }
        if self.secret_key.is_empty() {
            return Err(CredentialsError::EmptySecretKey);
        }
        Ok(())
    }
}

/// Reads optional credentials from a config file: RocketMQ's JSON text
/// (`'{"accessKey":"a","secretKey":"s"}'`) or a table (`{ access_key = "a", secret_key = "s" }`).
/// For `#[serde(deserialize_with = ...)]` on `Option<SessionCredentials>` fields.
pub fn deserialize_credentials<'de, D>(d: D) -> Result<Option<SessionCredentials>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Text(String),
        Table(SessionCredentials),
    }
    let credentials = match Option::<Repr>::deserialize(d)? {
        None => return Ok(None),
        Some(Repr::Text(text)) if text.trim().is_empty() => return Ok(None),
        Some(Repr::Text(text)) => SessionCredentials::from_json(&text),
        Some(Repr::Table(table)) => table.validate().map(|()| table),
    };
    credentials.map(Some).map_err(serde::de::Error::custom)
}

/// Java's `String.compareTo`: UTF-16 code units, which is how a `TreeMap<String, _>` sorts.
fn java_order(a: &str, b: &str) -> std::cmp::Ordering {
    a.encode_utf16().cmp(b.encode_utf16())
}

/// The bytes a signature covers: the values of the ext fields except `Signature`, in the key
/// order of a Java `TreeMap`, then the body (`AclUtils.combineRequestContent`).
pub fn signing_content(request: &RemotingCommand) -> Vec<u8> {
    signing_parts(request).concat()
}

/// The pieces of [`signing_content`] where they lie (the fields' values in order, then the
/// body), for the MAC to read without copying them into one buffer.
fn signing_parts(request: &RemotingCommand) -> Vec<&[u8]> {
    let mut fields: Vec<(&str, &[u8])> = Vec::with_capacity(request.ext_fields.len() + 1);
    fields.extend(
        request
            .ext_fields
            .iter()
            .filter(|(k, _)| *k != SIGNATURE)
            .filter(|(k, _)| !(request.version <= V4_9_3 && *k == UNIQUE_MSG_QUERY_FLAG))
            .map(|(k, v)| (k, v.as_bytes())),
    );
    // Keys are unique. ASCII keys (nearly always all of them) order as bytes: one check for
    // the lot rather than one per comparison.
    if fields.iter().all(|(k, _)| k.is_ascii()) {
        fields.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    } else {
        fields.sort_unstable_by(|a, b| java_order(a.0, b.0));
    }
    let mut parts: Vec<&[u8]> = fields.into_iter().map(|(_, v)| v).collect();
    parts.push(&request.body);
    parts
}

/// Signs `request` as `AclClientRPCHook.doBeforeRequest` does, with the signing time
/// ([`SIGNED_AT`], now, and a suffix unique in this process) among the signed fields. Signing
/// again replaces the old time and signature.
pub fn sign(request: &mut RemotingCommand, credentials: &SessionCredentials) {
    request.set_ext(
        SIGNED_AT,
        signed_at_value(rocketraft_common::time::now_ms()),
    );
    sign_without_time(request, credentials);
}

/// `<ms>.<process prefix><counter>`: the time, and a suffix no other signature of this process
/// carries (a random prefix per process, then a counter).
fn signed_at_value(now_ms: i64) -> String {
    static PREFIX: OnceLock<String> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX
        .get_or_init(|| rocketraft_common::trust::hex(&rocketraft_common::trust::nonce()[..8]));
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{now_ms}.{prefix}{n:x}")
}

/// Signs `request` exactly as RocketMQ's `AclClientRPCHook.doBeforeRequest` does: adds
/// `AccessKey` (and `SecurityToken`), then `Signature` over [`signing_content`], no time.
pub fn sign_without_time(request: &mut RemotingCommand, credentials: &SessionCredentials) {
    request.set_ext(ACCESS_KEY, &credentials.access_key);
    if let Some(token) = &credentials.security_token {
        request.set_ext(SECURITY_TOKEN, token);
    }
    let signature = hmac_sha1_base64_parts(signing_parts(request), &credentials.secret_key);
    request.set_ext(SIGNATURE, signature);
}

/// Names the user of a request handed over in memory to a server of this process
/// ([`crate::ClientConfig::in_process`]): `AccessKey` (and `SecurityToken`) as [`sign`] sets
/// them, no signature. The server's guard authenticates it by the credentials the request's
/// context carries ([`RequestContext::attested`]), which no request off a socket has.
pub(crate) fn attest(request: &mut RemotingCommand, credentials: &SessionCredentials) {
    // A request passed on by a server may carry another signer's fields: none of them stays.
    request.ext_fields.remove(SIGNATURE);
    request.ext_fields.remove(SIGNED_AT);
    request.ext_fields.remove(SECURITY_TOKEN);
    request.set_ext(ACCESS_KEY, &credentials.access_key);
    if let Some(token) = &credentials.security_token {
        request.set_ext(SECURITY_TOKEN, token);
    }
}

/// Whether `request` was handed over in-process by a client holding the credentials of the
/// user it names ([`RequestContext::attested`]): authenticated by those, not by a signature,
/// so there is no signed time to require and no signature to replay.
pub fn is_attested(ctx: &RequestContext, request: &RemotingCommand) -> bool {
    ctx.attested
        .as_ref()
        .is_some_and(|a| request.ext(ACCESS_KEY) == Some(a.access_key.as_str()))
}

/// Authenticates `request` as `user`: by the in-process client's credentials when it is
/// attested ([`is_attested`]), else by its signature.
fn authenticate_request(
    user: &UserInfo,
    ctx: &RequestContext,
    request: &RemotingCommand,
) -> Result<(), Refusal> {
    match &ctx.attested {
        Some(attested) if is_attested(ctx, request) => authenticate_attested(user, attested),
        _ => authenticate_user(user, request),
    }
}

/// Whether `a` and `b` are equal, in a time that depends on their lengths only.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Whether `request` carries a valid signature by the holder of `secret`.
pub fn verify(request: &RemotingCommand, secret: &str) -> bool {
    match request.ext(SIGNATURE) {
        Some(signature) => verify_hmac_sha1_base64_parts(signing_parts(request), secret, signature),
        None => false,
    }
}

/// Where a server finds users and ACLs (the broker's store; the NameServer asks brokers).
pub trait AuthMetadata: Send + Sync + 'static {
    /// The user named `username`, `None` if there is none.
    fn user(&self, username: &str) -> BoxFuture<Result<Option<UserInfo>, Refusal>>;
    /// The ACL of `subject` (`User:name`), `None` if there is none.
    fn acl(&self, subject: &str) -> BoxFuture<Result<Option<Arc<Acl>>, Refusal>>;
}

/// What a server checks (RocketMQ's `AuthConfig` keys of the same names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthSettings {
    /// Every request must be signed by an enabled user (`authenticationEnabled`).
    pub authentication_enabled: bool,
    /// Every request's resources must be allowed to its user (`authorizationEnabled`).
    pub authorization_enabled: bool,
    /// Request codes served without a signature (`authenticationWhitelist`).
    pub authentication_whitelist: Vec<i32>,
    /// Request codes served without a permission check (`authorizationWhitelist`).
    pub authorization_whitelist: Vec<i32>,
    /// The cluster named by `Cluster` resources (admin codes).
    pub cluster_name: String,
    /// Refuse a signed request without [`SIGNED_AT`] (`authRequireSignedTimestamp`, default
    /// false: RocketMQ's own clients sign no time).
    pub require_signed_time: bool,
    /// How far a signed time may be from the server's clock, either way; a signature is
    /// remembered this long to refuse its replay (`authSignedTimestampWindowSeconds`, 300 s).
    pub signed_time_window: Duration,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            authentication_enabled: false,
            authorization_enabled: false,
            authentication_whitelist: Vec::new(),
            authorization_whitelist: Vec::new(),
            cluster_name: String::new(),
            require_signed_time: false,
            signed_time_window: DEFAULT_SIGNED_TIME_WINDOW,
        }
    }
}

/// The default of [`AuthSettings::signed_time_window`].
pub const DEFAULT_SIGNED_TIME_WINDOW: Duration = Duration::from_secs(300);

impl AuthSettings {
    pub fn enabled(&self) -> bool {
        self.authentication_enabled || self.authorization_enabled
    }

    /// These settings with the signed-time keys (`authRequireSignedTimestamp`,
    /// `authSignedTimestampWindowSeconds`; a window of 0 is refused).
    pub fn with_signed_time(
        mut self,
        require: bool,
        window_seconds: u64,
    ) -> Result<AuthSettings, BadWhitelist> {
        if window_seconds == 0 {
            return Err(BadWhitelist {
                field: "auth_signed_timestamp_window_seconds",
                problem: "0 is no window: give at least 1 (seconds)".to_string(),
            });
        }
        self.require_signed_time = require;
        self.signed_time_window = Duration::from_secs(window_seconds);
        Ok(self)
    }

    /// Parses a whitelist as RocketMQ writes it: request codes separated by commas; `field`
    /// names the config key in the error.
    pub fn parse_whitelist(field: &'static str, text: &str) -> Result<Vec<i32>, BadWhitelist> {
        text.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<i32>().map_err(|_| BadWhitelist {
                    field,
                    problem: format!(
                        "{s:?} is not a request code (request codes separated by commas, e.g. \"105,106\")"
                    ),
                })
            })
            .collect()
    }

    /// The settings a server's config keys describe (the broker's and the NameServer's
    /// `authentication_enabled`, `authorization_enabled` and the two whitelists).
    pub fn from_keys(
        authentication_enabled: bool,
        authorization_enabled: bool,
        whitelists: [&str; 2],
        cluster_name: String,
    ) -> Result<AuthSettings, BadWhitelist> {
        Ok(AuthSettings {
            authentication_enabled,
            authorization_enabled,
            authentication_whitelist: Self::parse_whitelist(
                "authentication_whitelist",
                whitelists[0],
            )?,
            authorization_whitelist: Self::parse_whitelist(
                "authorization_whitelist",
                whitelists[1],
            )?,
            cluster_name,
            ..AuthSettings::default()
        })
    }
}

/// An auth setting that cannot be used: a whitelist entry that is not a request code, or a
/// signed-time window of 0; `problem` says which and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct BadWhitelist {
    pub field: &'static str,
    pub problem: String,
}

fn no_permission(remark: impl Into<String>) -> Refusal {
    Refusal::new(response_code::NO_PERMISSION, remark)
}

/// Most signatures a [`ReplayGuard`] remembers (about 40 MiB): beyond it the oldest time
/// buckets are forgotten and requests signed before the oldest one kept are refused, so every
/// request accepted was checked against every signature of its time.
pub const MAX_REMEMBERED_SIGNATURES: usize = 1_000_000;
/// The window is remembered in this many time buckets.
const BUCKETS_PER_WINDOW: i64 = 60;

/// Refuses stale and replayed signed requests ([`SIGNED_AT`]): remembers the (access key,
/// signature) of every authenticated request by the bucket of its signed time until the window
/// has passed over it.
pub struct ReplayGuard {
    require: bool,
    window_ms: i64,
    bucket_ms: i64,
    cap: usize,
    seen: parking_lot::Mutex<Seen>,
    hasher: std::collections::hash_map::RandomState,
    warned_full: AtomicBool,
}

#[derive(Default)]
struct Seen {
    /// Bucket number (signed time / bucket length) -> signature hashes signed in it.
    buckets: BTreeMap<i64, HashSet<u64>>,
    total: usize,
    /// Requests signed before this (ms) are refused: their bucket was forgotten when full.
    floor_ms: i64,
}

impl ReplayGuard {
    pub fn new(settings: &AuthSettings) -> ReplayGuard {
        ReplayGuard::with_cap(settings, MAX_REMEMBERED_SIGNATURES)
    }

    pub fn with_cap(settings: &AuthSettings, cap: usize) -> ReplayGuard {
        let window_ms = i64::try_from(settings.signed_time_window.as_millis())
            .unwrap_or(i64::MAX / 4)
            .max(1);
        ReplayGuard {
            require: settings.require_signed_time,
            window_ms,
            bucket_ms: (window_ms / BUCKETS_PER_WINDOW).max(1),
            cap: cap.max(1),
            seen: parking_lot::Mutex::new(Seen::default()),
            hasher: Default::default(),
            warned_full: AtomicBool::new(false),
        }
    }

    /// Checks the signed time of an authenticated `request` at `now_ms` and remembers its
    /// signature.
    pub fn check(&self, request: &RemotingCommand, now_ms: i64) -> Result<(), Refusal> {
        let Some(value) = request.ext(SIGNED_AT) else {
            if self.require {
                return Err(no_permission(format!(
                    "the request carries no signed time ({SIGNED_AT}) and this server requires one (authRequireSignedTimestamp = true): sign with a Rocketraft client, or turn the key off for RocketMQ's own clients"
                )));
            }
            return Ok(());
        };
        let signed_ms = value
            .split('.')
            .next()
            .and_then(|ms| ms.parse::<i64>().ok())
            .ok_or_else(|| {
                no_permission(format!(
                    "{SIGNED_AT} {value:?} is not <milliseconds since the epoch>.<suffix>"
                ))
            })?;
        let skew = signed_ms.saturating_sub(now_ms);
        if skew.unsigned_abs() > self.window_ms.unsigned_abs() {
            let (how, by) = if skew < 0 {
                ("ago", -skew)
            } else {
                ("ahead", skew)
            };
            return Err(no_permission(format!(
                "the request was signed {} s {how} ({SIGNED_AT} {signed_ms}), outside this server's {} s window (authSignedTimestampWindowSeconds): refused as expired or replayed (check the client's clock)",
                by / 1000,
                self.window_ms / 1000
            )));
        }
        let mut h = self.hasher.build_hasher();
        request.ext(ACCESS_KEY).unwrap_or("").hash(&mut h);
        request.ext(SIGNATURE).unwrap_or("").hash(&mut h);
        let key = h.finish();
        let bucket = signed_ms.div_euclid(self.bucket_ms);
        let mut seen = self.seen.lock();
        // Forget the buckets the window has passed over: their requests are refused as expired.
        let expired_below = (now_ms - self.window_ms).div_euclid(self.bucket_ms);
        while let Some(entry) = seen.buckets.first_entry() {
            if *entry.key() >= expired_below {
                break;
            }
            let forgotten = entry.remove().len();
            seen.total -= forgotten;
        }
        if signed_ms < seen.floor_ms {
            return Err(Refusal::new(
                response_code::SYSTEM_BUSY,
                format!(
                    "this server remembers no signatures older than {} ms ago (more than {} signed requests within its window): sign again and retry",
                    now_ms - seen.floor_ms,
                    self.cap
                ),
            ));
        }
        if seen.buckets.get(&bucket).is_some_and(|b| b.contains(&key)) {
            return Err(no_permission(format!(
                "the request (access key {}, signed {}) was already served: refused as a replay",
                request.ext(ACCESS_KEY).unwrap_or(""),
                value
            )));
        }
        while seen.total >= self.cap {
            // Forget the oldest bucket, but never the one this request falls in.
            let Some(oldest) = seen.buckets.keys().next().copied().filter(|&b| b < bucket) else {
                return Err(Refusal::new(
                    response_code::SYSTEM_BUSY,
                    format!(
                        "more than {} signed requests within {} ms: retry in a moment",
                        self.cap, self.bucket_ms
                    ),
                ));
            };
            if let Some(forgotten) = seen.buckets.remove(&oldest) {
                seen.total -= forgotten.len();
            }
            seen.floor_ms = seen
                .floor_ms
                .max((oldest + 1).saturating_mul(self.bucket_ms));
            if !self.warned_full.swap(true, Ordering::Relaxed) {
                warn!(cap = self.cap, "the replay guard is full: requests signed before its oldest remembered time are refused");
            }
        }
        seen.buckets.entry(bucket).or_default().insert(key);
        seen.total += 1;
        Ok(())
    }
}

/// Checks requests before their processor runs (RocketMQ's `AuthenticationPipeline` and
/// `AuthorizationPipeline`).
pub struct AuthGuard {
    pub inner: Arc<dyn RequestProcessor>,
    pub settings: Arc<AuthSettings>,
    pub metadata: Arc<dyn AuthMetadata>,
    /// Shared by every processor of the server: one memory of signatures per server.
    pub replay: Arc<ReplayGuard>,
}

impl RequestProcessor for AuthGuard {
    fn process(
        &self,
        ctx: RequestContext,
        request: RemotingCommand,
    ) -> BoxFuture<Option<RemotingCommand>> {
        if ctx.connection.is_trusted() {
            return self.inner.process(ctx, request);
        }
        let inner = self.inner.clone();
        let settings = self.settings.clone();
        let metadata = self.metadata.clone();
        let replay = self.replay.clone();
        Box::pin(async move {
            match check(&settings, metadata.as_ref(), &replay, &ctx, &request).await {
                Ok(()) => inner.process(ctx, request).await,
                Err(refusal) => {
                    warn!(
                        peer = %ctx.peer,
                        code = request.code,
                        access_key = request.ext(ACCESS_KEY).unwrap_or(""),
                        remark = %refusal.remark,
                        "request refused by ACL"
                    );
                    (!request.is_oneway()).then(|| refusal.response_to(&request))
                }
            }
        })
    }
}

/// Authenticates and authorizes one request. A request handed over in-process by a client of
/// this process ([`is_attested`]) is authenticated by that client's credentials; it has no
/// signature, so neither the replay check nor `authRequireSignedTimestamp` applies to it.
pub async fn check(
    settings: &AuthSettings,
    metadata: &dyn AuthMetadata,
    replay: &ReplayGuard,
    ctx: &RequestContext,
    request: &RemotingCommand,
) -> Result<(), Refusal> {
    let code = request.code;
    let authenticate =
        settings.authentication_enabled && !settings.authentication_whitelist.contains(&code);
    let authorize =
        settings.authorization_enabled && !settings.authorization_whitelist.contains(&code);
    if !authenticate && !authorize {
        return Ok(());
    }
    let user = user_of(metadata, request).await?;
    if authenticate {
        authenticate_request(&user, ctx, request)?;
        // In-process (attested): nothing crossed a socket, no signature to replay.
        if !is_attested(ctx, request) {
            replay.check(request, rocketraft_common::time::now_ms())?;
        }
    }
    if authorize {
        authorize_user(settings, metadata, &user, ctx.peer.ip(), request).await?;
    }
    Ok(())
}

/// The enabled user named by the request's `AccessKey`.
async fn user_of(
    metadata: &dyn AuthMetadata,
    request: &RemotingCommand,
) -> Result<UserInfo, Refusal> {
    let Some(username) = request.ext(ACCESS_KEY).filter(|u| !u.is_empty()) else {
        return Err(no_permission(
            "the request is not signed (no AccessKey): this server requires credentials (access key and secret key)",
        ));
    };
    let Some(user) = metadata.user(username).await? else {
        return Err(no_permission(format!("User:{username} is not found.")));
    };
    if !user.enabled() {
        return Err(no_permission(format!("User:{username} is disabled.")));
    }
    Ok(user)
}

/// [`authenticate_user`] for a request handed over in-process with `attested`.
fn authenticate_attested(user: &UserInfo, attested: &SessionCredentials) -> Result<(), Refusal> {
    let secret = user.password.as_deref().unwrap_or("");
    if secret.is_empty() || !same_secret(secret, &attested.secret_key) {
        return Err(no_permission(format!(
            "User:{}: check signature failed (is the secret key right?).",
            user.username
        )));
    }
    Ok(())
}

fn authenticate_user(user: &UserInfo, request: &RemotingCommand) -> Result<(), Refusal> {
    let secret = user.password.as_deref().unwrap_or("");
    if request.ext(SIGNATURE).is_none() {
        return Err(no_permission(format!(
            "User:{} sent no Signature: check signature failed.",
            user.username
        )));
    }
    if secret.is_empty() || !verify(request, secret) {
        return Err(no_permission(format!(
            "User:{}: check signature failed (is the secret key right?).",
            user.username
        )));
    }
    Ok(())
}

async fn authorize_user(
    settings: &AuthSettings,
    metadata: &dyn AuthMetadata,
    user: &UserInfo,
    ip: IpAddr,
    request: &RemotingCommand,
) -> Result<(), Refusal> {
    if user.user_type() == UserType::Super {
        return Ok(());
    }
    let subject = user_subject(&user.username);
    let needs = match requirement(request, &settings.cluster_name) {
        Ok(Requirement::Needs(needs)) => needs,
        Ok(Requirement::Super) => {
            return Err(no_permission(format!(
                "{subject} has no permission for request code {}: it is an admin request, only Super users may send it",
                request.code
            )))
        }
        Err(why) => {
            return Err(no_permission(format!(
                "cannot authorize request code {}: {why}",
                request.code
            )))
        }
    };
    if needs.is_empty() {
        return Ok(());
    }
    let acl = metadata.acl(&subject).await?;
    for need in &needs {
        decide(&subject, acl.as_deref(), need, ip)?;
    }
    Ok(())
}

fn decide(subject: &str, acl: Option<&Acl>, need: &Need, ip: IpAddr) -> Result<(), Refusal> {
    let decision =
        acl.and_then(|acl| acl.decide_any(need.kind, &need.name, need.actions, Some(ip)));
    let why = match decision {
        Some(Decision::Allow) => return Ok(()),
        Some(Decision::Deny) => "the decision is deny",
        None if acl.is_none() => "the user has no ACL",
        None => "no matched policies",
    };
    let actions: BTreeMap<&str, ()> = need.actions.iter().map(|a| (a.as_str(), ())).collect();
    let actions: Vec<&str> = actions.into_keys().collect();
    Err(no_permission(format!(
        "{subject} has no permission to {} on {}:{}: {why}.",
        actions.join(" or "),
        need.kind.as_str(),
        need.name
    )))
}

/// Whether `request` is signed by (or, in-process, attested as: [`is_attested`]) an enabled
/// Super user of `metadata`, or arrives on a connection that proved the cluster secret: who
/// may see secret keys.
pub async fn caller_is_super(
    metadata: &dyn AuthMetadata,
    ctx: &RequestContext,
    request: &RemotingCommand,
) -> bool {
    if ctx.connection.is_trusted() {
        return true;
    }
    let Ok(user) = user_of(metadata, request).await else {
        return false;
    };
    user.user_type() == UserType::Super && authenticate_request(&user, ctx, request).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The content and signature of a PULL_MESSAGE request, derived by hand from
    /// `AclClientRPCHook`: the header fields of `AclClientRPCHookTest.testParseRequestContent`
    /// plus `AccessKey`, values in key order, then the (empty) body.
    #[test]
    fn signs_like_acl_client_rpc_hook() {
        let mut request = RemotingCommand::request(crate::request_code::PULL_MESSAGE)
            .with_ext("consumerGroup", "group")
            .with_ext("topic", "topic")
            .with_ext("queueId", 1)
            .with_ext("queueOffset", 2)
            .with_ext("maxMsgNums", 32)
            .with_ext("sysFlag", 0)
            .with_ext("commitOffset", 0)
            .with_ext("suspendTimeoutMillis", 15000)
            .with_ext("subVersion", 0);
        let credentials = SessionCredentials::new("ak", "12345678").unwrap();
        sign_without_time(&mut request, &credentials);
        // AccessKey < commitOffset < consumerGroup < maxMsgNums < queueId < queueOffset <
        // subVersion < suspendTimeoutMillis < sysFlag < topic (upper case sorts first).
        let content = signing_content(&request);
        assert_eq!(content, b"ak0group32120150000topic".to_vec());
        assert_eq!(
            request.ext(SIGNATURE),
            Some(
                rocketraft_common::acl::hmac_sha1_base64(b"ak0group32120150000topic", "12345678")
                    .as_str()
            )
        );
        assert!(verify(&request, "12345678"));
        assert!(!verify(&request, "12345679"));
        let mut tampered = request.clone();
        tampered.set_ext("queueOffset", 3);
        assert!(!verify(&tampered, "12345678"));
        let mut with_body = request.clone();
        with_body.body = bytes::Bytes::from_static(b"x");
        assert!(!verify(&with_body, "12345678"));
    }

    /// Keys outside ASCII order as Java's `String.compareTo` (UTF-16 code units), not as
    /// bytes: U+10000 (the surrogates D800 DC00) sorts before U+E000, whose UTF-8 bytes sort
    /// first. A signature of a wrong length or not in base64 verifies as false.
    #[test]
    fn non_ascii_keys_sign_in_java_order() {
        let mut request = RemotingCommand::request(crate::request_code::PULL_MESSAGE)
            .with_ext("\u{E000}", "x")
            .with_ext("\u{10000}", "y")
            .with_ext("a", "z")
            .with_body(bytes::Bytes::from_static(b"B"));
        assert_eq!(signing_content(&request), b"zyxB".to_vec());
        let credentials = SessionCredentials::new("ak", "12345678").unwrap();
        sign_without_time(&mut request, &credentials);
        assert!(verify(&request, "12345678"));
        let mut short = request.clone();
        short.set_ext(SIGNATURE, "AAAA");
        assert!(!verify(&short, "12345678"));
        let mut garbage = request.clone();
        garbage.set_ext(SIGNATURE, "not base64 at all!");
        assert!(!verify(&garbage, "12345678"));
    }

    /// `AclSignerTest.calSignatureTest`: a request whose content is exactly "RocketMQ".
    #[test]
    fn signature_matches_the_rocketmq_test_vector() {
        let mut request = RemotingCommand::request(10).with_body(&b"MQ"[..]);
        let credentials = SessionCredentials::new("Rocket", "12345678").unwrap();
        sign_without_time(&mut request, &credentials);
        assert_eq!(signing_content(&request), b"RocketMQ".to_vec());
        assert_eq!(request.ext(SIGNATURE), Some("IUc8rrO/0gDch8CjObLQsW2rsiA="));
        assert_eq!(request.ext(ACCESS_KEY), Some("Rocket"));
    }

    #[test]
    fn old_peers_leave_the_unique_key_flag_out() {
        let mut request = RemotingCommand::request(12)
            .with_ext("topic", "T")
            .with_ext(UNIQUE_MSG_QUERY_FLAG, "true");
        request.version = 399;
        let credentials = SessionCredentials::new("ak", "sk").unwrap();
        sign_without_time(&mut request, &credentials);
        assert_eq!(signing_content(&request), b"akT".to_vec());
        request.version = 401;
        assert_eq!(signing_content(&request), b"aktrueT".to_vec());
    }

    #[test]
    fn credentials_debug_redacts_and_json_parses() {
        let credentials =
            SessionCredentials::from_json(r#"{"accessKey":"rocketmq2","secretKey":"12345678"}"#)
                .unwrap();
        assert_eq!(credentials.access_key, "rocketmq2");
        let shown = format!("{credentials:?}");
        assert!(
            shown.contains("rocketmq2") && !shown.contains("12345678"),
            "{shown}"
        );
        assert_eq!(
            SessionCredentials::new("ak", ""),
            Err(CredentialsError::EmptySecretKey)
        );
        assert!(SessionCredentials::from_json("{").is_err());
        let init = SessionCredentials::from_json(r#"{"username":"rocketmq","password":"pw"}"#);
        assert_eq!(init.map(|c| c.access_key), Ok("rocketmq".to_string()));
    }

    #[test]
    fn our_signer_signs_a_unique_time() {
        let credentials = SessionCredentials::new("ak", "sk").unwrap();
        let mut a = RemotingCommand::request(105).with_ext("topic", "T");
        let mut b = a.clone();
        sign(&mut a, &credentials);
        sign(&mut b, &credentials);
        let at = a.ext(SIGNED_AT).unwrap();
        let ms: i64 = at.split('.').next().unwrap().parse().unwrap();
        assert!(
            (rocketraft_common::time::now_ms() - ms).abs() < 10_000,
            "{at}"
        );
        // The time is covered: changing it breaks the signature.
        assert!(verify(&a, "sk"));
        let mut moved = a.clone();
        moved.set_ext(SIGNED_AT, format!("{}.x", ms + 1));
        assert!(!verify(&moved, "sk"));
        // Identical requests signed at once still differ.
        assert_ne!(a.ext(SIGNED_AT), b.ext(SIGNED_AT));
        assert_ne!(a.ext(SIGNATURE), b.ext(SIGNATURE));
    }

    fn signed_at(ms: i64, n: u32) -> RemotingCommand {
        let credentials = SessionCredentials::new("ak", "sk").unwrap();
        let mut r = RemotingCommand::request(105).with_ext(SIGNED_AT, format!("{ms}.{n}"));
        sign_without_time(&mut r, &credentials);
        r
    }

    fn settings(require: bool) -> AuthSettings {
        AuthSettings::default()
            .with_signed_time(require, 300)
            .unwrap()
    }

    #[test]
    fn the_replay_guard_refuses_replays_expired_and_unsigned_times() {
        let now = 1_700_000_000_000;
        let guard = ReplayGuard::new(&settings(false));
        let fresh = signed_at(now - 1_000, 1);
        assert_eq!(guard.check(&fresh, now), Ok(()));
        let replayed = guard.check(&fresh, now + 5_000).unwrap_err();
        assert_eq!(replayed.code, response_code::NO_PERMISSION);
        assert!(replayed.remark.contains("replay"), "{}", replayed.remark);
        for ms in [now - 301_000, now + 301_000] {
            let stale = guard.check(&signed_at(ms, 2), now).unwrap_err();
            assert!(stale.remark.contains("outside"), "{}", stale.remark);
        }
        let garbled = RemotingCommand::request(105).with_ext(SIGNED_AT, "yesterday");
        assert!(guard.check(&garbled, now).is_err());
        // Without the switch a request without a time passes; with it, it is refused by name.
        let untimed = RemotingCommand::request(105).with_ext(ACCESS_KEY, "ak");
        assert_eq!(guard.check(&untimed, now), Ok(()));
        let strict = ReplayGuard::new(&settings(true));
        let refused = strict.check(&untimed, now).unwrap_err();
        assert!(
            refused.remark.contains("authRequireSignedTimestamp"),
            "{}",
            refused.remark
        );
        assert!(AuthSettings::default().with_signed_time(true, 0).is_err());
    }

    #[test]
    fn the_replay_guard_forgets_old_buckets_and_stays_bounded() {
        let now = 1_700_000_000_000;
        let guard = ReplayGuard::with_cap(&settings(false), 100);
        // 100 signatures 200 s ago fill it ...
        for n in 0..100 {
            guard.check(&signed_at(now - 200_000, n), now).unwrap();
        }
        // ... a fresh one makes room by forgetting them, and their time is refused from then on
        // (a replay of a forgotten signature cannot slip through).
        guard.check(&signed_at(now, 1), now).unwrap();
        assert_eq!(guard.seen.lock().total, 1);
        let old = guard.check(&signed_at(now - 200_000, 0), now).unwrap_err();
        assert_eq!(old.code, response_code::SYSTEM_BUSY, "{}", old.remark);
        // The window passing over a bucket forgets it too.
        let later = now + 400_000;
        guard.check(&signed_at(later, 2), later).unwrap();
        assert_eq!(guard.seen.lock().total, 1);
        // Full within one bucket: refused, nothing forgotten that could be replayed.
        let tight = ReplayGuard::with_cap(&settings(false), 3);
        for n in 0..3 {
            tight.check(&signed_at(now, n), now).unwrap();
        }
        let busy = tight.check(&signed_at(now, 9), now).unwrap_err();
        assert_eq!(busy.code, response_code::SYSTEM_BUSY);
        assert!(
            tight.check(&signed_at(now, 0), now).is_err(),
            "still a replay"
        );
    }

    #[test]
    fn whitelists_parse_like_rocketmq() {
        assert_eq!(
            AuthSettings::parse_whitelist("w", " 10, 11,,"),
            Ok(vec![10, 11])
        );
        assert!(AuthSettings::parse_whitelist("w", "10,x").is_err());
    }
}
