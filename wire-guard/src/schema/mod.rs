//! Schema validation of produced records against a Confluent-compatible schema registry.
//!
//! How a record's key or value is checked:
//!
//! 1. [`framing::split`] reads the Confluent wire header (magic byte 0, 4-byte schema id).
//! 2. [`Schemas::get`] (in `cache`) returns the [`CompiledSchema`] for the id: from a bounded
//!    cache, or fetched once through `registry` (HTTP, with references resolved recursively and
//!    an OAuth2 client-credentials token from `token` when the registry sits behind
//!    registry-proxy) and compiled by `compile`.
//! 3. [`CompiledSchema::validate`] decodes the payload completely with the format's decoder
//!    (`avro`, `json`, `protobuf`), turns the decoded record into a format-neutral `datum`,
//!    and evaluates the schema's data-contract rules (`rules`, CEL) that apply on write.
//!
//! For field protection, [`fields`] finds and rewrites single fields by path, and [`tags`]
//! lists the fields a schema tags (`confluent:tags`, `confluent.field_meta`, `metadata.tags`).
//!
//! `metrics` counts cache outcomes, registry latency and registry errors.
//!
//! Validation is CPU work (decoding, JSON Schema, CEL): callers run it off the I/O tasks, for
//! example inside `spawn_blocking`, which is why [`CompiledSchema`] is `Send + Sync`.

mod avro;
mod cache;
mod compile;
mod datum;
pub mod fields;
pub mod framing;
mod json;
mod metrics;
mod protobuf;
mod registry;
mod rules;
pub mod tags;
mod token;

use std::fmt;

pub use cache::Schemas;
pub use compile::{CompiledSchema, ReferencedSchema, SchemaSource};
pub use registry::{ClientCredentials, RegistryConfig};

/// The schema languages a Confluent-compatible registry serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Avro,
    Json,
    Protobuf,
}

impl Format {
    /// Parses a registry's `schemaType`; an absent type means Avro, as in every registry.
    pub fn from_schema_type(schema_type: Option<&str>) -> Option<Format> {
        match schema_type {
            None | Some("AVRO") => Some(Format::Avro),
            Some("JSON") => Some(Format::Json),
            Some("PROTOBUF") => Some(Format::Protobuf),
            Some(_) => None,
        }
    }

    /// The registry's name for the format, for logs and error messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Avro => "AVRO",
            Format::Json => "JSON",
            Format::Protobuf => "PROTOBUF",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a schema id has no usable schema. Not an [`crate::Error`]: each variant is an outcome the
/// record pipeline maps to a policy decision (reject, dead-letter, retry later).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The registry answered 404 (error code 40403) for this id.
    NotFound,
    /// The registry or its token endpoint could not answer now; says why. Never cached.
    Unavailable(String),
    /// The registry's schema text, one of its references, or one of its rules does not compile;
    /// says why.
    Unusable(String),
}

impl fmt::Display for Lookup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Lookup::NotFound => f.write_str("schema id not found in the registry"),
            Lookup::Unavailable(why) => write!(f, "schema registry unavailable: {why}"),
            Lookup::Unusable(why) => write!(f, "schema does not compile: {why}"),
        }
    }
}

impl std::error::Error for Lookup {}

/// The outcome of a payload that decodes under its schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validated {
    /// The record's type name, for subject-name strategies that use it: the Avro full name of
    /// the writer schema's top record, the Protobuf full message name, or the JSON Schema
    /// `title`; `None` when the schema has no such name.
    pub record_name: Option<String>,
    /// Every write-side data-contract rule the record did not satisfy, in rule order. Empty
    /// when the schema has no rules or the record satisfies them all.
    pub failed_rules: Vec<RuleFailure>,
}

/// A data-contract rule the record did not satisfy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleFailure {
    /// The rule's `name` from the schema's rule set, so operators can find it.
    pub rule: String,
    /// What the rule asks the producer side to do on failure.
    pub on_failure: OnFailure,
    /// Which expression failed and, for field rules, which field; or why evaluation failed.
    pub message: String,
}

/// A rule's write-side `onFailure` action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnFailure {
    /// Reject the record.
    Error,
    /// Send the record to this dead-letter topic (the rule's `dlq.topic` parameter).
    DeadLetter(String),
    /// Let the record through; the failure is only reported.
    None,
}

/// A payload that does not decode, or does not validate, under its schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub reason: Reason,
    /// Names the field or byte position where decoding failed, or the failing JSON path.
    pub message: String,
}

impl Invalid {
    pub(crate) fn new(reason: Reason, message: impl Into<String>) -> Self {
        Invalid {
            reason,
            message: message.into(),
        }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason.as_str(), self.message)
    }
}

impl std::error::Error for Invalid {}

/// Why a payload is invalid; stable names for logs, metrics and dead-letter headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The bytes do not start with the Confluent header (magic byte 0 and a 4-byte id).
    NoMagicByte,
    /// The payload is not a value of the schema (truncated, wrong types, unknown fields).
    DoesNotDecode,
    /// A complete value was decoded and bytes were left over.
    TrailingBytes,
    /// A JSON document that violates its JSON Schema.
    NotValid,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NoMagicByte => "no_magic_byte",
            Reason::DoesNotDecode => "does_not_decode",
            Reason::TrailingBytes => "trailing_bytes",
            Reason::NotValid => "schema_violation",
        }
    }
}
