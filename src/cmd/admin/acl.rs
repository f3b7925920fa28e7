//! `rocketraft admin acl`: ACL 2.0 users and permissions on every master of a cluster
//! (AUTH_* Remoting requests 3001..3010). Slaves copy them from their master; proxies started
//! with `--auth` read them from the brokers.
//!
//! ```text
//! rocketraft admin acl user create --username alice --password s3cret [--user-type Normal]
//! rocketraft admin acl grant --subject User:alice --resource Topic:orders --actions Pub,Sub
//! rocketraft admin acl grant --subject User:alice --resource Group:billing --actions Sub
//! rocketraft admin acl revoke --subject User:alice --resource Topic:orders
//! rocketraft admin acl list
//! ```

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use rocketraft_common::acl::{
    validate_subject, validate_username, AclInfo, Action, Decision, IpRange, PolicyEntryInfo,
    PolicyInfo, ResourcePattern, UserInfo, UserStatus, UserType,
};
use rocketraft_remoting::api::MqClientApi;

use super::print_as;

/// Where ACL commands go.
#[derive(Args)]
pub struct Target {
    /// Cluster whose masters get the change.
    #[arg(long, default_value = rocketraft_common::consts::DEFAULT_CLUSTER)]
    cluster: String,
    /// One broker address instead of every master of the cluster.
    #[arg(long)]
    broker: Option<String>,
}

#[derive(Subcommand)]
pub enum AclCommand {
    /// Users (access key = username, secret key = password).
    #[command(subcommand)]
    User(UserCommand),
    /// Allow (or deny) a subject actions on resources.
    Grant {
        /// Who: `User:<username>`.
        #[arg(long)]
        subject: String,
        /// What: `Topic:<name>`, `Group:<name>`, `Topic:*`, a prefix `Topic:orders-*`, or `*`.
        /// Repeat for several.
        #[arg(long, required = true)]
        resource: Vec<String>,
        /// `Pub`, `Sub`, `All` (comma-separated).
        #[arg(long, value_delimiter = ',', required = true)]
        actions: Vec<String>,
        /// `Allow` or `Deny` (a Deny beats an Allow on the same resource).
        #[arg(long, default_value = "Allow")]
        decision: String,
        /// Only from these source addresses or CIDR blocks (comma-separated).
        #[arg(long, value_delimiter = ',')]
        source_ip: Vec<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Remove a subject's entries for a resource, or its whole ACL with --all.
    Revoke {
        #[arg(long)]
        subject: String,
        /// The resource whose entries go (as granted, e.g. `Topic:orders`).
        #[arg(long, conflicts_with = "all", required_unless_present = "all")]
        resource: Option<String>,
        /// Remove every entry of the subject.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        target: Target,
    },
    /// List ACLs (from the first master).
    List {
        /// Only subjects containing this text.
        #[arg(long)]
        subject: Option<String>,
        /// Only entries whose resource contains this text.
        #[arg(long)]
        resource: Option<String>,
        /// Print the AclInfo JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Subcommand)]
pub enum UserCommand {
    /// Create a user.
    Create {
        #[arg(long)]
        username: String,
        /// The secret key clients sign with.
        #[arg(long)]
        password: String,
        /// `Super` (may do everything) or `Normal` (needs grants).
        #[arg(long, default_value = "Normal")]
        user_type: String,
        #[command(flatten)]
        target: Target,
    },
    /// Change a user's password, type or status.
    Update {
        #[arg(long)]
        username: String,
        #[arg(long)]
        password: Option<String>,
        #[arg(long)]
        user_type: Option<String>,
        /// `enable` or `disable`.
        #[arg(long)]
        status: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Delete a user (and its ACL).
    Delete {
        #[arg(long)]
        username: String,
        #[command(flatten)]
        target: Target,
    },
    /// Show one user (from the first master; the password is not shown).
    Get {
        #[arg(long)]
        username: String,
        #[command(flatten)]
        target: Target,
    },
    /// List users (from the first master).
    List {
        /// Only usernames containing this text.
        #[arg(long)]
        filter: Option<String>,
        #[command(flatten)]
        target: Target,
    },
}

/// The brokers a command goes to: `--broker`, or every master of `--cluster`.
async fn brokers(api: &MqClientApi, namesrv: &str, target: &Target) -> anyhow::Result<Vec<String>> {
    if let Some(b) = &target.broker {
        return Ok(vec![b.clone()]);
    }
    let info = api
        .cluster_info(namesrv)
        .await
        .map_err(super::namesrv_error(namesrv))?;
    let Some(names) = info.cluster_addr_table.get(&target.cluster) else {
        bail!(
            "the NameServer knows no cluster {:?}; list clusters with `rocketraft admin cluster list`",
            target.cluster
        );
    };
    let mut masters: Vec<String> = names
        .iter()
        .filter_map(|n| info.broker_addr_table.get(n))
        .filter_map(|b| b.master_addr().map(str::to_string))
        .collect();
    masters.sort();
    if masters.is_empty() {
        bail!(
            "cluster {:?} has no live master; list clusters with `rocketraft admin cluster list`",
            target.cluster
        );
    }
    Ok(masters)
}

/// Runs `change` on every broker of `target` ([`brokers`]); all are tried, then any failure is
/// reported.
async fn on_every<F, Fut>(
    api: &MqClientApi,
    namesrv: &str,
    target: &Target,
    what: &str,
    change: F,
) -> anyhow::Result<()>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<(), rocketraft_remoting::api::ApiError>>,
{
    let brokers = brokers(api, namesrv, target).await?;
    let mut failed = Vec::new();
    for broker in &brokers {
        match change(broker.clone()).await {
            Ok(()) => println!("{what} on {broker}"),
            Err(e) => {
                eprintln!("{what} failed on {broker}: {e}");
                failed.push(format!("{broker}: {e}"));
            }
        }
    }
    if !failed.is_empty() {
        bail!(
            "{} of {} brokers refused: {}",
            failed.len(),
            brokers.len(),
            failed.join("; ")
        );
    }
    Ok(())
}

fn check<T>(result: Result<T, rocketraft_common::acl::AclError>) -> anyhow::Result<T> {
    result.map_err(|e| anyhow::anyhow!("{e}"))
}

pub async fn run(api: &MqClientApi, namesrv: &str, command: AclCommand) -> anyhow::Result<()> {
    match command {
        AclCommand::User(command) => run_user(api, namesrv, command).await,
        AclCommand::Grant {
            subject,
            resource,
            actions,
            decision,
            source_ip,
            target,
        } => {
            let acl = grant_acl(&subject, &resource, &actions, &decision, &source_ip)?;
            let what = format!(
                "granted {subject} {} {} on {}",
                decision,
                actions.join(","),
                resource.join(" ")
            );
            on_every(api, namesrv, &target, &what, |b| {
                let acl = acl.clone();
                async move { api.update_acl(&b, &acl).await }
            })
            .await
        }
        AclCommand::Revoke {
            subject,
            resource,
            all,
            target,
        } => {
            check(validate_subject(&subject))?;
            let resource = match resource {
                Some(r) => Some(check(ResourcePattern::parse(&r))?.to_string()),
                None if all => None,
                None => bail!("name the --resource to revoke, or --all"),
            };
            let what = match &resource {
                Some(r) => format!("revoked {subject} on {r}"),
                None => format!("deleted every ACL entry of {subject}"),
            };
            on_every(api, namesrv, &target, &what, |b| {
                let subject = subject.clone();
                let resource = resource.clone();
                async move {
                    api.delete_acl(&b, &subject, None, resource.as_deref())
                        .await
                }
            })
            .await
        }
        AclCommand::List {
            subject,
            resource,
            json,
            target,
        } => list_acls(api, namesrv, subject, resource, json, &target).await,
    }
}

/// The ACL a grant adds: one custom policy of the checked entries.
fn grant_acl(
    subject: &str,
    resources: &[String],
    actions: &[String],
    decision: &str,
    source_ips: &[String],
) -> anyhow::Result<AclInfo> {
    check(validate_subject(subject))?;
    let entries = policy_entries(resources, actions, decision, source_ips)?;
    Ok(AclInfo {
        subject: subject.to_string(),
        policies: vec![PolicyInfo {
            policy_type: Some("Custom".into()),
            entries,
        }],
    })
}

/// `acl list`, from the first master.
async fn list_acls(
    api: &MqClientApi,
    namesrv: &str,
    subject: Option<String>,
    resource: Option<String>,
    json: bool,
    target: &Target,
) -> anyhow::Result<()> {
    let broker = &first_broker(api, namesrv, target).await?;
    let acls = api
        .list_acls(broker, subject.as_deref(), resource.as_deref())
        .await
        .with_context(|| format!("cannot list ACLs on {broker}"))?;
    print_as(json, &acls, |acls| print_acls(acls))
}

/// The entries of a grant: each resource with the actions, source IPs and decision, all
/// checked.
fn policy_entries(
    resources: &[String],
    actions: &[String],
    decision: &str,
    source_ips: &[String],
) -> anyhow::Result<Vec<PolicyEntryInfo>> {
    let mut entries = Vec::new();
    for r in resources {
        let pattern = check(ResourcePattern::parse(r))?;
        entries.push(PolicyEntryInfo {
            resource: pattern.to_string(),
            actions: actions
                .iter()
                .map(|a| check(Action::parse(a)).map(|a| a.as_str().to_string()))
                .collect::<anyhow::Result<_>>()?,
            source_ips: source_ips
                .iter()
                .map(|ip| check(IpRange::parse(ip)).map(|_| ip.trim().to_string()))
                .collect::<anyhow::Result<_>>()?,
            decision: check(Decision::parse(decision))?.as_str().to_string(),
        });
    }
    Ok(entries)
}

fn print_acls(acls: &[AclInfo]) {
    println!(
        "{:<24} {:<8} {:<32} {:<12} {:<6} source IPs",
        "subject", "policy", "resource", "actions", "decision"
    );
    for acl in acls {
        for policy in &acl.policies {
            for e in &policy.entries {
                println!(
                    "{:<24} {:<8} {:<32} {:<12} {:<6} {}",
                    acl.subject,
                    policy.policy_type.as_deref().unwrap_or("Custom"),
                    e.resource,
                    e.actions.join(","),
                    e.decision,
                    e.source_ips.join(",")
                );
            }
        }
    }
}

async fn run_user(api: &MqClientApi, namesrv: &str, command: UserCommand) -> anyhow::Result<()> {
    match command {
        UserCommand::Create {
            username,
            password,
            user_type,
            target,
        } => {
            let user = check(
                UserInfo {
                    username: username.clone(),
                    password: Some(password),
                    user_type: Some(user_type),
                    user_status: None,
                }
                .normalized(true),
            )?;
            let what = format!(
                "created user {username} ({})",
                user.user_type.as_deref().unwrap_or("Normal")
            );
            on_every(api, namesrv, &target, &what, |b| {
                let user = user.clone();
                async move { api.create_user(&b, &user).await }
            })
            .await
        }
        UserCommand::Update {
            username,
            password,
            user_type,
            status,
            target,
        } => {
            let user = user_update(&username, password, user_type, status)?;
            let what = format!("updated user {username}");
            on_every(api, namesrv, &target, &what, |b| {
                let user = user.clone();
                async move { api.update_user(&b, &user).await }
            })
            .await
        }
        UserCommand::Delete { username, target } => {
            check(validate_username(&username))?;
            let what = format!("deleted user {username}");
            on_every(api, namesrv, &target, &what, |b| {
                let username = username.clone();
                async move { api.delete_user(&b, &username).await }
            })
            .await
        }
        UserCommand::Get { username, target } => show_user(api, namesrv, &username, &target).await,
        UserCommand::List { filter, target } => {
            let broker = first_broker(api, namesrv, &target).await?;
            let users = api
                .list_users(&broker, filter.as_deref())
                .await
                .with_context(|| format!("cannot list users on {broker}"))?;
            print_users(&users);
            Ok(())
        }
    }
}

/// `user get`: one user as the first master has it.
async fn show_user(
    api: &MqClientApi,
    namesrv: &str,
    username: &str,
    target: &Target,
) -> anyhow::Result<()> {
    check(validate_username(username))?;
    let broker = first_broker(api, namesrv, target).await?;
    let user = api
        .get_user(&broker, username)
        .await
        .with_context(|| format!("cannot read user {username} on {broker}"))?
        .with_context(|| format!("no user {username:?} on {broker}"))?;
    print_users(&[user]);
    Ok(())
}

/// Where read-only commands ask: the first of [`brokers`].
async fn first_broker(api: &MqClientApi, namesrv: &str, target: &Target) -> anyhow::Result<String> {
    let mut brokers = brokers(api, namesrv, target).await?;
    Ok(brokers.swap_remove(0))
}

/// The change of `user update`, checked: at least one of password, type and status.
fn user_update(
    username: &str,
    password: Option<String>,
    user_type: Option<String>,
    status: Option<String>,
) -> anyhow::Result<UserInfo> {
    check(validate_username(username))?;
    if password.is_none() && user_type.is_none() && status.is_none() {
        bail!("nothing to change: give --password, --user-type or --status");
    }
    let user = UserInfo {
        username: username.to_string(),
        password,
        user_type: user_type
            .map(|t| check(UserType::parse(&t)).map(|t| t.as_str().to_string()))
            .transpose()?,
        user_status: status
            .map(|s| check(UserStatus::parse(&s)).map(|s| s.as_str().to_string()))
            .transpose()?,
    };
    check(user.normalized(false))?;
    Ok(user)
}

fn print_users(users: &[UserInfo]) {
    println!("{:<24} {:<8} {:<8} password", "username", "type", "status");
    for u in users {
        println!(
            "{:<24} {:<8} {:<8} {}",
            u.username,
            u.user_type.as_deref().unwrap_or("Normal"),
            u.user_status.as_deref().unwrap_or("enable"),
            // Every stored user has a password; brokers send it only to a Super caller.
            if u.password.as_deref().is_some_and(|p| !p.is_empty()) {
                "(set)"
            } else {
                "(hidden: not shown to this caller)"
            }
        );
    }
}
