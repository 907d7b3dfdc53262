//! The registry's HTTP API, as Confluent Schema Registry, Karapace and Apicurio's `ccompat`
//! API serve it (directly or through registry-proxy): a schema by id, the subjects an id is
//! registered under, and referenced schemas by subject and version, fetched recursively.

use std::{
    collections::HashSet,
    fmt,
    sync::Arc,
    time::{Duration, Instant},
};

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::{StatusCode, header};
use serde::{Deserialize, de::DeserializeOwned};

use super::{
    Format, Lookup, ReferencedSchema, SchemaSource, metrics::SchemaMetrics, token::TokenSource,
};
use crate::Error;

/// The largest response body read from the registry. Real schemas are kilobytes; anything this
/// size is a misbehaving server, and reading it unbounded would let it exhaust memory.
pub const MAX_BODY_BYTES: usize = 8 << 20;

/// How deep references may chain; real schemas nest a handful of levels.
const MAX_REFERENCE_DEPTH: usize = 32;

/// How many distinct referenced schemas one schema may pull in.
const MAX_REFERENCES: usize = 256;

/// The media types Confluent's clients ask for.
const ACCEPT: &str = "application/vnd.schemaregistry.v1+json, application/json";

/// Where and how to reach the registry.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// Base URL of the registry, or of registry-proxy in front of it.
    pub url: String,
    /// OIDC client credentials, when the registry sits behind registry-proxy.
    pub credentials: Option<ClientCredentials>,
    /// Timeout of each HTTP request (connect, headers and body).
    pub timeout: Duration,
    /// How long "no such id" (and a schema that does not compile) is remembered before the
    /// registry is asked again.
    pub negative_ttl: Duration,
    /// How many schema ids the cache holds at most.
    pub max_entries: u64,
}

impl RegistryConfig {
    /// A configuration with the defaults: 5 s per request, 30 s negative caching, 10 000
    /// schemas, no credentials.
    pub fn new(url: impl Into<String>) -> Self {
        RegistryConfig {
            url: url.into(),
            credentials: None,
            timeout: Duration::from_secs(5),
            negative_ttl: Duration::from_secs(30),
            max_entries: 10_000,
        }
    }
}

/// OAuth2 client credentials for registry-proxy.
#[derive(Clone)]
pub struct ClientCredentials {
    /// The OIDC issuer URL; its discovery document names the token endpoint.
    pub issuer: String,
    pub client_id: String,
    pub client_secret: String,
    /// Scopes to request, if the provider needs any.
    pub scopes: Vec<String>,
}

impl fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("scopes", &self.scopes)
            .finish()
    }
}

/// `GET /schemas/ids/{id}` and `GET /subjects/{s}/versions/{v}`: the fields read here.
#[derive(Debug, Deserialize)]
struct SchemaDoc {
    schema: String,
    #[serde(rename = "schemaType")]
    schema_type: Option<String>,
    #[serde(default)]
    references: Vec<ReferenceDoc>,
    #[serde(rename = "ruleSet")]
    rule_set: Option<serde_json::Value>,
    metadata: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
struct ReferenceDoc {
    name: String,
    subject: String,
    version: i64,
}

/// One entry of `GET /schemas/ids/{id}/versions`.
#[derive(Debug, Deserialize)]
struct SubjectVersion {
    subject: String,
}

/// The error body every Confluent-compatible registry sends.
#[derive(Debug, Deserialize)]
struct ErrorDoc {
    error_code: Option<i64>,
    message: Option<String>,
}

pub(crate) struct RegistryClient {
    /// The base URL without a trailing slash.
    base: String,
    http: reqwest::Client,
    token: Option<TokenSource>,
    metrics: Arc<SchemaMetrics>,
}

/// A response that was read whole.
struct Response {
    status: StatusCode,
    body: Vec<u8>,
}

impl RegistryClient {
    pub(crate) fn new(config: &RegistryConfig, metrics: Arc<SchemaMetrics>) -> Result<Self, Error> {
        let base = reqwest::Url::parse(&config.url)
            .map_err(|e| Error::Config(format!("schema registry URL {}: {e}", config.url)))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(Error::Config(format!(
                "schema registry URL {} is not http or https",
                config.url
            )));
        }
        if config.timeout.is_zero() || config.max_entries == 0 {
            return Err(Error::Config(
                "schema registry timeout and cache size must be above zero".into(),
            ));
        }
        // No redirects: a bearer token must not follow one, and OAuth2 token endpoints must not
        // be redirected either.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(config.timeout)
            .build()
            .map_err(|e| Error::Config(format!("schema registry HTTP client: {e}")))?;
        let token = config
            .credentials
            .clone()
            .map(|credentials| TokenSource::new(credentials, http.clone()));
        Ok(RegistryClient {
            base: config.url.trim_end_matches('/').to_owned(),
            http,
            token,
            metrics,
        })
    }

    /// The schema registered under `id` with its references and subjects; `None` when the
    /// registry has no such id.
    pub(crate) async fn fetch(
        &self,
        id: u32,
    ) -> Result<Option<(SchemaSource, Vec<String>)>, Lookup> {
        let Some(doc) = self
            .get::<SchemaDoc>(&format!("/schemas/ids/{id}"), true)
            .await?
        else {
            return Ok(None);
        };
        let format = schema_format(doc.schema_type.as_deref())?;
        let mut references = Vec::new();
        let mut done = HashSet::new();
        let mut open = Vec::new();
        for reference in &doc.references {
            self.resolve(reference, format, 1, &mut open, &mut done, &mut references)
                .await?;
        }
        // Older registries lack this endpoint; the subjects only serve strategy checks, so an
        // id without them is still usable.
        let subjects = self
            .get::<Vec<SubjectVersion>>(&format!("/schemas/ids/{id}/versions"), false)
            .await?
            .unwrap_or_default()
            .into_iter()
            .map(|entry| entry.subject)
            .collect();
        let source = SchemaSource {
            format,
            text: doc.schema,
            references,
            rule_set: doc.rule_set,
            metadata_tags: doc
                .metadata
                .as_ref()
                .map(super::compile::metadata_tags)
                .unwrap_or_default(),
        };
        Ok(Some((source, subjects)))
    }

    /// The id of the latest schema registered under `subject`; `None` when the subject has
    /// none.
    pub(crate) async fn latest_id(&self, subject: &str) -> Result<Option<u32>, Lookup> {
        #[derive(Deserialize)]
        struct Latest {
            id: u32,
        }
        let path = format!(
            "/subjects/{}/versions/latest",
            utf8_percent_encode(subject, NON_ALPHANUMERIC)
        );
        Ok(self.get::<Latest>(&path, false).await?.map(|l| l.id))
    }

    /// Fetches `reference` and, first, everything it references, appending each schema once
    /// after its own dependencies.
    async fn resolve(
        &self,
        reference: &ReferenceDoc,
        format: Format,
        depth: usize,
        open: &mut Vec<(String, i64)>,
        done: &mut HashSet<(String, i64)>,
        out: &mut Vec<ReferencedSchema>,
    ) -> Result<(), Lookup> {
        let key = (reference.subject.clone(), reference.version);
        if done.contains(&key) {
            return Ok(());
        }
        let described = format!(
            "reference {} (subject {} version {})",
            reference.name, reference.subject, reference.version
        );
        if open.contains(&key) {
            return Err(Lookup::Unusable(format!(
                "{described} refers back to itself"
            )));
        }
        if depth > MAX_REFERENCE_DEPTH {
            return Err(Lookup::Unusable(format!(
                "{described} is nested deeper than {MAX_REFERENCE_DEPTH} references"
            )));
        }
        if done.len() >= MAX_REFERENCES {
            return Err(Lookup::Unusable(format!(
                "the schema pulls in more than {MAX_REFERENCES} references"
            )));
        }
        let path = format!(
            "/subjects/{}/versions/{}",
            utf8_percent_encode(&reference.subject, NON_ALPHANUMERIC),
            reference.version
        );
        let doc = self
            .get::<SchemaDoc>(&path, false)
            .await?
            .ok_or_else(|| Lookup::Unusable(format!("{described} does not exist")))?;
        let referenced_format = schema_format(doc.schema_type.as_deref())?;
        if referenced_format != format {
            return Err(Lookup::Unusable(format!(
                "{described} is {referenced_format}, the schema is {format}"
            )));
        }
        open.push(key.clone());
        for nested in &doc.references {
            Box::pin(self.resolve(nested, format, depth + 1, open, done, out)).await?;
        }
        open.pop();
        done.insert(key);
        out.push(ReferencedSchema {
            name: reference.name.clone(),
            subject: reference.subject.clone(),
            version: reference.version,
            text: doc.schema,
        });
        Ok(())
    }

    /// GETs `path` and decodes the JSON answer; `None` on 404 (only on 404 with error code
    /// 40403 when `schema_not_found` is set, so a wrong base URL is not taken for a missing id).
    async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        schema_not_found: bool,
    ) -> Result<Option<T>, Lookup> {
        let url = format!("{}{path}", self.base);
        let mut retried = false;
        loop {
            let bearer = match &self.token {
                Some(token) => Some(token.bearer().await.map_err(|why| {
                    self.metrics.registry_error("token");
                    Lookup::Unavailable(why)
                })?),
                None => None,
            };
            let response = self.send(&url, bearer.as_deref()).await?;
            let status = response.status;
            if status == StatusCode::UNAUTHORIZED
                && !retried
                && let (Some(token), Some(bearer)) = (&self.token, &bearer)
            {
                // The token may have been revoked or the proxy restarted with new keys: one
                // fresh token, then the answer stands.
                token.invalidate(bearer).await;
                retried = true;
                continue;
            }
            if status.is_success() {
                return serde_json::from_slice(&response.body)
                    .map(Some)
                    .map_err(|e| {
                        self.metrics.registry_error("body");
                        Lookup::Unavailable(format!(
                            "{url} answered JSON this client cannot read: {e}"
                        ))
                    });
            }
            let error: Option<ErrorDoc> = serde_json::from_slice(&response.body).ok();
            let code = error.as_ref().and_then(|e| e.error_code);
            if status == StatusCode::NOT_FOUND && (!schema_not_found || code == Some(40403)) {
                return Ok(None);
            }
            self.metrics.registry_error("status");
            let detail = error
                .and_then(|e| e.message)
                .unwrap_or_else(|| String::from_utf8_lossy(&response.body).into_owned());
            let detail: String = detail.chars().take(200).collect();
            return Err(Lookup::Unavailable(format!(
                "{url} answered {status}{}: {detail}",
                code.map(|c| format!(" (error code {c})"))
                    .unwrap_or_default()
            )));
        }
    }

    /// One request, its duration observed and its body read up to [`MAX_BODY_BYTES`].
    async fn send(&self, url: &str, bearer: Option<&str>) -> Result<Response, Lookup> {
        let started = Instant::now();
        let result = self.send_unobserved(url, bearer).await;
        self.metrics
            .registry_seconds
            .observe(started.elapsed().as_secs_f64());
        result.map_err(|(cause, why)| {
            self.metrics.registry_error(cause);
            Lookup::Unavailable(why)
        })
    }

    async fn send_unobserved(
        &self,
        url: &str,
        bearer: Option<&str>,
    ) -> Result<Response, (&'static str, String)> {
        let mut request = self.http.get(url).header(header::ACCEPT, ACCEPT);
        if let Some(bearer) = bearer {
            request = request.bearer_auth(bearer);
        }
        let mut response = request.send().await.map_err(|e| transport(url, &e))?;
        let status = response.status();
        if response
            .content_length()
            .is_some_and(|len| len > MAX_BODY_BYTES as u64)
        {
            return Err(too_large(url));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| transport(url, &e))? {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(too_large(url));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Response { status, body })
    }
}

fn schema_format(schema_type: Option<&str>) -> Result<Format, Lookup> {
    Format::from_schema_type(schema_type).ok_or_else(|| {
        Lookup::Unusable(format!(
            "unknown schemaType {}",
            schema_type.unwrap_or_default()
        ))
    })
}

fn transport(url: &str, error: &reqwest::Error) -> (&'static str, String) {
    let cause = if error.is_timeout() {
        "timeout"
    } else if error.is_connect() {
        "connect"
    } else {
        "request"
    };
    let mut why = format!("{url}: {error}");
    let mut source = std::error::Error::source(error);
    while let Some(inner) = source {
        why.push_str(&format!(": {inner}"));
        source = inner.source();
    }
    (cause, why)
}

fn too_large(url: &str) -> (&'static str, String) {
    (
        "body",
        format!("{url} answered more than the {MAX_BODY_BYTES}-byte limit"),
    )
}
