//! Avro: the registry's schema (and its referenced named types) parsed and name-resolved with
//! apache-avro; each payload decoded against the writer schema here, and required to end
//! exactly where the value ends.
//!
//! The binary decoding is this module's own, not apache-avro's `GenericDatumReader`, because
//! that reader (0.22) trusts the bytes in ways a proxy cannot: it allocates whatever a length
//! prefix announces (up to 512 MiB) before reading it, it returns null for a string cut short
//! instead of failing, and it recurses without a bound, with frames large enough that a few
//! dozen levels of a recursive schema exhaust a 2 MiB thread stack in a debug build. Here every
//! length is checked against the bytes left before anything is taken, and nesting is bounded.

use std::{cell::RefCell, collections::HashMap, ops::Range};

use apache_avro::{
    Schema, Uuid,
    schema::{InnerDecimalSchema, Name, ResolvedSchema, UuidSchema},
};

use shared::policy::FieldPath;

use super::{
    Invalid, Reason,
    datum::Datum,
    fields::{EditError, FieldKind},
    tags::{At, SchemaField, Walk, child},
};

/// How deeply values may nest (each record, union, array and map is a level). Real schemas nest
/// far less; a recursive schema could otherwise nest as deep as the payload is long.
const MAX_DEPTH: usize = 128;

pub(crate) struct AvroSchema {
    /// The writer schema the registry holds under the id.
    main: Schema,
    /// Every named type by full name (the main schema's and the references'), for `Ref`s.
    names: HashMap<Name, Schema>,
}

impl AvroSchema {
    /// Parses `text` with the reference texts (each a named type, dependencies first).
    pub(crate) fn compile(text: &str, references: &[&str]) -> Result<Self, String> {
        let (main, named) = if references.is_empty() {
            (
                Schema::parse_str(text).map_err(|e| e.to_string())?,
                Vec::new(),
            )
        } else {
            Schema::parse_str_with_list(text, references).map_err(|e| e.to_string())?
        };
        let names = {
            let mut all: Vec<&Schema> = named.iter().collect();
            all.push(&main);
            // Fails when a `Ref` names no known type, so that surfaces now, not per record.
            let resolved = ResolvedSchema::new_with_schemata(all).map_err(|e| e.to_string())?;
            resolved
                .get_names()
                .iter()
                .map(|(name, schema)| (name.clone(), (*schema).clone()))
                .collect()
        };
        Ok(AvroSchema { main, names })
    }

    /// The full name of the top-level named type, for record-name subject strategies.
    pub(crate) fn record_name(&self) -> Option<String> {
        self.main.name().map(|name| name.fullname(None))
    }

    /// Decodes the payload; with `want_datum`, also returns it in the rules' form.
    pub(crate) fn validate(
        &self,
        payload: &[u8],
        want_datum: bool,
    ) -> Result<Option<Datum>, Invalid> {
        let decoder = Decoder {
            names: &self.names,
            want: want_datum,
            track: None,
        };
        let mut rest = payload;
        let datum = decoder
            .value(&self.main, None, &mut rest, 0)
            .map_err(|why| {
                Invalid::new(
                    Reason::DoesNotDecode,
                    format!("at byte {}: {why}", payload.len() - rest.len()),
                )
            })?;
        if !rest.is_empty() {
            return Err(Invalid::new(
                Reason::TrailingBytes,
                format!(
                    "the Avro value ends at byte {} and {} byte(s) follow",
                    payload.len() - rest.len(),
                    rest.len()
                ),
            ));
        }
        Ok(want_datum.then_some(datum))
    }
}

/// One payload's decoding. Without `want`, values are checked and skipped, and every result is
/// `Datum::Null`, so validation alone allocates nothing.
struct Decoder<'s> {
    names: &'s HashMap<Name, Schema>,
    want: bool,
    /// Set when fields are being located for rewriting.
    track: Option<RefCell<Track<'s>>>,
}

/// Where the decoder is, and the string and bytes values found at the paths sought.
struct Track<'p> {
    targets: &'p [&'p FieldPath],
    /// Field names from the top; `[]` stands for an array item or map value, which no path
    /// addresses.
    path: Vec<&'p str>,
    total: usize,
    /// (path index, the value's bytes including its length prefix, kind).
    found: Vec<(usize, Range<usize>, FieldKind)>,
}

impl Track<'_> {
    fn target(&self) -> Option<usize> {
        self.targets.iter().position(|t| {
            t.segments.len() == self.path.len()
                && t.segments.iter().zip(&self.path).all(|(a, b)| a == b)
        })
    }
}

impl AvroSchema {
    /// See [`super::CompiledSchema::check_path`].
    pub(crate) fn check_path(&self, path: &FieldPath) -> Result<FieldKind, String> {
        let deref = |schema: &'_ Schema| -> Result<Schema, String> {
            match schema {
                Schema::Ref { name } => self
                    .names
                    .get(name)
                    .cloned()
                    .ok_or_else(|| format!("unknown type {}", name.fullname(None))),
                other => Ok(other.clone()),
            }
        };
        let mut schema = self.main.clone();
        let mut walked = String::from("$");
        for segment in &path.segments {
            schema = look_through_optional(deref(&schema)?, &walked)?;
            let Schema::Record(record) = &schema else {
                return Err(format!(
                    "{walked} is not a record, so it has no field {segment:?}"
                ));
            };
            let Some(field) = record.fields.iter().find(|f| &f.name == segment) else {
                let names: Vec<&str> = record.fields.iter().map(|f| f.name.as_str()).collect();
                return Err(format!(
                    "{walked} ({}) has no field {segment:?}; its fields are {}",
                    record.name.fullname(None),
                    names.join(", ")
                ));
            };
            walked.push('.');
            walked.push_str(segment);
            schema = field.schema.clone();
        }
        match look_through_optional(deref(&schema)?, &walked)? {
            Schema::String => Ok(FieldKind::String),
            Schema::Bytes => Ok(FieldKind::Bytes),
            other => Err(format!(
                "{walked} is of type {}; only string and bytes fields can be protected in place \
                 (protect a string or bytes field, or change the schema so the value is carried as one)",
                type_name(&other)
            )),
        }
    }

    /// See [`super::CompiledSchema::edit_fields`].
    pub(crate) fn edit_fields<E>(
        &self,
        head: &[u8],
        payload: &[u8],
        paths: &[&FieldPath],
        mut edit: impl FnMut(usize, FieldKind, &[u8]) -> Result<Option<Vec<u8>>, E>,
    ) -> Result<Option<Vec<u8>>, EditError<E>> {
        let decoder = Decoder {
            names: &self.names,
            want: false,
            track: Some(RefCell::new(Track {
                targets: paths,
                path: Vec::new(),
                total: payload.len(),
                found: Vec::new(),
            })),
        };
        let mut rest = payload;
        decoder
            .value(&self.main, None, &mut rest, 0)
            .map_err(|why| EditError::Shape(format!("the value does not decode: {why}")))?;
        if !rest.is_empty() {
            return Err(EditError::Shape("bytes follow the Avro value".into()));
        }
        let found = decoder
            .track
            .map(|t| t.into_inner().found)
            .unwrap_or_default();
        let mut replaced = Vec::with_capacity(found.len());
        for (index, range, kind) in found {
            let mut content = &payload[range.clone()];
            let value = length_prefixed(&mut content).map_err(EditError::Shape)?;
            if let Some(replacement) = edit(index, kind, value).map_err(EditError::Edit)? {
                replaced.push((range, replacement));
            }
        }
        if replaced.is_empty() {
            return Ok(None);
        }
        // A length prefix takes at most 10 bytes.
        let grown: usize = replaced.iter().map(|(_, r)| r.len() + 10).sum();
        let mut out = Vec::with_capacity(head.len() + payload.len() + grown);
        out.extend_from_slice(head);
        let mut copied = 0;
        for (range, replacement) in replaced {
            out.extend_from_slice(&payload[copied..range.start]);
            write_long(&mut out, replacement.len() as i64);
            out.extend_from_slice(&replacement);
            copied = range.end;
        }
        out.extend_from_slice(&payload[copied..]);
        Ok(Some(out))
    }
}

impl AvroSchema {
    /// Every field reachable from the top of the schema, with its `confluent:tags`, for
    /// selection by tag (see [`super::tags`]). A recursive type's fields are listed once.
    pub(crate) fn walk_fields(&self) -> Walk {
        let mut walk = Walk::default();
        self.walk_schema(
            &self.main,
            None,
            &Ok(Vec::new()),
            &mut Vec::new(),
            &mut walk,
        );
        walk
    }

    /// Lists the fields of `schema` reached at `at`; `false` once the walk is full.
    fn walk_schema(
        &self,
        schema: &Schema,
        ns: Option<&str>,
        at: &At,
        open: &mut Vec<String>,
        walk: &mut Walk,
    ) -> bool {
        let schema = match schema {
            Schema::Ref { name } => match self.names.get(name.fully_qualified_name(ns).as_ref()) {
                Some(named) => named,
                None => return true,
            },
            other => other,
        };
        match schema {
            Schema::Record(record) => {
                let full = record.name.fully_qualified_name(ns).into_owned();
                let record_name = full.fullname(None);
                // A type inside itself: its fields are listed where it was first met.
                if open.contains(&record_name) || open.len() >= MAX_DEPTH {
                    return true;
                }
                open.push(record_name.clone());
                let inner_ns = full.namespace();
                for field in &record.fields {
                    let field_at = child(at, &field.name);
                    let place = field_at.clone().and_then(|segments| {
                        let path = FieldPath { segments };
                        self.check_path(&path).map(|kind| (path, kind))
                    });
                    let inline = field
                        .custom_attributes
                        .get(super::tags::INLINE_PROPERTY)
                        .and_then(serde_json::Value::as_array)
                        .map(|tags| {
                            tags.iter()
                                .filter_map(|t| t.as_str().map(str::to_owned))
                                .collect()
                        })
                        .unwrap_or_default();
                    let listed = walk.push(SchemaField {
                        full_name: format!("{record_name}.{}", field.name),
                        inline,
                        place,
                    });
                    if !listed || !self.walk_schema(&field.schema, inner_ns, &field_at, open, walk)
                    {
                        open.pop();
                        return false;
                    }
                }
                open.pop();
                true
            }
            Schema::Union(union) => {
                let others: Vec<&Schema> = union
                    .variants()
                    .iter()
                    .filter(|v| !matches!(v, Schema::Null))
                    .collect();
                let inner: At = if others.len() == 1 {
                    at.clone()
                } else {
                    Err("it is inside a union of several types".into())
                };
                others
                    .into_iter()
                    .all(|v| self.walk_schema(v, ns, &inner, open, walk))
            }
            Schema::Array(array) => self.walk_schema(
                &array.items,
                ns,
                &Err("it is inside an array".into()),
                open,
                walk,
            ),
            Schema::Map(map) => self.walk_schema(
                &map.types,
                ns,
                &Err("it is inside a map".into()),
                open,
                walk,
            ),
            _ => true,
        }
    }
}

/// A union of null and one other type stands for that type; any other union is ambiguous.
fn look_through_optional(schema: Schema, walked: &str) -> Result<Schema, String> {
    match schema {
        Schema::Union(union) => {
            let others: Vec<&Schema> = union
                .variants()
                .iter()
                .filter(|v| !matches!(v, Schema::Null))
                .collect();
            match others.as_slice() {
                [only] => Ok((*only).clone()),
                _ => Err(format!(
                    "{walked} is a union of several types; only a field of one type (or that type or null) can be protected"
                )),
            }
        }
        other => Ok(other),
    }
}

fn type_name(schema: &Schema) -> String {
    match schema {
        Schema::Record(r) => format!("record {}", r.name.fullname(None)),
        Schema::Enum(e) => format!("enum {}", e.name.fullname(None)),
        Schema::Fixed(f) => format!("fixed {}", f.name.fullname(None)),
        other => format!("{:?}", apache_avro::schema::SchemaKind::from(other)).to_lowercase(),
    }
}

/// Avro's zigzag varint `long`.
fn write_long(out: &mut Vec<u8>, value: i64) {
    let mut n = ((value << 1) ^ (value >> 63)) as u64;
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

impl<'s> Decoder<'s> {
    /// Follows `Ref`s to the named schema they stand for.
    fn deref(&self, schema: &'s Schema, ns: Option<&str>) -> Result<&'s Schema, String> {
        match schema {
            Schema::Ref { name } => self
                .names
                .get(name.fully_qualified_name(ns).as_ref())
                .ok_or_else(|| format!("unknown type {}", name.fullname(ns))),
            other => Ok(other),
        }
    }

    fn value(
        &self,
        schema: &'s Schema,
        ns: Option<&str>,
        rest: &mut &[u8],
        depth: usize,
    ) -> Result<Datum, String> {
        if depth > MAX_DEPTH {
            return Err(format!("values nest deeper than {MAX_DEPTH} levels"));
        }
        let keep = |datum: Datum| if self.want { datum } else { Datum::Null };
        let before = rest.len();
        let datum = self.value_inner(schema, ns, rest, depth, keep)?;
        if let Some(track) = &self.track
            && matches!(schema, Schema::String | Schema::Bytes)
        {
            let mut track = track.borrow_mut();
            if let Some(index) = track.target() {
                let start = track.total - before;
                let end = track.total - rest.len();
                let kind = if matches!(schema, Schema::String) {
                    FieldKind::String
                } else {
                    FieldKind::Bytes
                };
                track.found.push((index, start..end, kind));
            }
        }
        Ok(datum)
    }

    /// `datum()` when the caller wants values; otherwise nothing is built (a walk that only
    /// checks or locates fields allocates nothing per value).
    fn keep_with(&self, datum: impl FnOnce() -> Datum) -> Datum {
        if self.want { datum() } else { Datum::Null }
    }

    fn enter(&self, name: &'s str) {
        if let Some(track) = &self.track {
            track.borrow_mut().path.push(name);
        }
    }

    fn leave(&self) {
        if let Some(track) = &self.track {
            track.borrow_mut().path.pop();
        }
    }

    fn value_inner(
        &self,
        schema: &'s Schema,
        ns: Option<&str>,
        rest: &mut &[u8],
        depth: usize,
        keep: impl Fn(Datum) -> Datum,
    ) -> Result<Datum, String> {
        Ok(match schema {
            Schema::Null => Datum::Null,
            Schema::Boolean => match take(rest, 1)? {
                [0] => keep(Datum::Boolean(false)),
                [1] => keep(Datum::Boolean(true)),
                other => return Err(format!("boolean byte {:#04x} is neither 0 nor 1", other[0])),
            },
            Schema::Int | Schema::Date | Schema::TimeMillis => {
                let value = varint(rest)?;
                let value =
                    i32::try_from(value).map_err(|_| format!("int {value} overflows 32 bits"))?;
                keep(Datum::Int(i64::from(value)))
            }
            Schema::Long
            | Schema::TimeMicros
            | Schema::TimestampMillis
            | Schema::TimestampMicros
            | Schema::TimestampNanos
            | Schema::LocalTimestampMillis
            | Schema::LocalTimestampMicros
            | Schema::LocalTimestampNanos => keep(Datum::Long(varint(rest)?)),
            Schema::Float => {
                let bytes = take(rest, 4)?;
                keep(Datum::Float(f64::from(f32::from_le_bytes([
                    bytes[0], bytes[1], bytes[2], bytes[3],
                ]))))
            }
            Schema::Double => {
                let mut bytes = [0u8; 8];
                bytes.copy_from_slice(take(rest, 8)?);
                keep(Datum::Double(f64::from_le_bytes(bytes)))
            }
            Schema::Bytes
            | Schema::BigDecimal
            | Schema::Decimal(apache_avro::schema::DecimalSchema {
                inner: InnerDecimalSchema::Bytes,
                ..
            })
            | Schema::Uuid(UuidSchema::Bytes) => {
                let bytes = length_prefixed(rest)?;
                if matches!(schema, Schema::Uuid(_)) && bytes.len() != 16 {
                    return Err(format!("a UUID takes 16 bytes, not {}", bytes.len()));
                }
                keep(Datum::Bytes(if self.want {
                    bytes.to_vec()
                } else {
                    Vec::new()
                }))
            }
            Schema::String => {
                let text = utf8(length_prefixed(rest)?)?;
                self.keep_with(|| Datum::String(text.to_owned()))
            }
            Schema::Uuid(UuidSchema::String) => {
                let text = utf8(length_prefixed(rest)?)?;
                Uuid::parse_str(text).map_err(|e| format!("{text:?} is not a UUID: {e}"))?;
                self.keep_with(|| Datum::String(text.to_owned()))
            }
            Schema::Fixed(fixed)
            | Schema::Duration(fixed)
            | Schema::Uuid(UuidSchema::Fixed(fixed))
            | Schema::Decimal(apache_avro::schema::DecimalSchema {
                inner: InnerDecimalSchema::Fixed(fixed),
                ..
            }) => {
                let bytes = take(rest, fixed.size)?;
                self.keep_with(|| Datum::Fixed(bytes.to_vec()))
            }
            Schema::Enum(enumeration) => {
                let index = varint(rest)?;
                let symbol = usize::try_from(index)
                    .ok()
                    .and_then(|i| enumeration.symbols.get(i))
                    .ok_or_else(|| {
                        format!("enum {} has no symbol {index}", enumeration.name.name())
                    })?;
                self.keep_with(|| Datum::Enum(symbol.clone()))
            }
            Schema::Ref { .. } => self.value(self.deref(schema, ns)?, ns, rest, depth)?,
            Schema::Union(union) => {
                let index = varint(rest)?;
                let variant = usize::try_from(index)
                    .ok()
                    .and_then(|i| union.variants().get(i))
                    .ok_or_else(|| format!("union branch {index} does not exist"))?;
                // Rules see the branch's value itself, as Confluent's executors do.
                self.value(variant, ns, rest, depth + 1)?
            }
            Schema::Record(record) => {
                let full_name = record.name.fully_qualified_name(ns);
                let inner_ns = full_name.namespace();
                let mut fields =
                    Vec::with_capacity(if self.want { record.fields.len() } else { 0 });
                for field in &record.fields {
                    self.enter(&field.name);
                    let value = self.value(&field.schema, inner_ns, rest, depth + 1);
                    self.leave();
                    let value = value.map_err(|why| {
                        // Only the innermost field is named: a prefix per level would make
                        // a message as long as the nesting.
                        if why.contains(": ") {
                            why
                        } else {
                            format!("{}.{}: {why}", record.name.name(), field.name)
                        }
                    })?;
                    if self.want {
                        fields.push((field.name.clone(), value));
                    }
                }
                self.keep_with(|| Datum::Record {
                    name: full_name.fullname(None),
                    fields,
                })
            }
            Schema::Array(array) => {
                let mut items = Vec::new();
                self.enter("[]");
                let walked = blocks(rest, |rest| {
                    let item = self.value(&array.items, ns, rest, depth + 1)?;
                    if self.want {
                        items.push(item);
                    }
                    Ok(())
                });
                self.leave();
                walked?;
                keep(Datum::Array(items))
            }
            Schema::Map(map) => {
                let mut entries = Vec::new();
                self.enter("[]");
                let walked = blocks(rest, |rest| {
                    let key =
                        utf8(length_prefixed(rest)?).map_err(|why| format!("map key: {why}"))?;
                    let value = self.value(&map.types, ns, rest, depth + 1)?;
                    if self.want {
                        entries.push((key.to_owned(), value));
                    }
                    Ok(())
                });
                self.leave();
                walked?;
                keep(Datum::Map(entries))
            }
        })
    }
}

/// Array and map blocks: a count (negative: followed by the block's byte size), items, and a
/// zero count at the end.
fn blocks(
    rest: &mut &[u8],
    mut item: impl FnMut(&mut &[u8]) -> Result<(), String>,
) -> Result<(), String> {
    loop {
        let count = varint(rest)?;
        if count == 0 {
            return Ok(());
        }
        if count < 0 {
            varint(rest)?;
        }
        // Only null items take no bytes; a count far beyond the bytes left is corruption, and
        // refusing it bounds this loop.
        if count.unsigned_abs() > rest.len() as u64 + 4096 {
            return Err(format!(
                "block announces {count} items with {} byte(s) left",
                rest.len()
            ));
        }
        for _ in 0..count.unsigned_abs() {
            item(rest)?;
        }
    }
}

fn take<'a>(rest: &mut &'a [u8], len: usize) -> Result<&'a [u8], String> {
    if rest.len() < len {
        return Err(format!("needs {len} byte(s), {} left", rest.len()));
    }
    let (taken, after) = rest.split_at(len);
    *rest = after;
    Ok(taken)
}

/// Bytes, strings and map keys: a length, then that many bytes.
fn length_prefixed<'a>(rest: &mut &'a [u8]) -> Result<&'a [u8], String> {
    let len = varint(rest)?;
    let len = usize::try_from(len).map_err(|_| format!("negative length {len}"))?;
    take(rest, len)
}

fn utf8(bytes: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(bytes).map_err(|e| format!("string is not UTF-8: {e}"))
}

/// Avro's zigzag varint `long`: at most ten bytes.
fn varint(rest: &mut &[u8]) -> Result<i64, String> {
    let mut value: u64 = 0;
    for (i, byte) in rest.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            *rest = &rest[i + 1..];
            return Ok((value >> 1) as i64 ^ -((value & 1) as i64));
        }
    }
    Err(if rest.len() < 10 {
        "payload ends inside a number".into()
    } else {
        "number longer than 10 bytes".into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use apache_avro::{
        types::{Record, Value},
        writer::datum::GenericDatumWriter,
    };

    const USER: &str = r#"{"type":"record","name":"User","namespace":"acme",
        "fields":[{"name":"name","type":"string"},{"name":"age","type":"int"},
                  {"name":"email","type":["null","string"],"default":null}]}"#;

    fn user_bytes(schema: &Schema) -> Vec<u8> {
        let mut record = Record::new(schema).unwrap();
        record.put("name", "ada");
        record.put("age", 36);
        record.put(
            "email",
            Value::Union(1, Box::new(Value::String("a@b".into()))),
        );
        GenericDatumWriter::builder(schema)
            .build()
            .unwrap()
            .write_value_to_vec(record)
            .unwrap()
    }

    #[test]
    fn a_valid_record_decodes_with_its_name() {
        let compiled = AvroSchema::compile(USER, &[]).unwrap();
        assert_eq!(compiled.record_name().as_deref(), Some("acme.User"));
        let bytes = user_bytes(&compiled.main);
        let datum = compiled.validate(&bytes, true).unwrap().unwrap();
        let Datum::Record { name, fields } = datum else {
            panic!("not a record");
        };
        assert_eq!(name, "acme.User");
        assert_eq!(fields[2], ("email".into(), Datum::String("a@b".into())));
    }

    #[test]
    fn truncated_and_trailing_payloads_are_refused() {
        let compiled = AvroSchema::compile(USER, &[]).unwrap();
        let bytes = user_bytes(&compiled.main);
        let err = compiled
            .validate(&bytes[..bytes.len() - 2], false)
            .unwrap_err();
        assert_eq!(err.reason, Reason::DoesNotDecode, "{err}");
        let mut longer = bytes.clone();
        longer.push(0);
        let err = compiled.validate(&longer, false).unwrap_err();
        assert_eq!(err.reason, Reason::TrailingBytes);
        assert!(
            err.message
                .contains(&format!("ends at byte {}", bytes.len())),
            "{err}"
        );
    }

    #[test]
    fn referenced_named_types_resolve() {
        let address = r#"{"type":"record","name":"Address","namespace":"acme",
            "fields":[{"name":"city","type":"string"}]}"#;
        let customer = r#"{"type":"record","name":"Customer","namespace":"acme",
            "fields":[{"name":"home","type":"acme.Address"}]}"#;
        assert!(AvroSchema::compile(customer, &[]).is_err());
        let compiled = AvroSchema::compile(customer, &[address]).unwrap();
        // home.city = "Oslo": string length 4 (zigzag 8) then the bytes.
        let datum = compiled.validate(b"\x08Oslo", true).unwrap().unwrap();
        let Datum::Record { fields, .. } = datum else {
            panic!("not a record");
        };
        assert_eq!(
            fields[0].1,
            Datum::Record {
                name: "acme.Address".into(),
                fields: vec![("city".into(), Datum::String("Oslo".into()))]
            }
        );
        assert_eq!(
            compiled.validate(b"\x08Osl", false).unwrap_err().reason,
            Reason::DoesNotDecode
        );
    }

    #[test]
    fn recursive_schemas_are_depth_bounded_before_decoding() {
        let list = r#"{"type":"record","name":"Node","fields":[
            {"name":"value","type":"long"},{"name":"next","type":["null","Node"]}]}"#;
        let compiled = AvroSchema::compile(list, &[]).unwrap();
        // Three nodes: value 1 then branch 1 (zigzag 2), ..., and a final null branch.
        let datum = compiled
            .validate(&[2, 2, 4, 2, 6, 0], true)
            .unwrap()
            .unwrap();
        assert_eq!(datum.type_name(), "RECORD");
        // A million nested nodes, two bytes each: refused at the depth bound, not by the stack.
        let deep: Vec<u8> = std::iter::repeat_n([2u8, 2], 1_000_000).flatten().collect();
        let err = compiled.validate(&deep, false).unwrap_err();
        assert!(err.message.contains("nest deeper"), "{err}");
        // The deepest accepted nesting decodes within a test thread's stack.
        let mut deepest: Vec<u8> = std::iter::repeat_n([2u8, 2], MAX_DEPTH / 2 - 1)
            .flatten()
            .collect();
        deepest.extend([2, 0]);
        compiled.validate(&deepest, true).unwrap();
    }

    #[test]
    fn lengths_beyond_the_payload_are_refused_before_allocating() {
        let compiled = AvroSchema::compile(USER, &[]).unwrap();
        // A name announced as 500 MB long, in a 6-byte payload.
        let err = compiled
            .validate(&[0x80, 0x94, 0xeb, 0xdc, 0x3, b'a'], false)
            .unwrap_err();
        assert_eq!(err.reason, Reason::DoesNotDecode);
        assert!(err.message.contains("User.name: needs 500000000"), "{err}");
        let err = compiled.validate(&[2, 0xff, 0, 0], false).unwrap_err();
        assert!(err.message.contains("not UTF-8"), "{err}");
        let err = compiled.validate(&[2, b'a', 0, 4], false).unwrap_err();
        assert!(err.message.contains("union branch 2"), "{err}");
    }

    #[test]
    fn every_type_apache_avro_writes_decodes_here() {
        let text = r#"{"type":"record","name":"All","namespace":"acme","fields":[
            {"name":"b","type":"boolean"},{"name":"i","type":"int"},{"name":"l","type":"long"},
            {"name":"f","type":"float"},{"name":"d","type":"double"},{"name":"raw","type":"bytes"},
            {"name":"s","type":"string"},
            {"name":"color","type":{"type":"enum","name":"Color","symbols":["RED","GREEN"]}},
            {"name":"hash","type":{"type":"fixed","name":"Hash","size":4}},
            {"name":"tags","type":{"type":"array","items":"string"}},
            {"name":"counts","type":{"type":"map","values":"long"}},
            {"name":"maybe","type":["null","Color"]},
            {"name":"day","type":{"type":"int","logicalType":"date"}},
            {"name":"at","type":{"type":"long","logicalType":"timestamp-millis"}},
            {"name":"id","type":{"type":"string","logicalType":"uuid"}}]}"#;
        let compiled = AvroSchema::compile(text, &[]).unwrap();
        let mut record = Record::new(&compiled.main).unwrap();
        record.put("b", true);
        record.put("i", -7);
        record.put("l", 1_i64 << 40);
        record.put("f", 1.5_f32);
        record.put("d", -2.25_f64);
        record.put("raw", Value::Bytes(vec![0, 255]));
        record.put("s", "héllo");
        record.put("color", Value::Enum(1, "GREEN".into()));
        record.put("hash", Value::Fixed(4, vec![1, 2, 3, 4]));
        record.put("tags", Value::Array(vec!["x".into(), "y".into()]));
        record.put(
            "counts",
            Value::Map([("a".to_owned(), Value::Long(3))].into_iter().collect()),
        );
        record.put(
            "maybe",
            Value::Union(1, Box::new(Value::Enum(0, "RED".into()))),
        );
        record.put("day", Value::Date(19_000));
        record.put("at", Value::TimestampMillis(1_700_000_000_000));
        record.put(
            "id",
            Value::Uuid(Uuid::parse_str("67e55044-10b1-426f-9247-bb680e5fe0c8").unwrap()),
        );
        let bytes = GenericDatumWriter::builder(&compiled.main)
            .build()
            .unwrap()
            .write_value_to_vec(record)
            .unwrap();
        let Some(Datum::Record { name, fields }) = compiled.validate(&bytes, true).unwrap() else {
            panic!("not a record");
        };
        assert_eq!(name, "acme.All");
        let expected = [
            Datum::Boolean(true),
            Datum::Int(-7),
            Datum::Long(1 << 40),
            Datum::Float(1.5),
            Datum::Double(-2.25),
            Datum::Bytes(vec![0, 255]),
            Datum::String("héllo".into()),
            Datum::Enum("GREEN".into()),
            Datum::Fixed(vec![1, 2, 3, 4]),
            Datum::Array(vec![Datum::String("x".into()), Datum::String("y".into())]),
            Datum::Map(vec![("a".into(), Datum::Long(3))]),
            Datum::Enum("RED".into()),
            Datum::Int(19_000),
            Datum::Long(1_700_000_000_000),
            Datum::String("67e55044-10b1-426f-9247-bb680e5fe0c8".into()),
        ];
        let values: Vec<Datum> = fields.into_iter().map(|(_, value)| value).collect();
        assert_eq!(values, expected);
        // Validation alone reaches the same verdict without building values.
        assert_eq!(compiled.validate(&bytes, false).unwrap(), None);
    }
}
