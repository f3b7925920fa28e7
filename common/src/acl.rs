//! ACL 2.0 (RocketMQ 5.3 `auth`): users and access control lists, as they travel on the wire
//! ([`UserInfo`], [`AclInfo`] — the JSON bodies of the `AUTH_*` Remoting requests 3001..3010) and
//! the rules that decide a request ([`Acl::decide`]).
//!
//! A user is a username, a password (the secret key clients sign with), a type (`Super` users
//! may do everything) and a status (`enable` / `disable`). An ACL belongs to a subject
//! (`User:alice`) and holds policies (`Custom`, the ones administrators write, and `Default`);
//! a policy is a list of entries: a resource (`Topic:orders`, `Group:billing`, `Topic:*`,
//! `Topic:orders-*` for a prefix, `*` for anything), actions (`Pub`, `Sub`, `All`, ...), optional
//! source IPs and a decision (`Allow` / `Deny`).
//!
//! Deciding: the `Custom` policy's entries that match the resource, an action and the source IP
//! are considered first (the `Default` policy's only if none matches); the most specific resource
//! wins (literal before prefix, a longer prefix before a shorter one, a type wildcard before `*`),
//! and among equally specific entries `Deny` wins. No matching entry means denied.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// `UserInfo`: the body of AUTH_CREATE_USER / AUTH_UPDATE_USER and the answer of AUTH_GET_USER
/// (a JSON array of them for AUTH_LIST_USER).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserInfo {
    #[serde(default)]
    pub username: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// `Super` or `Normal`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_type: Option<String>,
    /// `enable` or `disable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_status: Option<String>,
}

/// `AclInfo`: the body of AUTH_CREATE_ACL / AUTH_UPDATE_ACL and the answer of AUTH_GET_ACL (a
/// JSON array of them for AUTH_LIST_ACL).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AclInfo {
    #[serde(default)]
    pub subject: String,
    #[serde(default)]
    pub policies: Vec<PolicyInfo>,
}

/// One policy of an ACL.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyInfo {
    /// `Custom` (the default) or `Default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_type: Option<String>,
    #[serde(default)]
    pub entries: Vec<PolicyEntryInfo>,
}

/// One entry of a policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyEntryInfo {
    pub resource: String,
    #[serde(default)]
    pub actions: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_ips: Vec<String>,
    /// `Allow` or `Deny`.
    #[serde(default)]
    pub decision: String,
}

/// Why an ACL or a user is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AclError(pub String);

fn err<T>(why: impl Into<String>) -> Result<T, AclError> {
    Err(AclError(why.into()))
}

/// A user's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserType {
    Super,
    Normal,
}

impl UserType {
    pub fn parse(text: &str) -> Result<UserType, AclError> {
        match text.to_ascii_lowercase().as_str() {
            "super" => Ok(UserType::Super),
            "normal" => Ok(UserType::Normal),
            _ => err(format!("user type {text:?} is neither Super nor Normal")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            UserType::Super => "Super",
            UserType::Normal => "Normal",
        }
    }
}

/// A user's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserStatus {
    Enable,
    Disable,
}

impl UserStatus {
    pub fn parse(text: &str) -> Result<UserStatus, AclError> {
        match text.to_ascii_lowercase().as_str() {
            "enable" => Ok(UserStatus::Enable),
            "disable" => Ok(UserStatus::Disable),
            _ => err(format!(
                "user status {text:?} is neither enable nor disable"
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            UserStatus::Enable => "enable",
            UserStatus::Disable => "disable",
        }
    }
}

/// The most characters a username, password or resource name may have.
pub const MAX_NAME_LEN: usize = 255;

/// Checks a username (`[A-Za-z0-9_.-]`, not empty, at most [`MAX_NAME_LEN`] characters).
pub fn validate_username(name: &str) -> Result<(), AclError> {
    if name.is_empty() {
        return err("the username is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return err(format!(
            "the username is longer than {MAX_NAME_LEN} characters"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        return err(format!(
            "the username {name:?} has the character {c:?} (allowed: letters, digits, _ - .)"
        ));
    }
    Ok(())
}

impl UserInfo {
    /// Checks the fields and writes them in their canonical spelling; a missing type is
    /// `Normal`, a missing status `enable`. `require_password`: a new user needs one.
    pub fn normalized(&self, require_password: bool) -> Result<UserInfo, AclError> {
        validate_username(&self.username)?;
        let password = match &self.password {
            Some(p) if p.is_empty() => return err("the password is empty"),
            Some(p) if p.len() > MAX_NAME_LEN => {
                return err(format!(
                    "the password is longer than {MAX_NAME_LEN} characters"
                ))
            }
            Some(p) => Some(p.clone()),
            None if require_password => {
                return err(format!("user {:?} needs a password", self.username))
            }
            None => None,
        };
        let user_type = match &self.user_type {
            Some(t) if !t.is_empty() => UserType::parse(t)?,
            _ => UserType::Normal,
        };
        let user_status = match &self.user_status {
            Some(s) if !s.is_empty() => UserStatus::parse(s)?,
            _ => UserStatus::Enable,
        };
        Ok(UserInfo {
            username: self.username.clone(),
            password,
            user_type: Some(user_type.as_str().to_string()),
            user_status: Some(user_status.as_str().to_string()),
        })
    }

    pub fn user_type(&self) -> UserType {
        self.user_type
            .as_deref()
            .and_then(|t| UserType::parse(t).ok())
            .unwrap_or(UserType::Normal)
    }

    /// Whether the user may sign in (a missing or unknown status counts as enabled only when it
    /// is missing).
    pub fn enabled(&self) -> bool {
        match self.user_status.as_deref() {
            None | Some("") => true,
            Some(s) => UserStatus::parse(s) == Ok(UserStatus::Enable),
        }
    }
}

/// What a resource is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResourceKind {
    Cluster,
    Namespace,
    Topic,
    Group,
}

impl ResourceKind {
    pub fn parse(text: &str) -> Option<ResourceKind> {
        match text.to_ascii_lowercase().as_str() {
            "cluster" => Some(ResourceKind::Cluster),
            "namespace" => Some(ResourceKind::Namespace),
            "topic" => Some(ResourceKind::Topic),
            "group" => Some(ResourceKind::Group),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Cluster => "Cluster",
            ResourceKind::Namespace => "Namespace",
            ResourceKind::Topic => "Topic",
            ResourceKind::Group => "Group",
        }
    }
}

/// A resource pattern of a policy entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResourcePattern {
    /// `*`: every resource of every kind.
    Any,
    /// `Topic:*`: every resource of a kind.
    AllOf(ResourceKind),
    /// `Topic:orders-*`: names starting with a prefix.
    Prefix(ResourceKind, String),
    /// `Topic:orders`: one name.
    Literal(ResourceKind, String),
}

impl ResourcePattern {
    /// Parses `*`, `Kind:*`, `Kind:prefix*` or `Kind:name`.
    pub fn parse(text: &str) -> Result<ResourcePattern, AclError> {
        let text = text.trim();
        if text == "*" {
            return Ok(ResourcePattern::Any);
        }
        let Some((kind, name)) = text.split_once(':') else {
            return err(format!(
                "resource {text:?} is not Kind:name (e.g. Topic:orders, Group:billing, Topic:*, Topic:orders-*)"
            ));
        };
        let Some(kind) = ResourceKind::parse(kind) else {
            return err(format!(
                "resource {text:?}: the kind {kind:?} is not Topic, Group, Cluster or Namespace"
            ));
        };
        if name.is_empty() {
            return err(format!("resource {text:?} has no name"));
        }
        if name.len() > MAX_NAME_LEN {
            return err(format!(
                "resource {text:?} is longer than {MAX_NAME_LEN} characters"
            ));
        }
        if name == "*" {
            return Ok(ResourcePattern::AllOf(kind));
        }
        if let Some(prefix) = name.strip_suffix('*') {
            if prefix.contains('*') {
                return err(format!("resource {text:?}: `*` may only end the name"));
            }
            return Ok(ResourcePattern::Prefix(kind, prefix.to_string()));
        }
        if name.contains('*') {
            return err(format!("resource {text:?}: `*` may only end the name"));
        }
        Ok(ResourcePattern::Literal(kind, name.to_string()))
    }

    pub fn matches(&self, kind: ResourceKind, name: &str) -> bool {
        match self {
            ResourcePattern::Any => true,
            ResourcePattern::AllOf(k) => *k == kind,
            ResourcePattern::Prefix(k, p) => *k == kind && name.starts_with(p.as_str()),
            ResourcePattern::Literal(k, n) => *k == kind && n == name,
        }
    }

    /// Higher is more specific.
    fn specificity(&self) -> (u8, usize) {
        match self {
            ResourcePattern::Any => (0, 0),
            ResourcePattern::AllOf(_) => (1, 0),
            ResourcePattern::Prefix(_, p) => (2, p.len()),
            ResourcePattern::Literal(..) => (3, 0),
        }
    }
}

impl fmt::Display for ResourcePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResourcePattern::Any => f.write_str("*"),
            ResourcePattern::AllOf(k) => write!(f, "{}:*", k.as_str()),
            ResourcePattern::Prefix(k, p) => write!(f, "{}:{p}*", k.as_str()),
            ResourcePattern::Literal(k, n) => write!(f, "{}:{n}", k.as_str()),
        }
    }
}

/// An action on a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    All,
    Any,
    Pub,
    Sub,
    Create,
    Update,
    Delete,
    Get,
    List,
}

impl Action {
    pub fn parse(text: &str) -> Result<Action, AclError> {
        Ok(match text.trim().to_ascii_lowercase().as_str() {
            "all" => Action::All,
            "any" => Action::Any,
            "pub" => Action::Pub,
            "sub" => Action::Sub,
            "create" => Action::Create,
            "update" => Action::Update,
            "delete" => Action::Delete,
            "get" => Action::Get,
            "list" => Action::List,
            _ => {
                return err(format!(
                    "action {text:?} is not one of Pub, Sub, All, Create, Update, Delete, Get, List, Any"
                ))
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Action::All => "All",
            Action::Any => "Any",
            Action::Pub => "Pub",
            Action::Sub => "Sub",
            Action::Create => "Create",
            Action::Update => "Update",
            Action::Delete => "Delete",
            Action::Get => "Get",
            Action::List => "List",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An entry's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny,
}

impl Decision {
    pub fn parse(text: &str) -> Result<Decision, AclError> {
        match text.trim().to_ascii_lowercase().as_str() {
            "allow" => Ok(Decision::Allow),
            "deny" => Ok(Decision::Deny),
            _ => err(format!("decision {text:?} is neither Allow nor Deny")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "Allow",
            Decision::Deny => "Deny",
        }
    }
}

/// A policy's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyType {
    Custom,
    Default,
}

impl PolicyType {
    /// Parses `Custom` / `Default`; empty means `Custom`.
    pub fn parse(text: Option<&str>) -> Result<PolicyType, AclError> {
        match text.map(|t| t.trim().to_ascii_lowercase()).as_deref() {
            None | Some("") | Some("custom") => Ok(PolicyType::Custom),
            Some("default") => Ok(PolicyType::Default),
            Some(_) => err(format!(
                "policy type {:?} is neither Custom nor Default",
                text.unwrap_or_default()
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PolicyType::Custom => "Custom",
            PolicyType::Default => "Default",
        }
    }
}

/// A source-IP condition: one address or a CIDR block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpRange {
    net: IpAddr,
    prefix: u8,
}

impl IpRange {
    pub fn parse(text: &str) -> Result<IpRange, AclError> {
        let text = text.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let Ok(net) = addr.parse::<IpAddr>() else {
            return err(format!(
                "source IP {text:?} is not an address or a CIDR block"
            ));
        };
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(p) if p <= max => p,
                _ => return err(format!("source IP {text:?} has a bad prefix length")),
            },
        };
        Ok(IpRange { net, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match (self.net, ip) {
            (IpAddr::V4(_), IpAddr::V6(v6)) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            _ => ip,
        };
        match (self.net, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - self.prefix as u32).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - self.prefix as u32).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// One parsed policy entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub resource: ResourcePattern,
    pub actions: Vec<Action>,
    pub source_ips: Vec<IpRange>,
    pub decision: Decision,
}

impl Entry {
    fn parse(info: &PolicyEntryInfo) -> Result<Entry, AclError> {
        let resource = ResourcePattern::parse(&info.resource)?;
        if info.actions.is_empty() {
            return err(format!("the entry for {} has no actions", info.resource));
        }
        let mut actions = Vec::new();
        for a in &info.actions {
            // `Pub,Sub` inside one string is accepted too.
            for part in a.split(',').filter(|p| !p.trim().is_empty()) {
                let action = Action::parse(part)?;
                if !actions.contains(&action) {
                    actions.push(action);
                }
            }
        }
        if actions.is_empty() {
            return err(format!("the entry for {} has no actions", info.resource));
        }
        let source_ips = info
            .source_ips
            .iter()
            .map(|s| IpRange::parse(s))
            .collect::<Result<Vec<_>, _>>()?;
        let decision = if info.decision.is_empty() {
            Decision::Allow
        } else {
            Decision::parse(&info.decision)?
        };
        Ok(Entry {
            resource,
            actions,
            source_ips,
            decision,
        })
    }

    fn matches(&self, kind: ResourceKind, name: &str, action: Action, ip: Option<IpAddr>) -> bool {
        if !self.resource.matches(kind, name) {
            return false;
        }
        if !self
            .actions
            .iter()
            .any(|a| *a == action || *a == Action::All || *a == Action::Any)
        {
            return false;
        }
        if self.source_ips.is_empty() {
            return true;
        }
        ip.is_some_and(|ip| self.source_ips.iter().any(|r| r.contains(ip)))
    }
}

/// A parsed ACL, ready to decide requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acl {
    pub subject: String,
    pub custom: Vec<Entry>,
    pub default: Vec<Entry>,
}

/// The subject of a user's ACL: `User:{name}`.
pub fn user_subject(username: &str) -> String {
    format!("User:{username}")
}

/// Checks a subject (`User:name`).
pub fn validate_subject(subject: &str) -> Result<(), AclError> {
    match subject.split_once(':') {
        Some((kind, name)) if kind.eq_ignore_ascii_case("User") => validate_username(name),
        _ => err(format!(
            "subject {subject:?} is not User:name (e.g. User:alice)"
        )),
    }
}

impl Acl {
    pub fn parse(info: &AclInfo) -> Result<Acl, AclError> {
        validate_subject(&info.subject)?;
        let mut acl = Acl {
            subject: info.subject.clone(),
            custom: Vec::new(),
            default: Vec::new(),
        };
        for policy in &info.policies {
            let target = match PolicyType::parse(policy.policy_type.as_deref())? {
                PolicyType::Custom => &mut acl.custom,
                PolicyType::Default => &mut acl.default,
            };
            for entry in &policy.entries {
                target.push(Entry::parse(entry)?);
            }
        }
        Ok(acl)
    }

    /// The decision for `action` on the resource `kind`/`name` from `ip`; `None` when no entry
    /// matches (which callers treat as denied).
    pub fn decide(
        &self,
        kind: ResourceKind,
        name: &str,
        action: Action,
        ip: Option<IpAddr>,
    ) -> Option<Decision> {
        for entries in [&self.custom, &self.default] {
            let best = entries
                .iter()
                .filter(|e| e.matches(kind, name, action, ip))
                .max_by_key(|e| {
                    (
                        e.resource.specificity(),
                        // Deny beats Allow at equal specificity.
                        e.decision == Decision::Deny,
                    )
                });
            if let Some(entry) = best {
                return Some(entry.decision);
            }
        }
        None
    }

    /// RocketMQ's decision for a request that needs any one of `actions`
    /// (`AclAuthorizationHandler`): among the entries that match the resource, the source IP and
    /// at least one of the actions, the most specific decides (`Deny` winning ties); `None` when
    /// no entry matches (denied).
    pub fn decide_any(
        &self,
        kind: ResourceKind,
        name: &str,
        actions: &[Action],
        ip: Option<IpAddr>,
    ) -> Option<Decision> {
        for entries in [&self.custom, &self.default] {
            let best = entries
                .iter()
                .filter(|e| actions.iter().any(|a| e.matches(kind, name, *a, ip)))
                .max_by_key(|e| (e.resource.specificity(), e.decision == Decision::Deny));
            if let Some(entry) = best {
                return Some(entry.decision);
            }
        }
        None
    }
}

/// RocketMQ's `AclSigner.calSignature`: Base64 (standard alphabet, padded) of
/// HMAC-SHA1(`secret`, `data`). Remoting requests are signed with it (`AclClientRPCHook`).
pub fn hmac_sha1_base64(data: &[u8], secret: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret.as_bytes());
    crate::base64::encode_standard(ring::hmac::sign(&key, data).as_ref())
}

/// Whether `signature` is [`hmac_sha1_base64`] of `data` with `secret`; the MAC is compared in
/// constant time (RocketMQ compares the Base64 text with `MessageDigest.isEqual`).
pub fn verify_hmac_sha1_base64(data: &[u8], secret: &str, signature: &str) -> bool {
    let Some(mac) = crate::base64::decode(signature) else {
        return false;
    };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret.as_bytes());
    ring::hmac::verify(&key, data, &mac).is_ok()
}

/// [`hmac_sha1_base64`] of the concatenation of `parts`, without making it: each part is fed
/// to the MAC where it lies.
pub fn hmac_sha1_base64_parts<'a>(
    parts: impl IntoIterator<Item = &'a [u8]>,
    secret: &str,
) -> String {
    crate::base64::encode_standard(hmac_sha1_parts(parts, secret).as_ref())
}

/// [`verify_hmac_sha1_base64`] of the concatenation of `parts`, without making it; the MAC is
/// compared in constant time.
pub fn verify_hmac_sha1_base64_parts<'a>(
    parts: impl IntoIterator<Item = &'a [u8]>,
    secret: &str,
    signature: &str,
) -> bool {
    let Some(mac) = crate::base64::decode(signature) else {
        return false;
    };
    let tag = hmac_sha1_parts(parts, secret);
    let tag = tag.as_ref();
    // Every byte compared whatever the earlier ones were; `black_box` keeps the compiler from
    // turning the fold into an early exit.
    tag.len() == mac.len()
        && std::hint::black_box(
            tag.iter()
                .zip(&mac)
                .fold(0u8, |acc, (a, b)| std::hint::black_box(acc | (a ^ b))),
        ) == 0
}

fn hmac_sha1_parts<'a>(parts: impl IntoIterator<Item = &'a [u8]>, secret: &str) -> ring::hmac::Tag {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret.as_bytes());
    let mut context = ring::hmac::Context::with_key(&key);
    for part in parts {
        context.update(part);
    }
    context.sign()
}

impl AclInfo {
    /// Checks every field and writes them in their canonical spelling (policy types, resources,
    /// actions and decisions); entries for the same resource in one policy: the last one counts.
    pub fn normalized(&self) -> Result<AclInfo, AclError> {
        validate_subject(&self.subject)?;
        let name = self
            .subject
            .split_once(':')
            .map(|(_, n)| n)
            .unwrap_or_default();
        let mut out = AclInfo {
            subject: user_subject(name),
            policies: Vec::new(),
        };
        for policy in &self.policies {
            let policy_type = PolicyType::parse(policy.policy_type.as_deref())?;
            let mut entries: Vec<PolicyEntryInfo> = Vec::new();
            for entry in &policy.entries {
                let parsed = Entry::parse(entry)?;
                let canonical = PolicyEntryInfo {
                    resource: parsed.resource.to_string(),
                    actions: parsed
                        .actions
                        .iter()
                        .map(|a| a.as_str().to_string())
                        .collect(),
                    source_ips: entry
                        .source_ips
                        .iter()
                        .map(|s| s.trim().to_string())
                        .collect(),
                    decision: parsed.decision.as_str().to_string(),
                };
                entries.retain(|e| e.resource != canonical.resource);
                entries.push(canonical);
            }
            out.merge_policy(policy_type, entries);
        }
        Ok(out)
    }

    /// Adds `entries` to the policy of `policy_type`, replacing entries for the same resources.
    pub fn merge_policy(&mut self, policy_type: PolicyType, entries: Vec<PolicyEntryInfo>) {
        let name = policy_type.as_str();
        let index = match self
            .policies
            .iter()
            .position(|p| PolicyType::parse(p.policy_type.as_deref()).ok() == Some(policy_type))
        {
            Some(i) => i,
            None => {
                self.policies.push(PolicyInfo {
                    policy_type: Some(name.to_string()),
                    entries: Vec::new(),
                });
                self.policies.len() - 1
            }
        };
        let policy = &mut self.policies[index];
        policy.policy_type = Some(name.to_string());
        for entry in entries {
            policy.entries.retain(|e| e.resource != entry.resource);
            policy.entries.push(entry);
        }
    }

    /// Merges every policy of `other` into this ACL (what AUTH_CREATE_ACL and AUTH_UPDATE_ACL
    /// do to an existing ACL). Both must be normalized.
    pub fn merge(&mut self, other: AclInfo) {
        for policy in other.policies {
            let policy_type =
                PolicyType::parse(policy.policy_type.as_deref()).unwrap_or(PolicyType::Custom);
            self.merge_policy(policy_type, policy.entries);
        }
    }

    /// Removes the entries for `resource` (canonical form) from the policy of `policy_type`, or
    /// from every policy when `None`; returns whether anything was removed. Empty policies go.
    pub fn remove_resource(&mut self, policy_type: Option<PolicyType>, resource: &str) -> bool {
        let mut removed = false;
        for policy in &mut self.policies {
            let this = PolicyType::parse(policy.policy_type.as_deref()).ok();
            if policy_type.is_some() && this != policy_type {
                continue;
            }
            let before = policy.entries.len();
            policy.entries.retain(|e| e.resource != resource);
            removed |= policy.entries.len() != before;
        }
        self.policies.retain(|p| !p.entries.is_empty());
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(resource: &str, actions: &[&str], decision: &str) -> PolicyEntryInfo {
        PolicyEntryInfo {
            resource: resource.into(),
            actions: actions.iter().map(|a| a.to_string()).collect(),
            source_ips: vec![],
            decision: decision.into(),
        }
    }

    #[test]
    fn signer_matches_rocketmq_acl_signer_test() {
        // AclSignerTest.calSignatureTest in apache/rocketmq.
        let expected = "IUc8rrO/0gDch8CjObLQsW2rsiA=";
        assert_eq!(hmac_sha1_base64(b"RocketMQ", "12345678"), expected);
        assert!(verify_hmac_sha1_base64(b"RocketMQ", "12345678", expected));
        assert!(!verify_hmac_sha1_base64(b"RocketMQ", "12345679", expected));
        assert!(!verify_hmac_sha1_base64(b"RocketMQ!", "12345678", expected));
        assert!(!verify_hmac_sha1_base64(
            b"RocketMQ",
            "12345678",
            "not base64 *"
        ));
    }

    #[test]
    fn decide_any_takes_the_most_specific_entry_matching_any_action() {
        let acl = acl(vec![
            entry("Topic:*", &["Sub"], "Allow"),
            entry("Topic:orders", &["Pub"], "Deny"),
        ]);
        let both = [Action::Pub, Action::Sub];
        // The literal entry matches Pub and is more specific than the wildcard: denied.
        assert_eq!(
            acl.decide_any(ResourceKind::Topic, "orders", &both, None),
            Some(Decision::Deny)
        );
        assert_eq!(
            acl.decide_any(ResourceKind::Topic, "orders", &[Action::Sub], None),
            Some(Decision::Allow)
        );
        assert_eq!(acl.decide_any(ResourceKind::Group, "g", &both, None), None);
    }

    fn acl(entries: Vec<PolicyEntryInfo>) -> Acl {
        Acl::parse(&AclInfo {
            subject: "User:alice".into(),
            policies: vec![PolicyInfo {
                policy_type: None,
                entries,
            }],
        })
        .expect("valid acl")
    }

    #[test]
    fn wire_names_match_rocketmq() {
        let info = AclInfo {
            subject: "User:alice".into(),
            policies: vec![PolicyInfo {
                policy_type: Some("Custom".into()),
                entries: vec![PolicyEntryInfo {
                    resource: "Topic:T".into(),
                    actions: vec!["Pub".into()],
                    source_ips: vec!["10.0.0.0/8".into()],
                    decision: "Allow".into(),
                }],
            }],
        };
        let json = serde_json::to_string(&info).expect("serialize");
        assert_eq!(
            json,
            r#"{"subject":"User:alice","policies":[{"policyType":"Custom","entries":[{"resource":"Topic:T","actions":["Pub"],"sourceIps":["10.0.0.0/8"],"decision":"Allow"}]}]}"#
        );
        let user: UserInfo = serde_json::from_str(
            r#"{"username":"bob","password":"pw","userType":"Super","userStatus":"enable"}"#,
        )
        .expect("parse");
        assert_eq!(user.user_type(), UserType::Super);
        assert!(user.enabled());
    }

    #[test]
    fn literal_beats_wildcard_and_deny_wins_ties() {
        let a = acl(vec![
            entry("Topic:*", &["Pub"], "Allow"),
            entry("Topic:secret", &["Pub"], "Deny"),
            entry("Topic:orders-*", &["Sub"], "Allow"),
            entry("Group:g", &["Sub"], "Allow"),
            entry("Group:g", &["All"], "Deny"),
        ]);
        assert_eq!(
            a.decide(ResourceKind::Topic, "anything", Action::Pub, None),
            Some(Decision::Allow)
        );
        assert_eq!(
            a.decide(ResourceKind::Topic, "secret", Action::Pub, None),
            Some(Decision::Deny)
        );
        assert_eq!(
            a.decide(ResourceKind::Topic, "anything", Action::Sub, None),
            None
        );
        assert_eq!(
            a.decide(ResourceKind::Topic, "orders-eu", Action::Sub, None),
            Some(Decision::Allow)
        );
        // Two literal entries for one group in one parsed ACL: Deny wins.
        assert_eq!(
            a.decide(ResourceKind::Group, "g", Action::Sub, None),
            Some(Decision::Deny)
        );
    }

    #[test]
    fn default_policy_only_when_no_custom_entry_matches() {
        let a = Acl::parse(&AclInfo {
            subject: "User:alice".into(),
            policies: vec![
                PolicyInfo {
                    policy_type: Some("Default".into()),
                    entries: vec![entry("*", &["All"], "Allow")],
                },
                PolicyInfo {
                    policy_type: Some("Custom".into()),
                    entries: vec![entry("Topic:T", &["Pub"], "Deny")],
                },
            ],
        })
        .expect("valid");
        assert_eq!(
            a.decide(ResourceKind::Topic, "T", Action::Pub, None),
            Some(Decision::Deny)
        );
        assert_eq!(
            a.decide(ResourceKind::Group, "G", Action::Sub, None),
            Some(Decision::Allow)
        );
    }

    #[test]
    fn source_ips_restrict_entries() {
        let mut e = entry("Topic:T", &["Pub"], "Allow");
        e.source_ips = vec!["192.168.1.0/24".into()];
        let a = acl(vec![e]);
        let inside: IpAddr = "192.168.1.7".parse().expect("ip");
        let outside: IpAddr = "192.168.2.7".parse().expect("ip");
        let mapped: IpAddr = "::ffff:192.168.1.9".parse().expect("ip");
        assert_eq!(
            a.decide(ResourceKind::Topic, "T", Action::Pub, Some(inside)),
            Some(Decision::Allow)
        );
        assert_eq!(
            a.decide(ResourceKind::Topic, "T", Action::Pub, Some(mapped)),
            Some(Decision::Allow)
        );
        assert_eq!(
            a.decide(ResourceKind::Topic, "T", Action::Pub, Some(outside)),
            None
        );
        assert_eq!(a.decide(ResourceKind::Topic, "T", Action::Pub, None), None);
    }

    #[test]
    fn normalize_merges_and_removes() {
        let mut base = AclInfo {
            subject: "user:alice".into(),
            policies: vec![PolicyInfo {
                policy_type: None,
                entries: vec![entry("topic:T", &["pub,sub"], "allow")],
            }],
        }
        .normalized()
        .expect("valid");
        assert_eq!(base.subject, "User:alice");
        assert_eq!(base.policies[0].policy_type.as_deref(), Some("Custom"));
        assert_eq!(base.policies[0].entries[0].resource, "Topic:T");
        assert_eq!(base.policies[0].entries[0].actions, vec!["Pub", "Sub"]);
        let more = AclInfo {
            subject: "User:alice".into(),
            policies: vec![PolicyInfo {
                policy_type: None,
                entries: vec![
                    entry("Topic:T", &["Sub"], "Deny"),
                    entry("Group:G", &["Sub"], "Allow"),
                ],
            }],
        }
        .normalized()
        .expect("valid");
        base.merge(more);
        assert_eq!(base.policies.len(), 1);
        assert_eq!(base.policies[0].entries.len(), 2);
        let t = base.policies[0]
            .entries
            .iter()
            .find(|e| e.resource == "Topic:T")
            .expect("T kept");
        assert_eq!(t.decision, "Deny");
        assert!(base.remove_resource(None, "Topic:T"));
        assert!(!base.remove_resource(None, "Topic:T"));
        assert!(base.remove_resource(Some(PolicyType::Custom), "Group:G"));
        assert!(base.policies.is_empty());
    }

    #[test]
    fn bad_input_is_refused_with_a_reason() {
        for (resource, actions, decision) in [
            ("Queue:T", "Pub", "Allow"),
            ("Topic:", "Pub", "Allow"),
            ("Topic:a*b", "Pub", "Allow"),
            ("Topic:T", "Publish", "Allow"),
            ("Topic:T", "Pub", "Maybe"),
        ] {
            let info = AclInfo {
                subject: "User:alice".into(),
                policies: vec![PolicyInfo {
                    policy_type: None,
                    entries: vec![entry(resource, &[actions], decision)],
                }],
            };
            assert!(
                info.normalized().is_err(),
                "{resource} {actions} {decision}"
            );
        }
        assert!(validate_subject("alice").is_err());
        assert!(validate_subject("User:al ice").is_err());
        assert!(UserInfo {
            username: "bob".into(),
            ..Default::default()
        }
        .normalized(true)
        .is_err());
    }
}
