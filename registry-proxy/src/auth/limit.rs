//! How many signature verifications each client may cause.
//!
//! A token neither token cache knows costs a signature verification, and anyone can send
//! one: a stream of freshly forged tokens would otherwise buy CPU time at will. Each client
//! address gets a token bucket (`verify_rate_per_ip` per second, up to `verify_burst` at
//! once); a request beyond it is answered 429 before any signature work. IPv6 clients are
//! counted per /64, the block one host usually holds. Tokens already validated, and forged
//! tokens already refused, never reach the limiter.

use std::{collections::HashMap, net::IpAddr, sync::Mutex, time::Instant};

/// Buckets kept at most; at the bound, full buckets (clients that have been quiet) go first.
const MAX_CLIENTS: usize = 65_536;

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Per-client token buckets.
pub struct VerifyLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

/// The address a client is counted under: an IPv6 address by its /64 network.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
}

impl VerifyLimiter {
    /// `None` when `rate` is 0 (no limit).
    pub fn new(rate: u32, burst: u32) -> Option<Self> {
        (rate > 0).then(|| Self {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        })
    }

    /// Takes one verification from `ip`'s bucket; `false` when it is empty.
    pub fn allow(&self, ip: IpAddr) -> bool {
        let key = client_key(ip);
        let now = Instant::now();
        let (rate, burst) = (self.rate, self.burst);
        let refilled =
            |b: &Bucket| (b.tokens + rate * now.duration_since(b.at).as_secs_f64()).min(burst);
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_CLIENTS && !buckets.contains_key(&key) {
            buckets.retain(|_, b| refilled(b) < burst);
            if buckets.len() >= MAX_CLIENTS {
                buckets.clear();
            }
        }
        let bucket = buckets.entry(key).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        bucket.tokens = refilled(bucket);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let limiter = VerifyLimiter::new(1, 3).unwrap();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!((0..5).filter(|_| limiter.allow(a)).count(), 3);
        assert!(limiter.allow(b), "another client has its own bucket");
        assert!(VerifyLimiter::new(0, 3).is_none(), "0 disables the limit");
    }

    #[test]
    fn ipv6_clients_count_per_64() {
        let limiter = VerifyLimiter::new(1, 2).unwrap();
        let one: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let same_64: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other_64: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert!(limiter.allow(one) && limiter.allow(same_64));
        assert!(!limiter.allow(one), "one /64 shares a bucket");
        assert!(limiter.allow(other_64));
    }
}
