//! `rocketraft admin`: topic and cluster administration over the Remoting protocol; the other
//! verbs in their modules: [`acl`], [`broker`], [`consumer`] (consumer progress and dead-letter
//! messages), [`controller`].

mod acl;
pub(crate) mod broker;
mod clients;
pub(crate) mod consumer;
mod controller;
mod group;
mod message;
mod topic_stats;

use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use rocketraft_common::protocol::{ClusterInfo, TopicRouteData};
use rocketraft_common::trust::ClusterSecret;
use rocketraft_common::TopicConfig;
use rocketraft_remoting::api::{ApiError, MqClientApi};
use rocketraft_remoting::codes::response_code;
use rocketraft_remoting::tls::{ClientTls, ClientTlsConfig};
use rocketraft_remoting::{ClientConfig, RemotingClient, SessionCredentials};

#[derive(Args)]
pub struct AdminArgs {
    /// NameServer address, or several separated by `;` (RocketMQ's `namesrvAddr`): reads go to
    /// the first that answers, route changes to every one.
    #[arg(long, global = true, default_value = "127.0.0.1:9876")]
    namesrv: String,
    /// Controller Remoting address (default: the --namesrv address, where `rocketraft dev` and
    /// `enableControllerInNamesrv` serve it; a standalone controller listens on 9878).
    #[arg(long, global = true)]
    controller: Option<String>,
    /// A file holding the cluster secret (`cluster up` writes `<dir>/cluster-secret`), for the
    /// `controller` commands of a cluster that has one: membership and leadership changes are
    /// refused without it. ROCKETRAFT_CLUSTER_SECRET holds the secret itself, if you prefer.
    #[arg(long, global = true)]
    cluster_secret_file: Option<std::path::PathBuf>,
    /// The access key (username) to sign requests with, for servers with
    /// `authenticationEnabled` (RocketMQ's `AclClientRPCHook`); ROCKETRAFT_ACCESS_KEY if unset.
    #[arg(long, global = true)]
    access_key: Option<String>,
    /// The secret key (password) of --access-key; ROCKETRAFT_SECRET_KEY if unset (prefer the
    /// variable: a command line is visible to other users of the machine).
    #[arg(long, global = true)]
    secret_key: Option<String>,
    #[command(flatten)]
    tls: TlsFlags,
    #[command(subcommand)]
    command: AdminCommand,
}

/// `--tls` / `--tls-trust-cert`: how the admin CLI and the benches reach Remoting servers.
#[derive(Args, Clone, Debug, Default)]
pub(crate) struct TlsFlags {
    /// Connect over TLS (servers with `[tls] mode = "enforcing"` or "permissive"), verifying
    /// the servers against --tls-trust-cert, or not verifying them without it.
    #[arg(long, global = true)]
    pub(crate) tls: bool,
    /// Trusted certificates (PEM) for --tls: the CA that signed the servers' certificates.
    #[arg(long, global = true)]
    pub(crate) tls_trust_cert: Option<std::path::PathBuf>,
}

impl TlsFlags {
    /// Whether the flags ask for TLS (`--tls-trust-cert` implies `--tls`).
    pub(crate) fn enabled(&self) -> bool {
        self.tls || self.tls_trust_cert.is_some()
    }

    /// The loaded client TLS, None without the flags.
    pub(crate) fn load(&self) -> anyhow::Result<Option<ClientTls>> {
        let config = ClientTlsConfig {
            enable: self.enabled(),
            trust_cert: self.tls_trust_cert.clone(),
        };
        Ok(config.load()?)
    }
}

impl AdminArgs {
    /// The cluster secret from `--cluster-secret-file` or ROCKETRAFT_CLUSTER_SECRET, if given.
    fn cluster_secret(&self) -> anyhow::Result<Option<ClusterSecret>> {
        let text = match &self.cluster_secret_file {
            Some(path) => std::fs::read_to_string(path).with_context(|| {
                format!("cannot read the cluster secret file {}", path.display())
            })?,
            None => match std::env::var("ROCKETRAFT_CLUSTER_SECRET") {
                Ok(text) => text,
                Err(_) => return Ok(None),
            },
        };
        Ok(Some(ClusterSecret::new(text.trim())?))
    }
}

/// The credentials from the flags or the environment: both or neither.
pub(crate) fn credentials(
    access_key: Option<String>,
    secret_key: Option<String>,
) -> anyhow::Result<Option<SessionCredentials>> {
    let access_key = access_key.or_else(|| std::env::var("ROCKETRAFT_ACCESS_KEY").ok());
    let secret_key = secret_key.or_else(|| std::env::var("ROCKETRAFT_SECRET_KEY").ok());
    match (access_key, secret_key) {
        (None, None) => Ok(None),
        (Some(ak), Some(sk)) => Ok(Some(SessionCredentials::new(ak, sk)?)),
        (Some(_), None) => bail!("--access-key needs --secret-key (or ROCKETRAFT_SECRET_KEY)"),
        (None, Some(_)) => bail!("--secret-key needs --access-key (or ROCKETRAFT_ACCESS_KEY)"),
    }
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Topics.
    #[command(subcommand)]
    Topic(TopicCommand),
    /// Clusters.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// The controller quorum.
    #[command(subcommand)]
    Controller(controller::ControllerCommand),
    /// Brokers: a broker set's replicas as they report themselves (HA status).
    #[command(subcommand)]
    Broker(broker::BrokerCommand),
    /// Consumer groups: progress (offsets, lag, POP messages in flight).
    #[command(subcommand)]
    Consumer(consumer::ConsumerCommand),
    /// Subscription groups: list and delete (create with `consumer create-group`).
    #[command(subcommand)]
    Group(group::GroupCommand),
    /// Producer groups: their clients' connections.
    #[command(subcommand)]
    Producer(clients::ProducerCommand),
    /// Messages: by key (`query`), by id (`get`), a group's dead-letter queue (`dlq`).
    #[command(subcommand)]
    Message(consumer::MessageCommand),
    /// ACL 2.0: users (access keys) and their permissions on topics and groups.
    #[command(subcommand)]
    Acl(acl::AclCommand),
}

#[derive(Subcommand)]
enum TopicCommand {
    /// Create (or update) a topic on every master of a cluster, or on one broker.
    Create {
        /// Topic name.
        topic: String,
        /// Queues per broker (read and write).
        #[arg(long, default_value_t = 8)]
        queues: i32,
        /// Permission bits (6 = read + write).
        #[arg(long, default_value_t = 6)]
        perm: i32,
        /// Cluster whose masters get the topic.
        #[arg(long, default_value = rocketraft_common::consts::DEFAULT_CLUSTER)]
        cluster: String,
        /// One broker address instead of a whole cluster.
        #[arg(long)]
        broker: Option<String>,
        /// The topic's message type (`message.type`): NORMAL, FIFO, DELAY, TRANSACTION, LITE or
        /// MIXED. RocketMQ 5 clients only send that type to it; unset accepts every type.
        #[arg(long, value_parser = ["NORMAL", "FIFO", "DELAY", "TRANSACTION", "MIXED", "LITE"])]
        message_type: Option<String>,
    },
    /// Delete a topic from every master serving it, then its route from the NameServer
    /// (mqadmin deleteTopic). Its messages stay in the CommitLog until retention.
    Delete {
        #[arg(long)]
        topic: String,
        #[arg(long)]
        json: bool,
    },
    /// Change a topic's permission on every master serving it (mqadmin updateTopicPerm): 6 read
    /// and write, 4 read only, 2 write only.
    UpdatePerm {
        #[arg(long)]
        topic: String,
        #[arg(long, value_parser = ["2", "4", "6"])]
        perm: String,
        #[arg(long)]
        json: bool,
    },
    /// List every topic the NameServer knows.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show which brokers and queues serve a topic.
    Route {
        topic: String,
        /// Print the raw TopicRouteData JSON.
        #[arg(long)]
        json: bool,
    },
    /// Each queue's min and max offset and the store time of its last message, on every
    /// master serving the topic (mqadmin topicStatus).
    Status {
        #[arg(long)]
        topic: String,
        #[arg(long)]
        json: bool,
    },
    /// Messages put into the topic (and with --group, taken by the group) over the last
    /// minute, hour and day, with their rates, on every master serving it (mqadmin statsAll).
    Stats {
        #[arg(long)]
        topic: String,
        /// A consumer group: its gets of the topic too.
        #[arg(long)]
        group: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// List clusters, broker sets and their addresses.
    List {
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(args: AdminArgs) -> anyhow::Result<()> {
    let cluster_secret = args.cluster_secret()?;
    let tls = args.tls.load()?;
    let credentials = credentials(args.access_key, args.secret_key)?;
    if let AdminCommand::Controller(command) = args.command {
        let controller = args.controller.unwrap_or(args.namesrv);
        let client = RemotingClient::new(ClientConfig {
            cluster_secret: cluster_secret.clone(),
            credentials,
            tls,
            ..ClientConfig::default()
        });
        return controller::run(&client, &controller, command, cluster_secret.as_ref()).await;
    }
    let api = MqClientApi::new(
        RemotingClient::new(ClientConfig {
            credentials,
            tls,
            ..ClientConfig::default()
        }),
        Duration::from_secs(5),
    );
    let namesrv = args.namesrv.as_str();
    match args.command {
        AdminCommand::Topic(command) => topic(&api, namesrv, command).await,
        AdminCommand::Cluster(ClusterCommand::List { json }) => {
            let info = api
                .cluster_info(namesrv)
                .await
                .with_context(|| format!("cannot reach the NameServer at {namesrv}"))?;
            print_as(json, &info, print_clusters)
        }
        AdminCommand::Broker(command) => {
            broker::run(&api, namesrv, args.controller.as_deref(), command).await
        }
        AdminCommand::Consumer(command) => consumer::run_consumer(&api, namesrv, command).await,
        AdminCommand::Group(command) => group::run(&api, namesrv, command).await,
        AdminCommand::Producer(command) => clients::run_producer(&api, namesrv, command).await,
        AdminCommand::Message(command) => consumer::run_message(&api, namesrv, command).await,
        AdminCommand::Acl(command) => acl::run(&api, namesrv, command).await,
        AdminCommand::Controller(_) => unreachable!("handled above"),
    }
}

/// `admin topic create|list|route|status|stats`.
async fn topic(api: &MqClientApi, namesrv: &str, command: TopicCommand) -> anyhow::Result<()> {
    match command {
        TopicCommand::Create {
            topic,
            queues,
            perm,
            cluster,
            broker,
            message_type,
        } => {
            let mut config = TopicConfig::new(topic.clone(), queues);
            config.perm = perm;
            if let Some(t) = message_type {
                config.attributes.insert("message.type".into(), t);
            }
            config
                .validate()
                .map_err(|e| anyhow::anyhow!("topic {topic:?}: {e}"))?;
            let targets = match broker {
                Some(b) => vec![b],
                None => cluster_masters(api, namesrv, &cluster).await?,
            };
            for broker in targets {
                api.create_topic(&broker, &config)
                    .await
                    .with_context(|| format!("creating {topic} on {broker}"))?;
                println!("created topic {topic} with {queues} queues on {broker}");
            }
            Ok(())
        }
        TopicCommand::List { json } => {
            let list = api
                .all_topics(namesrv)
                .await
                .with_context(|| format!("cannot list topics from {namesrv}"))?;
            print_as(json, &list.topic_list, |topics| {
                for topic in topics {
                    println!("{topic}");
                }
            })
        }
        TopicCommand::Delete { topic, json } => delete_topic(api, namesrv, &topic, json).await,
        TopicCommand::UpdatePerm { topic, perm, json } => {
            let perm: i32 = perm.parse().context("--perm")?;
            update_topic_perm(api, namesrv, &topic, perm, json).await
        }
        TopicCommand::Route { topic, json } => {
            let route = api
                .topic_route(namesrv, &topic)
                .await
                .with_context(|| format!("no route for {topic} from {namesrv}"))?;
            print_as(json, &route, print_route)
        }
        TopicCommand::Status { topic, json } => {
            topic_stats::status(api, namesrv, &topic, json).await
        }
        TopicCommand::Stats { topic, group, json } => {
            topic_stats::stats(api, namesrv, &topic, group.as_deref(), json).await
        }
    }
}

/// Each broker set serving `topic` and its master's address (`None`: no live master).
async fn topic_masters(
    api: &MqClientApi,
    namesrv: &str,
    topic: &str,
) -> anyhow::Result<Vec<(String, Option<String>)>> {
    let route = api.topic_route(namesrv, topic).await.map_err(|e| match e {
        ApiError::Refused(r) if r.code == response_code::TOPIC_NOT_EXIST => {
            anyhow::anyhow!("topic {topic} does not exist: the NameServer has no route for it")
        }
        other => namesrv_error(namesrv)(other),
    })?;
    Ok(route
        .broker_datas
        .iter()
        .map(|b| (b.broker_name.clone(), b.master_addr().map(str::to_string)))
        .collect())
}

/// What `topic delete` and `topic update-perm` did on one broker set.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct TopicChange {
    broker_name: String,
    addr: String,
    perm: Option<i32>,
}

/// `admin topic delete`: every master serving the topic deletes it (in controller mode its
/// slaves follow through the metadata log), then the NameServer drops the route. A broker set
/// without a live master stops it before anything is deleted.
async fn delete_topic(
    api: &MqClientApi,
    namesrv: &str,
    topic: &str,
    json: bool,
) -> anyhow::Result<()> {
    let sets = topic_masters(api, namesrv, topic).await?;
    if let Some((name, _)) = sets.iter().find(|(_, addr)| addr.is_none()) {
        bail!("broker set {name} serving {topic} has no live master: nothing deleted (try again once it has one)");
    }
    let mut done = Vec::new();
    for (name, addr) in sets {
        let addr = addr.unwrap_or_default();
        api.delete_topic_in_broker(&addr, topic)
            .await
            .with_context(|| format!("deleting {topic} on {name} ({addr})"))?;
        done.push(TopicChange {
            broker_name: name,
            addr,
            perm: None,
        });
    }
    api.delete_topic_in_namesrv(namesrv, topic)
        .await
        .map_err(namesrv_error(namesrv))?;
    print_as(json, &done, |done| {
        for d in done {
            println!("deleted topic {topic} on {} ({})", d.broker_name, d.addr);
        }
        println!("deleted the route of {topic} from the NameServer");
    })
}

/// `admin topic update-perm`: the topic's config on every master serving it, with `perm`.
async fn update_topic_perm(
    api: &MqClientApi,
    namesrv: &str,
    topic: &str,
    perm: i32,
    json: bool,
) -> anyhow::Result<()> {
    let sets = topic_masters(api, namesrv, topic).await?;
    if let Some((name, _)) = sets.iter().find(|(_, addr)| addr.is_none()) {
        bail!("broker set {name} serving {topic} has no live master: nothing changed (try again once it has one)");
    }
    let mut done = Vec::new();
    for (name, addr) in sets {
        let addr = addr.unwrap_or_default();
        let topics = api
            .broker_topics(&addr)
            .await
            .with_context(|| format!("the topics of {name} ({addr})"))?;
        let Some(mut config) = topics.topic_config_table.get(topic).cloned() else {
            bail!("{name} ({addr}) routes {topic} but has no config for it");
        };
        let old = config.perm;
        config.perm = perm;
        api.create_topic(&addr, &config)
            .await
            .with_context(|| format!("updating {topic} on {name} ({addr})"))?;
        if !json {
            println!("topic {topic} on {name} ({addr}): perm {old} -> {perm}");
        }
        done.push(TopicChange {
            broker_name: name,
            addr,
            perm: Some(perm),
        });
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&done)?);
    }
    Ok(())
}

/// What to tell the user when the NameServer did not answer `cluster_info`: unreachable, or
/// reached and refused (with the fix for an unsigned or wrongly signed call).
pub(crate) fn namesrv_error(namesrv: &str) -> impl FnOnce(ApiError) -> anyhow::Error + '_ {
    move |e| match e {
        ApiError::Refused(r) if r.code == response_code::NO_PERMISSION => anyhow::anyhow!(
            "the NameServer at {namesrv} refused: {} (it checks signatures: pass --access-key and \
             --secret-key, or set ROCKETRAFT_ACCESS_KEY and ROCKETRAFT_SECRET_KEY)",
            r.remark
        ),
        ApiError::Refused(r) => {
            anyhow::anyhow!(
                "the NameServer at {namesrv} refused: code {}: {}",
                r.code,
                r.remark
            )
        }
        other => anyhow::Error::new(other).context(format!(
            "cannot reach the NameServer at {namesrv} (is it running? pass --namesrv)"
        )),
    }
}

/// The master addresses of every broker set of `cluster`, as the NameServer lists them.
async fn cluster_masters(
    api: &MqClientApi,
    namesrv: &str,
    cluster: &str,
) -> anyhow::Result<Vec<String>> {
    let info = api
        .cluster_info(namesrv)
        .await
        .map_err(namesrv_error(namesrv))?;
    let names = info
        .cluster_addr_table
        .get(cluster)
        .cloned()
        .unwrap_or_default();
    let masters: Vec<String> = names
        .iter()
        .filter_map(|n| info.broker_addr_table.get(n))
        .filter_map(|b| b.master_addr().map(str::to_string))
        .collect();
    if masters.is_empty() {
        bail!("cluster {cluster:?} has no live master; list clusters with `rocketraft admin cluster list`");
    }
    Ok(masters)
}

fn print_route(route: &TopicRouteData) {
    println!(
        "{:<20} {:>6} {:>6} {:>5}  addresses",
        "broker", "read", "write", "perm"
    );
    for queue in &route.queue_datas {
        let addrs = route
            .broker_datas
            .iter()
            .find(|b| b.broker_name == queue.broker_name)
            .map(|b| {
                b.broker_addrs
                    .iter()
                    .map(|(id, a)| format!("{id}={a}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        println!(
            "{:<20} {:>6} {:>6} {:>5}  {addrs}",
            queue.broker_name, queue.read_queue_nums, queue.write_queue_nums, queue.perm
        );
    }
}

fn print_clusters(info: &ClusterInfo) {
    println!("{:<20} {:<20} {:>4}  address", "cluster", "broker", "id");
    for (cluster, names) in &info.cluster_addr_table {
        for name in names {
            if let Some(broker) = info.broker_addr_table.get(name) {
                for (id, addr) in &broker.broker_addrs {
                    println!("{cluster:<20} {name:<20} {id:>4}  {addr}");
                }
            }
        }
    }
}

/// Prints `value` as pretty JSON with `--json`, else as `table` shows it.
fn print_as<T: serde::Serialize + ?Sized>(
    json: bool,
    value: &T,
    table: impl FnOnce(&T),
) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        table(value);
    }
    Ok(())
}

/// `id (addr)`, the id alone, or `none`.
fn id_and_addr(id: Option<impl std::fmt::Display>, addr: Option<&String>) -> String {
    match (id, addr) {
        (Some(id), Some(a)) => format!("{id} ({a})"),
        (Some(id), None) => id.to_string(),
        _ => "none".to_string(),
    }
}
