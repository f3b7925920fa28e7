//! ACL 2.0 metadata of a broker (`AuthenticationMetadataManager` and
//! `AuthorizationMetadataManager` in RocketMQ): users and access control lists.
//!
//! Both live in the metadata RocksDB (the `kv` column family, keys `acl/user/{username}` and
//! `acl/acl/{subject}`, values the wire JSON of `UserInfo` / `AclInfo`), written with a synced
//! WAL before a change is answered, so an acknowledged change survives a crash. Reads come from
//! RocksDB (the proxy caches what it fetches, so the broker is not on the hot path).
//!
//! The semantics follow RocketMQ's: creating an existing user fails, updating changes only the
//! fields that are given; creating or updating an ACL merges its entries into the subject's ACL
//! (an entry for the same resource replaces the old one); deleting an ACL with a resource removes
//! that resource's entries, without one the whole ACL. Deleting a user also deletes its ACL.
//!
//! A change is first planned (`plan_*`: validated against the applied state, giving the
//! resulting user or ACL as a [`MetadataChange`]) and then applied ([`AclManager::apply`]); in
//! controller mode the broker replicates the change through the metadata log
//! ([`crate::metalog`]) between the two, so every replica applies the same state.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use rocketraft_common::acl::{
    user_subject, AclError, AclInfo, PolicyType, ResourcePattern, UserInfo,
};

use crate::metalog::MetadataChange;
use crate::store::metadata::MetadataStore;
use crate::store::StoreError;

const USER_PREFIX: &str = "acl/user/";
const ACL_PREFIX: &str = "acl/acl/";

/// Why an ACL request failed.
#[derive(Debug, thiserror::Error)]
pub enum AclStoreError {
    /// The request is malformed (bad name, resource, action...).
    #[error("{0}")]
    Invalid(#[from] AclError),
    #[error("the user {0:?} does not exist")]
    UserNotFound(String),
    #[error("the user {0:?} already exists")]
    UserExists(String),
    #[error("{0}")]
    PolicyNotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("stored ACL metadata under {key:?} is corrupt: {why}")]
    Corrupt { key: String, why: String },
}

/// Users and ACLs of one broker.
pub struct AclManager {
    metadata: Arc<MetadataStore>,
    /// Serializes read-modify-write changes.
    write_lock: Mutex<()>,
    /// What [`AclManager::get_user`] and [`AclManager::get_acl`] read lately: every signed
    /// request looks its user (and ACL) up, and a hit answers without RocksDB or a blocking
    /// thread. Every write clears it.
    cache: RwLock<ReadCache>,
}

/// Entries kept per kind before the cache starts over.
const CACHE_ENTRIES: usize = 10_000;

/// Users and ACLs by name as last read (`None`: known absent). `generation` counts writes: a
/// read that raced with a write does not enter what it read.
#[derive(Default)]
struct ReadCache {
    generation: u64,
    users: HashMap<String, Option<UserInfo>>,
    acls: HashMap<String, Option<AclInfo>>,
}

impl AclManager {
    pub fn new(metadata: Arc<MetadataStore>) -> AclManager {
        AclManager {
            metadata,
            write_lock: Mutex::new(()),
            cache: RwLock::new(ReadCache::default()),
        }
    }

    /// The user as last read, when the cache has it (`Some(None)`: known absent).
    pub fn cached_user(&self, username: &str) -> Option<Option<UserInfo>> {
        self.cache.read().users.get(username).cloned()
    }

    /// The subject's ACL as last read, when the cache has it (`Some(None)`: known absent).
    pub fn cached_acl(&self, subject: &str) -> Option<Option<AclInfo>> {
        self.cache.read().acls.get(subject).cloned()
    }

    /// Forgets every cached read; called after each write, whatever its outcome.
    fn invalidate(&self) {
        let mut cache = self.cache.write();
        cache.generation += 1;
        cache.users.clear();
        cache.acls.clear();
    }

    fn read<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>, AclStoreError> {
        match self.metadata.get_kv(key.as_bytes())? {
            None => Ok(None),
            Some(raw) => {
                serde_json::from_slice(&raw)
                    .map(Some)
                    .map_err(|e| AclStoreError::Corrupt {
                        key: key.to_string(),
                        why: e.to_string(),
                    })
            }
        }
    }

    fn write<T: serde::Serialize>(&self, key: &str, value: &T) -> Result<(), AclStoreError> {
        let raw = serde_json::to_vec(value).map_err(|e| AclStoreError::Corrupt {
            key: key.to_string(),
            why: e.to_string(),
        })?;
        let written = self.metadata.put_kv(key.as_bytes(), &raw, true);
        self.invalidate();
        written?;
        Ok(())
    }

    fn remove(&self, key: &str) -> Result<(), AclStoreError> {
        let deleted = self.metadata.delete_kv(key.as_bytes());
        self.invalidate();
        deleted?;
        // A synced WAL makes the deletion as durable as a synced write.
        self.metadata.flush()?;
        Ok(())
    }

    fn scan<T: serde::de::DeserializeOwned>(&self, prefix: &str) -> Result<Vec<T>, AclStoreError> {
        let mut out = Vec::new();
        for (key, raw) in self.metadata.scan_kv(prefix.as_bytes())? {
            match serde_json::from_slice(&raw) {
                Ok(v) => out.push(v),
                Err(e) => {
                    return Err(AclStoreError::Corrupt {
                        key: String::from_utf8_lossy(&key).into_owned(),
                        why: e.to_string(),
                    })
                }
            }
        }
        Ok(out)
    }

    pub fn get_user(&self, username: &str) -> Result<Option<UserInfo>, AclStoreError> {
        if let Some(hit) = self.cached_user(username) {
            return Ok(hit);
        }
        let generation = self.cache.read().generation;
        let user: Option<UserInfo> = self.read(&format!("{USER_PREFIX}{username}"))?;
        let mut cache = self.cache.write();
        if cache.generation == generation {
            if cache.users.len() >= CACHE_ENTRIES {
                cache.users.clear();
            }
            cache.users.insert(username.to_string(), user.clone());
        }
        Ok(user)
    }

    /// Every user whose name contains `filter` (all when empty), by name.
    pub fn list_users(&self, filter: Option<&str>) -> Result<Vec<UserInfo>, AclStoreError> {
        let mut users: Vec<UserInfo> = self.scan(USER_PREFIX)?;
        if let Some(f) = filter.filter(|f| !f.is_empty()) {
            users.retain(|u| u.username.contains(f));
        }
        Ok(users)
    }

    /// The change that creates `user` (refused if it exists).
    pub fn plan_create_user(&self, user: &UserInfo) -> Result<MetadataChange, AclStoreError> {
        let user = user.normalized(true)?;
        if self.get_user(&user.username)?.is_some() {
            return Err(AclStoreError::UserExists(user.username));
        }
        Ok(MetadataChange::PutUser { user })
    }

    /// The change that sets the fields `user` gives (password, type, status).
    pub fn plan_update_user(&self, user: &UserInfo) -> Result<MetadataChange, AclStoreError> {
        let given = user.normalized(false)?;
        let Some(mut current) = self.get_user(&given.username)? else {
            return Err(AclStoreError::UserNotFound(given.username));
        };
        if given.password.is_some() {
            current.password = given.password;
        }
        if user.user_type.as_deref().is_some_and(|t| !t.is_empty()) {
            current.user_type = given.user_type;
        }
        if user.user_status.as_deref().is_some_and(|s| !s.is_empty()) {
            current.user_status = given.user_status;
        }
        Ok(MetadataChange::PutUser { user: current })
    }

    /// The change that deletes a user and its ACL.
    pub fn plan_delete_user(&self, username: &str) -> Result<MetadataChange, AclStoreError> {
        if self.get_user(username)?.is_none() {
            return Err(AclStoreError::UserNotFound(username.to_string()));
        }
        Ok(MetadataChange::DeleteUser {
            username: username.to_string(),
        })
    }

    /// Applies an ACL change (a resulting state: applying it twice is harmless). Other changes
    /// are refused.
    pub fn apply(&self, change: &MetadataChange) -> Result<(), AclStoreError> {
        let _guard = self.write_lock.lock();
        self.apply_locked(change)
    }

    fn apply_locked(&self, change: &MetadataChange) -> Result<(), AclStoreError> {
        match change {
            MetadataChange::PutUser { user } => {
                rocketraft_common::acl::validate_username(&user.username)?;
                self.write(&format!("{USER_PREFIX}{}", user.username), user)?;
                tracing::info!(username = %user.username, user_type = ?user.user_type, "ACL user written");
            }
            MetadataChange::DeleteUser { username } => {
                self.remove(&format!("{ACL_PREFIX}{}", user_subject(username)))?;
                self.remove(&format!("{USER_PREFIX}{username}"))?;
                tracing::info!(%username, "ACL user deleted");
            }
            MetadataChange::PutAcl { acl } => {
                rocketraft_common::acl::validate_subject(&acl.subject)?;
                self.write(&format!("{ACL_PREFIX}{}", acl.subject), acl)?;
                tracing::info!(subject = %acl.subject, "ACL written");
            }
            MetadataChange::DeleteAcl { subject } => {
                self.remove(&format!("{ACL_PREFIX}{subject}"))?;
                tracing::info!(%subject, "ACL deleted");
            }
            other => {
                return Err(AclError(format!("{other:?} is not an ACL change")).into());
            }
        }
        Ok(())
    }

    /// Plans and applies under the write lock (tests and tools; the broker commits changes
    /// through [`crate::metalog::MetadataLog::commit`]).
    fn plan_and_apply(
        &self,
        plan: impl FnOnce(&Self) -> Result<MetadataChange, AclStoreError>,
    ) -> Result<MetadataChange, AclStoreError> {
        let _guard = self.write_lock.lock();
        let change = plan(self)?;
        self.apply_locked(&change)?;
        Ok(change)
    }

    pub fn create_user(&self, user: &UserInfo) -> Result<UserInfo, AclStoreError> {
        match self.plan_and_apply(|a| a.plan_create_user(user))? {
            MetadataChange::PutUser { user } => Ok(user),
            other => Err(AclError(format!("unexpected plan {other:?}")).into()),
        }
    }

    /// Changes the fields `user` gives (password, type, status).
    pub fn update_user(&self, user: &UserInfo) -> Result<UserInfo, AclStoreError> {
        match self.plan_and_apply(|a| a.plan_update_user(user))? {
            MetadataChange::PutUser { user } => Ok(user),
            other => Err(AclError(format!("unexpected plan {other:?}")).into()),
        }
    }

    /// Deletes a user and its ACL.
    pub fn delete_user(&self, username: &str) -> Result<(), AclStoreError> {
        self.plan_and_apply(|a| a.plan_delete_user(username))
            .map(drop)
    }

    pub fn get_acl(&self, subject: &str) -> Result<Option<AclInfo>, AclStoreError> {
        if let Some(hit) = self.cached_acl(subject) {
            return Ok(hit);
        }
        let generation = self.cache.read().generation;
        let acl: Option<AclInfo> = self.read(&format!("{ACL_PREFIX}{subject}"))?;
        let mut cache = self.cache.write();
        if cache.generation == generation {
            if cache.acls.len() >= CACHE_ENTRIES {
                cache.acls.clear();
            }
            cache.acls.insert(subject.to_string(), acl.clone());
        }
        Ok(acl)
    }

    /// Every ACL whose subject contains `subject_filter` and that has an entry whose resource
    /// contains `resource_filter` (all when empty).
    pub fn list_acls(
        &self,
        subject_filter: Option<&str>,
        resource_filter: Option<&str>,
    ) -> Result<Vec<AclInfo>, AclStoreError> {
        let mut acls: Vec<AclInfo> = self.scan(ACL_PREFIX)?;
        if let Some(f) = subject_filter.filter(|f| !f.is_empty()) {
            acls.retain(|a| a.subject.contains(f));
        }
        if let Some(f) = resource_filter.filter(|f| !f.is_empty()) {
            for acl in &mut acls {
                for policy in &mut acl.policies {
                    policy.entries.retain(|e| e.resource.contains(f));
                }
                acl.policies.retain(|p| !p.entries.is_empty());
            }
            acls.retain(|a| !a.policies.is_empty());
        }
        Ok(acls)
    }

    /// The change that merges `acl` into the subject's ACL (creating it); the user must exist.
    pub fn plan_put_acl(&self, acl: &AclInfo) -> Result<MetadataChange, AclStoreError> {
        let acl = acl.normalized()?;
        if acl.policies.iter().all(|p| p.entries.is_empty()) {
            return Err(AclError(format!("the ACL for {} has no entries", acl.subject)).into());
        }
        let username = acl
            .subject
            .split_once(':')
            .map(|(_, n)| n)
            .unwrap_or_default();
        if self.get_user(username)?.is_none() {
            return Err(AclStoreError::UserNotFound(username.to_string()));
        }
        let merged = match self.get_acl(&acl.subject)? {
            Some(mut current) => {
                current.merge(acl);
                current
            }
            None => acl,
        };
        Ok(MetadataChange::PutAcl { acl: merged })
    }

    /// The change that deletes a resource's entries (of one policy type, or all) or, without a
    /// resource, the whole ACL.
    pub fn plan_delete_acl(
        &self,
        subject: &str,
        policy_type: Option<&str>,
        resource: Option<&str>,
    ) -> Result<MetadataChange, AclStoreError> {
        rocketraft_common::acl::validate_subject(subject)?;
        let policy_type = match policy_type.filter(|p| !p.is_empty()) {
            Some(p) => Some(PolicyType::parse(Some(p))?),
            None => None,
        };
        let Some(mut acl) = self.get_acl(subject)? else {
            return Err(AclStoreError::PolicyNotFound(format!(
                "{subject} has no ACL"
            )));
        };
        let delete = MetadataChange::DeleteAcl {
            subject: subject.to_string(),
        };
        match resource.filter(|r| !r.is_empty()) {
            None => Ok(delete),
            Some(resource) => {
                let canonical = ResourcePattern::parse(resource)?.to_string();
                if !acl.remove_resource(policy_type, &canonical) {
                    return Err(AclStoreError::PolicyNotFound(format!(
                        "{subject} has no ACL entry for {canonical}"
                    )));
                }
                if acl.policies.is_empty() {
                    Ok(delete)
                } else {
                    Ok(MetadataChange::PutAcl { acl })
                }
            }
        }
    }

    /// Merges `acl` into the subject's ACL (creating it); the user must exist.
    pub fn put_acl(&self, acl: &AclInfo) -> Result<AclInfo, AclStoreError> {
        match self.plan_and_apply(|a| a.plan_put_acl(acl))? {
            MetadataChange::PutAcl { acl } => Ok(acl),
            other => Err(AclError(format!("unexpected plan {other:?}")).into()),
        }
    }

    /// Deletes a resource's entries (of one policy type, or all) or, without a resource, the
    /// whole ACL.
    pub fn delete_acl(
        &self,
        subject: &str,
        policy_type: Option<&str>,
        resource: Option<&str>,
    ) -> Result<(), AclStoreError> {
        self.plan_and_apply(|a| a.plan_delete_acl(subject, policy_type, resource))
            .map(drop)
    }

    /// Makes this broker's users and ACLs exactly `users` and `acls` (a slave copying its
    /// master); returns whether anything changed.
    pub fn replace_all(&self, users: &[UserInfo], acls: &[AclInfo]) -> Result<bool, AclStoreError> {
        let _guard = self.write_lock.lock();
        let mut changed = false;
        let current_users: Vec<UserInfo> = self.scan(USER_PREFIX)?;
        for user in users {
            if user.username.is_empty()
                || rocketraft_common::acl::validate_username(&user.username).is_err()
            {
                continue;
            }
            if !current_users.contains(user) {
                self.write(&format!("{USER_PREFIX}{}", user.username), user)?;
                changed = true;
            }
        }
        for old in &current_users {
            if !users.iter().any(|u| u.username == old.username) {
                self.remove(&format!("{USER_PREFIX}{}", old.username))?;
                changed = true;
            }
        }
        let current_acls: Vec<AclInfo> = self.scan(ACL_PREFIX)?;
        for acl in acls {
            if rocketraft_common::acl::validate_subject(&acl.subject).is_err() {
                continue;
            }
            if !current_acls.contains(acl) {
                self.write(&format!("{ACL_PREFIX}{}", acl.subject), acl)?;
                changed = true;
            }
        }
        for old in &current_acls {
            if !acls.iter().any(|a| a.subject == old.subject) {
                self.remove(&format!("{ACL_PREFIX}{}", old.subject))?;
                changed = true;
            }
        }
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rocketraft_common::acl::{PolicyEntryInfo, PolicyInfo};

    fn user(name: &str, password: Option<&str>) -> UserInfo {
        UserInfo {
            username: name.into(),
            password: password.map(str::to_string),
            user_type: None,
            user_status: None,
        }
    }

    fn grant(subject: &str, resource: &str, actions: &[&str], decision: &str) -> AclInfo {
        AclInfo {
            subject: subject.into(),
            policies: vec![PolicyInfo {
                policy_type: None,
                entries: vec![PolicyEntryInfo {
                    resource: resource.into(),
                    actions: actions.iter().map(|a| a.to_string()).collect(),
                    source_ips: vec![],
                    decision: decision.into(),
                }],
            }],
        }
    }

    #[test]
    fn cached_reads_follow_every_write() {
        let dir = tempfile::tempdir().expect("tempdir");
        let acl = AclManager::new(Arc::new(MetadataStore::open(dir.path()).expect("open")));
        assert_eq!(acl.get_user("carol").expect("read"), None);
        assert_eq!(acl.cached_user("carol"), Some(None), "absence cached");
        acl.create_user(&user("carol", Some("one")))
            .expect("create");
        assert_eq!(acl.cached_user("carol"), None, "a write clears the cache");
        let read = acl.get_user("carol").expect("read").expect("user");
        assert_eq!(read.password.as_deref(), Some("one"));
        acl.update_user(&user("carol", Some("two")))
            .expect("update");
        let read = acl.get_user("carol").expect("read").expect("user");
        assert_eq!(read.password.as_deref(), Some("two"));
        assert_eq!(acl.cached_user("carol"), Some(Some(read)));

        assert_eq!(acl.get_acl("User:carol").expect("read"), None);
        acl.put_acl(&grant("User:carol", "Topic:T", &["Pub"], "Allow"))
            .expect("grant");
        let granted = acl.get_acl("User:carol").expect("read").expect("acl");
        assert_eq!(acl.cached_acl("User:carol"), Some(Some(granted)));
        acl.delete_user("carol").expect("delete");
        assert_eq!(acl.get_user("carol").expect("read"), None);
        assert_eq!(acl.get_acl("User:carol").expect("read"), None);

        // A slave copying its master's users replaces what was cached.
        acl.replace_all(&[user("dave", Some("x"))], &[])
            .expect("replace");
        assert!(acl.get_user("dave").expect("read").is_some());
        acl.replace_all(&[], &[]).expect("replace");
        assert_eq!(acl.get_user("dave").expect("read"), None);
    }

    #[test]
    fn users_and_acls_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let metadata = Arc::new(MetadataStore::open(dir.path()).expect("open"));
            let acl = AclManager::new(metadata);
            acl.create_user(&user("alice", Some("secret")))
                .expect("create");
            assert!(matches!(
                acl.create_user(&user("alice", Some("other"))),
                Err(AclStoreError::UserExists(_))
            ));
            assert!(matches!(
                acl.create_user(&user("bob", None)),
                Err(AclStoreError::Invalid(_))
            ));
            acl.put_acl(&grant("User:alice", "Topic:T", &["Pub"], "Allow"))
                .expect("grant");
            acl.put_acl(&grant("User:alice", "Group:G", &["Sub"], "Allow"))
                .expect("grant");
            acl.put_acl(&grant("User:alice", "Topic:T", &["Pub", "Sub"], "Deny"))
                .expect("regrant");
            assert!(matches!(
                acl.put_acl(&grant("User:nobody", "Topic:T", &["Pub"], "Allow")),
                Err(AclStoreError::UserNotFound(_))
            ));
            let mut updated = user("alice", None);
            updated.user_type = Some("super".into());
            let u = acl.update_user(&updated).expect("update");
            assert_eq!(u.password.as_deref(), Some("secret"));
            assert_eq!(u.user_type.as_deref(), Some("Super"));
        }
        let metadata = Arc::new(MetadataStore::open(dir.path()).expect("reopen"));
        let acl = AclManager::new(metadata);
        let alice = acl.get_user("alice").expect("get").expect("alice kept");
        assert_eq!(alice.password.as_deref(), Some("secret"));
        let stored = acl.get_acl("User:alice").expect("get").expect("acl kept");
        assert_eq!(stored.policies.len(), 1);
        assert_eq!(stored.policies[0].entries.len(), 2);
        let t = stored.policies[0]
            .entries
            .iter()
            .find(|e| e.resource == "Topic:T")
            .expect("T");
        assert_eq!(t.decision, "Deny");
        assert_eq!(acl.list_acls(None, Some("Group")).expect("list").len(), 1);
        acl.delete_acl("User:alice", None, Some("Topic:T"))
            .expect("revoke");
        assert!(matches!(
            acl.delete_acl("User:alice", None, Some("Topic:T")),
            Err(AclStoreError::PolicyNotFound(_))
        ));
        acl.delete_user("alice").expect("delete");
        assert!(acl.get_user("alice").expect("get").is_none());
        assert!(acl.get_acl("User:alice").expect("get").is_none());
        assert!(acl.list_users(None).expect("list").is_empty());
    }

    #[test]
    fn replace_all_mirrors_the_master() {
        let dir = tempfile::tempdir().expect("tempdir");
        let metadata = Arc::new(MetadataStore::open(dir.path()).expect("open"));
        let acl = AclManager::new(metadata);
        acl.create_user(&user("stale", Some("x"))).expect("create");
        let master_users = vec![user("alice", Some("pw")).normalized(true).expect("valid")];
        let master_acls = vec![grant("User:alice", "Topic:T", &["Pub"], "Allow")
            .normalized()
            .expect("valid")];
        assert!(acl.replace_all(&master_users, &master_acls).expect("sync"));
        assert!(!acl.replace_all(&master_users, &master_acls).expect("sync"));
        assert_eq!(acl.list_users(None).expect("list"), master_users);
        assert_eq!(acl.list_acls(None, None).expect("list"), master_acls);
    }
}
