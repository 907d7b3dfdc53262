//! The retry decorator: calls that failed for a passing reason are repeated with jittered
//! exponential backoff; any other failure is returned at once.
//!
//! Backoff is "full jitter": before attempt n+1 the caller sleeps a uniformly random time
//! between zero and `min(max_backoff, initial_backoff * 2^(n-1))`, so many proxies that lost
//! the KMS at the same moment do not come back in lockstep. Both the number of attempts and the
//! total time (attempts included, each cut short at the deadline) are bounded: a produce
//! request waiting on a key must get its answer within the client's own timeout.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use zeroize::Zeroizing;

use super::{DATA_KEY_LEN, DataKey, EncryptionContext, KeyRef, Kms, KmsError, Operation};

/// Retry bounds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// The backoff ceiling before the second attempt, in milliseconds; it doubles per attempt.
    pub initial_backoff_ms: u64,
    /// The largest backoff ceiling, in milliseconds.
    pub max_backoff_ms: u64,
    /// The time one call may take, retries included, in milliseconds.
    pub total_timeout_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> RetryConfig {
        RetryConfig {
            max_attempts: 4,
            initial_backoff_ms: 100,
            max_backoff_ms: 2_000,
            total_timeout_ms: 10_000,
        }
    }
}

impl RetryConfig {
    /// Every problem with the bounds.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.max_attempts == 0 {
            problems.push("retry.max_attempts must be at least 1".to_owned());
        }
        if self.total_timeout_ms == 0 {
            problems.push("retry.total_timeout_ms must be at least 1".to_owned());
        }
        if self.max_backoff_ms < self.initial_backoff_ms {
            problems.push("retry.max_backoff_ms must not be below initial_backoff_ms".to_owned());
        }
        problems
    }

    /// The backoff ceiling after `failures` failed attempts (1 or more).
    fn ceiling(&self, failures: u32) -> Duration {
        let factor = 1u64 << failures.saturating_sub(1).min(20);
        Duration::from_millis(
            self.initial_backoff_ms
                .saturating_mul(factor)
                .min(self.max_backoff_ms),
        )
    }
}

/// Retries `inner`'s retriable failures.
#[derive(Debug)]
pub struct RetryingKms {
    inner: Arc<dyn Kms>,
    config: RetryConfig,
}

impl RetryingKms {
    pub fn new(inner: Arc<dyn Kms>, config: RetryConfig) -> RetryingKms {
        RetryingKms { inner, config }
    }

    async fn run<T, F, Fut>(
        &self,
        operation: Operation,
        key: &KeyRef,
        mut call: F,
    ) -> Result<T, KmsError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, KmsError>>,
    {
        let total = Duration::from_millis(self.config.total_timeout_ms);
        let deadline = Instant::now() + total;
        let mut failures = 0;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let outcome = match tokio::time::timeout(remaining, call()).await {
                Ok(outcome) => outcome,
                Err(_) => Err(KmsError::Unavailable {
                    operation,
                    key: key.to_string(),
                    reason: format!("no answer within the {total:?} allowed for the call"),
                }),
            };
            let err = match outcome {
                Ok(value) => return Ok(value),
                Err(err) if !err.is_retriable() => return Err(err),
                Err(err) => err,
            };
            failures += 1;
            if failures >= self.config.max_attempts {
                tracing::warn!(%key, %operation, attempts = failures, error = %err, "KMS call failed; giving up");
                return Err(err);
            }
            let ceiling = self.config.ceiling(failures);
            let sleep = Duration::from_millis(fastrand::u64(0..=ceiling.as_millis() as u64));
            if Instant::now() + sleep >= deadline {
                tracing::warn!(%key, %operation, attempts = failures, error = %err, "KMS call failed; no time left to retry");
                return Err(err);
            }
            tracing::debug!(%key, %operation, attempt = failures, ?sleep, error = %err, "KMS call failed; retrying");
            tokio::time::sleep(sleep).await;
        }
    }
}

#[async_trait]
impl Kms for RetryingKms {
    async fn generate_data_key(
        &self,
        key: &KeyRef,
        context: &EncryptionContext,
    ) -> Result<DataKey, KmsError> {
        let inner = self.inner.as_ref();
        self.run(Operation::GenerateDataKey, key, || {
            inner.generate_data_key(key, context)
        })
        .await
    }

    async fn decrypt_data_key(
        &self,
        key: &KeyRef,
        wrapped: &[u8],
        context: &EncryptionContext,
    ) -> Result<Zeroizing<[u8; DATA_KEY_LEN]>, KmsError> {
        let inner = self.inner.as_ref();
        self.run(Operation::Decrypt, key, || {
            inner.decrypt_data_key(key, wrapped, context)
        })
        .await
    }

    async fn derive_key(
        &self,
        key: &KeyRef,
        context: &EncryptionContext,
    ) -> Result<Zeroizing<[u8; DATA_KEY_LEN]>, KmsError> {
        let inner = self.inner.as_ref();
        self.run(Operation::DeriveKey, key, || inner.derive_key(key, context))
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::kms::cache::tests::FakeKms;

    fn unavailable() -> KmsError {
        KmsError::Unavailable {
            operation: Operation::GenerateDataKey,
            key: "fake".into(),
            reason: "throttled".into(),
        }
    }

    fn fast(max_attempts: u32) -> RetryConfig {
        RetryConfig {
            max_attempts,
            initial_backoff_ms: 1,
            max_backoff_ms: 5,
            total_timeout_ms: 5_000,
        }
    }

    fn key() -> KeyRef {
        KeyRef::Local("k".into())
    }

    #[tokio::test]
    async fn retriable_failures_are_retried_until_success() {
        let fake = Arc::new(FakeKms::default());
        *fake.failures.lock().expect("lock") = vec![unavailable(), unavailable()];
        let retry = RetryingKms::new(fake.clone(), fast(4));
        retry
            .generate_data_key(&key(), &EncryptionContext::new())
            .await
            .expect("third attempt succeeds");
        assert_eq!(fake.generated.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn gives_up_after_max_attempts() {
        let fake = Arc::new(FakeKms::default());
        *fake.failures.lock().expect("lock") = vec![unavailable(); 10];
        let retry = RetryingKms::new(fake.clone(), fast(4));
        let err = retry
            .generate_data_key(&key(), &EncryptionContext::new())
            .await
            .expect_err("always unavailable");
        assert!(err.is_retriable());
        assert_eq!(fake.generated.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn other_failures_are_returned_at_once() {
        for failure in [
            KmsError::Refused {
                operation: Operation::Decrypt,
                key: "fake".into(),
                reason: "denied".into(),
            },
            KmsError::NotFound {
                operation: Operation::Decrypt,
                key: "fake".into(),
                reason: "no such key".into(),
            },
            KmsError::Misconfigured("no region".into()),
        ] {
            let fake = Arc::new(FakeKms::default());
            *fake.failures.lock().expect("lock") = vec![failure.clone()];
            let retry = RetryingKms::new(fake.clone(), fast(4));
            let err = retry
                .decrypt_data_key(&key(), b"w", &EncryptionContext::new())
                .await
                .expect_err("not retried");
            assert_eq!(err, failure);
            assert_eq!(fake.decrypted.load(Ordering::SeqCst), 1);
        }
    }

    #[tokio::test]
    async fn total_time_is_bounded() {
        let fake = Arc::new(FakeKms::default());
        *fake.failures.lock().expect("lock") = vec![unavailable(); 100];
        let config = RetryConfig {
            max_attempts: 100,
            initial_backoff_ms: 50,
            max_backoff_ms: 50,
            total_timeout_ms: 200,
        };
        let retry = RetryingKms::new(fake.clone(), config);
        let err = retry
            .generate_data_key(&key(), &EncryptionContext::new())
            .await
            .expect_err("out of time");
        assert!(err.is_retriable());
        let attempts = fake.generated.load(Ordering::SeqCst);
        assert!((1..100).contains(&attempts), "{attempts} attempts");
    }

    #[test]
    fn backoff_ceiling_doubles_up_to_the_maximum() {
        let config = RetryConfig::default();
        assert_eq!(config.ceiling(1), Duration::from_millis(100));
        assert_eq!(config.ceiling(2), Duration::from_millis(200));
        assert_eq!(config.ceiling(5), Duration::from_millis(1_600));
        assert_eq!(config.ceiling(6), Duration::from_millis(2_000));
        assert_eq!(config.ceiling(60), Duration::from_millis(2_000));
    }
}
