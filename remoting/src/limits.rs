//! What one peer may cost a server: the server-side limits of Remoting connections.
//!
//! Every byte a peer sends is untrusted, and a server on a 2-core machine must stay up under a
//! flood. On top of the frame codec's own bounds ([`crate::MAX_FRAME_LEN`], checked lengths)
//! and the connection limit of [`crate::RemotingServerBuilder`], a server connection enforces:
//!
//! - **Request size by code** ([`ServerLimits::max_request_len`]): sends, broker registrations
//!   and topic lists may use the whole 16 MiB frame; every other request is held to 4 MiB. A
//!   frame larger than its code allows is refused as soon as its header has arrived, before its
//!   body is read: the connection is closed (what RocketMQ's decoder does with a frame that is
//!   too long). Headers are held to [`ServerLimits::max_header_len`].
//! - **Bytes buffered** ([`ServerLimits::buffered_per_connection`],
//!   [`ServerLimits::buffered_total`]): a request's bytes count from the moment its length
//!   prefix arrives until its processor has answered. A connection over its share, or a server
//!   over its total, stops reading (TCP pushes back on the peer) until requests finish; nothing
//!   is refused and memory stays bounded whatever the peers send.
//! - **Half-sent frames** ([`ServerLimits::frame_timeout`]): a frame whose first byte has
//!   arrived must be complete within this time, or the connection is closed (slowloris).
//! - **Idle connections** ([`ServerLimits::idle_timeout`], RocketMQ's
//!   `serverChannelMaxIdleTimeSeconds`, 120 s): a connection that sends nothing and has nothing
//!   in flight for this long is closed. At the connection limit the server closes its longest
//!   idle connection to admit a new one, so a flood of idle connections cannot lock honest
//!   clients out.
//!
//! Warnings about refused peers are rate-limited ([`Throttle`]): a flood cannot flood the log.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::codec::MAX_FRAME_LEN;
use crate::codes::request_code;

/// Frames up to this size are admitted without looking at their code: any code may be this
/// large.
pub const SMALL_FRAME: usize = 64 * 1024;

/// The limits of a server's connections (see the module docs).
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// Close a connection that sent nothing and has nothing in flight for this long.
    pub idle_timeout: Option<Duration>,
    /// A frame begun must be complete within this time.
    pub frame_timeout: Duration,
    /// The largest header a request may carry.
    pub max_header_len: usize,
    /// The largest request of a code not listed in `max_request_len_by_code`.
    pub default_max_request_len: usize,
    /// The largest request per code.
    pub max_request_len_by_code: HashMap<i32, usize>,
    /// Request bytes one connection may have buffered or in processing.
    pub buffered_per_connection: usize,
    /// Request bytes all connections together may have buffered or in processing.
    pub buffered_total: usize,
    /// A connection idle at least this long may be closed to admit a new one at the limit.
    pub evict_idle_after: Duration,
}

/// The limits as a server's config file gives them (a `[server_limits]` table in the broker,
/// NameServer and controller configs); [`ServerLimitsConfig::limits`] turns them into
/// [`ServerLimits`]. RocketMQ has no such keys except the idle time
/// (`serverChannelMaxIdleTimeSeconds`, accepted here under that name too).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerLimitsConfig {
    /// Connections the port holds at once (the longest idle gives way to a new one).
    pub max_connections: usize,
    /// Seconds a connection may send nothing with nothing in flight before it is closed (0:
    /// never).
    #[serde(alias = "serverChannelMaxIdleTimeSeconds")]
    pub idle_seconds: u64,
    /// Milliseconds a frame may take from its first byte to its last.
    pub frame_timeout_ms: u64,
    /// The largest request other than sends, registrations and topic lists (those may use the
    /// whole 16 MiB frame).
    pub max_request_bytes: usize,
    /// Request bytes one connection may have buffered or in processing.
    pub buffered_bytes_per_connection: usize,
    /// Request bytes all connections may have buffered or in processing.
    pub buffered_bytes_total: usize,
}

impl Default for ServerLimitsConfig {
    fn default() -> Self {
        let limits = ServerLimits::default();
        ServerLimitsConfig {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            idle_seconds: limits.idle_timeout.map_or(0, |d| d.as_secs()),
            frame_timeout_ms: u64::try_from(limits.frame_timeout.as_millis()).unwrap_or(u64::MAX),
            max_request_bytes: limits.default_max_request_len,
            buffered_bytes_per_connection: limits.buffered_per_connection,
            buffered_bytes_total: limits.buffered_total,
        }
    }
}

/// Connections a server port holds by default.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

impl ServerLimitsConfig {
    /// The limits these keys describe.
    pub fn limits(&self) -> ServerLimits {
        ServerLimits {
            idle_timeout: (self.idle_seconds > 0).then(|| Duration::from_secs(self.idle_seconds)),
            frame_timeout: Duration::from_millis(self.frame_timeout_ms.max(1)),
            default_max_request_len: self.max_request_bytes,
            buffered_per_connection: self.buffered_bytes_per_connection,
            buffered_total: self.buffered_bytes_total,
            ..ServerLimits::default()
        }
    }

    /// Checks the values, naming the key at fault.
    pub fn validate(&self) -> Result<(), InvalidLimit> {
        let bad = |key, rule: String| Err(InvalidLimit { key, rule });
        if self.max_connections == 0 {
            return bad("max_connections", "must be at least 1".into());
        }
        if !(SMALL_FRAME..=MAX_FRAME_LEN).contains(&self.max_request_bytes) {
            let rule = format!("must be in {SMALL_FRAME}..={MAX_FRAME_LEN}");
            return bad("max_request_bytes", rule);
        }
        if self.frame_timeout_ms < 100 {
            return bad("frame_timeout_ms", "must be at least 100".into());
        }
        Ok(())
    }
}

/// A `[server_limits]` value out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("server_limits.{key} {rule}")]
pub struct InvalidLimit {
    pub key: &'static str,
    pub rule: String,
}

/// Codes whose requests may use the whole frame: messages, batches, registrations and lists.
const LARGE_REQUEST_CODES: [i32; 8] = [
    request_code::SEND_MESSAGE,
    request_code::SEND_MESSAGE_V2,
    request_code::SEND_BATCH_MESSAGE,
    request_code::SEND_REPLY_MESSAGE,
    request_code::SEND_REPLY_MESSAGE_V2,
    request_code::REGISTER_BROKER,
    request_code::UPDATE_AND_CREATE_TOPIC_LIST,
    request_code::PUT_KV_CONFIG,
];

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            idle_timeout: Some(Duration::from_secs(120)),
            frame_timeout: Duration::from_secs(30),
            max_header_len: 1 << 20,
            default_max_request_len: 4 << 20,
            max_request_len_by_code: LARGE_REQUEST_CODES
                .iter()
                .map(|&code| (code, MAX_FRAME_LEN))
                .collect(),
            buffered_per_connection: 64 << 20,
            buffered_total: 1 << 30,
            evict_idle_after: Duration::from_secs(1),
        }
    }
}

impl ServerLimits {
    /// The largest request of `code`, never beyond the frame limit.
    pub fn max_request_len(&self, code: i32) -> usize {
        self.max_request_len_by_code
            .get(&code)
            .copied()
            .unwrap_or(self.default_max_request_len)
            .min(MAX_FRAME_LEN)
    }

    /// Request bytes of one connection, at least one largest frame (so any admitted frame fits).
    fn per_connection(&self) -> usize {
        self.buffered_per_connection.max(MAX_FRAME_LEN)
    }

    /// Request bytes of the server, at least one connection's share.
    fn total(&self) -> usize {
        self.buffered_total.max(self.per_connection())
    }
}

/// A server's limits and its shared byte budget.
#[derive(Debug, Clone)]
pub(crate) struct ServerBudget {
    pub limits: Arc<ServerLimits>,
    total: Arc<Semaphore>,
}

impl ServerBudget {
    pub fn new(limits: ServerLimits) -> ServerBudget {
        let total = Arc::new(Semaphore::new(limits.total()));
        ServerBudget {
            limits: Arc::new(limits),
            total,
        }
    }

    /// The byte budget of a new connection.
    pub fn connection(&self) -> ConnectionBudget {
        ConnectionBudget {
            own: Arc::new(Semaphore::new(self.limits.per_connection())),
            total: self.total.clone(),
        }
    }
}

/// One connection's share of the bytes and the server's total.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionBudget {
    own: Arc<Semaphore>,
    total: Arc<Semaphore>,
}

/// The bytes of one request, given back when it has been answered.
#[derive(Debug)]
pub(crate) struct FrameBytes {
    _own: OwnedSemaphorePermit,
    _total: OwnedSemaphorePermit,
}

impl ConnectionBudget {
    /// Waits until `len` more bytes fit in the connection's share and the server's total
    /// (None if the budget is gone, which it never is while the server runs).
    pub async fn reserve(&self, len: usize) -> Option<FrameBytes> {
        let n = u32::try_from(len).ok()?;
        let own = self.own.clone().acquire_many_owned(n).await.ok()?;
        let total = self.total.clone().acquire_many_owned(n).await.ok()?;
        Some(FrameBytes {
            _own: own,
            _total: total,
        })
    }
}

/// At most one log line per interval for a kind of event, with the count of those skipped.
#[derive(Debug, Default)]
pub struct Throttle {
    last_ms: AtomicU64,
    skipped: AtomicU64,
}

impl Throttle {
    pub const fn new() -> Throttle {
        Throttle {
            last_ms: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
        }
    }

    /// Some(events skipped since the last line) when a line may be logged now.
    pub fn allow(&self, interval: Duration) -> Option<u64> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let last = self.last_ms.load(Ordering::Relaxed);
        let due = now.saturating_sub(last) >= u64::try_from(interval.as_millis()).unwrap_or(0);
        if due
            && self
                .last_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.skipped.swap(0, Ordering::Relaxed));
        }
        self.skipped.fetch_add(1, Ordering::Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_may_use_the_whole_frame_and_others_four_mib() {
        let l = ServerLimits::default();
        assert_eq!(
            l.max_request_len(request_code::SEND_MESSAGE_V2),
            MAX_FRAME_LEN
        );
        assert_eq!(
            l.max_request_len(request_code::REGISTER_BROKER),
            MAX_FRAME_LEN
        );
        assert_eq!(l.max_request_len(request_code::PULL_MESSAGE), 4 << 20);
        let mut huge = l.clone();
        huge.default_max_request_len = usize::MAX;
        assert_eq!(
            huge.max_request_len(request_code::PULL_MESSAGE),
            MAX_FRAME_LEN
        );
    }

    #[test]
    fn a_throttle_lets_one_line_through_per_interval() {
        let t = Throttle::new();
        assert_eq!(t.allow(Duration::from_secs(60)), Some(0));
        assert_eq!(t.allow(Duration::from_secs(60)), None);
        assert_eq!(t.allow(Duration::from_secs(60)), None);
        assert_eq!(t.allow(Duration::ZERO), Some(2));
    }

    #[test]
    fn config_keys_become_limits() {
        let c: ServerLimitsConfig =
            serde_json::from_str(r#"{"serverChannelMaxIdleTimeSeconds": 0, "max_connections": 5}"#)
                .expect("parses");
        assert_eq!(c.max_connections, 5);
        assert_eq!(c.limits().idle_timeout, None);
        assert_eq!(
            ServerLimitsConfig::default().limits().idle_timeout,
            Some(Duration::from_secs(120))
        );
        assert!(ServerLimitsConfig::default().validate().is_ok());
        let tiny = ServerLimitsConfig {
            max_request_bytes: 10,
            ..ServerLimitsConfig::default()
        };
        let err = tiny.validate().expect_err("too small");
        assert_eq!(err.key, "max_request_bytes");
    }

    #[tokio::test]
    async fn a_budget_holds_bytes_until_they_are_given_back() {
        let limits = ServerLimits {
            buffered_per_connection: MAX_FRAME_LEN,
            buffered_total: 0,
            ..ServerLimits::default()
        };
        let server = ServerBudget::new(limits);
        let (a, b) = (server.connection(), server.connection());
        let held = a.reserve(MAX_FRAME_LEN).await.expect("fits");
        // The total is one connection's share: the other connection waits for it.
        let waiting = tokio::time::timeout(Duration::from_millis(50), b.reserve(1)).await;
        assert!(waiting.is_err(), "the total must be exhausted");
        drop(held);
        assert!(b.reserve(MAX_FRAME_LEN).await.is_some());
    }
}
