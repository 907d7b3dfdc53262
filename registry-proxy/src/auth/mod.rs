//! Bearer-token authentication: OIDC access tokens become a [`Principal`].
//!
//! - [`jwks`]: discovery, the signing-key cache, rotation and rate-limited refetch.
//!
//! A token is accepted only when its header names an algorithm the matching JWK may verify
//! (pinned to the key type: no `none`, no HMAC with a public key), its signature verifies,
//! and it carries `exp`, `iss` (the configured issuer), `aud` (a configured audience) and
//! `sub`, within a bounded clock skew. Beyond what `jsonwebtoken` checks: a header with
//! `crit` is refused (RFC 7515 §4.1.11: we understand no extension), `iat` must be an integer
//! not in the future, and a token may not live longer than `max_token_lifetime_secs`.
//! Only the `Authorization` header carries credentials, given once.
//!
//! Validated tokens are remembered for a short, bounded time so that a client reusing its
//! token does not pay a signature check per request; refused tokens are remembered too, so
//! replaying a forged token costs a lookup. What is left — tokens neither cache knows — is
//! rate-limited per client address ([`limit`]).
//!
//! - [`jwks`]: discovery, the signing-key cache, rotation and rate-limited refetch.
//! - [`limit`]: the per-client limit on signature verifications.

pub mod jwks;
pub mod limit;

use std::{
    collections::HashMap,
    hash::{BuildHasher, RandomState},
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use http::{HeaderMap, header};
use jsonwebtoken::decode_header;
use serde_json::{Map, Value};
use shared::principal::Principal;

use crate::{cache::TtlCache, error::Error, metrics::Metrics};
use jwks::{Jwks, VerifyKey};
use limit::VerifyLimiter;

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

/// Time and cache bounds for token validation.
#[derive(Debug, Clone)]
pub struct TokenLimits {
    /// Clock skew allowed on `exp`, `nbf` and `iat`, seconds.
    pub leeway: u64,
    /// Longest `exp - iat` accepted (from now when there is no `iat`), seconds.
    pub max_lifetime: u64,
    /// How long a validated token is remembered.
    pub cache_ttl: Duration,
    /// How long a refused token is remembered as refused.
    pub failed_ttl: Duration,
    /// Entries in each of the two caches, at most.
    pub cache_max: usize,
}

/// A refused token's cache key: 128 bits of keyed hash, so the cache holds no token text
/// (a forged token can be as large as the header limit) and a collision, which would only
/// refuse a token, cannot be arranged by someone who does not know the process's keys.
type FailedKey = (u64, u64);

/// Validates bearer tokens.
pub struct Authenticator {
    jwks: Arc<Jwks>,
    claims: ClaimNames,
    limits: TokenLimits,
    /// Recently validated tokens. Bounded in size and age, so a revoked signing key stops
    /// working within `cache_ttl`.
    cache: Mutex<HashMap<Box<str>, Cached>>,
    /// Recently refused tokens, with why (for the audit record).
    failed: TtlCache<FailedKey, Arc<str>>,
    failed_keys: (RandomState, RandomState),
    /// `None` when verifications are not limited.
    limiter: Option<VerifyLimiter>,
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
        limits: TokenLimits,
        limiter: Option<VerifyLimiter>,
        metrics: Metrics,
    ) -> Self {
        Self {
            jwks,
            claims,
            cache: Mutex::new(HashMap::new()),
            failed: TtlCache::new(limits.cache_max, limits.failed_ttl),
            failed_keys: (RandomState::new(), RandomState::new()),
            limits,
            limiter,
            metrics,
        }
    }

    /// Extracts and validates the bearer token of the request's `Authorization` header.
    /// `client` is the address verifications are counted against.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        client: IpAddr,
    ) -> Result<Arc<Principal>, Error> {
        let mut values = headers.get_all(header::AUTHORIZATION).iter();
        let header = values
            .next()
            .ok_or_else(|| unauth("no Authorization header"))?;
        if values.next().is_some() {
            // Proxies and servers disagree on which copy counts.
            return Err(Error::BadRequest(
                "Authorization header given more than once".into(),
            ));
        }
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
        let failed_key = (
            self.failed_keys.0.hash_one(token),
            self.failed_keys.1.hash_one(token),
        );
        if let Some(why) = self.failed.get(&failed_key) {
            self.metrics
                .cache
                .with_label_values(&["failed_token", "hit"])
                .inc();
            return Err(unauth(format!("{why} (refused earlier)")));
        }
        // decode_header refuses algorithms jsonwebtoken does not implement, `none` included.
        let header = decode_header(token)
            .map_err(|e| self.refuse(failed_key, format!("token header: {e}")))?;
        if let Some(crit) = &header.crit {
            return Err(self.refuse(
                failed_key,
                format!("crit header names extensions {crit:?}; none are understood"),
            ));
        }
        // An unknown kid is not remembered as refused: it costs no signature check (refetches
        // are rate-limited on their own), and the provider may publish the key a moment later.
        let key = self
            .jwks
            .key(header.kid.as_deref())
            .await
            .ok_or_else(|| unauth(format!("no signing key with kid {:?}", header.kid)))?;
        if !key.algorithms.contains(&header.alg) {
            return Err(self.refuse(
                failed_key,
                format!("algorithm {:?} is not allowed for this key", header.alg),
            ));
        }
        if let Some(limiter) = &self.limiter
            && !limiter.allow(client)
        {
            self.verification("rate_limited");
            return Err(Error::RateLimited(format!(
                "more than the allowed signature verifications from {client}"
            )));
        }
        match self.verify(token, &key) {
            Ok((principal, exp)) => {
                self.verification("ok");
                let principal = Arc::new(principal);
                self.remember(token, principal.clone(), exp);
                Ok(principal)
            }
            Err(why) => {
                self.verification("failed");
                Err(self.refuse(failed_key, why))
            }
        }
    }

    /// Remembers a token as refused (for `failed_token_cache_secs`) and builds the error.
    fn refuse(&self, key: FailedKey, why: String) -> Error {
        if !self.limits.failed_ttl.is_zero() {
            self.failed.insert(key, why.as_str().into());
        }
        Error::Unauthenticated(why)
    }

    fn verification(&self, result: &str) {
        self.metrics
            .token_verifications
            .with_label_values(&[result])
            .inc();
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
        let valid_until = Instant::now() + left.min(self.limits.cache_ttl);
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= self.limits.cache_max {
            let now = Instant::now();
            cache.retain(|_, c| c.valid_until > now);
            if cache.len() >= self.limits.cache_max {
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

    /// The signature and claims of `token` under `key`: the principal and `exp`, or why not.
    fn verify(&self, token: &str, key: &VerifyKey) -> Result<(Principal, u64), String> {
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &key.validation)
            .map_err(|e| format!("token rejected: {e}"))?;
        let claims = data.claims;
        let exp = claims
            .get("exp")
            .and_then(Value::as_u64)
            .ok_or_else(|| "exp is not a number".to_owned())?;
        let now = now_secs();
        // jsonwebtoken does not check `iat`. A token issued in the future is a forgery or a
        // broken clock, either way not to be trusted; a float or a string would slip past a
        // numeric comparison, so only an integer is an `iat`.
        let iat = match claims.get("iat") {
            None => None,
            Some(v) => Some(
                v.as_u64()
                    .ok_or_else(|| "iat is not a non-negative integer".to_owned())?,
            ),
        };
        if let Some(iat) = iat
            && iat > now + self.limits.leeway
        {
            return Err("token issued in the future".to_owned());
        }
        // Without `iat` the lifetime is counted from now: such a token is refused while it
        // still has longer than the limit to live.
        let lifetime = exp.saturating_sub(iat.unwrap_or(now));
        if lifetime > self.limits.max_lifetime {
            return Err(format!(
                "token lifetime {lifetime} s exceeds the {} s limit",
                self.limits.max_lifetime
            ));
        }
        match claims.get("sub") {
            Some(Value::String(s)) if !s.is_empty() => {}
            _ => return Err("sub is missing or empty".to_owned()),
        }
        let user = match claims.get(&self.claims.principal) {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => {
                return Err(format!(
                    "principal claim {:?} is missing or not a string",
                    self.claims.principal
                ));
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
                return Err(format!(
                    "groups claim {:?} is not a list",
                    self.claims.groups
                ));
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
