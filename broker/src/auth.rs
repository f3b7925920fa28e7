//! ACL 2.0 on the broker's Remoting port: the users and ACLs the checks of
//! [`rocketraft_remoting::auth`] use, read from the broker's own ACL store ([`crate::acl`]).
//!
//! Besides the stored users, two come from the config and are `Super` users on every broker that
//! has them, as RocketMQ's `AuthenticationMetadataManagerImpl.initUser` creates them:
//! `initAuthenticationUser` (the administrator `cluster up --auth` sets up) and
//! `innerClientAuthenticationCredentials` (what servers sign their calls to each other with). A
//! stored user of the same name wins (RocketMQ creates them only when absent); unlike RocketMQ
//! they are not written to the store, so every replica of a broker set knows them from its config
//! without a replicated write.

use std::sync::{Arc, OnceLock};

use rocketraft_common::acl::{Acl, UserInfo};
use rocketraft_remoting::auth::{AuthMetadata, BadWhitelist, SessionCredentials};
use rocketraft_remoting::server::BoxFuture;
use rocketraft_remoting::{Refusal, RemotingServerBuilder};

use crate::config::BrokerConfig;
use crate::BrokerInner;

/// The users a config defines: `Super`, enabled.
pub fn config_users(config: &BrokerConfig) -> Vec<UserInfo> {
    [
        &config.init_authentication_user,
        &config.inner_client_authentication_credentials,
    ]
    .into_iter()
    .flatten()
    .map(SessionCredentials::super_user)
    .collect()
}

/// Users and ACLs of a broker: its store, then its config users.
pub struct BrokerAuthMetadata {
    pub inner: Arc<OnceLock<Arc<BrokerInner>>>,
    pub config_users: Vec<UserInfo>,
}

impl BrokerAuthMetadata {
    /// The user from the store, else from the config: from the ACL manager's cache, else read
    /// off the async workers (RocksDB).
    pub fn lookup(&self, username: &str) -> BoxFuture<Result<Option<UserInfo>, Refusal>> {
        let broker = broker(&self.inner);
        let from_config = self
            .config_users
            .iter()
            .find(|u| u.username == username)
            .cloned();
        let name = username.to_string();
        Box::pin(async move {
            let broker = broker?;
            if let Some(hit) = broker.acl.cached_user(&name) {
                return Ok(hit.or(from_config));
            }
            let stored = tokio::task::spawn_blocking(move || broker.acl.get_user(&name))
                .await
                .map_err(|e| Refusal::system_error(format!("user lookup task failed: {e}")))?
                .map_err(Refusal::from)?;
            Ok(stored.or(from_config))
        })
    }
}

fn broker(slot: &OnceLock<Arc<BrokerInner>>) -> Result<Arc<BrokerInner>, Refusal> {
    slot.get().cloned().ok_or_else(|| {
        Refusal::new(
            rocketraft_remoting::response_code::SYSTEM_BUSY,
            "the broker is still starting",
        )
    })
}

impl AuthMetadata for BrokerAuthMetadata {
    fn user(&self, username: &str) -> BoxFuture<Result<Option<UserInfo>, Refusal>> {
        self.lookup(username)
    }

    fn acl(&self, subject: &str) -> BoxFuture<Result<Option<Arc<Acl>>, Refusal>> {
        let broker = broker(&self.inner);
        let subject = subject.to_string();
        Box::pin(async move {
            let broker = broker?;
            let info = match broker.acl.cached_acl(&subject) {
                Some(hit) => hit,
                None => tokio::task::spawn_blocking(move || broker.acl.get_acl(&subject))
                    .await
                    .map_err(|e| Refusal::system_error(format!("ACL lookup task failed: {e}")))?
                    .map_err(Refusal::from)?,
            };
            match info {
                None => Ok(None),
                Some(info) => Acl::parse(&info)
                    .map(|acl| Some(Arc::new(acl)))
                    .map_err(|e| {
                        Refusal::system_error(format!("the stored ACL does not parse: {e}"))
                    }),
            }
        })
    }
}

/// Installs the ACL checks of `config` on the broker's server.
pub fn install(
    builder: RemotingServerBuilder,
    config: &BrokerConfig,
    metadata: Arc<BrokerAuthMetadata>,
) -> Result<RemotingServerBuilder, BadWhitelist> {
    if config.authentication_enabled || config.authorization_enabled {
        tracing::info!(
            authentication = config.authentication_enabled,
            authorization = config.authorization_enabled,
            "Remoting ACL checks on"
        );
    }
    Ok(builder.auth(config.auth_settings()?, metadata))
}
