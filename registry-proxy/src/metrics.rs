//! Prometheus metrics, served on the admin port by `shared::telemetry`.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

/// The proxy's metrics; cloning shares them.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// Requests by operation class, decision and response status.
    pub requests: IntCounterVec,
    /// Time waiting for the upstream registry, by endpoint.
    pub upstream_latency: HistogramVec,
    /// JWKS fetches by result (`ok`, `error`).
    pub jwks_refreshes: IntCounterVec,
    /// Cache lookups by cache (`schema`, `id_subjects`, `token`) and result (`hit`, `miss`).
    pub cache: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "registry_proxy_requests_total",
                "Requests by operation class, decision and status",
            ),
            &["operation", "decision", "status"],
        )
        .expect("static metric definition");
        let upstream_latency = HistogramVec::new(
            HistogramOpts::new(
                "registry_proxy_upstream_seconds",
                "Upstream registry latency",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
            &["endpoint"],
        )
        .expect("static metric definition");
        let jwks_refreshes = IntCounterVec::new(
            Opts::new(
                "registry_proxy_jwks_refreshes_total",
                "JWKS fetches by result",
            ),
            &["result"],
        )
        .expect("static metric definition");
        let cache = IntCounterVec::new(
            Opts::new(
                "registry_proxy_cache_total",
                "Cache lookups by cache and result",
            ),
            &["cache", "result"],
        )
        .expect("static metric definition");
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(upstream_latency.clone()),
            Box::new(jwks_refreshes.clone()),
            Box::new(cache.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        Self {
            registry,
            requests,
            upstream_latency,
            jwks_refreshes,
            cache,
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
