//! The per-connection in-flight queue.
//!
//! Kafka answers the requests of one connection in the order they were sent, so the table of
//! `correlation_id -> (api_key, api_version)` is a FIFO queue: the request side pushes an entry
//! before forwarding a request, the response side pops the oldest entry for each response and
//! checks the correlation id matches. `acks=0` Produce requests get no response from Kafka;
//! they are queued as [`Reply::NoneExpected`] so that a broker which answers them anyway (Tansu
//! does) has its answer dropped instead of being taken for corruption. A reply the proxy makes
//! itself is queued in the same order, so it is never sent ahead of an earlier request's
//! response. The queue is bounded: a client that sends faster than responses drain is slowed
//! down, not buffered without limit.
//!
//! A correlation id may be in flight only once per connection ([`Outstanding`]): a client that
//! reuses one could otherwise have a broker's answer to one request (say, Tansu's answer to an
//! `acks=0` Produce) decoded as the answer to another.

use std::{collections::HashSet, sync::Mutex, time::Instant};

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
    /// A Produce whose other partitions the proxy answered: the broker's response is merged
    /// with these before it goes to the client.
    Merge(Vec<crate::stage::LocalPartition>),
    /// A Fetch under a policy that protects fields: the broker's response is read whole and
    /// its protected fields revealed or masked for the reader, under the policy in force when
    /// the request was read.
    Reveal(std::sync::Arc<shared::policy::PolicySet>),
}

/// The correlation ids of one connection that still await an answer, or that a broker might
/// still answer (`acks=0`). Shared by the request loop, which adds, and the response loop,
/// which removes; bounded by the in-flight queue and [`Acks0`].
#[derive(Debug, Default)]
pub struct Outstanding(Mutex<HashSet<i32>>);

impl Outstanding {
    fn ids(&self) -> std::sync::MutexGuard<'_, HashSet<i32>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records `correlation_id` as sent; false if it is already outstanding.
    pub fn insert(&self, correlation_id: i32) -> bool {
        self.ids().insert(correlation_id)
    }

    /// Whether nothing awaits an answer.
    pub fn is_empty(&self) -> bool {
        self.ids().is_empty()
    }

    /// Forgets answered (or no longer answerable) ids.
    pub fn remove(&self, ids: impl IntoIterator<Item = i32>) {
        let mut set = self.ids();
        for id in ids {
            set.remove(&id);
        }
    }
}

/// Correlation ids of `acks=0` Produce requests a broker might still answer. They stay
/// [`Outstanding`] until they are answered or can no longer be.
#[derive(Debug, Default)]
pub struct Acks0(std::collections::VecDeque<i32>);

impl Acks0 {
    /// Bounded: an id this old can no longer be answered before a later request was.
    pub fn push(&mut self, correlation_id: i32, outstanding: &Outstanding) {
        if self.0.len() == MAX_IN_FLIGHT {
            outstanding.remove(self.0.pop_front());
        }
        self.0.push_back(correlation_id);
    }

    /// Whether `correlation_id` answers an `acks=0` request; it and older ones are forgotten.
    pub fn take(&mut self, correlation_id: i32, outstanding: &Outstanding) -> bool {
        match self.0.iter().position(|&c| c == correlation_id) {
            Some(at) => {
                tracing::debug!(
                    correlation_id,
                    "dropping the broker's answer to an acks=0 produce"
                );
                outstanding.remove(self.0.drain(..=at));
                true
            }
            None => false,
        }
    }

    /// A later request was answered: no earlier `acks=0` request will be.
    pub fn clear(&mut self, outstanding: &Outstanding) {
        outstanding.remove(self.0.drain(..));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(ids: &[i32]) -> (Acks0, Outstanding) {
        let (mut acks0, outstanding) = (Acks0::default(), Outstanding::default());
        for &id in ids {
            assert!(outstanding.insert(id));
            acks0.push(id, &outstanding);
        }
        (acks0, outstanding)
    }

    #[test]
    fn an_answer_to_an_acks0_request_is_recognised_once_with_everything_older() {
        let (mut acks0, outstanding) = sent(&[3, 5, 8]);
        assert!(!acks0.take(4, &outstanding));
        assert!(acks0.take(5, &outstanding));
        assert!(
            !acks0.take(3, &outstanding),
            "older ids are forgotten once a later one is answered"
        );
        assert!(outstanding.insert(3) && outstanding.insert(5));
        assert!(!outstanding.insert(8), "8 may still be answered");
        assert!(acks0.take(8, &outstanding));
        assert!(!acks0.take(8, &outstanding));
    }

    #[test]
    fn an_outstanding_id_cannot_be_sent_again_until_answered() {
        let (mut acks0, outstanding) = sent(&[7]);
        assert!(!outstanding.insert(7));
        acks0.clear(&outstanding);
        assert!(outstanding.insert(7));
        assert!(!outstanding.insert(7));
        outstanding.remove([7]);
        assert!(outstanding.insert(7));
    }

    #[test]
    fn bounded() {
        let ids: Vec<i32> = (0..(MAX_IN_FLIGHT as i32 + 10)).collect();
        let (mut acks0, outstanding) = sent(&ids);
        assert!(!acks0.take(0, &outstanding));
        assert!(
            outstanding.insert(0),
            "evicted ids are no longer outstanding"
        );
        assert!(acks0.take(MAX_IN_FLIGHT as i32 + 9, &outstanding));
    }
}
