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
};

/// How many violations one message lists; the first few locate the problem.
const MAX_REPORTED_ERRORS: usize = 3;

/// Where references without a scheme live: the base URI `jsonschema` gives a schema without
/// `$id`, so `{"$ref": "address.json"}` in such a schema finds the reference named
/// `address.json`.
const DEFAULT_BASE: &str = "json-schema:///";

pub(crate) struct JsonSchema {
    validator: jsonschema::Validator,
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
        Ok(JsonSchema { validator, title })
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
        let pointer: String = path.segments.iter().map(|s| format!("/{s}")).collect();
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
    serde_json::to_vec(&document)
        .map(Some)
        .map_err(|e| EditError::Shape(format!("writing the document back: {e}")))
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
