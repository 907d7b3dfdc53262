//! Bearer-token authentication: OIDC access tokens become a [`Principal`].
//!
//! - [`jwks`]: discovery, the signing-key cache, rotation and rate-limited refetch.
//!
//! A token is accepted only when its header names an algorithm the matching JWK may verify
//! (pinned to the key type: no `none`, no HMAC with a public key), its signature verifies,
//! and it carries `exp`, `iss` (the configured issuer), `aud` (a configured audience) and
//! `sub`, within a bounded clock skew. Validated tokens are remembered for a short, bounded
//! time so that a client reusing its token does not pay a signature check per request.

pub mod jwks;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use http::HeaderValue;
use jsonwebtoken::decode_header;
use serde_json::{Map, Value};
use shared::principal::Principal;

use crate::{error::Error, metrics::Metrics};
use jwks::Jwks;

/// Which claims name the caller.
#[derive(Debug, Clone)]
pub struct ClaimNames {
    /// The principal's user name (`sub` by default).
    pub principal: String,
    /// The caller's groups: an array of strings, or one space-separated string.
    pub groups: String,
    /// Claims naming the OAuth client, first present wins (`azp`, then `client_id`).
    pub client_id: Vec<String>,
}

struct Cached {
    principal: Arc<Principal>,
    /// Whichever is earlier: the token's `exp` or the cache's own bound.
    valid_until: Instant,
}

/// Validates bearer tokens.
pub struct Authenticator {
    jwks: Arc<Jwks>,
    claims: ClaimNames,
    leeway: u64,
    /// Recently validated tokens. Bounded in size and age, so a revoked signing key stops
    /// working within `cache_ttl`.
    cache: Mutex<HashMap<Box<str>, Cached>>,
    cache_ttl: Duration,
    cache_max: usize,
    metrics: Metrics,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn unauth(why: impl Into<String>) -> Error {
    Error::Unauthenticated(why.into())
}

impl Authenticator {
    pub fn new(
        jwks: Arc<Jwks>,
        claims: ClaimNames,
        leeway: u64,
        cache_ttl: Duration,
        cache_max: usize,
        metrics: Metrics,
    ) -> Self {
        Self {
            jwks,
            claims,
            leeway,
            cache: Mutex::new(HashMap::new()),
            cache_ttl,
            cache_max,
            metrics,
        }
    }

    /// Extracts and validates the bearer token of an `Authorization` header.
    pub async fn authenticate(
        &self,
        header: Option<&HeaderValue>,
    ) -> Result<Arc<Principal>, Error> {
        let header = header.ok_or_else(|| unauth("no Authorization header"))?;
        let value = header
            .to_str()
            .map_err(|_| unauth("Authorization header is not ASCII"))?;
        let (scheme, token) = value
            .split_once(' ')
            .ok_or_else(|| unauth("Authorization header is not a bearer token"))?;
        if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() || token.contains(' ') {
            return Err(unauth("Authorization header is not a bearer token"));
        }
        if let Some(p) = self.cached(token) {
            self.metrics
                .cache
                .with_label_values(&["token", "hit"])
                .inc();
            return Ok(p);
        }
        self.metrics
            .cache
            .with_label_values(&["token", "miss"])
            .inc();
        let (principal, exp) = self.validate(token).await?;
        let principal = Arc::new(principal);
        self.remember(token, principal.clone(), exp);
        Ok(principal)
    }

    fn cached(&self, token: &str) -> Option<Arc<Principal>> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .get(token)
            .filter(|c| c.valid_until > Instant::now())
            .map(|c| c.principal.clone())
    }

    fn remember(&self, token: &str, principal: Arc<Principal>, exp: u64) {
        let left = Duration::from_secs(exp.saturating_sub(now_secs()));
        let valid_until = Instant::now() + left.min(self.cache_ttl);
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= self.cache_max {
            let now = Instant::now();
            cache.retain(|_, c| c.valid_until > now);
            if cache.len() >= self.cache_max {
                cache.clear();
            }
        }
        cache.insert(
            token.into(),
            Cached {
                principal,
                valid_until,
            },
        );
    }

    async fn validate(&self, token: &str) -> Result<(Principal, u64), Error> {
        // decode_header refuses algorithms jsonwebtoken does not implement, `none` included.
        let header = decode_header(token).map_err(|e| unauth(format!("token header: {e}")))?;
        let key = self
            .jwks
            .key(header.kid.as_deref())
            .await
            .ok_or_else(|| unauth(format!("no signing key with kid {:?}", header.kid)))?;
        if !key.algorithms.contains(&header.alg) {
            return Err(unauth(format!(
                "algorithm {:?} is not allowed for this key",
                header.alg
            )));
        }
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &key.validation)
            .map_err(|e| unauth(format!("token rejected: {e}")))?;
        let claims = data.claims;
        let exp = claims
            .get("exp")
            .and_then(Value::as_u64)
            .ok_or_else(|| unauth("exp is not a number"))?;
        // jsonwebtoken checks `iat` only if asked; a token issued in the future is a forgery or
        // a broken clock, either way not to be trusted.
        if let Some(iat) = claims.get("iat").and_then(Value::as_u64)
            && iat > now_secs() + self.leeway
        {
            return Err(unauth("token issued in the future"));
        }
        match claims.get("sub") {
            Some(Value::String(s)) if !s.is_empty() => {}
            _ => return Err(unauth("sub is missing or empty")),
        }
        let user = match claims.get(&self.claims.principal) {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => {
                return Err(unauth(format!(
                    "principal claim {:?} is missing or not a string",
                    self.claims.principal
                )));
            }
        };
        let groups = match claims.get(&self.claims.groups) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|g| g.as_str().map(str::to_owned))
                .collect(),
            Some(Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
            Some(_) => {
                return Err(unauth(format!(
                    "groups claim {:?} is not a list",
                    self.claims.groups
                )));
            }
        };
        let client_id = self
            .claims
            .client_id
            .iter()
            .find_map(|c| claims.get(c).and_then(Value::as_str))
            .map(str::to_owned);
        Ok((
            Principal {
                user,
                groups,
                client_id,
            },
            exp,
        ))
    }
}
