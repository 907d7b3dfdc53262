//! wire-guard's validated runtime configuration. [`crate::cli`] builds it from flags,
//! environment variables and an optional YAML file.

use std::{path::PathBuf, time::Duration};

use crate::{limits::Limits, login::Credentials, schema::RegistryConfig};

/// Kafka's own default for `socket.request.max.bytes`.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 100 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct Config {
    /// Bootstrap servers of the upstream cluster, tried in order.
    pub upstreams: Vec<String>,
    /// The host clients are told to connect to in rewritten broker addresses.
    pub advertised_host: String,
    /// Proxy port of broker node 0; `None` means the bootstrap port + 1.
    pub broker_port_base: Option<u16>,
    /// Where `/metrics`, `/healthz` and `/readyz` are served; `None` serves nothing.
    pub admin_listen: Option<std::net::SocketAddr>,
    /// Frames announcing more than this are refused before anything is allocated.
    pub max_frame_bytes: usize,
    /// TLS towards clients, on the bootstrap and every broker listener.
    pub client_tls: Option<ClientTls>,
    /// TLS towards the upstream brokers.
    pub upstream_tls: Option<UpstreamTls>,
    /// Policy directory, validated at startup and watched for changes.
    pub policies: Option<PathBuf>,
    /// How long shutdown waits for in-flight requests before closing connections.
    pub drain_timeout: Duration,
    /// How long connecting to an upstream broker may take.
    pub connect_timeout: Duration,
    /// Connection caps, timeouts and the buffer budget.
    pub limits: Limits,
    /// The registry governed records are checked against; needed once a policy has `topics:`.
    pub schema_registry: Option<RegistryConfig>,
    /// How long writing one batch of dead letters may take, retries included.
    pub dead_letter_timeout: Duration,
    /// The SASL login for wire-guard's own connections (dead letters), when the cluster
    /// requires one.
    pub dead_letter_login: Option<Credentials>,
    /// Most bytes one partition's batches in a Produce request may decompress to: a small
    /// compressed request must not be able to claim gigabytes.
    pub max_decompressed_bytes: usize,
    /// The largest record batch the brokers accept (`max.message.bytes`).
    pub max_batch_bytes: usize,
    /// The KMS backends field protection takes keys from; needed once a policy names a key.
    pub kms: Option<crate::kms::KmsConfig>,
}

#[derive(Debug, Clone)]
pub struct ClientTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// With a CA, clients must present a certificate it signed (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct UpstreamTls {
    pub ca: PathBuf,
    /// Client certificate and key presented to the brokers, if they require one.
    pub identity: Option<(PathBuf, PathBuf)>,
}

impl Config {
    /// A plaintext configuration in front of `upstreams` with every other setting at its
    /// default; the starting point for tests and embedders.
    pub fn new(upstreams: Vec<String>, advertised_host: impl Into<String>) -> Self {
        Self {
            upstreams,
            advertised_host: advertised_host.into(),
            broker_port_base: None,
            admin_listen: None,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            client_tls: None,
            upstream_tls: None,
            policies: None,
            drain_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            limits: Limits::default(),
            schema_registry: None,
            dead_letter_timeout: Duration::from_secs(30),
            dead_letter_login: None,
            max_decompressed_bytes: 64 * 1024 * 1024,
            // Kafka's default message.max.bytes.
            max_batch_bytes: 1_048_588,
            kms: None,
        }
    }
}
