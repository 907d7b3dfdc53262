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

/// The registry's routes, in the order of the Confluent API reference.
pub fn router(store: Store) -> Router {
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
}

fn parse_body(body: &[u8]) -> Result<SchemaKey> {
    let body: SchemaBody =
        serde_json::from_slice(body).map_err(|_| RegistryError::InvalidSchema)?;
    Ok(SchemaKey {
        schema_type: body
            .schema_type
            .unwrap_or_else(|| "AVRO".into())
            .to_ascii_uppercase(),
        schema: body.schema,
        references: body.references.unwrap_or_default(),
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
    let mut value: Value =
        serde_json::from_slice(body).map_err(|_| RegistryError::InvalidSchema)?;
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
    let value: Value = serde_json::from_slice(body).map_err(|_| RegistryError::InvalidSchema)?;
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
