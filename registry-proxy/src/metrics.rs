//! Prometheus metrics, served on the admin port by `shared::telemetry`.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};

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
    /// Cache lookups by cache (`schema`, `id_subjects`, `token`, `failed_token`) and result
    /// (`hit`, `miss`).
    pub cache: IntCounterVec,
    /// Audit records that could not be written, by reason (`write_error`: a write to the sink
    /// failed and is retried; `queue_full`: a record found no room and was lost).
    pub audit_failures: IntCounterVec,
    /// Client connections open now.
    pub connections_open: IntGauge,
    /// Connections closed on accept, by reason (`max_connections`, `max_connections_per_ip`).
    pub connections_refused: IntCounterVec,
    /// Connections closed by a timeout, by phase (`header`: a request head not complete in
    /// time; `idle`: no request started in time).
    pub connection_timeouts: IntCounterVec,
    /// Signature verifications of tokens in neither token cache, by result (`ok`, `failed`,
    /// `rate_limited`: refused 429 before any signature work).
    pub token_verifications: IntCounterVec,
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
        let audit_failures = IntCounterVec::new(
            Opts::new(
                "registry_proxy_audit_failures_total",
                "Audit records that could not be written, by reason",
            ),
            &["reason"],
        )
        .expect("static metric definition");
        let connections_open = IntGauge::new(
            "registry_proxy_connections_open",
            "Client connections open now",
        )
        .expect("static metric definition");
        let connections_refused = IntCounterVec::new(
            Opts::new(
                "registry_proxy_connections_refused_total",
                "Client connections closed on accept, by the limit they hit",
            ),
            &["reason"],
        )
        .expect("static metric definition");
        let connection_timeouts = IntCounterVec::new(
            Opts::new(
                "registry_proxy_connection_timeouts_total",
                "Client connections closed by a timeout, by phase",
            ),
            &["phase"],
        )
        .expect("static metric definition");
        let token_verifications = IntCounterVec::new(
            Opts::new(
                "registry_proxy_token_verifications_total",
                "Signature verifications of uncached tokens, by result",
            ),
            &["result"],
        )
        .expect("static metric definition");
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(upstream_latency.clone()),
            Box::new(jwks_refreshes.clone()),
            Box::new(cache.clone()),
            Box::new(audit_failures.clone()),
            Box::new(connections_open.clone()),
            Box::new(connections_refused.clone()),
            Box::new(connection_timeouts.clone()),
            Box::new(token_verifications.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        Self {
            registry,
            requests,
            upstream_latency,
            jwks_refreshes,
            cache,
            audit_failures,
            connections_open,
            connections_refused,
            connection_timeouts,
            token_verifications,
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
