//! Finding and rewriting single fields of a record, for field protection.
//!
//! A field is named by a [`FieldPath`] (`$.customer.email`): record fields, JSON object members
//! or Protobuf message fields by name, from the top of the value, looking through optional
//! values. Only string and bytes fields are rewritten, so that a protected record stays valid
//! against its schema: an encrypted string is text, encrypted bytes are bytes.
//!
//! Each format keeps everything it does not rewrite:
//! - Avro: the new value is spliced into the binary datum (a string or bytes value is its own
//!   length and content, and records carry no lengths), so every other byte is as written.
//! - JSON: the document is parsed, the member replaced, and the document written back.
//! - Protobuf: the message is decoded against its descriptor, the field set, and the message
//!   encoded again behind the original message-index array.

use shared::policy::FieldPath;

use super::{CompiledSchema, compile::Decoder};

/// What a protectable field holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    /// Text: a replacement must be UTF-8.
    String,
    Bytes,
}

/// Why a record's fields could not be rewritten.
#[derive(Debug, thiserror::Error)]
pub enum EditError<E> {
    /// The record does not have the shape the path needs (or does not decode).
    #[error("{0}")]
    Shape(String),
    /// The caller's edit failed.
    #[error(transparent)]
    Edit(E),
}

impl CompiledSchema {
    /// Whether `path` names a string or bytes field of the schema, and which. For Protobuf the
    /// first message of the schema is checked (each record names its own message, checked when
    /// it is rewritten); JSON Schema is checked per record.
    pub fn check_path(&self, path: &FieldPath) -> Result<FieldKind, String> {
        match &self.decoder {
            Decoder::Avro(schema) => schema.check_path(path),
            Decoder::Json(_) => Ok(FieldKind::String),
            Decoder::Protobuf(schema) => schema.check_path(path),
        }
    }

    /// Rewrites the fields at `paths` in `payload` (the bytes after the 5-byte Confluent
    /// header). `edit(i, kind, current)` is called for each field present (a null or absent
    /// optional field is skipped) with the index of its path; it returns the replacement, or
    /// `None` to keep the field. Returns `head` (the Confluent header) and the new payload in
    /// one buffer, or `None` when nothing changed.
    pub fn edit_fields<E>(
        &self,
        head: &[u8],
        payload: &[u8],
        paths: &[&FieldPath],
        edit: impl FnMut(usize, FieldKind, &[u8]) -> Result<Option<Vec<u8>>, E>,
    ) -> Result<Option<Vec<u8>>, EditError<E>> {
        match &self.decoder {
            Decoder::Avro(schema) => schema.edit_fields(head, payload, paths, edit),
            Decoder::Json(_) => super::json::edit_fields(head, payload, paths, edit),
            Decoder::Protobuf(schema) => schema.edit_fields(head, payload, paths, edit),
        }
    }
}
