//! Encode/decode round trips of the generated `apache.rocketmq.v2` protocol, plus checks that the
//! wire facts (enum numbers, field numbers, service and RPC names) are the apache/rocketmq-apis
//! ones.

use std::collections::HashMap;

use prost::Message as _;
use prost_types::{Duration, Timestamp};
use rocketraft_proxy::pb::{
    self, receive_message_response, retry_policy, settings, telemetry_command, Code, DigestType,
};

fn resource(namespace: &str, name: &str) -> pb::Resource {
    pb::Resource {
        resource_namespace: namespace.to_string(),
        name: name.to_string(),
    }
}

fn round_trip<M: prost::Message + Default + PartialEq + std::fmt::Debug>(m: &M) -> Vec<u8> {
    let bytes = m.encode_to_vec();
    let back = M::decode(bytes.as_slice()).expect("decode");
    assert_eq!(&back, m);
    bytes
}

fn sample_message() -> pb::Message {
    let body = b"hello rocketraft".to_vec();
    pb::Message {
        topic: Some(resource("ns-1", "TopicA")),
        user_properties: HashMap::from([
            ("order".to_string(), "42".to_string()),
            ("région".to_string(), "eu-west".to_string()),
        ]),
        system_properties: Some(pb::SystemProperties {
            tag: Some("TagA".to_string()),
            keys: vec!["k1".to_string(), "k2".to_string()],
            message_id: "01A1B2C3D4E5F60718293A4B5C".to_string(),
            body_digest: Some(pb::Digest {
                r#type: DigestType::Crc32 as i32,
                // CRC32 of the body, in hex.
                checksum: "275F6F8F".to_string(),
            }),
            body_encoding: pb::Encoding::Identity as i32,
            message_type: pb::MessageType::Fifo as i32,
            born_timestamp: Some(Timestamp {
                seconds: 1_700_000_000,
                nanos: 123_000_000,
            }),
            born_host: "10.0.0.7".to_string(),
            delivery_timestamp: Some(Timestamp {
                seconds: 1_700_000_060,
                nanos: 0,
            }),
            message_group: Some("group-7".to_string()),
            trace_context: Some("00-abc-def-01".to_string()),
            orphaned_transaction_recovery_duration: Some(Duration {
                seconds: 30,
                nanos: 0,
            }),
            priority: Some(3),
            ..Default::default()
        }),
        body,
    }
}

#[test]
fn send_message_request_round_trip() {
    let request = pb::SendMessageRequest {
        messages: vec![sample_message(), pb::Message::default()],
    };
    round_trip(&request);

    let decoded = pb::SendMessageRequest::decode(request.encode_to_vec().as_slice()).unwrap();
    let m = &decoded.messages[0];
    let topic = m.topic.as_ref().unwrap();
    assert_eq!(topic.resource_namespace, "ns-1");
    assert_eq!(topic.name, "TopicA");
    assert_eq!(m.user_properties["order"], "42");
    assert_eq!(m.user_properties["région"], "eu-west");
    let sp = m.system_properties.as_ref().unwrap();
    assert_eq!(sp.message_id, "01A1B2C3D4E5F60718293A4B5C");
    assert_eq!(sp.tag.as_deref(), Some("TagA"));
    assert_eq!(sp.keys, ["k1", "k2"]);
    assert_eq!(sp.message_group.as_deref(), Some("group-7"));
    assert_eq!(sp.delivery_timestamp.unwrap().seconds, 1_700_000_060);
    assert_eq!(sp.body_encoding(), pb::Encoding::Identity);
    assert_eq!(sp.message_type(), pb::MessageType::Fifo);
    assert_eq!(sp.born_timestamp.unwrap().nanos, 123_000_000);
    let digest = sp.body_digest.as_ref().unwrap();
    assert_eq!(digest.r#type(), DigestType::Crc32);
    assert_eq!(digest.checksum, "275F6F8F");
    assert_eq!(m.body, b"hello rocketraft");
    // Optional scalars keep "absent" apart from "zero".
    assert_eq!(sp.queue_offset, None);
    assert_eq!(sp.delivery_attempt, None);

    // And the answer.
    round_trip(&pb::SendMessageResponse {
        status: Some(pb::Status {
            code: Code::Ok as i32,
            message: "OK".to_string(),
        }),
        entries: vec![pb::SendResultEntry {
            status: Some(pb::Status {
                code: Code::Ok as i32,
                message: String::new(),
            }),
            message_id: "01A1B2C3D4E5F60718293A4B5C".to_string(),
            transaction_id: String::new(),
            offset: 1234,
            recall_handle: "recall-1".to_string(),
        }],
    });
}

#[test]
fn receive_message_response_round_trip_every_variant() {
    let status = pb::ReceiveMessageResponse {
        content: Some(receive_message_response::Content::Status(pb::Status {
            code: Code::MessageNotFound as i32,
            message: "no new message".to_string(),
        })),
    };
    let mut delivered = sample_message();
    let sp = delivered.system_properties.as_mut().unwrap();
    sp.receipt_handle = Some("handle-1".to_string());
    sp.queue_id = 3;
    sp.queue_offset = Some(0);
    sp.delivery_attempt = Some(1);
    sp.store_host = "broker-a".to_string();
    sp.store_timestamp = Some(Timestamp {
        seconds: 1_700_000_001,
        nanos: 5,
    });
    sp.invisible_duration = Some(Duration {
        seconds: 30,
        nanos: 0,
    });
    sp.dead_letter_queue = Some(pb::DeadLetterQueue {
        topic: "TopicA".to_string(),
        message_id: "orig-1".to_string(),
    });
    let message = pb::ReceiveMessageResponse {
        content: Some(receive_message_response::Content::Message(delivered)),
    };
    let delivery = pb::ReceiveMessageResponse {
        content: Some(receive_message_response::Content::DeliveryTimestamp(
            Timestamp {
                seconds: 1_700_000_002,
                nanos: 999_999_999,
            },
        )),
    };
    for response in [
        &status,
        &message,
        &delivery,
        &pb::ReceiveMessageResponse::default(),
    ] {
        round_trip(response);
    }
    // Zero-valued optional scalars are still present after the trip.
    let back = pb::ReceiveMessageResponse::decode(message.encode_to_vec().as_slice()).unwrap();
    match back.content {
        Some(receive_message_response::Content::Message(m)) => {
            assert_eq!(m.system_properties.unwrap().queue_offset, Some(0));
        }
        other => panic!("expected a message, got {other:?}"),
    }
}

#[test]
fn telemetry_command_with_settings_round_trip() {
    let publishing = pb::TelemetryCommand {
        status: None,
        command: Some(telemetry_command::Command::Settings(pb::Settings {
            client_type: Some(pb::ClientType::Producer as i32),
            access_point: Some(pb::Endpoints {
                scheme: pb::AddressScheme::IPv4 as i32,
                addresses: vec![pb::Address {
                    host: "127.0.0.1".to_string(),
                    port: 8081,
                }],
            }),
            backoff_policy: Some(pb::RetryPolicy {
                max_attempts: 3,
                strategy: Some(retry_policy::Strategy::ExponentialBackoff(
                    pb::ExponentialBackoff {
                        initial: Some(Duration {
                            seconds: 0,
                            nanos: 10_000_000,
                        }),
                        max: Some(Duration {
                            seconds: 1,
                            nanos: 0,
                        }),
                        multiplier: 2.0,
                    },
                )),
            }),
            request_timeout: Some(Duration {
                seconds: 3,
                nanos: 0,
            }),
            pub_sub: Some(settings::PubSub::Publishing(pb::Publishing {
                topics: vec![resource("", "TopicA"), resource("ns-1", "TopicB")],
                max_body_size: 4 * 1024 * 1024,
                validate_message_type: true,
            })),
            user_agent: Some(pb::Ua {
                language: pb::Language::Rust as i32,
                version: "5.0.0".to_string(),
                platform: "linux x86_64".to_string(),
                hostname: "host-1".to_string(),
            }),
            metric: Some(pb::Metric {
                on: false,
                endpoints: None,
            }),
        })),
    };
    round_trip(&publishing);

    let subscribing = pb::TelemetryCommand {
        status: Some(pb::Status {
            code: Code::Ok as i32,
            message: String::new(),
        }),
        command: Some(telemetry_command::Command::Settings(pb::Settings {
            client_type: Some(pb::ClientType::PushConsumer as i32),
            backoff_policy: Some(pb::RetryPolicy {
                max_attempts: 16,
                strategy: Some(retry_policy::Strategy::CustomizedBackoff(
                    pb::CustomizedBackoff {
                        next: [1, 5, 10, 30, 60]
                            .map(|seconds| Duration { seconds, nanos: 0 })
                            .to_vec(),
                    },
                )),
            }),
            pub_sub: Some(settings::PubSub::Subscription(pb::Subscription {
                group: Some(resource("ns-1", "GroupA")),
                subscriptions: vec![pb::SubscriptionEntry {
                    topic: Some(resource("ns-1", "TopicA")),
                    expression: Some(pb::FilterExpression {
                        r#type: pb::FilterType::Tag as i32,
                        expression: "TagA || TagB".to_string(),
                    }),
                }],
                fifo: Some(false),
                receive_batch_size: Some(32),
                long_polling_timeout: Some(Duration {
                    seconds: 20,
                    nanos: 0,
                }),
                lite_subscription_quota: None,
                max_lite_topic_size: None,
            })),
            ..Default::default()
        })),
    };
    round_trip(&subscribing);

    // The other commands of the stream.
    let commands = [
        telemetry_command::Command::ThreadStackTrace(pb::ThreadStackTrace {
            nonce: "n1".to_string(),
            thread_stack_trace: Some("main: parked".to_string()),
        }),
        telemetry_command::Command::VerifyMessageResult(pb::VerifyMessageResult {
            nonce: "n2".to_string(),
        }),
        telemetry_command::Command::RecoverOrphanedTransactionCommand(
            pb::RecoverOrphanedTransactionCommand {
                message: Some(sample_message()),
                transaction_id: "tx-1".to_string(),
            },
        ),
        telemetry_command::Command::PrintThreadStackTraceCommand(
            pb::PrintThreadStackTraceCommand {
                nonce: "n3".to_string(),
            },
        ),
        telemetry_command::Command::VerifyMessageCommand(pb::VerifyMessageCommand {
            nonce: "n4".to_string(),
            message: Some(sample_message()),
        }),
        telemetry_command::Command::ReconnectEndpointsCommand(pb::ReconnectEndpointsCommand {
            nonce: "n5".to_string(),
        }),
        telemetry_command::Command::NotifyUnsubscribeLiteCommand(
            pb::NotifyUnsubscribeLiteCommand {
                lite_topic: "lite-1".to_string(),
            },
        ),
    ];
    for command in commands {
        round_trip(&pb::TelemetryCommand {
            status: None,
            command: Some(command),
        });
    }
}

#[test]
fn code_values_are_the_upstream_ones() {
    let expected: &[(Code, i32, &str)] = &[
        (Code::Unspecified, 0, "CODE_UNSPECIFIED"),
        (Code::Ok, 20000, "OK"),
        (Code::MultipleResults, 30000, "MULTIPLE_RESULTS"),
        (Code::BadRequest, 40000, "BAD_REQUEST"),
        (Code::IllegalAccessPoint, 40001, "ILLEGAL_ACCESS_POINT"),
        (Code::IllegalTopic, 40002, "ILLEGAL_TOPIC"),
        (Code::IllegalConsumerGroup, 40003, "ILLEGAL_CONSUMER_GROUP"),
        (Code::IllegalMessageTag, 40004, "ILLEGAL_MESSAGE_TAG"),
        (Code::IllegalMessageKey, 40005, "ILLEGAL_MESSAGE_KEY"),
        (Code::IllegalMessageGroup, 40006, "ILLEGAL_MESSAGE_GROUP"),
        (
            Code::IllegalMessagePropertyKey,
            40007,
            "ILLEGAL_MESSAGE_PROPERTY_KEY",
        ),
        (Code::InvalidTransactionId, 40008, "INVALID_TRANSACTION_ID"),
        (Code::IllegalMessageId, 40009, "ILLEGAL_MESSAGE_ID"),
        (
            Code::IllegalFilterExpression,
            40010,
            "ILLEGAL_FILTER_EXPRESSION",
        ),
        (Code::IllegalInvisibleTime, 40011, "ILLEGAL_INVISIBLE_TIME"),
        (Code::IllegalDeliveryTime, 40012, "ILLEGAL_DELIVERY_TIME"),
        (Code::InvalidReceiptHandle, 40013, "INVALID_RECEIPT_HANDLE"),
        (
            Code::MessagePropertyConflictWithType,
            40014,
            "MESSAGE_PROPERTY_CONFLICT_WITH_TYPE",
        ),
        (
            Code::UnrecognizedClientType,
            40015,
            "UNRECOGNIZED_CLIENT_TYPE",
        ),
        (Code::MessageCorrupted, 40016, "MESSAGE_CORRUPTED"),
        (Code::ClientIdRequired, 40017, "CLIENT_ID_REQUIRED"),
        (Code::IllegalPollingTime, 40018, "ILLEGAL_POLLING_TIME"),
        (Code::IllegalOffset, 40019, "ILLEGAL_OFFSET"),
        (Code::IllegalLiteTopic, 40020, "ILLEGAL_LITE_TOPIC"),
        (Code::Unauthorized, 40100, "UNAUTHORIZED"),
        (Code::PaymentRequired, 40200, "PAYMENT_REQUIRED"),
        (Code::Forbidden, 40300, "FORBIDDEN"),
        (Code::NotFound, 40400, "NOT_FOUND"),
        (Code::MessageNotFound, 40401, "MESSAGE_NOT_FOUND"),
        (Code::TopicNotFound, 40402, "TOPIC_NOT_FOUND"),
        (
            Code::ConsumerGroupNotFound,
            40403,
            "CONSUMER_GROUP_NOT_FOUND",
        ),
        (Code::OffsetNotFound, 40404, "OFFSET_NOT_FOUND"),
        (Code::RequestTimeout, 40800, "REQUEST_TIMEOUT"),
        (Code::PayloadTooLarge, 41300, "PAYLOAD_TOO_LARGE"),
        (Code::MessageBodyTooLarge, 41301, "MESSAGE_BODY_TOO_LARGE"),
        (Code::MessageBodyEmpty, 41302, "MESSAGE_BODY_EMPTY"),
        (Code::PreconditionFailed, 42800, "PRECONDITION_FAILED"),
        (Code::TooManyRequests, 42900, "TOO_MANY_REQUESTS"),
        (
            Code::LiteTopicQuotaExceeded,
            42901,
            "LITE_TOPIC_QUOTA_EXCEEDED",
        ),
        (
            Code::LiteSubscriptionQuotaExceeded,
            42902,
            "LITE_SUBSCRIPTION_QUOTA_EXCEEDED",
        ),
        (
            Code::RequestHeaderFieldsTooLarge,
            43100,
            "REQUEST_HEADER_FIELDS_TOO_LARGE",
        ),
        (
            Code::MessagePropertiesTooLarge,
            43101,
            "MESSAGE_PROPERTIES_TOO_LARGE",
        ),
        (Code::InternalError, 50000, "INTERNAL_ERROR"),
        (Code::InternalServerError, 50001, "INTERNAL_SERVER_ERROR"),
        (Code::HaNotAvailable, 50002, "HA_NOT_AVAILABLE"),
        (Code::NotImplemented, 50100, "NOT_IMPLEMENTED"),
        (Code::ProxyTimeout, 50400, "PROXY_TIMEOUT"),
        (
            Code::MasterPersistenceTimeout,
            50401,
            "MASTER_PERSISTENCE_TIMEOUT",
        ),
        (
            Code::SlavePersistenceTimeout,
            50402,
            "SLAVE_PERSISTENCE_TIMEOUT",
        ),
        (Code::Unsupported, 50500, "UNSUPPORTED"),
        (Code::VersionUnsupported, 50501, "VERSION_UNSUPPORTED"),
        (
            Code::VerifyFifoMessageUnsupported,
            50502,
            "VERIFY_FIFO_MESSAGE_UNSUPPORTED",
        ),
        (
            Code::FailedToConsumeMessage,
            60000,
            "FAILED_TO_CONSUME_MESSAGE",
        ),
    ];
    for &(code, number, name) in expected {
        assert_eq!(code as i32, number, "{name}");
        assert_eq!(code.as_str_name(), name);
        assert_eq!(Code::try_from(number), Ok(code));
        assert_eq!(Code::from_str_name(name), Some(code));
    }
    // No value outside the table: every i32 in the used ranges is either listed or unknown.
    let listed: std::collections::HashSet<i32> = expected.iter().map(|e| e.1).collect();
    for n in 0..=70_000 {
        assert_eq!(Code::try_from(n).is_ok(), listed.contains(&n), "code {n}");
    }
}

#[test]
fn other_enum_values_are_the_upstream_ones() {
    use pb::{
        offset_option::Policy, AddressScheme, ClientType, Encoding, FilterType, Language,
        LiteSubscriptionAction, MessageType, Permission, QueryOffsetPolicy, TransactionResolution,
        TransactionSource,
    };
    assert_eq!(TransactionResolution::Commit as i32, 1);
    assert_eq!(TransactionResolution::Rollback as i32, 2);
    assert_eq!(TransactionSource::SourceClient as i32, 1);
    assert_eq!(TransactionSource::SourceServerCheck as i32, 2);
    assert_eq!(Permission::None as i32, 1);
    assert_eq!(Permission::ReadWrite as i32, 4);
    assert_eq!(FilterType::Tag as i32, 1);
    assert_eq!(FilterType::Sql as i32, 2);
    assert_eq!(AddressScheme::IPv4.as_str_name(), "IPv4");
    assert_eq!(AddressScheme::DomainName as i32, 3);
    assert_eq!(MessageType::Normal as i32, 1);
    assert_eq!(MessageType::Fifo as i32, 2);
    assert_eq!(MessageType::Delay as i32, 3);
    assert_eq!(MessageType::Transaction as i32, 4);
    assert_eq!(MessageType::Lite as i32, 5);
    assert_eq!(MessageType::Priority as i32, 6);
    assert_eq!(DigestType::Crc32 as i32, 1);
    assert_eq!(DigestType::Md5 as i32, 2);
    assert_eq!(DigestType::Sha1 as i32, 3);
    assert_eq!(ClientType::Producer as i32, 1);
    assert_eq!(ClientType::PushConsumer as i32, 2);
    assert_eq!(ClientType::SimpleConsumer as i32, 3);
    assert_eq!(ClientType::PullConsumer as i32, 4);
    assert_eq!(ClientType::LitePushConsumer as i32, 5);
    assert_eq!(ClientType::LiteSimpleConsumer as i32, 6);
    assert_eq!(Encoding::Identity as i32, 1);
    assert_eq!(Encoding::Gzip as i32, 2);
    assert_eq!(Language::Java as i32, 1);
    assert_eq!(Language::Rust as i32, 5);
    assert_eq!(Language::Kotlin as i32, 12);
    assert_eq!(QueryOffsetPolicy::Beginning as i32, 0);
    assert_eq!(QueryOffsetPolicy::End as i32, 1);
    assert_eq!(QueryOffsetPolicy::Timestamp as i32, 2);
    assert_eq!(LiteSubscriptionAction::PartialAdd as i32, 0);
    assert_eq!(LiteSubscriptionAction::CompleteRemove as i32, 3);
    assert_eq!(Policy::Last as i32, 0);
    assert_eq!(Policy::Max as i32, 2);
}

/// Field numbers checked against hand-computed protobuf bytes (key = number << 3 | wire type),
/// independently of the generated code.
#[test]
fn field_numbers_on_the_wire() {
    // Status { code = 1 (varint), message = 2 (bytes) }; 20000 = varint a0 9c 01.
    let status = pb::Status {
        code: Code::Ok as i32,
        message: "x".to_string(),
    };
    assert_eq!(
        status.encode_to_vec(),
        [0x08, 0xa0, 0x9c, 0x01, 0x12, 0x01, b'x']
    );

    // SystemProperties.priority = 22 (varint): key 22 << 3 = 176 = varint b0 01.
    let sp = pb::SystemProperties {
        priority: Some(0),
        ..Default::default()
    };
    assert_eq!(sp.encode_to_vec(), [0xb0, 0x01, 0x00]);
    // message_group = 17 (bytes): key 17 << 3 | 2 = 138 = varint 8a 01.
    let sp = pb::SystemProperties {
        message_group: Some("g".to_string()),
        ..Default::default()
    };
    assert_eq!(sp.encode_to_vec(), [0x8a, 0x01, 0x01, b'g']);

    // ReceiveMessageResponse.delivery_timestamp = 3 (message): key 0x1a, empty Timestamp.
    let r = pb::ReceiveMessageResponse {
        content: Some(receive_message_response::Content::DeliveryTimestamp(
            Timestamp::default(),
        )),
    };
    assert_eq!(r.encode_to_vec(), [0x1a, 0x00]);

    // TelemetryCommand: settings = 2, notify_unsubscribe_lite_command = 9.
    let t = pb::TelemetryCommand {
        status: None,
        command: Some(telemetry_command::Command::Settings(pb::Settings::default())),
    };
    assert_eq!(t.encode_to_vec(), [0x12, 0x00]);
    let t = pb::TelemetryCommand {
        status: None,
        command: Some(telemetry_command::Command::NotifyUnsubscribeLiteCommand(
            Default::default(),
        )),
    };
    assert_eq!(t.encode_to_vec(), [0x4a, 0x00]);

    // Settings: publishing = 5, subscription = 6, metric = 8.
    let s = pb::Settings {
        pub_sub: Some(settings::PubSub::Subscription(Default::default())),
        metric: Some(pb::Metric::default()),
        ..Default::default()
    };
    assert_eq!(s.encode_to_vec(), [0x32, 0x00, 0x42, 0x00]);

    // SendResultEntry.recall_handle = 5; ChangeInvisibleDurationRequest.suspend = 7.
    let e = pb::SendResultEntry {
        recall_handle: "h".to_string(),
        ..Default::default()
    };
    assert_eq!(e.encode_to_vec(), [0x2a, 0x01, b'h']);
    let c = pb::ChangeInvisibleDurationRequest {
        suspend: Some(true),
        ..Default::default()
    };
    assert_eq!(c.encode_to_vec(), [0x38, 0x01]);

    // Message.user_properties = 2 is a map: entries { key = 1, value = 2 }.
    let m = pb::Message {
        user_properties: HashMap::from([("k".to_string(), "v".to_string())]),
        ..Default::default()
    };
    assert_eq!(
        m.encode_to_vec(),
        [0x12, 0x06, 0x0a, 0x01, b'k', 0x12, 0x01, b'v']
    );
}

#[test]
fn service_name_and_streaming_rpcs() {
    use pb::messaging_service_server::{MessagingService, SERVICE_NAME};
    assert_eq!(SERVICE_NAME, "apache.rocketmq.v2.MessagingService");

    // Only the streaming RPCs have a stream type in the server trait: ReceiveMessage and
    // PullMessage (server streaming) and Telemetry (bidirectional). This only has to compile.
    #[allow(dead_code)]
    fn stream_types<T: MessagingService>() {
        let _: Option<T::ReceiveMessageStream> = None;
        let _: Option<T::PullMessageStream> = None;
        let _: Option<T::TelemetryStream> = None;
    }
}
