//! `rocketraft console`: a web console for a running cluster, served over HTTP. Server-rendered
//! pages over the same Remoting calls the admin CLI makes (no build step, a little plain JS on
//! the throughput page):
//!
//! - `/` the cluster: NameServer, broker sets and their replicas (role, broker id, HA epochs,
//!   SyncStateSet, lag), the controller quorum: `--controller` is a comma-separated list and
//!   every member is asked (answered or unreachable, leader/follower, term); the broker sets'
//!   masters come from the leader's answer, and a dead member does not fail the page;
//! - `/topics`, `/topics/{name}`: topics, their routes and per-queue offsets; forms to create
//!   (`POST /topics/create`) and delete (`POST /topics/delete`) a topic;
//! - `/groups`, `/groups/{name}`: consumer groups, lag per queue and POP messages in flight; a
//!   form to reset a group's offsets (`POST /groups/{name}/reset`);
//! - `/groups/{name}/dlq`: the group's dead-letter queue (`%DLQ%{group}`), a checkbox per
//!   message; `POST /groups/{name}/dlq/resend` (checked `id`s, or `all`) sends them again to
//!   `%RETRY%{group}` through the admin CLI's code (`admin message dlq --resend`);
//! - `/messages`: lookup by topic and key, or by message id;
//! - `/throughput`: a live chart of each broker's putTps and getTransferredTps, polling
//!   `/api/throughput` (JSON).
//!
//! Every value shown is HTML-escaped. Bad input gets a 4xx page (400 malformed form or name,
//! 404 unknown path, topic or group, 415 a POST that is not a form, 431 oversized headers) and
//! the server keeps serving; every POST from another site's page is refused (403). With
//! `--access-key` (and ROCKETRAFT_SECRET_KEY), or `--credentials-file` (the format of `cluster
//! up --auth`'s DIR/admin-credentials, which that NameServer's console reads through
//! `--console-credentials-file`), every request is signed as the admin CLI signs it; a
//! permission denial says which access key was used.

mod cluster;
mod dlq;
mod form;
mod groups;
mod html;
mod messages;
mod throughput;
mod topics;

use std::net::SocketAddr;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use clap::Args;
use rocketraft_remoting::api::{ApiError, MqClientApi};
use rocketraft_remoting::http::{MetricsServer, MAX_HEADER_BYTES};
use rocketraft_remoting::response_code;
use rocketraft_remoting::tls::ClientTlsConfig;
use rocketraft_remoting::{ClientConfig, RemotingClient};

/// How long one Remoting call of a page may take before the page reports the server as silent.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Args)]
pub struct ConsoleArgs {
    /// NameServer address.
    #[arg(long, default_value = "127.0.0.1:9876")]
    namesrv: String,
    /// Where the console serves HTTP.
    #[arg(long, default_value = "127.0.0.1:8082")]
    listen: SocketAddr,
    /// The controller quorum's Remoting addresses, comma-separated (`;` works too, as in
    /// RocketMQ's controllerAddr): the cluster page asks every member and shows which answered
    /// (default: the --namesrv address, where `rocketraft dev` and `enableControllerInNamesrv`
    /// serve it; a standalone controller listens on 9878).
    #[arg(long)]
    controller: Option<String>,
    /// The access key (username) to sign requests with, for servers with
    /// `authenticationEnabled`; ROCKETRAFT_ACCESS_KEY if unset.
    #[arg(long)]
    access_key: Option<String>,
    /// The secret key of --access-key; ROCKETRAFT_SECRET_KEY if unset (prefer the variable).
    #[arg(long)]
    secret_key: Option<String>,
    /// Sign as the user in this file instead: `export ROCKETRAFT_ACCESS_KEY=...` and
    /// `export ROCKETRAFT_SECRET_KEY=...` lines, as `cluster up --auth` writes
    /// DIR/admin-credentials (keep it owner-only).
    #[arg(long, conflicts_with_all = ["access_key", "secret_key"])]
    credentials_file: Option<std::path::PathBuf>,
    /// Connect to the servers over TLS, verifying them against --tls-trust-cert if given.
    #[arg(long)]
    tls: bool,
    /// Trusted certificates (PEM) for --tls.
    #[arg(long)]
    tls_trust_cert: Option<std::path::PathBuf>,
}

/// What every handler needs: the API client and where the cluster is.
#[derive(Clone)]
pub(crate) struct Console {
    pub api: MqClientApi,
    pub namesrv: String,
    /// Every member of the controller quorum (Remoting addresses), at least one.
    pub controllers: Vec<String>,
    /// The access key requests are signed with, if any (named on permission denials).
    pub access_key: Option<String>,
}

/// The controller addresses of a `--controller` list: comma- (or semicolon-) separated,
/// blanks ignored; `namesrv` when none is given.
pub(crate) fn controller_list(list: Option<&str>, namesrv: &str) -> anyhow::Result<Vec<String>> {
    let Some(list) = list else {
        return Ok(vec![namesrv.to_string()]);
    };
    let mut out: Vec<String> = Vec::new();
    for addr in list
        .split([',', ';'])
        .map(str::trim)
        .filter(|a| !a.is_empty())
    {
        if addr.len() > 255 || addr.chars().any(|c| c.is_whitespace() || c.is_control()) {
            anyhow::bail!("{addr:?} in the controller list is not an address");
        }
        if !out.iter().any(|a| a == addr) {
            out.push(addr.to_string());
        }
    }
    if out.is_empty() {
        anyhow::bail!("the controller list {list:?} names no address");
    }
    Ok(out)
}

/// The credentials to sign with: from `file` if given (see `--credentials-file`), else from
/// the flags or ROCKETRAFT_ACCESS_KEY / ROCKETRAFT_SECRET_KEY; and the access key to name.
fn signing(
    file: Option<&std::path::Path>,
    access_key: Option<String>,
    secret_key: Option<String>,
) -> anyhow::Result<(
    Option<rocketraft_remoting::SessionCredentials>,
    Option<String>,
)> {
    if let Some(path) = file {
        let credentials = super::cluster::read_credentials_file(path)?;
        let ak = credentials.access_key.clone();
        return Ok((Some(credentials), Some(ak)));
    }
    let credentials = super::admin::credentials(access_key, secret_key)?;
    let ak = credentials.as_ref().map(|c| c.access_key.clone());
    Ok((credentials, ak))
}

pub async fn run(args: ConsoleArgs) -> anyhow::Result<()> {
    super::server::listen_for_shutdown();
    let (credentials, access_key) = signing(
        args.credentials_file.as_deref(),
        args.access_key,
        args.secret_key,
    )?;
    let tls = ClientTlsConfig {
        enable: args.tls || args.tls_trust_cert.is_some(),
        trust_cert: args.tls_trust_cert,
    }
    .load()?;
    let api = MqClientApi::new(
        RemotingClient::new(ClientConfig {
            credentials,
            tls,
            ..ClientConfig::default()
        }),
        CALL_TIMEOUT,
    );
    let console = Console {
        api,
        controllers: controller_list(args.controller.as_deref(), &args.namesrv)?,
        namesrv: args.namesrv,
        access_key,
    };
    let server = MetricsServer::start(args.listen, router(console.clone()))
        .await
        .map_err(|e| anyhow::anyhow!("cannot serve the console on {}: {e}", args.listen))?;
    println!(
        "rocketraft console is ready: http://{} (NameServer {}, controllers {})",
        server.local_addr(),
        console.namesrv,
        console.controllers.join(",")
    );
    super::server::wait_for_shutdown().await;
    server.shutdown().await;
    Ok(())
}

/// The console inside a server process (`namesrv --console-listen`, `dev`): it reads the
/// cluster through `namesrv` and asks every controller of the `controllers` list (default:
/// `namesrv`, where an embedded controller answers), signing as the user in
/// `credentials_file` (`namesrv --console-credentials-file`, which `cluster up --auth` passes)
/// or else as ROCKETRAFT_ACCESS_KEY / ROCKETRAFT_SECRET_KEY when they are set.
pub(crate) async fn serve_embedded(
    namesrv: String,
    controllers: Option<&str>,
    credentials_file: Option<&std::path::Path>,
    listen: SocketAddr,
) -> anyhow::Result<MetricsServer> {
    let (credentials, access_key) = signing(credentials_file, None, None)?;
    let api = MqClientApi::new(
        RemotingClient::new(ClientConfig {
            credentials,
            ..ClientConfig::default()
        }),
        CALL_TIMEOUT,
    );
    let console = Console {
        api,
        controllers: controller_list(controllers, &namesrv)?,
        namesrv,
        access_key,
    };
    MetricsServer::start(listen, router(console))
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot serve the console on {listen}: {e} (pass another --console-listen, or --no-console)"
            )
        })
}

/// Every route of the console.
pub(crate) fn router(console: Console) -> Router {
    Router::new()
        .route("/", get(cluster::page))
        .route("/topics", get(topics::list))
        .route("/topics/create", post(topics::create))
        .route("/topics/delete", post(topics::delete))
        .route("/topics/{name}", get(topics::detail))
        .route("/groups", get(groups::list))
        .route("/groups/{name}", get(groups::detail))
        .route("/groups/{name}/reset", post(groups::reset))
        .route("/groups/{name}/dlq", get(dlq::page))
        .route("/groups/{name}/dlq/resend", post(dlq::resend))
        .route("/messages", get(messages::page))
        .route("/throughput", get(throughput::page))
        .route("/api/throughput", get(throughput::api))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(same_origin_writes))
        .layer(axum::middleware::from_fn(limit_headers))
        .with_state(console)
}

/// Refuses a request that changes something (any method but GET and HEAD) when it comes from
/// another site: a page elsewhere must not delete topics or reset offsets through an operator's
/// browser (a plain form POST needs no CORS preflight). Browsers name the page's origin in
/// `Origin` (and `Sec-Fetch-Site`); it must be this console's own `Host`. Tools that send
/// neither (curl, the tests) are served.
async fn same_origin_writes(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use axum::http::{header, Method};
    if request.method() == Method::GET || request.method() == Method::HEAD {
        return next.run(request).await;
    }
    let headers = request.headers();
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let host = text(header::HOST.as_str()).unwrap_or_default();
    let cross_site = text("sec-fetch-site").is_some_and(|s| s == "cross-site" || s == "same-site");
    let foreign_origin = text(header::ORIGIN.as_str()).is_some_and(|origin| {
        let authority = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .unwrap_or(origin);
        origin == "null" || !authority.eq_ignore_ascii_case(host)
    });
    if cross_site || foreign_origin {
        return PageError::new(
            StatusCode::FORBIDDEN,
            "Cross-site request refused",
            "The console only accepts changes from its own pages.",
        )
        .into_response();
    }
    next.run(request).await
}

async fn not_found(uri: axum::http::Uri) -> PageError {
    PageError::new(
        StatusCode::NOT_FOUND,
        "Not found",
        format!("There is no page at {}.", uri.path()),
    )
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> PageError {
    PageError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "Method not allowed",
        format!("{} is not allowed on {}.", method, uri.path()),
    )
}

/// Answers 431 to a request whose headers exceed [`MAX_HEADER_BYTES`] (as the metrics endpoint
/// does); hyper itself refuses headers over its own buffer.
async fn limit_headers(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    if rocketraft_remoting::http::header_bytes(request.headers()) > MAX_HEADER_BYTES {
        return PageError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "Request headers too large",
            format!("The request's headers are over {MAX_HEADER_BYTES} bytes."),
        )
        .into_response();
    }
    next.run(request).await
}

/// A page that could not be shown: its status, a title and what went wrong (plain text,
/// escaped when rendered).
#[derive(Debug)]
pub(crate) struct PageError {
    pub status: StatusCode,
    pub title: String,
    pub detail: String,
}

impl PageError {
    pub fn new(status: StatusCode, title: impl Into<String>, detail: impl Into<String>) -> Self {
        PageError {
            status,
            title: title.into(),
            detail: detail.into(),
        }
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        PageError::new(StatusCode::BAD_REQUEST, "Bad request", detail)
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let body = format!(
            "<div class=\"error\"><p>{}</p></div>\n<p><a href=\"/\">Back to the cluster</a></p>\n",
            html::esc(&self.detail)
        );
        let title = format!("{} {}", self.status.as_u16(), self.title);
        (self.status, html::page(&title, "", &body)).into_response()
    }
}

impl Console {
    /// The page for a failed call to `server` (what it is, e.g. "the NameServer at ADDR") while
    /// doing `what`: a permission denial (403) names the access key used, a refusal or a silent
    /// server is a 502.
    pub fn api_error(&self, what: &str, server: &str, e: ApiError) -> PageError {
        match e {
            ApiError::Refused(r) if r.code == response_code::NO_PERMISSION => PageError::new(
                StatusCode::FORBIDDEN,
                "Permission denied",
                self.denied(what, server, &r.remark),
            ),
            ApiError::Refused(r) => PageError::new(
                StatusCode::BAD_GATEWAY,
                "Refused",
                format!("{what}: {server} refused (code {}): {}", r.code, r.remark),
            ),
            other => PageError::new(
                StatusCode::BAD_GATEWAY,
                "No answer",
                format!("{what}: no answer from {server}: {other}"),
            ),
        }
    }

    /// What to say when `server` denied `what`.
    pub fn denied(&self, what: &str, server: &str, remark: &str) -> String {
        let signed = match &self.access_key {
            Some(ak) => format!(
                "the console signs its requests as access key {ak:?}; grant that user the permission (rocketraft admin acl) or start the console with another --access-key"
            ),
            None => "the console's requests are not signed: start it with --access-key and ROCKETRAFT_SECRET_KEY (the cluster has ACL on)".to_string(),
        };
        format!("{what}: permission denied by {server}: {remark} ({signed})")
    }

    /// The page for a failed cluster_info.
    pub fn namesrv_error(&self, what: &str, e: ApiError) -> PageError {
        self.api_error(what, &format!("the NameServer at {}", self.namesrv), e)
    }
}

/// Whether an API error is the server saying the topic does not exist.
pub(crate) fn is_topic_not_exist(e: &ApiError) -> bool {
    e.code() == Some(response_code::TOPIC_NOT_EXIST)
}

#[cfg(test)]
mod tests {
    use super::controller_list;

    #[test]
    fn controller_lists() {
        assert_eq!(
            controller_list(None, "127.0.0.1:9876").expect("default"),
            ["127.0.0.1:9876"]
        );
        assert_eq!(
            controller_list(Some("a:1, b:2;c:3,,a:1"), "ns").expect("list"),
            ["a:1", "b:2", "c:3"]
        );
        assert!(controller_list(Some(" , ;"), "ns").is_err());
        assert!(controller_list(Some("a:1,b\u{7}:2"), "ns").is_err());
    }
}
