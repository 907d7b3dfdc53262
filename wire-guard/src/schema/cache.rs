//! The schema cache: compiled schemas by id. Ids are immutable in every registry, so a schema
//! stays until the size bound evicts it; "not found" and "does not compile" are remembered for
//! the negative TTL; an unreachable registry is never remembered. Concurrent lookups of one
//! missing id share a single fetch.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use moka::{Expiry, future::Cache};

use super::{
    CompiledSchema, Lookup,
    metrics::SchemaMetrics,
    registry::{RegistryClient, RegistryConfig},
};
use crate::Error;

/// Compiled schemas by id, fetched from the registry on first use. Cheap to clone: clones
/// share the cache and the HTTP client.
#[derive(Clone)]
pub struct Schemas {
    inner: Arc<Inner>,
}

struct Inner {
    registry: RegistryClient,
    cache: Cache<u32, Entry>,
    /// Ids dropped from the cache by [`Schemas::refresh`] within the negative TTL.
    refreshed: Cache<u32, ()>,
    metrics: Arc<SchemaMetrics>,
}

/// What the cache remembers about an id.
#[derive(Clone)]
enum Entry {
    Found(Arc<CompiledSchema>),
    NotFound,
    Unusable(Arc<str>),
}

/// Found schemas never expire; negative answers expire after the negative TTL.
struct NegativeTtl(Duration);

impl Expiry<u32, Entry> for NegativeTtl {
    fn expire_after_create(&self, _id: &u32, entry: &Entry, _created: Instant) -> Option<Duration> {
        match entry {
            Entry::Found(_) => None,
            Entry::NotFound | Entry::Unusable(_) => Some(self.0),
        }
    }
}

impl Schemas {
    /// Builds the client and the cache, and registers the schema metrics on `metrics`.
    /// Nothing is fetched until the first lookup.
    pub fn new(config: RegistryConfig, metrics: &prometheus::Registry) -> Result<Self, Error> {
        let metrics = Arc::new(SchemaMetrics::register(metrics)?);
        let registry = RegistryClient::new(&config, metrics.clone())?;
        let cache = Cache::builder()
            .max_capacity(config.max_entries)
            .expire_after(NegativeTtl(config.negative_ttl))
            .build();
        let refreshed = Cache::builder()
            .max_capacity(config.max_entries)
            .time_to_live(config.negative_ttl)
            .build();
        Ok(Schemas {
            inner: Arc::new(Inner {
                registry,
                cache,
                refreshed,
                metrics,
            }),
        })
    }

    /// The compiled schema for an id: from the cache, or fetched and compiled once however many
    /// tasks ask at the same time.
    pub async fn get(&self, id: u32) -> Result<Arc<CompiledSchema>, Lookup> {
        let entry = self
            .inner
            .cache
            .entry(id)
            .or_try_insert_with(self.load(id))
            .await
            .map_err(|shared: Arc<Lookup>| Lookup::clone(&shared))?;
        if !entry.is_fresh() {
            match entry.value() {
                Entry::Found(_) => self.inner.metrics.hit.inc(),
                Entry::NotFound | Entry::Unusable(_) => self.inner.metrics.negative_hit.inc(),
            }
        }
        match entry.into_value() {
            Entry::Found(schema) => Ok(schema),
            Entry::NotFound => Err(Lookup::NotFound),
            Entry::Unusable(why) => Err(Lookup::Unusable(why.to_string())),
        }
    }

    /// The latest schema registered under `subject`; `None` when it has none.
    pub async fn latest(&self, subject: &str) -> Result<Option<Arc<CompiledSchema>>, Lookup> {
        match self.inner.registry.latest_id(subject).await? {
            Some(id) => self.get(id).await.map(Some),
            None => Ok(None),
        }
    }

    /// Drops `id` from the cache so that the next lookup asks the registry again, at most once
    /// per id per negative TTL; says whether it did. A schema id is immutable but the subjects
    /// it is registered under are not (registering the same schema under another subject keeps
    /// its id), so a record that seems to carry another subject's id may only be newer than the
    /// cache.
    pub async fn refresh(&self, id: u32) -> bool {
        if self.inner.refreshed.contains_key(&id) {
            return false;
        }
        self.inner.refreshed.insert(id, ()).await;
        self.inner.cache.invalidate(&id).await;
        true
    }

    /// Fetches and compiles; `Err` (not cached) only when the registry could not answer.
    async fn load(&self, id: u32) -> Result<Entry, Lookup> {
        self.inner.metrics.miss.inc();
        let fetched = match self.inner.registry.fetch(id).await {
            Ok(Some(fetched)) => fetched,
            Ok(None) => return Ok(Entry::NotFound),
            Err(Lookup::Unusable(why)) => return Ok(Entry::Unusable(why.into())),
            Err(other) => return Err(other),
        };
        // Compiling (Protobuf, JSON Schema, CEL) is CPU work: keep it off the I/O threads.
        let (source, subjects) = fetched;
        let compiled =
            tokio::task::spawn_blocking(move || CompiledSchema::compile(id, subjects, &source))
                .await
                .map_err(|e| Lookup::Unavailable(format!("compiling schema {id}: {e}")))?;
        Ok(match compiled {
            Ok(schema) => Entry::Found(Arc::new(schema)),
            Err(why) => {
                tracing::warn!(schema_id = id, error = %why, "registry schema does not compile");
                Entry::Unusable(why.into())
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::{
        net::SocketAddr,
        sync::{Arc, Mutex},
    };

    use axum::{
        Json, Router,
        extract::{Path, State},
        http::{HeaderMap, StatusCode},
        response::{IntoResponse, Response},
        routing::{get, post},
    };
    use serde_json::json;

    use super::*;
    use crate::schema::{ClientCredentials, Format};

    const USER: &str = r#"{"type":"record","name":"User","namespace":"acme","fields":[{"name":"home","type":"acme.Address"}]}"#;
    const ADDRESS: &str = r#"{"type":"record","name":"Address","namespace":"acme","fields":[{"name":"city","type":"string"}]}"#;

    /// Every request the stub registry and identity provider received, and the bearer tokens
    /// the registry accepts.
    #[derive(Default)]
    struct Stub {
        requests: Mutex<Vec<String>>,
        issued: Mutex<usize>,
        issuer: Mutex<String>,
    }

    impl Stub {
        fn count(&self, path: &str) -> usize {
            self.requests
                .lock()
                .unwrap()
                .iter()
                .filter(|p| *p == path)
                .count()
        }
    }

    async fn schema_by_id(
        State(stub): State<Arc<Stub>>,
        Path(id): Path<u32>,
        headers: HeaderMap,
    ) -> Response {
        stub.requests
            .lock()
            .unwrap()
            .push(format!("/schemas/ids/{id}"));
        match id {
            // Slow enough for concurrent lookups to overlap.
            1 => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                Json(json!({"schema": ADDRESS})).into_response()
            }
            2 => (
                StatusCode::NOT_FOUND,
                Json(json!({"error_code": 40403, "message": "Schema 2 not found"})),
            )
                .into_response(),
            3 => (StatusCode::SERVICE_UNAVAILABLE, "leader election").into_response(),
            4 => Json(json!({
                "schema": USER,
                "references": [{"name": "acme.Address", "subject": "shared/address", "version": 3}],
            }))
            .into_response(),
            5 => Json(json!({"schema": "{\"type\": \"nonsense\"}"})).into_response(),
            // Accepts only the second token the identity provider issued.
            6 => {
                let auth = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                if auth == "Bearer token-2" {
                    Json(json!({"schema": ADDRESS, "schemaType": "AVRO"})).into_response()
                } else {
                    (
                        StatusCode::UNAUTHORIZED,
                        Json(json!({"error_code": 40101, "message": "bad token"})),
                    )
                        .into_response()
                }
            }
            _ => StatusCode::NOT_FOUND.into_response(),
        }
    }

    async fn versions_of_id(Path(id): Path<u32>) -> Json<serde_json::Value> {
        Json(json!([{"subject": format!("topic-{id}-value"), "version": 1}]))
    }

    async fn subject_version(
        State(stub): State<Arc<Stub>>,
        Path((subject, version)): Path<(String, i64)>,
    ) -> Response {
        stub.requests
            .lock()
            .unwrap()
            .push(format!("/subjects/{subject}/versions/{version}"));
        if subject == "shared/address" && version == 3 {
            Json(json!({"subject": subject, "version": 3, "id": 9, "schema": ADDRESS}))
                .into_response()
        } else {
            StatusCode::NOT_FOUND.into_response()
        }
    }

    async fn discovery(State(stub): State<Arc<Stub>>) -> Json<serde_json::Value> {
        let issuer = stub.issuer.lock().unwrap().clone();
        Json(json!({
            "issuer": issuer,
            "authorization_endpoint": format!("{issuer}/authorize"),
            "token_endpoint": format!("{issuer}/token"),
            "jwks_uri": format!("{issuer}/jwks"),
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
        }))
    }

    async fn token(State(stub): State<Arc<Stub>>, headers: HeaderMap, body: String) -> Response {
        use base64::Engine;
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("wire-guard:s3cret")
        );
        let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
        if auth != Some(expected.as_str()) || !body.contains("grant_type=client_credentials") {
            return (
                StatusCode::UNAUTHORIZED,
                Json(json!({"error": "invalid_client"})),
            )
                .into_response();
        }
        let mut issued = stub.issued.lock().unwrap();
        *issued += 1;
        Json(json!({"access_token": format!("token-{issued}"), "token_type": "Bearer", "expires_in": 3600}))
            .into_response()
    }

    async fn serve() -> (SocketAddr, Arc<Stub>) {
        let stub = Arc::new(Stub::default());
        let app = Router::new()
            .route("/schemas/ids/{id}", get(schema_by_id))
            .route("/schemas/ids/{id}/versions", get(versions_of_id))
            .route(
                "/subjects/{subject}/versions/{version}",
                get(subject_version),
            )
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(|| async { Json(json!({"keys": []})) }))
            .route("/token", post(token))
            .with_state(stub.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        *stub.issuer.lock().unwrap() = format!("http://{addr}");
        tokio::spawn(async move { axum::serve(listener, app).await });
        (addr, stub)
    }

    fn schemas(addr: SocketAddr) -> (Schemas, prometheus::Registry) {
        let registry = prometheus::Registry::new_custom(Some("wire_guard".into()), None).unwrap();
        let mut config = RegistryConfig::new(format!("http://{addr}/"));
        config.negative_ttl = Duration::from_millis(1_500);
        (Schemas::new(config, &registry).unwrap(), registry)
    }

    fn counter(registry: &prometheus::Registry, name: &str, label: &str) -> f64 {
        registry
            .gather()
            .iter()
            .filter(|family| family.name() == name)
            .flat_map(|family| family.get_metric().to_vec())
            .filter(|metric| metric.get_label().iter().any(|l| l.value() == label))
            .map(|metric| metric.get_counter().get_value())
            .sum()
    }

    #[tokio::test]
    async fn a_schema_is_fetched_once_then_served_from_the_cache() {
        let (addr, stub) = serve().await;
        let (schemas, registry) = schemas(addr);
        let first = schemas.get(1).await.unwrap();
        assert_eq!(first.format, Format::Avro);
        assert_eq!(first.subjects, ["topic-1-value"]);
        let second = schemas.get(1).await.unwrap();
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(stub.count("/schemas/ids/1"), 1);
        assert_eq!(
            counter(&registry, "wire_guard_schema_cache_total", "miss"),
            1.0
        );
        assert_eq!(
            counter(&registry, "wire_guard_schema_cache_total", "hit"),
            1.0
        );
        let families = registry.gather();
        let histogram = families
            .iter()
            .find(|f| f.name() == "wire_guard_schema_registry_seconds")
            .unwrap();
        // The schema and its subjects: two requests.
        assert_eq!(
            histogram.get_metric()[0].get_histogram().get_sample_count(),
            2
        );
    }

    #[tokio::test]
    async fn concurrent_misses_share_one_fetch() {
        let (addr, stub) = serve().await;
        let (schemas, _registry) = schemas(addr);
        let lookups: Vec<_> = (0..8)
            .map(|_| {
                let schemas = schemas.clone();
                tokio::spawn(async move { schemas.get(1).await })
            })
            .collect();
        for lookup in lookups {
            assert!(lookup.await.unwrap().is_ok());
        }
        assert_eq!(stub.count("/schemas/ids/1"), 1);
    }

    #[tokio::test]
    async fn not_found_is_remembered_for_the_negative_ttl() {
        let (addr, stub) = serve().await;
        let (schemas, registry) = schemas(addr);
        assert_eq!(schemas.get(2).await.unwrap_err(), Lookup::NotFound);
        assert_eq!(schemas.get(2).await.unwrap_err(), Lookup::NotFound);
        assert_eq!(stub.count("/schemas/ids/2"), 1);
        assert_eq!(
            counter(&registry, "wire_guard_schema_cache_total", "negative_hit"),
            1.0
        );
        tokio::time::sleep(Duration::from_millis(1_700)).await;
        assert_eq!(schemas.get(2).await.unwrap_err(), Lookup::NotFound);
        assert_eq!(stub.count("/schemas/ids/2"), 2);
        // A 404 without Confluent's error code is a wrong URL, not a missing schema.
        assert!(matches!(schemas.get(77).await, Err(Lookup::Unavailable(_))));
    }

    #[tokio::test]
    async fn an_unavailable_registry_is_not_cached() {
        let (addr, stub) = serve().await;
        let (schemas, registry) = schemas(addr);
        for _ in 0..2 {
            let Err(Lookup::Unavailable(why)) = schemas.get(3).await else {
                panic!("503 must be Unavailable");
            };
            assert!(
                why.contains("503") && why.contains("leader election"),
                "{why}"
            );
        }
        assert_eq!(stub.count("/schemas/ids/3"), 2);
        assert_eq!(
            counter(
                &registry,
                "wire_guard_schema_registry_errors_total",
                "status"
            ),
            2.0
        );

        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let closed_addr = closed.local_addr().unwrap();
        drop(closed);
        let (unreachable, registry) = super::tests::schemas(closed_addr);
        assert!(matches!(
            unreachable.get(1).await,
            Err(Lookup::Unavailable(_))
        ));
        assert_eq!(
            counter(
                &registry,
                "wire_guard_schema_registry_errors_total",
                "connect"
            ),
            1.0
        );
    }

    #[tokio::test]
    async fn references_are_fetched_by_subject_and_version() {
        let (addr, stub) = serve().await;
        let (schemas, _registry) = schemas(addr);
        let schema = schemas.get(4).await.unwrap();
        assert_eq!(stub.count("/subjects/shared/address/versions/3"), 1);
        let valid = schema.validate(b"\x08Oslo").unwrap();
        assert_eq!(valid.record_name.as_deref(), Some("acme.User"));
    }

    #[tokio::test]
    async fn a_schema_that_does_not_compile_is_unusable() {
        let (addr, stub) = serve().await;
        let (schemas, _registry) = schemas(addr);
        assert!(matches!(schemas.get(5).await, Err(Lookup::Unusable(_))));
        assert!(matches!(schemas.get(5).await, Err(Lookup::Unusable(_))));
        assert_eq!(stub.count("/schemas/ids/5"), 1);
    }

    #[tokio::test]
    async fn client_credentials_tokens_are_sent_and_refreshed_after_a_401() {
        let (addr, stub) = serve().await;
        let registry = prometheus::Registry::new();
        let mut config = RegistryConfig::new(format!("http://{addr}"));
        config.credentials = Some(ClientCredentials {
            issuer: format!("http://{addr}"),
            client_id: "wire-guard".into(),
            client_secret: "s3cret".into(),
            scopes: vec!["registry".into()],
        });
        let schemas = Schemas::new(config.clone(), &registry).unwrap();
        // token-1 is refused, token-2 accepted: one refresh, then success.
        schemas.get(6).await.unwrap();
        assert_eq!(*stub.issued.lock().unwrap(), 2);
        assert_eq!(stub.count("/schemas/ids/6"), 2);
        // The accepted token is cached for the next request.
        schemas.get(1).await.unwrap();
        assert_eq!(*stub.issued.lock().unwrap(), 2);

        // Wrong client credentials: the token endpoint refuses and the lookup says so.
        config.credentials.as_mut().unwrap().client_secret = "wrong".into();
        let refused = Schemas::new(config, &prometheus::Registry::new()).unwrap();
        let Err(Lookup::Unavailable(why)) = refused.get(6).await else {
            panic!("a refused token request must be Unavailable");
        };
        assert!(why.contains("token"), "{why}");
    }
}
