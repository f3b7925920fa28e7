//! Counters and rates for GET_BROKER_RUNTIME_INFO, GET_CONSUME_STATS and the admin CLI.
//!
//! The counters are atomics bumped once per request (RocketMQ's `StoreStatsService` and
//! `BrokerStats`). [`sample_loop`] takes a snapshot of them every second and keeps the last ten
//! minutes, as `StoreStatsService` does (`FREQUENCY_OF_SAMPLING`, `MAX_RECORDS_OF_SAMPLING`); a
//! rate over a window is the live counter minus the snapshot taken that long ago (or the oldest
//! one kept, while the broker has run for less than the window), divided by the time between.
//! It also keeps the day marks of `msgPutTotalTodayMorning` and the like (local midnight).
//!
//! Per topic and per `topic@group` it keeps RocketMQ's `BrokerStatsManager` items for
//! VIEW_BROKER_STATS_DATA and GET_TOPIC_STATS_INFO ([`StatsItem`]: TOPIC_PUT_NUMS/SIZE,
//! GROUP_GET_NUMS/SIZE, BROKER_PUT_NUMS/GET_NUMS): a request looks its key up once and bumps
//! atomics; the sampler snapshots every item as `StatsItem` does (every 10 s for the minute,
//! every 10 minutes for the hour, every hour for the day), so a day costs 25 snapshots, not
//! 86 400.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use rocketraft_common::protocol::{BrokerStatsData, BrokerStatsItem};

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
    /// TOPIC_PUT_NUMS and TOPIC_PUT_SIZE, by topic.
    topic_puts: ItemSet,
    /// GROUP_GET_NUMS and GROUP_GET_SIZE, by `topic@group`.
    group_gets: ItemSet,
    /// BROKER_PUT_NUMS and BROKER_GET_NUMS (keyed by the cluster name on the wire).
    broker_puts: StatsItem,
    broker_gets: StatsItem,
    /// When the items were last sampled for each window.
    item_clock: Mutex<[Instant; 3]>,
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
        let now = Instant::now();
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
            topic_puts: ItemSet::default(),
            group_gets: ItemSet::default(),
            broker_puts: StatsItem::new(now),
            broker_gets: StatsItem::new(now),
            item_clock: Mutex::new([now; 3]),
        };
        // The first snapshot: rates are over the broker's life until the window has passed.
        stats.sample(Instant::now(), local_day(rocketraft_common::time::now_ms()));
        stats
    }
}

impl BrokerStats {
    /// One send request that stored `messages` (`bytes` written) in `topic`.
    pub fn record_put(&self, topic: &str, messages: u64, bytes: u64) {
        self.put_messages.fetch_add(messages, Ordering::Relaxed);
        self.put_bytes.fetch_add(bytes, Ordering::Relaxed);
        // RocketMQ's incTopicPutNums(topic, msgNum, 1), incTopicPutSize, incBrokerPutNums.
        let items = self.topic_puts.get_or_create(topic);
        items.nums.add(messages, 1);
        items.size.add(bytes, 1);
        self.broker_puts.add(messages, 0);
    }

    /// One read for consumers of `topic`: `messages` handed out (none: a miss) to `group`.
    pub fn record_get(&self, topic: &str, group: &str, messages: u64, bytes: u64) {
        if messages == 0 {
            self.get_miss.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.get_found.fetch_add(1, Ordering::Relaxed);
        self.get_messages.fetch_add(messages, Ordering::Relaxed);
        self.get_bytes.fetch_add(bytes, Ordering::Relaxed);
        // RocketMQ's incGroupGetNums, incGroupGetSize (key `topic@group`), incBrokerGetNums.
        let items = self.group_gets.get_or_create(&group_key(topic, group));
        items.nums.add(messages, 1);
        items.size.add(bytes, 1);
        self.broker_gets.add(messages, 0);
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

    /// The minute, hour and day of the item `name` / `key` (VIEW_BROKER_STATS_DATA), `None`
    /// when there is no such item (RocketMQ's item is created by its first use). The broker
    /// items are keyed by `cluster`, as RocketMQ's are.
    pub fn view(&self, name: &str, key: &str, cluster: &str) -> Option<BrokerStatsData> {
        let now = Instant::now();
        let data = |item: &StatsItem| item.data(now);
        match name {
            TOPIC_PUT_NUMS => self.topic_puts.get(key).map(|i| data(&i.nums)),
            TOPIC_PUT_SIZE => self.topic_puts.get(key).map(|i| data(&i.size)),
            GROUP_GET_NUMS => self.group_gets.get(key).map(|i| data(&i.nums)),
            GROUP_GET_SIZE => self.group_gets.get(key).map(|i| data(&i.size)),
            BROKER_PUT_NUMS if key == cluster => Some(data(&self.broker_puts)),
            BROKER_GET_NUMS if key == cluster => Some(data(&self.broker_gets)),
            _ => None,
        }
    }

    /// Messages put into `topic` per second over the last minute (`tpsTopicPutNums`), 0 when
    /// none were.
    pub fn topic_put_tps(&self, topic: &str) -> f64 {
        self.topic_puts
            .get(topic)
            .map_or(0.0, |i| i.nums.window(Window::Minute, Instant::now()).tps)
    }

    /// Drops the items of a deleted topic (RocketMQ's `onTopicDeleted`).
    pub fn forget_topic(&self, topic: &str) {
        self.topic_puts.0.write().remove(topic);
        self.group_gets
            .0
            .write()
            .retain(|k, _| k.split_once('@').is_none_or(|(t, _)| t != topic));
    }

    /// Drops the items of a deleted subscription group (RocketMQ's `onGroupDeleted`).
    pub fn forget_group(&self, group: &str) {
        self.group_gets
            .0
            .write()
            .retain(|k, _| k.split_once('@').is_none_or(|(_, g)| g != group));
    }

    /// Snapshots every item whose window is due (the sampler calls it every second).
    fn sample_items(&self, now: Instant) {
        let due: Vec<Window> = {
            let mut clock = self.item_clock.lock();
            Window::ALL
                .into_iter()
                .filter(|w| {
                    let last = &mut clock[*w as usize];
                    let due = now.saturating_duration_since(*last) >= w.step();
                    if due {
                        *last = now;
                    }
                    due
                })
                .collect()
        };
        if due.is_empty() {
            return;
        }
        for w in due {
            self.broker_puts.sample(w, now);
            self.broker_gets.sample(w, now);
            for set in [&self.topic_puts, &self.group_gets] {
                for items in set.0.read().values() {
                    items.nums.sample(w, now);
                    items.size.sample(w, now);
                }
            }
        }
    }
}

/// RocketMQ's stats names (`Stats`), as VIEW_BROKER_STATS_DATA's `statsName`.
pub const TOPIC_PUT_NUMS: &str = "TOPIC_PUT_NUMS";
pub const TOPIC_PUT_SIZE: &str = "TOPIC_PUT_SIZE";
pub const GROUP_GET_NUMS: &str = "GROUP_GET_NUMS";
pub const GROUP_GET_SIZE: &str = "GROUP_GET_SIZE";
pub const BROKER_PUT_NUMS: &str = "BROKER_PUT_NUMS";
pub const BROKER_GET_NUMS: &str = "BROKER_GET_NUMS";

/// The key of a group's items of a topic: `topic@group` (`buildStatsKey(topic, group)`).
pub fn group_key(topic: &str, group: &str) -> String {
    let mut key = String::with_capacity(topic.len() + group.len() + 1);
    key.push_str(topic);
    key.push('@');
    key.push_str(group);
    key
}

/// A statistic's windows, sampled as RocketMQ's `StatsItem` samples them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Window {
    Minute = 0,
    Hour = 1,
    Day = 2,
}

impl Window {
    const ALL: [Window; 3] = [Window::Minute, Window::Hour, Window::Day];

    /// How often the window is sampled (`samplingInSeconds` every 10 s, `samplingInMinutes`
    /// every 10 minutes, `samplingInHour` every hour).
    fn step(self) -> Duration {
        match self {
            Window::Minute => Duration::from_secs(10),
            Window::Hour => Duration::from_secs(600),
            Window::Day => Duration::from_secs(3600),
        }
    }

    /// The span the window covers.
    fn span(self) -> Duration {
        match self {
            Window::Minute => Duration::from_secs(60),
            Window::Hour => Duration::from_secs(3600),
            Window::Day => Duration::from_secs(86_400),
        }
    }

    /// Snapshots kept: the span's worth and the one before (RocketMQ keeps 7, 7 and 25).
    fn keep(self) -> usize {
        (self.span().as_secs() / self.step().as_secs()) as usize + 1
    }
}

/// The items of one key: a count and a size, bumped together.
struct PairItem {
    nums: StatsItem,
    size: StatsItem,
}

/// Items by key (`StatsItemSet`).
#[derive(Default)]
struct ItemSet(RwLock<HashMap<String, Arc<PairItem>>>);

impl ItemSet {
    fn get(&self, key: &str) -> Option<Arc<PairItem>> {
        self.0.read().get(key).cloned()
    }

    fn get_or_create(&self, key: &str) -> Arc<PairItem> {
        if let Some(items) = self.get(key) {
            return items;
        }
        let now = Instant::now();
        self.0
            .write()
            .entry(key.to_string())
            .or_insert_with(|| {
                Arc::new(PairItem {
                    nums: StatsItem::new(now),
                    size: StatsItem::new(now),
                })
            })
            .clone()
    }
}

/// RocketMQ's `StatsItem`: a value and the number of times it was added to, with snapshots
/// for the minute, hour and day windows.
pub struct StatsItem {
    value: AtomicU64,
    times: AtomicU64,
    /// Per window (indexed by [`Window`]), oldest first.
    samples: Mutex<[VecDeque<CallSnapshot>; 3]>,
}

#[derive(Debug, Clone, Copy)]
struct CallSnapshot {
    at: Instant,
    times: u64,
    value: u64,
}

impl StatsItem {
    /// A new item; each window starts from zero one step before `now`, as RocketMQ's first
    /// sampling seeds it (so a rate right after the first use is not over a zero span).
    fn new(now: Instant) -> Self {
        let seed = |w: Window| {
            let mut ring = VecDeque::with_capacity(w.keep() + 1);
            ring.push_back(CallSnapshot {
                at: now.checked_sub(w.step()).unwrap_or(now),
                times: 0,
                value: 0,
            });
            ring
        };
        StatsItem {
            value: AtomicU64::new(0),
            times: AtomicU64::new(0),
            samples: Mutex::new([seed(Window::Minute), seed(Window::Hour), seed(Window::Day)]),
        }
    }

    fn add(&self, value: u64, times: u64) {
        self.value.fetch_add(value, Ordering::Relaxed);
        if times > 0 {
            self.times.fetch_add(times, Ordering::Relaxed);
        }
    }

    fn sample(&self, w: Window, now: Instant) {
        let snap = CallSnapshot {
            at: now,
            times: self.times.load(Ordering::Relaxed),
            value: self.value.load(Ordering::Relaxed),
        };
        let mut samples = self.samples.lock();
        let ring = &mut samples[w as usize];
        ring.push_back(snap);
        while ring.len() > w.keep() {
            ring.pop_front();
        }
    }

    /// The window up to now: the live value minus the oldest snapshot at most a span old
    /// (RocketMQ subtracts its first snapshot from its last one, which lags up to a step
    /// behind), per second of the time between; avgpt is the value per time added.
    fn window(&self, w: Window, now: Instant) -> BrokerStatsItem {
        let live_value = self.value.load(Ordering::Relaxed);
        let live_times = self.times.load(Ordering::Relaxed);
        let samples = self.samples.lock();
        let ring = &samples[w as usize];
        let Some(from) = ring
            .iter()
            .find(|s| now.saturating_duration_since(s.at) <= w.span())
            .or_else(|| ring.back())
        else {
            return BrokerStatsItem::default();
        };
        let sum = live_value.saturating_sub(from.value);
        let times = live_times.saturating_sub(from.times);
        let secs = now.saturating_duration_since(from.at).as_secs_f64();
        BrokerStatsItem {
            avgpt: if times > 0 {
                sum as f64 / times as f64
            } else {
                0.0
            },
            sum: i64::try_from(sum).unwrap_or(i64::MAX),
            tps: if secs > 0.0 { sum as f64 / secs } else { 0.0 },
        }
    }

    fn data(&self, now: Instant) -> BrokerStatsData {
        BrokerStatsData {
            stats_minute: self.window(Window::Minute, now),
            stats_hour: self.window(Window::Hour, now),
            stats_day: self.window(Window::Day, now),
        }
    }
}

/// RocketMQ's `"x.xx x.xx x.xx"`: the three windows' rates as Java prints a double.
pub fn tps_string(rates: [f64; 3]) -> String {
    rates
        .iter()
        .map(|r| rocketraft_common::json::java_double(*r))
        .collect::<Vec<_>>()
        .join(" ")
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
        let now = Instant::now();
        inner
            .stats
            .sample(now, local_day(rocketraft_common::time::now_ms()));
        inner.stats.sample_items(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_over_the_window_and_day_marks_move_at_midnight() {
        let stats = BrokerStats::default();
        let start = Instant::now();
        stats.record_put("t", 30, 3000);
        stats.record_get("t", "g", 10, 1000);
        stats.record_get("t", "g", 0, 0);
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
        stats.record_put("t", 5, 500);
        stats.sample(start, day + 2);
        assert_eq!(stats.day_marks().put_today_morning, 35);
        assert_eq!(stats.day_marks().put_yesterday_morning, 30);
        assert_eq!(tps_string([1.5, 0.0, 2.0]), "1.5 0.0 2.0");
    }

    #[test]
    fn items_sum_over_their_windows_from_coarse_samples() {
        let t0 = Instant::now();
        let secs = Duration::from_secs;
        let item = StatsItem::new(t0);
        item.add(4, 1);
        item.add(6, 1);
        // Seeded one step back: 10 over the first 10 s, 5 per add.
        let m = item.window(Window::Minute, t0);
        assert_eq!((m.sum, m.avgpt), (10, 5.0));
        assert!((m.tps - 1.0).abs() < 1e-9, "{m:?}");
        for k in 1..=7 {
            item.add(1, 1);
            item.sample(Window::Minute, t0 + secs(10 * k));
        }
        // 7 minute snapshots kept (t0+10 s .. t0+70 s): the oldest at most a minute old is
        // t0+10 s, when the value was 11; now it is 17.
        let m = item.window(Window::Minute, t0 + secs(70));
        assert_eq!((m.sum, m.avgpt), (6, 1.0), "{m:?}");
        assert!((m.tps - 0.1).abs() < 1e-9, "{m:?}");
        // The hour and the day have only their seed: everything so far.
        let h = item.window(Window::Hour, t0 + secs(70));
        assert_eq!(h.sum, 17);
        assert!((h.tps - 17.0 / 670.0).abs() < 1e-9, "{h:?}");
        assert_eq!(item.window(Window::Day, t0 + secs(70)).sum, 17);
        assert_eq!(Window::Day.keep(), 25);
        assert_eq!(Window::Hour.keep(), 7);
    }

    #[test]
    fn views_by_rocketmq_names_and_keys() {
        let stats = BrokerStats::default();
        stats.record_put("T", 3, 300);
        stats.record_put("T", 1, 100);
        stats.record_get("T", "g", 2, 200);
        stats.record_get("T", "g", 0, 0);
        let view = |name: &str, key: &str| stats.view(name, key, "DefaultCluster");
        let puts = view(TOPIC_PUT_NUMS, "T").expect("topic puts");
        assert_eq!(puts.stats_minute.sum, 4);
        assert_eq!(puts.stats_minute.avgpt, 2.0);
        assert_eq!(puts.stats_day.sum, 4);
        assert_eq!(view(TOPIC_PUT_SIZE, "T").expect("size").stats_hour.sum, 400);
        assert_eq!(
            view(GROUP_GET_NUMS, "T@g").expect("gets").stats_minute.sum,
            2
        );
        assert_eq!(
            view(GROUP_GET_SIZE, "T@g").expect("size").stats_minute.sum,
            200
        );
        assert_eq!(
            view(BROKER_PUT_NUMS, "DefaultCluster")
                .expect("broker")
                .stats_minute
                .sum,
            4
        );
        assert_eq!(
            view(BROKER_GET_NUMS, "DefaultCluster")
                .expect("broker")
                .stats_minute
                .sum,
            2
        );
        assert!(view(TOPIC_PUT_NUMS, "Other").is_none());
        assert!(view(GROUP_GET_NUMS, "T@other").is_none());
        assert!(view(BROKER_PUT_NUMS, "OtherCluster").is_none());
        assert!(view("NO_SUCH_STATS", "T").is_none());
        assert!(stats.topic_put_tps("T") > 0.0);
        stats.forget_group("g");
        assert!(view(GROUP_GET_NUMS, "T@g").is_none());
        stats.forget_topic("T");
        assert!(view(TOPIC_PUT_NUMS, "T").is_none());
    }
}
