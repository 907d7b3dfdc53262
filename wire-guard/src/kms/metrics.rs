//! The metrics decorator: every call that reaches a backend is counted by operation and outcome
//! and timed, and every new data key is logged with the KMS key it was made under.
//!
//! It sits below the cache and the retry layer, so the numbers are real KMS traffic (each retry
//! attempt counts), which is what throttling limits and bills are made of; and the log line
//! appears once per data key rather than once per record. The line carries the key's
//! fingerprint ([`DataKey::fingerprint`]), never the key: any wrapped key found in a record can
//! be traced to the KMS key that made it.

use std::{sync::Arc, time::Instant};

use async_trait::async_trait;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use zeroize::Zeroizing;

use super::{DATA_KEY_LEN, DataKey, EncryptionContext, KeyRef, Kms, KmsError, Operation};

/// Counts and times `inner`'s calls.
#[derive(Debug)]
pub struct InstrumentedKms {
    inner: Arc<dyn Kms>,
    /// Calls by `operation` and `outcome` (`ok`, `unavailable`, `refused`, `not_found`,
    /// `misconfigured`).
    requests: IntCounterVec,
    /// Call duration by `operation`, failures included.
    seconds: HistogramVec,
}

impl InstrumentedKms {
    /// Registers `kms_requests_total` and `kms_request_seconds` on `registry`.
    pub fn new(inner: Arc<dyn Kms>, registry: &Registry) -> Result<InstrumentedKms, KmsError> {
        let metric_error = |e: prometheus::Error| KmsError::Misconfigured(format!("metrics: {e}"));
        let requests = IntCounterVec::new(
            Opts::new(
                "kms_requests_total",
                "Calls to a KMS backend (after caching, each retry attempt counted), by operation and outcome",
            ),
            &["operation", "outcome"],
        )
        .map_err(metric_error)?;
        let seconds = HistogramVec::new(
            HistogramOpts::new(
                "kms_request_seconds",
                "Duration of each call to a KMS backend, by operation",
            )
            .buckets(vec![
                0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["operation"],
        )
        .map_err(metric_error)?;
        registry
            .register(Box::new(requests.clone()))
            .map_err(metric_error)?;
        registry
            .register(Box::new(seconds.clone()))
            .map_err(metric_error)?;
        Ok(InstrumentedKms {
            inner,
            requests,
            seconds,
        })
    }

    fn record<T>(&self, operation: Operation, started: Instant, outcome: &Result<T, KmsError>) {
        self.seconds
            .with_label_values(&[operation.as_str()])
            .observe(started.elapsed().as_secs_f64());
        let label = match outcome {
            Ok(_) => "ok",
            Err(e) => e.outcome(),
        };
        self.requests
            .with_label_values(&[operation.as_str(), label])
            .inc();
    }
}

#[async_trait]
impl Kms for InstrumentedKms {
    async fn generate_data_key(
        &self,
        key: &KeyRef,
        context: &EncryptionContext,
    ) -> Result<DataKey, KmsError> {
        let started = Instant::now();
        let outcome = self.inner.generate_data_key(key, context).await;
        self.record(Operation::GenerateDataKey, started, &outcome);
        match &outcome {
            Ok(data_key) => tracing::info!(
                kms_key = %key,
                data_key = %data_key.fingerprint(),
                %context,
                "new data key"
            ),
            Err(e) => {
                tracing::warn!(kms_key = %key, %context, error = %e, "data key generation failed")
            }
        }
        outcome
    }

    async fn decrypt_data_key(
        &self,
        key: &KeyRef,
        wrapped: &[u8],
        context: &EncryptionContext,
    ) -> Result<Zeroizing<[u8; DATA_KEY_LEN]>, KmsError> {
        let started = Instant::now();
        let outcome = self.inner.decrypt_data_key(key, wrapped, context).await;
        self.record(Operation::Decrypt, started, &outcome);
        if let Err(e) = &outcome {
            tracing::warn!(
                kms_key = %key,
                data_key = %super::fingerprint(wrapped),
                %context,
                error = %e,
                "data key decryption failed"
            );
        }
        outcome
    }

    async fn derive_key(
        &self,
        key: &KeyRef,
        context: &EncryptionContext,
    ) -> Result<Zeroizing<[u8; DATA_KEY_LEN]>, KmsError> {
        let started = Instant::now();
        let outcome = self.inner.derive_key(key, context).await;
        self.record(Operation::DeriveKey, started, &outcome);
        match &outcome {
            Ok(_) => tracing::info!(kms_key = %key, %context, "derived key"),
            Err(e) => tracing::warn!(kms_key = %key, %context, error = %e, "key derivation failed"),
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kms::cache::tests::FakeKms;

    #[tokio::test]
    async fn counts_by_operation_and_outcome() {
        let registry = Registry::new_custom(Some("wire_guard".into()), None).expect("registry");
        let fake = Arc::new(FakeKms::default());
        let kms = InstrumentedKms::new(fake, &registry).expect("metrics");
        let key = KeyRef::Local("k".into());
        let ok = EncryptionContext::new().with("topic", "t");
        let wrong = EncryptionContext::new().with("topic", "wrong");
        kms.generate_data_key(&key, &ok).await.expect("generate");
        kms.decrypt_data_key(&key, b"w", &ok)
            .await
            .expect("decrypt");
        kms.decrypt_data_key(&key, b"w", &wrong)
            .await
            .expect_err("refused");
        let requests = kms.requests.clone();
        let count = |op: &str, outcome: &str| requests.with_label_values(&[op, outcome]).get();
        assert_eq!(count("generate_data_key", "ok"), 1);
        assert_eq!(count("decrypt", "ok"), 1);
        assert_eq!(count("decrypt", "refused"), 1);
        let names: Vec<String> = registry
            .gather()
            .iter()
            .map(|f| f.name().to_owned())
            .collect();
        assert!(
            names.contains(&"wire_guard_kms_requests_total".to_owned()),
            "{names:?}"
        );
        assert!(
            names.contains(&"wire_guard_kms_request_seconds".to_owned()),
            "{names:?}"
        );
        assert!(
            InstrumentedKms::new(Arc::new(FakeKms::default()), &registry).is_err(),
            "registering twice is a configuration error"
        );
    }
}
