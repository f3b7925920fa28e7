//! `rocketraft dev` as a real process and what runs against it: kill -9 during sends, the admin
//! CLI (ACLs, consumer progress, the DLQ), its disk footprint, a flood of idle connections, TLS
//! only, and `rocketraft proxy` processes in front of it, one of two killed mid-run.
//!
//! Each test takes its module's turn first ([`support::file_turn`]): the modules' tests run one
//! module after another, as they did when each file was its own binary.

mod admin_acl;
mod admin_clients;
mod admin_consumer;
mod admin_groups;
mod admin_topic_stats;
mod dev_kill9;
mod flood;
mod footprint;
mod message_lookup;
mod message_trace;
mod metrics;
mod pop_copy_kill9;
mod proxy_cli;
mod proxy_failover;
mod retention;
mod tls;

#[path = "../support/mod.rs"]
mod support;

#[path = "../../broker/tests/support/pop_copy.rs"]
mod pop_copy;
