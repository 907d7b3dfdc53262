//! wire-guard's error type: every variant says which side of the proxy the fault came from.

use std::{fmt, io};

use kafka_protocol::messages::ApiKey;

/// Which peer a frame or fault belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Upstream,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Client => "client",
            Side::Upstream => "upstream",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The length prefix announced more than `max_frame_bytes`; nothing was allocated for it.
    #[error("{side} announced a {len}-byte frame, over the {max}-byte limit")]
    FrameTooLarge { side: Side, len: i64, max: usize },
    /// A negative length prefix can only be corruption.
    #[error("{side} sent a negative frame length ({len})")]
    NegativeLength { side: Side, len: i32 },
    /// The peer closed the connection part-way through a frame.
    #[error("{side} closed the connection mid-frame ({got} of {expected} bytes received)")]
    Truncated {
        side: Side,
        got: usize,
        expected: usize,
    },
    /// A frame too short to hold the header its position requires.
    #[error("{side} sent a {len}-byte frame, too short for a {what}")]
    ShortFrame {
        side: Side,
        len: usize,
        what: &'static str,
    },
    /// A frame whose header or body does not decode as the API and version it claims.
    #[error("{side} sent a malformed {api:?} v{version}: {reason}")]
    Malformed {
        side: Side,
        api: ApiKey,
        version: i16,
        reason: String,
    },
    /// The client used a version of an API whose responses the proxy must rewrite but cannot
    /// decode; the proxy never advertised it, and forwarding it could leak broker addresses.
    #[error("client sent {api:?} v{version}, a version the proxy did not advertise ({supported})")]
    UnadvertisedVersion {
        api: ApiKey,
        version: i16,
        supported: String,
    },
    /// A peer kept the proxy waiting past one of its [`crate::limits::Limits`].
    #[error("{side} {what} within {after:?}")]
    Timeout {
        side: Side,
        what: String,
        after: std::time::Duration,
    },
    /// A connection with nothing in flight stayed silent past the idle timeout: an ordinary end.
    #[error("client idle for {0:?}")]
    Idle(std::time::Duration),
    /// A frame larger than the whole buffer budget can never be held.
    #[error(
        "{side} sent a {len}-byte frame that must be held whole, over the {budget}-byte buffer budget"
    )]
    OverBudget {
        side: Side,
        len: usize,
        budget: usize,
    },
    /// A correlation id may be in flight once per connection; reusing one would let a response
    /// be decoded as the answer to a different request.
    #[error("client reused correlation id {correlation_id} while a request with it was in flight")]
    DuplicateCorrelation { correlation_id: i32 },
    /// Kafka answers requests in order; anything else is a broken upstream.
    #[error(
        "upstream answered correlation id {got} while {expected} was the oldest request in flight"
    )]
    CorrelationMismatch { expected: i32, got: i32 },
    #[error("upstream sent a response with no request in flight")]
    Unsolicited,
    /// The broker closed an idle connection: an ordinary end.
    #[error("upstream closed the connection")]
    UpstreamClosed,
    /// The broker closed with requests unanswered, typically because it refused the oldest.
    #[error(
        "upstream closed the connection with {in_flight} request(s) unanswered; the oldest was api key {api_key} v{api_version}"
    )]
    UpstreamDropped {
        in_flight: usize,
        api_key: i16,
        api_version: i16,
    },
    #[error("cannot connect to upstream {addr}: {reason}")]
    UpstreamConnect { addr: String, reason: String },
    /// A per-broker listener was reached for a node the proxy has no address for.
    #[error("no upstream address known for broker node {0}")]
    UnknownNode(i32),
    /// A broker whose node id cannot be given a proxy port; its address must not reach clients.
    #[error("broker node {node} has no proxy port: {reason}")]
    PortMapping { node: i32, reason: String },
    #[error("TLS handshake with client failed: {0}")]
    ClientTls(#[source] io::Error),
    #[error("I/O with {side}: {source}")]
    Io {
        side: Side,
        #[source]
        source: io::Error,
    },
    /// A bug: serving the connection panicked. Only that connection ends.
    #[error("internal error while serving the connection: {0}")]
    Panic(String),
    /// A configuration value that cannot work; raised before anything is started.
    #[error("configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Shared(#[from] shared::Error),
}

impl Error {
    pub(crate) fn io(side: Side) -> impl FnOnce(io::Error) -> Error {
        move |source| Error::Io { side, source }
    }

    /// Whether this is an ordinary disconnect rather than something an operator should see.
    pub fn is_disconnect(&self) -> bool {
        match self {
            Error::UpstreamClosed | Error::Idle(_) => true,
            Error::Io { source, .. } => matches!(
                source.kind(),
                io::ErrorKind::BrokenPipe
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::UnexpectedEof
            ),
            _ => false,
        }
    }
}

/// An API key as the protocol crate names it, or its number when this build does not know it.
pub(crate) fn api_name(key: i16) -> String {
    ApiKey::try_from(key).map_or_else(|()| format!("api key {key}"), |k| format!("{k:?}"))
}
