//! Counters and rates for GET_BROKER_RUNTIME_INFO, GET_CONSUME_STATS and the admin CLI.
//!
//! The counters are atomics bumped once per request (RocketMQ's `StoreStatsService` and
//! `BrokerStats`). [`sample_loop`] takes a snapshot of them every second and keeps the last ten
//! minutes, as `StoreStatsService` does (`FREQUENCY_OF_SAMPLING`, `MAX_RECORDS_OF_SAMPLING`); a
//! rate over a window is the live counter minus the snapshot taken that long ago (or the oldest
//! one kept, while the broker has run for less than the window), divided by the time between.
//! It also keeps the day marks of `msgPutTotalTodayMorning` and the like (local midnight).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};

/// Snapshots kept: ten minutes at one a second, plus the one that starts the window.
const MAX_SAMPLES: usize = 601;
/// Snapshots of the per-group delivery counters kept: the minute `consumeTps` is over.
const MAX_GROUP_SAMPLES: usize = 61;
/// The window of a group's `consumeTps` (RocketMQ's `GROUP_GET_NUMS` minute statistics).
pub const CONSUME_TPS_WINDOW: Duration = Duration::from_secs(60);

pub struct BrokerStats {
    put_messages: AtomicU64,
    put_bytes: AtomicU64,
    /// Messages handed to consumers (pull, lite pull, POP): `getTransferredTps`.
    get_messages: AtomicU64,
    get_bytes: AtomicU64,
    /// Reads that found messages (`getFoundTps`) and that found none (`getMissTps`).
    get_found: AtomicU64,
    get_miss: AtomicU64,
    /// Messages handed to each consumer group.
    group_out: RwLock<HashMap<String, Arc<AtomicU64>>>,
    samples: Mutex<Samples>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub put_messages: u64,
    pub put_bytes: u64,
    pub get_messages: u64,
    pub get_bytes: u64,
    pub get_found: u64,
    pub get_miss: u64,
}

/// Rates per second over 10 s, 60 s and 600 s.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Tps {
    pub put: [f64; 3],
    pub get_found: [f64; 3],
    pub get_miss: [f64; 3],
    pub get_transferred: [f64; 3],
}

/// The windows of [`Tps`], in seconds.
pub const TPS_WINDOWS: [usize; 3] = [10, 60, 600];

/// The totals at local midnight (RocketMQ's `BrokerStats.record()`): 0 until the broker has
/// seen a midnight.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DayMarks {
    pub put_today_morning: u64,
    pub put_yesterday_morning: u64,
    pub get_today_morning: u64,
    pub get_yesterday_morning: u64,
}

struct Samples {
    ring: VecDeque<(Instant, StatsSnapshot)>,
    groups: VecDeque<(Instant, HashMap<String, u64>)>,
    day: Option<i64>,
    marks: DayMarks,
}

impl Default for BrokerStats {
    fn default() -> Self {
        let stats = BrokerStats {
            put_messages: AtomicU64::new(0),
            put_bytes: AtomicU64::new(0),
            get_messages: AtomicU64::new(0),
            get_bytes: AtomicU64::new(0),
            get_found: AtomicU64::new(0),
            get_miss: AtomicU64::new(0),
            group_out: RwLock::new(HashMap::new()),
            samples: Mutex::new(Samples {
                ring: VecDeque::with_capacity(MAX_SAMPLES),
                groups: VecDeque::with_capacity(MAX_GROUP_SAMPLES),
                day: None,
                marks: DayMarks::default(),
            }),
        };
        // The first snapshot: rates are over the broker's life until the window has passed.
        stats.sample(Instant::now(), local_day(rocketraft_common::time::now_ms()));
        stats
    }
}

impl BrokerStats {
    pub fn record_put(&self, messages: u64, bytes: u64) {
        self.put_messages.fetch_add(messages, Ordering::Relaxed);
        self.put_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// One read for consumers: `messages` handed out (none: a miss) to `group`.
    pub fn record_get(&self, group: &str, messages: u64, bytes: u64) {
        if messages == 0 {
            self.get_miss.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.get_found.fetch_add(1, Ordering::Relaxed);
        self.get_messages.fetch_add(messages, Ordering::Relaxed);
        self.get_bytes.fetch_add(bytes, Ordering::Relaxed);
        let known = self.group_out.read().get(group).cloned();
        let counter = match known {
            Some(c) => c,
            None => self
                .group_out
                .write()
                .entry(group.to_string())
                .or_default()
                .clone(),
        };
        counter.fetch_add(messages, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            put_messages: self.put_messages.load(Ordering::Relaxed),
            put_bytes: self.put_bytes.load(Ordering::Relaxed),
            get_messages: self.get_messages.load(Ordering::Relaxed),
            get_bytes: self.get_bytes.load(Ordering::Relaxed),
            get_found: self.get_found.load(Ordering::Relaxed),
            get_miss: self.get_miss.load(Ordering::Relaxed),
        }
    }

    fn group_counts(&self) -> HashMap<String, u64> {
        self.group_out
            .read()
            .iter()
            .map(|(g, c)| (g.clone(), c.load(Ordering::Relaxed)))
            .collect()
    }

    /// Messages handed to `group` so far.
    pub fn group_out(&self, group: &str) -> u64 {
        self.group_out
            .read()
            .get(group)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Takes a snapshot (the sampler calls it every second); `day` is the local day number,
    /// whose change moves the day marks.
    fn sample(&self, at: Instant, day: i64) {
        let snap = self.snapshot();
        let groups = self.group_counts();
        let mut s = self.samples.lock();
        s.ring.push_back((at, snap));
        while s.ring.len() > MAX_SAMPLES {
            s.ring.pop_front();
        }
        s.groups.push_back((at, groups));
        while s.groups.len() > MAX_GROUP_SAMPLES {
            s.groups.pop_front();
        }
        match s.day {
            None => s.day = Some(day),
            Some(d) if d != day => {
                s.day = Some(day);
                s.marks.put_yesterday_morning = s.marks.put_today_morning;
                s.marks.get_yesterday_morning = s.marks.get_today_morning;
                s.marks.put_today_morning = snap.put_messages;
                s.marks.get_today_morning = snap.get_messages;
            }
            Some(_) => {}
        }
    }

    /// The rates over 10 s, 60 s and 600 s, up to now.
    pub fn tps(&self) -> Tps {
        let now = Instant::now();
        let live = self.snapshot();
        let s = self.samples.lock();
        let mut tps = Tps::default();
        for (i, window) in TPS_WINDOWS.iter().enumerate() {
            // The snapshot `window` seconds before the newest one, or the oldest kept.
            let Some((at, from)) = s
                .ring
                .len()
                .checked_sub(window + 1)
                .and_then(|i| s.ring.get(i))
                .or_else(|| s.ring.front())
            else {
                continue;
            };
            let secs = now.saturating_duration_since(*at).as_secs_f64();
            let rate = |a: u64, b: u64| {
                if secs <= 0.0 {
                    0.0
                } else {
                    a.saturating_sub(b) as f64 / secs
                }
            };
            tps.put[i] = rate(live.put_messages, from.put_messages);
            tps.get_found[i] = rate(live.get_found, from.get_found);
            tps.get_miss[i] = rate(live.get_miss, from.get_miss);
            tps.get_transferred[i] = rate(live.get_messages, from.get_messages);
        }
        tps
    }

    /// Messages handed to `group` per second over the last minute (or the broker's life, if
    /// shorter).
    pub fn consume_tps(&self, group: &str) -> f64 {
        let now = Instant::now();
        let live = self.group_out(group);
        let s = self.samples.lock();
        let Some((at, counts)) = s
            .groups
            .iter()
            .find(|(at, _)| now.saturating_duration_since(*at) <= CONSUME_TPS_WINDOW)
            .or_else(|| s.groups.back())
        else {
            return 0.0;
        };
        let secs = now.saturating_duration_since(*at).as_secs_f64();
        if secs <= 0.0 {
            return 0.0;
        }
        live.saturating_sub(counts.get(group).copied().unwrap_or(0)) as f64 / secs
    }

    pub fn day_marks(&self) -> DayMarks {
        self.samples.lock().marks
    }
}

/// RocketMQ's `"x.xx x.xx x.xx"`: the three windows' rates as Java prints a double.
pub fn tps_string(rates: [f64; 3]) -> String {
    rates
        .iter()
        .map(|r| java_double(*r))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A double as Java's `Double.toString` prints the usual rates ("0.0", "12.5").
fn java_double(v: f64) -> String {
    format!("{v:?}")
}

/// The local day number of a time in ms since the epoch (the day marks move at local
/// midnight, as RocketMQ's do).
fn local_day(now_ms: i64) -> i64 {
    let secs = now_ms.div_euclid(1000);
    (secs + utc_offset_secs(secs)).div_euclid(86_400)
}

/// The local time zone's offset from UTC at `secs`, 0 when unknown.
fn utc_offset_secs(secs: i64) -> i64 {
    let t: libc::time_t = secs as libc::time_t;
    // SAFETY: `tm` is a zeroed out-parameter of the right type, `t` a valid time; localtime_r
    // is the thread-safe variant and returns null on failure.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let ok = unsafe { !libc::localtime_r(&t, &mut tm).is_null() };
    if ok {
        tm.tm_gmtoff
    } else {
        0
    }
}

/// Takes a snapshot of the broker's counters every second until aborted (at shutdown).
pub async fn sample_loop(inner: Arc<crate::BrokerInner>) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        inner
            .stats
            .sample(Instant::now(), local_day(rocketraft_common::time::now_ms()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_over_the_window_and_day_marks_move_at_midnight() {
        let stats = BrokerStats::default();
        let start = Instant::now();
        stats.record_put(30, 3000);
        stats.record_get("g", 10, 1000);
        stats.record_get("g", 0, 0);
        let tps = stats.tps();
        // Over the broker's life so far (well under a second): far above 30 per second.
        assert!(tps.put[0] > 30.0, "{tps:?}");
        assert!(tps.get_transferred[2] > 10.0, "{tps:?}");
        assert!(tps.get_found[1] > 0.0 && tps.get_miss[1] > 0.0, "{tps:?}");
        assert!(stats.consume_tps("g") > 10.0);
        assert_eq!(stats.consume_tps("other"), 0.0);

        // A snapshot a day later moves the marks.
        let day = local_day(rocketraft_common::time::now_ms());
        stats.sample(start, day + 1);
        assert_eq!(
            stats.day_marks(),
            DayMarks {
                put_today_morning: 30,
                put_yesterday_morning: 0,
                get_today_morning: 10,
                get_yesterday_morning: 0,
            }
        );
        stats.record_put(5, 500);
        stats.sample(start, day + 2);
        assert_eq!(stats.day_marks().put_today_morning, 35);
        assert_eq!(stats.day_marks().put_yesterday_morning, 30);
        assert_eq!(tps_string([1.5, 0.0, 2.0]), "1.5 0.0 2.0");
    }
}
