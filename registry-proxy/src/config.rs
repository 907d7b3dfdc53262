//! Configuration: command line, environment, and an optional YAML file.
//!
//! Precedence: command-line flag, then its environment variable, then the file, then the
//! default. [`Config::validate`] lists every problem at once, before anything listens.

use std::{net::SocketAddr, path::PathBuf};

use clap::Parser;
use serde::Deserialize;

use crate::{
    audit::{AuditSink, OnAuditFailure},
    endpoints::Flavor,
    error::Error,
};

/// OIDC-authenticated, per-subject-authorized, audited proxy for schema registries
/// (Confluent, Karapace, Apicurio). Clients change only `schema.registry.url`.
#[derive(Debug, Parser, Default)]
#[command(name = "registry-proxy", version)]
pub struct Cli {
    /// Upstream registry base URL, e.g. http://registry:8081.
    #[arg(long, env = "REGISTRY_PROXY_UPSTREAM")]
    pub upstream: Option<String>,
    /// Upstream API family.
    #[arg(long, env = "REGISTRY_PROXY_UPSTREAM_KIND", value_enum)]
    pub upstream_kind: Option<Flavor>,
    /// Address to serve clients on.
    #[arg(long, env = "REGISTRY_PROXY_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Address for /metrics, /healthz and /readyz.
    #[arg(long, env = "REGISTRY_PROXY_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,
    /// Directory of policy files (*.yaml), reloaded when they change.
    #[arg(long, env = "REGISTRY_PROXY_POLICIES")]
    pub policies: Option<PathBuf>,
    /// OIDC issuer URL; discovery is read from ISSUER/.well-known/openid-configuration.
    #[arg(long, env = "REGISTRY_PROXY_OIDC_ISSUER")]
    pub oidc_issuer: Option<String>,
    /// Accepted token audience (repeat or comma-separate for several).
    #[arg(long, env = "REGISTRY_PROXY_OIDC_AUDIENCE", value_delimiter = ',')]
    pub oidc_audience: Vec<String>,
    /// Claim naming the principal (default sub).
    #[arg(long, env = "REGISTRY_PROXY_PRINCIPAL_CLAIM")]
    pub principal_claim: Option<String>,
    /// Claim listing the principal's groups (default groups).
    #[arg(long, env = "REGISTRY_PROXY_GROUPS_CLAIM")]
    pub groups_claim: Option<String>,
    /// Username for HTTP basic authentication to the upstream.
    #[arg(long, env = "REGISTRY_PROXY_UPSTREAM_USERNAME")]
    pub upstream_username: Option<String>,
    /// Password for HTTP basic authentication to the upstream.
    #[arg(long, env = "REGISTRY_PROXY_UPSTREAM_PASSWORD", hide_env_values = true)]
    pub upstream_password: Option<String>,
    /// Bearer token for the upstream.
    #[arg(long, env = "REGISTRY_PROXY_UPSTREAM_TOKEN", hide_env_values = true)]
    pub upstream_token: Option<String>,
    /// Audit sink: `stdout` or a file path (appended).
    #[arg(long, env = "REGISTRY_PROXY_AUDIT")]
    pub audit: Option<AuditSink>,
    /// When audit records cannot be written: `refuse` requests (503) or `serve` them anyway.
    #[arg(long, env = "REGISTRY_PROXY_AUDIT_ON_FAILURE", value_enum)]
    pub audit_on_failure: Option<OnAuditFailure>,
    /// Audit records queued or reserved by requests in flight, at most.
    #[arg(long, env = "REGISTRY_PROXY_AUDIT_QUEUE_RECORDS")]
    pub audit_queue_records: Option<usize>,
    /// Open client connections, at most; more are closed at once.
    #[arg(long, env = "REGISTRY_PROXY_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Open connections from one client IP address, at most.
    #[arg(long, env = "REGISTRY_PROXY_MAX_CONNECTIONS_PER_IP")]
    pub max_connections_per_ip: Option<usize>,
    /// Time allowed for a request head, from its first byte, milliseconds.
    #[arg(long, env = "REGISTRY_PROXY_HEADER_READ_TIMEOUT_MS")]
    pub header_read_timeout_ms: Option<u64>,
    /// Time a connection may stay idle between requests, milliseconds.
    #[arg(long, env = "REGISTRY_PROXY_IDLE_TIMEOUT_MS")]
    pub idle_timeout_ms: Option<u64>,
    /// Time allowed for a request body, milliseconds.
    #[arg(long, env = "REGISTRY_PROXY_BODY_READ_TIMEOUT_MS")]
    pub body_read_timeout_ms: Option<u64>,
    /// Request line plus headers, bytes (8192 to 65534).
    #[arg(long, env = "REGISTRY_PROXY_MAX_HEADER_BYTES")]
    pub max_header_bytes: Option<usize>,
    /// Request target (path and query), bytes.
    #[arg(long, env = "REGISTRY_PROXY_MAX_URI_BYTES")]
    pub max_uri_bytes: Option<usize>,
    /// Request body, bytes.
    #[arg(long, env = "REGISTRY_PROXY_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Upstream response body, bytes; larger answers become 502.
    #[arg(long, env = "REGISTRY_PROXY_MAX_UPSTREAM_BODY_BYTES")]
    pub max_upstream_body_bytes: Option<usize>,
    /// Longest accepted token lifetime (`exp` - `iat`), seconds.
    #[arg(long, env = "REGISTRY_PROXY_OIDC_MAX_TOKEN_LIFETIME_SECS")]
    pub oidc_max_token_lifetime_secs: Option<u64>,
    /// Signature verifications per second per client IP for tokens not already validated
    /// (0: unlimited).
    #[arg(long, env = "REGISTRY_PROXY_OIDC_VERIFY_RATE_PER_IP")]
    pub oidc_verify_rate_per_ip: Option<u32>,
    /// Verifications one client IP may make in a burst above the rate.
    #[arg(long, env = "REGISTRY_PROXY_OIDC_VERIFY_BURST")]
    pub oidc_verify_burst: Option<u32>,
    /// `audit`: log decisions but let denied requests through (for rolling out a policy).
    #[arg(long, env = "REGISTRY_PROXY_MODE", value_enum)]
    pub mode: Option<Mode>,
    /// YAML configuration file; flags and environment override it.
    #[arg(long, env = "REGISTRY_PROXY_CONFIG")]
    pub config: Option<PathBuf>,
}

/// Enforce decisions, or only record them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Enforce,
    Audit,
}

/// How the proxy authenticates to the upstream registry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamAuth {
    pub username: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    /// Forward the client's own bearer token instead (off by default: the registry then sees
    /// tokens minted for the proxy's audience).
    #[serde(default)]
    pub forward_client_token: bool,
    /// Set `X-Forwarded-User`/`X-Forwarded-Groups` from the validated principal, for
    /// Apicurio's proxy-header authentication. Client-sent copies are always stripped.
    #[serde(default)]
    pub identity_headers: bool,
}

/// Token validation settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OidcConfig {
    pub issuer: String,
    pub audience: Vec<String>,
    /// Skip discovery and fetch keys here.
    pub jwks_uri: Option<String>,
    pub principal_claim: String,
    pub groups_claim: String,
    pub client_id_claims: Vec<String>,
    /// Clock skew allowed on exp/nbf/iat, seconds (at most 300).
    pub leeway_secs: u64,
    /// Periodic JWKS refetch, seconds.
    pub jwks_refresh_secs: u64,
    /// Minimum spacing of refetches triggered by unknown key ids, milliseconds.
    pub jwks_min_refetch_ms: u64,
    /// How long a validated token is remembered, seconds (0 disables).
    pub token_cache_secs: u64,
    /// How long a token that failed validation is remembered as failed, seconds (0
    /// disables), so replaying a forged token costs no second signature check.
    pub failed_token_cache_secs: u64,
    /// Longest accepted `exp - iat` (from now when there is no `iat`), seconds: a leaked
    /// long-lived token is refused even while it is unexpired.
    pub max_token_lifetime_secs: u64,
    /// Signature verifications per second per client IP for tokens in neither cache; more
    /// are answered 429. 0 disables the limit.
    pub verify_rate_per_ip: u32,
    /// Verifications one client IP may make at once above the rate.
    pub verify_burst: u32,
}

impl Default for OidcConfig {
    fn default() -> Self {
        Self {
            issuer: String::new(),
            audience: Vec::new(),
            jwks_uri: None,
            principal_claim: "sub".into(),
            groups_claim: "groups".into(),
            client_id_claims: vec!["azp".into(), "client_id".into()],
            leeway_secs: 30,
            jwks_refresh_secs: 300,
            jwks_min_refetch_ms: 10_000,
            token_cache_secs: 60,
            failed_token_cache_secs: 10,
            max_token_lifetime_secs: 86_400,
            verify_rate_per_ip: 20,
            verify_burst: 40,
        }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub upstream: String,
    pub upstream_kind: Flavor,
    pub listen: SocketAddr,
    pub admin_listen: Option<SocketAddr>,
    pub policies: PathBuf,
    pub policy_poll_ms: u64,
    pub oidc: OidcConfig,
    pub upstream_auth: UpstreamAuth,
    pub upstream_timeout_ms: u64,
    pub audit: AuditSink,
    /// What happens to requests while records cannot be written.
    pub audit_on_failure: OnAuditFailure,
    /// Bound on records queued for the writer plus records reserved by requests in flight:
    /// the memory a stalled sink can hold.
    pub audit_queue_records: usize,
    pub mode: Mode,
    /// Bound on the schema-by-id response cache.
    pub cache_max_entries: usize,
    /// How long "which subjects use id N" is trusted, seconds.
    pub id_subjects_ttl_secs: u64,
    /// Apicurio runs with `apicurio.ccompat.legacy-id-mode.enabled=true`: its ccompat schema
    /// ids are global ids, not content ids, and are looked up as such.
    pub apicurio_legacy_id_mode: bool,
    /// Open client connections; more are closed on accept.
    pub max_connections: usize,
    /// Open connections per client IP, so one client cannot take every slot.
    pub max_connections_per_ip: usize,
    /// A request head must be complete this long after its first byte (slow-header clients).
    pub header_read_timeout_ms: u64,
    /// A connection with no request in progress is closed after this long.
    pub idle_timeout_ms: u64,
    /// A request body must arrive within this long (slow-body clients); 408 otherwise.
    pub body_read_timeout_ms: u64,
    /// Request line plus headers; more is answered 431 by the HTTP layer. Also hyper's read
    /// buffer, so it bounds what a connection buffers before a request is parsed.
    pub max_header_bytes: usize,
    /// Path plus query; longer targets are answered 414.
    pub max_uri_bytes: usize,
    pub max_body_bytes: usize,
    /// Upstream response bodies are read up to this size, then answered 502.
    pub max_upstream_body_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            upstream: String::new(),
            upstream_kind: Flavor::Confluent,
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_listen: None,
            policies: PathBuf::from("policies"),
            policy_poll_ms: 2000,
            oidc: OidcConfig::default(),
            upstream_auth: UpstreamAuth::default(),
            upstream_timeout_ms: 30_000,
            audit: AuditSink::Stdout,
            audit_on_failure: OnAuditFailure::Refuse,
            audit_queue_records: 4096,
            mode: Mode::Enforce,
            cache_max_entries: 10_000,
            id_subjects_ttl_secs: 30,
            apicurio_legacy_id_mode: false,
            max_connections: 1024,
            max_connections_per_ip: 128,
            header_read_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            body_read_timeout_ms: 30_000,
            max_header_bytes: 32 * 1024,
            max_uri_bytes: 8 * 1024,
            max_body_bytes: 16 * 1024 * 1024,
            max_upstream_body_bytes: 32 * 1024 * 1024,
        }
    }
}

impl Config {
    /// File (if any), then command line and environment on top.
    pub fn from_cli(cli: Cli) -> Result<Self, Error> {
        let mut config = match &cli.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| Error::Config(vec![format!("{}: {e}", path.display())]))?;
                serde_saphyr::from_str::<Config>(&text)
                    .map_err(|e| Error::Config(vec![format!("{}: {e}", path.display())]))?
            }
            None => Config::default(),
        };
        macro_rules! set {
            ($field:expr, $value:expr) => {
                if let Some(v) = $value {
                    $field = v;
                }
            };
        }
        set!(config.upstream, cli.upstream);
        set!(config.upstream_kind, cli.upstream_kind);
        set!(config.listen, cli.listen);
        config.admin_listen = cli.admin_listen.or(config.admin_listen);
        set!(config.policies, cli.policies);
        set!(config.oidc.issuer, cli.oidc_issuer);
        if !cli.oidc_audience.is_empty() {
            config.oidc.audience = cli.oidc_audience;
        }
        set!(config.oidc.principal_claim, cli.principal_claim);
        set!(config.oidc.groups_claim, cli.groups_claim);
        config.upstream_auth.username = cli.upstream_username.or(config.upstream_auth.username);
        config.upstream_auth.password = cli.upstream_password.or(config.upstream_auth.password);
        config.upstream_auth.token = cli.upstream_token.or(config.upstream_auth.token);
        set!(config.audit, cli.audit);
        set!(config.audit_on_failure, cli.audit_on_failure);
        set!(config.audit_queue_records, cli.audit_queue_records);
        set!(config.mode, cli.mode);
        set!(config.max_connections, cli.max_connections);
        set!(config.max_connections_per_ip, cli.max_connections_per_ip);
        set!(config.header_read_timeout_ms, cli.header_read_timeout_ms);
        set!(config.idle_timeout_ms, cli.idle_timeout_ms);
        set!(config.body_read_timeout_ms, cli.body_read_timeout_ms);
        set!(config.max_header_bytes, cli.max_header_bytes);
        set!(config.max_uri_bytes, cli.max_uri_bytes);
        set!(config.max_body_bytes, cli.max_body_bytes);
        set!(config.max_upstream_body_bytes, cli.max_upstream_body_bytes);
        set!(
            config.oidc.max_token_lifetime_secs,
            cli.oidc_max_token_lifetime_secs
        );
        set!(config.oidc.verify_rate_per_ip, cli.oidc_verify_rate_per_ip);
        set!(config.oidc.verify_burst, cli.oidc_verify_burst);
        config.validate()?;
        Ok(config)
    }

    /// Every problem, at once.
    pub fn validate(&self) -> Result<(), Error> {
        let mut errors = Vec::new();
        if !(self.upstream.starts_with("http://") || self.upstream.starts_with("https://")) {
            errors.push("upstream: an http:// or https:// URL is required (--upstream)".to_owned());
        }
        if self.upstream.ends_with('/') {
            errors.push("upstream: drop the trailing '/'".to_owned());
        }
        if self.oidc.issuer.is_empty() {
            errors.push(
                "oidc.issuer: required; every request is authenticated (--oidc-issuer)".to_owned(),
            );
        }
        if self.oidc.audience.is_empty() || self.oidc.audience.iter().any(String::is_empty) {
            errors.push(
                "oidc.audience: at least one non-empty audience is required (--oidc-audience)"
                    .to_owned(),
            );
        }
        if self.oidc.leeway_secs > 300 {
            errors.push("oidc.leeway_secs: at most 300".to_owned());
        }
        if self.oidc.principal_claim.is_empty() || self.oidc.groups_claim.is_empty() {
            errors.push("oidc.principal_claim / groups_claim: must not be empty".to_owned());
        }
        if self.oidc.jwks_refresh_secs == 0 {
            errors.push("oidc.jwks_refresh_secs: must be positive".to_owned());
        }
        let auth = &self.upstream_auth;
        if auth.username.is_some() != auth.password.is_some() {
            errors.push("upstream_auth: username and password go together".to_owned());
        }
        let schemes = usize::from(auth.username.is_some())
            + usize::from(auth.token.is_some())
            + usize::from(auth.forward_client_token);
        if schemes > 1 {
            errors.push("upstream_auth: choose one of basic (username/password), token, or forward_client_token".to_owned());
        }
        if self.cache_max_entries == 0 {
            errors.push("cache_max_entries: must be positive".to_owned());
        }
        if self.oidc.max_token_lifetime_secs == 0 {
            errors.push("oidc.max_token_lifetime_secs: must be positive".to_owned());
        }
        if self.oidc.verify_rate_per_ip > 0 && self.oidc.verify_burst == 0 {
            errors.push(
                "oidc.verify_burst: must be positive while verify_rate_per_ip limits".to_owned(),
            );
        }
        for (name, value) in [
            ("audit_queue_records", self.audit_queue_records),
            ("max_connections", self.max_connections),
            ("max_connections_per_ip", self.max_connections_per_ip),
            ("max_uri_bytes", self.max_uri_bytes),
            ("max_body_bytes", self.max_body_bytes),
            ("max_upstream_body_bytes", self.max_upstream_body_bytes),
        ] {
            if value == 0 {
                errors.push(format!("{name}: must be positive"));
            }
        }
        for (name, value) in [
            ("header_read_timeout_ms", self.header_read_timeout_ms),
            ("idle_timeout_ms", self.idle_timeout_ms),
            ("body_read_timeout_ms", self.body_read_timeout_ms),
        ] {
            if value == 0 {
                errors.push(format!("{name}: must be positive"));
            }
        }
        // hyper's read buffer has a floor of 8192 bytes; above 65534 hyper would answer a long
        // request target 414 instead of 431, and nothing legitimate needs that much.
        if !(8192..=65_534).contains(&self.max_header_bytes) {
            errors.push("max_header_bytes: between 8192 and 65534".to_owned());
        }
        if self.max_uri_bytes >= self.max_header_bytes {
            errors.push("max_uri_bytes: must be below max_header_bytes".to_owned());
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Error::Config(errors))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_lists_every_problem() {
        let config = Config {
            upstream_auth: UpstreamAuth {
                username: Some("u".into()),
                token: Some("t".into()),
                ..Default::default()
            },
            ..Config::default()
        };
        let Err(Error::Config(errors)) = config.validate() else {
            panic!("validated")
        };
        assert_eq!(errors.len(), 5, "{errors:#?}");
    }

    #[test]
    fn limits_come_from_flags_and_are_checked() {
        let cli = Cli::try_parse_from([
            "registry-proxy",
            "--upstream=http://registry:8081",
            "--oidc-issuer=https://idp",
            "--oidc-audience=registry-proxy",
            "--max-connections=7",
            "--max-header-bytes=4096",
            "--oidc-verify-rate-per-ip=0",
            "--audit-on-failure=serve",
        ])
        .unwrap();
        let Err(Error::Config(errors)) = Config::from_cli(cli) else {
            panic!("a 4096-byte header limit is below hyper's floor")
        };
        assert_eq!(
            errors,
            [
                "max_header_bytes: between 8192 and 65534",
                "max_uri_bytes: must be below max_header_bytes"
            ]
        );
        let cli = Cli::try_parse_from([
            "registry-proxy",
            "--upstream=http://registry:8081",
            "--oidc-issuer=https://idp",
            "--oidc-audience=registry-proxy",
            "--max-connections=7",
            "--oidc-verify-rate-per-ip=0",
            "--audit-on-failure=serve",
        ])
        .unwrap();
        let config = Config::from_cli(cli).unwrap();
        assert_eq!(config.max_connections, 7);
        assert_eq!(config.oidc.verify_rate_per_ip, 0, "0 lifts the limit");
        assert_eq!(config.audit_on_failure, OnAuditFailure::Serve);
        assert_eq!(
            (config.max_header_bytes, config.idle_timeout_ms),
            (32 * 1024, 60_000),
            "defaults"
        );
    }

    #[test]
    fn file_keys_are_checked() {
        let err =
            serde_saphyr::from_str::<Config>("upstream: http://x\nupstreem: y\n").unwrap_err();
        assert!(err.to_string().contains("upstreem"), "{err}");
    }
}
