//! Error types of the remoting crate.

use std::io;

use thiserror::Error;

/// A frame or header could not be encoded or decoded.
///
/// Decoding errors mean the peer sent bytes that are not a valid Remoting frame; the
/// connection they arrived on cannot be resynchronised and must be closed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CodecError {
    /// The frame's total length is larger than [`crate::MAX_FRAME_LEN`].
    #[error("frame length {len} exceeds the maximum of {max} bytes")]
    FrameTooLarge { len: usize, max: usize },
    /// The frame's total length is negative or too small to hold the header-length word.
    #[error("invalid frame length {0}: it must be at least 4")]
    InvalidFrameLength(i32),
    /// The header length word points past the end of the frame.
    #[error("header length {header_len} does not fit in a frame of {frame_len} bytes")]
    HeaderLengthOutOfRange { header_len: usize, frame_len: usize },
    /// The encoded header does not fit in the 24 bits the frame gives its length.
    #[error("encoded header of {0} bytes is too large")]
    HeaderTooLarge(usize),
    /// The serialize-type byte is neither 0 (JSON) nor 1 (ROCKETMQ).
    #[error("unknown serialize type {0}")]
    UnknownSerializeType(u8),
    /// The JSON header could not be parsed (or, when encoding, produced).
    #[error("malformed JSON header: {0}")]
    JsonHeader(String),
    /// The binary (ROCKETMQ) header is truncated or inconsistent.
    #[error("malformed binary header: {0}")]
    BinaryHeader(String),
    /// A value does not fit in the field width of the binary header (e.g. a request code
    /// above 32767, such as POP_MESSAGE, cannot travel in a ROCKETMQ header).
    #[error("field `{field}` = {value} does not fit in the binary (ROCKETMQ) header")]
    FieldOutOfRange { field: &'static str, value: i64 },
}

/// A request header field (an `extFields` entry) is missing or has the wrong form.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HeaderError {
    #[error("the request header field `{field}` is missing")]
    Missing { field: String },
    #[error("the request header field `{field}` has an invalid value `{value}`")]
    Invalid { field: String, value: String },
}

/// Errors of the async client and server.
#[derive(Debug, Error)]
pub enum RemotingError {
    /// The TCP connection could not be established.
    #[error("failed to connect to {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: io::Error,
    },
    /// No response arrived within the request's timeout.
    #[error("request to {addr} timed out after {timeout_ms} ms")]
    Timeout { addr: String, timeout_ms: u64 },
    /// The connection closed before the response arrived (or was already closed).
    #[error("connection to {addr} closed")]
    ConnectionClosed { addr: String },
    /// The server answered this plaintext connection with TLS: it takes TLS only.
    #[error(
        "{addr} answered in TLS: the server takes TLS only ([tls] mode = \"enforcing\"); \
         connect over TLS (--tls, or --tls-trust-cert with the CA of its certificate)"
    )]
    PeerSpeaksTls { addr: String },
    /// The command could not be encoded (too large, field out of range, ...).
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// Any other I/O failure (binding a listener, for instance).
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// The per-connection in-flight limit stayed exhausted for the whole timeout.
    #[error("too many requests in flight to {addr} (limit {limit})")]
    TooManyInFlight { addr: String, limit: usize },
    /// The connection's outbound queue is full (non-blocking sends only).
    #[error("outbound queue to {addr} is full")]
    SendQueueFull { addr: String },
    /// The cluster-trust handshake with the server failed ([`crate::trust`]).
    #[error("cannot authenticate with {addr}: {why}")]
    Untrusted {
        addr: String,
        why: crate::trust::HandshakeError,
    },
    /// A request with the same opaque is already waiting for its response.
    #[error("a request with opaque {opaque} is already in flight to {addr}")]
    DuplicateOpaque { addr: String, opaque: i32 },
}

/// A request a server will not serve: the Remoting response code and a readable remark.
///
/// The one refusal type of the broker, the NameServer and the controller: every handler answers
/// `Result<_, Refusal>`, and the dispatcher turns a refusal into a response with
/// [`Refusal::response_to`]. A client sees the same pair as [`crate::api::ApiError::Refused`].
#[derive(Debug, Clone, PartialEq, Eq, Error, serde::Serialize, serde::Deserialize)]
#[error("code {code}: {remark}")]
pub struct Refusal {
    /// The Remoting response code (`ResponseCode` in RocketMQ).
    pub code: i32,
    /// The response's remark: why, in words an operator can act on.
    pub remark: String,
}

impl Refusal {
    pub fn new(code: i32, remark: impl Into<String>) -> Self {
        Self {
            code,
            remark: remark.into(),
        }
    }

    /// A SYSTEM_ERROR refusal: the server failed, not the request.
    pub fn system_error(remark: impl Into<String>) -> Self {
        Self::new(crate::codes::response_code::SYSTEM_ERROR, remark)
    }

    /// The response that carries this refusal to `request`'s sender.
    pub fn response_to(self, request: &crate::RemotingCommand) -> crate::RemotingCommand {
        request.response_to(self.code, self.remark)
    }
}

impl From<HeaderError> for Refusal {
    /// RocketMQ answers a header that fails to decode with SYSTEM_ERROR and the reason.
    fn from(e: HeaderError) -> Self {
        Self::system_error(e.to_string())
    }
}
