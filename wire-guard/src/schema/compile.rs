//! A registry schema turned into something that validates payloads: the format's decoder plus
//! the compiled data-contract rules. Compiled once per schema id and shared by every task.

use std::{collections::BTreeMap, fmt};

use super::{
    Format, Invalid, Validated,
    avro::AvroSchema,
    json::JsonSchema,
    protobuf::ProtobufSchema,
    rules::Rules,
    tags::{Tags, Walk},
};

/// A schema as the registry serves it, with its references already fetched.
#[derive(Debug, Clone, PartialEq)]
pub struct SchemaSource {
    pub format: Format,
    /// The schema text (Avro JSON, JSON Schema, or `.proto`).
    pub text: String,
    /// Every schema the main one references, directly or through other references, each once,
    /// dependencies before the schemas that use them (Avro parses named types in that order).
    pub references: Vec<ReferencedSchema>,
    /// The registry's `ruleSet`, if any; only its `domainRules` are read.
    pub rule_set: Option<serde_json::Value>,
    /// The registry's `metadata.tags`: field-name patterns and the tags they give.
    pub metadata_tags: BTreeMap<String, Vec<String>>,
}

/// The `tags` of a registry `metadata` object; entries of another shape are left out.
pub(crate) fn metadata_tags(metadata: &serde_json::Value) -> BTreeMap<String, Vec<String>> {
    metadata
        .get("tags")
        .and_then(serde_json::Value::as_object)
        .map(|tags| {
            tags.iter()
                .filter_map(|(pattern, list)| {
                    let list: Vec<String> = list
                        .as_array()?
                        .iter()
                        .filter_map(|t| t.as_str().map(str::to_owned))
                        .collect();
                    Some((pattern.clone(), list))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// One referenced schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferencedSchema {
    /// The name the main schema uses for it: an import path for Protobuf, a `$ref` for JSON
    /// Schema, the type's full name (by convention) for Avro.
    pub name: String,
    /// Where it was fetched from, for error messages.
    pub subject: String,
    pub version: i64,
    pub text: String,
}

pub(super) enum Decoder {
    Avro(AvroSchema),
    Json(JsonSchema),
    Protobuf(ProtobufSchema),
}

/// A schema ready to validate payloads. `Send + Sync`: one copy per id serves every task.
pub struct CompiledSchema {
    pub id: u32,
    pub format: Format,
    /// Subjects this id is registered under, for subject-name strategy checks.
    pub subjects: Vec<String>,
    pub(super) decoder: Decoder,
    /// The name reported for every record when the format fixes it at compile time (Avro,
    /// JSON); Protobuf names the message each record's index selects.
    record_name: Option<String>,
    rules: Rules,
    /// The fields the schema tags, inline or through `metadata.tags`.
    tags: Tags,
}

impl fmt::Debug for CompiledSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompiledSchema")
            .field("id", &self.id)
            .field("format", &self.format)
            .field("subjects", &self.subjects)
            .field("record_name", &self.record_name)
            .field("rules", &self.rules)
            .finish_non_exhaustive()
    }
}

impl CompiledSchema {
    /// Compiles a schema and its rules; the error says why it cannot be used.
    pub fn compile(id: u32, subjects: Vec<String>, source: &SchemaSource) -> Result<Self, String> {
        let (decoder, record_name) = match source.format {
            Format::Avro => {
                let references: Vec<&str> =
                    source.references.iter().map(|r| r.text.as_str()).collect();
                let schema = AvroSchema::compile(&source.text, &references)?;
                let name = schema.record_name();
                (Decoder::Avro(schema), name)
            }
            Format::Json => {
                let schema = JsonSchema::compile(&source.text, &named(&source.references))?;
                let name = schema.record_name();
                (Decoder::Json(schema), name)
            }
            Format::Protobuf => {
                let schema = ProtobufSchema::compile(&source.text, &named(&source.references))?;
                (Decoder::Protobuf(schema), None)
            }
        };
        let rules = Rules::compile(source.rule_set.as_ref())?;
        let walk: Walk = match &decoder {
            Decoder::Avro(schema) => schema.walk_fields(),
            Decoder::Json(schema) => schema.walk_fields(),
            Decoder::Protobuf(schema) => schema.walk_fields(),
        };
        let tags = Tags::resolve(walk, &source.metadata_tags);
        Ok(CompiledSchema {
            id,
            format: source.format,
            subjects,
            decoder,
            record_name,
            rules,
            tags,
        })
    }

    /// Validates the bytes after the 5-byte Confluent header. Valid only if they decode
    /// completely under the schema with nothing left over (for JSON: one UTF-8 document that
    /// satisfies the schema; for Protobuf: the message the index array selects, with no field
    /// the schema lacks). On success, names the record and lists the write-side data-contract
    /// rules it fails.
    pub fn validate(&self, payload: &[u8]) -> Result<Validated, Invalid> {
        let want_datum = !self.rules.is_empty();
        let (record_name, datum) = match &self.decoder {
            Decoder::Avro(schema) => (
                self.record_name.clone(),
                schema.validate(payload, want_datum)?,
            ),
            Decoder::Json(schema) => (
                self.record_name.clone(),
                schema.validate(payload, want_datum)?,
            ),
            Decoder::Protobuf(schema) => {
                let (name, datum) = schema.validate(payload, want_datum)?;
                (Some(name), datum)
            }
        };
        let failed_rules = datum.map(|d| self.rules.evaluate(&d)).unwrap_or_default();
        Ok(Validated {
            record_name,
            failed_rules,
        })
    }

    /// The fields the schema tags (inline or through its registry metadata).
    pub fn tags(&self) -> &Tags {
        &self.tags
    }

    /// Whether the schema carries data-contract rules that apply on write.
    pub fn has_rules(&self) -> bool {
        !self.rules.is_empty()
    }
}

fn named(references: &[super::ReferencedSchema]) -> Vec<(&str, &str)> {
    references
        .iter()
        .map(|r| (r.name.as_str(), r.text.as_str()))
        .collect()
}

const _: () = {
    const fn shared_across_threads<T: Send + Sync>() {}
    shared_across_threads::<CompiledSchema>();
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{OnFailure, Reason};
    use serde_json::json;

    fn source(format: Format, text: &str, rule_set: Option<serde_json::Value>) -> SchemaSource {
        SchemaSource {
            format,
            text: text.into(),
            references: Vec::new(),
            rule_set,
            metadata_tags: BTreeMap::new(),
        }
    }

    type Case<'a> = (Format, &'a str, &'a [u8], &'a [u8], &'a str);

    #[test]
    fn rules_see_the_decoded_record_of_every_format() {
        let rule_set = json!({"domainRules": [{
            "name": "positive", "kind": "CONDITION", "type": "CEL", "mode": "WRITE",
            "expr": "message.qty > 0", "onFailure": "DLQ", "params": {"dlq.topic": "bad"}
        }]});
        let avro = r#"{"type":"record","name":"Line","namespace":"acme","fields":[{"name":"qty","type":"int"}]}"#;
        let json = r#"{"title":"Line","type":"object","properties":{"qty":{"type":"integer"}}}"#;
        let proto = r#"syntax = "proto3"; package acme; message Line { int32 qty = 1; }"#;
        // qty = 3 and qty = -1 in each encoding, and the record name each reports.
        let cases: [Case; 3] = [
            (Format::Avro, avro, &[6], &[1], "acme.Line"),
            (
                Format::Json,
                json,
                br#"{"qty":3}"#,
                br#"{"qty":-1}"#,
                "Line",
            ),
            (
                Format::Protobuf,
                proto,
                &[0, 0x08, 3],
                &[
                    0, 0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
                ],
                "acme.Line",
            ),
        ];
        for (format, text, good, bad, name) in cases {
            let schema = CompiledSchema::compile(
                7,
                vec!["lines-value".into()],
                &source(format, text, Some(rule_set.clone())),
            )
            .unwrap();
            assert!(schema.has_rules());
            let valid = schema.validate(good).unwrap();
            assert_eq!(valid.record_name.as_deref(), Some(name), "{format}");
            assert!(valid.failed_rules.is_empty(), "{format}: {valid:?}");
            let failed = schema.validate(bad).unwrap().failed_rules;
            assert_eq!(failed.len(), 1, "{format}");
            assert_eq!(failed[0].on_failure, OnFailure::DeadLetter("bad".into()));
        }
    }

    #[test]
    fn a_schema_without_rules_only_decodes() {
        let schema =
            CompiledSchema::compile(1, Vec::new(), &source(Format::Json, "{}", None)).unwrap();
        assert!(!schema.has_rules());
        assert_eq!(schema.validate(b"[1]").unwrap().failed_rules, Vec::new());
        assert_eq!(
            schema.validate(b"[1").unwrap_err().reason,
            Reason::DoesNotDecode
        );
    }
}
