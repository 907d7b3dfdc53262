//! Which fields a topic rule protects in the records of each schema: the fields it names by
//! path, in every schema, then the fields each schema tags with a tag a `tags:` entry names.
//!
//! A field named by path keeps its entry's action; among tag entries the first that selects a
//! field decides. A tagged field that cannot be protected in place (inside an array, of a
//! type other than string or bytes) refuses the schema's records, naming the field and why:
//! a field the policy asks to protect never passes in the clear.

use std::{collections::HashMap, sync::Arc};

use shared::policy::{FieldPath, FieldRule, TopicRule};

use crate::schema::CompiledSchema;

/// The concrete fields one pass protects.
#[derive(Debug, Default)]
pub(crate) struct Selection {
    /// Every field protected in some schema of the pass: the rule's `fields:` by path first.
    pub fields: Vec<FieldRule>,
    /// Per schema id, the indexes into `fields` its records are protected at.
    pub by_schema: HashMap<u32, Vec<usize>>,
    /// Per schema id, why its records cannot be protected (a tagged field that cannot be
    /// rewritten in place).
    pub refused: HashMap<u32, String>,
    /// Whether the rule selects fields at all (by path or tag): values must then be framed,
    /// so that their schema says which fields they hold.
    pub applies: bool,
}

impl Selection {
    /// The selection for the schemas of one pass.
    pub(crate) fn new(rule: &TopicRule, schemas: &HashMap<u32, Arc<CompiledSchema>>) -> Selection {
        let mut selection = Selection {
            fields: rule.fields.clone(),
            applies: rule.selects_fields(),
            ..Selection::default()
        };
        let by_path: Vec<usize> = (0..rule.fields.len()).collect();
        // (tag entry, path) → index in `fields`, so schemas sharing a field share its rule.
        let mut tagged_at: HashMap<(usize, FieldPath), usize> = HashMap::new();
        for (&id, schema) in schemas {
            let mut mine = by_path.clone();
            if rule.tagged.is_empty() {
                selection.by_schema.insert(id, mine);
                continue;
            }
            let tags = schema.tags();
            if tags.truncated {
                selection.refused.insert(
                    id,
                    format!(
                        "schema {id} has more than {} fields; fields selected by tag cannot all be found",
                        crate::schema::tags::MAX_FIELDS
                    ),
                );
                continue;
            }
            for field in &tags.fields {
                let Some(entry) = rule
                    .tagged
                    .iter()
                    .position(|t| t.selects(field.tags.iter().map(String::as_str)))
                else {
                    continue;
                };
                let path = match &field.place {
                    Ok((path, _)) => path,
                    Err(why) => {
                        selection.refused.entry(id).or_insert_with(|| {
                            format!(
                                "field {} (schema {id}, tagged {}) cannot be protected in place: {why}; \
                                 move the value to a string or bytes field outside arrays and maps, or drop the tag",
                                field.full_name,
                                field.tags.iter().cloned().collect::<Vec<_>>().join(", ")
                            )
                        });
                        continue;
                    }
                };
                if mine.iter().any(|&i| selection.fields[i].path == *path) {
                    continue;
                }
                let index = *tagged_at.entry((entry, path.clone())).or_insert_with(|| {
                    selection.fields.push(rule.tagged[entry].at(path.clone()));
                    selection.fields.len() - 1
                });
                mine.push(index);
            }
            selection.by_schema.insert(id, mine);
        }
        selection
    }

    /// The fields protected in records of schema `id`, as indexes into `fields`.
    pub(crate) fn for_schema(&self, id: u32) -> &[usize] {
        self.by_schema.get(&id).map_or(&[], Vec::as_slice)
    }

    /// Per schema id, the paths of [`Self::for_schema`]: computed once per pass, not per
    /// record.
    pub(crate) fn paths(&self) -> HashMap<u32, Vec<&FieldPath>> {
        self.by_schema
            .iter()
            .map(|(&id, mine)| (id, mine.iter().map(|&i| &self.fields[i].path).collect()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{Format, SchemaSource};
    use shared::policy::{FieldAction, TaggedFields};

    fn schema(id: u32, text: &str) -> Arc<CompiledSchema> {
        let source = SchemaSource {
            format: Format::Avro,
            text: text.into(),
            references: Vec::new(),
            rule_set: None,
            metadata_tags: Default::default(),
        };
        Arc::new(CompiledSchema::compile(id, Vec::new(), &source).unwrap())
    }

    fn rule(by_path: &[&str], tagged: &[(&[&str], FieldAction)]) -> TopicRule {
        TopicRule {
            id: "r".into(),
            topics: Vec::new(),
            principals: None,
            key: None,
            value: None,
            fields: by_path
                .iter()
                .map(|p| FieldRule {
                    path: FieldPath::parse(p).unwrap(),
                    action: FieldAction::Mask { keep_last: 0 },
                    key: None,
                    reveal_to: Vec::new(),
                })
                .collect(),
            tagged: tagged
                .iter()
                .map(|(tags, action)| TaggedFields {
                    tags: tags.iter().map(|t| t.to_string()).collect(),
                    action: *action,
                    key: Some("local:k".parse().unwrap()),
                    reveal_to: Vec::new(),
                })
                .collect(),
            sign: None,
            encrypt_key: None,
            encrypt_value: None,
        }
    }

    const V1: &str = r#"{"type":"record","name":"C","fields":[
        {"name":"id","type":"string","confluent:tags":["PII"]},
        {"name":"ssn","type":"string","confluent:tags":["PII"]}]}"#;
    const V2: &str = r#"{"type":"record","name":"C","fields":[
        {"name":"id","type":"string"},
        {"name":"ssn","type":"string","confluent:tags":["PII"]},
        {"name":"email","type":"string","confluent:tags":["CONTACT","PII"]}]}"#;
    const BAD: &str = r#"{"type":"record","name":"C","fields":[
        {"name":"age","type":"int","confluent:tags":["PII"]}]}"#;

    #[test]
    fn paths_come_first_then_the_first_tag_entry_per_field_in_each_schema() {
        let schemas = HashMap::from([(1, schema(1, V1)), (2, schema(2, V2)), (3, schema(3, BAD))]);
        let rule = rule(
            &["$.id"],
            &[
                (&["CONTACT"], FieldAction::Tokenize { reversible: false }),
                (&["PII"], FieldAction::Encrypt),
            ],
        );
        let s = Selection::new(&rule, &schemas);
        let fields = |id: u32| -> Vec<(String, &'static str)> {
            s.for_schema(id)
                .iter()
                .map(|&i| (s.fields[i].path.to_string(), s.fields[i].action.as_str()))
                .collect()
        };
        // `id` keeps its by-path mask even where it is tagged.
        assert_eq!(
            fields(1),
            [("$.id".into(), "mask"), ("$.ssn".into(), "encrypt")]
        );
        assert_eq!(
            fields(2),
            [
                ("$.id".into(), "mask"),
                ("$.ssn".into(), "encrypt"),
                ("$.email".into(), "tokenize")
            ]
        );
        // Schemas 1 and 2 share the rule for $.ssn.
        assert_eq!(s.fields.len(), 3);
        let why = &s.refused[&3];
        assert!(
            why.contains("C.age") && why.contains("is of type int"),
            "{why}"
        );
    }
}
