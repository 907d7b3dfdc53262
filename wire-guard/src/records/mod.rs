//! Kafka record batches (message format v2) as the record pipeline needs them.
//!
//! kafka-protocol keeps a Produce request's records as bytes and its own record decoder stores
//! headers in a map, which collapses duplicate header keys that Kafka allows. This module reads
//! batches without losing anything: every record keeps its original bytes, duplicate headers
//! stay as sent, and a batch is rebuilt only when records are removed from it, with its codec,
//! attributes, producer id, epoch, timestamps and partition leader epoch kept.
//!
//! - [`varint`]: Kafka's zigzag varints.
//! - [`compression`]: the four codecs, with a bound on decompressed size (a small compressed
//!   batch must not be able to claim gigabytes).
//! - [`batch`]: parsing a partition's record set into batches and records, CRC checked, and
//!   rebuilding a batch from a subset of its records.

pub mod batch;
pub mod compression;
pub mod varint;

pub use batch::{Batch, Builder, Header, OwnedRecord, Record, RecordEdit, set_base_sequence};
pub use compression::Codec;

/// Why a partition's records could not be read. These are the client's bytes, so every variant
/// becomes an error code on that partition, never a closed connection.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("record batch is truncated: {0}")]
    Truncated(&'static str),
    #[error("record batch has magic {0}; only message format v2 is accepted")]
    Magic(i8),
    #[error("record batch CRC mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    Crc { stored: u32, computed: u32 },
    #[error("record batch uses unknown compression type {0}")]
    UnknownCodec(i16),
    #[error("{codec} data is corrupt: {reason}")]
    Decompress { codec: &'static str, reason: String },
    #[error("records decompress to more than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("malformed record: {0}")]
    Malformed(String),
    #[error("cannot compress with {codec}: {reason}")]
    Compress { codec: &'static str, reason: String },
}
