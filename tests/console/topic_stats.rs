//! The topic page's statistics against a real `rocketraft dev`: each queue's min and max offset
//! with the store time of its last message (GET_TOPIC_STATS_INFO), and the topic's puts over the
//! last minute, hour and day on its master (VIEW_BROKER_STATS_DATA).

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use rocketraft_remoting::api::{MqClientApi, SendRequest};
use rocketraft_remoting::{response_code, ClientConfig, RemotingClient};

use super::support::{admin, file_turn};
use super::{eventually, get, has_row, page, rows, start};

#[test]
fn topic_page_shows_queue_times_and_puts_per_window() {
    let _turn = file_turn(module_path!());
    let s = start();
    let c = s.console.as_str();
    let broker = s.dev.broker.as_str();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let api = MqClientApi::new(
        RemotingClient::new(ClientConfig::default()),
        Duration::from_secs(5),
    );
    admin(
        &s.dev.namesrv,
        &["topic", "create", "StatsPage", "--queues", "2"],
    );
    eventually("the topic's page", || get(c, "/topics/StatsPage").0 == 200);
    // Before any message: empty queues, no last update, nothing put.
    let detail = page(c, "/topics/StatsPage");
    assert!(
        has_row(&detail, &["broker-a", "0", "0", "0", "0", "-"]),
        "queue 0 empty: {detail}"
    );
    assert!(
        has_row(&detail, &["broker-a", broker, "0", "0", "0", "0", "0", "0"]),
        "nothing put yet: {detail}"
    );

    for i in 0..3 {
        let sent = rt
            .block_on(api.send(
                broker,
                &SendRequest {
                    producer_group: "console-stats".into(),
                    topic: "StatsPage".into(),
                    queue_id: 1,
                    body: Bytes::from(format!("stats page {i}")),
                    properties: BTreeMap::new(),
                    ..SendRequest::default()
                },
            ))
            .expect("send");
        assert_eq!(sent.code, response_code::SUCCESS);
    }
    let detail = page(c, "/topics/StatsPage");
    assert!(
        has_row(&detail, &["broker-a", "0", "0", "0", "0", "-"]),
        "queue 0 still empty: {detail}"
    );
    let queue1 = rows(&detail)
        .into_iter()
        .find(|r| r.len() == 6 && r[0] == "broker-a" && r[1] == "1")
        .unwrap_or_else(|| panic!("queue 1's row: {detail}"));
    assert_eq!(&queue1[2..5], ["0", "3", "3"], "{detail}");
    assert!(
        queue1[5].ends_with(" UTC") && queue1[5].starts_with("20"),
        "queue 1 last updated: {queue1:?}"
    );
    assert!(detail.contains("3 message(s) stored."), "{detail}");
    // Three puts in the last minute, hour and day.
    let puts = rows(&detail)
        .into_iter()
        .find(|r| r.len() == 8 && r[0] == "broker-a" && r[1] == broker)
        .unwrap_or_else(|| panic!("the puts row: {detail}"));
    assert_eq!([&puts[2], &puts[4], &puts[6]], ["3", "3", "3"], "{puts:?}");
    for tps in [&puts[3], &puts[5], &puts[7]] {
        let tps: f64 = tps.parse().expect("a rate");
        assert!(tps > 0.0, "{puts:?}");
    }
    assert!(detail.contains("<h2>Puts</h2>"), "{detail}");
}
