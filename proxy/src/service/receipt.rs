//! Receipt handles. A gRPC receipt handle is the broker's POP handle (it names the broker set,
//! so any proxy can ack) plus the message's CommitLog offset.

use super::convert::status;
use crate::pb;

/// A gRPC receipt handle: the broker's POP handle (`ckOffset popTime invisibleTime reviveQid
/// topicType brokerName queueId queueOffset`) plus the message's CommitLog offset.
pub(super) struct ReceiptHandle {
    fields: Vec<String>,
}

impl ReceiptHandle {
    pub(super) fn parse(text: &str) -> Result<ReceiptHandle, pb::Status> {
        let fields: Vec<String> = text.split(' ').map(str::to_string).collect();
        if fields.len() < 8 || fields[5].is_empty() {
            return Err(status(
                pb::Code::InvalidReceiptHandle,
                "the receipt handle is malformed",
            ));
        }
        Ok(ReceiptHandle { fields })
    }

    pub(super) fn broker(&self) -> &str {
        &self.fields[5]
    }

    pub(super) fn queue_id(&self) -> &str {
        &self.fields[6]
    }

    pub(super) fn queue_offset(&self) -> &str {
        &self.fields[7]
    }

    /// The CommitLog offset (absent from handles the broker made alone).
    pub(super) fn commit_log_offset(&self) -> Result<&str, pb::Status> {
        self.fields.get(8).map(String::as_str).ok_or_else(|| {
            status(
                pb::Code::InvalidReceiptHandle,
                "the receipt handle has no CommitLog offset",
            )
        })
    }

    /// When the broker handed the message out (ms), as the handle says.
    pub(super) fn pop_time(&self) -> Option<i64> {
        self.fields[1].parse().ok()
    }

    /// Whether the message asked for tracing (a `t` after the CommitLog offset).
    pub(super) fn traced(&self) -> bool {
        self.fields.get(9).is_some_and(|f| f == "t")
    }

    /// The broker's POP handle: the first eight fields (without the CommitLog offset).
    pub(super) fn broker_handle(&self) -> String {
        self.fields[..8].join(" ")
    }

    /// The handle after a ChangeInvisibleTime answered `pop_time` and `invisible`.
    pub(super) fn renewed(mut self, pop_time: &str, invisible: &str) -> String {
        self.fields[1] = pop_time.to_string();
        self.fields[2] = invisible.to_string();
        self.fields.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::ReceiptHandle;
    use crate::pb;

    #[test]
    fn a_handle_names_its_broker_queue_and_offsets() {
        let h = ReceiptHandle::parse("100 1700000000000 30000 0 0 broker-a 3 42 9000").expect("ok");
        assert_eq!(
            (h.broker(), h.queue_id(), h.queue_offset()),
            ("broker-a", "3", "42")
        );
        assert_eq!(h.commit_log_offset().expect("offset"), "9000");
        assert_eq!(
            h.broker_handle(),
            "100 1700000000000 30000 0 0 broker-a 3 42"
        );
        assert!(!h.traced());
        assert_eq!(h.pop_time(), Some(1_700_000_000_000));
        assert_eq!(
            h.renewed("1700000001000", "60000"),
            "100 1700000001000 60000 0 0 broker-a 3 42 9000"
        );
        let traced =
            ReceiptHandle::parse("100 1700000000000 30000 0 0 broker-a 3 42 9000 t").expect("ok");
        assert!(traced.traced());
        assert_eq!(
            traced.broker_handle(),
            "100 1700000000000 30000 0 0 broker-a 3 42"
        );
        assert_eq!(
            traced.renewed("1700000001000", "60000"),
            "100 1700000001000 60000 0 0 broker-a 3 42 9000 t"
        );
    }

    #[test]
    fn malformed_handles_are_refused() {
        for text in ["", "1 2 3 4 5 b 6", "1 2 3 4 5  6 7"] {
            let e = ReceiptHandle::parse(text).err().expect("refused");
            assert_eq!(e.code, pb::Code::InvalidReceiptHandle as i32, "{text:?}");
        }
        let broker_only = ReceiptHandle::parse("1 2 3 4 5 b 6 7").expect("ok");
        assert_eq!(
            broker_only.commit_log_offset().expect_err("none").code,
            pb::Code::InvalidReceiptHandle as i32
        );
    }
}
