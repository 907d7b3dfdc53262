//! Schema-cache and registry instruments, resolved per label up front so a lookup costs an
//! atomic add.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts, Registry};

use crate::Error;

pub(crate) struct SchemaMetrics {
    pub(crate) hit: IntCounter,
    pub(crate) miss: IntCounter,
    pub(crate) negative_hit: IntCounter,
    pub(crate) registry_seconds: Histogram,
    /// By cause: `timeout`, `connect`, `status`, `body`, `token`.
    registry_errors: IntCounterVec,
}

impl SchemaMetrics {
    pub(crate) fn register(registry: &Registry) -> Result<Self, Error> {
        let metric_error = |e: prometheus::Error| Error::Config(format!("schema metrics: {e}"));
        let cache = IntCounterVec::new(
            Opts::new(
                "schema_cache_total",
                "Schema lookups by id, by result: hit, miss (fetched from the registry), negative_hit (a remembered not-found or unusable schema)",
            ),
            &["result"],
        )
        .map_err(metric_error)?;
        let registry_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "schema_registry_seconds",
                "Duration of each HTTP request to the schema registry",
            )
            .buckets(vec![
                0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
        )
        .map_err(metric_error)?;
        let registry_errors = IntCounterVec::new(
            Opts::new(
                "schema_registry_errors_total",
                "Schema registry requests that failed, by cause",
            ),
            &["cause"],
        )
        .map_err(metric_error)?;
        registry
            .register(Box::new(cache.clone()))
            .map_err(metric_error)?;
        registry
            .register(Box::new(registry_seconds.clone()))
            .map_err(metric_error)?;
        registry
            .register(Box::new(registry_errors.clone()))
            .map_err(metric_error)?;
        Ok(SchemaMetrics {
            hit: cache.with_label_values(&["hit"]),
            miss: cache.with_label_values(&["miss"]),
            negative_hit: cache.with_label_values(&["negative_hit"]),
            registry_seconds,
            registry_errors,
        })
    }

    pub(crate) fn registry_error(&self, cause: &str) {
        self.registry_errors.with_label_values(&[cause]).inc();
    }
}
