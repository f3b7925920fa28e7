//! `rocketraft admin topic status --topic T` (mqadmin `topicStatus`): each queue's min and max
//! offset and last store time on every master serving the topic (GET_TOPIC_STATS_INFO), and
//! `rocketraft admin topic stats --topic T [--group G]` (mqadmin `statsAll` for one topic): the
//! messages put into the topic, and taken by the group, over the last minute, hour and day on
//! every master (VIEW_BROKER_STATS_DATA).

use anyhow::Context;
use rocketraft_common::protocol::{BrokerStatsData, TopicOffset, TopicRouteData};
use rocketraft_remoting::api::MqClientApi;

/// The masters serving `topic` as (broker set, address), by the NameServer's route.
async fn masters_of(
    api: &MqClientApi,
    namesrv: &str,
    topic: &str,
) -> anyhow::Result<(TopicRouteData, Vec<(String, String)>)> {
    let route = api
        .topic_route(namesrv, topic)
        .await
        .with_context(|| format!("no route for topic {topic} from the NameServer at {namesrv}"))?;
    let mut masters: Vec<(String, String)> = route
        .broker_datas
        .iter()
        .filter_map(|b| Some((b.broker_name.clone(), b.master_addr()?.to_string())))
        .collect();
    masters.sort();
    Ok((route, masters))
}

/// One queue of `topic status`.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct QueueStatus {
    broker_name: String,
    broker_addr: String,
    queue_id: i32,
    #[serde(flatten)]
    offsets: TopicOffset,
}

/// `admin topic status`.
pub(super) async fn status(
    api: &MqClientApi,
    namesrv: &str,
    topic: &str,
    json: bool,
) -> anyhow::Result<()> {
    let (route, masters) = masters_of(api, namesrv, topic).await?;
    let mut rows = Vec::new();
    let mut put_tps = 0.0;
    for (name, addr) in &masters {
        let table = api
            .topic_stats(addr, topic)
            .await
            .with_context(|| format!("the stats of {topic} from {name} ({addr})"))?;
        put_tps += table.topic_put_tps;
        for (mq, offsets) in table.offset_table {
            rows.push(QueueStatus {
                broker_name: mq.broker_name,
                broker_addr: addr.clone(),
                queue_id: mq.queue_id,
                offsets,
            });
        }
    }
    rows.sort_by(|a, b| (&a.broker_name, a.queue_id).cmp(&(&b.broker_name, b.queue_id)));
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{:<24} {:>4} {:>14} {:>14} {:>10}  last updated",
        "broker set", "qid", "min offset", "max offset", "messages"
    );
    let mut total = 0;
    for r in &rows {
        let o = &r.offsets;
        let messages = (o.max_offset - o.min_offset).max(0);
        total += messages;
        println!(
            "{:<24} {:>4} {:>14} {:>14} {:>10}  {}",
            r.broker_name,
            r.queue_id,
            o.min_offset,
            o.max_offset,
            messages,
            when(o.last_update_timestamp)
        );
    }
    let unserved = route.broker_datas.len() - masters.len();
    println!(
        "{} queue(s) on {} master(s), {total} message(s) stored, {} put(s) per second over the last minute{}",
        rows.len(),
        masters.len(),
        rocketraft_common::json::java_double(put_tps),
        if unserved > 0 {
            format!("; {unserved} broker set(s) without a live master not shown")
        } else {
            String::new()
        }
    );
    Ok(())
}

/// Milliseconds since the epoch as UTC text with milliseconds (mqadmin prints local time as
/// `yyyy-MM-dd HH:mm:ss,SSS`); "-" for an empty queue.
fn when(ms: i64) -> String {
    if ms <= 0 {
        return "-".to_string();
    }
    let (y, m, d, hh, mm, ss) = rocketraft_common::time::utc_fields(ms.div_euclid(1000));
    format!(
        "{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}:{ss:02},{:03} UTC",
        ms.rem_euclid(1000)
    )
}

/// One statistic of one master in `topic stats`.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct StatsRow {
    broker_name: String,
    broker_addr: String,
    stats_name: &'static str,
    stats_key: String,
    /// Zeros when the broker has no such item (nothing put or taken since it started).
    #[serde(flatten)]
    data: BrokerStatsData,
}

/// `admin topic stats`.
pub(super) async fn stats(
    api: &MqClientApi,
    namesrv: &str,
    topic: &str,
    group: Option<&str>,
    json: bool,
) -> anyhow::Result<()> {
    let (_, masters) = masters_of(api, namesrv, topic).await?;
    let mut wanted = vec![("TOPIC_PUT_NUMS", topic.to_string())];
    if let Some(g) = group {
        wanted.push(("GROUP_GET_NUMS", format!("{topic}@{g}")));
    }
    let mut rows = Vec::new();
    for (name, addr) in &masters {
        for (stats_name, key) in &wanted {
            let data = api
                .broker_stats(addr, stats_name, key)
                .await
                .with_context(|| format!("{stats_name} {key} from {name} ({addr})"))?
                .unwrap_or_default();
            rows.push(StatsRow {
                broker_name: name.clone(),
                broker_addr: addr.clone(),
                stats_name,
                stats_key: key.clone(),
                data,
            });
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    // A few messages an hour still show: 4 decimals below 1 per second.
    let tps = |v: f64| {
        if v == 0.0 || v >= 1.0 {
            format!("{v:.2}")
        } else {
            format!("{v:.4}")
        }
    };
    println!(
        "{:<24} {:<5} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}  key",
        "broker set", "what", "minute", "tps", "hour", "tps", "day", "tps"
    );
    for r in &rows {
        let d = &r.data;
        println!(
            "{:<24} {:<5} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}  {}",
            r.broker_name,
            if r.stats_name == "TOPIC_PUT_NUMS" {
                "puts"
            } else {
                "gets"
            },
            d.stats_minute.sum,
            tps(d.stats_minute.tps),
            d.stats_hour.sum,
            tps(d.stats_hour.tps),
            d.stats_day.sum,
            tps(d.stats_day.tps),
            r.stats_key
        );
    }
    for (stats_name, key) in &wanted {
        let (minute, tps_sum) = rows
            .iter()
            .filter(|r| r.stats_name == *stats_name)
            .fold((0, 0.0), |(n, t), r| {
                (n + r.data.stats_minute.sum, t + r.data.stats_minute.tps)
            });
        let day: i64 = rows
            .iter()
            .filter(|r| r.stats_name == *stats_name)
            .map(|r| r.data.stats_day.sum)
            .sum();
        println!(
            "{key}: {} {minute} message(s) in the last minute ({} per second), {day} in the last day, over {} master(s)",
            if *stats_name == "TOPIC_PUT_NUMS" { "put" } else { "got" },
            tps(tps_sum),
            masters.len()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn store_times_read_as_utc_with_milliseconds() {
        assert_eq!(super::when(0), "-");
        assert_eq!(
            super::when(1_700_000_000_123),
            "2023-11-14 22:13:20,123 UTC"
        );
    }
}
