//! Sequence translation for idempotent producers whose batches lose records on the way.
//!
//! An idempotent producer numbers the records of each partition; the broker accepts a batch
//! only if its base sequence follows the last one it stored. When the proxy dead-letters K of
//! a batch's N records, the broker receives N−K, so every later batch from that producer must
//! have its base sequence moved back by the records removed so far, or the broker answers
//! `OUT_OF_ORDER_SEQUENCE_NUMBER`. A retried batch (same producer, epoch and base sequence) must
//! map to the same upstream sequence so the broker's duplicate detection still works, and its
//! records must not be dead-lettered twice.
//!
//! State exists only for producer-partitions that have had records removed; it is shared by
//! every connection (a producer reconnects and retries on a new one) and dropped when idle.
//! It lives in this process: a producer whose batches are split must keep reaching the
//! partition through the same wire-guard instance, and after a restart its next batch is
//! answered `OUT_OF_ORDER_SEQUENCE_NUMBER`, which current clients recover from by bumping their
//! epoch (KIP-360).

use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
    time::{Duration, Instant},
};

/// How many recent batches per producer-partition are remembered for retries: the broker
/// itself keeps five, and a client has at most five in flight.
const RECENT: usize = 8;
/// Producer-partitions idle this long are forgotten.
const IDLE: Duration = Duration::from_secs(3600);
/// Bound on producer-partitions tracked; the idlest go first.
const MAX_TRACKED: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    pub producer_id: i64,
    pub topic: String,
    pub partition: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    client_base: i32,
    records: i32,
    upstream_base: i32,
}

#[derive(Debug)]
struct State {
    epoch: i16,
    next_client: i32,
    next_upstream: i32,
    recent: VecDeque<Seen>,
    used: Instant,
}

/// Where a batch goes upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Translation {
    /// The base sequence to send.
    pub upstream_base: i32,
    /// The proxy has handled this batch before (a retry): its dead letters are already written.
    pub retry: bool,
}

#[derive(Debug, Default)]
pub struct Sequences(Mutex<HashMap<Key, State>>);

impl Sequences {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<Key, State>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Translates a batch of `records` records starting at `client_base`, of which `kept`
    /// go upstream, and records it.
    pub fn translate(
        &self,
        key: &Key,
        epoch: i16,
        client_base: i32,
        records: i32,
        kept: i32,
    ) -> Translation {
        let mut map = self.map();
        let now = Instant::now();
        let fresh = |base| State {
            epoch,
            next_client: base,
            next_upstream: base,
            recent: VecDeque::new(),
            used: now,
        };
        let identity = Translation {
            upstream_base: client_base,
            retry: false,
        };
        if map.get(key).is_none_or(|s| s.epoch != epoch) {
            // A new epoch restarts sequences at zero: nothing carries over.
            if records == kept {
                map.remove(key);
                return identity;
            }
            if map.len() >= MAX_TRACKED {
                evict(&mut map, now);
            }
            map.insert(key.clone(), fresh(client_base));
        }
        let Some(state) = map.get_mut(key) else {
            return identity;
        };
        state.used = now;
        if let Some(seen) = state
            .recent
            .iter()
            .find(|s| s.client_base == client_base && s.records == records)
        {
            return Translation {
                upstream_base: seen.upstream_base,
                retry: true,
            };
        }
        let upstream_base = if client_base == state.next_client {
            let up = state.next_upstream;
            state.next_client = add(client_base, i64::from(records));
            state.next_upstream = add(up, i64::from(kept));
            if state.recent.len() == RECENT {
                state.recent.pop_front();
            }
            state.recent.push_back(Seen {
                client_base,
                records,
                upstream_base: up,
            });
            up
        } else {
            // Not the batch expected next: keep the current shift and let the broker judge it.
            add(
                client_base,
                i64::from(state.next_upstream) - i64::from(state.next_client),
            )
        };
        Translation {
            upstream_base,
            retry: false,
        }
    }

    /// Whether the proxy has already handled this batch (the producer is retrying it), so its
    /// dead letters are written.
    pub fn is_retry(&self, key: &Key, epoch: i16, client_base: i32, records: i32) -> bool {
        self.map().get(key).is_some_and(|s| {
            s.epoch == epoch
                && s.recent
                    .iter()
                    .any(|seen| seen.client_base == client_base && seen.records == records)
        })
    }

    /// Producer-partitions currently translated, for tests and metrics.
    pub fn tracked(&self) -> usize {
        self.map().len()
    }
}

/// `seq + n` the way Kafka counts: sequences run from 0 to `i32::MAX` and then start at 0.
fn add(seq: i32, n: i64) -> i32 {
    const SPAN: i64 = i32::MAX as i64 + 1;
    (i64::from(seq) + n).rem_euclid(SPAN) as i32
}

fn evict(map: &mut HashMap<Key, State>, now: Instant) {
    map.retain(|_, s| now.duration_since(s.used) < IDLE);
    if map.len() >= MAX_TRACKED
        && let Some(oldest) = map
            .iter()
            .min_by_key(|(_, s)| s.used)
            .map(|(k, _)| k.clone())
    {
        map.remove(&oldest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Key {
        Key {
            producer_id: 7,
            topic: "t".into(),
            partition: 0,
        }
    }

    #[test]
    fn untouched_producers_are_not_tracked() {
        let s = Sequences::default();
        assert_eq!(s.translate(&key(), 0, 0, 10, 10).upstream_base, 0);
        assert_eq!(s.translate(&key(), 0, 10, 10, 10).upstream_base, 10);
        assert_eq!(s.tracked(), 0);
    }

    #[test]
    fn later_batches_shift_back_by_the_records_removed() {
        let s = Sequences::default();
        assert_eq!(s.translate(&key(), 0, 0, 10, 10).upstream_base, 0);
        // Batch 10..20 loses 3 records: it goes up as 10..17.
        assert_eq!(s.translate(&key(), 0, 10, 10, 7).upstream_base, 10);
        assert_eq!(s.translate(&key(), 0, 20, 5, 5).upstream_base, 17);
        assert_eq!(s.translate(&key(), 0, 25, 5, 0).upstream_base, 22);
        assert_eq!(s.translate(&key(), 0, 30, 5, 5).upstream_base, 22);
    }

    #[test]
    fn a_retry_maps_to_the_same_upstream_sequence_and_is_marked() {
        let s = Sequences::default();
        let first = s.translate(&key(), 0, 0, 10, 8);
        s.translate(&key(), 0, 10, 10, 10);
        let again = s.translate(&key(), 0, 0, 10, 8);
        assert_eq!(again.upstream_base, first.upstream_base);
        assert!(again.retry && !first.retry);
        assert_eq!(s.translate(&key(), 0, 20, 1, 1).upstream_base, 18);
    }

    #[test]
    fn a_new_epoch_starts_over() {
        let s = Sequences::default();
        s.translate(&key(), 0, 0, 10, 5);
        assert_eq!(s.translate(&key(), 1, 0, 10, 10).upstream_base, 0);
        assert_eq!(s.tracked(), 0);
    }

    #[test]
    fn sequences_wrap_as_kafka_wraps_them() {
        let s = Sequences::default();
        s.translate(&key(), 0, i32::MAX - 4, 10, 8);
        // The client's next batch starts at 5 (after MAX-4..=MAX and 0..=4); upstream's at 3.
        assert_eq!(s.translate(&key(), 0, 5, 1, 1).upstream_base, 3);
    }
}
