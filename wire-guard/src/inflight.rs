//! The per-connection in-flight queue.
//!
//! Kafka answers the requests of one connection in the order they were sent, so the table of
//! `correlation_id -> (api_key, api_version)` is a FIFO queue: the request side pushes an entry
//! before forwarding a request, the response side pops the oldest entry for each response and
//! checks the correlation id matches. `acks=0` Produce requests get no response from Kafka;
//! they are queued as [`Reply::NoneExpected`] so that a broker which answers them anyway (Tansu
//! does) has its answer dropped instead of being taken for corruption. A reply the proxy makes itself is queued in the same order, so it is never sent
//! ahead of an earlier request's response. The queue is bounded: a client that sends faster
//! than responses drain is slowed down, not buffered without limit.

use std::time::Instant;

use crate::frame::Frame;

/// How many requests one connection may have awaiting a response.
pub const MAX_IN_FLIGHT: usize = 1024;

/// A request awaiting its response.
#[derive(Debug)]
pub struct InFlight {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
    /// When the request was forwarded, for the upstream latency histogram.
    pub sent_at: Instant,
    pub reply: Reply,
}

/// Where the response comes from.
#[derive(Debug)]
pub enum Reply {
    /// The upstream broker answers.
    Upstream,
    /// The proxy answers itself with this frame.
    Local(Frame),
    /// An `acks=0` Produce: the client expects nothing, and anything the broker sends is dropped.
    NoneExpected,
}
