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

/// Correlation ids of `acks=0` Produce requests a broker might still answer.
#[derive(Debug, Default)]
pub struct Acks0(std::collections::VecDeque<i32>);

impl Acks0 {
    /// Bounded: an id this old can no longer be answered before a later request was.
    pub fn push(&mut self, correlation_id: i32) {
        if self.0.len() == MAX_IN_FLIGHT {
            self.0.pop_front();
        }
        self.0.push_back(correlation_id);
    }

    /// Whether `correlation_id` answers an `acks=0` request; it and older ones are forgotten.
    pub fn take(&mut self, correlation_id: i32) -> bool {
        match self.0.iter().position(|&c| c == correlation_id) {
            Some(at) => {
                tracing::debug!(
                    correlation_id,
                    "dropping the broker's answer to an acks=0 produce"
                );
                self.0.drain(..=at);
                true
            }
            None => false,
        }
    }

    pub fn clear(&mut self) {
        self.0.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_to_an_acks0_request_is_recognised_once_with_everything_older() {
        let mut acks0 = Acks0::default();
        for id in [3, 5, 8] {
            acks0.push(id);
        }
        assert!(!acks0.take(4));
        assert!(acks0.take(5));
        assert!(
            !acks0.take(3),
            "older ids are forgotten once a later one is answered"
        );
        assert!(acks0.take(8));
        assert!(!acks0.take(8));
    }

    #[test]
    fn bounded() {
        let mut acks0 = Acks0::default();
        for id in 0..(MAX_IN_FLIGHT as i32 + 10) {
            acks0.push(id);
        }
        assert!(!acks0.take(0));
        assert!(acks0.take(MAX_IN_FLIGHT as i32 + 9));
    }
}
