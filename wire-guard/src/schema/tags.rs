//! Schema tags: which fields of a schema carry which tags, for `fields:` entries that select
//! fields by tag (`{ tags: [PII], … }`) rather than by path.
//!
//! A field's tags are the union of
//! - the tags written on the field itself: Avro's and JSON Schema's `confluent:tags`
//!   property, Protobuf's `[(confluent.field_meta).tags = "PII"]` option, and
//! - the schema's registry `metadata.tags`, a map from a field-name pattern to tags, matched
//!   against the field's full name as Confluent's serializers match it: the record's full
//!   name and the field (`example.Customer.ssn`) for Avro and Protobuf, the path from `$` for
//!   JSON Schema (`$.customer.ssn`). In a pattern `*` stands for any characters but `.`, `**`
//!   for any characters, `?` for one character but `.`.
//!
//! Each format lists its fields ([`SchemaField`]) with where they are: a path wire-guard can
//! rewrite, or why it cannot (a field inside an array or map, of a type other than string or
//! bytes). The reason is kept so that a tagged field that cannot be protected in place
//! refuses the record with an explanation instead of passing in the clear.

use std::collections::{BTreeMap, BTreeSet};

use shared::policy::FieldPath;

use super::fields::FieldKind;

/// The property Avro fields and JSON Schema properties carry their tags in.
pub(crate) const INLINE_PROPERTY: &str = "confluent:tags";

/// The deepest path a field can be protected at (as `fields:` paths are bounded).
pub(crate) const MAX_PATH_SEGMENTS: usize = 32;

/// The most fields one schema's walk lists; a larger schema keeps the first ones and the walk
/// says so (see [`Walk::truncated`]).
pub(crate) const MAX_FIELDS: usize = 10_000;

/// Where a field met in a walk is: the path to it, or why no path reaches it.
pub(crate) type At = Result<Vec<String>, String>;

/// Where the field `name` under `at` is: one segment deeper, within [`MAX_PATH_SEGMENTS`].
pub(crate) fn child(at: &At, name: &str) -> At {
    at.clone().and_then(|mut segments| {
        segments.push(name.to_owned());
        if segments.len() > MAX_PATH_SEGMENTS {
            Err(format!(
                "it is nested deeper than {MAX_PATH_SEGMENTS} levels"
            ))
        } else {
            Ok(segments)
        }
    })
}

/// One field of a schema, as a format's walk finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SchemaField {
    /// The name metadata tag patterns are matched against.
    pub full_name: String,
    /// The tags the schema writes on the field itself.
    pub inline: Vec<String>,
    /// Where the field is, or why it cannot be protected in place.
    pub place: Result<(FieldPath, FieldKind), String>,
}

/// A format's list of fields, bounded by [`MAX_FIELDS`].
#[derive(Debug, Default)]
pub(crate) struct Walk {
    pub fields: Vec<SchemaField>,
    /// Whether fields were left out because the schema has more than [`MAX_FIELDS`].
    pub truncated: bool,
}

impl Walk {
    /// Adds a field; `false` once the bound is reached (the walk should stop).
    pub(crate) fn push(&mut self, field: SchemaField) -> bool {
        if self.fields.len() >= MAX_FIELDS {
            self.truncated = true;
            return false;
        }
        self.fields.push(field);
        true
    }
}

/// A field that carries at least one tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaggedField {
    pub full_name: String,
    pub tags: BTreeSet<String>,
    /// Where the field is, or why it cannot be protected in place.
    pub place: Result<(FieldPath, FieldKind), String>,
}

/// The tagged fields of one schema.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tags {
    pub fields: Vec<TaggedField>,
    /// Set when the schema has more fields than are walked: a tag entry then cannot be sure
    /// it saw every field, and refuses the schema's records.
    pub truncated: bool,
}

impl Tags {
    /// Merges the fields' inline tags with the schema's `metadata.tags` patterns.
    pub(crate) fn resolve(walk: Walk, metadata: &BTreeMap<String, Vec<String>>) -> Tags {
        let fields = walk
            .fields
            .into_iter()
            .filter_map(|f| {
                let mut tags: BTreeSet<String> = f.inline.into_iter().collect();
                for (pattern, more) in metadata {
                    if wildcard_match(&f.full_name, pattern) {
                        tags.extend(more.iter().cloned());
                    }
                }
                (!tags.is_empty()).then_some(TaggedField {
                    full_name: f.full_name,
                    tags,
                    place: f.place,
                })
            })
            .collect();
        Tags {
            fields,
            truncated: walk.truncated,
        }
    }
}

/// Confluent's field-name wildcards: `**` any characters, `*` any characters but `.`, `?` one
/// character but `.`; `\` takes the next character literally. The whole name must match.
pub(crate) fn wildcard_match(text: &str, pattern: &str) -> bool {
    // Confluent's matchers read `**.*` as `**`.
    let pattern = pattern.replace("**.*", "**");
    let tokens = tokenize(&pattern.chars().collect::<Vec<_>>());
    // prev[j]: whether the text read so far matches tokens[..j]. One row per character of
    // the text: the work is bounded by the two lengths, with no backtracking.
    let mut prev = vec![false; tokens.len() + 1];
    prev[0] = true;
    for (j, token) in tokens.iter().enumerate() {
        prev[j + 1] = prev[j] && matches!(token, Token::Any | Token::AnyDeep);
    }
    for c in text.chars() {
        let mut cur = vec![false; tokens.len() + 1];
        for (j, token) in tokens.iter().enumerate() {
            cur[j + 1] = match token {
                Token::Literal(l) => prev[j] && *l == c,
                Token::One => prev[j] && c != '.',
                Token::Any => cur[j] || (prev[j + 1] && c != '.'),
                Token::AnyDeep => cur[j] || prev[j + 1],
            };
        }
        prev = cur;
    }
    prev[tokens.len()]
}

#[derive(Debug, Clone, Copy)]
enum Token {
    Literal(char),
    One,
    Any,
    AnyDeep,
}

fn tokenize(p: &[char]) -> Vec<Token> {
    let mut out = Vec::with_capacity(p.len());
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            '*' if p.get(i + 1) == Some(&'*') => {
                out.push(Token::AnyDeep);
                i += 2;
            }
            '*' => {
                out.push(Token::Any);
                i += 1;
            }
            '?' => {
                out.push(Token::One);
                i += 1;
            }
            '\\' if i + 1 < p.len() => {
                out.push(Token::Literal(p[i + 1]));
                i += 2;
            }
            c => {
                out.push(Token::Literal(c));
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_as_confluent_documents_them() {
        for (text, pattern, expected) in [
            ("eve", "eve*", true),
            ("alice.bob.eve", "a*.bob.eve", true),
            ("alice.bob.eve", "a*.bob.e*", true),
            ("alice.bob.eve", "a*", false),
            ("alice.bob.eve", "a**", true),
            ("alice.bob.eve", "alice.bob*", false),
            ("alice.bob.eve", "alice.bob**", true),
            ("example.Customer.ssn", "**.ssn", true),
            ("example.Customer.ssn", "**ssn", true),
            ("example.Customer.ssn", "*.ssn", false),
            ("example.Customer.ssn", "example.Customer.s?n", true),
            ("example.Customer.ssn", "example.Customer.ss", false),
            ("$.card.number", "$.card.*", true),
            ("$.card.number", "**.*", true),
            ("a.b", "a\\.b", true),
            ("a*b", "a\\*b", true),
            ("axb", "a\\*b", false),
            ("", "**", true),
            ("", "*", true),
            ("x", "", false),
        ] {
            assert_eq!(
                wildcard_match(text, pattern),
                expected,
                "{text:?} against {pattern:?}"
            );
        }
    }

    #[test]
    fn inline_and_metadata_tags_are_merged_and_untagged_fields_dropped() {
        let field = |name: &str, inline: &[&str]| SchemaField {
            full_name: name.into(),
            inline: inline.iter().map(|s| s.to_string()).collect(),
            place: Ok((
                FieldPath::parse(&format!("$.{}", name.rsplit('.').next().unwrap())).unwrap(),
                FieldKind::String,
            )),
        };
        let walk = Walk {
            fields: vec![
                field("acme.C.ssn", &["PII"]),
                field("acme.C.email", &[]),
                field("acme.C.id", &[]),
            ],
            truncated: false,
        };
        let metadata = BTreeMap::from([
            ("**.email".to_owned(), vec!["PII".to_owned()]),
            ("acme.C.ssn".to_owned(), vec!["SECRET".to_owned()]),
        ]);
        let tags = Tags::resolve(walk, &metadata);
        let names: Vec<(&str, Vec<&str>)> = tags
            .fields
            .iter()
            .map(|f| {
                (
                    f.full_name.as_str(),
                    f.tags.iter().map(String::as_str).collect(),
                )
            })
            .collect();
        assert_eq!(
            names,
            [
                ("acme.C.ssn", vec!["PII", "SECRET"]),
                ("acme.C.email", vec!["PII"])
            ]
        );
    }

    use crate::schema::{CompiledSchema, Format, SchemaSource};

    fn compile(format: Format, text: &str, metadata: &[(&str, &[&str])]) -> CompiledSchema {
        let source = SchemaSource {
            format,
            text: text.into(),
            references: Vec::new(),
            rule_set: None,
            metadata_tags: metadata
                .iter()
                .map(|(p, t)| (p.to_string(), t.iter().map(|s| s.to_string()).collect()))
                .collect(),
        };
        CompiledSchema::compile(1, Vec::new(), &source).unwrap()
    }

    /// (full name, tags, path or why not) of each tagged field.
    fn tagged(schema: &CompiledSchema) -> Vec<(String, String, String)> {
        schema
            .tags()
            .fields
            .iter()
            .map(|f| {
                (
                    f.full_name.clone(),
                    f.tags.iter().cloned().collect::<Vec<_>>().join(","),
                    match &f.place {
                        Ok((path, kind)) => format!("{path} {kind:?}"),
                        Err(why) => why.clone(),
                    },
                )
            })
            .collect()
    }

    #[test]
    fn avro_tags_come_from_fields_and_metadata_through_records_unions_and_recursion() {
        let text = r#"{"type":"record","name":"Customer","namespace":"acme","fields":[
            {"name":"id","type":"string"},
            {"name":"ssn","type":"string","confluent:tags":["PII"]},
            {"name":"email","type":["null","string"],"default":null,"confluent:tags":["PII","CONTACT"]},
            {"name":"age","type":"int","confluent:tags":["PII"]},
            {"name":"card","type":{"type":"record","name":"Card","fields":[
                {"name":"number","type":"bytes","confluent:tags":["PCI"]}]}},
            {"name":"phones","type":{"type":"array","items":{"type":"record","name":"Phone","fields":[
                {"name":"number","type":"string","confluent:tags":["PII"]}]}}},
            {"name":"next","type":["null","Customer"],"default":null}]}"#;
        let schema = compile(Format::Avro, text, &[("**.id", &["KEY"])]);
        let got = tagged(&schema);
        let want = [
            ("acme.Customer.id", "KEY", "$.id String"),
            ("acme.Customer.ssn", "PII", "$.ssn String"),
            ("acme.Customer.email", "CONTACT,PII", "$.email String"),
            ("acme.Card.number", "PCI", "$.card.number Bytes"),
            ("acme.Phone.number", "PII", "it is inside an array"),
        ];
        for (name, tags, place) in want {
            assert!(
                got.iter()
                    .any(|(n, t, p)| n == name && t == tags && p == place),
                "{name} {tags} {place}: {got:#?}"
            );
        }
        let age = got.iter().find(|(n, ..)| n == "acme.Customer.age").unwrap();
        assert!(age.2.contains("is of type int"), "{age:?}");
        // The recursive `next` lists Customer's fields once, at the top.
        assert_eq!(
            got.iter()
                .filter(|(n, ..)| n == "acme.Customer.ssn")
                .count(),
            1
        );
    }

    #[test]
    fn json_schema_tags_come_from_properties_refs_and_metadata() {
        let text = r##"{"type":"object","title":"Customer",
            "definitions":{"Card":{"type":"object","properties":{
                "number":{"type":"string","confluent:tags":["PCI"]}}}},
            "properties":{
                "ssn":{"type":"string","confluent:tags":["PII"]},
                "email":{"oneOf":[{"type":"null"},{"type":"string"}],"confluent:tags":["PII"]},
                "age":{"type":"integer","confluent:tags":["PII"]},
                "card":{"$ref":"#/definitions/Card"},
                "notes":{"type":"array","items":{"type":"object","properties":{
                    "text":{"type":"string","confluent:tags":["PII"]}}}},
                "name":{"type":["string","null"]}}}"##;
        let schema = compile(Format::Json, text, &[("$.name", &["PII"])]);
        let got = tagged(&schema);
        for (name, tags, place) in [
            ("$.ssn", "PII", "$.ssn String"),
            ("$.email", "PII", "$.email String"),
            ("$.card.number", "PCI", "$.card.number String"),
            ("$.notes.text", "PII", "it is inside an array"),
            ("$.name", "PII", "$.name String"),
        ] {
            assert!(
                got.iter()
                    .any(|(n, t, p)| n == name && t == tags && p == place),
                "{name} {tags} {place}: {got:#?}"
            );
        }
        let age = got.iter().find(|(n, ..)| n == "$.age").unwrap();
        assert!(age.2.contains("of type integer"), "{age:?}");
    }

    #[test]
    fn protobuf_tags_come_from_confluent_field_meta_and_metadata() {
        let text = r#"syntax = "proto3";
            package acme;
            import "confluent/meta.proto";
            message Customer {
              string id = 1;
              string ssn = 2 [(confluent.field_meta).tags = "PII"];
              bytes card = 3 [(confluent.field_meta) = { tags: ["PCI", "PII"] }];
              int32 age = 4 [(confluent.field_meta).tags = "PII"];
              Address home = 5;
              repeated string aliases = 6 [(confluent.field_meta).tags = "PII"];
              Customer referrer = 7;
            }
            message Address { string street = 1 [(confluent.field_meta).tags = "PII"]; }"#;
        let schema = compile(Format::Protobuf, text, &[("acme.Customer.id", &["KEY"])]);
        let got = tagged(&schema);
        for (name, tags, place) in [
            ("acme.Customer.id", "KEY", "$.id String"),
            ("acme.Customer.ssn", "PII", "$.ssn String"),
            ("acme.Customer.card", "PCI,PII", "$.card Bytes"),
            ("acme.Address.street", "PII", "$.home.street String"),
            ("acme.Customer.aliases", "PII", "it is a repeated field"),
        ] {
            assert!(
                got.iter()
                    .any(|(n, t, p)| n == name && t == tags && p == place),
                "{name} {tags} {place}: {got:#?}"
            );
        }
        let age = got.iter().find(|(n, ..)| n == "acme.Customer.age").unwrap();
        assert!(age.2.contains("of type"), "{age:?}");
        // A schema without the import has no tags, and still compiles.
        let plain = compile(
            Format::Protobuf,
            "syntax = \"proto3\"; message M { string a = 1; }",
            &[],
        );
        assert!(plain.tags().fields.is_empty());
    }

    #[test]
    fn a_walk_stops_at_its_bound() {
        let mut walk = Walk::default();
        let f = SchemaField {
            full_name: "x".into(),
            inline: vec![],
            place: Err("n/a".into()),
        };
        for _ in 0..MAX_FIELDS {
            assert!(walk.push(f.clone()));
        }
        assert!(!walk.push(f));
        assert!(walk.truncated);
    }
}
