//! Protobuf: the registry's `.proto` text compiled at run time with protox (its references are
//! imports by name; Google's well-known types and Confluent's `confluent/meta.proto` are built
//! in), and each payload decoded with prost-reflect as the message its message-index array
//! selects.

use std::collections::HashMap;

use prost_reflect::{
    DescriptorPool, DynamicMessage, FileDescriptor, Kind, MapKey, MessageDescriptor,
    ReflectMessage, Value,
};
use protox::file::{ChainFileResolver, File, FileResolver, GoogleFileResolver};

use shared::policy::FieldPath;

use super::{
    Invalid, Reason,
    datum::Datum,
    fields::{EditError, FieldKind},
    framing,
    tags::{At, SchemaField, Walk, child},
};

/// Confluent's field options, imported by schemas that tag fields; never registered.
const CONFLUENT_META: (&str, &str) = ("confluent/meta.proto", include_str!("confluent/meta.proto"));

/// The extension that carries a field's tags.
const FIELD_META: &str = "confluent.field_meta";

/// The name the registry's own schema text is compiled under; registry references are other
/// files it imports by their reference names.
const MAIN_FILE: &str = "wire-guard/registry-schema.proto";

pub(crate) struct ProtobufSchema {
    /// The compiled main file, which owns the pool with every imported file.
    file: FileDescriptor,
}

/// The registry's schema and its references, served to protox by name.
struct InMemory(HashMap<String, String>);

impl FileResolver for InMemory {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        let Some(source) = self.0.get(name) else {
            return Err(protox::Error::file_not_found(name));
        };
        match File::from_source(name, source) {
            Ok(file) => Ok(file),
            // Registries also accept, and some serve back, a schema as a base64-encoded
            // FileDescriptorProto: what confluent-kafka's Python serializer registers.
            Err(text_error) => match serialized_descriptor(name, source) {
                Some(file) => Ok(file),
                None => Err(text_error),
            },
        }
    }
}

/// A schema given as a base64 `FileDescriptorProto`, renamed to the name it is imported by.
fn serialized_descriptor(name: &str, source: &str) -> Option<File> {
    use base64::Engine as _;
    use prost::Message as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(source.trim())
        .ok()?;
    let mut descriptor = prost_types::FileDescriptorProto::decode(bytes.as_slice()).ok()?;
    descriptor.name = Some(name.to_owned());
    Some(File::from_file_descriptor_proto(descriptor))
}

impl ProtobufSchema {
    /// Compiles `text`; `references` are (import name, `.proto` text) pairs.
    pub(crate) fn compile(text: &str, references: &[(&str, &str)]) -> Result<Self, String> {
        let mut files: HashMap<String, String> = references
            .iter()
            .map(|(name, text)| ((*name).to_owned(), (*text).to_owned()))
            .collect();
        if files
            .insert(MAIN_FILE.to_owned(), text.to_owned())
            .is_some()
        {
            return Err(format!(
                "a reference is named {MAIN_FILE}, the name of the main file"
            ));
        }
        files
            .entry(CONFLUENT_META.0.to_owned())
            .or_insert_with(|| CONFLUENT_META.1.to_owned());
        let mut resolver = ChainFileResolver::new();
        resolver.add(InMemory(files));
        resolver.add(GoogleFileResolver::new());
        let mut compiler = protox::Compiler::with_file_resolver(resolver);
        compiler.open_file(MAIN_FILE).map_err(|e| e.to_string())?;
        let pool: DescriptorPool = compiler.descriptor_pool();
        let file = pool
            .get_file_by_name(MAIN_FILE)
            .ok_or_else(|| "the compiled pool lacks the main file".to_owned())?;
        if file.messages().len() == 0 {
            return Err("the schema defines no message".into());
        }
        Ok(ProtobufSchema { file })
    }

    /// The message type a message-index array selects.
    fn message_for(&self, indexes: &[usize]) -> Result<MessageDescriptor, Invalid> {
        let not_found = |depth: usize| {
            Invalid::new(
                Reason::DoesNotDecode,
                format!(
                    "message index {indexes:?} selects no message (position {depth} is out of range)"
                ),
            )
        };
        let (first, nested) = indexes.split_first().ok_or_else(|| not_found(0))?;
        let mut message = self
            .file
            .messages()
            .nth(*first)
            .ok_or_else(|| not_found(0))?;
        for (depth, index) in nested.iter().enumerate() {
            let child = message.child_messages().nth(*index);
            message = child.ok_or_else(|| not_found(depth + 1))?;
        }
        Ok(message)
    }

    /// Decodes the payload (message-index array, then the message) and returns the message's
    /// full name; with `want_datum`, also the message in the rules' form.
    pub(crate) fn validate(
        &self,
        payload: &[u8],
        want_datum: bool,
    ) -> Result<(String, Option<Datum>), Invalid> {
        let (indexes, body) = framing::message_indexes(payload)?;
        let descriptor = self.message_for(&indexes)?;
        let name = descriptor.full_name().to_owned();
        let message = DynamicMessage::decode(descriptor, body)
            .map_err(|e| Invalid::new(Reason::DoesNotDecode, format!("{name}: {e}")))?;
        if let Some(path) = unknown_field(&message, &name) {
            return Err(Invalid::new(
                Reason::DoesNotDecode,
                format!("{path} is not a field of the schema's message"),
            ));
        }
        let datum = want_datum.then(|| message_datum(&message));
        Ok((name, datum))
    }
}

impl ProtobufSchema {
    /// See [`super::CompiledSchema::check_path`]: checked against the first message.
    pub(crate) fn check_path(&self, path: &FieldPath) -> Result<FieldKind, String> {
        let message = self
            .file
            .messages()
            .next()
            .ok_or_else(|| "the schema defines no message".to_owned())?;
        field_kind(&message, path)
    }

    /// See [`super::CompiledSchema::edit_fields`].
    pub(crate) fn edit_fields<E>(
        &self,
        head: &[u8],
        payload: &[u8],
        paths: &[&FieldPath],
        mut edit: impl FnMut(usize, FieldKind, &[u8]) -> Result<Option<Vec<u8>>, E>,
    ) -> Result<Option<Vec<u8>>, EditError<E>> {
        let (indexes, body) =
            framing::message_indexes(payload).map_err(|e| EditError::Shape(e.message))?;
        let descriptor = self
            .message_for(&indexes)
            .map_err(|e| EditError::Shape(e.message))?;
        let mut message = DynamicMessage::decode(descriptor.clone(), body)
            .map_err(|e| EditError::Shape(format!("{}: {e}", descriptor.full_name())))?;
        let mut changed = false;
        for (index, path) in paths.iter().enumerate() {
            field_kind(&descriptor, path).map_err(EditError::Shape)?;
            let shape = || EditError::Shape(format!("{path}: not a field of the message"));
            let (last, parents) = path.segments.split_last().ok_or_else(shape)?;
            let mut at = &mut message;
            let mut present = true;
            for segment in parents {
                let field = at
                    .descriptor()
                    .get_field_by_name(segment)
                    .ok_or_else(shape)?;
                if !at.has_field(&field) {
                    present = false;
                    break;
                }
                match at.get_field_mut(&field) {
                    Value::Message(inner) => at = inner,
                    _ => return Err(shape()),
                }
            }
            if !present {
                continue;
            }
            let field = at.descriptor().get_field_by_name(last).ok_or_else(shape)?;
            if field.supports_presence() && !at.has_field(&field) {
                continue;
            }
            let replacement = match at.get_field(&field).as_ref() {
                Value::String(text) => edit(index, FieldKind::String, text.as_bytes())
                    .map_err(EditError::Edit)?
                    .map(|new| {
                        String::from_utf8(new).map(Value::String).map_err(|_| {
                            EditError::Shape(format!("{path}: the replacement is not text"))
                        })
                    })
                    .transpose()?,
                Value::Bytes(bytes) => edit(index, FieldKind::Bytes, bytes)
                    .map_err(EditError::Edit)?
                    .map(|new| Value::Bytes(new.into())),
                _ => None,
            };
            if let Some(value) = replacement {
                at.set_field(&field, value);
                changed = true;
            }
        }
        if !changed {
            return Ok(None);
        }
        let prefix = &payload[..payload.len() - body.len()];
        let mut out = Vec::with_capacity(head.len() + payload.len() + 64);
        out.extend_from_slice(head);
        out.extend_from_slice(prefix);
        prost_reflect::prost::Message::encode(&message, &mut out)
            .map_err(|e| EditError::Shape(format!("encoding the message again: {e}")))?;
        Ok(Some(out))
    }
}

impl ProtobufSchema {
    /// Every field reachable from the schema's first message (the one records select with
    /// index 0, as [`Self::check_path`]), with its `(confluent.field_meta).tags`, for
    /// selection by tag (see [`super::tags`]). Full names are the fields' Protobuf full names
    /// (`package.Message.field`), as Confluent's serializers name them.
    pub(crate) fn walk_fields(&self) -> Walk {
        let mut walk = Walk::default();
        let Some(message) = self.file.messages().next() else {
            return walk;
        };
        let meta = self.file.parent_pool().get_extension_by_name(FIELD_META);
        walk_message(
            &message,
            meta.as_ref(),
            &Ok(Vec::new()),
            &mut Vec::new(),
            &mut walk,
        );
        walk
    }
}

/// The tags in a field's `(confluent.field_meta)` option.
fn field_tags(
    field: &prost_reflect::FieldDescriptor,
    meta: Option<&prost_reflect::ExtensionDescriptor>,
) -> Vec<String> {
    let Some(meta) = meta else {
        return Vec::new();
    };
    let options = field.options();
    if !options.has_extension(meta) {
        return Vec::new();
    }
    let value = options.get_extension(meta);
    let Some(Value::List(tags)) = value
        .as_message()
        .and_then(|m| m.get_field_by_name("tags").map(|v| v.into_owned()))
    else {
        return Vec::new();
    };
    tags.iter()
        .filter_map(|t| t.as_str().map(str::to_owned))
        .collect()
}

/// Lists the fields of `message` reached at `at`; `false` once the walk is full.
fn walk_message(
    message: &MessageDescriptor,
    meta: Option<&prost_reflect::ExtensionDescriptor>,
    at: &At,
    open: &mut Vec<String>,
    walk: &mut Walk,
) -> bool {
    // A message inside itself: its fields are listed where it was first met.
    if open.iter().any(|m| m == message.full_name()) {
        return true;
    }
    open.push(message.full_name().to_owned());
    for field in message.fields() {
        let field_at: At = if field.is_list() {
            Err("it is a repeated field".into())
        } else if field.is_map() {
            Err("it is inside a map".into())
        } else {
            child(at, field.name())
        };
        let place = field_at.clone().and_then(|segments| {
            let path = FieldPath { segments };
            let top = open
                .first()
                .and_then(|name| message.parent_pool().get_message_by_name(name))
                .ok_or_else(|| "the schema defines no message".to_owned())?;
            field_kind(&top, &path).map(|kind| (path, kind))
        });
        let listed = walk.push(SchemaField {
            full_name: field.full_name().to_owned(),
            inline: field_tags(&field, meta),
            place,
        });
        let inner = match field.kind() {
            Kind::Message(inner) if field.is_map() => inner
                .get_field_by_name("value")
                .and_then(|v| v.kind().as_message().cloned()),
            Kind::Message(inner) => Some(inner),
            _ => None,
        };
        let descended = match inner {
            Some(inner) => {
                let inner_at: At = if field.is_map() {
                    Err("it is inside a map".into())
                } else if field.is_list() {
                    Err("it is inside a repeated field".into())
                } else {
                    field_at.clone()
                };
                walk_message(&inner, meta, &inner_at, open, walk)
            }
            None => true,
        };
        if !listed || !descended {
            open.pop();
            return false;
        }
    }
    open.pop();
    true
}

/// The kind of the singular string or bytes field `path` names in `message`.
fn field_kind(message: &MessageDescriptor, path: &FieldPath) -> Result<FieldKind, String> {
    let mut message = message.clone();
    let mut walked = String::from("$");
    let (last, parents) = path
        .segments
        .split_last()
        .ok_or_else(|| "empty path".to_owned())?;
    let field_of = |message: &MessageDescriptor, name: &str, walked: &str| {
        message.get_field_by_name(name).ok_or_else(|| {
            let names: Vec<String> = message.fields().map(|f| f.name().to_owned()).collect();
            format!(
                "{walked} ({}) has no field {name:?}; its fields are {}",
                message.full_name(),
                names.join(", ")
            )
        })
    };
    for segment in parents {
        let field = field_of(&message, segment, &walked)?;
        walked.push('.');
        walked.push_str(segment);
        match field.kind() {
            Kind::Message(inner) if !field.is_list() && !field.is_map() => message = inner,
            _ => return Err(format!("{walked} is not a message, so it has no fields")),
        }
    }
    let field = field_of(&message, last, &walked)?;
    walked.push('.');
    walked.push_str(last);
    if field.is_list() || field.is_map() {
        return Err(format!(
            "{walked} is repeated; only a singular string or bytes field can be protected"
        ));
    }
    match field.kind() {
        Kind::String => Ok(FieldKind::String),
        Kind::Bytes => Ok(FieldKind::Bytes),
        other => Err(format!(
            "{walked} is of type {other:?}; only string and bytes fields can be protected in place \
             (protect a string or bytes field, or change the schema so the value is carried as one)"
        )),
    }
}

/// The path of the first field that is not in the schema, searching nested messages too:
/// bytes a writer put there were not written with this schema.
fn unknown_field(message: &DynamicMessage, path: &str) -> Option<String> {
    if let Some(unknown) = message.unknown_fields().next() {
        return Some(format!("{path}: field number {}", unknown.number()));
    }
    for (field, value) in message.fields() {
        let path = format!("{path}.{}", field.name());
        let found = match value {
            Value::Message(inner) => unknown_field(inner, &path),
            Value::List(items) => items.iter().enumerate().find_map(|(i, item)| match item {
                Value::Message(inner) => unknown_field(inner, &format!("{path}[{i}]")),
                _ => None,
            }),
            Value::Map(entries) => entries.iter().find_map(|(key, item)| match item {
                Value::Message(inner) => unknown_field(inner, &format!("{path}[{}]", map_key(key))),
                _ => None,
            }),
            _ => None,
        };
        if found.is_some() {
            return found;
        }
    }
    None
}

/// Fields by name. A field that tracks presence and is unset is left out, as Confluent's field
/// walk skips it; other fields carry their (possibly default) value.
fn message_datum(message: &DynamicMessage) -> Datum {
    let descriptor = message.descriptor();
    let fields = descriptor
        .fields()
        .filter(|field| !field.supports_presence() || message.has_field(field))
        .map(|field| {
            let value = message.get_field(&field);
            (field.name().to_owned(), value_datum(&value, &field.kind()))
        })
        .collect();
    Datum::Record {
        name: descriptor.full_name().to_owned(),
        fields,
    }
}

fn value_datum(value: &Value, kind: &Kind) -> Datum {
    match value {
        Value::Bool(b) => Datum::Boolean(*b),
        Value::I32(i) => Datum::Int(i64::from(*i)),
        Value::U32(u) => Datum::Int(i64::from(*u)),
        Value::I64(i) => Datum::Long(*i),
        Value::U64(u) => i64::try_from(*u).map_or(Datum::UnsignedLong(*u), Datum::Long),
        Value::F32(f) => Datum::Float(f64::from(*f)),
        Value::F64(f) => Datum::Double(*f),
        Value::String(s) => Datum::String(s.clone()),
        Value::Bytes(b) => Datum::Bytes(b.to_vec()),
        Value::EnumNumber(number) => Datum::Enum(
            kind.as_enum()
                .and_then(|e| e.get_value(*number))
                .map_or_else(|| number.to_string(), |v| v.name().to_owned()),
        ),
        Value::Message(inner) => message_datum(inner),
        Value::List(items) => {
            Datum::Array(items.iter().map(|item| value_datum(item, kind)).collect())
        }
        Value::Map(entries) => {
            // A map field's kind is its entry message; values take the entry's value kind.
            let value_kind = kind.as_message().map_or_else(
                || kind.clone(),
                |entry| entry.map_entry_value_field().kind(),
            );
            let mut entries: Vec<(String, Datum)> = entries
                .iter()
                .map(|(key, item)| (map_key(key), value_datum(item, &value_kind)))
                .collect();
            // HashMap order is random; sorted keys make field-rule messages reproducible.
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Datum::Map(entries)
        }
    }
}

fn map_key(key: &MapKey) -> String {
    match key {
        MapKey::Bool(b) => b.to_string(),
        MapKey::I32(i) => i.to_string(),
        MapKey::I64(i) => i.to_string(),
        MapKey::U32(u) => u.to_string(),
        MapKey::U64(u) => u.to_string(),
        MapKey::String(s) => s.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    const ORDERS: &str = r#"
        syntax = "proto3";
        package acme;
        import "google/protobuf/timestamp.proto";
        message Order { string id = 1; int64 cents = 2; google.protobuf.Timestamp at = 3; }
        message Refund { string order_id = 1; Reason reason = 2;
                         enum Reason { UNKNOWN = 0; DAMAGED = 1; } }
    "#;

    fn encode(message: &DynamicMessage) -> Vec<u8> {
        message.encode_to_vec()
    }

    #[test]
    fn a_valid_message_decodes_with_its_full_name() {
        let schema = ProtobufSchema::compile(ORDERS, &[]).unwrap();
        let mut order = DynamicMessage::new(schema.message_for(&[0]).unwrap());
        order.set_field_by_name("id", Value::String("o-1".into()));
        order.set_field_by_name("cents", Value::I64(250));
        let mut payload = vec![0];
        payload.extend(encode(&order));
        let (name, datum) = schema.validate(&payload, true).unwrap();
        assert_eq!(name, "acme.Order");
        let Some(Datum::Record { fields, .. }) = datum else {
            panic!("not a record");
        };
        // The unset Timestamp field is left out; the scalars are present.
        assert_eq!(
            fields,
            vec![
                ("id".into(), Datum::String("o-1".into())),
                ("cents".into(), Datum::Long(250)),
            ]
        );
    }

    #[test]
    fn the_message_index_selects_the_second_message() {
        let schema = ProtobufSchema::compile(ORDERS, &[]).unwrap();
        let mut refund = DynamicMessage::new(schema.message_for(&[1]).unwrap());
        refund.set_field_by_name("order_id", Value::String("o-1".into()));
        refund.set_field_by_name("reason", Value::EnumNumber(1));
        // Index array [1]: count 1 (zigzag 2), index 1 (zigzag 2).
        let mut payload = vec![2, 2];
        payload.extend(encode(&refund));
        let (name, datum) = schema.validate(&payload, true).unwrap();
        assert_eq!(name, "acme.Refund");
        let Some(Datum::Record { fields, .. }) = datum else {
            panic!("not a record");
        };
        assert_eq!(fields[1], ("reason".into(), Datum::Enum("DAMAGED".into())));
        let err = schema.validate(&[2, 4], false).unwrap_err();
        assert!(err.message.contains("selects no message"), "{err}");
    }

    #[test]
    fn timestamps_and_imported_references_compile() {
        let money = r#"syntax = "proto3"; package acme.types; message Money { int64 cents = 1; }"#;
        let invoice = r#"syntax = "proto3"; package acme;
            import "acme/money.proto"; import "google/protobuf/timestamp.proto";
            message Invoice { acme.types.Money total = 1; google.protobuf.Timestamp due = 2; }"#;
        assert!(ProtobufSchema::compile(invoice, &[]).is_err());
        let schema = ProtobufSchema::compile(invoice, &[("acme/money.proto", money)]).unwrap();
        let descriptor = schema.message_for(&[0]).unwrap();
        let mut due = DynamicMessage::new(
            descriptor
                .get_field_by_name("due")
                .unwrap()
                .kind()
                .as_message()
                .unwrap()
                .clone(),
        );
        due.set_field_by_name("seconds", Value::I64(1_700_000_000));
        let mut invoice = DynamicMessage::new(descriptor);
        invoice.set_field_by_name("due", Value::Message(due));
        let mut payload = vec![0];
        payload.extend(encode(&invoice));
        let (name, datum) = schema.validate(&payload, true).unwrap();
        assert_eq!(name, "acme.Invoice");
        let Some(Datum::Record { fields, .. }) = datum else {
            panic!("not a record");
        };
        assert_eq!(
            fields[0].1,
            Datum::Record {
                name: "google.protobuf.Timestamp".into(),
                fields: vec![
                    ("seconds".into(), Datum::Long(1_700_000_000)),
                    ("nanos".into(), Datum::Int(0))
                ]
            }
        );
    }

    #[test]
    fn a_schema_registered_as_a_serialized_descriptor_compiles() {
        use base64::Engine as _;
        use prost::Message as _;
        let text = r#"syntax = "proto3"; package example.payments;
            message Payment { string id = 1; int64 amount = 2; }"#;
        let compiled = ProtobufSchema::compile(text, &[]).unwrap();
        // What confluent-kafka's Python serializer registers: the file's descriptor, base64.
        let mut proto = compiled.file.file_descriptor_proto().clone();
        proto.name = Some("example/payments/payment.proto".into());
        let serialized = base64::engine::general_purpose::STANDARD.encode(proto.encode_to_vec());
        let schema = ProtobufSchema::compile(&serialized, &[]).unwrap();
        let mut payment = DynamicMessage::new(schema.message_for(&[0]).unwrap());
        payment.set_field_by_name("amount", Value::I64(7));
        let mut payload = vec![0];
        payload.extend(encode(&payment));
        let (name, _) = schema.validate(&payload, false).unwrap();
        assert_eq!(name, "example.payments.Payment");
        assert!(ProtobufSchema::compile("bm90IGEgZGVzY3JpcHRvcg==", &[]).is_err());
    }

    #[test]
    fn garbage_and_unknown_fields_do_not_decode() {
        let schema = ProtobufSchema::compile(ORDERS, &[]).unwrap();
        // Field 1 announced as a 100-byte string with 1 byte present.
        let err = schema.validate(&[0, 0x0a, 100, b'x'], false).unwrap_err();
        assert_eq!(err.reason, Reason::DoesNotDecode);
        assert!(err.message.starts_with("acme.Order"), "{err}");
        // Field 9 (varint) is not in Order.
        let err = schema.validate(&[0, 0x48, 1], false).unwrap_err();
        assert!(err.message.contains("field number 9"), "{err}");
        // Field 15 inside the Timestamp at field 3.
        let err = schema.validate(&[0, 0x1a, 2, 0x78, 1], false).unwrap_err();
        assert!(
            err.message.contains("acme.Order.at: field number 15"),
            "{err}"
        );
    }

    #[test]
    fn schemas_that_do_not_compile_say_why() {
        let Err(err) = ProtobufSchema::compile("syntax = \"proto3\"; message {", &[]) else {
            panic!("a broken file must not compile");
        };
        assert!(!err.is_empty());
        assert!(ProtobufSchema::compile("syntax = \"proto3\";", &[]).is_err());
    }
}
