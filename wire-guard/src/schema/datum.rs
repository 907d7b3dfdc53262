//! A decoded record in a form the three formats share, so data-contract rules are written once:
//! the whole-record CEL binding (`message`) and the field walk of `CEL_FIELD` rules read this.

use std::{collections::HashMap, sync::Arc};

/// One decoded value. Variants follow the type names Confluent's rule executors expose as
/// `typeName`, so a field's type is known without going back to the schema.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Datum {
    Null,
    Boolean(bool),
    /// 32-bit integers (Avro `int`, Protobuf 32-bit types), widened for CEL.
    Int(i64),
    Long(i64),
    /// Protobuf `uint64`/`fixed64` values over `i64::MAX`: CEL has an unsigned type for them.
    UnsignedLong(u64),
    Float(f64),
    Double(f64),
    String(String),
    Bytes(Vec<u8>),
    /// Avro `fixed`: bytes, but not a primitive for field rules, as in Confluent's executors.
    Fixed(Vec<u8>),
    /// The symbol's name.
    Enum(String),
    Array(Vec<Datum>),
    Map(Vec<(String, Datum)>),
    /// A record or message; `name` is its full name (`$`-rooted path for JSON objects), which
    /// field rules see as the prefix of `fullName`.
    Record {
        name: String,
        fields: Vec<(String, Datum)>,
    },
}

impl Datum {
    /// The `typeName` a field rule sees.
    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            Datum::Null => "NULL",
            Datum::Boolean(_) => "BOOLEAN",
            Datum::Int(_) => "INT",
            Datum::Long(_) | Datum::UnsignedLong(_) => "LONG",
            Datum::Float(_) => "FLOAT",
            Datum::Double(_) => "DOUBLE",
            Datum::String(_) => "STRING",
            Datum::Bytes(_) => "BYTES",
            Datum::Fixed(_) => "FIXED",
            Datum::Enum(_) => "ENUM",
            Datum::Array(_) => "ARRAY",
            Datum::Map(_) => "MAP",
            Datum::Record { .. } => "RECORD",
        }
    }

    /// Whether `CEL_FIELD` rules are evaluated on this value. Confluent's executors evaluate
    /// only primitive fields and skip absent (null) ones; records, arrays and maps are walked
    /// into instead, and enums and fixed values are left alone.
    pub(crate) fn is_rule_leaf(&self) -> bool {
        matches!(
            self,
            Datum::Boolean(_)
                | Datum::Int(_)
                | Datum::Long(_)
                | Datum::UnsignedLong(_)
                | Datum::Float(_)
                | Datum::Double(_)
                | Datum::String(_)
                | Datum::Bytes(_)
        )
    }

    /// The CEL value of a record with only the named top-level fields (any other value whole).
    pub(crate) fn to_cel_with(&self, names: &std::collections::BTreeSet<String>) -> cel::Value {
        match self {
            Datum::Record { fields, .. } => {
                let map: HashMap<String, cel::Value> = fields
                    .iter()
                    .filter(|(key, _)| names.contains(key))
                    .map(|(key, value)| (key.clone(), value.to_cel()))
                    .collect();
                cel::Value::from(map)
            }
            other => other.to_cel(),
        }
    }

    /// The CEL value: records and maps become maps keyed by field name, enums their symbol.
    pub(crate) fn to_cel(&self) -> cel::Value {
        match self {
            Datum::Null => cel::Value::Null,
            Datum::Boolean(b) => cel::Value::Bool(*b),
            Datum::Int(i) | Datum::Long(i) => cel::Value::Int(*i),
            Datum::UnsignedLong(u) => cel::Value::UInt(*u),
            Datum::Float(f) | Datum::Double(f) => cel::Value::Float(*f),
            Datum::String(s) | Datum::Enum(s) => cel::Value::String(Arc::new(s.clone())),
            Datum::Bytes(b) | Datum::Fixed(b) => cel::Value::Bytes(Arc::new(b.clone())),
            Datum::Array(items) => {
                cel::Value::List(Arc::new(items.iter().map(Datum::to_cel).collect()))
            }
            Datum::Map(entries)
            | Datum::Record {
                fields: entries, ..
            } => {
                let map: HashMap<String, cel::Value> = entries
                    .iter()
                    .map(|(key, value)| (key.clone(), value.to_cel()))
                    .collect();
                cel::Value::from(map)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_become_maps_by_field_name() {
        let record = Datum::Record {
            name: "acme.User".into(),
            fields: vec![
                ("name".into(), Datum::String("ada".into())),
                ("age".into(), Datum::Int(36)),
                ("tags".into(), Datum::Array(vec![Datum::Enum("A".into())])),
            ],
        };
        let cel::Value::Map(map) = record.to_cel() else {
            panic!("not a map");
        };
        assert_eq!(
            map.map.get(&cel::objects::Key::from("age")),
            Some(&cel::Value::Int(36))
        );
        assert_eq!(record.type_name(), "RECORD");
        assert!(!record.is_rule_leaf());
        assert!(Datum::Bytes(vec![1]).is_rule_leaf());
        assert!(!Datum::Null.is_rule_leaf());
    }
}
