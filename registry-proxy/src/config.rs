//! Configuration: command line, environment, and an optional YAML file.
//!
//! Precedence: command-line flag, then its environment variable, then the file, then the
//! default. [`Config::validate`] lists every problem at once, before anything listens.

use std::{net::SocketAddr, path::PathBuf};

use clap::Parser;
use serde::Deserialize;

use crate::{audit::AuditSink, endpoints::Flavor, error::Error};

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
    pub mode: Mode,
    /// Bound on the schema-by-id response cache.
    pub cache_max_entries: usize,
    /// How long "which subjects use id N" is trusted, seconds.
    pub id_subjects_ttl_secs: u64,
    pub max_body_bytes: usize,
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
            mode: Mode::Enforce,
            cache_max_entries: 10_000,
            id_subjects_ttl_secs: 30,
            max_body_bytes: 16 * 1024 * 1024,
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
        set!(config.mode, cli.mode);
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
        if self.max_body_bytes == 0 {
            errors.push("max_body_bytes: must be positive".to_owned());
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
    fn file_keys_are_checked() {
        let err =
            serde_saphyr::from_str::<Config>("upstream: http://x\nupstreem: y\n").unwrap_err();
        assert!(err.to_string().contains("upstreem"), "{err}");
    }
}
