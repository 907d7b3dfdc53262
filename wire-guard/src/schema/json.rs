//! JSON Schema: the registry's schema compiled with the `jsonschema` crate, its references
//! registered as resources under their reference names, and each payload required to be one
//! UTF-8 JSON document that validates.

use serde::Deserialize;
use serde_json::Value;

use shared::policy::FieldPath;

use super::{
    Invalid, Reason,
    datum::Datum,
    fields::{EditError, FieldKind},
    tags::{At, INLINE_PROPERTY, MAX_PATH_SEGMENTS, SchemaField, Walk, child},
};

/// How many violations one message lists; the first few locate the problem.
const MAX_REPORTED_ERRORS: usize = 3;

/// Where references without a scheme live: the base URI `jsonschema` gives a schema without
/// `$id`, so `{"$ref": "address.json"}` in such a schema finds the reference named
/// `address.json`.
const DEFAULT_BASE: &str = "json-schema:///";

pub(crate) struct JsonSchema {
    validator: jsonschema::Validator,
    /// The schema document, for listing its fields and their tags.
    document: Value,
    /// The schema's `title`, reported as the record name.
    title: Option<String>,
}

impl JsonSchema {
    /// Compiles `text`; `references` are (reference name, schema text) pairs.
    pub(crate) fn compile(text: &str, references: &[(&str, &str)]) -> Result<Self, String> {
        let schema: Value =
            serde_json::from_str(text).map_err(|e| format!("schema is not JSON: {e}"))?;
        let title = schema
            .get("title")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let main_id = schema.get("$id").and_then(Value::as_str);
        let mut resources = Vec::new();
        for (name, text) in references {
            let document: Value = serde_json::from_str(text)
                .map_err(|e| format!("reference {name} is not JSON: {e}"))?;
            for uri in reference_uris(name, main_id) {
                resources.push((uri, document.clone()));
            }
        }
        let registry = jsonschema::Registry::new()
            .extend(resources)
            .and_then(|builder| builder.prepare())
            .map_err(|e| format!("references: {e}"))?;
        let mut options = jsonschema::options().with_registry(&registry);
        // Confluent's registry and serializers read a schema without `$schema` as draft-07.
        if schema.get("$schema").is_none() {
            options = options.with_draft(jsonschema::Draft::Draft7);
        }
        let validator = options.build(&schema).map_err(|e| e.to_string())?;
        Ok(JsonSchema {
            validator,
            document: schema,
            title,
        })
    }

    pub(crate) fn record_name(&self) -> Option<String> {
        self.title.clone()
    }

    /// Validates the payload; with `want_datum`, also returns it in the rules' form.
    pub(crate) fn validate(
        &self,
        payload: &[u8],
        want_datum: bool,
    ) -> Result<Option<Datum>, Invalid> {
        let mut deserializer = serde_json::Deserializer::from_slice(payload);
        let document = Value::deserialize(&mut deserializer).map_err(|e| {
            Invalid::new(Reason::DoesNotDecode, format!("not a JSON document: {e}"))
        })?;
        deserializer.end().map_err(|e| {
            Invalid::new(
                Reason::TrailingBytes,
                format!("bytes follow the JSON document: {e}"),
            )
        })?;
        let mut errors = self.validator.iter_errors(&document).peekable();
        if errors.peek().is_some() {
            let listed: Vec<String> = errors
                .by_ref()
                .take(MAX_REPORTED_ERRORS)
                .map(|error| {
                    let path = error.instance_path().as_str();
                    let path = if path.is_empty() { "/" } else { path };
                    format!("at {path}: {error}")
                })
                .collect();
            let more = errors.count();
            let mut message = listed.join("; ");
            if more > 0 {
                message.push_str(&format!("; and {more} more"));
            }
            return Err(Invalid::new(Reason::NotValid, message));
        }
        Ok(want_datum.then(|| to_datum(&document, "$")))
    }
}

/// See [`super::CompiledSchema::edit_fields`]: JSON values hold text only, so every protected
/// member must be a string (or null, or absent).
pub(crate) fn edit_fields<E>(
    head: &[u8],
    payload: &[u8],
    paths: &[&FieldPath],
    mut edit: impl FnMut(usize, FieldKind, &[u8]) -> Result<Option<Vec<u8>>, E>,
) -> Result<Option<Vec<u8>>, EditError<E>> {
    let mut document: Value = serde_json::from_slice(payload)
        .map_err(|e| EditError::Shape(format!("not a JSON document: {e}")))?;
    let mut changed = false;
    for (index, path) in paths.iter().enumerate() {
        // Walk read-only first: a missing or null member is nothing to protect, but a member
        // of another type where an object belongs means the field's value is elsewhere.
        let mut seen = &document;
        for segment in &path.segments {
            seen = match seen {
                Value::Object(members) => match members.get(segment) {
                    Some(next) => next,
                    None => &Value::Null,
                },
                Value::Null => &Value::Null,
                other => {
                    return Err(EditError::Shape(format!(
                        "{path}: met a {} where an object was expected",
                        json_type(other)
                    )));
                }
            };
        }
        let pointer: String = path
            .segments
            .iter()
            .map(|s| format!("/{}", s.replace('~', "~0").replace('/', "~1")))
            .collect();
        let Some(at) = document.pointer_mut(&pointer) else {
            continue;
        };
        match at {
            Value::Null => {}
            Value::String(text) => {
                if let Some(new) =
                    edit(index, FieldKind::String, text.as_bytes()).map_err(EditError::Edit)?
                {
                    *text = String::from_utf8(new).map_err(|_| {
                        EditError::Shape(format!("{path}: the replacement is not text"))
                    })?;
                    changed = true;
                }
            }
            other => {
                return Err(EditError::Shape(format!(
                    "{path} is a {}; only strings can be protected in place",
                    json_type(other)
                )));
            }
        }
    }
    if !changed {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(head.len() + payload.len() + 64);
    out.extend_from_slice(head);
    serde_json::to_writer(&mut out, &document)
        .map(|()| Some(out))
        .map_err(|e| EditError::Shape(format!("writing the document back: {e}")))
}

/// How many `$ref`s in a row are followed, and how deeply properties nest, in a walk.
const MAX_REF_HOPS: usize = 16;

impl JsonSchema {
    /// Every property reachable from the top of the schema (through `properties`, local
    /// `$ref`s, and `oneOf`/`anyOf` with a null branch), with its `confluent:tags`, for
    /// selection by tag (see [`super::tags`]). Full names are paths from `$`, as Confluent's
    /// serializers name JSON fields.
    pub(crate) fn walk_fields(&self) -> Walk {
        let mut walk = Walk::default();
        walk_node(
            &self.document,
            &self.document,
            "$",
            &Ok(Vec::new()),
            &mut walk,
        );
        walk
    }
}

/// `node` with local `$ref`s (`#/definitions/…`) followed.
fn resolve<'a>(root: &'a Value, mut node: &'a Value) -> &'a Value {
    for _ in 0..MAX_REF_HOPS {
        let Some(target) = node
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix('#'))
            .and_then(|pointer| root.pointer(pointer))
        else {
            break;
        };
        node = target;
    }
    node
}

fn is_null_schema(node: &Value) -> bool {
    node.get("type").and_then(Value::as_str) == Some("null")
}

/// The alternatives of a `oneOf`/`anyOf` other than null, if the node has them.
fn alternatives<'a>(root: &'a Value, node: &'a Value) -> Option<Vec<&'a Value>> {
    let branches = node
        .get("oneOf")
        .or_else(|| node.get("anyOf"))
        .and_then(Value::as_array)?;
    Some(
        branches
            .iter()
            .map(|b| resolve(root, b))
            .filter(|b| !is_null_schema(b))
            .collect(),
    )
}

/// What kind of value a property's schema allows, if it can be protected in place.
fn kind_of(root: &Value, node: &Value) -> Result<FieldKind, String> {
    let node = resolve(root, node);
    if let Some(others) = alternatives(root, node) {
        return match others.as_slice() {
            [only] => kind_of(root, only),
            _ => Err("it is a oneOf/anyOf of several types; only a string (or string or null) can be protected in place".into()),
        };
    }
    let types: Vec<&str> = match node.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .filter(|t| *t != "null")
            .collect(),
        _ => Vec::new(),
    };
    match types.as_slice() {
        ["string"] => Ok(FieldKind::String),
        [] => Err("its schema does not say it is a string (add \"type\": \"string\"); only strings can be protected in place".into()),
        other => Err(format!(
            "it is of type {}; only strings can be protected in place",
            other.join(" or ")
        )),
    }
}

/// Lists the properties under `node` (named `name`, reached at `at`); `false` once full.
fn walk_node(root: &Value, node: &Value, name: &str, at: &At, walk: &mut Walk) -> bool {
    let node = resolve(root, node);
    let depth = name.matches('.').count();
    if depth > MAX_PATH_SEGMENTS {
        return true;
    }
    if let Some(others) = alternatives(root, node) {
        let inner: At = if others.len() == 1 {
            at.clone()
        } else {
            Err("it is inside a oneOf/anyOf of several types".into())
        };
        return others
            .into_iter()
            .all(|b| walk_node(root, b, name, &inner, walk));
    }
    if let Some(properties) = node.get("properties").and_then(Value::as_object) {
        for (property, schema) in properties {
            let full_name = format!("{name}.{property}");
            let field_at = child(at, property);
            let inline = [schema, resolve(root, schema)]
                .iter()
                .filter_map(|s| s.get(INLINE_PROPERTY).and_then(Value::as_array))
                .flatten()
                .filter_map(|t| t.as_str().map(str::to_owned))
                .collect();
            let place = field_at.clone().and_then(|segments| {
                kind_of(root, schema).map(|kind| (FieldPath { segments }, kind))
            });
            let listed = walk.push(SchemaField {
                full_name: full_name.clone(),
                inline,
                place,
            });
            if !listed || !walk_node(root, schema, &full_name, &field_at, walk) {
                return false;
            }
        }
    }
    if let Some(items) = node.get("items").filter(|i| i.is_object()) {
        let inner: At = Err("it is inside an array".into());
        if !walk_node(root, items, name, &inner, walk) {
            return false;
        }
    }
    if let Some(values) = node.get("additionalProperties").filter(|i| i.is_object()) {
        let inner: At = Err("it is inside a map (additionalProperties)".into());
        if !walk_node(root, values, name, &inner, walk) {
            return false;
        }
    }
    true
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Every URI a `$ref` to the reference `name` may resolve to: the name itself when absolute,
/// else the name under the default base and, when the schema has an absolute `$id`, under it.
fn reference_uris(name: &str, main_id: Option<&str>) -> Vec<String> {
    if let Ok(absolute) = reqwest::Url::parse(name) {
        return vec![absolute.to_string()];
    }
    let mut uris = vec![format!("{DEFAULT_BASE}{}", name.trim_start_matches('/'))];
    if let Some(joined) = main_id
        .and_then(|id| reqwest::Url::parse(id).ok())
        .and_then(|id| id.join(name).ok())
    {
        uris.push(joined.to_string());
    }
    uris
}

/// The rules' view of a JSON document. Objects are records named by their path from the root
/// (`$`, `$.customer`), as JSON has no type names; integers are INT, other numbers DOUBLE.
fn to_datum(value: &Value, path: &str) -> Datum {
    match value {
        Value::Null => Datum::Null,
        Value::Bool(b) => Datum::Boolean(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Datum::Int(i),
            (None, Some(u)) => Datum::UnsignedLong(u),
            _ => Datum::Double(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => Datum::String(s.clone()),
        Value::Array(items) => {
            Datum::Array(items.iter().map(|item| to_datum(item, path)).collect())
        }
        Value::Object(fields) => Datum::Record {
            name: path.to_owned(),
            fields: fields
                .iter()
                .map(|(key, value)| (key.clone(), to_datum(value, &format!("{path}.{key}"))))
                .collect(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORDER: &str = r#"{"title":"Order","type":"object",
        "properties":{"id":{"type":"integer"},
                      "customer":{"type":"object","properties":{"email":{"type":"string"}},
                                  "required":["email"]}},
        "required":["id"]}"#;

    #[test]
    fn a_valid_document_passes_with_its_title() {
        let schema = JsonSchema::compile(ORDER, &[]).unwrap();
        assert_eq!(schema.record_name().as_deref(), Some("Order"));
        let datum = schema
            .validate(br#"{"id":1,"customer":{"email":"a@b"}}"#, true)
            .unwrap()
            .unwrap();
        assert_eq!(datum.type_name(), "RECORD");
    }

    #[test]
    fn a_violation_names_the_failing_path() {
        let schema = JsonSchema::compile(ORDER, &[]).unwrap();
        let err = schema
            .validate(br#"{"id":1,"customer":{"email":7}}"#, false)
            .unwrap_err();
        assert_eq!(err.reason, Reason::NotValid);
        assert!(err.message.contains("/customer/email"), "{err}");
        let err = schema.validate(br#"{"customer":{}}"#, false).unwrap_err();
        assert!(err.message.contains("\"id\""), "{err}");
    }

    #[test]
    fn bytes_that_are_not_one_json_document_are_refused() {
        let schema = JsonSchema::compile(ORDER, &[]).unwrap();
        let err = schema.validate(b"{\"id\":", false).unwrap_err();
        assert_eq!(err.reason, Reason::DoesNotDecode);
        let err = schema.validate(b"\xff\xfe", false).unwrap_err();
        assert_eq!(err.reason, Reason::DoesNotDecode);
        let err = schema.validate(br#"{"id":1} {"id":2}"#, false).unwrap_err();
        assert_eq!(err.reason, Reason::TrailingBytes);
    }

    #[test]
    fn references_resolve_by_name() {
        let address =
            r#"{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}"#;
        let customer = r#"{"type":"object","properties":{"home":{"$ref":"address.json"}}}"#;
        let schema = JsonSchema::compile(customer, &[("address.json", address)]).unwrap();
        assert!(
            schema
                .validate(br#"{"home":{"city":"Oslo"}}"#, false)
                .is_ok()
        );
        let err = schema.validate(br#"{"home":{}}"#, false).unwrap_err();
        assert!(err.message.contains("/home"), "{err}");

        let with_id = r#"{"$id":"https://acme.example/schemas/customer.json","type":"object",
            "properties":{"home":{"$ref":"address.json"}}}"#;
        let schema = JsonSchema::compile(with_id, &[("address.json", address)]).unwrap();
        assert!(schema.validate(br#"{"home":{}}"#, false).is_err());
    }
}
