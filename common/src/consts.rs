//! Well-known RocketMQ constants: message property names, system flags and permissions.
//!
//! Names and values are those of `org.apache.rocketmq.common.message.MessageConst`,
//! `MessageSysFlag` and `PermName`: clients depend on them.

/// Message property names (`MessageConst.PROPERTY_*`).
pub mod property {
    pub const KEYS: &str = "KEYS";
    pub const TAGS: &str = "TAGS";
    pub const WAIT_STORE_MSG_OK: &str = "WAIT";
    pub const DELAY_TIME_LEVEL: &str = "DELAY";
    pub const RETRY_TOPIC: &str = "RETRY_TOPIC";
    pub const REAL_TOPIC: &str = "REAL_TOPIC";
    pub const REAL_QUEUE_ID: &str = "REAL_QID";
    pub const TRANSACTION_PREPARED: &str = "TRAN_MSG";
    pub const PRODUCER_GROUP: &str = "PGROUP";
    pub const MIN_OFFSET: &str = "MIN_OFFSET";
    pub const MAX_OFFSET: &str = "MAX_OFFSET";
    pub const BUYER_ID: &str = "BUYER_ID";
    pub const ORIGIN_MESSAGE_ID: &str = "ORIGIN_MESSAGE_ID";
    pub const TRANSFER_FLAG: &str = "TRANSFER_FLAG";
    pub const CORRECTION_FLAG: &str = "CORRECTION_FLAG";
    pub const MQ2_FLAG: &str = "MQ2_FLAG";
    pub const RECONSUME_TIME: &str = "RECONSUME_TIME";
    pub const MSG_REGION: &str = "MSG_REGION";
    pub const TRACE_SWITCH: &str = "TRACE_ON";
    /// The client-generated message id.
    pub const UNIQ_CLIENT_MESSAGE_ID_KEYIDX: &str = "UNIQ_KEY";
    pub const MAX_RECONSUME_TIMES: &str = "MAX_RECONSUME_TIMES";
    pub const CONSUME_START_TIMESTAMP: &str = "CONSUME_START_TIME";
    pub const SHARDING_KEY: &str = "__SHARDINGKEY";
    pub const TIMER_DELIVER_MS: &str = "TIMER_DELIVER_MS";
    pub const TIMER_DELAY_SEC: &str = "TIMER_DELAY_SEC";
    pub const TIMER_DELAY_MS: &str = "TIMER_DELAY_MS";
    pub const POP_CK: &str = "POP_CK";
    pub const FIRST_POP_TIME: &str = "1ST_POP_TIME";
    pub const CLUSTER: &str = "CLUSTER";
    /// Request-reply (RocketMQ's `PROPERTY_MESSAGE_REPLY_TO_CLIENT`, `PROPERTY_CORRELATION_ID`,
    /// `PROPERTY_MESSAGE_TYPE`, `PROPERTY_PUSH_REPLY_TIME`).
    pub const REPLY_TO_CLIENT: &str = "REPLY_TO_CLIENT";
    pub const CORRELATION_ID: &str = "CORRELATION_ID";
    pub const MSG_TYPE: &str = "MSG_TYPE";
    pub const PUSH_REPLY_TIME: &str = "PUSH_REPLY_TIME";
    /// Whole-record CRC32 appended by the store (RocketMQ's `PROPERTY_CRC32`).
    pub const CRC32: &str = "__CRC32#";
}

/// `MessageSysFlag` bits.
pub mod sys_flag {
    pub const COMPRESSED: i32 = 0x1;
    pub const MULTI_TAGS: i32 = 0x1 << 1;
    pub const TRANSACTION_NOT_TYPE: i32 = 0;
    pub const TRANSACTION_PREPARED_TYPE: i32 = 0x1 << 2;
    pub const TRANSACTION_COMMIT_TYPE: i32 = 0x2 << 2;
    pub const TRANSACTION_ROLLBACK_TYPE: i32 = 0x3 << 2;
    pub const BORNHOST_V6: i32 = 0x1 << 4;
    pub const STOREHOST_V6: i32 = 0x1 << 5;
    pub const NEED_UNWRAP: i32 = 0x1 << 6;
    pub const INNER_BATCH: i32 = 0x1 << 7;

    /// The transaction type bits of a sys flag.
    pub fn transaction_value(flag: i32) -> i32 {
        flag & TRANSACTION_ROLLBACK_TYPE
    }

    /// `flag` with its transaction bits replaced by `kind` (`MessageSysFlag.resetTransactionValue`).
    pub fn reset_transaction_value(flag: i32, kind: i32) -> i32 {
        (flag & !TRANSACTION_ROLLBACK_TYPE) | kind
    }
}

/// `PullSysFlag` bits sent by consumers in PULL_MESSAGE.
pub mod pull_sys_flag {
    pub const COMMIT_OFFSET: i32 = 0x1;
    pub const SUSPEND: i32 = 0x1 << 1;
    pub const SUBSCRIPTION: i32 = 0x1 << 2;
    pub const CLASS_FILTER: i32 = 0x1 << 3;
    pub const LITE_PULL: i32 = 0x1 << 4;
}

/// `PermName`: topic and broker permissions.
pub mod perm {
    pub const PRIORITY: i32 = 0x1 << 3;
    pub const READ: i32 = 0x1 << 2;
    pub const WRITE: i32 = 0x1 << 1;
    pub const INHERIT: i32 = 0x1;

    pub fn is_readable(perm: i32) -> bool {
        perm & READ == READ
    }
    pub fn is_writeable(perm: i32) -> bool {
        perm & WRITE == WRITE
    }
}

/// The cluster every broker belongs to unless configured otherwise.
pub const DEFAULT_CLUSTER: &str = "DefaultCluster";
/// The topic whose route a producer asks for when auto topic creation is on (`TopicValidator.AUTO_CREATE_TOPIC_KEY_TOPIC`).
pub const AUTO_CREATE_TOPIC_KEY_TOPIC: &str = "TBW102";
/// The system topic that every broker serves, named after its cluster (`SELF_TEST_TOPIC`).
pub const SELF_TEST_TOPIC: &str = "SELF_TEST_TOPIC";
/// Retry topic prefix (`MixAll.RETRY_GROUP_TOPIC_PREFIX`).
pub const RETRY_GROUP_TOPIC_PREFIX: &str = "%RETRY%";
/// Dead-letter topic prefix (`MixAll.DLQ_GROUP_TOPIC_PREFIX`).
pub const DLQ_GROUP_TOPIC_PREFIX: &str = "%DLQ%";
/// The broker id of a master (`MixAll.MASTER_ID`).
pub const MASTER_ID: i64 = 0;
/// The largest message body accepted by default (`maxMessageSize`, 4 MiB).
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 4 * 1024 * 1024;

/// System topics several crates name.
pub mod system_topic {
    /// Where a broker keeps transactional half messages until they are decided
    /// (`TopicValidator.RMQ_SYS_TRANS_HALF_TOPIC`).
    pub const TRANS_HALF: &str = "RMQ_SYS_TRANS_HALF_TOPIC";
}
