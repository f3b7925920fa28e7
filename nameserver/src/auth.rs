//! ACL 2.0 on the NameServer's Remoting port.
//!
//! RocketMQ's NameServer checks nothing; here, with `authenticationEnabled` /
//! `authorizationEnabled`, it checks requests as the brokers do ([`rocketraft_remoting::auth`]).
//! It keeps no ACL store of its own: users and ACLs live on the brokers, so the NameServer asks
//! the brokers registered with it (masters first) with AUTH_GET_USER / AUTH_GET_ACL — as the
//! proxy does — over a client that proves the cluster secret and signs with
//! `innerClientAuthenticationCredentials`, so the brokers show it the passwords. Answers (not
//! found included) are kept for [`CACHE_TTL`], bounded to [`MAX_CACHED`] entries. The Super users
//! of its own config (`initAuthenticationUser`, the inner credentials) are known without asking,
//! so brokers can register (without a cluster secret) and an administrator can work before any
//! broker is up.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rocketraft_common::acl::{Acl, UserInfo};
use rocketraft_remoting::api::{ApiError, MqClientApi};
use rocketraft_remoting::auth::{AuthMetadata, SessionCredentials};
use rocketraft_remoting::server::BoxFuture;
use rocketraft_remoting::{ClientConfig, Refusal, RemotingClient};

use crate::config::NamesrvConfig;
use crate::processor::NamesrvState;

/// How long users and ACLs fetched from brokers are reused.
pub const CACHE_TTL: Duration = Duration::from_secs(3);
/// Most entries per cache before it is cleared (a flood of bogus access keys).
pub const MAX_CACHED: usize = 10_000;
/// The timeout of one question to a broker.
const ASK_TIMEOUT: Duration = Duration::from_secs(3);

type Cache<T> = Mutex<HashMap<String, (Instant, T)>>;

/// Users and ACLs for the NameServer's checks: its config users, then the brokers'.
pub struct NamesrvAuthMetadata {
    state: Arc<NamesrvState>,
    api: MqClientApi,
    config_users: Vec<UserInfo>,
    users: Cache<Option<UserInfo>>,
    acls: Cache<Option<Arc<Acl>>>,
}

impl NamesrvAuthMetadata {
    pub(crate) fn new(config: &NamesrvConfig, state: Arc<NamesrvState>) -> Arc<Self> {
        if config.authentication_enabled
            && config.cluster_secret.is_none()
            && config.inner_client_authentication_credentials.is_none()
        {
            tracing::warn!("authentication is on but the NameServer has neither the cluster secret nor innerClientAuthenticationCredentials: brokers show users' secret keys only to a Super caller, so only the users of this NameServer's own config can sign in here");
        }
        let client = RemotingClient::new(ClientConfig {
            cluster_secret: config.cluster_secret.clone(),
            credentials: config.inner_client_authentication_credentials.clone(),
            ..ClientConfig::default()
        });
        let config_users = [
            &config.init_authentication_user,
            &config.inner_client_authentication_credentials,
        ]
        .into_iter()
        .flatten()
        .map(SessionCredentials::super_user)
        .collect();
        Arc::new(NamesrvAuthMetadata {
            state,
            api: MqClientApi::new(client, ASK_TIMEOUT),
            config_users,
            users: Mutex::new(HashMap::new()),
            acls: Mutex::new(HashMap::new()),
        })
    }

    /// The registered brokers, masters first.
    fn brokers(&self) -> Vec<String> {
        let info = self.state.routes.read().cluster_info();
        let (mut masters, mut slaves) = (Vec::new(), Vec::new());
        for broker in info.broker_addr_table.values() {
            for (id, addr) in &broker.broker_addrs {
                if *id == 0 {
                    masters.push(addr.clone());
                } else {
                    slaves.push(addr.clone());
                }
            }
        }
        masters.sort();
        slaves.sort();
        masters.extend(slaves);
        masters
    }

    /// Asks the brokers in turn until one answers.
    async fn ask<T, F, Fut>(&self, what: &str, ask: F) -> Result<T, Refusal>
    where
        F: Fn(MqClientApi, String) -> Fut,
        Fut: std::future::Future<Output = Result<T, ApiError>>,
    {
        let mut last = None;
        for broker in self.brokers() {
            match ask(self.api.clone(), broker.clone()).await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    tracing::debug!(%broker, error = %e, what, "a broker did not answer an ACL lookup");
                    last = Some(format!("{broker}: {e}"));
                }
            }
        }
        Err(Refusal::system_error(format!(
            "cannot look up {what}: no broker answered ({})",
            last.unwrap_or_else(|| "no broker is registered".to_string())
        )))
    }

    async fn fetch_user(self: Arc<Self>, username: String) -> Result<Option<UserInfo>, Refusal> {
        if let Some(user) = self.config_users.iter().find(|u| u.username == username) {
            return Ok(Some(user.clone()));
        }
        if let Some(hit) = cached(&self.users, &username) {
            return Ok(hit);
        }
        if rocketraft_common::acl::validate_username(&username).is_err() {
            return Ok(None);
        }
        let user = self
            .ask("a user", |api, broker| {
                let username = username.clone();
                async move { api.get_user(&broker, &username).await }
            })
            .await?;
        store(&self.users, &username, user.clone());
        Ok(user)
    }

    async fn fetch_acl(self: Arc<Self>, subject: String) -> Result<Option<Arc<Acl>>, Refusal> {
        if let Some(hit) = cached(&self.acls, &subject) {
            return Ok(hit);
        }
        let info = self
            .ask("an ACL", |api, broker| {
                let subject = subject.clone();
                async move { api.get_acl(&broker, &subject).await }
            })
            .await?;
        let acl = match info {
            None => None,
            Some(info) => Some(Arc::new(Acl::parse(&info).map_err(|e| {
                Refusal::system_error(format!("the broker's ACL of {subject} does not parse: {e}"))
            })?)),
        };
        store(&self.acls, &subject, acl.clone());
        Ok(acl)
    }
}

fn cached<T: Clone>(cache: &Cache<T>, key: &str) -> Option<T> {
    cache
        .lock()
        .get(key)
        .filter(|(at, _)| at.elapsed() < CACHE_TTL)
        .map(|(_, v)| v.clone())
}

fn store<T>(cache: &Cache<T>, key: &str, value: T) {
    let mut map = cache.lock();
    if map.len() >= MAX_CACHED {
        map.retain(|_, (at, _)| at.elapsed() < CACHE_TTL);
        if map.len() >= MAX_CACHED {
            map.clear();
        }
    }
    map.insert(key.to_string(), (Instant::now(), value));
}

/// The trait is implemented on the `Arc` so the lookups can run as `'static` futures.
pub struct Shared(pub Arc<NamesrvAuthMetadata>);

impl AuthMetadata for Shared {
    fn user(&self, username: &str) -> BoxFuture<Result<Option<UserInfo>, Refusal>> {
        Box::pin(self.0.clone().fetch_user(username.to_string()))
    }

    fn acl(&self, subject: &str) -> BoxFuture<Result<Option<Arc<Acl>>, Refusal>> {
        Box::pin(self.0.clone().fetch_acl(subject.to_string()))
    }
}
