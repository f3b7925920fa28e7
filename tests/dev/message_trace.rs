//! Message trace against the real `rocketraft dev` binary: the trace topic exists on the broker,
//! a producer sends a message and then its trace record the way the Java client's
//! `AsyncTraceDispatcher` does (SEND_MESSAGE_V2 to `RMQ_SYS_TRACE_TOPIC`, the body in
//! `TraceDataEncoder`'s format, `KEYS` = the message id and its keys), a consumer's `SubAfter`
//! record follows, and `rocketraft admin message trace --id` shows both.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rocketraft_common::consts::property;
use rocketraft_common::trace::{trace_keys, PubTrace, SubAfterTrace, TRACE_TOPIC};
use rocketraft_common::TopicConfig;
use rocketraft_remoting::api::{MqClientApi, SendRequest};
use rocketraft_remoting::codes::response_code;
use rocketraft_remoting::{ClientConfig, RemotingClient};

use crate::support::{admin_output, free_port, Dev};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_sent_like_the_java_client_is_shown_by_admin_message_trace() {
    let _turn = crate::support::file_turn(module_path!());
    let dir = tempfile::tempdir().expect("tempdir");
    let dev = Dev::start(dir.path(), free_port(), free_port(), &[]);
    let api = MqClientApi::new(
        RemotingClient::new(ClientConfig::default()),
        Duration::from_secs(5),
    );
    // The trace topic exists by default.
    let topics = api.broker_topics(&dev.broker).await.expect("topics");
    assert!(
        topics.topic_config_table.contains_key(TRACE_TOPIC),
        "{:?}",
        topics.topic_config_table.keys()
    );
    api.create_topic(&dev.broker, &TopicConfig::new("Traced", 1))
        .await
        .expect("topic");
    let uniq = "0A0B0C0D00002A9F0000000000ABCDEF";
    let started = rocketraft_common::time::now_ms();
    let r = api
        .send(
            &dev.broker,
            &SendRequest {
                producer_group: "trace_pg".into(),
                topic: "Traced".into(),
                queue_id: 0,
                body: Bytes::from("traced body"),
                properties: BTreeMap::from([
                    (property::KEYS.to_string(), "order-9".to_string()),
                    (property::TAGS.to_string(), "TagT".to_string()),
                    (
                        property::UNIQ_CLIENT_MESSAGE_ID_KEYIDX.to_string(),
                        uniq.to_string(),
                    ),
                ]),
                ..SendRequest::default()
            },
        )
        .await
        .expect("send");
    assert_eq!(r.code, response_code::SUCCESS);
    let publish = PubTrace {
        timestamp: started,
        region_id: "DefaultRegion".into(),
        group_name: "trace_pg".into(),
        topic: "Traced".into(),
        msg_id: uniq.into(),
        tags: "TagT".into(),
        keys: "order-9".into(),
        store_host: dev.broker.clone(),
        body_length: 11,
        cost_time_ms: 2,
        msg_type: 0,
        offset_msg_id: r.msg_id.clone(),
        success: true,
    };
    let consumed = SubAfterTrace {
        request_id: "req-1".into(),
        msg_id: uniq.into(),
        cost_time_ms: 5,
        success: true,
        keys: "order-9".into(),
        context_code: 0,
        timestamp: started + 10,
        group_name: "trace_cg".into(),
    };
    // Two trace messages, as the dispatcher sends a batch per topic: the Pub, then the SubAfter.
    for body in [publish.encode(), consumed.encode()] {
        let r = api
            .send(
                &dev.broker,
                &SendRequest {
                    producer_group: "_INNER_TRACE_PRODUCER-trace_pg".into(),
                    topic: TRACE_TOPIC.into(),
                    queue_id: 0,
                    body: Bytes::from(body),
                    properties: BTreeMap::from([(
                        property::KEYS.to_string(),
                        trace_keys(uniq, "order-9"),
                    )]),
                    ..SendRequest::default()
                },
            )
            .await
            .expect("trace send");
        assert_eq!(
            r.code,
            response_code::SUCCESS,
            "the trace topic takes sends"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let out = admin_output(&dev.namesrv, &["message", "trace", "--id", uniq]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if out.status.success() && text.contains("2 trace record(s)") {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "no trace: {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("Pub"), "{text}");
    assert!(lines[0].contains("groupName=trace_pg"), "{text}");
    assert!(lines[0].contains("msgType=Normal_Msg"), "{text}");
    assert!(
        lines[0].contains(&format!("offsetMsgId={}", r.msg_id)),
        "{text}"
    );
    assert!(lines[1].starts_with("SubAfter"), "{text}");
    assert!(lines[1].contains("groupName=trace_cg"), "{text}");
    let out = admin_output(&dev.namesrv, &["message", "trace", "--id", uniq, "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(list[0]["traceType"], "Pub");
    assert_eq!(list[0]["keys"], "order-9");
    assert_eq!(list[1]["traceType"], "SubAfter");
    // The trace's key (the message's own key) finds it too, but `trace` asks by message id.
    let out = admin_output(&dev.namesrv, &["message", "trace", "--id", "NO-SUCH-ID"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no trace of NO-SUCH-ID"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(dev);
}
