//! The endpoint map: method + canonical path -> the subjects a request concerns and its
//! operation class. A request the map does not know is denied.
//!
//! Subjects come out canonical and namespace-qualified, the form policies match:
//!
//! - Confluent and Karapace: `name` in the default context, `:.ctx:name` in context `.ctx`,
//!   whether the client wrote `/subjects/:.ctx:name` or `/contexts/.ctx/subjects/name`
//!   (`:.:name` is the default context, so it becomes `name`).
//! - Apicurio: the (group, artifact) pair becomes `artifact` for group `default` and
//!   `:.group:artifact` otherwise. The ccompat API takes the group from `X-Registry-GroupId`;
//!   the native v2/v3 API from the path. Reads by id (ccompat `/schemas/ids/..`, native
//!   `/ids/..`) are not tied to a group and need `read` on every subject.
//!
//! Names the registry returns and names in a request body are relative to different
//! namespaces: see [`Endpoint::names`] and [`Endpoint::namespace`].
//!
//! Operation classes follow Confluent's RBAC: reading a subject's schemas, looking a schema
//! up and testing compatibility against it are `read`; registering is `write`; deletes (soft or
//! `permanent=true`) are `delete`; subject-level config and mode are `compat_read` /
//! `compat_write`; registry- or context-wide settings and metadata are `global_read` /
//! `global_write`.

use http::{HeaderMap, Method};
use shared::policy::Operation;

use crate::{canonical::CanonicalRequest, error::Error};

/// Which API family the upstream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Flavor {
    /// Confluent Schema Registry (`/subjects`, `/schemas`, contexts).
    Confluent,
    /// Karapace: the Confluent API; contexts are not supported upstream, but mapped the same.
    Karapace,
    /// Apicurio Registry: `/apis/ccompat/v7|v8` and the native `/apis/registry/v2|v3`.
    Apicurio,
}

/// What a request concerns, for authorization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The operation applies to each of these canonical subjects.
    Subjects(Vec<String>),
    /// A read by schema id: allowed when the caller may read any subject using the id.
    SchemaId(String),
    /// The operation on every subject: a rule must grant it on `*`. Apicurio's reads by id
    /// answer from every group and cannot be tied to the artifacts the caller may read.
    EverySubject,
    /// A listing: any authenticated caller may ask; the response is filtered to what they may read.
    List,
    /// Registry- or context-wide.
    Global,
    /// The subjects a resource (a topic) is currently associated with: `GET lookup` upstream
    /// answers them, and each needs every operation in `operations`.
    Associated {
        lookup: String,
        operations: Vec<Operation>,
    },
}

/// Authorization-relevant content of the request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyCheck {
    None,
    /// `references[].subject` of a schema body each need `read`.
    References,
    /// `alias` in a config body needs every subject-level operation on the aliased subject.
    ConfigAlias,
    /// Apicurio artifact creation names the artifact in the body (v3) or a header (v2).
    ApicurioCreate,
    /// An association create or update: `associations[].subject` each need `write`, and the
    /// references of `associations[].schema` `read`.
    Association,
    /// A DEK created under a KEK for the body's `subject`: `write` on it.
    DekCreate,
}

/// How a list response is filtered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    None,
    /// `["subject", ...]`
    SubjectNames,
    /// `[{"subject": ..., ...}, ...]`
    SubjectObjects,
    /// `{"<field>": [{"groupId": ..., "artifactId"|"id": ...}], "count": n}`
    ApicurioArtifacts(&'static str),
}

/// Which subject a 200 response must be about. Confluent answers a version read or a lookup
/// on a default-context subject that lacks the version or schema from another context
/// (`:.secret:payments-value`), so the authorized subject is not necessarily the one answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubjectCheck {
    None,
    /// The response's `subject` must be the authorized subject.
    Response,
    /// The response names no subject: first `GET` this path (the version itself) upstream and
    /// require its `subject` to be the authorized subject.
    Version(String),
}

/// Namespace a subject is written relative to: a Confluent context or an Apicurio group.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Namespace(pub Option<String>);

impl Namespace {
    /// Canonical form of a subject name a registry returned (or a body referenced) relative
    /// to this namespace. `None` for a name that cannot be canonicalized.
    pub fn qualify(&self, name: &str) -> Option<String> {
        if let Some(rest) = name.strip_prefix(':') {
            let (ctx, subject) = rest.split_once(':')?;
            if subject.is_empty() || subject.starts_with(':') || !valid_context(ctx) {
                return None;
            }
            return Some(if ctx == "." {
                subject.to_owned()
            } else {
                name.to_owned()
            });
        }
        Some(match &self.0 {
            Some(ns) => format!(":{ns}:{name}"),
            None => name.to_owned(),
        })
    }
}

/// One classified request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The route template, for audit records and metrics.
    pub name: &'static str,
    pub operation: Operation,
    pub target: Target,
    pub body: BodyCheck,
    pub filter: Filter,
    /// Immutable responses (schemas by id) may be served from the cache.
    pub cacheable: bool,
    /// What names in the request body (schema references, a config `alias`) are relative to:
    /// for Confluent the context of the path's subject, as its `qualifySubjectWithParent` does.
    pub namespace: Namespace,
    /// What names in upstream responses are relative to. Confluent and Karapace answer with
    /// the stored names, unqualified meaning the default context, whatever the request path;
    /// Apicurio ccompat answers with bare artifact ids of the `X-Registry-GroupId` group.
    pub names: Namespace,
    /// Whether the answer must be checked to concern the authorized subject.
    pub subject_check: SubjectCheck,
    /// Where to ask the upstream which subjects use an id (`SchemaId` targets only).
    pub id_lookup: Option<IdLookup>,
}

/// How to ask a registry which subjects use a schema id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdLookup {
    /// `GET` this path; it answers `[{"subject": ..., "version": ...}]` (Confluent, Karapace).
    Versions(String),
    /// Apicurio 3's version search, `GET /apis/registry/v3/search/versions?{param}={id}`; it
    /// answers `{"versions": [{"groupId": ..., "artifactId": ...}]}`, exact (group, artifact)
    /// pairs across groups. `param` is `contentId` or `globalId`.
    ApicurioSearch { param: &'static str, id: String },
    /// A ccompat schema id: Apicurio's content id, or its global id when the registry runs in
    /// legacy id mode (`apicurio_legacy_id_mode`).
    ApicurioCcompat(String),
}

fn bad(why: impl Into<String>) -> Error {
    Error::BadRequest(why.into())
}

fn valid_context(ctx: &str) -> bool {
    ctx == "."
        || (ctx.len() > 1
            && ctx.starts_with('.')
            && ctx[1..]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)))
}

/// A subject named in a path, relative to the path's namespace.
enum SubjectRef {
    Subject(String),
    /// `:.ctx:` with no name: the context's own settings (config and mode only).
    ContextLevel(Namespace),
}

struct Ctx<'a> {
    ns: Namespace,
    flavor: Flavor,
    /// Path prefix before the Confluent-shaped part (`/apis/ccompat/v7`, `/contexts/.x`).
    api_prefix: String,
    query: &'a CanonicalRequest,
    /// The namespace came from the path or a header; a qualified subject would be ambiguous.
    ns_explicit: bool,
}

impl Ctx<'_> {
    fn subject(&self, raw: &str) -> Result<SubjectRef, Error> {
        if self.flavor == Flavor::Apicurio {
            // Apicurio's ccompat can split `group:artifact` (group-concat); refuse the separator
            // rather than guess which group the registry will use.
            if raw.contains(':') {
                return Err(bad("':' in a subject name is ambiguous for Apicurio"));
            }
            return Ok(SubjectRef::Subject(
                self.ns.qualify(raw).ok_or_else(|| bad("invalid subject"))?,
            ));
        }
        if let Some(rest) = raw.strip_prefix(':') {
            if self.ns_explicit {
                return Err(bad("context given both in the path and in the subject"));
            }
            let (ctx, name) = rest
                .split_once(':')
                .ok_or_else(|| bad("qualified subject without a closing ':'"))?;
            if !valid_context(ctx) {
                return Err(bad("invalid context name in qualified subject"));
            }
            if name.is_empty() {
                return Ok(SubjectRef::ContextLevel(Namespace(
                    (ctx != ".").then(|| ctx.to_owned()),
                )));
            }
            if name.starts_with(':') {
                return Err(bad(
                    "subject name starting with ':' inside a qualified subject",
                ));
            }
            return Ok(SubjectRef::Subject(if ctx == "." {
                name.to_owned()
            } else {
                raw.to_owned()
            }));
        }
        Ok(SubjectRef::Subject(
            self.ns.qualify(raw).ok_or_else(|| bad("invalid subject"))?,
        ))
    }

    fn named_subject(&self, raw: &str) -> Result<String, Error> {
        match self.subject(raw)? {
            SubjectRef::Subject(s) => Ok(s),
            SubjectRef::ContextLevel(_) => Err(bad("subject name is empty")),
        }
    }

    /// Where names a registry returns are relative to (see [`Endpoint::names`]).
    fn names(&self) -> Namespace {
        match self.flavor {
            Flavor::Apicurio => self.ns.clone(),
            Flavor::Confluent | Flavor::Karapace => Namespace::default(),
        }
    }

    /// What names in the body of a request on `subject` are relative to (see
    /// [`Endpoint::namespace`]). Karapace knows no contexts: its names are literal.
    fn body_namespace(&self, subject: &str) -> Namespace {
        match self.flavor {
            Flavor::Confluent => context_of(subject),
            Flavor::Karapace | Flavor::Apicurio => self.ns.clone(),
        }
    }
}

/// The context of a canonical subject: `.ctx` for `:.ctx:name`, the default for `name`.
fn context_of(subject: &str) -> Namespace {
    match subject.strip_prefix(':').and_then(|r| r.split_once(':')) {
        Some((ctx, _)) => Namespace(Some(ctx.to_owned())),
        None => Namespace::default(),
    }
}

fn ep(name: &'static str, operation: Operation, target: Target, ns: &Namespace) -> Endpoint {
    Endpoint {
        name,
        operation,
        target,
        body: BodyCheck::None,
        filter: Filter::None,
        cacheable: false,
        namespace: ns.clone(),
        names: ns.clone(),
        subject_check: SubjectCheck::None,
        id_lookup: None,
    }
}

fn header_once<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h str>, Error> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(bad(format!("header {name} given more than once")));
    }
    first
        .map(|v| {
            v.to_str()
                .map_err(|_| bad(format!("header {name} is not visible ASCII")))
        })
        .transpose()
}

/// An Apicurio group id as a namespace: `default` is the unqualified namespace.
fn apicurio_group(group: &str) -> Result<Namespace, Error> {
    if group.is_empty() || group.contains(':') || group.chars().any(char::is_control) {
        return Err(bad("invalid Apicurio group id"));
    }
    Ok(Namespace((group != "default").then(|| format!(".{group}"))))
}

/// The endpoint `route` finds for `method`; when it finds none, [`Error::MethodNotAllowed`] if
/// it knows the path under another method, else [`Error::UnknownEndpoint`].
fn resolve(
    method: &Method,
    req: &CanonicalRequest,
    route: impl Fn(&Method) -> Option<Result<Endpoint, Error>>,
) -> Result<Endpoint, Error> {
    if let Some(found) = route(method) {
        return found;
    }
    let what = format!("{method} {}", req.path());
    let other_method = [Method::GET, Method::POST, Method::PUT, Method::DELETE]
        .iter()
        .any(|m| m != method && route(m).is_some());
    Err(if other_method {
        Error::MethodNotAllowed(what)
    } else {
        Error::UnknownEndpoint(what)
    })
}

/// Classifies a request. `Err` for malformed or unknown requests: unknown ones are
/// [`Error::UnknownEndpoint`] or [`Error::MethodNotAllowed`], which are never forwarded.
pub fn classify(
    method: &Method,
    req: &CanonicalRequest,
    headers: &HeaderMap,
    flavor: Flavor,
) -> Result<Endpoint, Error> {
    let segs: Vec<&str> = req.segments.iter().map(String::as_str).collect();
    let unknown = || Error::UnknownEndpoint(format!("{method} {}", req.path()));
    match flavor {
        Flavor::Confluent | Flavor::Karapace => {
            if let ["contexts", ctx, rest @ ..] = segs.as_slice()
                && !rest.is_empty()
            {
                if !valid_context(ctx) {
                    return Err(bad(
                        "invalid context name in path (contexts start with '.')",
                    ));
                }
                // Confluent leaves a `subject` or `subjectPrefix` that is already qualified
                // (`:.other:`, `:*:`) alone under a context path: it would leave the context.
                for name in ["subject", "subjectPrefix"] {
                    if req.param(name).is_some_and(|v| v.starts_with(':')) {
                        return Err(bad(format!(
                            "{name} starting with ':' is not accepted under /contexts/"
                        )));
                    }
                }
                let ctx_ns = Namespace((*ctx != ".").then(|| (*ctx).to_owned()));
                let c = Ctx {
                    ns: ctx_ns,
                    flavor,
                    api_prefix: format!("/contexts/{ctx}"),
                    query: req,
                    ns_explicit: true,
                };
                return resolve(method, req, |m| confluent(m, rest, &c, false));
            }
            let c = Ctx {
                ns: Namespace::default(),
                flavor,
                api_prefix: String::new(),
                query: req,
                ns_explicit: false,
            };
            resolve(method, req, |m| confluent(m, &segs, &c, true))
        }
        Flavor::Apicurio => match segs.as_slice() {
            ["apis", "ccompat", v @ ("v7" | "v8"), rest @ ..] => {
                let (ns, explicit) = match header_once(headers, "x-registry-groupid")? {
                    Some(g) => (apicurio_group(g)?, true),
                    None => (Namespace::default(), false),
                };
                let c = Ctx {
                    ns,
                    flavor,
                    api_prefix: format!("/apis/ccompat/{v}"),
                    query: req,
                    ns_explicit: explicit,
                };
                resolve(method, req, |m| confluent(m, rest, &c, false))
            }
            ["apis", "registry", v @ ("v2" | "v3"), rest @ ..] => resolve(method, req, |m| {
                apicurio_native(m, rest, headers, v == &"v2")
            }),
            _ => Err(unknown()),
        },
    }
}

/// The Confluent REST API (also Karapace's, and Apicurio's ccompat). `None`: not in the map.
fn confluent(
    method: &Method,
    segs: &[&str],
    c: &Ctx<'_>,
    top_level: bool,
) -> Option<Result<Endpoint, Error>> {
    use Operation::*;
    let ns = &c.ns;
    let subj = |raw: &str, op: Operation, name: &'static str| -> Result<Endpoint, Error> {
        Ok(ep(
            name,
            op,
            Target::Subjects(vec![c.named_subject(raw)?]),
            ns,
        ))
    };
    // Subject-level settings; an empty qualified name (`:.ctx:`) means the context's own.
    let setting = |raw: &str,
                   op: Operation,
                   global: Operation,
                   name: &'static str|
     -> Result<Endpoint, Error> {
        Ok(match c.subject(raw)? {
            SubjectRef::Subject(s) => ep(name, op, Target::Subjects(vec![s]), ns),
            SubjectRef::ContextLevel(ctx) if c.flavor == Flavor::Confluent => {
                ep(name, global, Target::Global, &ctx)
            }
            SubjectRef::ContextLevel(_) => ep(name, global, Target::Global, ns),
        })
    };
    // Whether the id is a number is the registry's to say: a caller who may read every subject
    // gets its answer; for anyone else the proxy asks the registry which subjects use the id.
    let by_id = |id: &str,
                 name: &'static str,
                 filter: Filter,
                 cacheable: bool|
     -> Result<Endpoint, Error> {
        if c.flavor == Flavor::Apicurio {
            if filter != Filter::None {
                // Apicurio's ccompat answers which subjects use an id with bare artifact ids
                // from every group, ignoring X-Registry-GroupId: nothing ties the names in the
                // answer to a group, so listing them needs `read` on every subject.
                return Ok(ep(name, Read, Target::EverySubject, ns));
            }
            // The content itself: readable with any (group, artifact) using the id, which
            // Apicurio's search API names exactly.
            let mut e = ep(name, Read, Target::SchemaId(id.to_owned()), ns);
            e.cacheable = cacheable;
            e.id_lookup = Some(IdLookup::ApicurioCcompat(id.to_owned()));
            return Ok(e);
        }
        let mut lookup = CanonicalRequest {
            segments: vec![],
            query: vec![("deleted".into(), "true".into())],
        };
        if let Some(subject) = c.query.param("subject") {
            lookup.query.push(("subject".into(), subject.into()));
        }
        let lookup = format!(
            "{}/schemas/ids/{}/versions?{}",
            c.api_prefix,
            crate::canonical::encode_segment(id),
            lookup.query_string()
        );
        let mut e = ep(name, Read, Target::SchemaId(id.to_owned()), ns);
        e.filter = filter;
        e.cacheable = cacheable;
        e.id_lookup = Some(IdLookup::Versions(lookup));
        Ok(e)
    };
    let with = |r: Result<Endpoint, Error>, body: BodyCheck| {
        r.map(|mut e| {
            e.body = body;
            e
        })
    };
    let list = |name: &'static str, filter: Filter| {
        let mut e = ep(name, Read, Target::List, ns);
        e.filter = filter;
        Ok(e)
    };
    let global = |name: &'static str, op: Operation| Ok(ep(name, op, Target::Global, ns));
    // Confluent (and Karapace, which speaks its API) may answer for another subject than the
    // one in the path; Apicurio's groups have no such fallback.
    let checked = |r: Result<Endpoint, Error>, check: SubjectCheck| {
        r.map(|mut e| {
            if c.flavor != Flavor::Apicurio {
                e.subject_check = check;
            }
            e
        })
    };
    // The version a `/versions/{v}/...` request reads: its path without the last segment.
    let version_path = || {
        let n = c.query.segments.len().saturating_sub(1);
        CanonicalRequest {
            segments: c.query.segments[..n].to_vec(),
            query: c
                .query
                .query
                .iter()
                .filter(|(k, _)| k == "deleted")
                .cloned()
                .collect(),
        }
        .path_and_query()
    };
    let m = method.clone();
    let endpoint = match (m, segs) {
        (Method::GET, []) => global("GET /", GlobalRead),
        (Method::GET, ["schemas"]) => list("GET /schemas", Filter::SubjectObjects),
        (Method::GET, ["schemas", "types"]) => global("GET /schemas/types", GlobalRead),
        (Method::GET, ["schemas", "ids", id]) => {
            by_id(id, "GET /schemas/ids/{id}", Filter::None, true)
        }
        (Method::GET, ["schemas", "ids", id, "schema"]) => {
            by_id(id, "GET /schemas/ids/{id}/schema", Filter::None, true)
        }
        (Method::GET, ["schemas", "ids", id, "subjects"]) => by_id(
            id,
            "GET /schemas/ids/{id}/subjects",
            Filter::SubjectNames,
            false,
        ),
        (Method::GET, ["schemas", "ids", id, "versions"]) => by_id(
            id,
            "GET /schemas/ids/{id}/versions",
            Filter::SubjectObjects,
            false,
        ),
        (Method::GET, ["subjects"]) => list("GET /subjects", Filter::SubjectNames),
        (Method::POST, ["subjects", s]) => checked(
            with(
                subj(s, Read, "POST /subjects/{subject}"),
                BodyCheck::References,
            ),
            SubjectCheck::Response,
        ),
        (Method::DELETE, ["subjects", s]) => subj(s, Delete, "DELETE /subjects/{subject}"),
        (Method::GET, ["subjects", s, "versions"]) => {
            subj(s, Read, "GET /subjects/{subject}/versions")
        }
        (Method::POST, ["subjects", s, "versions"]) => with(
            subj(s, Write, "POST /subjects/{subject}/versions"),
            BodyCheck::References,
        ),
        (Method::GET, ["subjects", s, "versions", _]) => checked(
            subj(s, Read, "GET /subjects/{subject}/versions/{version}"),
            SubjectCheck::Response,
        ),
        (Method::DELETE, ["subjects", s, "versions", _]) => {
            subj(s, Delete, "DELETE /subjects/{subject}/versions/{version}")
        }
        (Method::GET, ["subjects", s, "versions", _, "schema"]) => checked(
            subj(s, Read, "GET /subjects/{subject}/versions/{version}/schema"),
            SubjectCheck::Version(version_path()),
        ),
        (Method::GET, ["subjects", s, "versions", _, "referencedby"]) => checked(
            subj(
                s,
                Read,
                "GET /subjects/{subject}/versions/{version}/referencedby",
            ),
            SubjectCheck::Version(version_path()),
        ),
        (Method::GET, ["subjects", s, "metadata"]) => {
            subj(s, Read, "GET /subjects/{subject}/metadata")
        }
        (Method::POST, ["compatibility", "subjects", s, "versions"]) => with(
            subj(s, Read, "POST /compatibility/subjects/{subject}/versions"),
            BodyCheck::References,
        ),
        (Method::POST, ["compatibility", "subjects", s, "versions", _]) => with(
            subj(
                s,
                Read,
                "POST /compatibility/subjects/{subject}/versions/{version}",
            ),
            BodyCheck::References,
        ),
        (Method::GET, ["config"]) => global("GET /config", GlobalRead),
        (Method::PUT, ["config"]) => global("PUT /config", GlobalWrite),
        (Method::DELETE, ["config"]) => global("DELETE /config", GlobalWrite),
        (Method::GET, ["config", s]) => setting(s, CompatRead, GlobalRead, "GET /config/{subject}"),
        (Method::PUT, ["config", s]) => with(
            setting(s, CompatWrite, GlobalWrite, "PUT /config/{subject}"),
            BodyCheck::ConfigAlias,
        ),
        (Method::DELETE, ["config", s]) => {
            setting(s, CompatWrite, GlobalWrite, "DELETE /config/{subject}")
        }
        (Method::GET, ["mode"]) => global("GET /mode", GlobalRead),
        (Method::PUT, ["mode"]) => global("PUT /mode", GlobalWrite),
        (Method::DELETE, ["mode"]) => global("DELETE /mode", GlobalWrite),
        (Method::GET, ["mode", s]) => setting(s, CompatRead, GlobalRead, "GET /mode/{subject}"),
        (Method::PUT, ["mode", s]) => setting(s, CompatWrite, GlobalWrite, "PUT /mode/{subject}"),
        (Method::DELETE, ["mode", s]) => {
            setting(s, CompatWrite, GlobalWrite, "DELETE /mode/{subject}")
        }
        (Method::GET, ["contexts"]) if top_level => global("GET /contexts", GlobalRead),
        (Method::DELETE, ["contexts", ctx]) if top_level => {
            if !valid_context(ctx) || *ctx == "." {
                Err(bad("invalid context name"))
            } else {
                global("DELETE /contexts/{context}", GlobalWrite)
            }
        }
        (Method::GET, ["v1", "metadata", "id"]) if top_level => {
            global("GET /v1/metadata/id", GlobalRead)
        }
        (Method::GET, ["v1", "metadata", "version"]) if top_level => {
            global("GET /v1/metadata/version", GlobalRead)
        }
        (Method::GET, ["v1", "metadata", "deployment"]) if top_level => {
            global("GET /v1/metadata/deployment", GlobalRead)
        }
        // Confluent's no-op root resource, for testing posted entities.
        (Method::POST, []) if top_level => global("POST /", GlobalRead),
        (Method::POST, ["subjects", s, "versions", _, "tags"]) => {
            subj(s, Write, "POST /subjects/{subject}/versions/{version}/tags")
        }
        // A GUID names content in every context; nothing cheap ties it to subjects.
        (Method::GET, ["schemas", "guids", _]) => {
            let mut e = ep("GET /schemas/guids/{guid}", Read, Target::EverySubject, ns);
            e.cacheable = true;
            Ok(e)
        }
        (Method::GET, ["schemas", "guids", _, "ids"]) => Ok(ep(
            "GET /schemas/guids/{guid}/ids",
            Read,
            Target::EverySubject,
            ns,
        )),
        (m, ["associations", ..] | ["associations:batchGet" | "associations:batchMutate"])
            if top_level =>
        {
            return associations(&m, segs, c);
        }
        (m, ["dek-registry", "v1", "keks", rest @ ..]) if top_level => {
            return dek_registry(&m, rest, c);
        }
        (m, ["exporters", rest @ ..]) if top_level => {
            // An exporter copies subjects to another registry with credentials held in its
            // config: reading the config is as sensitive as changing it.
            let (name, op): (&'static str, Operation) = match (m, rest) {
                (Method::GET, []) => ("GET /exporters", GlobalRead),
                (Method::POST, []) => ("POST /exporters", GlobalWrite),
                (Method::GET, [_, "status"]) => ("GET /exporters/{name}/status", GlobalRead),
                (Method::GET | Method::PUT | Method::DELETE, [_]) => {
                    ("/exporters/{name}", GlobalWrite)
                }
                (Method::GET | Method::PUT, [_, "config"]) => {
                    ("/exporters/{name}/config", GlobalWrite)
                }
                (Method::PUT, [_, "pause" | "resume" | "reset"]) => {
                    ("PUT /exporters/{name}/{action}", GlobalWrite)
                }
                _ => return None,
            };
            global(name, op)
        }
        _ => return None,
    };
    Some(endpoint.map(|mut e| {
        e.names = c.names();
        if let Target::Subjects(s) = &e.target
            && let [subject] = s.as_slice()
        {
            e.namespace = c.body_namespace(subject);
        }
        e
    }))
}

/// The namespace of subjects named in an association body: the `context` query parameter
/// (`.ctx` or `:.ctx:`), else the default context.
fn association_namespace(c: &Ctx<'_>) -> Result<Namespace, Error> {
    let Some(raw) = c.query.param("context") else {
        return Ok(Namespace::default());
    };
    let ctx = raw
        .strip_prefix(':')
        .and_then(|r| r.strip_suffix(':'))
        .unwrap_or(raw);
    if !valid_context(ctx) {
        return Err(bad("invalid context parameter"));
    }
    Ok(Namespace((ctx != ".").then(|| ctx.to_owned())))
}

/// Confluent's associations API (confluent-kafka 2.16's serializers read it first, with their
/// default subject-name strategy). An association ties a resource (a topic) to subjects.
fn associations(method: &Method, segs: &[&str], c: &Ctx<'_>) -> Option<Result<Endpoint, Error>> {
    use Operation::*;
    let ns = &c.ns;
    let list = |name: &'static str| {
        let mut e = ep(name, Read, Target::List, ns);
        e.filter = Filter::SubjectObjects;
        Ok(e)
    };
    let write = |name: &'static str| -> Result<Endpoint, Error> {
        let mut e = ep(
            name,
            Write,
            Target::Subjects(vec![]),
            &association_namespace(c)?,
        );
        e.body = BodyCheck::Association;
        Ok(e)
    };
    Some(match (method.clone(), segs) {
        (Method::GET, ["associations", "subjects", s]) => c.named_subject(s).map(|s| {
            ep(
                "GET /associations/subjects/{subject}",
                Read,
                Target::Subjects(vec![s]),
                ns,
            )
        }),
        (Method::GET, ["associations", "resources", _, _]) => {
            list("GET /associations/resources/{namespace}/{name}")
        }
        (Method::GET, ["associations", "resources", _]) => list("GET /associations/resources/{id}"),
        (Method::POST, ["associations"]) => write("POST /associations"),
        (Method::PUT, ["associations", "resources", _]) => {
            write("PUT /associations/resources/{id}")
        }
        (Method::DELETE, ["associations", "resources", id]) => {
            // The associations to delete are the ones a GET with the same selection answers.
            let query = c
                .query
                .query
                .iter()
                .filter(|(k, _)| k == "resourceType" || k == "associationType")
                .cloned()
                .collect();
            let lookup = CanonicalRequest {
                segments: vec!["associations".into(), "resources".into(), (*id).into()],
                query,
            }
            .path_and_query();
            // With cascadeLifecycle, deleting a strong association deletes its subject.
            let mut operations = vec![Write];
            if c.query.flag("cascadeLifecycle") {
                operations.push(Delete);
            }
            Ok(ep(
                "DELETE /associations/resources/{id}",
                Write,
                Target::Associated { lookup, operations },
                ns,
            ))
        }
        // A batch names resources of any team, with subjects the proxy would have to look up
        // one by one: reading needs `read` on every subject, mutating is registry administration.
        (Method::POST, ["associations:batchGet"]) => Ok(ep(
            "POST /associations:batchGet",
            Read,
            Target::EverySubject,
            ns,
        )),
        (Method::POST, ["associations:batchMutate"]) => Ok(ep(
            "POST /associations:batchMutate",
            GlobalWrite,
            Target::Global,
            ns,
        )),
        _ => return None,
    })
}

/// Confluent's DEK registry (client-side field encryption). A DEK belongs to the subject whose
/// fields it encrypts and takes that subject's `read`, `write` and `delete`; a KEK wraps the
/// DEKs of any number of subjects and is registry configuration (`global_read`,
/// `global_write`).
fn dek_registry(method: &Method, segs: &[&str], c: &Ctx<'_>) -> Option<Result<Endpoint, Error>> {
    use Operation::*;
    let ns = &c.ns;
    let global = |name: &'static str, op: Operation| Ok(ep(name, op, Target::Global, ns));
    let dek = |raw: &str, op: Operation, name: &'static str| {
        c.named_subject(raw)
            .map(|s| ep(name, op, Target::Subjects(vec![s]), ns))
    };
    Some(match (method.clone(), segs) {
        (Method::GET, []) => global("GET /dek-registry/v1/keks", GlobalRead),
        (Method::POST, []) => global("POST /dek-registry/v1/keks", GlobalWrite),
        (Method::GET, [_]) => global("GET /dek-registry/v1/keks/{name}", GlobalRead),
        (Method::PUT | Method::DELETE, [_]) => global("/dek-registry/v1/keks/{name}", GlobalWrite),
        (Method::POST, [_, "undelete" | "test"]) => {
            global("POST /dek-registry/v1/keks/{name}/{action}", GlobalWrite)
        }
        (Method::GET, [_, "deks"]) => {
            let mut e = ep(
                "GET /dek-registry/v1/keks/{name}/deks",
                Read,
                Target::List,
                ns,
            );
            e.filter = Filter::SubjectNames;
            Ok(e)
        }
        (Method::POST, [_, "deks"]) => {
            let mut e = ep(
                "POST /dek-registry/v1/keks/{name}/deks",
                Write,
                Target::Subjects(vec![]),
                ns,
            );
            e.body = BodyCheck::DekCreate;
            Ok(e)
        }
        (Method::GET, [_, "deks", s]) => {
            dek(s, Read, "GET /dek-registry/v1/keks/{name}/deks/{subject}")
        }
        (Method::POST, [_, "deks", s]) => {
            dek(s, Write, "POST /dek-registry/v1/keks/{name}/deks/{subject}")
        }
        (Method::DELETE, [_, "deks", s]) => dek(
            s,
            Delete,
            "DELETE /dek-registry/v1/keks/{name}/deks/{subject}",
        ),
        (Method::GET, [_, "deks", s, "versions"]) => dek(
            s,
            Read,
            "GET /dek-registry/v1/keks/{name}/deks/{subject}/versions",
        ),
        (Method::GET, [_, "deks", s, "versions", _]) => dek(
            s,
            Read,
            "GET /dek-registry/v1/keks/{name}/deks/{subject}/versions/{version}",
        ),
        (Method::DELETE, [_, "deks", s, "versions", _]) => dek(
            s,
            Delete,
            "DELETE /dek-registry/v1/keks/{name}/deks/{subject}/versions/{version}",
        ),
        // Undoing a delete is the deleter's right, not every writer's.
        (Method::POST, [_, "deks", s, "undelete"]) => dek(
            s,
            Delete,
            "POST /dek-registry/v1/keks/{name}/deks/{subject}/undelete",
        ),
        (Method::POST, [_, "deks", s, "versions", _, "undelete"]) => dek(
            s,
            Delete,
            "POST /dek-registry/v1/keks/{name}/deks/{subject}/versions/{version}/undelete",
        ),
        _ => return None,
    })
}

/// Apicurio's native API, v2 and v3. `None`: not in the map.
fn apicurio_native(
    method: &Method,
    segs: &[&str],
    headers: &HeaderMap,
    v2: bool,
) -> Option<Result<Endpoint, Error>> {
    use Operation::*;
    let root = Namespace::default();
    let global = |name: &'static str, op: Operation| Ok(ep(name, op, Target::Global, &root));
    let is_get = *method == Method::GET;
    let read_or = |write: Operation| if is_get { Read } else { write };
    Some(match segs {
        ["groups"] => global("/groups", if is_get { GlobalRead } else { GlobalWrite }),
        ["groups", _] | ["groups", _, "rules", ..] => global(
            "/groups/{group}",
            if is_get { GlobalRead } else { GlobalWrite },
        ),
        ["groups", g, "artifacts"] => {
            let ns = match apicurio_group(g) {
                Ok(ns) => ns,
                Err(e) => return Some(Err(e)),
            };
            match *method {
                Method::GET => {
                    let mut e = ep("GET /groups/{group}/artifacts", Read, Target::List, &ns);
                    e.filter = Filter::ApicurioArtifacts("artifacts");
                    Ok(e)
                }
                Method::POST => {
                    // v2 names the artifact in a header; v3 in the body, checked once it is read.
                    let mut e = ep(
                        "POST /groups/{group}/artifacts",
                        Write,
                        Target::Subjects(vec![]),
                        &ns,
                    );
                    if v2 {
                        match header_once(headers, "x-registry-artifactid") {
                            Ok(Some(a)) if !a.is_empty() && !a.contains(':') => match ns.qualify(a)
                            {
                                Some(s) => e.target = Target::Subjects(vec![s]),
                                None => return Some(Err(bad("invalid artifact id"))),
                            },
                            Ok(_) => {
                                return Some(Err(bad(
                                    "X-Registry-ArtifactId is required through registry-proxy",
                                )));
                            }
                            Err(e) => return Some(Err(e)),
                        }
                    } else {
                        e.body = BodyCheck::ApicurioCreate;
                    }
                    Ok(e)
                }
                Method::DELETE => global("DELETE /groups/{group}/artifacts", GlobalWrite),
                _ => return None,
            }
        }
        ["groups", g, "artifacts", a, rest @ ..] => {
            let ns = match apicurio_group(g) {
                Ok(ns) => ns,
                Err(e) => return Some(Err(e)),
            };
            if a.is_empty() || a.contains(':') {
                return Some(Err(bad("invalid artifact id")));
            }
            let subject = ns.qualify(a)?;
            let (name, op): (&'static str, Operation) = match (method.clone(), rest) {
                (Method::GET, []) => ("/groups/{group}/artifacts/{artifact}", Read),
                (Method::PUT, []) => ("/groups/{group}/artifacts/{artifact}", Write),
                (Method::DELETE, []) => ("/groups/{group}/artifacts/{artifact}", Delete),
                (_, ["rules", ..]) => (
                    "/groups/{group}/artifacts/{artifact}/rules",
                    if is_get { CompatRead } else { CompatWrite },
                ),
                (Method::POST, ["meta"]) => ("/groups/{group}/artifacts/{artifact}/meta", Read),
                (Method::PUT, ["test"]) => ("/groups/{group}/artifacts/{artifact}/test", Read),
                (_, ["meta" | "state" | "owner"]) => (
                    "/groups/{group}/artifacts/{artifact}/{setting}",
                    read_or(Write),
                ),
                (Method::GET | Method::POST, ["versions"]) => (
                    "/groups/{group}/artifacts/{artifact}/versions",
                    read_or(Write),
                ),
                (Method::DELETE, ["versions", _]) => (
                    "/groups/{group}/artifacts/{artifact}/versions/{version}",
                    Delete,
                ),
                (Method::GET | Method::PUT, ["versions", _]) => (
                    "/groups/{group}/artifacts/{artifact}/versions/{version}",
                    read_or(Write),
                ),
                (
                    _,
                    [
                        "versions",
                        _,
                        "content" | "references" | "meta" | "state" | "comments",
                    ],
                ) => (
                    "/groups/{group}/artifacts/{artifact}/versions/{version}/{part}",
                    read_or(Write),
                ),
                (Method::PUT | Method::DELETE, ["versions", _, "comments", _]) => (
                    "/groups/{group}/artifacts/{artifact}/versions/{version}/comments/{comment}",
                    Write,
                ),
                (_, ["branches", ..]) => (
                    "/groups/{group}/artifacts/{artifact}/branches",
                    read_or(Write),
                ),
                _ => return None,
            };
            Ok(ep(name, op, Target::Subjects(vec![subject]), &ns))
        }
        ["search", "artifacts"] if is_get || *method == Method::POST => {
            let mut e = ep("/search/artifacts", Read, Target::List, &root);
            e.filter = Filter::ApicurioArtifacts("artifacts");
            Ok(e)
        }
        ["search", "versions"] if is_get || *method == Method::POST => {
            let mut e = ep("/search/versions", Read, Target::List, &root);
            e.filter = Filter::ApicurioArtifacts("versions");
            Ok(e)
        }
        ["search", "groups"] if is_get => global("GET /search/groups", GlobalRead),
        // Content (or its references) by global or content id, from any group: readable with
        // any (group, artifact) using the id, which the search API names.
        ["ids", kind @ ("globalIds" | "contentIds"), id, rest @ ..]
            if is_get && matches!(rest, [] | ["references"]) =>
        {
            let param = if *kind == "globalIds" {
                "globalId"
            } else {
                "contentId"
            };
            let mut e = ep(
                "GET /ids/...",
                Read,
                Target::SchemaId((*id).to_owned()),
                &root,
            );
            e.id_lookup = Some(IdLookup::ApicurioSearch {
                param,
                id: (*id).to_owned(),
            });
            Ok(e)
        }
        // By content hash: the search API cannot be asked by hash, so it needs `read` on every
        // subject.
        ["ids", ..] if is_get => Ok(ep("GET /ids/...", Read, Target::EverySubject, &root)),
        ["system", ..] if is_get => global("GET /system/...", GlobalRead),
        ["users", "me"] if is_get => global("GET /users/me", GlobalRead),
        // The export is every artifact of every group, as a ZIP.
        ["admin", "export"] => global("/admin/export", GlobalWrite),
        ["admin", ..] => global("/admin/...", if is_get { GlobalRead } else { GlobalWrite }),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classify_str(method: Method, target: &str, flavor: Flavor) -> Result<Endpoint, Error> {
        classify_with(method, target, flavor, &HeaderMap::new())
    }

    fn classify_with(
        method: Method,
        target: &str,
        flavor: Flavor,
        headers: &HeaderMap,
    ) -> Result<Endpoint, Error> {
        let (path, query) = target
            .split_once('?')
            .map_or((target, None), |(p, q)| (p, Some(q)));
        classify(
            &method,
            &CanonicalRequest::parse(path, query)?,
            headers,
            flavor,
        )
    }

    fn subjects(method: Method, target: &str) -> (Operation, Vec<String>) {
        let e = classify_str(method, target, Flavor::Confluent).unwrap();
        match e.target {
            Target::Subjects(s) => (e.operation, s),
            other => panic!("{target}: {other:?}"),
        }
    }

    #[test]
    fn contexts_are_one_canonical_form() {
        use Operation::*;
        let want = (Write, vec![":.staging:pay".to_owned()]);
        assert_eq!(
            subjects(Method::POST, "/subjects/:.staging:pay/versions"),
            want
        );
        assert_eq!(
            subjects(Method::POST, "/subjects/%3A.staging%3Apay/versions"),
            want
        );
        assert_eq!(
            subjects(Method::POST, "/contexts/.staging/subjects/pay/versions"),
            want
        );
        assert_eq!(
            subjects(Method::GET, "/subjects/:.:pay/versions"),
            (Read, vec!["pay".to_owned()])
        );
        // The default context's path form is a '.' segment, which canonicalization refuses.
        assert!(
            classify_str(
                Method::GET,
                "/contexts/./subjects/pay/versions",
                Flavor::Confluent
            )
            .is_err()
        );
        for refused in [
            "/contexts/.a/subjects/:.b:pay/versions",
            "/contexts/staging/subjects/pay/versions",
            "/subjects/:staging:pay/versions",
            "/subjects/:.staging/versions",
            "/subjects/:.a::.b:x/versions",
            "/subjects/:*:x/versions",
        ] {
            assert!(
                matches!(
                    classify_str(Method::GET, refused, Flavor::Confluent),
                    Err(Error::BadRequest(_))
                ),
                "{refused}"
            );
        }
    }

    #[test]
    fn context_level_settings_are_global() {
        let e = classify_str(Method::PUT, "/config/:.staging:", Flavor::Confluent).unwrap();
        assert_eq!(
            (e.operation, e.target),
            (Operation::GlobalWrite, Target::Global)
        );
    }

    #[test]
    fn ids_look_up_in_their_context_and_read_names_at_the_root() {
        let e = classify_str(Method::GET, "/contexts/.x/schemas/ids/7", Flavor::Confluent).unwrap();
        assert_eq!(e.target, Target::SchemaId("7".into()));
        assert_eq!(
            e.id_lookup,
            Some(IdLookup::Versions(
                "/contexts/.x/schemas/ids/7/versions?deleted=true".into()
            ))
        );
        // Confluent answers with stored names: unqualified is the default context.
        assert_eq!(e.names, Namespace::default());
        let e = classify_str(
            Method::GET,
            "/schemas/ids/7?subject=:.y:s",
            Flavor::Confluent,
        )
        .unwrap();
        assert_eq!(
            e.id_lookup,
            Some(IdLookup::Versions(
                "/schemas/ids/7/versions?deleted=true&subject=:.y:s".into()
            ))
        );
        assert_eq!(e.names, Namespace::default());
        // Whether an id is a number is the registry's to say (the proxy decides who may ask).
        let e = classify_str(Method::GET, "/schemas/ids/a%20b", Flavor::Confluent).unwrap();
        assert_eq!(e.target, Target::SchemaId("a b".into()));
        assert_eq!(
            e.id_lookup,
            Some(IdLookup::Versions(
                "/schemas/ids/a%20b/versions?deleted=true".into()
            ))
        );
    }

    #[test]
    fn qualified_parameters_cannot_leave_a_context_path() {
        for target in [
            "/contexts/.mine/schemas?subjectPrefix=:*:payments",
            "/contexts/.mine/schemas/ids/7?subject=:.:",
            "/contexts/.mine/subjects?subjectPrefix=:*:",
            "/contexts/.mine/subjects?subjectPrefix=:.other:",
        ] {
            assert!(
                matches!(
                    classify_str(Method::GET, target, Flavor::Confluent),
                    Err(Error::BadRequest(_))
                ),
                "{target}"
            );
        }
        assert!(
            classify_str(
                Method::GET,
                "/contexts/.mine/subjects?subjectPrefix=pay",
                Flavor::Confluent
            )
            .is_ok()
        );
    }

    #[test]
    fn body_names_are_relative_to_the_path_subjects_context() {
        for target in ["/config/:.prod:sandbox", "/contexts/.prod/config/sandbox"] {
            let e = classify_str(Method::PUT, target, Flavor::Confluent).unwrap();
            assert_eq!(e.namespace, Namespace(Some(".prod".into())), "{target}");
            assert_eq!(
                e.namespace.qualify("payments-value").as_deref(),
                Some(":.prod:payments-value")
            );
            assert_eq!(
                e.namespace.qualify(":.:payments-value").as_deref(),
                Some("payments-value")
            );
        }
        let e = classify_str(Method::PUT, "/config/:.prod:", Flavor::Confluent).unwrap();
        assert_eq!(e.namespace, Namespace(Some(".prod".into())));
        let e = classify_str(
            Method::POST,
            "/subjects/:.prod:sandbox/versions",
            Flavor::Confluent,
        )
        .unwrap();
        assert_eq!(e.namespace, Namespace(Some(".prod".into())));
        // Karapace has no contexts: `:.prod:sandbox` is a literal name, references are too.
        let e = classify_str(
            Method::POST,
            "/subjects/:.prod:sandbox/versions",
            Flavor::Karapace,
        )
        .unwrap();
        assert_eq!(e.namespace, Namespace::default());
    }

    #[test]
    fn answers_that_may_fall_back_to_another_context_are_checked() {
        let e = classify_str(Method::GET, "/subjects/pay/versions/5", Flavor::Confluent).unwrap();
        assert_eq!(e.subject_check, SubjectCheck::Response);
        let e = classify_str(Method::POST, "/subjects/pay", Flavor::Karapace).unwrap();
        assert_eq!(e.subject_check, SubjectCheck::Response);
        let e = classify_str(
            Method::GET,
            "/contexts/.x/subjects/pay/versions/5/schema?deleted=true&format=resolved",
            Flavor::Confluent,
        )
        .unwrap();
        assert_eq!(
            e.subject_check,
            SubjectCheck::Version("/contexts/.x/subjects/pay/versions/5?deleted=true".into())
        );
        let e = classify_str(
            Method::GET,
            "/subjects/pay/versions/latest/referencedby",
            Flavor::Confluent,
        )
        .unwrap();
        assert_eq!(
            e.subject_check,
            SubjectCheck::Version("/subjects/pay/versions/latest".into())
        );
        let e = classify_str(
            Method::GET,
            "/apis/ccompat/v7/subjects/pay/versions/5",
            Flavor::Apicurio,
        )
        .unwrap();
        assert_eq!(e.subject_check, SubjectCheck::None);
    }

    #[test]
    fn apicurio_id_reads_are_resolved_through_the_search_api() {
        let mut h = HeaderMap::new();
        h.insert("x-registry-groupid", "mine".parse().unwrap());
        for (target, lookup) in [
            (
                "/apis/ccompat/v7/schemas/ids/42",
                IdLookup::ApicurioCcompat("42".into()),
            ),
            (
                "/apis/ccompat/v8/schemas/ids/42/schema",
                IdLookup::ApicurioCcompat("42".into()),
            ),
            (
                "/apis/registry/v3/ids/contentIds/42",
                IdLookup::ApicurioSearch {
                    param: "contentId",
                    id: "42".into(),
                },
            ),
            (
                "/apis/registry/v2/ids/globalIds/42/references",
                IdLookup::ApicurioSearch {
                    param: "globalId",
                    id: "42".into(),
                },
            ),
        ] {
            let e = classify_with(Method::GET, target, Flavor::Apicurio, &h).unwrap();
            assert_eq!(
                (e.operation, e.target, e.id_lookup),
                (Operation::Read, Target::SchemaId("42".into()), Some(lookup)),
                "{target}"
            );
        }
        // Lists of the subjects using an id come back as bare artifact ids from every group.
        for target in [
            "/apis/ccompat/v7/schemas/ids/42/subjects",
            "/apis/ccompat/v8/schemas/ids/42/versions",
            "/apis/registry/v3/ids/contentHashes/abc",
        ] {
            let e = classify_with(Method::GET, target, Flavor::Apicurio, &h).unwrap();
            assert_eq!(
                (e.operation, e.target, e.id_lookup),
                (Operation::Read, Target::EverySubject, None),
                "{target}"
            );
        }
        let e = classify_str(
            Method::GET,
            "/apis/registry/v3/admin/export",
            Flavor::Apicurio,
        )
        .unwrap();
        assert_eq!(e.operation, Operation::GlobalWrite);
    }

    #[test]
    fn unknown_paths_are_404_and_unknown_methods_405() {
        for (m, p) in [
            (Method::GET, "/apis/ccompat/v7/subjects"),
            (Method::GET, "/subjects/x/versions/1/extra"),
            (Method::GET, "/no-such-api"),
            (Method::GET, "/contexts/.x/associations/subjects/s"),
            (Method::GET, "/contexts/.x/dek-registry/v1/keks"),
        ] {
            assert!(
                matches!(
                    classify_str(m.clone(), p, Flavor::Confluent),
                    Err(Error::UnknownEndpoint(_))
                ),
                "{m} {p}"
            );
        }
        for (m, p) in [
            (Method::POST, "/subjects"),
            (Method::PATCH, "/subjects/x/versions"),
            (Method::HEAD, "/subjects"),
            (Method::DELETE, "/schemas/ids/1"),
        ] {
            assert!(
                matches!(
                    classify_str(m.clone(), p, Flavor::Confluent),
                    Err(Error::MethodNotAllowed(_))
                ),
                "{m} {p}"
            );
        }
        assert!(matches!(
            classify_str(Method::GET, "/subjects", Flavor::Apicurio),
            Err(Error::UnknownEndpoint(_))
        ));
    }

    #[test]
    fn current_confluent_endpoints_have_operation_classes() {
        use Operation::*;
        let global = |m: Method, p: &str, op: Operation| {
            let e = classify_str(m.clone(), p, Flavor::Confluent).unwrap();
            assert_eq!((e.operation, e.target), (op, Target::Global), "{m} {p}");
        };
        global(Method::GET, "/exporters", GlobalRead);
        global(Method::GET, "/exporters/x/status", GlobalRead);
        global(Method::GET, "/exporters/x", GlobalWrite);
        global(Method::GET, "/exporters/x/config", GlobalWrite);
        global(Method::PUT, "/exporters/x/pause", GlobalWrite);
        global(Method::GET, "/dek-registry/v1/keks", GlobalRead);
        global(Method::GET, "/dek-registry/v1/keks/k", GlobalRead);
        global(Method::POST, "/dek-registry/v1/keks", GlobalWrite);
        global(
            Method::DELETE,
            "/dek-registry/v1/keks/k?permanent=true",
            GlobalWrite,
        );
        global(Method::GET, "/v1/metadata/deployment", GlobalRead);
        global(Method::POST, "/associations:batchMutate", GlobalWrite);
        let on = |m: Method, p: &str, op: Operation, subject: &str| {
            let e = classify_str(m.clone(), p, Flavor::Confluent).unwrap();
            assert_eq!(
                (e.operation, e.target),
                (op, Target::Subjects(vec![subject.into()])),
                "{m} {p}"
            );
        };
        on(
            Method::GET,
            "/dek-registry/v1/keks/k/deks/pay-value",
            Read,
            "pay-value",
        );
        on(
            Method::GET,
            "/dek-registry/v1/keks/k/deks/:.ctx:pay-value/versions/latest?algorithm=AES256_GCM",
            Read,
            ":.ctx:pay-value",
        );
        on(
            Method::POST,
            "/dek-registry/v1/keks/k/deks/pay-value",
            Write,
            "pay-value",
        );
        on(
            Method::DELETE,
            "/dek-registry/v1/keks/k/deks/pay-value/versions/1",
            Delete,
            "pay-value",
        );
        on(
            Method::POST,
            "/dek-registry/v1/keks/k/deks/pay-value/undelete",
            Delete,
            "pay-value",
        );
        on(
            Method::GET,
            "/associations/subjects/pay-value",
            Read,
            "pay-value",
        );
        on(
            Method::POST,
            "/subjects/pay-value/versions/1/tags",
            Write,
            "pay-value",
        );
        let e = classify_str(
            Method::POST,
            "/dek-registry/v1/keks/k/deks",
            Flavor::Confluent,
        )
        .unwrap();
        assert_eq!((e.operation, e.body), (Write, BodyCheck::DekCreate));
        let e = classify_str(
            Method::GET,
            "/dek-registry/v1/keks/k/deks",
            Flavor::Confluent,
        )
        .unwrap();
        assert_eq!((e.target, e.filter), (Target::List, Filter::SubjectNames));
        for p in [
            "/associations/resources/-/orders?resourceType=topic&associationType=value",
            "/associations/resources/lkc-1/orders",
            "/associations/resources/topic-id-1",
        ] {
            let e = classify_str(Method::GET, p, Flavor::Confluent).unwrap();
            assert_eq!(
                (e.target, e.filter),
                (Target::List, Filter::SubjectObjects),
                "{p}"
            );
        }
        let e = classify_str(
            Method::POST,
            "/associations?context=:.prod:",
            Flavor::Confluent,
        )
        .unwrap();
        assert_eq!(
            (e.operation, e.body, e.namespace),
            (
                Write,
                BodyCheck::Association,
                Namespace(Some(".prod".into()))
            )
        );
        let e = classify_str(
            Method::PUT,
            "/associations/resources/id-1",
            Flavor::Confluent,
        )
        .unwrap();
        assert_eq!(e.body, BodyCheck::Association);
        let e = classify_str(
            Method::DELETE,
            "/associations/resources/id-1?resourceType=topic&associationType=key&associationType=value&cascadeLifecycle=true&dryRun=false",
            Flavor::Confluent,
        )
        .unwrap();
        assert_eq!(
            e.target,
            Target::Associated {
                lookup: "/associations/resources/id-1?resourceType=topic&associationType=key&associationType=value".into(),
                operations: vec![Write, Delete],
            }
        );
        let e = classify_str(Method::POST, "/associations:batchGet", Flavor::Confluent).unwrap();
        assert_eq!((e.operation, e.target), (Read, Target::EverySubject));
        let e = classify_str(Method::GET, "/schemas/guids/5b8d-4c", Flavor::Confluent).unwrap();
        assert_eq!((e.operation, e.target), (Read, Target::EverySubject));
        assert!(
            classify_str(Method::POST, "/associations?context=bad", Flavor::Confluent).is_err()
        );
    }

    #[test]
    fn apicurio_groups_are_namespaces() {
        let mut h = HeaderMap::new();
        h.insert("x-registry-groupid", "payments".parse().unwrap());
        let e = classify_with(
            Method::POST,
            "/apis/ccompat/v7/subjects/card/versions",
            Flavor::Apicurio,
            &h,
        )
        .unwrap();
        assert_eq!(e.target, Target::Subjects(vec![":.payments:card".into()]));
        let e = classify_str(
            Method::GET,
            "/apis/ccompat/v7/subjects/card/versions",
            Flavor::Apicurio,
        )
        .unwrap();
        assert_eq!(e.target, Target::Subjects(vec!["card".into()]));
        let e = classify_str(
            Method::DELETE,
            "/apis/registry/v3/groups/payments/artifacts/card/versions/3",
            Flavor::Apicurio,
        )
        .unwrap();
        assert_eq!(
            (e.operation, e.target),
            (
                Operation::Delete,
                Target::Subjects(vec![":.payments:card".into()])
            )
        );
        let e = classify_str(
            Method::GET,
            "/apis/registry/v3/groups/default/artifacts/card",
            Flavor::Apicurio,
        )
        .unwrap();
        assert_eq!(e.target, Target::Subjects(vec!["card".into()]));
        assert!(
            classify_str(
                Method::GET,
                "/apis/ccompat/v7/subjects/g:card/versions",
                Flavor::Apicurio
            )
            .is_err()
        );
        h.append("x-registry-groupid", "other".parse().unwrap());
        assert!(
            classify_with(
                Method::GET,
                "/apis/ccompat/v7/subjects/card/versions",
                Flavor::Apicurio,
                &h
            )
            .is_err()
        );
    }
}
