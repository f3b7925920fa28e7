//! The RocketMQ Remoting protocol: frame codec, JSON and binary headers, request and
//! response codes, and an async client and server on tokio.
//!
//! # Frames
//!
//! Every request and response is one frame on a TCP connection (all integers big-endian):
//!
//! ```text
//! +-------------+----------------------------------+-----------------+------------+
//! | totalLen i32| (serializeType << 24) | headerLen| header          | body       |
//! |             | i32                              | headerLen bytes | the rest   |
//! +-------------+----------------------------------+-----------------+------------+
//! totalLen = 4 + headerLen + bodyLen
//! ```
//!
//! The header is either a JSON object (serialize type 0, what Java peers send by default)
//! or RocketMQ's compact binary layout (serialize type 1); see [`header`]. It carries the
//! request or response `code`, the sender's `language` and `version`, the `opaque`
//! request id that ties a response to its request, `flag` (bit 0 response, bit 1 oneway),
//! an optional `remark` and `extFields`, the string map that holds the request's and
//! response's own fields. The body is opaque bytes (messages, JSON documents, ...).
//!
//! # Limits
//!
//! Every byte on the wire is untrusted. A frame may be at most [`MAX_FRAME_LEN`]
//! (16 MiB, RocketMQ's own limit): the decoder rejects a larger length prefix as soon as
//! its 4 bytes arrive, so a peer cannot make us allocate or wait for gigabytes. Inside a
//! frame every length (header, remark, each `extFields` key and value) is checked against
//! the bytes that remain before anything is allocated, so garbage yields a
//! [`CodecError`], never a panic. A connection that sends a malformed frame cannot be
//! resynchronised and is closed; other connections are unaffected. The server bounds the
//! requests processed concurrently per connection (beyond it: SYSTEM_BUSY), the number of
//! connections, each request's size by its code, the bytes buffered per connection and in
//! all, half-sent frames and idle connections ([`limits`]); the client bounds the requests in
//! flight per connection.
//!
//! # Client and server
//!
//! [`RemotingServer`] dispatches requests by code to [`RequestProcessor`]s, each request
//! in its own task, and answers in the request's header encoding. [`RemotingClient`]
//! keeps one multiplexed connection per address, matches responses by opaque and
//! enforces per-request timeouts. Either side can send requests over a connection: a
//! processor may keep the [`ConnectionHandle`] of its request to push requests to the
//! client later.

pub mod api;
mod api_acl;
mod api_admin;
pub mod api_manage;
pub mod api_produce;
mod api_stats;
pub mod auth;
pub mod auth_map;
pub mod client;
pub mod codec;
pub mod codes;
pub mod command;
mod connection;
pub mod error;
pub mod header;
pub mod http;
pub mod limits;
pub mod local;
pub mod runtime_config;
pub mod server;
pub mod tls;
pub mod trust;

pub use auth::{AuthMetadata, AuthSettings, SessionCredentials};
pub use client::{ClientConfig, RemotingClient};
pub use codec::{decode, encode, MAX_FRAME_LEN};
pub use codes::{request_code, response_code};
pub use command::{
    next_opaque, LanguageCode, RemotingCommand, SerializeType, CURRENT_VERSION, ONEWAY_FLAG,
    RESPONSE_FLAG,
};
pub use error::{CodecError, HeaderError, Refusal, RemotingError};
pub use limits::ServerLimits;
pub use server::{
    processor_fn, BoxFuture, ConnectionHandle, RemotingServer, RemotingServerBuilder,
    RequestContext, RequestProcessor, ServerHandle,
};
