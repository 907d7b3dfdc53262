//! The caching decorator: data keys are reused for a bounded number of records and a bounded
//! time, and unwrapped keys are remembered, so that steady state makes far fewer KMS calls than
//! it handles records.
//!
//! Two caches, both `moka` with a size bound and an expiry:
//!
//! - generated keys, per (KMS key, encryption context): one data key serves at most
//!   `max_uses` encryptions and `max_age`, then the next caller triggers a new one. The bounds
//!   limit how much data one leaked data key exposes and how many messages share a key (AES-GCM
//!   with random nonces must stay far below 2^32 messages per key).
//! - unwrapped keys, per (KMS key, wrapped key, encryption context). The context is part of the
//!   cache key: otherwise a request with a wrong context would be served a key that the KMS
//!   would have refused. Keys this cache generated are entered here too, so records the proxy
//!   encrypted decrypt without a KMS call.
//!
//! Concurrent misses for the same entry wait for one KMS call (moka's `try_get_with`); errors
//! are not cached. `kms_cache_total{cache,result}` counts hits and misses of both caches; set
//! against the records protected, it shows how close steady state is to no KMS traffic.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use bytes::Bytes;
use moka::future::Cache;
use prometheus::{IntCounter, IntCounterVec, Opts, Registry};
use zeroize::Zeroizing;

use super::{DATA_KEY_LEN, DataKey, EncryptionContext, KeyRef, Kms, KmsError};

/// Bounds of both caches.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Encryptions one generated data key may serve before a new one is generated.
    pub max_uses: u64,
    /// How long a generated data key is handed out, in seconds.
    pub max_age_secs: u64,
    /// How many (KMS key, context) pairs keep a current data key; one per protected field and
    /// topic is the working set.
    pub max_generated: u64,
    /// How many unwrapped keys are kept; consumers reading old data need one per data key they
    /// meet.
    pub max_decrypted: u64,
    /// How long an unwrapped key is kept, in seconds, so that a key revoked in the KMS stops
    /// working here within this time.
    pub decrypted_ttl_secs: u64,
}

impl Default for CacheConfig {
    fn default() -> CacheConfig {
        CacheConfig {
            max_uses: 100_000,
            max_age_secs: 3_600,
            max_generated: 10_000,
            max_decrypted: 100_000,
            decrypted_ttl_secs: 3_600,
        }
    }
}

impl CacheConfig {
    /// Every problem with the bounds.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (name, value) in [
            ("max_uses", self.max_uses),
            ("max_age_secs", self.max_age_secs),
            ("max_generated", self.max_generated),
            ("max_decrypted", self.max_decrypted),
            ("decrypted_ttl_secs", self.decrypted_ttl_secs),
        ] {
            if value == 0 {
                problems.push(format!("cache.{name} must be at least 1"));
            }
        }
        // Each use of a data key is numbered in 32 bits (encrypted fields build their nonce
        // from the number), and AES-GCM keys must stay far below 2^32 messages anyway.
        if self.max_uses > 1 << 32 {
            problems.push(format!(
                "cache.max_uses is {}; at most {} encryptions may share a data key",
                self.max_uses,
                1u64 << 32
            ));
        }
        problems
    }
}

/// A generated data key and how often it has been handed out.
struct Current {
    key: DataKey,
    /// Hand-outs so far, including ones that found it exhausted.
    uses: AtomicU64,
}

type DecryptKey = (KeyRef, Bytes, EncryptionContext);

/// Hits and misses of the two caches. A caller that waited for another's KMS call counts as a
/// hit: it caused no call.
#[derive(Debug)]
struct CacheCounts {
    generated_hit: IntCounter,
    generated_miss: IntCounter,
    decrypted_hit: IntCounter,
    decrypted_miss: IntCounter,
    derived_hit: IntCounter,
    derived_miss: IntCounter,
}

impl CacheCounts {
    fn register(registry: &Registry) -> Result<CacheCounts, KmsError> {
        let metric_error = |e: prometheus::Error| KmsError::Misconfigured(format!("metrics: {e}"));
        let counts = IntCounterVec::new(
            Opts::new(
                "kms_cache_total",
                "Data-key lookups by cache (generated, decrypted) and result (hit, miss: a KMS call)",
            ),
            &["cache", "result"],
        )
        .map_err(metric_error)?;
        registry
            .register(Box::new(counts.clone()))
            .map_err(metric_error)?;
        Ok(CacheCounts {
            generated_hit: counts.with_label_values(&["generated", "hit"]),
            generated_miss: counts.with_label_values(&["generated", "miss"]),
            decrypted_hit: counts.with_label_values(&["decrypted", "hit"]),
            decrypted_miss: counts.with_label_values(&["decrypted", "miss"]),
            derived_hit: counts.with_label_values(&["derived", "hit"]),
            derived_miss: counts.with_label_values(&["derived", "miss"]),
        })
    }
}

/// Caches generated and unwrapped data keys in front of `inner`.
pub struct CachingKms {
    inner: Arc<dyn Kms>,
    max_uses: u64,
    /// Lookups by cache and result, resolved per label up front.
    counts: CacheCounts,
    generated: Cache<(KeyRef, EncryptionContext), Arc<Current>>,
    decrypted: Cache<DecryptKey, Arc<Zeroizing<[u8; DATA_KEY_LEN]>>>,
    /// Derived keys, per (KMS key, context); kept as long as unwrapped keys.
    derived: Cache<(KeyRef, EncryptionContext), Arc<Zeroizing<[u8; DATA_KEY_LEN]>>>,
}

impl std::fmt::Debug for CachingKms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachingKms")
            .field("inner", &self.inner)
            .field("max_uses", &self.max_uses)
            .field("generated", &self.generated.entry_count())
            .field("decrypted", &self.decrypted.entry_count())
            .finish()
    }
}

/// How often a caller retries after finding the current key used up and evicting it, before it
/// takes a fresh key of its own; only a crowd of callers racing on one key gets that far.
const EXHAUSTED_RETRIES: usize = 3;

impl CachingKms {
    /// Registers `kms_cache_total` on `registry`.
    pub fn new(
        inner: Arc<dyn Kms>,
        config: &CacheConfig,
        registry: &Registry,
    ) -> Result<CachingKms, KmsError> {
        Ok(CachingKms {
            inner,
            max_uses: config.max_uses.max(1),
            counts: CacheCounts::register(registry)?,
            generated: Cache::builder()
                .max_capacity(config.max_generated)
                .time_to_live(Duration::from_secs(config.max_age_secs))
                .build(),
            decrypted: Cache::builder()
                .max_capacity(config.max_decrypted)
                .time_to_live(Duration::from_secs(config.decrypted_ttl_secs))
                .build(),
            derived: Cache::builder()
                .max_capacity(config.max_generated)
                .time_to_live(Duration::from_secs(config.decrypted_ttl_secs))
                .build(),
        })
    }

    async fn remember_unwrapped(&self, key: &KeyRef, context: &EncryptionContext, data: &DataKey) {
        // Readers name the key as the caller did, or as stored beside the data: the precise
        // key, when the KMS gave one.
        let plaintext = Arc::new(data.plaintext.clone());
        for key in std::iter::once(key).chain(data.wrapped_by.as_ref()) {
            self.decrypted
                .insert(
                    (key.clone(), data.wrapped.clone(), context.clone()),
                    plaintext.clone(),
                )
                .await;
        }
    }
}

#[async_trait]
impl Kms for CachingKms {
    async fn generate_data_key(
        &self,
        key: &KeyRef,
        context: &EncryptionContext,
    ) -> Result<DataKey, KmsError> {
        self.reserve_data_key(key, context, 1).await
    }

    async fn reserve_data_key(
        &self,
        key: &KeyRef,
        context: &EncryptionContext,
        uses: u32,
    ) -> Result<DataKey, KmsError> {
        let uses = u64::from(uses.max(1));
        let cache_key = (key.clone(), context.clone());
        if uses <= self.max_uses {
            for _ in 0..EXHAUSTED_RETRIES {
                let mut missed = false;
                let current = self
                    .generated
                    .try_get_with(cache_key.clone(), async {
                        missed = true;
                        let fresh = self.inner.generate_data_key(key, context).await?;
                        self.remember_unwrapped(key, context, &fresh).await;
                        Ok::<_, KmsError>(Arc::new(Current {
                            key: fresh,
                            uses: AtomicU64::new(0),
                        }))
                    })
                    .await
                    .map_err(|e: Arc<KmsError>| (*e).clone())?;
                if missed {
                    self.counts.generated_miss.inc();
                } else {
                    self.counts.generated_hit.inc();
                }
                let first = current.uses.fetch_add(uses, Ordering::Relaxed);
                if first + uses <= self.max_uses {
                    let mut key = current.key.clone();
                    // `max_uses` is at most 2^32 (see `CacheConfig::problems`).
                    key.use_index = first as u32;
                    return Ok(key);
                }
                self.generated.invalidate(&cache_key).await;
            }
        }
        // A crowd racing on one key, or more uses than one key may serve: a key of its own.
        self.counts.generated_miss.inc();
        let fresh = self.inner.generate_data_key(key, context).await?;
        self.remember_unwrapped(key, context, &fresh).await;
        Ok(fresh)
    }

    async fn decrypt_data_key(
        &self,
        key: &KeyRef,
        wrapped: &[u8],
        context: &EncryptionContext,
    ) -> Result<Zeroizing<[u8; DATA_KEY_LEN]>, KmsError> {
        let cache_key = (
            key.clone(),
            Bytes::copy_from_slice(wrapped),
            context.clone(),
        );
        let mut missed = false;
        let plaintext = self
            .decrypted
            .try_get_with(cache_key, async {
                missed = true;
                self.inner
                    .decrypt_data_key(key, wrapped, context)
                    .await
                    .map(Arc::new)
            })
            .await
            .map_err(|e: Arc<KmsError>| (*e).clone());
        if missed {
            self.counts.decrypted_miss.inc();
        } else {
            self.counts.decrypted_hit.inc();
        }
        Ok((*plaintext?).clone())
    }

    async fn derive_key(
        &self,
        key: &KeyRef,
        context: &EncryptionContext,
    ) -> Result<Zeroizing<[u8; DATA_KEY_LEN]>, KmsError> {
        let mut missed = false;
        let derived = self
            .derived
            .try_get_with((key.clone(), context.clone()), async {
                missed = true;
                self.inner.derive_key(key, context).await.map(Arc::new)
            })
            .await
            .map_err(|e: Arc<KmsError>| (*e).clone());
        if missed {
            self.counts.derived_miss.inc();
        } else {
            self.counts.derived_hit.inc();
        }
        Ok((*derived?).clone())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::kms::Operation;

    /// A backend that counts calls and fails on demand.
    #[derive(Debug, Default)]
    pub(crate) struct FakeKms {
        pub(crate) generated: AtomicU64,
        pub(crate) decrypted: AtomicU64,
        /// Errors returned, in order, before calls succeed again.
        pub(crate) failures: Mutex<Vec<KmsError>>,
    }

    impl FakeKms {
        fn next_failure(&self) -> Option<KmsError> {
            let mut failures = self.failures.lock().expect("lock");
            (!failures.is_empty()).then(|| failures.remove(0))
        }
    }

    #[async_trait]
    impl Kms for FakeKms {
        async fn generate_data_key(
            &self,
            _key: &KeyRef,
            _context: &EncryptionContext,
        ) -> Result<DataKey, KmsError> {
            let n = self.generated.fetch_add(1, Ordering::SeqCst);
            if let Some(e) = self.next_failure() {
                return Err(e);
            }
            Ok(DataKey {
                plaintext: Zeroizing::new([n as u8; DATA_KEY_LEN]),
                wrapped: Bytes::from(n.to_be_bytes().to_vec()),
                use_index: 0,
                wrapped_by: None,
            })
        }

        async fn decrypt_data_key(
            &self,
            _key: &KeyRef,
            wrapped: &[u8],
            context: &EncryptionContext,
        ) -> Result<Zeroizing<[u8; DATA_KEY_LEN]>, KmsError> {
            self.decrypted.fetch_add(1, Ordering::SeqCst);
            if let Some(e) = self.next_failure() {
                return Err(e);
            }
            if context.iter().any(|(_, v)| v == "wrong") {
                return Err(KmsError::Refused {
                    operation: Operation::Decrypt,
                    key: "fake".into(),
                    reason: "wrong context".into(),
                });
            }
            Ok(Zeroizing::new(
                [wrapped.last().copied().unwrap_or(0); DATA_KEY_LEN],
            ))
        }

        async fn derive_key(
            &self,
            _key: &KeyRef,
            context: &EncryptionContext,
        ) -> Result<Zeroizing<[u8; DATA_KEY_LEN]>, KmsError> {
            if let Some(e) = self.next_failure() {
                return Err(e);
            }
            Ok(Zeroizing::new(
                [context.canonical_bytes().len() as u8; DATA_KEY_LEN],
            ))
        }
    }

    fn key() -> KeyRef {
        KeyRef::Local("k".into())
    }

    fn context(topic: &str) -> EncryptionContext {
        EncryptionContext::new().with("topic", topic)
    }

    fn config(max_uses: u64, max_age_secs: u64) -> CacheConfig {
        CacheConfig {
            max_uses,
            max_age_secs,
            ..CacheConfig::default()
        }
    }

    #[tokio::test]
    async fn a_data_key_serves_at_most_max_uses() {
        let fake = Arc::new(FakeKms::default());
        let cache =
            CachingKms::new(fake.clone(), &config(3, 3_600), &Registry::new()).expect("cache");
        let mut keys = Vec::new();
        for _ in 0..7 {
            let k = cache
                .generate_data_key(&key(), &context("t"))
                .await
                .expect("generate");
            keys.push(k.wrapped);
        }
        assert_eq!(fake.generated.load(Ordering::SeqCst), 3);
        assert_eq!(keys[0], keys[2]);
        assert_ne!(keys[2], keys[3]);
        assert_eq!(keys[3], keys[5]);
        assert_ne!(keys[5], keys[6]);
    }

    #[tokio::test]
    async fn contexts_get_their_own_keys() {
        let fake = Arc::new(FakeKms::default());
        let cache =
            CachingKms::new(fake.clone(), &config(1_000, 3_600), &Registry::new()).expect("cache");
        let a = cache.generate_data_key(&key(), &context("a")).await;
        let b = cache.generate_data_key(&key(), &context("b")).await;
        assert_ne!(a.expect("a").wrapped, b.expect("b").wrapped);
        assert_eq!(fake.generated.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_data_key_expires_after_max_age() {
        let fake = Arc::new(FakeKms::default());
        let cache =
            CachingKms::new(fake.clone(), &config(1_000, 1), &Registry::new()).expect("cache");
        let first = cache.generate_data_key(&key(), &context("t")).await;
        let again = cache.generate_data_key(&key(), &context("t")).await;
        assert_eq!(first.expect("first").wrapped, again.expect("again").wrapped);
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        let later = cache.generate_data_key(&key(), &context("t")).await;
        assert_ne!(
            later.expect("later").wrapped,
            Bytes::from(0u64.to_be_bytes().to_vec())
        );
        assert_eq!(fake.generated.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn steady_state_makes_one_call_per_thousand_records() {
        let fake = Arc::new(FakeKms::default());
        let cache = CachingKms::new(fake.clone(), &CacheConfig::default(), &Registry::new())
            .expect("cache");
        for _ in 0..5_000 {
            let k = cache
                .generate_data_key(&key(), &context("t"))
                .await
                .expect("generate");
            cache
                .decrypt_data_key(&key(), &k.wrapped, &context("t"))
                .await
                .expect("decrypt");
        }
        assert_eq!(fake.generated.load(Ordering::SeqCst), 1);
        assert_eq!(
            fake.decrypted.load(Ordering::SeqCst),
            0,
            "keys this cache generated unwrap without a KMS call"
        );
        assert_eq!(cache.counts.generated_miss.get(), 1);
        assert_eq!(cache.counts.generated_hit.get(), 4_999);
        assert_eq!(cache.counts.decrypted_hit.get(), 5_000);
        assert_eq!(cache.counts.decrypted_miss.get(), 0);
    }

    #[tokio::test]
    async fn unwrapped_keys_are_cached_per_context_and_errors_are_not() {
        let fake = Arc::new(FakeKms::default());
        let cache = CachingKms::new(fake.clone(), &CacheConfig::default(), &Registry::new())
            .expect("cache");
        for _ in 0..3 {
            cache
                .decrypt_data_key(&key(), b"w1", &context("t"))
                .await
                .expect("decrypt");
        }
        assert_eq!(fake.decrypted.load(Ordering::SeqCst), 1);
        for _ in 0..2 {
            let err = cache
                .decrypt_data_key(&key(), b"w1", &context("wrong"))
                .await
                .expect_err("the KMS decides about another context");
            assert!(matches!(err, KmsError::Refused { .. }));
        }
        assert_eq!(fake.decrypted.load(Ordering::SeqCst), 3);
        assert_eq!(cache.counts.decrypted_hit.get(), 2);
        assert_eq!(cache.counts.decrypted_miss.get(), 3);
    }
}
