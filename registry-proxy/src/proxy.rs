//! The request pipeline: one function from client request to response and audit record.
//!
//! reserve the audit record's place (or refuse 503) -> refuse overlong targets and method
//! overrides -> canonicalize (dropping any `access_token` parameter) -> authenticate (one
//! `Authorization` header) -> classify (unknown: 404/405, not forwarded) -> read body (bounded
//! in size and time) -> authorize (ids and associations looked up upstream, id lookups cached)
//! -> serve from cache or forward -> check the answer concerns the authorized subject ->
//! filter lists (unless the caller may read every subject) -> respond. An upstream 5xx body is
//! replaced by a fixed Confluent-shaped error; the original goes to the log. Every path out of
//! [`handle`] writes exactly one audit record, including a client disconnecting mid-request
//! (`aborted`, written when the request future is dropped).

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    body::{Body, to_bytes},
    http::{HeaderMap, Request, StatusCode, header},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use shared::{
    policy::{Operation, PolicySet, PolicyStore},
    principal::Principal,
};

use crate::{
    audit::{Audit, AuditRecord, Slot, rfc3339_now},
    auth::Authenticator,
    authz::{self, Outcome},
    cache::{CachedResponse, Caches},
    canonical::CanonicalRequest,
    config::{Config, Mode},
    endpoints::{self, Endpoint, IdLookup, SubjectCheck, Target},
    error::{Error, confluent_error},
    filter,
    metrics::Metrics,
    upstream::Upstream,
};

/// Everything a request needs, shared by all requests.
pub struct AppState {
    pub config: Config,
    pub policy: Arc<PolicyStore>,
    pub auth: Authenticator,
    pub upstream: Upstream,
    pub caches: Caches,
    pub audit: Audit,
    pub metrics: Metrics,
    /// Request ids: a per-process prefix and a counter, unique without a random source.
    pub id_prefix: String,
    pub next_id: AtomicU64,
}

impl AppState {
    pub fn next_request_id(&self) -> String {
        format!(
            "{}-{:06}",
            self.id_prefix,
            self.next_id.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// Counts a finished request.
    pub fn count(&self, record: &AuditRecord) {
        self.metrics
            .requests
            .with_label_values(&[
                record.operation.unwrap_or("none"),
                record.decision,
                &record.status.to_string(),
            ])
            .inc();
    }
}

/// Headers that ask a server to treat a request as another method. Jersey honours
/// `X-HTTP-Method-Override` when its filter is on; refusing them all keeps the method the
/// proxy authorized the method the registry runs.
const METHOD_OVERRIDES: &[&str] = &[
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Writes the record when dropped, so a request whose future is dropped (client gone) is
/// still recorded, as `aborted`.
struct AuditGuard<'a> {
    audit: &'a Audit,
    slot: Option<Slot>,
    record: AuditRecord,
}

impl AuditGuard<'_> {
    /// The record, for writing once the response is known; the guard no longer writes it.
    fn finish(mut self) -> (Option<Slot>, AuditRecord) {
        (self.slot.take(), std::mem::take(&mut self.record))
    }
}

impl Drop for AuditGuard<'_> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            let record = &mut self.record;
            record.decision = "aborted";
            record
                .reason
                .get_or_insert_with(|| "client closed the connection before the response".into());
            self.audit.write(slot, record);
        }
    }
}

/// Serves one request; `peer` is the client's address. Always answers, and always leaves
/// one audit record.
pub async fn handle(state: Arc<AppState>, peer: SocketAddr, req: Request<Body>) -> Response {
    let started = Instant::now();
    let raw_target = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().path(), |pq| pq.as_str());
    let mut record = AuditRecord {
        time: rfc3339_now(),
        request_id: state.next_request_id(),
        client_addr: peer.to_string(),
        method: req.method().to_string(),
        path: crate::canonical::redacted_target(truncated(raw_target, state.config.max_uri_bytes)),
        decision: "error",
        ..AuditRecord::default()
    };
    let slot = match state.audit.admit() {
        Ok(slot) => slot,
        Err(unavailable) => {
            // Refused before anything else: with records not being written, nothing about
            // this request is looked at, let alone forwarded.
            let e = Error::from(unavailable);
            record.reason = Some(e.to_string());
            let response = finish(e.into_response(), &mut record, started);
            state.count(&record);
            state.audit.write_unreserved(&record);
            return response;
        }
    };
    let mut guard = AuditGuard {
        audit: &state.audit,
        slot: Some(slot),
        record,
    };
    let result = process(&state, peer, req, &mut guard.record).await;
    // From here on nothing awaits, so the guard's job (recording a dropped request) is done.
    let (slot, mut record) = guard.finish();
    let response = match result {
        Ok(response) => response,
        Err(e) => {
            // A denial already carries its decision and the missing grant; anything else
            // replaces what was recorded so far (a permit followed by an upstream failure).
            if !matches!(e, Error::Forbidden(_)) {
                record.decision = e.decision();
                record.reason = Some(e.to_string());
            }
            if matches!(e, Error::Upstream(_) | Error::Oidc(_)) {
                tracing::warn!(request_id = %record.request_id, error = %e, "request failed");
            }
            e.into_response()
        }
    };
    let response = finish(response, &mut record, started);
    state.count(&record);
    if let Some(slot) = slot {
        state.audit.write(slot, &record);
    }
    response
}

/// Completes the record with the response, and the response with the record's id.
fn finish(mut response: Response, record: &mut AuditRecord, started: Instant) -> Response {
    if let Ok(id) = http::HeaderValue::from_str(&record.request_id) {
        // Lets a client quote the id an operator finds in the audit log.
        response.headers_mut().insert("x-request-id", id);
    }
    record.status = response.status().as_u16();
    record.latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    response
}

/// At most `max` bytes of `s`, cut at a character boundary: a refused overlong target is
/// recorded by its start, so one request cannot make an audit record of any size.
fn truncated(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

async fn process(
    state: &AppState,
    peer: SocketAddr,
    req: Request<Body>,
    record: &mut AuditRecord,
) -> Result<Response, Error> {
    let (parts, body) = req.into_parts();
    let target_len = parts.uri.path_and_query().map_or(0, |pq| pq.as_str().len());
    if target_len > state.config.max_uri_bytes {
        return Err(Error::UriTooLong(state.config.max_uri_bytes));
    }
    if let Some(h) = METHOD_OVERRIDES
        .iter()
        .find(|h| parts.headers.contains_key(**h))
    {
        return Err(Error::BadRequest(format!(
            "method-override header {h} is not accepted"
        )));
    }
    let canonical = CanonicalRequest::parse(parts.uri.path(), parts.uri.query())?;
    record.path = canonical.path_and_query();

    let principal = state.auth.authenticate(&parts.headers, peer.ip()).await?;
    record.principal = Some(principal.to_string());
    record.groups = principal.groups.clone();
    record.client_id = principal.client_id.clone();

    let endpoint = endpoints::classify(
        &parts.method,
        &canonical,
        &parts.headers,
        state.config.upstream_kind,
    )?;
    record.endpoint = Some(endpoint.name);
    record.operation = Some(endpoint.operation.as_str());
    match &endpoint.target {
        Target::Subjects(s) => record.subjects = s.clone(),
        Target::EverySubject => record.subjects = vec!["*".into()],
        Target::SchemaId(_) | Target::List | Target::Global | Target::Associated { .. } => {}
    }

    let body = read_body(body, &state.config).await?;
    let mut needs = authz::requirements(&endpoint, &body);
    let policy = state.policy.current();
    if let Target::Associated { lookup, operations } = &endpoint.target {
        let subjects =
            match associated_subjects(state, &endpoint, lookup, &principal, record).await? {
                Ok(subjects) => subjects,
                Err(answer) => return Ok(answer),
            };
        if subjects.is_empty() {
            // Nothing to authorize and nothing to delete: the registry says so in its words.
            record.reason = Some("no associations for the resource; forwarded".into());
        }
        for s in subjects {
            for op in operations {
                needs.grants.push((*op, s.clone()));
            }
        }
    }
    for (_, s) in &needs.grants {
        if !record.subjects.contains(s) {
            record.subjects.push(s.clone());
        }
    }
    if !needs.everywhere.is_empty() && !record.subjects.iter().any(|s| s == "*") {
        record.subjects.push("*".into());
    }

    let outcome = match &endpoint.target {
        Target::SchemaId(id) => {
            decide_by_id(
                state,
                &endpoint,
                id,
                &parts.headers,
                &principal,
                &policy,
                record,
            )
            .await?
        }
        Target::Associated { .. } if needs.grants.is_empty() => Outcome::Permit(vec![]),
        _ => authz::decide(&policy.registry, &principal, &endpoint, &needs),
    };
    match outcome {
        Outcome::Permit(rules) => {
            record.decision = "permit";
            record.rule_id = (!rules.is_empty()).then(|| rules.join(","));
            if let Some(why) = &needs.unreadable {
                record.reason = Some(format!(
                    "{why}; permitted by a rule over every subject, the registry answers"
                ));
            }
        }
        Outcome::Filtered => {
            record.decision = "permit";
            record.reason = Some("listing: response filtered to readable subjects".into());
        }
        Outcome::Deny { message, missing } => {
            record.reason = Some(missing);
            if state.config.mode == Mode::Audit {
                record.decision = "audit_only_deny";
            } else {
                record.decision = "deny";
                return Err(Error::Forbidden(message));
            }
        }
    }

    if let SubjectCheck::Version(version) = &endpoint.subject_check {
        let answer = state
            .upstream
            .send(
                "version check",
                http::Method::GET,
                version,
                &json_accept(),
                Bytes::new(),
                parts.headers.get(header::AUTHORIZATION),
                &principal,
                &record.request_id,
            )
            .await?;
        record.upstream_status = Some(answer.status);
        if answer.status >= 500 {
            return Ok(upstream_error(answer.status, &answer.body, record));
        }
        if answer.status != 200 {
            // The version is not there (or not readable): answer what the registry said about
            // it rather than forward a request the check could not vouch for.
            return Ok(respond(answer.status, answer.content_type, answer.body));
        }
        if let Err(refused) = check_subject(&endpoint, &answer.body, record)? {
            return Ok(refused);
        }
    }

    let path = canonical.path_and_query();
    let cache_key = endpoint.cacheable.then(|| cache_key(&path, &parts.headers));
    if let Some(key) = &cache_key {
        if let Some(hit) = state.caches.schemas.get(key) {
            state
                .metrics
                .cache
                .with_label_values(&["schema", "hit"])
                .inc();
            record.cache = Some("hit");
            return Ok(respond(hit.status, hit.content_type, hit.body));
        }
        state
            .metrics
            .cache
            .with_label_values(&["schema", "miss"])
            .inc();
        record.cache = Some("miss");
    }

    let upstream = state
        .upstream
        .send(
            endpoint.name,
            parts.method.clone(),
            &path,
            &parts.headers,
            body,
            parts.headers.get(header::AUTHORIZATION),
            &principal,
            &record.request_id,
        )
        .await?;
    record.upstream_status = Some(upstream.status);
    if upstream.status >= 500 {
        return Ok(upstream_error(upstream.status, &upstream.body, record));
    }
    if upstream.status == 200
        && endpoint.subject_check == SubjectCheck::Response
        && let Err(refused) = check_subject(&endpoint, &upstream.body, record)?
    {
        return Ok(refused);
    }
    let mut body = upstream.body;
    // A caller who may read every subject gets the registry's answer as it is.
    let reads_everything =
        authz::everywhere_rule(&policy.registry, &principal, Operation::Read).is_some();
    if (200..300).contains(&upstream.status)
        && endpoint.filter != endpoints::Filter::None
        && !reads_everything
    {
        let mut json: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| Error::Upstream(format!("list response is not JSON: {e}")))?;
        let registry = &policy.registry;
        let can_read = |s: &str| registry.check(&principal, Operation::Read, s).is_permit();
        filter::filter_body(endpoint.filter, &endpoint.names, &mut json, &can_read)
            .map_err(Error::Upstream)?;
        body = Bytes::from(serde_json::to_vec(&json).map_err(|e| Error::Upstream(e.to_string()))?);
    }
    if let Some(key) = cache_key
        && upstream.status == 200
    {
        state.caches.schemas.insert(
            key,
            CachedResponse {
                status: 200,
                content_type: upstream.content_type.clone(),
                body: body.clone(),
            },
        );
    }
    Ok(respond(upstream.status, upstream.content_type, body))
}

/// The request body, within the configured size and time.
async fn read_body(body: Body, config: &Config) -> Result<Bytes, Error> {
    let limit = config.max_body_bytes;
    let timeout = Duration::from_millis(config.body_read_timeout_ms);
    match tokio::time::timeout(timeout, to_bytes(body, limit)).await {
        Ok(Ok(body)) => Ok(body),
        Ok(Err(e)) => {
            let over_limit = std::error::Error::source(&e)
                .is_some_and(|inner| inner.is::<http_body_util::LengthLimitError>());
            Err(if over_limit {
                Error::BodyTooLarge(limit)
            } else {
                Error::BadRequest(format!("request body: {e}"))
            })
        }
        Err(_) => Err(Error::BodyTimeout(config.body_read_timeout_ms)),
    }
}

/// The cache key: canonical target plus the Apicurio group header that selects a namespace.
fn cache_key(path: &str, headers: &HeaderMap) -> String {
    match headers
        .get("x-registry-groupid")
        .and_then(|v| v.to_str().ok())
    {
        Some(g) => format!("{g}\n{path}"),
        None => path.to_owned(),
    }
}

/// The decision on a read by schema id. A caller who may read every subject is permitted
/// whatever the id: the registry's answer is theirs to see (a 404 `40403` for an id nothing
/// uses, the registry's own answer for one that is not a number); the lookup then only names
/// the subjects in the audit record. Anyone else may read the id when they may read a
/// subject using it, asked of the registry (and cached); an id that is not a number, that the
/// registry does not know, or that only other subjects use is one answer, a 403, so that the
/// refusal tells nothing about other teams' subjects.
async fn decide_by_id(
    state: &AppState,
    endpoint: &Endpoint,
    id: &str,
    headers: &HeaderMap,
    principal: &Principal,
    policy: &PolicySet,
    record: &mut AuditRecord,
) -> Result<Outcome, Error> {
    let everywhere = authz::everywhere_rule(&policy.registry, principal, Operation::Read);
    let numeric = !id.is_empty() && id.len() <= 10 && id.bytes().all(|b| b.is_ascii_digit());
    let subjects = if !numeric {
        None
    } else {
        match id_subjects(state, endpoint, headers, principal, record).await {
            Ok(subjects) => subjects,
            // The lookup only names the subjects for the audit record of such a caller.
            Err(e) if everywhere.is_some() => {
                tracing::debug!(request_id = %record.request_id, error = %e, "id lookup failed");
                None
            }
            Err(e) => return Err(e),
        }
    };
    if let Some(rule) = everywhere {
        record.subjects = match &subjects {
            Some(s) if !s.is_empty() => s.to_vec(),
            _ => vec!["*".into()],
        };
        return Ok(Outcome::Permit(vec![rule.to_owned()]));
    }
    let (subjects, nothing_because) = match subjects {
        Some(subjects) => (subjects, None),
        None if numeric => (Arc::default(), Some("the registry does not know the id")),
        None => (Arc::default(), Some("the id is not a number")),
    };
    record.subjects = subjects.to_vec();
    Ok(
        match authz::decide_by_id(&policy.registry, principal, id, &subjects) {
            Outcome::Deny { message, missing } => Outcome::Deny {
                message,
                missing: match nothing_because {
                    Some(why) => format!("{missing}: {why}"),
                    None => missing,
                },
            },
            other => other,
        },
    )
}

/// The subjects using an endpoint's schema id, from the cache or the upstream; `None` when
/// the registry does not know the id.
async fn id_subjects(
    state: &AppState,
    endpoint: &Endpoint,
    headers: &HeaderMap,
    principal: &Principal,
    record: &AuditRecord,
) -> Result<Option<Arc<Vec<String>>>, Error> {
    let (lookup, apicurio) = match &endpoint.id_lookup {
        Some(IdLookup::Versions(path)) => (path.clone(), false),
        Some(IdLookup::ApicurioSearch { param, id }) => (apicurio_search(param, id), true),
        Some(IdLookup::ApicurioCcompat(id)) => {
            let param = if state.config.apicurio_legacy_id_mode {
                "globalId"
            } else {
                "contentId"
            };
            (apicurio_search(param, id), true)
        }
        None => return Err(Error::Upstream("no id lookup for endpoint".into())),
    };
    let lookup = lookup.as_str();
    // The search spans groups: its answer does not depend on the request's group header.
    let key = if apicurio {
        lookup.to_owned()
    } else {
        cache_key(lookup, headers)
    };
    if let Some(hit) = state.caches.id_subjects.get(&key) {
        state
            .metrics
            .cache
            .with_label_values(&["id_subjects", "hit"])
            .inc();
        return Ok(Some(hit));
    }
    state
        .metrics
        .cache
        .with_label_values(&["id_subjects", "miss"])
        .inc();
    let mut lookup_headers = json_accept();
    if let Some(g) = headers.get("x-registry-groupid")
        && !apicurio
    {
        lookup_headers.insert("x-registry-groupid", g.clone());
    }
    let answer = state
        .upstream
        .send(
            "id lookup",
            http::Method::GET,
            lookup,
            &lookup_headers,
            Bytes::new(),
            None,
            principal,
            &record.request_id,
        )
        .await?;
    match answer.status {
        200 => {
            let subjects = if apicurio {
                authz::apicurio_subjects_of(&answer.body)?
            } else {
                authz::subjects_of(&answer.body, &endpoint.names)?
            };
            // Apicurio's search answers an unknown id with no versions, not a 404.
            let subjects = (!subjects.is_empty() || !apicurio).then(|| Arc::new(subjects));
            if let Some(subjects) = &subjects {
                state.caches.id_subjects.insert(key, subjects.clone());
            }
            Ok(subjects)
        }
        404 => Ok(None),
        other => Err(Error::Upstream(format!("id lookup answered {other}"))),
    }
}

/// The subjects a resource is associated with now, asked of the registry with the request's
/// selection (`resourceType`, `associationType`). The inner `Err` is the registry's answer to
/// send instead, when the lookup itself is refused.
async fn associated_subjects(
    state: &AppState,
    endpoint: &Endpoint,
    lookup: &str,
    principal: &Principal,
    record: &mut AuditRecord,
) -> Result<Result<Vec<String>, Response>, Error> {
    let answer = state
        .upstream
        .send(
            "association lookup",
            http::Method::GET,
            lookup,
            &json_accept(),
            Bytes::new(),
            None,
            principal,
            &record.request_id,
        )
        .await?;
    record.upstream_status = Some(answer.status);
    if answer.status >= 500 {
        return Ok(Err(upstream_error(answer.status, &answer.body, record)));
    }
    if answer.status != 200 {
        return Ok(Err(respond(
            answer.status,
            answer.content_type,
            answer.body,
        )));
    }
    Ok(Ok(authz::subjects_of(&answer.body, &endpoint.names)?))
}

/// Apicurio 3's search for the versions whose `param` (`contentId`, `globalId`) is `id`: exact
/// (group, artifact) pairs. The id is a number (checked before any lookup).
fn apicurio_search(param: &str, id: &str) -> String {
    format!("/apis/registry/v3/search/versions?{param}={id}&limit={APICURIO_SEARCH_LIMIT}")
}

/// Versions asked for per id lookup. An id used by more versions than this is authorized on the
/// first ones only, which can refuse a caller but never permit one wrongly.
const APICURIO_SEARCH_LIMIT: u32 = 1000;

fn json_accept() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::ACCEPT,
        http::HeaderValue::from_static("application/json"),
    );
    headers
}

/// `Ok(Ok(()))` when a 200 answer (a version or a lookup) is about the authorized subject;
/// `Ok(Err(..))` is the 40401 to send instead: Confluent falls back to other contexts when the
/// default-context subject lacks the version or schema, and answers with that subject.
fn check_subject(
    endpoint: &Endpoint,
    body: &[u8],
    record: &mut AuditRecord,
) -> Result<Result<(), Response>, Error> {
    let Target::Subjects(subjects) = &endpoint.target else {
        return Err(Error::Upstream("subject check without a subject".into()));
    };
    let authorized = subjects
        .first()
        .ok_or_else(|| Error::Upstream("subject check without a subject".into()))?;
    let answered = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("subject")?.as_str().map(str::to_owned))
        .ok_or_else(|| Error::Upstream("answer names no subject".into()))?;
    if endpoint.names.qualify(&answered).as_deref() == Some(authorized.as_str()) {
        return Ok(Ok(()));
    }
    tracing::warn!(
        request_id = %record.request_id,
        authorized = %authorized,
        answered = %answered,
        "upstream answered for another subject; refused"
    );
    record.decision = "not_found";
    record.reason = Some(format!(
        "upstream answered for subject {answered:?}, not the authorized {authorized} \
         (context fallback); answered 40401"
    ));
    Ok(Err(confluent_error(
        StatusCode::NOT_FOUND,
        40401,
        &format!("Subject '{authorized}' not found."),
    )))
}

/// A 5xx from the registry: its body can carry stack traces and internal names, so the client
/// gets the status with a fixed message, and the log the original.
fn upstream_error(status: u16, body: &[u8], record: &mut AuditRecord) -> Response {
    let text = String::from_utf8_lossy(&body[..body.len().min(4096)]);
    tracing::warn!(request_id = %record.request_id, status, body = %text, "upstream registry error");
    record.reason = Some(format!("upstream answered {status}"));
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    confluent_error(status, 50201, "upstream registry error")
}

fn respond(status: u16, content_type: Option<http::HeaderValue>, body: Bytes) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut response = (status, body).into_response();
    if let Some(ct) = content_type {
        response.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    response
}
