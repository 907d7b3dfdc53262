//! The Confluent REST routes over [`Store`].

use std::collections::HashMap;

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::store::{Reference, RegistryError, SchemaKey, Store};

type Params = Query<HashMap<String, String>>;

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        let (status, code, message) = self.code();
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (
            status,
            Json(json!({"error_code": code, "message": message})),
        )
            .into_response()
    }
}

type Result<T> = std::result::Result<T, RegistryError>;

/// The registry: [`routes`] behind the path normalization Confluent (Jersey) and Karapace
/// apply before routing, so `/subjects/s/versions/` is `/subjects/s/versions`.
pub fn router(store: Store) -> Router {
    Router::new()
        .fallback_service(routes(store))
        .layer(axum::middleware::from_fn(trim_trailing_slash))
}

/// One trailing `/` (not the root's) is dropped before routing.
async fn trim_trailing_slash(
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let uri = req.uri();
    let path = uri.path();
    if path.len() > 1 && path.ends_with('/') {
        let trimmed = &path[..path.len() - 1];
        let target = match uri.query() {
            Some(q) => format!("{trimmed}?{q}"),
            None => trimmed.to_owned(),
        };
        if let Ok(pq) = target.parse::<axum::http::uri::PathAndQuery>() {
            let mut parts = uri.clone().into_parts();
            parts.path_and_query = Some(pq);
            if let Ok(uri) = axum::http::Uri::from_parts(parts) {
                *req.uri_mut() = uri;
            }
        }
    }
    next.run(req).await
}

/// The routes, in the order of the Confluent API reference.
fn routes(store: Store) -> Router {
    Router::new()
        .route("/", get(|| async { Json(json!({})) }))
        .route("/schemas", get(list_schemas))
        .route("/schemas/types", get(|| async { Json(json!(["AVRO", "JSON", "PROTOBUF"])) }))
        .route("/schemas/ids/{id}", get(schema_by_id))
        .route("/schemas/ids/{id}/schema", get(raw_schema_by_id))
        .route("/schemas/ids/{id}/subjects", get(subjects_of_id))
        .route("/schemas/ids/{id}/versions", get(versions_of_id))
        .route("/subjects", get(list_subjects))
        .route("/subjects/{subject}", post(lookup).delete(delete_subject))
        .route("/subjects/{subject}/versions", get(list_versions).post(register))
        .route("/subjects/{subject}/versions/{version}", get(get_version).delete(delete_version))
        .route("/subjects/{subject}/versions/{version}/schema", get(get_version_schema))
        .route("/subjects/{subject}/versions/{version}/referencedby", get(referenced_by))
        .route("/subjects/{subject}/metadata", get(latest_with_metadata))
        .route("/compatibility/subjects/{subject}/versions", post(compatible))
        .route("/compatibility/subjects/{subject}/versions/{version}", post(compatible))
        .route("/config", get(global_config).put(set_global_config).delete(delete_global_config))
        .route("/config/{subject}", get(subject_config).put(set_subject_config).delete(delete_subject_config))
        .route("/mode", get(global_mode).put(set_global_mode).delete(delete_global_mode))
        .route("/mode/{subject}", get(subject_mode).put(set_subject_mode).delete(delete_subject_mode))
        .route("/contexts", get(|State(s): State<Store>| async move { Json(s.contexts()) }))
        .route("/v1/metadata/id", get(|| async { Json(json!({"scope": {"path": [], "clusters": {"schema-registry-cluster": "dev-registry"}}})) }))
        .route("/v1/metadata/version", get(|| async { Json(json!({"version": "7.6.0-dev", "commitId": "dev-registry"})) }))
        .fallback(|| async { (StatusCode::NOT_FOUND, Json(json!({"error_code": 404, "message": "HTTP 404 Not Found"}))) })
        .with_state(store)
}

fn flag(params: &HashMap<String, String>, name: &str) -> bool {
    params
        .get(name)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SchemaBody {
    schema: String,
    #[serde(default)]
    schema_type: Option<String>,
    #[serde(default)]
    references: Option<Vec<Reference>>,
    #[serde(default)]
    metadata: Option<Value>,
    #[serde(default)]
    rule_set: Option<Value>,
}

/// Fields a registration or lookup body may carry (Confluent's RegisterSchemaRequest).
const SCHEMA_FIELDS: &[&str] = &[
    "schema",
    "schemaType",
    "references",
    "metadata",
    "ruleSet",
    "id",
    "version",
    "schemaTagsToAdd",
    "schemaTagsToRemove",
    "propagateSchemaTags",
];

/// The body as JSON, answering as the registries do for one that is not.
fn json_body(body: &[u8]) -> Result<Value> {
    serde_json::from_slice(body).map_err(|e| RegistryError::MalformedJson(e.to_string()))
}

fn parse_body(body: &[u8]) -> Result<SchemaKey> {
    let value = json_body(body)?;
    if let Some(unknown) = value
        .as_object()
        .and_then(|o| o.keys().find(|k| !SCHEMA_FIELDS.contains(&k.as_str())))
    {
        return Err(RegistryError::UnrecognizedField(unknown.clone()));
    }
    let body: SchemaBody =
        serde_json::from_value(value).map_err(|_| RegistryError::InvalidSchema)?;
    Ok(SchemaKey {
        schema_type: body
            .schema_type
            .unwrap_or_else(|| "AVRO".into())
            .to_ascii_uppercase(),
        schema: body.schema,
        references: body.references.unwrap_or_default(),
        metadata: body.metadata,
        rule_set: body.rule_set,
    })
}

fn schema_json(key: &SchemaKey, extra: Value) -> Value {
    let mut out = extra;
    out["schema"] = json!(key.schema);
    if key.schema_type != "AVRO" {
        out["schemaType"] = json!(key.schema_type);
    }
    if !key.references.is_empty() {
        out["references"] = json!(key.references);
    }
    if let Some(metadata) = &key.metadata {
        out["metadata"] = metadata.clone();
    }
    if let Some(rule_set) = &key.rule_set {
        out["ruleSet"] = rule_set.clone();
    }
    out
}

fn parse_id(id: &str) -> Result<i64> {
    id.parse().map_err(|_| RegistryError::SchemaNotFound)
}

async fn list_schemas(State(store): State<Store>, Query(p): Params) -> Json<Value> {
    let prefix = p.get("subjectPrefix").map_or("", String::as_str);
    let deleted = flag(&p, "deleted");
    let mut out = Vec::new();
    for subject in store.subjects(prefix, deleted, false) {
        let Ok(versions) = store.versions(&subject, deleted) else {
            continue;
        };
        for v in versions {
            if let Some(key) = store.schema(v.id) {
                out.push(schema_json(
                    &key,
                    json!({"subject": subject, "version": v.version, "id": v.id}),
                ));
            }
        }
    }
    Json(Value::Array(out))
}

async fn schema_by_id(State(store): State<Store>, Path(id): Path<String>) -> Result<Json<Value>> {
    let key = store
        .schema(parse_id(&id)?)
        .ok_or(RegistryError::SchemaNotFound)?;
    Ok(Json(schema_json(&key, json!({}))))
}

async fn raw_schema_by_id(State(store): State<Store>, Path(id): Path<String>) -> Result<String> {
    Ok(store
        .schema(parse_id(&id)?)
        .ok_or(RegistryError::SchemaNotFound)?
        .schema)
}

async fn subjects_of_id(
    State(store): State<Store>,
    Path(id): Path<String>,
    Query(p): Params,
) -> Result<Json<Value>> {
    let id = parse_id(&id)?;
    store.schema(id).ok_or(RegistryError::SchemaNotFound)?;
    let mut subjects: Vec<String> = store
        .usages(id, flag(&p, "deleted"))
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    subjects.dedup();
    Ok(Json(json!(subjects)))
}

async fn versions_of_id(
    State(store): State<Store>,
    Path(id): Path<String>,
    Query(p): Params,
) -> Result<Json<Value>> {
    let id = parse_id(&id)?;
    store.schema(id).ok_or(RegistryError::SchemaNotFound)?;
    let usages: Vec<Value> = store
        .usages(id, flag(&p, "deleted"))
        .into_iter()
        .map(|(subject, version)| json!({"subject": subject, "version": version}))
        .collect();
    Ok(Json(Value::Array(usages)))
}

async fn list_subjects(State(store): State<Store>, Query(p): Params) -> Json<Value> {
    let prefix = p.get("subjectPrefix").map_or("", String::as_str);
    Json(json!(store.subjects(
        prefix,
        flag(&p, "deleted"),
        flag(&p, "deletedOnly")
    )))
}

async fn lookup(
    State(store): State<Store>,
    Path(subject): Path<String>,
    Query(p): Params,
    body: Bytes,
) -> Result<Json<Value>> {
    let key = parse_body(&body)?;
    let (id, version) = store.lookup(&subject, &key, flag(&p, "deleted"))?;
    Ok(Json(schema_json(
        &key,
        json!({"subject": subject, "id": id, "version": version}),
    )))
}

async fn register(
    State(store): State<Store>,
    Path(subject): Path<String>,
    body: Bytes,
) -> Result<Json<Value>> {
    let key = parse_body(&body)?;
    let (id, version) = store.register(&subject, key.clone())?;
    Ok(Json(schema_json(
        &key,
        json!({"id": id, "subject": subject, "version": version}),
    )))
}

async fn delete_subject(
    State(store): State<Store>,
    Path(subject): Path<String>,
    Query(p): Params,
) -> Result<Json<Value>> {
    Ok(Json(json!(
        store.delete_subject(&subject, flag(&p, "permanent"))?
    )))
}

async fn list_versions(
    State(store): State<Store>,
    Path(subject): Path<String>,
    Query(p): Params,
) -> Result<Json<Value>> {
    let versions: Vec<i64> = store
        .versions(&subject, flag(&p, "deleted"))?
        .into_iter()
        .map(|v| v.version)
        .collect();
    Ok(Json(json!(versions)))
}

fn version_json(
    store: &Store,
    subject: &str,
    version: &str,
    deleted: bool,
) -> Result<(Value, SchemaKey)> {
    let v = store.version(subject, version, deleted)?;
    let key = store.schema(v.id).ok_or(RegistryError::SchemaNotFound)?;
    Ok((
        schema_json(
            &key,
            json!({"subject": subject, "version": v.version, "id": v.id}),
        ),
        key,
    ))
}

async fn get_version(
    State(store): State<Store>,
    Path((subject, version)): Path<(String, String)>,
    Query(p): Params,
) -> Result<Json<Value>> {
    Ok(Json(
        version_json(&store, &subject, &version, flag(&p, "deleted"))?.0,
    ))
}

async fn get_version_schema(
    State(store): State<Store>,
    Path((subject, version)): Path<(String, String)>,
) -> Result<String> {
    Ok(version_json(&store, &subject, &version, false)?.1.schema)
}

async fn referenced_by(
    State(store): State<Store>,
    Path((subject, version)): Path<(String, String)>,
) -> Result<Json<Value>> {
    let v = store.version(&subject, &version, false)?;
    Ok(Json(json!(store.referenced_by(&subject, v.version))))
}

async fn latest_with_metadata(
    State(store): State<Store>,
    Path(subject): Path<String>,
) -> Result<Json<Value>> {
    Ok(Json(version_json(&store, &subject, "latest", false)?.0))
}

async fn delete_version(
    State(store): State<Store>,
    Path((subject, version)): Path<(String, String)>,
    Query(p): Params,
) -> Result<Json<Value>> {
    Ok(Json(json!(store.delete_version(
        &subject,
        &version,
        flag(&p, "permanent")
    )?)))
}

async fn compatible(
    State(store): State<Store>,
    Path(params): Path<HashMap<String, String>>,
    body: Bytes,
) -> Result<Json<Value>> {
    parse_body(&body)?;
    let subject = params.get("subject").map_or("", String::as_str);
    if let Some(version) = params.get("version") {
        store.version(subject, version, false)?;
    }
    Ok(Json(json!({"is_compatible": true})))
}

fn default_config() -> Value {
    json!({"compatibilityLevel": "BACKWARD"})
}

/// Confluent answers reads with `compatibilityLevel` but takes writes as `compatibility`.
fn config_from_body(body: &[u8]) -> Result<(Value, Value)> {
    let mut value = json_body(body)?;
    let obj = value.as_object_mut().ok_or(RegistryError::InvalidSchema)?;
    let echo = Value::Object(obj.clone());
    if let Some(level) = obj.remove("compatibility") {
        obj.insert("compatibilityLevel".into(), level);
    }
    Ok((value, echo))
}

async fn global_config(State(store): State<Store>) -> Json<Value> {
    Json(store.config("").unwrap_or_else(default_config))
}

async fn set_global_config(State(store): State<Store>, body: Bytes) -> Result<Json<Value>> {
    let (stored, echo) = config_from_body(&body)?;
    store.set_config("", stored);
    Ok(Json(echo))
}

async fn delete_global_config(State(store): State<Store>) -> Json<Value> {
    Json(store.delete_config("").unwrap_or_else(default_config))
}

async fn subject_config(
    State(store): State<Store>,
    Path(subject): Path<String>,
    Query(p): Params,
) -> Result<Json<Value>> {
    match store.config(&subject) {
        Some(c) => Ok(Json(c)),
        None if flag(&p, "defaultToGlobal") => {
            Ok(Json(store.config("").unwrap_or_else(default_config)))
        }
        None => Err(RegistryError::SubjectNotFound),
    }
}

async fn set_subject_config(
    State(store): State<Store>,
    Path(subject): Path<String>,
    body: Bytes,
) -> Result<Json<Value>> {
    let (stored, echo) = config_from_body(&body)?;
    store.set_config(&subject, stored);
    Ok(Json(echo))
}

async fn delete_subject_config(
    State(store): State<Store>,
    Path(subject): Path<String>,
) -> Result<Json<Value>> {
    store
        .delete_config(&subject)
        .map(Json)
        .ok_or(RegistryError::SubjectNotFound)
}

fn mode_from_body(body: &[u8]) -> Result<String> {
    let value = json_body(body)?;
    value
        .get("mode")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or(RegistryError::InvalidSchema)
}

async fn global_mode(State(store): State<Store>) -> Json<Value> {
    Json(json!({"mode": store.mode("").unwrap_or_else(|| "READWRITE".into())}))
}

async fn set_global_mode(State(store): State<Store>, body: Bytes) -> Result<Json<Value>> {
    let mode = mode_from_body(&body)?;
    store.set_mode("", mode.clone());
    Ok(Json(json!({"mode": mode})))
}

async fn delete_global_mode(State(store): State<Store>) -> Json<Value> {
    Json(json!({"mode": store.delete_mode("").unwrap_or_else(|| "READWRITE".into())}))
}

async fn subject_mode(
    State(store): State<Store>,
    Path(subject): Path<String>,
) -> Result<Json<Value>> {
    store
        .mode(&subject)
        .map(|m| Json(json!({"mode": m})))
        .ok_or(RegistryError::SubjectNotFound)
}

async fn set_subject_mode(
    State(store): State<Store>,
    Path(subject): Path<String>,
    body: Bytes,
) -> Result<Json<Value>> {
    let mode = mode_from_body(&body)?;
    store.set_mode(&subject, mode.clone());
    Ok(Json(json!({"mode": mode})))
}

async fn delete_subject_mode(
    State(store): State<Store>,
    Path(subject): Path<String>,
) -> Result<Json<Value>> {
    store
        .delete_mode(&subject)
        .map(|m| Json(json!({"mode": m})))
        .ok_or(RegistryError::SubjectNotFound)
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// (status, body) of one request to a fresh registry per test.
    async fn call(
        addr: std::net::SocketAddr,
        method: &str,
        target: &str,
        body: &str,
    ) -> (u16, String) {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!(
            "{method} {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let status = response.split_whitespace().nth(1).unwrap().parse().unwrap();
        let body = response.split_once("\r\n\r\n").unwrap().1.to_owned();
        (status, body)
    }

    async fn registry() -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(crate::run(listener, std::future::pending()));
        addr
    }

    #[tokio::test]
    async fn answers_as_confluent_and_karapace_do() {
        let addr = registry().await;
        let schema = r#"{"schema":"\"int\""}"#;
        assert_eq!(
            call(addr, "POST", "/subjects/s/versions/", schema).await,
            (
                200,
                r#"{"id":1,"schema":"\"int\"","subject":"s","version":1}"#.into()
            ),
            "one trailing slash is the path without it"
        );
        assert_eq!(
            call(addr, "GET", "/subjects/", "").await,
            (200, r#"["s"]"#.into())
        );
        let (status, body) = call(addr, "POST", "/subjects/s/versions", "nope").await;
        assert_eq!(status, 400, "{body}");
        assert!(body.starts_with(r#"{"error_code":400,"#), "{body}");
        assert_eq!(
            call(
                addr,
                "POST",
                "/subjects/s/versions",
                r#"{"schema":"\"int\"","foo":1}"#
            )
            .await,
            (
                422,
                r#"{"error_code":422,"message":"Unrecognized field: foo"}"#.into()
            )
        );
        assert_eq!(
            call(addr, "GET", "/schemas/ids/99", "").await,
            (
                404,
                r#"{"error_code":40403,"message":"Schema not found"}"#.into()
            )
        );
        assert_eq!(
            call(
                addr,
                "GET",
                "/associations/resources/-/t?resourceType=topic",
                ""
            )
            .await,
            (
                404,
                r#"{"error_code":404,"message":"HTTP 404 Not Found"}"#.into()
            ),
            "a registry without the associations API: serializers fall back on this 404"
        );
    }

    async fn json(addr: std::net::SocketAddr, method: &str, target: &str, body: &str) -> Value {
        let (status, text) = call(addr, method, target, body).await;
        assert_eq!(status, 200, "{method} {target}: {text}");
        serde_json::from_str(&text).unwrap()
    }

    #[tokio::test]
    async fn metadata_and_rule_set_are_kept_and_returned() {
        let addr = registry().await;
        let rules = json!({"domainRules": [{"name": "amount-positive", "kind": "CONDITION",
            "mode": "WRITE", "type": "CEL", "expr": "message.amount > 0", "onFailure": "DLQ"}]});
        let metadata = json!({"properties": {"owner": "payments"}, "sensitive": ["card"]});
        let schema = r#"{"type":"record","name":"P","fields":[{"name":"amount","type":"long"}]}"#;
        let body = |rule_set: &Value, metadata: &Value| {
            json!({"schema": schema, "ruleSet": rule_set, "metadata": metadata}).to_string()
        };
        let with = body(&rules, &metadata);

        let registered = json(addr, "POST", "/subjects/p-value/versions", &with).await;
        let id = registered["id"].as_i64().unwrap();
        assert_eq!(registered["ruleSet"], rules);
        let by_id = json(addr, "GET", &format!("/schemas/ids/{id}"), "").await;
        assert_eq!(by_id["ruleSet"], rules, "{by_id}");
        assert_eq!(by_id["metadata"], metadata, "{by_id}");
        for target in [
            "/subjects/p-value/versions/1",
            "/subjects/p-value/versions/latest",
            "/subjects/p-value/metadata",
        ] {
            let got = json(addr, "GET", target, "").await;
            assert_eq!(
                (&got["ruleSet"], &got["metadata"]),
                (&rules, &metadata),
                "{target}: {got}"
            );
        }
        let found = json(addr, "POST", "/subjects/p-value", &with).await;
        assert_eq!(
            (found["id"].as_i64(), &found["ruleSet"]),
            (Some(id), &rules)
        );

        assert_eq!(
            json(addr, "POST", "/subjects/p-value/versions", &with).await["id"].as_i64(),
            Some(id),
            "the same text and rule set keep their id"
        );
        let other_rules = json!({"domainRules": []});
        let other = json(
            addr,
            "POST",
            "/subjects/p-value/versions",
            &body(&other_rules, &metadata),
        )
        .await;
        assert_ne!(
            other["id"].as_i64(),
            Some(id),
            "another rule set is another schema"
        );
        assert_eq!(other["version"], 2);
        let plain = json!({"schema": schema}).to_string();
        let bare = json(addr, "POST", "/subjects/p-value/versions", &plain).await;
        assert!(bare["id"].as_i64() != Some(id) && bare["id"] != other["id"]);
        let bare_by_id = json(addr, "GET", &format!("/schemas/ids/{}", bare["id"]), "").await;
        assert!(
            bare_by_id.get("ruleSet").is_none() && bare_by_id.get("metadata").is_none(),
            "absent keys stay absent: {bare_by_id}"
        );
        let null = json!({"schema": schema, "ruleSet": null, "metadata": null}).to_string();
        assert_eq!(
            json(addr, "POST", "/subjects/p-value/versions", &null).await["id"],
            bare["id"],
            "null is absent"
        );
    }
}
