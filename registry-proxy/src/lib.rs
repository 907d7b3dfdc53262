//! registry-proxy: an OIDC-authenticated, per-subject-authorized, audited HTTP proxy for
//! schema registries (Confluent Schema Registry, Karapace, Apicurio Registry).
//!
//! The proxy decides who may do what; the registry decides everything else: a permitted
//! request gets the registry's own answer, byte for byte unless a list is filtered, and the
//! few places the proxy answers differently are listed in `docs/registry-proxy.md`.
//!
//! How a request flows, and where each step lives:
//!
//! 0. [`server`]: accepts connections within the global and per-address caps, times out idle
//!    connections and slow request heads, and audits what the HTTP layer refuses.
//! 1. [`proxy`]: the pipeline; writes exactly one [`audit`] record per request, and refuses
//!    (503) when records cannot be written ([`health`] then reports not ready).
//! 2. [`canonical`]: decodes the path and query exactly once and refuses anything two parsers
//!    could read differently.
//! 3. [`auth`]: validates the bearer token against the issuer's JWKS ([`auth::jwks`]),
//!    remembering validated and refused tokens and rate-limiting signature checks per
//!    client ([`auth::limit`]), and builds the `shared::principal::Principal`.
//! 4. [`endpoints`]: the endpoint map: method + canonical path -> operation class and
//!    canonical, context-qualified subjects (Confluent's subjects, schemas, config, mode,
//!    contexts, associations, DEK registry and exporters; Apicurio's ccompat and native APIs).
//!    Unknown endpoints are answered 404 (405 for a known path's other methods), never forwarded.
//! 5. [`authz`]: evaluates the policy (`shared::policy`, reloaded from `policies/`), including
//!    grants implied by the body (schema references, config `alias`, association subjects, a
//!    DEK's subject; a body it cannot read needs the grant on every subject), reads by schema id
//!    (the subjects using an id are asked of the registry: Confluent's id versions, Apicurio's
//!    search API) and associations to delete (asked of the registry first).
//! 6. [`cache`]: schema-by-id responses and id -> subjects lookups.
//! 7. [`upstream`]: forwards with the proxy's own credentials and an allowlist of headers,
//!    reading answers up to a size limit.
//!    [`proxy`] then refuses a version or lookup answered for another subject than the one
//!    authorized (Confluent's context fallback) and replaces 5xx bodies.
//! 8. [`filter`]: trims list responses to what the caller may read.
//! 9. [`metrics`], [`error`] (the Confluent error shape), [`config`] (CLI, env, file).

pub mod audit;
pub mod auth;
pub mod authz;
pub mod cache;
pub mod canonical;
pub mod config;
pub mod endpoints;
pub mod error;
pub mod filter;
pub mod health;
pub mod metrics;
pub mod proxy;
pub mod server;
pub mod upstream;

use std::{
    sync::{Arc, atomic::AtomicU64},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use shared::policy::PolicyStore;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::{Cli, Config};
pub use error::Error;

/// Serves the proxy on `listener` until `shutdown` is cancelled. The admin endpoint listens
/// on `config.admin_listen` when set.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let admin = match config.admin_listen {
        Some(addr) => Some(TcpListener::bind(addr).await?),
        None => None,
    };
    run_with_admin(config, listener, admin, shutdown).await
}

/// [`run`], with the admin listener bound by the caller (tests bind port 0).
pub async fn run_with_admin(
    config: Config,
    listener: TcpListener,
    admin: Option<TcpListener>,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    config.validate()?;
    let metrics = metrics::Metrics::new();
    let health = Arc::new(health::Health::default());
    if let Some(admin) = admin {
        let (registry, readiness, shutdown) = (
            metrics.registry.clone(),
            health.readiness(),
            shutdown.clone(),
        );
        tokio::spawn(async move {
            if let Err(e) =
                shared::telemetry::serve_admin(admin, registry, readiness, shutdown).await
            {
                tracing::error!(error = %e, "admin endpoint stopped");
            }
        });
    }

    let policy = Arc::new(PolicyStore::load(&config.policies)?);
    policy.clone().spawn_poller(
        Duration::from_millis(config.policy_poll_ms.max(100)),
        shutdown.clone(),
    );

    let oidc_client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| Error::Oidc(e.to_string()))?;
    let jwks_uri = match &config.oidc.jwks_uri {
        Some(uri) => uri.clone(),
        None => discover_with_retry(&config.oidc.issuer, &oidc_client, &shutdown).await?,
    };
    let template = auth::jwks::ValidationTemplate {
        issuer: config.oidc.issuer.clone(),
        audience: config.oidc.audience.clone(),
        leeway: config.oidc.leeway_secs,
    };
    let jwks = Arc::new(
        auth::jwks::Jwks::new(
            jwks_uri,
            oidc_client,
            template,
            Duration::from_millis(config.oidc.jwks_min_refetch_ms),
            metrics.clone(),
        )
        .await?,
    );
    jwks.clone().spawn_refresh(
        Duration::from_secs(config.oidc.jwks_refresh_secs),
        shutdown.clone(),
    );
    let authenticator = auth::Authenticator::new(
        jwks,
        auth::ClaimNames {
            principal: config.oidc.principal_claim.clone(),
            groups: config.oidc.groups_claim.clone(),
            client_id: config.oidc.client_id_claims.clone(),
        },
        auth::TokenLimits {
            leeway: config.oidc.leeway_secs,
            max_lifetime: config.oidc.max_token_lifetime_secs,
            cache_ttl: Duration::from_secs(config.oidc.token_cache_secs),
            failed_ttl: Duration::from_secs(config.oidc.failed_token_cache_secs),
            cache_max: 10_000,
        },
        auth::limit::VerifyLimiter::new(config.oidc.verify_rate_per_ip, config.oidc.verify_burst),
        metrics.clone(),
    );
    let upstream = upstream::Upstream::new(
        config.upstream.clone(),
        config.upstream_auth.clone(),
        Duration::from_millis(config.upstream_timeout_ms),
        config.max_upstream_body_bytes,
        metrics.clone(),
    )?;
    let (audit, audit_writer) = audit::Audit::start(
        &config.audit,
        config.audit_on_failure,
        config.audit_queue_records,
        health.clone(),
        metrics.clone(),
    )
    .await?;
    let caches = cache::Caches::new(
        config.cache_max_entries,
        Duration::from_secs(config.id_subjects_ttl_secs),
    );
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let state = Arc::new(proxy::AppState {
        config,
        policy,
        auth: authenticator,
        upstream,
        caches,
        audit,
        metrics,
        id_prefix: format!("{:x}{:04x}", started.as_secs(), std::process::id() & 0xffff),
        next_id: AtomicU64::new(1),
    });
    tracing::info!(addr = %listener.local_addr()?, "registry-proxy listening");
    health.set_serving(true);
    {
        // Unready as soon as shutdown starts, while connections drain.
        let (health, shutdown) = (health.clone(), shutdown.clone());
        tokio::spawn(async move {
            shutdown.cancelled().await;
            health.set_serving(false);
        });
    }
    server::serve(listener, state, shutdown).await;
    // Every connection (and with it the last audit sender) is gone; let the writer drain.
    let _ = tokio::time::timeout(Duration::from_secs(5), audit_writer).await;
    Ok(())
}

/// Discovery at startup, retried briefly: a proxy and its identity provider often start
/// together. Gives up (failing startup) rather than run without keys.
async fn discover_with_retry(
    issuer: &str,
    client: &reqwest::Client,
    shutdown: &CancellationToken,
) -> Result<String, Error> {
    let mut delay = Duration::from_millis(200);
    let mut attempt = 0;
    loop {
        match auth::jwks::discover(issuer, client).await {
            Ok(uri) => return Ok(uri),
            Err(e) if attempt >= 8 => return Err(e),
            Err(e) => tracing::warn!(error = %e, "OIDC discovery failed; retrying"),
        }
        attempt += 1;
        tokio::select! {
            _ = shutdown.cancelled() => return Err(Error::Oidc("shut down during discovery".into())),
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}
