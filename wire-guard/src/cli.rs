//! The command line, environment variables and `--config` file, merged into a [`Config`].
//!
//! A flag or environment variable overrides the same setting in the file. Every problem is
//! collected and reported together, so a bad deployment fails once with the whole list.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::Parser;
use serde::Deserialize;

use crate::{
    config::{ClientTls, Config, DEFAULT_MAX_FRAME_BYTES, UpstreamTls},
    limits::Limits,
    login::{Credentials, Mechanism},
    schema::{ClientCredentials, RegistryConfig},
};

/// Kafka-protocol proxy: clients change only `bootstrap.servers`.
///
/// wire-guard listens on a bootstrap port and on one port per upstream broker
/// (port = --broker-port-base + node id), rewrites every broker address the cluster hands out
/// so clients only ever see the proxy, and advertises only protocol versions it can decode.
#[derive(Debug, Parser)]
#[command(name = "wire-guard", version, about, long_about)]
pub struct Args {
    /// Upstream bootstrap servers, HOST:PORT[,HOST:PORT...], tried in order.
    #[arg(long, env = "WIRE_GUARD_UPSTREAM", value_delimiter = ',')]
    pub upstream: Vec<String>,
    /// Bootstrap listener, HOST:PORT. Broker listeners bind the same host.
    #[arg(long, env = "WIRE_GUARD_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Host name clients are given for every broker. Defaults to the --listen address, which
    /// must then be a specific IP (not 0.0.0.0).
    #[arg(long, env = "WIRE_GUARD_ADVERTISED_HOST")]
    pub advertised_host: Option<String>,
    /// Proxy port of broker node 0; node N listens on this + N. Default: the --listen port + 1.
    #[arg(long, env = "WIRE_GUARD_BROKER_PORT_BASE")]
    pub broker_port_base: Option<u16>,
    /// Directory of YAML policy files, validated at startup.
    #[arg(long, env = "WIRE_GUARD_POLICIES")]
    pub policies: Option<PathBuf>,
    /// YAML file with any of the settings below; flags and environment variables override it.
    #[arg(long, env = "WIRE_GUARD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Admin endpoint for /metrics, /healthz and /readyz, HOST:PORT.
    #[arg(long, env = "WIRE_GUARD_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,
    /// Largest frame accepted from either side, in bytes [default: 104857600].
    #[arg(long, env = "WIRE_GUARD_MAX_FRAME_BYTES")]
    pub max_frame_bytes: Option<usize>,
    /// PEM certificate chain presented to clients; enables TLS on every listener.
    #[arg(long, env = "WIRE_GUARD_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "WIRE_GUARD_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA bundle; clients must then present a certificate it signed.
    #[arg(long, env = "WIRE_GUARD_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
    /// PEM CA bundle trusted for the upstream; enables TLS towards the brokers.
    #[arg(long, env = "WIRE_GUARD_UPSTREAM_TLS_CA")]
    pub upstream_tls_ca: Option<PathBuf>,
    /// PEM client certificate presented to the upstream brokers.
    #[arg(
        long,
        env = "WIRE_GUARD_UPSTREAM_TLS_CERT",
        requires = "upstream_tls_key"
    )]
    pub upstream_tls_cert: Option<PathBuf>,
    /// PEM private key for --upstream-tls-cert.
    #[arg(
        long,
        env = "WIRE_GUARD_UPSTREAM_TLS_KEY",
        requires = "upstream_tls_cert"
    )]
    pub upstream_tls_key: Option<PathBuf>,
    /// Seconds shutdown waits for in-flight requests [default: 30].
    #[arg(long, env = "WIRE_GUARD_DRAIN_TIMEOUT_SECS")]
    pub drain_timeout_secs: Option<u64>,
    /// Client connections served at once, all listeners together [default: 10000].
    #[arg(long, env = "WIRE_GUARD_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Client connections served at once from one IP address [default: 1000].
    #[arg(long, env = "WIRE_GUARD_MAX_CONNECTIONS_PER_IP")]
    pub max_connections_per_ip: Option<usize>,
    /// Seconds a new connection has to send its first request [default: 10].
    #[arg(long, env = "WIRE_GUARD_FIRST_REQUEST_TIMEOUT_SECS")]
    pub first_request_timeout_secs: Option<u64>,
    /// Seconds a connection with nothing in flight may stay silent [default: 600].
    #[arg(long, env = "WIRE_GUARD_IDLE_TIMEOUT_SECS")]
    pub idle_timeout_secs: Option<u64>,
    /// Seconds either side has to finish a frame once it has started [default: 60].
    #[arg(long, env = "WIRE_GUARD_FRAME_TIMEOUT_SECS")]
    pub frame_timeout_secs: Option<u64>,
    /// Seconds a connection that starts SASL has to finish authenticating [default: 30].
    #[arg(long, env = "WIRE_GUARD_AUTH_TIMEOUT_SECS")]
    pub auth_timeout_secs: Option<u64>,
    /// Seconds the broker has to answer a request before the connection is closed [default: 120].
    #[arg(long, env = "WIRE_GUARD_REQUEST_TIMEOUT_SECS")]
    pub request_timeout_secs: Option<u64>,
    /// Seconds the broker may hold a JoinGroup request (a rebalance) [default: 330].
    #[arg(long, env = "WIRE_GUARD_JOIN_TIMEOUT_SECS")]
    pub join_timeout_secs: Option<u64>,
    /// Largest SASL handshake or authentication frame, in bytes [default: 524288].
    #[arg(long, env = "WIRE_GUARD_MAX_SASL_FRAME_BYTES")]
    pub max_sasl_frame_bytes: Option<usize>,
    /// Bytes of frames held whole in memory across all connections [default: 268435456].
    #[arg(long, env = "WIRE_GUARD_BUFFER_BUDGET_BYTES")]
    pub buffer_budget_bytes: Option<usize>,
    /// Schema registry records on governed topics are checked against: the registry itself or
    /// registry-proxy in front of it. Required when a policy has `topics:` rules.
    #[arg(long, env = "WIRE_GUARD_SCHEMA_REGISTRY_URL")]
    pub schema_registry_url: Option<String>,
    /// OIDC issuer whose token endpoint grants wire-guard's own registry credentials
    /// (client credentials grant); without it, registry requests carry no token.
    #[arg(
        long,
        env = "WIRE_GUARD_SCHEMA_REGISTRY_ISSUER",
        requires = "schema_registry_client_id"
    )]
    pub schema_registry_issuer: Option<String>,
    /// OAuth client id for --schema-registry-issuer.
    #[arg(long, env = "WIRE_GUARD_SCHEMA_REGISTRY_CLIENT_ID")]
    pub schema_registry_client_id: Option<String>,
    /// OAuth client secret for --schema-registry-issuer (prefer the environment variable).
    #[arg(
        long,
        env = "WIRE_GUARD_SCHEMA_REGISTRY_CLIENT_SECRET",
        hide_env_values = true
    )]
    pub schema_registry_client_secret: Option<String>,
    /// Seconds writing one batch of dead letters may take, retries included [default: 30].
    #[arg(long, env = "WIRE_GUARD_DEAD_LETTER_TIMEOUT_SECS")]
    pub dead_letter_timeout_secs: Option<u64>,
    /// SASL mechanism for wire-guard's own connections to the cluster (dead letters): PLAIN,
    /// SCRAM-SHA-256 or SCRAM-SHA-512. Client connections keep their own SASL.
    #[arg(
        long,
        env = "WIRE_GUARD_DEAD_LETTER_SASL_MECHANISM",
        requires = "dead_letter_sasl_username"
    )]
    pub dead_letter_sasl_mechanism: Option<String>,
    /// User for --dead-letter-sasl-mechanism.
    #[arg(long, env = "WIRE_GUARD_DEAD_LETTER_SASL_USERNAME")]
    pub dead_letter_sasl_username: Option<String>,
    /// Password for --dead-letter-sasl-mechanism (prefer the environment variable).
    #[arg(
        long,
        env = "WIRE_GUARD_DEAD_LETTER_SASL_PASSWORD",
        hide_env_values = true
    )]
    pub dead_letter_sasl_password: Option<String>,
    /// Most bytes one governed partition's batches in a Produce request may decompress to
    /// [default: 67108864]; beyond it the partition is refused RECORD_LIST_TOO_LARGE.
    #[arg(long, env = "WIRE_GUARD_MAX_DECOMPRESSED_BYTES")]
    pub max_decompressed_bytes: Option<usize>,
    /// The largest record batch the brokers accept, their `max.message.bytes` [default:
    /// 1048588]; a batch field protection grows past it is refused MESSAGE_TOO_LARGE.
    #[arg(long, env = "WIRE_GUARD_MAX_BATCH_BYTES")]
    pub max_batch_bytes: Option<usize>,
    /// Local keyring file serving `local:` keys to field protection (mode 600; see
    /// docs/field-protection.md). The cache and retry bounds are set in the config file's
    /// `kms:` section.
    #[arg(long, env = "WIRE_GUARD_KMS_LOCAL_KEYRING")]
    pub kms_local_keyring: Option<PathBuf>,
    /// AWS region of the `aws-kms:` keys; without it the standard AWS chain decides.
    #[arg(long, env = "WIRE_GUARD_KMS_AWS_REGION")]
    pub kms_aws_region: Option<String>,
    /// Another AWS KMS endpoint than the region's (a VPC endpoint, or an emulator); enables
    /// `aws-kms:` keys like --kms-aws-region does.
    #[arg(long, env = "WIRE_GUARD_KMS_AWS_ENDPOINT")]
    pub kms_aws_endpoint: Option<String>,
    /// Log format: text or json.
    #[arg(long, env = "WIRE_GUARD_LOG_FORMAT", default_value = "text")]
    pub log_format: shared::telemetry::LogFormat,
}

/// The `--config` file: the same settings as the flags, in snake_case.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    upstream: Option<Vec<String>>,
    listen: Option<SocketAddr>,
    advertised_host: Option<String>,
    broker_port_base: Option<u16>,
    policies: Option<PathBuf>,
    admin_listen: Option<SocketAddr>,
    max_frame_bytes: Option<usize>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_client_ca: Option<PathBuf>,
    upstream_tls_ca: Option<PathBuf>,
    upstream_tls_cert: Option<PathBuf>,
    upstream_tls_key: Option<PathBuf>,
    drain_timeout_secs: Option<u64>,
    max_connections: Option<usize>,
    max_connections_per_ip: Option<usize>,
    first_request_timeout_secs: Option<u64>,
    idle_timeout_secs: Option<u64>,
    frame_timeout_secs: Option<u64>,
    auth_timeout_secs: Option<u64>,
    request_timeout_secs: Option<u64>,
    join_timeout_secs: Option<u64>,
    max_sasl_frame_bytes: Option<usize>,
    buffer_budget_bytes: Option<usize>,
    schema_registry_url: Option<String>,
    schema_registry_issuer: Option<String>,
    schema_registry_client_id: Option<String>,
    schema_registry_client_secret: Option<String>,
    dead_letter_timeout_secs: Option<u64>,
    dead_letter_sasl_mechanism: Option<String>,
    dead_letter_sasl_username: Option<String>,
    dead_letter_sasl_password: Option<String>,
    max_decompressed_bytes: Option<usize>,
    max_batch_bytes: Option<usize>,
    kms: Option<crate::kms::KmsConfig>,
}

/// A resolved command line: where to listen, and the configuration to run with.
#[derive(Debug)]
pub struct Resolved {
    pub listen: SocketAddr,
    pub config: Config,
}

impl Args {
    /// Merges flags over the config file and validates the result, listing every problem.
    pub fn resolve(self) -> Result<Resolved, Vec<String>> {
        let mut errors = Vec::new();
        let file = match &self.config {
            Some(path) => match std::fs::read_to_string(path) {
                Ok(text) => serde_saphyr::from_str::<FileConfig>(&text).unwrap_or_else(|e| {
                    errors.push(format!("{}: {e}", path.display()));
                    FileConfig::default()
                }),
                Err(e) => {
                    errors.push(format!("{}: {e}", path.display()));
                    FileConfig::default()
                }
            },
            None => FileConfig::default(),
        };

        let upstreams = if self.upstream.is_empty() {
            file.upstream.unwrap_or_default()
        } else {
            self.upstream
        };
        if upstreams.is_empty() {
            errors.push(
                "no upstream: set --upstream HOST:PORT (or upstream: in the config file)".into(),
            );
        }
        for u in &upstreams {
            let valid = u
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !valid {
                errors.push(format!("upstream {u:?} is not HOST:PORT"));
            }
        }

        let listen = self.listen.or(file.listen);
        if listen.is_none() {
            errors.push("no listen address: set --listen HOST:PORT".into());
        }
        let advertised_host = self.advertised_host.or(file.advertised_host).or_else(|| {
            listen
                .filter(|l| !l.ip().is_unspecified())
                .map(|l| l.ip().to_string())
        });
        if advertised_host.is_none() && listen.is_some() {
            errors.push(
                "--listen is a wildcard address: set --advertised-host to the name clients use"
                    .into(),
            );
        }
        let broker_port_base = self.broker_port_base.or(file.broker_port_base);
        if broker_port_base.is_none() && listen.is_some_and(|l| l.port() == 0) {
            errors.push("--listen port 0 needs an explicit --broker-port-base".into());
        }

        let max_frame_bytes = self
            .max_frame_bytes
            .or(file.max_frame_bytes)
            .unwrap_or(DEFAULT_MAX_FRAME_BYTES);
        if max_frame_bytes < 64 {
            errors.push(format!(
                "max frame bytes {max_frame_bytes} is too small to carry a request"
            ));
        }

        let client_tls = match (
            self.tls_cert.or(file.tls_cert),
            self.tls_key.or(file.tls_key),
        ) {
            (Some(cert), Some(key)) => Some(ClientTls {
                cert,
                key,
                client_ca: self.tls_client_ca.or(file.tls_client_ca),
            }),
            (None, None) => None,
            _ => {
                errors.push("tls_cert and tls_key must be set together".into());
                None
            }
        };
        let identity = match (
            self.upstream_tls_cert.or(file.upstream_tls_cert),
            self.upstream_tls_key.or(file.upstream_tls_key),
        ) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => {
                errors.push("upstream_tls_cert and upstream_tls_key must be set together".into());
                None
            }
        };
        let upstream_tls = match self.upstream_tls_ca.or(file.upstream_tls_ca) {
            Some(ca) => Some(UpstreamTls { ca, identity }),
            None if identity.is_some() => {
                errors.push("an upstream client certificate needs --upstream-tls-ca".into());
                None
            }
            None => None,
        };

        let mut limits = Limits::default();
        let counts = [
            (
                "max_connections",
                self.max_connections.or(file.max_connections),
                &mut limits.max_connections,
            ),
            (
                "max_connections_per_ip",
                self.max_connections_per_ip.or(file.max_connections_per_ip),
                &mut limits.max_connections_per_ip,
            ),
            (
                "max_sasl_frame_bytes",
                self.max_sasl_frame_bytes.or(file.max_sasl_frame_bytes),
                &mut limits.max_sasl_frame_bytes,
            ),
            (
                "buffer_budget_bytes",
                self.buffer_budget_bytes.or(file.buffer_budget_bytes),
                &mut limits.buffer_budget_bytes,
            ),
        ];
        for (name, value, slot) in counts {
            match value {
                Some(0) => errors.push(format!("{name} must be at least 1")),
                Some(v) => *slot = v,
                None => {}
            }
        }
        let timeouts = [
            (
                "first_request_timeout_secs",
                self.first_request_timeout_secs
                    .or(file.first_request_timeout_secs),
                &mut limits.first_request_timeout,
            ),
            (
                "idle_timeout_secs",
                self.idle_timeout_secs.or(file.idle_timeout_secs),
                &mut limits.idle_timeout,
            ),
            (
                "frame_timeout_secs",
                self.frame_timeout_secs.or(file.frame_timeout_secs),
                &mut limits.frame_timeout,
            ),
            (
                "auth_timeout_secs",
                self.auth_timeout_secs.or(file.auth_timeout_secs),
                &mut limits.auth_timeout,
            ),
            (
                "request_timeout_secs",
                self.request_timeout_secs.or(file.request_timeout_secs),
                &mut limits.request_timeout,
            ),
            (
                "join_timeout_secs",
                self.join_timeout_secs.or(file.join_timeout_secs),
                &mut limits.join_timeout,
            ),
        ];
        for (name, value, slot) in timeouts {
            match value {
                Some(0) => errors.push(format!("{name} must be at least 1")),
                Some(secs) => *slot = Duration::from_secs(secs),
                None => {}
            }
        }
        if limits.buffer_budget_bytes < limits.max_sasl_frame_bytes {
            errors.push(format!(
                "buffer_budget_bytes ({}) must hold at least one SASL frame (max_sasl_frame_bytes {})",
                limits.buffer_budget_bytes, limits.max_sasl_frame_bytes
            ));
        }

        let dead_letter_login = match self
            .dead_letter_sasl_mechanism
            .clone()
            .or(file.dead_letter_sasl_mechanism.clone())
        {
            None => None,
            Some(name) => match Mechanism::parse(&name) {
                Some(mechanism) => Some(Credentials {
                    mechanism,
                    username: self
                        .dead_letter_sasl_username
                        .clone()
                        .or(file.dead_letter_sasl_username.clone())
                        .unwrap_or_default(),
                    password: self
                        .dead_letter_sasl_password
                        .clone()
                        .or(file.dead_letter_sasl_password.clone())
                        .unwrap_or_default(),
                }),
                None => {
                    errors.push(format!(
                        "dead_letter_sasl_mechanism {name:?} is not PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"
                    ));
                    None
                }
            },
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        let (Some(listen), Some(advertised_host)) = (listen, advertised_host) else {
            return Err(vec!["listen address missing".into()]);
        };
        let mut config = Config::new(upstreams, advertised_host);
        config.broker_port_base = broker_port_base;
        config.admin_listen = self.admin_listen.or(file.admin_listen);
        config.max_frame_bytes = max_frame_bytes;
        config.client_tls = client_tls;
        config.upstream_tls = upstream_tls;
        config.policies = self.policies.or(file.policies);
        if let Some(secs) = self.drain_timeout_secs.or(file.drain_timeout_secs) {
            config.drain_timeout = Duration::from_secs(secs);
        }
        config.limits = limits;
        if let Some(url) = self.schema_registry_url.or(file.schema_registry_url) {
            let credentials = self
                .schema_registry_issuer
                .or(file.schema_registry_issuer)
                .map(|issuer| ClientCredentials {
                    issuer,
                    client_id: self
                        .schema_registry_client_id
                        .or(file.schema_registry_client_id)
                        .unwrap_or_default(),
                    client_secret: self
                        .schema_registry_client_secret
                        .or(file.schema_registry_client_secret)
                        .unwrap_or_default(),
                    scopes: Vec::new(),
                });
            let mut registry = RegistryConfig::new(url);
            registry.credentials = credentials;
            config.schema_registry = Some(registry);
        }
        if let Some(secs) = self
            .dead_letter_timeout_secs
            .or(file.dead_letter_timeout_secs)
        {
            config.dead_letter_timeout = Duration::from_secs(secs.max(1));
        }
        config.dead_letter_login = dead_letter_login;
        if let Some(bytes) = self.max_decompressed_bytes.or(file.max_decompressed_bytes) {
            config.max_decompressed_bytes = bytes.max(1);
        }
        if let Some(bytes) = self.max_batch_bytes.or(file.max_batch_bytes) {
            config.max_batch_bytes = bytes.max(1);
        }
        let mut kms = file.kms.clone();
        if let Some(path) = &self.kms_local_keyring {
            kms.get_or_insert_with(Default::default).local =
                Some(crate::kms::LocalKeyringConfig { path: path.clone() });
        }
        if self.kms_aws_region.is_some() || self.kms_aws_endpoint.is_some() {
            let aws = kms
                .get_or_insert_with(Default::default)
                .aws
                .get_or_insert_with(Default::default);
            if let Some(region) = &self.kms_aws_region {
                aws.region = Some(region.clone());
            }
            if let Some(endpoint) = &self.kms_aws_endpoint {
                aws.endpoint_url = Some(endpoint.clone());
            }
        }
        config.kms = kms;
        Ok(Resolved { listen, config })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Resolved, Vec<String>> {
        Args::try_parse_from(std::iter::once("wire-guard").chain(args.iter().copied()))
            .expect("flags parse")
            .resolve()
    }

    #[test]
    fn minimal_command_line() {
        let r = parse(&[
            "--upstream",
            "b1:9092,b2:9092",
            "--listen",
            "127.0.0.1:19092",
        ])
        .unwrap();
        assert_eq!(r.config.upstreams, ["b1:9092", "b2:9092"]);
        assert_eq!(r.config.advertised_host, "127.0.0.1");
        assert_eq!(r.config.broker_port_base, None);
    }

    #[test]
    fn every_problem_is_listed_at_once() {
        let errors = parse(&["--upstream", "nohost", "--listen", "0.0.0.0:0"]).unwrap_err();
        assert!(
            errors
                .iter()
                .any(|e| e.contains("\"nohost\" is not HOST:PORT")),
            "{errors:?}"
        );
        assert!(
            errors.iter().any(|e| e.contains("--advertised-host")),
            "{errors:?}"
        );
        assert!(
            errors.iter().any(|e| e.contains("--broker-port-base")),
            "{errors:?}"
        );
    }

    #[test]
    fn limits_come_from_flags_or_defaults_and_zero_is_refused() {
        let r = parse(&[
            "--upstream",
            "b1:9092",
            "--listen",
            "127.0.0.1:19092",
            "--max-connections",
            "50",
            "--request-timeout-secs",
            "7",
        ])
        .unwrap();
        assert_eq!(r.config.limits.max_connections, 50);
        assert_eq!(r.config.limits.request_timeout, Duration::from_secs(7));
        assert_eq!(r.config.limits.idle_timeout, Limits::default().idle_timeout);
        let errors = parse(&[
            "--upstream",
            "b1:9092",
            "--listen",
            "127.0.0.1:19092",
            "--idle-timeout-secs",
            "0",
            "--buffer-budget-bytes",
            "1024",
        ])
        .unwrap_err();
        assert!(
            errors.iter().any(|e| e.contains("idle_timeout_secs")),
            "{errors:?}"
        );
        assert!(
            errors.iter().any(|e| e.contains("buffer_budget_bytes")),
            "{errors:?}"
        );
    }

    #[test]
    fn data_quality_settings_come_from_flags() {
        let r = parse(&[
            "--upstream",
            "b1:9092",
            "--listen",
            "127.0.0.1:19092",
            "--schema-registry-url",
            "http://registry-proxy:8081",
            "--schema-registry-issuer",
            "http://idp",
            "--schema-registry-client-id",
            "wire-guard",
            "--schema-registry-client-secret",
            "s3cret",
            "--dead-letter-sasl-mechanism",
            "scram-sha-512",
            "--dead-letter-sasl-username",
            "wg",
            "--dead-letter-sasl-password",
            "pw",
        ])
        .unwrap();
        let registry = r.config.schema_registry.expect("registry");
        assert_eq!(registry.url, "http://registry-proxy:8081");
        let credentials = registry.credentials.expect("credentials");
        assert_eq!(credentials.client_id, "wire-guard");
        assert!(
            !format!("{credentials:?}").contains("s3cret"),
            "secrets stay out of logs"
        );
        let login = r.config.dead_letter_login.expect("login");
        assert_eq!(login.mechanism, Mechanism::ScramSha512);
        assert!(!format!("{login:?}").contains("pw\""));
        let errors = parse(&[
            "--upstream",
            "b1:9092",
            "--listen",
            "127.0.0.1:19092",
            "--dead-letter-sasl-mechanism",
            "GSSAPI",
            "--dead-letter-sasl-username",
            "wg",
        ])
        .unwrap_err();
        assert!(errors.iter().any(|e| e.contains("GSSAPI")), "{errors:?}");
    }

    #[test]
    fn config_file_is_overridden_by_flags_and_rejects_unknown_keys() {
        let dir = std::env::temp_dir().join(format!("wg-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.yaml");
        std::fs::write(
            &good,
            "upstream: [\"a:1\"]\nlisten: 127.0.0.1:9000\nadvertised_host: proxy.example\ndrain_timeout_secs: 5\n",
        )
        .unwrap();
        let r = parse(&["--config", good.to_str().unwrap(), "--upstream", "b:2"]).unwrap();
        assert_eq!(r.config.upstreams, ["b:2"]);
        assert_eq!(r.config.advertised_host, "proxy.example");
        assert_eq!(r.config.drain_timeout, Duration::from_secs(5));

        let bad = dir.join("bad.yaml");
        std::fs::write(
            &bad,
            "upstream: [\"a:1\"]\nlisten: 127.0.0.1:9000\nlisten_port: 3\n",
        )
        .unwrap();
        let errors = parse(&["--config", bad.to_str().unwrap()]).unwrap_err();
        assert!(
            errors
                .iter()
                .any(|e| e.contains("bad.yaml") && e.contains("listen_port")),
            "{errors:?}"
        );
    }
}
