//! Message trace records in RocketMQ's `TraceDataEncoder` format.
//!
//! A trace message (topic [`TRACE_TOPIC`]) carries one or more records in its body: the fields of
//! a record are separated by [`CONTENT_SPLITOR`] (char 1), records end with [`FIELD_SPLITOR`]
//! (char 2). Its `KEYS` are the traced message ids and keys, so the trace of a message is found
//! with QUERY_MESSAGE on the trace topic by the message id. The record types and their fields:
//!
//! - `Pub`: timestamp, regionId, groupName, topic, msgId, tags, keys, storeHost, bodyLength,
//!   costTime, msgType (ordinal), offsetMsgId, success (older clients: no offsetMsgId; newer: a
//!   clientHost after success);
//! - `SubBefore`: timestamp, regionId, groupName, requestId, msgId, retryTimes, keys;
//! - `SubAfter`: requestId, msgId, costTime, success, keys, contextCode, then (not for the
//!   CLOUD access channel) timestamp, groupName;
//! - `EndTransaction`: timestamp, regionId, groupName, topic, msgId, tags, keys, storeHost,
//!   msgType, transactionId, transactionState, fromTransactionCheck;
//! - `Recall`: timestamp, regionId, groupName, topic, msgId, success.

/// The default trace topic (`TopicValidator.RMQ_SYS_TRACE_TOPIC`).
pub const TRACE_TOPIC: &str = "RMQ_SYS_TRACE_TOPIC";
/// Separates the fields of a record (`TraceConstants.CONTENT_SPLITOR`).
pub const CONTENT_SPLITOR: char = '\u{1}';
/// Ends a record (`TraceConstants.FIELD_SPLITOR`).
pub const FIELD_SPLITOR: char = '\u{2}';
/// RocketMQ's `MessageType` names by ordinal.
pub const MESSAGE_TYPES: [&str; 6] = [
    "Normal_Msg",
    "Trans_Msg_Half",
    "Trans_msg_Commit",
    "Delay_Msg",
    "Order_Msg",
    "Recall_Msg",
];

/// One decoded record: its type and its fields by RocketMQ's names, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceRecord {
    /// `Pub`, `SubBefore`, `SubAfter`, `EndTransaction`, `Recall`, or what an unknown record
    /// starts with.
    pub trace_type: String,
    pub fields: Vec<(&'static str, String)>,
}

impl TraceRecord {
    /// The value of a field, if the record has it.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn names(trace_type: &str, len: usize) -> &'static [&'static str] {
    match trace_type {
        "Pub" => {
            const BASE: [&str; 12] = [
                "timestamp",
                "regionId",
                "groupName",
                "topic",
                "msgId",
                "tags",
                "keys",
                "storeHost",
                "bodyLength",
                "costTime",
                "msgType",
                "offsetMsgId",
            ];
            const OLD: [&str; 12] = [
                "timestamp",
                "regionId",
                "groupName",
                "topic",
                "msgId",
                "tags",
                "keys",
                "storeHost",
                "bodyLength",
                "costTime",
                "msgType",
                "success",
            ];
            const NEW: [&str; 14] = [
                "timestamp",
                "regionId",
                "groupName",
                "topic",
                "msgId",
                "tags",
                "keys",
                "storeHost",
                "bodyLength",
                "costTime",
                "msgType",
                "offsetMsgId",
                "success",
                "clientHost",
            ];
            // `len` counts the fields after the type.
            match len {
                12 => &OLD,
                n if n >= 13 => &NEW,
                _ => &BASE,
            }
        }
        "SubBefore" => &[
            "timestamp",
            "regionId",
            "groupName",
            "requestId",
            "msgId",
            "retryTimes",
            "keys",
        ],
        "SubAfter" => &[
            "requestId",
            "msgId",
            "costTime",
            "success",
            "keys",
            "contextCode",
            "timestamp",
            "groupName",
        ],
        "EndTransaction" => &[
            "timestamp",
            "regionId",
            "groupName",
            "topic",
            "msgId",
            "tags",
            "keys",
            "storeHost",
            "msgType",
            "transactionId",
            "transactionState",
            "fromTransactionCheck",
        ],
        "Recall" => &[
            "timestamp",
            "regionId",
            "groupName",
            "topic",
            "msgId",
            "success",
        ],
        _ => &[],
    }
}

/// Decodes a trace message body. Never fails: fields past the known ones are named `extra`,
/// an unknown record type keeps its fields as `extra`.
pub fn decode(body: &str) -> Vec<TraceRecord> {
    let mut out = Vec::new();
    for record in body.split(FIELD_SPLITOR) {
        if record.is_empty() {
            continue;
        }
        let mut parts = record.split(CONTENT_SPLITOR);
        let trace_type = parts.next().unwrap_or_default().to_string();
        let values: Vec<&str> = parts.collect();
        // The SubAfter encoder ends its record with a separator on the CLOUD channel.
        let values: &[&str] = match values.split_last() {
            Some((last, rest)) if last.is_empty() && trace_type == "SubAfter" => rest,
            _ => &values,
        };
        let known = names(&trace_type, values.len());
        let fields = values
            .iter()
            .enumerate()
            .map(|(i, v)| (known.get(i).copied().unwrap_or("extra"), v.to_string()))
            .collect();
        out.push(TraceRecord { trace_type, fields });
    }
    out
}

/// A `Pub` record (what a producer with trace on writes after a send), as the Java client's
/// encoder writes it (14 fields after the type's 13 values: offsetMsgId then success).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PubTrace {
    pub timestamp: i64,
    pub region_id: String,
    pub group_name: String,
    pub topic: String,
    pub msg_id: String,
    pub tags: String,
    pub keys: String,
    pub store_host: String,
    pub body_length: usize,
    pub cost_time_ms: i64,
    /// Ordinal into [`MESSAGE_TYPES`].
    pub msg_type: usize,
    pub offset_msg_id: String,
    pub success: bool,
}

/// A `SubAfter` record (a consumer's outcome for a message).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubAfterTrace {
    pub request_id: String,
    pub msg_id: String,
    pub cost_time_ms: i64,
    pub success: bool,
    pub keys: String,
    /// `ConsumeReturnType` ordinal (0 SUCCESS).
    pub context_code: i32,
    pub timestamp: i64,
    pub group_name: String,
}

/// An `EndTransaction` record (a producer's commit or rollback of a half message).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndTransactionTrace {
    pub timestamp: i64,
    pub region_id: String,
    pub group_name: String,
    pub topic: String,
    pub msg_id: String,
    pub tags: String,
    pub keys: String,
    pub store_host: String,
    /// Ordinal into [`MESSAGE_TYPES`] (RocketMQ writes `Trans_msg_Commit` for both decisions).
    pub msg_type: usize,
    pub transaction_id: String,
    /// `LocalTransactionState` name: `COMMIT_MESSAGE`, `ROLLBACK_MESSAGE` or `UNKNOW`.
    pub transaction_state: String,
    pub from_transaction_check: bool,
}

fn join(fields: &[String]) -> String {
    let mut s = fields.join(&CONTENT_SPLITOR.to_string());
    s.push(FIELD_SPLITOR);
    s
}

impl PubTrace {
    pub fn encode(&self) -> String {
        join(&[
            "Pub".into(),
            self.timestamp.to_string(),
            self.region_id.clone(),
            self.group_name.clone(),
            self.topic.clone(),
            self.msg_id.clone(),
            self.tags.clone(),
            self.keys.clone(),
            self.store_host.clone(),
            self.body_length.to_string(),
            self.cost_time_ms.to_string(),
            self.msg_type.to_string(),
            self.offset_msg_id.clone(),
            self.success.to_string(),
        ])
    }
}

impl SubAfterTrace {
    pub fn encode(&self) -> String {
        join(&[
            "SubAfter".into(),
            self.request_id.clone(),
            self.msg_id.clone(),
            self.cost_time_ms.to_string(),
            self.success.to_string(),
            self.keys.clone(),
            self.context_code.to_string(),
            self.timestamp.to_string(),
            self.group_name.clone(),
        ])
    }
}

impl EndTransactionTrace {
    pub fn encode(&self) -> String {
        join(&[
            "EndTransaction".into(),
            self.timestamp.to_string(),
            self.region_id.clone(),
            self.group_name.clone(),
            self.topic.clone(),
            self.msg_id.clone(),
            self.tags.clone(),
            self.keys.clone(),
            self.store_host.clone(),
            self.msg_type.to_string(),
            self.transaction_id.clone(),
            self.transaction_state.clone(),
            self.from_transaction_check.to_string(),
        ])
    }
}

/// The `KEYS` of a trace message for a traced message: its id and its own keys, space
/// separated, as `TraceDataEncoder` collects them (`transKey`).
pub fn trace_keys(msg_id: &str, keys: &str) -> String {
    let mut out = vec![msg_id];
    out.extend(keys.split(' ').filter(|k| !k.is_empty()));
    out.dedup();
    out.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pub_and_sub_after_round_trip() {
        let p = PubTrace {
            timestamp: 1700000000000,
            region_id: "DefaultRegion".into(),
            group_name: "pg".into(),
            topic: "T".into(),
            msg_id: "U1".into(),
            tags: "TagA".into(),
            keys: "k1 k2".into(),
            store_host: "127.0.0.1:10911".into(),
            body_length: 5,
            cost_time_ms: 3,
            msg_type: 0,
            offset_msg_id: "7F000001".into(),
            success: true,
        };
        let s = SubAfterTrace {
            request_id: "R".into(),
            msg_id: "U1".into(),
            cost_time_ms: 9,
            success: true,
            keys: "k1".into(),
            context_code: 0,
            timestamp: 1700000000100,
            group_name: "cg".into(),
        };
        let body = p.encode() + &s.encode();
        let records = decode(&body);
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].trace_type, "Pub");
        assert_eq!(records[0].get("msgId"), Some("U1"));
        assert_eq!(records[0].get("offsetMsgId"), Some("7F000001"));
        assert_eq!(records[0].get("success"), Some("true"));
        assert_eq!(records[1].trace_type, "SubAfter");
        assert_eq!(records[1].get("groupName"), Some("cg"));
        assert_eq!(records[1].get("costTime"), Some("9"));
        assert_eq!(trace_keys("U1", "k1  k2"), "U1 k1 k2");
    }

    #[test]
    fn end_transaction_is_written_as_the_java_encoder_does() {
        let e = EndTransactionTrace {
            timestamp: 1700000000000,
            region_id: "DefaultRegion".into(),
            group_name: "pg".into(),
            topic: "T".into(),
            msg_id: "U1".into(),
            tags: "TagA".into(),
            keys: "k1".into(),
            store_host: "127.0.0.1:10911".into(),
            msg_type: 2,
            transaction_id: "U1".into(),
            transaction_state: "COMMIT_MESSAGE".into(),
            from_transaction_check: false,
        };
        assert_eq!(
            e.encode(),
            "EndTransaction\u{1}1700000000000\u{1}DefaultRegion\u{1}pg\u{1}T\u{1}U1\u{1}TagA\u{1}k1\
             \u{1}127.0.0.1:10911\u{1}2\u{1}U1\u{1}COMMIT_MESSAGE\u{1}false\u{2}"
        );
        let r = decode(&e.encode());
        assert_eq!(r[0].trace_type, "EndTransaction");
        assert_eq!(r[0].get("transactionState"), Some("COMMIT_MESSAGE"));
        assert_eq!(r[0].get("fromTransactionCheck"), Some("false"));
        assert_eq!(r[0].get("msgType"), Some("2"));
    }

    #[test]
    fn old_and_unknown_records_decode() {
        let old =
            "Pub\u{1}1\u{1}r\u{1}g\u{1}T\u{1}id\u{1}t\u{1}k\u{1}h\u{1}3\u{1}1\u{1}0\u{1}false\u{2}";
        let r = decode(old);
        assert_eq!(r[0].get("success"), Some("false"));
        assert_eq!(r[0].get("offsetMsgId"), None);
        let odd = decode("Weird\u{1}a\u{1}b\u{2}\u{2}");
        assert_eq!(odd.len(), 1);
        assert_eq!(
            odd[0].fields,
            vec![("extra", "a".into()), ("extra", "b".into())]
        );
        assert!(decode("").is_empty());
    }
}
