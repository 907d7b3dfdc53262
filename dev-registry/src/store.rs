//! The registry's data: schemas by global id, subjects with their versions, settings.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, MutexGuard},
};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A reference from one schema to a schema registered under another subject.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Reference {
    pub name: String,
    pub subject: String,
    pub version: i64,
}

/// A schema's identity: identical (type, text, references, metadata, rule set) share one id.
///
/// Metadata and the rule set are part of it because Confluent (7.4 and later) and Karapace
/// hash them into the schema's identity: the same text registered with other data-contract
/// rules gets a new id, so a reader holding an id always sees the rules it was written under.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SchemaKey {
    pub schema_type: String,
    pub schema: String,
    pub references: Vec<Reference>,
    /// The registration's `metadata` (tags, properties, sensitive fields), as sent; `None`
    /// when absent or null, and then omitted from answers as the registries omit it.
    pub metadata: Option<Value>,
    /// The registration's `ruleSet` (data-contract domain and migration rules), as sent; `None`
    /// when absent or null.
    pub rule_set: Option<Value>,
}

#[derive(Debug, Clone)]
pub struct Version {
    pub version: i64,
    pub id: i64,
    /// Soft-deleted versions stay visible to `deleted=true` reads until permanently deleted.
    pub deleted: bool,
}

/// Errors in the Confluent numbering clients understand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryError {
    /// A body that is not JSON: Confluent's JsonParseExceptionMapper answers 400 with the
    /// parser's message.
    MalformedJson(String),
    /// A field the request type does not have (Karapace: 422 "Unrecognized field").
    UnrecognizedField(String),
    SubjectNotFound,
    VersionNotFound,
    SchemaNotFound,
    InvalidSchema,
    InvalidVersion,
    SubjectNotSoftDeleted,
    SubjectSoftDeleted,
}

impl RegistryError {
    pub fn code(&self) -> (u16, u32, String) {
        let (status, code, message) = match self {
            Self::MalformedJson(why) => return (400, 400, format!("Unexpected token: {why}")),
            Self::UnrecognizedField(name) => {
                return (422, 422, format!("Unrecognized field: {name}"));
            }
            Self::SubjectNotFound => (404, 40401, "Subject not found."),
            Self::VersionNotFound => (404, 40402, "Version not found."),
            Self::SchemaNotFound => (404, 40403, "Schema not found"),
            Self::SubjectSoftDeleted => (
                404,
                40404,
                "Subject was soft deleted. Set permanent=true to delete permanently",
            ),
            Self::SubjectNotSoftDeleted => (
                404,
                40405,
                "Subject was not deleted first before being permanently deleted",
            ),
            Self::InvalidSchema => (422, 42201, "Invalid schema"),
            Self::InvalidVersion => (
                422,
                42202,
                "The specified version is not a valid version id",
            ),
        };
        (status, code, message.to_owned())
    }
}

#[derive(Debug, Default)]
struct Inner {
    next_id: i64,
    schemas: HashMap<i64, SchemaKey>,
    ids: HashMap<SchemaKey, i64>,
    subjects: BTreeMap<String, Vec<Version>>,
    config: HashMap<String, Value>,
    mode: HashMap<String, String>,
}

/// Shared, in-memory state. Cloning shares it.
#[derive(Debug, Clone, Default)]
pub struct Store(Arc<Mutex<Inner>>);

/// The context of a subject: `.staging` for `:.staging:x`, `.` for an unqualified name.
pub fn context_of(subject: &str) -> &str {
    subject
        .strip_prefix(':')
        .and_then(|rest| rest.split_once(':'))
        .map_or(".", |(ctx, _)| ctx)
}

fn valid(key: &SchemaKey) -> bool {
    match key.schema_type.as_str() {
        "AVRO" | "JSON" => serde_json::from_str::<Value>(&key.schema).is_ok(),
        "PROTOBUF" => !key.schema.trim().is_empty(),
        _ => false,
    }
}

impl Store {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; keep serving.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn register(&self, subject: &str, key: SchemaKey) -> Result<(i64, i64), RegistryError> {
        if !valid(&key) {
            return Err(RegistryError::InvalidSchema);
        }
        let mut inner = self.lock();
        let id = match inner.ids.get(&key) {
            Some(id) => *id,
            None => {
                inner.next_id += 1;
                let id = inner.next_id;
                inner.ids.insert(key.clone(), id);
                inner.schemas.insert(id, key);
                id
            }
        };
        let versions = inner.subjects.entry(subject.to_owned()).or_default();
        if let Some(v) = versions.iter().find(|v| v.id == id && !v.deleted) {
            return Ok((id, v.version));
        }
        let version = versions.iter().map(|v| v.version).max().unwrap_or(0) + 1;
        versions.push(Version {
            version,
            id,
            deleted: false,
        });
        Ok((id, version))
    }

    pub fn lookup(
        &self,
        subject: &str,
        key: &SchemaKey,
        deleted: bool,
    ) -> Result<(i64, i64), RegistryError> {
        let inner = self.lock();
        let versions = live(&inner, subject, deleted)?;
        let id = inner.ids.get(key).ok_or(RegistryError::SchemaNotFound)?;
        versions
            .iter()
            .rev()
            .find(|v| v.id == *id && (deleted || !v.deleted))
            .map(|v| (v.id, v.version))
            .ok_or(RegistryError::SchemaNotFound)
    }

    pub fn schema(&self, id: i64) -> Option<SchemaKey> {
        self.lock().schemas.get(&id).cloned()
    }

    /// Every (subject, version) using `id`.
    pub fn usages(&self, id: i64, deleted: bool) -> Vec<(String, i64)> {
        let inner = self.lock();
        inner
            .subjects
            .iter()
            .flat_map(|(s, vs)| {
                vs.iter()
                    .filter(|v| v.id == id && (deleted || !v.deleted))
                    .map(|v| (s.clone(), v.version))
            })
            .collect()
    }

    pub fn subjects(&self, prefix: &str, deleted: bool, deleted_only: bool) -> Vec<String> {
        let inner = self.lock();
        inner
            .subjects
            .iter()
            .filter(|(s, _)| s.starts_with(prefix))
            .filter(|(_, vs)| {
                let any_live = vs.iter().any(|v| !v.deleted);
                let any_deleted = vs.iter().any(|v| v.deleted);
                if deleted_only {
                    any_deleted
                } else {
                    any_live || (deleted && any_deleted)
                }
            })
            .map(|(s, _)| s.clone())
            .collect()
    }

    pub fn contexts(&self) -> Vec<String> {
        let inner = self.lock();
        let mut contexts: Vec<String> = inner
            .subjects
            .keys()
            .map(|s| context_of(s).to_owned())
            .collect();
        contexts.push(".".into());
        contexts.sort();
        contexts.dedup();
        contexts
    }

    pub fn versions(&self, subject: &str, deleted: bool) -> Result<Vec<Version>, RegistryError> {
        let inner = self.lock();
        Ok(live(&inner, subject, deleted)?
            .into_iter()
            .filter(|v| deleted || !v.deleted)
            .collect())
    }

    /// Resolves `latest`, `-1` or a number to a version.
    pub fn version(
        &self,
        subject: &str,
        version: &str,
        deleted: bool,
    ) -> Result<Version, RegistryError> {
        let versions = self.versions(subject, deleted)?;
        if version == "latest" || version == "-1" {
            return versions
                .into_iter()
                .max_by_key(|v| v.version)
                .ok_or(RegistryError::VersionNotFound);
        }
        let n: i64 = version.parse().map_err(|_| RegistryError::InvalidVersion)?;
        if n < 1 {
            return Err(RegistryError::InvalidVersion);
        }
        versions
            .into_iter()
            .find(|v| v.version == n)
            .ok_or(RegistryError::VersionNotFound)
    }

    pub fn referenced_by(&self, subject: &str, version: i64) -> Vec<i64> {
        let inner = self.lock();
        let mut ids: Vec<i64> = inner
            .schemas
            .iter()
            .filter(|(_, k)| {
                k.references
                    .iter()
                    .any(|r| r.subject == subject && r.version == version)
            })
            .map(|(id, _)| *id)
            .collect();
        ids.sort();
        ids
    }

    pub fn delete_subject(
        &self,
        subject: &str,
        permanent: bool,
    ) -> Result<Vec<i64>, RegistryError> {
        let mut inner = self.lock();
        let versions = inner
            .subjects
            .get_mut(subject)
            .ok_or(RegistryError::SubjectNotFound)?;
        if permanent {
            if versions.iter().any(|v| !v.deleted) {
                return Err(RegistryError::SubjectNotSoftDeleted);
            }
            let removed = versions.iter().map(|v| v.version).collect();
            inner.subjects.remove(subject);
            return Ok(removed);
        }
        if versions.iter().all(|v| v.deleted) {
            return Err(RegistryError::SubjectSoftDeleted);
        }
        let mut removed = Vec::new();
        for v in versions.iter_mut().filter(|v| !v.deleted) {
            v.deleted = true;
            removed.push(v.version);
        }
        Ok(removed)
    }

    pub fn delete_version(
        &self,
        subject: &str,
        version: &str,
        permanent: bool,
    ) -> Result<i64, RegistryError> {
        let target = self.version(subject, version, permanent)?;
        let mut inner = self.lock();
        let versions = inner
            .subjects
            .get_mut(subject)
            .ok_or(RegistryError::SubjectNotFound)?;
        if permanent {
            if !target.deleted {
                return Err(RegistryError::SubjectNotSoftDeleted);
            }
            versions.retain(|v| v.version != target.version);
        } else if let Some(v) = versions.iter_mut().find(|v| v.version == target.version) {
            v.deleted = true;
        }
        Ok(target.version)
    }

    /// Subject-level config; `""` is the global config.
    pub fn config(&self, subject: &str) -> Option<Value> {
        self.lock().config.get(subject).cloned()
    }

    pub fn set_config(&self, subject: &str, value: Value) {
        self.lock().config.insert(subject.to_owned(), value);
    }

    pub fn delete_config(&self, subject: &str) -> Option<Value> {
        self.lock().config.remove(subject)
    }

    pub fn mode(&self, subject: &str) -> Option<String> {
        self.lock().mode.get(subject).cloned()
    }

    pub fn set_mode(&self, subject: &str, mode: String) {
        self.lock().mode.insert(subject.to_owned(), mode);
    }

    pub fn delete_mode(&self, subject: &str) -> Option<String> {
        self.lock().mode.remove(subject)
    }
}

fn live(inner: &Inner, subject: &str, deleted: bool) -> Result<Vec<Version>, RegistryError> {
    let versions = inner
        .subjects
        .get(subject)
        .ok_or(RegistryError::SubjectNotFound)?;
    if !deleted && versions.iter().all(|v| v.deleted) {
        return Err(RegistryError::SubjectNotFound);
    }
    Ok(versions.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn avro(text: &str) -> SchemaKey {
        SchemaKey {
            schema_type: "AVRO".into(),
            schema: text.into(),
            references: vec![],
            metadata: None,
            rule_set: None,
        }
    }

    #[test]
    fn metadata_and_rule_set_are_part_of_the_identity() {
        let store = Store::default();
        let rules = |expr: &str| {
            serde_json::json!({"domainRules": [{"name": "positive", "kind": "CONDITION",
                "mode": "WRITE", "type": "CEL", "expr": expr}]})
        };
        let with = |rule_set: Option<Value>, metadata: Option<Value>| SchemaKey {
            rule_set,
            metadata,
            ..avro("\"long\"")
        };
        let (plain, _) = store.register("s", avro("\"long\"")).unwrap();
        let (a, va) = store
            .register("s", with(Some(rules("message > 0")), None))
            .unwrap();
        let (b, vb) = store
            .register("s", with(Some(rules("message > 1")), None))
            .unwrap();
        let (m, _) = store
            .register(
                "s",
                with(
                    None,
                    Some(serde_json::json!({"properties": {"owner": "x"}})),
                ),
            )
            .unwrap();
        assert_eq!((va, vb), (2, 3), "a new rule set is a new version");
        assert!(plain != a && a != b && plain != m && a != m);
        assert_eq!(
            store
                .register("t", with(Some(rules("message > 0")), None))
                .unwrap()
                .0,
            a,
            "the same text and rules share the id across subjects"
        );
        assert_eq!(
            store.schema(a).unwrap().rule_set,
            Some(rules("message > 0"))
        );
        assert_eq!(
            store.lookup("s", &with(Some(rules("message > 1")), None), false),
            Ok((b, 3))
        );
    }

    #[test]
    fn identical_schema_text_reuses_the_global_id() {
        let store = Store::default();
        let (a, va) = store.register("a-value", avro("\"string\"")).unwrap();
        let (b, vb) = store.register("b-value", avro("\"string\"")).unwrap();
        let (c, _) = store.register("a-value", avro("\"long\"")).unwrap();
        assert_eq!((a, va, vb), (b, 1, 1));
        assert_ne!(a, c);
        assert_eq!(
            store.register("a-value", avro("\"string\"")).unwrap(),
            (a, 1),
            "re-registering is idempotent"
        );
        assert_eq!(store.usages(a, false).len(), 2);
        assert_eq!(
            store.register("x", avro("{not json")),
            Err(RegistryError::InvalidSchema)
        );
    }

    #[test]
    fn soft_then_permanent_delete() {
        let store = Store::default();
        store.register("s", avro("\"int\"")).unwrap();
        assert_eq!(
            store.delete_subject("s", true),
            Err(RegistryError::SubjectNotSoftDeleted)
        );
        assert_eq!(store.delete_subject("s", false), Ok(vec![1]));
        assert!(store.subjects("", false, false).is_empty());
        assert_eq!(store.subjects("", true, false), ["s"]);
        assert_eq!(store.delete_subject("s", true), Ok(vec![1]));
        assert_eq!(
            store.versions("s", true).unwrap_err(),
            RegistryError::SubjectNotFound
        );
    }

    #[test]
    fn contexts_come_from_qualified_subjects() {
        let store = Store::default();
        store.register(":.staging:s", avro("\"int\"")).unwrap();
        assert_eq!(store.contexts(), [".", ".staging"]);
        assert_eq!(context_of("plain"), ".");
    }
}
