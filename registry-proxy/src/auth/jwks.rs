//! The identity provider's signing keys: discovery, the JWKS cache, rotation.
//!
//! Keys are fetched from the `jwks_uri` OIDC discovery names, converted once into
//! `jsonwebtoken` decoding keys together with the algorithms each key may verify, and held
//! behind an `RwLock<Arc<..>>` that readers clone per request. They are refetched on a timer
//! (rotation) and when a token names a `kid` we do not hold, at most once per
//! `min_refetch_interval`, so a stream of tokens with invented key ids cannot turn the proxy
//! into a load generator against the identity provider.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use jsonwebtoken::{
    Algorithm, DecodingKey, Validation,
    jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse},
};

use crate::{error::Error, metrics::Metrics};

/// A key and what it may verify.
pub struct VerifyKey {
    pub key: DecodingKey,
    /// Algorithms this key verifies: the JWK's `alg` if it names one, else its key type's
    /// family. Never an HMAC algorithm, whatever the token header says.
    pub algorithms: Vec<Algorithm>,
    /// Validation for this key, built once (issuer, audience, required claims, leeway).
    pub validation: Validation,
}

/// The keys of one JWKS document.
#[derive(Default)]
pub struct KeySet {
    pub by_kid: HashMap<String, Arc<VerifyKey>>,
    /// Keys published without a `kid`: usable only for tokens without one, and only when
    /// there is exactly one such key.
    pub anonymous: Vec<Arc<VerifyKey>>,
}

/// Builds the per-key validation rules.
#[derive(Clone)]
pub struct ValidationTemplate {
    pub issuer: String,
    pub audience: Vec<String>,
    pub leeway: u64,
}

impl ValidationTemplate {
    fn build(&self, algorithms: &[Algorithm]) -> Validation {
        let mut v = Validation::new(algorithms[0]);
        v.algorithms = algorithms.to_vec();
        v.set_issuer(&[&self.issuer]);
        v.set_audience(&self.audience);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        v.leeway = self.leeway;
        v.validate_exp = true;
        v.validate_nbf = true;
        v
    }
}

const RSA_ALGS: [Algorithm; 6] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];

/// The algorithms a JWK may verify, or `None` for keys we refuse to use.
pub fn algorithms_for(jwk: &Jwk) -> Option<Vec<Algorithm>> {
    if matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature) {
        return None;
    }
    let family: Vec<Algorithm> = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => RSA_ALGS.to_vec(),
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
            vec![Algorithm::EdDSA]
        }
        // Symmetric keys in a JWKS would let anyone holding the JWKS mint tokens.
        _ => return None,
    };
    match jwk.common.key_algorithm {
        None => Some(family),
        Some(named) => {
            let alg = match named {
                KeyAlgorithm::RS256 => Algorithm::RS256,
                KeyAlgorithm::RS384 => Algorithm::RS384,
                KeyAlgorithm::RS512 => Algorithm::RS512,
                KeyAlgorithm::PS256 => Algorithm::PS256,
                KeyAlgorithm::PS384 => Algorithm::PS384,
                KeyAlgorithm::PS512 => Algorithm::PS512,
                KeyAlgorithm::ES256 => Algorithm::ES256,
                KeyAlgorithm::ES384 => Algorithm::ES384,
                KeyAlgorithm::EdDSA => Algorithm::EdDSA,
                _ => return None,
            };
            family.contains(&alg).then(|| vec![alg])
        }
    }
}

/// Parses a JWKS document, skipping keys that are unusable or not for signatures.
pub fn parse_jwks(body: &[u8], template: &ValidationTemplate) -> Result<KeySet, String> {
    let doc: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("JWKS is not JSON: {e}"))?;
    let keys = doc
        .get("keys")
        .and_then(|k| k.as_array())
        .ok_or("JWKS has no keys array")?;
    let mut set = KeySet::default();
    for raw in keys {
        let Ok(jwk) = serde_json::from_value::<Jwk>(raw.clone()) else {
            tracing::debug!("skipping a JWK this proxy cannot parse");
            continue;
        };
        let Some(algorithms) = algorithms_for(&jwk) else {
            continue;
        };
        let Ok(key) = DecodingKey::from_jwk(&jwk) else {
            continue;
        };
        let verify = Arc::new(VerifyKey {
            key,
            validation: template.build(&algorithms),
            algorithms,
        });
        match jwk.common.key_id {
            Some(kid) => {
                set.by_kid.insert(kid, verify);
            }
            None => set.anonymous.push(verify),
        }
    }
    Ok(set)
}

/// The JWKS cache.
pub struct Jwks {
    uri: String,
    client: reqwest::Client,
    template: ValidationTemplate,
    keys: RwLock<Arc<KeySet>>,
    /// When the keys were last fetched; held across an unknown-kid refetch so concurrent
    /// requests with the same new kid wait for one fetch instead of each starting one.
    last_fetch: tokio::sync::Mutex<Instant>,
    min_refetch_interval: Duration,
    metrics: Metrics,
}

impl Jwks {
    /// Fetches the keys once; fails when the identity provider cannot be reached.
    pub async fn new(
        uri: String,
        client: reqwest::Client,
        template: ValidationTemplate,
        min_refetch_interval: Duration,
        metrics: Metrics,
    ) -> Result<Self, Error> {
        let jwks = Self {
            uri,
            client,
            template,
            keys: RwLock::new(Arc::new(KeySet::default())),
            last_fetch: tokio::sync::Mutex::new(Instant::now()),
            min_refetch_interval,
            metrics,
        };
        jwks.fetch().await?;
        Ok(jwks)
    }

    pub fn current(&self) -> Arc<KeySet> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Fetches and swaps in the JWKS. A failed fetch keeps the keys in force.
    pub async fn fetch(&self) -> Result<(), Error> {
        let result = async {
            let response = self
                .client
                .get(&self.uri)
                .send()
                .await
                .map_err(|e| format!("GET {}: {e}", self.uri))?;
            if !response.status().is_success() {
                return Err(format!("GET {}: status {}", self.uri, response.status()));
            }
            let body = response
                .bytes()
                .await
                .map_err(|e| format!("GET {}: {e}", self.uri))?;
            parse_jwks(&body, &self.template)
        }
        .await;
        match result {
            Ok(set) => {
                tracing::debug!(
                    keys = set.by_kid.len() + set.anonymous.len(),
                    "JWKS fetched"
                );
                *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(set);
                self.metrics.jwks_refreshes.with_label_values(&["ok"]).inc();
                Ok(())
            }
            Err(why) => {
                self.metrics
                    .jwks_refreshes
                    .with_label_values(&["error"])
                    .inc();
                Err(Error::Oidc(why))
            }
        }
    }

    /// The key for `kid`, refetching once (rate-limited) when it is unknown.
    pub async fn key(&self, kid: Option<&str>) -> Option<Arc<VerifyKey>> {
        if let Some(k) = find(&self.current(), kid) {
            return Some(k);
        }
        let mut last = self.last_fetch.lock().await;
        // Another request may have refetched while we waited for the lock.
        if let Some(k) = find(&self.current(), kid) {
            return Some(k);
        }
        if last.elapsed() < self.min_refetch_interval {
            return None;
        }
        *last = Instant::now();
        if let Err(e) = self.fetch().await {
            tracing::warn!(error = %e, "JWKS refetch for an unknown key id failed");
        }
        find(&self.current(), kid)
    }

    /// Refetches every `every` until `shutdown`, so rotated keys are picked up before the first
    /// token signed with them arrives.
    pub fn spawn_refresh(
        self: Arc<Self>,
        every: Duration,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
                let mut last = self.last_fetch.lock().await;
                *last = Instant::now();
                if let Err(e) = self.fetch().await {
                    tracing::warn!(error = %e, "periodic JWKS refresh failed; keeping the current keys");
                }
            }
        });
    }
}

fn find(set: &KeySet, kid: Option<&str>) -> Option<Arc<VerifyKey>> {
    match kid {
        Some(kid) => set.by_kid.get(kid).cloned(),
        None if set.anonymous.len() == 1 => set.anonymous.first().cloned(),
        None => None,
    }
}

/// The `jwks_uri` from OIDC discovery. openidconnect validates that the document's issuer is
/// the configured one, so a misrouted discovery URL cannot substitute another provider's keys.
pub async fn discover(issuer: &str, client: &reqwest::Client) -> Result<String, Error> {
    use openidconnect::{IssuerUrl, core::CoreProviderMetadata};
    let issuer_url = IssuerUrl::new(issuer.to_owned())
        .map_err(|e| Error::Oidc(format!("issuer URL {issuer}: {e}")))?;
    let metadata = CoreProviderMetadata::discover_async(issuer_url, client)
        .await
        .map_err(|e| Error::Oidc(format!("discovery for {issuer}: {e}")))?;
    Ok(metadata.jwks_uri().url().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::EncodingKey;

    fn template() -> ValidationTemplate {
        ValidationTemplate {
            issuer: "https://idp".into(),
            audience: vec!["registry-proxy".into()],
            leeway: 30,
        }
    }

    fn ec_jwk(alg: Algorithm) -> Jwk {
        let pair = rcgen::KeyPair::generate().unwrap();
        Jwk::from_encoding_key(
            &EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap(),
            alg,
        )
        .unwrap()
    }

    #[test]
    fn algorithms_are_pinned_to_the_key_type() {
        let mut jwk = ec_jwk(Algorithm::ES256);
        assert_eq!(algorithms_for(&jwk), Some(vec![Algorithm::ES256]));
        jwk.common.key_algorithm = None;
        assert_eq!(
            algorithms_for(&jwk),
            Some(vec![Algorithm::ES256]),
            "the curve decides"
        );
        jwk.common.key_algorithm = Some(KeyAlgorithm::RS256);
        assert_eq!(
            algorithms_for(&jwk),
            None,
            "an EC key claiming RS256 is unusable"
        );
        jwk.common.key_algorithm = Some(KeyAlgorithm::HS256);
        assert_eq!(algorithms_for(&jwk), None);
        jwk.common.key_algorithm = None;
        jwk.common.public_key_use = Some(PublicKeyUse::Encryption);
        assert_eq!(
            algorithms_for(&jwk),
            None,
            "encryption keys do not verify signatures"
        );
    }

    #[test]
    fn symmetric_and_unknown_keys_are_skipped() {
        let doc = serde_json::json!({"keys": [
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac", "alg": "HS256"},
            {"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"},
            {"kty": "weird", "kid": "weird"},
            serde_json::to_value({ let mut j = ec_jwk(Algorithm::ES256); j.common.key_id = Some("ec".into()); j }).unwrap(),
        ]});
        let set = parse_jwks(doc.to_string().as_bytes(), &template()).unwrap();
        assert_eq!(set.by_kid.keys().collect::<Vec<_>>(), ["ec"]);
        assert!(parse_jwks(b"{}", &template()).is_err());
    }

    #[test]
    fn validation_requires_the_registered_claims() {
        let v = template().build(&[Algorithm::RS256]);
        for claim in ["exp", "iss", "aud", "sub"] {
            assert!(v.required_spec_claims.contains(claim), "{claim}");
        }
        assert!(v.validate_nbf && v.validate_exp && v.leeway == 30);
    }
}
