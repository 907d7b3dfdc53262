//! Bearer tokens for a registry behind registry-proxy: the OAuth2 client-credentials grant
//! against the token endpoint found by OIDC discovery, cached until shortly before expiry.

use std::time::{Duration, Instant};

use openidconnect::{
    ClientId, ClientSecret, IssuerUrl, JsonWebKeySet, OAuth2TokenResponse, Scope, TokenUrl,
    core::{CoreClient, CoreProviderMetadata},
};
use tokio::sync::{Mutex, OnceCell};

use super::registry::ClientCredentials;

/// How long a token without `expires_in` is used: short, since its real lifetime is unknown.
const UNSTATED_LIFETIME: Duration = Duration::from_secs(60);

pub(crate) struct TokenSource {
    credentials: ClientCredentials,
    /// The client for discovery and token requests (no redirects, per request timeout).
    http: reqwest::Client,
    /// The issuer's token endpoint, discovered on first use; a failed discovery is retried on
    /// the next request rather than remembered.
    endpoint: OnceCell<(IssuerUrl, TokenUrl)>,
    /// The token in use. Held across a refresh so concurrent lookups wait for one token
    /// request instead of each sending their own.
    current: Mutex<Option<Token>>,
}

struct Token {
    bearer: String,
    refresh_at: Instant,
}

impl TokenSource {
    pub(crate) fn new(credentials: ClientCredentials, http: reqwest::Client) -> Self {
        TokenSource {
            credentials,
            http,
            endpoint: OnceCell::new(),
            current: Mutex::new(None),
        }
    }

    /// A token valid for a while yet, fetching a new one when needed.
    pub(crate) async fn bearer(&self) -> Result<String, String> {
        let mut current = self.current.lock().await;
        if let Some(token) = current.as_ref().filter(|t| Instant::now() < t.refresh_at) {
            return Ok(token.bearer.clone());
        }
        let token = self.fetch().await?;
        let bearer = token.bearer.clone();
        *current = Some(token);
        Ok(bearer)
    }

    /// Forgets `rejected` (the registry answered 401 to it) unless a newer token replaced it.
    pub(crate) async fn invalidate(&self, rejected: &str) {
        let mut current = self.current.lock().await;
        if current.as_ref().is_some_and(|t| t.bearer == rejected) {
            *current = None;
        }
    }

    async fn fetch(&self) -> Result<Token, String> {
        let (issuer, token_url) = self
            .endpoint
            .get_or_try_init(|| self.discover())
            .await?
            .clone();
        let client = CoreClient::new(
            ClientId::new(self.credentials.client_id.clone()),
            issuer,
            JsonWebKeySet::default(),
        )
        .set_client_secret(ClientSecret::new(self.credentials.client_secret.clone()))
        .set_token_uri(token_url.clone());
        let started = Instant::now();
        let response = client
            .exchange_client_credentials()
            .add_scopes(self.credentials.scopes.iter().cloned().map(Scope::new))
            .request_async(&self.http)
            .await
            .map_err(|e| format!("token request to {}: {}", token_url.as_str(), describe(&e)))?;
        let lifetime = response.expires_in().unwrap_or(UNSTATED_LIFETIME);
        // Refresh a tenth of the lifetime early (at least a second, at most a minute), so a
        // token never expires between being read here and reaching the registry.
        let margin = (lifetime / 10).clamp(Duration::from_secs(1), Duration::from_secs(60));
        Ok(Token {
            bearer: response.access_token().secret().clone(),
            refresh_at: started + lifetime.saturating_sub(margin),
        })
    }

    async fn discover(&self) -> Result<(IssuerUrl, TokenUrl), String> {
        let issuer = IssuerUrl::new(self.credentials.issuer.clone())
            .map_err(|e| format!("issuer URL {}: {e}", self.credentials.issuer))?;
        let metadata = CoreProviderMetadata::discover_async(issuer.clone(), &self.http)
            .await
            .map_err(|e| format!("OIDC discovery for {}: {}", issuer.as_str(), describe(&e)))?;
        let token_url = metadata
            .token_endpoint()
            .cloned()
            .ok_or_else(|| format!("the issuer {} announces no token endpoint", issuer.as_str()))?;
        Ok((issuer, token_url))
    }
}

/// An error with its causes, which openidconnect's top-level messages leave out.
fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
