//! Prometheus metrics, registered once and resolved per API key up front so the per-frame cost
//! is an array index and an atomic add.

use std::collections::HashMap;

use kafka_protocol::messages::ApiKey;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

/// Per-API-key instruments, so the hot path never formats a label.
struct PerApi {
    requests: IntCounter,
    latency: Histogram,
}

pub struct Metrics {
    pub registry: Registry,
    pub connections_total: IntCounterVec,
    pub connections_active: IntGauge,
    pub connection_errors: IntCounterVec,
    pub connections_refused: IntCounterVec,
    pub buffered_bytes: IntGauge,
    pub bytes_from_clients: IntCounter,
    pub bytes_from_upstream: IntCounter,
    /// Records on governed topics, by topic, rule and outcome (valid, rejected, dead_lettered,
    /// audited, retried).
    pub records: IntCounterVec,
    /// Protected fields, by topic, field path, action and outcome (protected, revealed,
    /// masked, plaintext_found, unreadable).
    pub fields: IntCounterVec,
    per_api: HashMap<i16, PerApi>,
    unknown_api: PerApi,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some("wire_guard".into()), None)?;
        let connections_total = IntCounterVec::new(
            Opts::new(
                "connections_total",
                "Client connections accepted, by listener",
            ),
            &["listener"],
        )?;
        let connections_active =
            IntGauge::new("connections_active", "Client connections currently open")?;
        let connection_errors = IntCounterVec::new(
            Opts::new(
                "connection_errors_total",
                "Connections closed because of an error, by the side that caused it (client, broker, proxy) and cause",
            ),
            &["side", "cause"],
        )?;
        let connections_refused = IntCounterVec::new(
            Opts::new(
                "connections_refused_total",
                "Connections closed as soon as accepted because a connection limit was reached, by limit",
            ),
            &["limit"],
        )?;
        let buffered_bytes = IntGauge::new(
            "buffered_bytes",
            "Bytes of frames held whole in memory across all connections (the buffer budget in use)",
        )?;
        let bytes = IntCounterVec::new(
            Opts::new("bytes_total", "Bytes forwarded, by direction"),
            &["direction"],
        )?;
        let requests = IntCounterVec::new(
            Opts::new("requests_total", "Requests forwarded, by API"),
            &["api"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "upstream_latency_seconds",
                "Time from forwarding a request to receiving its response, by API",
            )
            .buckets(vec![
                0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                2.5, 5.0, 10.0,
            ]),
            &["api"],
        )?;
        let records = IntCounterVec::new(
            Opts::new(
                "records_total",
                "Records produced to topics a policy governs, by topic, the rule that governs them and outcome",
            ),
            &["topic", "rule", "outcome"],
        )?;
        registry.register(Box::new(records.clone()))?;
        let fields = IntCounterVec::new(
            Opts::new(
                "fields_total",
                "Protected fields on produce and fetch, by topic, field path, action and outcome",
            ),
            &["topic", "field", "action", "outcome"],
        )?;
        registry.register(Box::new(fields.clone()))?;
        registry.register(Box::new(connections_total.clone()))?;
        registry.register(Box::new(connections_active.clone()))?;
        registry.register(Box::new(connection_errors.clone()))?;
        registry.register(Box::new(connections_refused.clone()))?;
        registry.register(Box::new(buffered_bytes.clone()))?;
        registry.register(Box::new(bytes.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        let per = |name: &str| PerApi {
            requests: requests.with_label_values(&[name]),
            latency: latency.with_label_values(&[name]),
        };
        let per_api = (0..=i16::MAX)
            .filter_map(|k| {
                ApiKey::try_from(k)
                    .ok()
                    .map(|key| (k, per(&format!("{key:?}"))))
            })
            .collect();
        Ok(Self {
            registry,
            connections_total,
            connections_active,
            connection_errors,
            connections_refused,
            buffered_bytes,
            bytes_from_clients: bytes.with_label_values(&["client_to_upstream"]),
            bytes_from_upstream: bytes.with_label_values(&["upstream_to_client"]),
            records,
            fields,
            per_api,
            unknown_api: per("unknown"),
        })
    }

    fn api(&self, key: i16) -> &PerApi {
        self.per_api.get(&key).unwrap_or(&self.unknown_api)
    }

    pub fn request(&self, key: i16) {
        self.api(key).requests.inc();
    }

    pub fn record_outcome(&self, topic: &str, rule: &str, outcome: &str, count: usize) {
        if count > 0 {
            self.records
                .with_label_values(&[topic, rule, outcome])
                .inc_by(count as u64);
        }
    }

    pub fn field_outcome(&self, topic: &str, field: &str, action: &str, outcome: &str, count: u64) {
        if count > 0 {
            self.fields
                .with_label_values(&[topic, field, action, outcome])
                .inc_by(count);
        }
    }

    pub fn upstream_latency(&self, key: i16, seconds: f64) {
        self.api(key).latency.observe(seconds);
    }
}
