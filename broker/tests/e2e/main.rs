//! A real broker (and NameServer) on loopback, driven through the Remoting client API: send,
//! pull, routes and long polling, POP consumption (and peek / notification), delayed and timed
//! messages, transactions, POP and transaction state copied forward under a full disk, and
//! ACL 2.0 on the Remoting port, the broker's metrics and runtime statistics, and the
//! management codes.

mod auth;
mod broker_e2e;
mod disk_full;
mod lite;
mod manage;
mod metrics;
mod peek;
mod pop;
mod pop_concurrent;
mod pop_lite;
mod retention_copy;
mod timer;
mod topic_stats;
mod transaction;

#[path = "../support/pop_copy.rs"]
mod pop_copy;
