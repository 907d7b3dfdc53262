//! The bounds that keep one client, or one broker, from taking the proxy down or starving other
//! tenants: how many connections are served, how long a peer may keep the proxy waiting, and how
//! many bytes may sit in memory across all connections.
//!
//! Defaults follow Kafka's own where it has one (`connections.max.idle.ms`,
//! `sasl.server.max.receive.size`) and otherwise what a production team would choose; every
//! value is a flag (see `wire-guard --help`) and is documented in the README.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use kafka_protocol::messages::ApiKey;
use prometheus::IntGauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{Error, Side};

#[derive(Debug, Clone)]
pub struct Limits {
    /// Client connections served at once across all listeners; beyond it new connections are
    /// closed as soon as they are accepted. Each one also holds a broker connection, so keep
    /// twice this under the process's file-descriptor limit.
    pub max_connections: usize,
    /// Client connections served at once from one IP address.
    pub max_connections_per_ip: usize,
    /// A connection must send its first request within this; the broker connection is opened
    /// only then.
    pub first_request_timeout: Duration,
    /// A connection with nothing in flight that sends nothing for this long is closed
    /// (Kafka's `connections.max.idle.ms`).
    pub idle_timeout: Duration,
    /// Once a frame has started, all of it must arrive within this.
    pub frame_timeout: Duration,
    /// A connection that starts SASL must finish authenticating within this.
    pub auth_timeout: Duration,
    /// How long the broker may take to answer a request before the connection is closed; a
    /// JoinGroup, which the broker holds for the whole rebalance, gets [`Limits::join_timeout`].
    pub request_timeout: Duration,
    /// How long the broker may hold a JoinGroup (clients default `max.poll.interval.ms` to 300 s).
    pub join_timeout: Duration,
    /// Largest SaslHandshake or SaslAuthenticate frame (Kafka's `sasl.server.max.receive.size`).
    pub max_sasl_frame_bytes: usize,
    /// Bytes of frames held whole in memory at once, across all connections. Frames that
    /// stream through are not counted: they hold at most one copy buffer per connection.
    pub buffer_budget_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            max_connections_per_ip: 1_000,
            first_request_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(600),
            frame_timeout: Duration::from_secs(60),
            auth_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(120),
            join_timeout: Duration::from_secs(330),
            max_sasl_frame_bytes: 512 * 1024,
            buffer_budget_bytes: 256 * 1024 * 1024,
        }
    }
}

impl Limits {
    /// How long the broker may take to answer a request with this API key.
    pub fn answer_within(&self, api_key: i16) -> Duration {
        match ApiKey::try_from(api_key) {
            Ok(ApiKey::JoinGroup) => self.join_timeout.max(self.request_timeout),
            _ => self.request_timeout,
        }
    }
}

/// Why a new connection was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Total,
    PerIp,
}

impl Refusal {
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Total => "max_connections",
            Refusal::PerIp => "max_connections_per_ip",
        }
    }
}

/// Counts connections, globally and per client IP.
#[derive(Debug)]
pub struct Admission {
    total: Arc<Semaphore>,
    per_ip: Arc<Mutex<HashMap<IpAddr, usize>>>,
    max_per_ip: usize,
}

/// A connection's place; given back when dropped.
#[derive(Debug)]
pub struct Admitted {
    _total: OwnedSemaphorePermit,
    ip: IpAddr,
    per_ip: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut counts = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = counts.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

impl Admission {
    pub fn new(limits: &Limits) -> Self {
        Self {
            total: Arc::new(Semaphore::new(limits.max_connections)),
            per_ip: Arc::default(),
            max_per_ip: limits.max_connections_per_ip,
        }
    }

    /// Takes a place for a connection from `ip`, or says why there is none.
    pub fn admit(&self, ip: IpAddr) -> Result<Admitted, Refusal> {
        let total = self
            .total
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refusal::Total)?;
        let mut counts = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        let n = counts.entry(ip).or_insert(0);
        if *n >= self.max_per_ip {
            return Err(Refusal::PerIp);
        }
        *n += 1;
        Ok(Admitted {
            _total: total,
            ip,
            per_ip: self.per_ip.clone(),
        })
    }
}

/// The bytes all connections may hold in whole frames at once. A frame waits for room (the
/// connection is slowed down, not failed); one that could never fit is refused.
#[derive(Debug)]
pub struct Budget {
    bytes: Arc<Semaphore>,
    total: usize,
    /// The bytes reserved right now, for `/metrics`.
    in_use: IntGauge,
}

/// Room for one frame, given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    _permit: OwnedSemaphorePermit,
    len: i64,
    in_use: IntGauge,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.in_use.sub(self.len);
    }
}

impl Budget {
    pub fn new(total: usize, in_use: IntGauge) -> Self {
        let total = total.min(Semaphore::MAX_PERMITS);
        Self {
            bytes: Arc::new(Semaphore::new(total)),
            total,
            in_use,
        }
    }

    /// Room for a `len`-byte frame from `side`, held until the reservation is dropped.
    pub async fn reserve(&self, len: usize, side: Side) -> Result<Reservation, Error> {
        let permits = u32::try_from(len)
            .ok()
            .filter(|_| len <= self.total)
            .ok_or(Error::OverBudget {
                side,
                len,
                budget: self.total,
            })?;
        let permit = self
            .bytes
            .clone()
            .acquire_many_owned(permits)
            .await
            .map_err(|_| Error::OverBudget {
                side,
                len,
                budget: self.total,
            })?;
        let len = i64::from(permits);
        self.in_use.add(len);
        Ok(Reservation {
            _permit: permit,
            len,
            in_use: self.in_use.clone(),
        })
    }

    /// Bytes not reserved right now.
    pub fn available(&self) -> usize {
        self.bytes.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_capped_globally_and_per_ip_and_given_back() {
        let admission = Admission::new(&Limits {
            max_connections: 3,
            max_connections_per_ip: 2,
            ..Limits::default()
        });
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = admission.admit(a).unwrap();
        let _second = admission.admit(a).unwrap();
        assert_eq!(admission.admit(a).unwrap_err(), Refusal::PerIp);
        let _third = admission.admit(b).unwrap();
        assert_eq!(admission.admit(b).unwrap_err(), Refusal::Total);
        drop(first);
        assert!(
            admission.admit(a).is_ok(),
            "a closed connection frees its place"
        );
    }

    #[tokio::test]
    async fn budget_waits_for_room_and_refuses_what_can_never_fit() {
        let gauge = IntGauge::new("in_use", "test").unwrap();
        let budget = Arc::new(Budget::new(100, gauge.clone()));
        let held = budget.reserve(80, Side::Client).await.unwrap();
        assert_eq!(budget.available(), 20);
        assert_eq!(gauge.get(), 80);
        let waiting = {
            let budget = budget.clone();
            tokio::spawn(async move { budget.reserve(50, Side::Upstream).await.map(drop) })
        };
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "waits while the budget is spent");
        drop(held);
        waiting.await.unwrap().unwrap();
        assert_eq!(budget.available(), 100);
        assert_eq!(gauge.get(), 0);
        let err = budget.reserve(101, Side::Client).await.unwrap_err();
        assert!(matches!(err, Error::OverBudget { len: 101, .. }), "{err}");
    }

    #[test]
    fn join_group_may_take_the_whole_rebalance() {
        let limits = Limits::default();
        assert_eq!(
            limits.answer_within(ApiKey::JoinGroup as i16),
            limits.join_timeout
        );
        assert_eq!(
            limits.answer_within(ApiKey::Produce as i16),
            limits.request_timeout
        );
    }
}
