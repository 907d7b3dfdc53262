//! Bounded caches: schema-by-id responses, and which subjects use an id.
//!
//! A schema id names immutable content, so its response can be served without asking the
//! registry; authorization still runs on every request. The id -> subjects mapping is *not*
//! immutable (another subject can start using an id, a subject can be deleted), so it expires
//! after a short TTL. Both caches are bounded; at the bound, expired entries go first and then
//! an arbitrary half, which keeps eviction O(n) rarely instead of bookkeeping on every hit.

use std::{
    collections::HashMap,
    hash::Hash,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;

/// A cached upstream response.
#[derive(Debug, Clone)]
pub struct CachedResponse {
    pub status: u16,
    pub content_type: Option<http::HeaderValue>,
    pub body: Bytes,
}

/// A bounded map whose entries expire.
pub struct TtlCache<K, V> {
    map: Mutex<HashMap<K, (V, Instant)>>,
    ttl: Duration,
    max: usize,
}

impl<K: Eq + Hash + Clone, V: Clone> TtlCache<K, V> {
    pub fn new(max: usize, ttl: Duration) -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            ttl,
            max: max.max(1),
        }
    }

    pub fn get(&self, key: &K) -> Option<V> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.get(key)
            .filter(|(_, at)| at.elapsed() < self.ttl)
            .map(|(v, _)| v.clone())
    }

    pub fn insert(&self, key: K, value: V) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= self.max && !map.contains_key(&key) {
            let ttl = self.ttl;
            map.retain(|_, (_, at)| at.elapsed() < ttl);
            if map.len() >= self.max {
                let drop: Vec<K> = map.keys().take(map.len() / 2 + 1).cloned().collect();
                for k in drop {
                    map.remove(&k);
                }
            }
        }
        map.insert(key, (value, Instant::now()));
    }
}

/// The proxy's caches.
pub struct Caches {
    /// Key: canonical path and query of a schema-by-id request (query params such as
    /// `format` change the body).
    pub schemas: TtlCache<String, CachedResponse>,
    /// Key: the id-lookup path (namespace and id). Value: canonical subjects using the id.
    pub id_subjects: TtlCache<String, Arc<Vec<String>>>,
}

impl Caches {
    pub fn new(max_schemas: usize, id_subjects_ttl: Duration) -> Self {
        Self {
            // Immutable content: the TTL only bounds how long a permanently deleted schema
            // stays servable (to callers still authorized through id_subjects).
            schemas: TtlCache::new(max_schemas, Duration::from_secs(3600)),
            id_subjects: TtlCache::new(max_schemas, id_subjects_ttl),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_expiring() {
        let cache = TtlCache::new(4, Duration::from_secs(60));
        for i in 0..10 {
            cache.insert(i, i);
        }
        assert!(cache.map.lock().unwrap().len() <= 4);
        assert_eq!(cache.get(&9), Some(9));
        let expired = TtlCache::new(4, Duration::ZERO);
        expired.insert(1, 1);
        assert_eq!(expired.get(&1), None);
    }
}
