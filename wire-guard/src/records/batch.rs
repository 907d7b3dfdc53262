//! Message-format v2 record batches: parsing a partition's record set, and rebuilding a batch
//! from a subset of its records.
//!
//! Layout (all big-endian): baseOffset i64, batchLength i32, partitionLeaderEpoch i32, magic i8,
//! crc u32 (CRC-32C of everything after it), attributes i16, lastOffsetDelta i32, baseTimestamp
//! i64, maxTimestamp i64, producerId i64, producerEpoch i16, baseSequence i32, recordCount i32,
//! then the records, compressed as a whole when the attributes say so.

use std::ops::Range;

use bytes::Bytes;

use super::{Codec, RecordError, varint};

const HEADER_LEN: usize = 61;
/// Bytes before `batchLength`'s count starts (baseOffset + batchLength).
const LOG_OVERHEAD: usize = 12;
const CRC_START: usize = 21;
const ATTR_TRANSACTIONAL: i16 = 0x10;
const ATTR_CONTROL: i16 = 0x20;
const ATTR_TIMESTAMP_LOG_APPEND: i16 = 0x08;

/// One record header; duplicate keys are kept as separate headers, as Kafka allows.
#[derive(Debug, Clone)]
pub struct Header {
    pub key: Range<usize>,
    pub value: Option<Range<usize>>,
}

/// One record, as ranges into its batch's decompressed records.
#[derive(Debug, Clone)]
pub struct Record {
    pub timestamp_delta: i64,
    pub offset_delta: i32,
    pub key: Option<Range<usize>>,
    pub value: Option<Range<usize>>,
    pub headers: Vec<Header>,
    /// The record's attributes and timestamp delta, as sent.
    head: Range<usize>,
    /// Everything after the offset delta (key, value, headers), as sent.
    tail: Range<usize>,
}

/// A decoded batch: its header fields and its records over the decompressed bytes.
#[derive(Debug, Clone)]
pub struct Batch {
    /// The offset of the first record: 0 as a producer sends it, the log's offset on fetch.
    pub base_offset: i64,
    /// The offset delta of the batch's last record as the writer set it; compaction may have
    /// removed records since, so it can exceed the last record's delta.
    pub last_offset_delta: i32,
    pub partition_leader_epoch: i32,
    pub attributes: i16,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records: Vec<Record>,
    /// Where the batch lay in the record set it was parsed from.
    pub raw: Range<usize>,
    /// The records section, decompressed; for an uncompressed batch, a view of the request's
    /// own bytes.
    data: Bytes,
}

fn be<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&b[at..at + N]);
    out
}

impl Batch {
    /// Splits a partition's record set into batches. `limit` bounds the decompressed bytes of
    /// all batches together and is reduced by what they use.
    pub fn parse_all(all: &Bytes, limit: &mut usize) -> Result<Vec<Batch>, RecordError> {
        let mut batches = Vec::new();
        let mut start = 0;
        let mut bytes = &all[..];
        while !bytes.is_empty() {
            if bytes.len() < LOG_OVERHEAD {
                return Err(RecordError::Truncated("batch header"));
            }
            let length = i32::from_be_bytes(be(bytes, 8));
            let total = usize::try_from(length)
                .ok()
                .and_then(|l| l.checked_add(LOG_OVERHEAD))
                .filter(|t| *t >= HEADER_LEN)
                .ok_or(RecordError::Malformed(format!("batch length {length}")))?;
            let one = bytes
                .get(..total)
                .ok_or(RecordError::Truncated("batch shorter than its length"))?;
            let mut batch = Self::parse(all.slice(start..start + one.len()), limit)?;
            batch.raw = start..start + total;
            batches.push(batch);
            start += total;
            bytes = &bytes[total..];
        }
        Ok(batches)
    }

    /// Like [`Batch::parse_all`], for a fetched record set: a broker may end it with the start
    /// of a batch cut off at the fetch size, which the client skips and fetches again. Returns
    /// the complete batches and where the cut-off part starts.
    pub fn parse_fetched(
        all: &Bytes,
        limit: &mut usize,
    ) -> Result<(Vec<Batch>, usize), RecordError> {
        let mut end = 0;
        let mut bytes = &all[..];
        while bytes.len() >= LOG_OVERHEAD {
            let length = i32::from_be_bytes(be(bytes, 8));
            let Some(total) = usize::try_from(length)
                .ok()
                .and_then(|l| l.checked_add(LOG_OVERHEAD))
            else {
                break;
            };
            if total > bytes.len() {
                break;
            }
            end += total;
            bytes = &bytes[total..];
        }
        let batches = Batch::parse_all(&all.slice(..end), limit)?;
        Ok((batches, end))
    }

    fn parse(b: Bytes, limit: &mut usize) -> Result<Batch, RecordError> {
        let magic = b[16] as i8;
        if magic != 2 {
            return Err(RecordError::Magic(magic));
        }
        let stored = u32::from_be_bytes(be(&b, 17));
        let computed = crc32c::crc32c(&b[CRC_START..]);
        if stored != computed {
            return Err(RecordError::Crc { stored, computed });
        }
        let attributes = i16::from_be_bytes(be(&b, 21));
        let count = i32::from_be_bytes(be(&b, 57));
        let codec = Codec::from_attributes(attributes)?;
        let data = match codec {
            Codec::None => b.slice(HEADER_LEN..),
            _ => Bytes::from(codec.decompress(&b[HEADER_LEN..], *limit)?),
        };
        *limit = limit
            .checked_sub(data.len())
            .ok_or(RecordError::TooLarge { limit: *limit })?;
        let count = usize::try_from(count)
            .map_err(|_| RecordError::Malformed(format!("record count {count}")))?;
        // Each record takes at least 7 bytes, so a count beyond that is a lie to refuse before
        // reserving room for it.
        if count > data.len() / 7 + 1 {
            return Err(RecordError::Malformed(format!(
                "record count {count} for {} bytes of records",
                data.len()
            )));
        }
        let mut records = Vec::with_capacity(count);
        let mut pos = 0;
        for _ in 0..count {
            records.push(parse_record(&data, &mut pos)?);
        }
        if pos != data.len() {
            return Err(RecordError::Malformed(format!(
                "{} bytes after the last record",
                data.len() - pos
            )));
        }
        Ok(Batch {
            base_offset: i64::from_be_bytes(be(&b, 0)),
            last_offset_delta: i32::from_be_bytes(be(&b, 23)),
            partition_leader_epoch: i32::from_be_bytes(be(&b, 12)),
            attributes,
            base_timestamp: i64::from_be_bytes(be(&b, 27)),
            max_timestamp: i64::from_be_bytes(be(&b, 35)),
            producer_id: i64::from_be_bytes(be(&b, 43)),
            producer_epoch: i16::from_be_bytes(be(&b, 51)),
            base_sequence: i32::from_be_bytes(be(&b, 53)),
            records,
            raw: 0..b.len(),
            data,
        })
    }

    pub fn codec(&self) -> Codec {
        // Checked when the batch was parsed.
        Codec::from_attributes(self.attributes).unwrap_or(Codec::None)
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTR_TRANSACTIONAL != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
    }

    /// Whether the producer is idempotent (or transactional): the broker checks its sequences.
    pub fn is_idempotent(&self) -> bool {
        self.producer_id >= 0
    }

    /// Size of the decompressed records.
    pub fn data_len(&self) -> usize {
        self.data.len()
    }

    pub fn bytes(&self, range: &Range<usize>) -> &[u8] {
        &self.data[range.clone()]
    }

    pub fn key(&self, record: &Record) -> Option<&[u8]> {
        record.key.as_ref().map(|r| self.bytes(r))
    }

    pub fn value(&self, record: &Record) -> Option<&[u8]> {
        record.value.as_ref().map(|r| self.bytes(r))
    }

    /// The record's creation (or log-append) time in milliseconds.
    pub fn timestamp(&self, record: &Record) -> i64 {
        self.base_timestamp.wrapping_add(record.timestamp_delta)
    }

    pub fn timestamp_is_log_append(&self) -> bool {
        self.attributes & ATTR_TIMESTAMP_LOG_APPEND != 0
    }

    /// Encodes a batch holding the records `keep` selects, in order, with the same codec,
    /// attributes, producer id and epoch, base timestamp and partition leader epoch, and the
    /// given base sequence. Offset deltas are renumbered from 0 and the max timestamp is that
    /// of the records kept.
    pub fn rebuild(
        &self,
        keep: impl Fn(usize) -> bool,
        base_sequence: i32,
    ) -> Result<Vec<u8>, RecordError> {
        let mut records = Vec::with_capacity(self.data.len());
        let mut body = Vec::new();
        let mut count: i32 = 0;
        let mut max_timestamp = self.base_timestamp;
        for (i, record) in self.records.iter().enumerate() {
            if !keep(i) {
                continue;
            }
            body.clear();
            body.extend_from_slice(&self.data[record.head.clone()]);
            varint::write_i32(&mut body, count);
            body.extend_from_slice(&self.data[record.tail.clone()]);
            varint::write_i64(&mut records, body.len() as i64);
            records.extend_from_slice(&body);
            max_timestamp = max_timestamp.max(self.timestamp(record));
            count += 1;
        }
        if self.timestamp_is_log_append() {
            max_timestamp = self.max_timestamp;
        }
        let compressed = self.codec().compress(&records)?;
        let mut out = Vec::with_capacity(HEADER_LEN + compressed.len());
        out.extend_from_slice(&0i64.to_be_bytes());
        let batch_length = (HEADER_LEN - LOG_OVERHEAD + compressed.len()) as i32;
        out.extend_from_slice(&batch_length.to_be_bytes());
        out.extend_from_slice(&self.partition_leader_epoch.to_be_bytes());
        out.push(2);
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&self.attributes.to_be_bytes());
        out.extend_from_slice(&(count - 1).max(0).to_be_bytes());
        out.extend_from_slice(&self.base_timestamp.to_be_bytes());
        out.extend_from_slice(&max_timestamp.to_be_bytes());
        out.extend_from_slice(&self.producer_id.to_be_bytes());
        out.extend_from_slice(&self.producer_epoch.to_be_bytes());
        out.extend_from_slice(&base_sequence.to_be_bytes());
        out.extend_from_slice(&count.to_be_bytes());
        out.extend_from_slice(&compressed);
        let crc = crc32c::crc32c(&out[CRC_START..]);
        out[17..21].copy_from_slice(&crc.to_be_bytes());
        Ok(out)
    }
}

/// What changes in one record when a batch is rewritten.
#[derive(Debug, Clone, Default)]
pub struct RecordEdit {
    /// A new key (`None`: the key as it was).
    pub key: Option<Vec<u8>>,
    /// The new value (`None`: null).
    pub value: Option<Vec<u8>>,
    /// Headers added after the record's own.
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
    /// Leave the record out; the others keep their offsets, as after compaction.
    pub drop: bool,
}

impl RecordEdit {
    /// An upper bound on the bytes of what the edit writes, the new value included.
    fn bytes(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(k, v)| k.len() + v.len() + 10)
            .sum();
        self.key.as_ref().map_or(0, Vec::len)
            + self.value.as_ref().map_or(0, Vec::len)
            + headers
            + 20
    }
}

impl Batch {
    /// Encodes the batch again with the values and headers `edits` give (`None`: the record as
    /// it was), keeping everything else: base offset, offset deltas, producer id, epoch and
    /// sequence, timestamps, attributes and codec. Used where records keep their place:
    /// protecting fields on produce, revealing them on fetch.
    pub fn rewrite(&self, edits: &[Option<RecordEdit>]) -> Result<Vec<u8>, RecordError> {
        let grown: usize = edits
            .iter()
            .zip(&self.records)
            .filter_map(|(edit, record)| {
                let old = record.value.as_ref().map_or(0, Range::len);
                edit.as_ref().map(|e| e.bytes().saturating_sub(old))
            })
            .sum();
        let mut out = Vec::with_capacity(HEADER_LEN + self.data.len() + grown);
        out.resize(HEADER_LEN, 0);
        // Uncompressed records are written where they go; others are compressed first.
        let count = match self.codec() {
            Codec::None => self.write_records(edits, &mut out),
            codec => {
                let mut records = Vec::with_capacity(self.data.len() + grown);
                let count = self.write_records(edits, &mut records);
                out.extend_from_slice(&codec.compress(&records)?);
                count
            }
        };
        let batch_length = (out.len() - LOG_OVERHEAD) as i32;
        let mut header = &mut out[..HEADER_LEN];
        for part in [
            &self.base_offset.to_be_bytes()[..],
            &batch_length.to_be_bytes(),
            &self.partition_leader_epoch.to_be_bytes(),
            &[2],
            &[0; 4],
            &self.attributes.to_be_bytes(),
            &self.last_offset_delta.to_be_bytes(),
            &self.base_timestamp.to_be_bytes(),
            &self.max_timestamp.to_be_bytes(),
            &self.producer_id.to_be_bytes(),
            &self.producer_epoch.to_be_bytes(),
            &self.base_sequence.to_be_bytes(),
            &count.to_be_bytes(),
        ] {
            let (this, rest) = header.split_at_mut(part.len());
            this.copy_from_slice(part);
            header = rest;
        }
        let crc = crc32c::crc32c(&out[CRC_START..]);
        out[17..21].copy_from_slice(&crc.to_be_bytes());
        Ok(out)
    }

    /// Appends the records, edited, to `out`; returns how many were written.
    fn write_records(&self, edits: &[Option<RecordEdit>], out: &mut Vec<u8>) -> i32 {
        let mut count: i32 = 0;
        for (i, record) in self.records.iter().enumerate() {
            let edit = match edits.get(i) {
                Some(Some(RecordEdit { drop: true, .. })) => continue,
                Some(Some(edit)) => edit,
                _ => {
                    count += 1;
                    let start = record.head.start;
                    // The length prefix is not kept in the ranges: write it again.
                    varint::write_i64(out, (record.tail.end - start) as i64);
                    out.extend_from_slice(&self.data[start..record.tail.end]);
                    continue;
                }
            };
            count += 1;
            let key = match &edit.key {
                Some(key) => Some(&key[..]),
                None => record.key.as_ref().map(|k| &self.data[k.clone()]),
            };
            let header_count = (record.headers.len() + edit.headers.len()) as i64;
            let own_headers: usize = record
                .headers
                .iter()
                .map(|h| {
                    bytes_len(Some(&self.data[h.key.clone()]))
                        + bytes_len(h.value.as_ref().map(|v| &self.data[v.clone()]))
                })
                .sum();
            let added_headers: usize = edit
                .headers
                .iter()
                .map(|(k, v)| bytes_len(Some(k)) + bytes_len(Some(v)))
                .sum();
            let length = record.head.len()
                + varint::len_i64(i64::from(record.offset_delta))
                + bytes_len(key)
                + bytes_len(edit.value.as_deref())
                + varint::len_i64(header_count)
                + own_headers
                + added_headers;
            varint::write_i64(out, length as i64);
            let start = out.len();
            out.extend_from_slice(&self.data[record.head.clone()]);
            varint::write_i32(out, record.offset_delta);
            put_bytes(out, key);
            put_bytes(out, edit.value.as_deref());
            varint::write_i64(out, header_count);
            for h in &record.headers {
                put_bytes(out, Some(&self.data[h.key.clone()]));
                put_bytes(out, h.value.as_ref().map(|v| &self.data[v.clone()]));
            }
            for (k, v) in &edit.headers {
                put_bytes(out, Some(k));
                put_bytes(out, Some(v));
            }
            debug_assert_eq!(out.len() - start, length);
        }
        count
    }
}

/// Sets the base sequence of an encoded batch in place and refreshes its CRC: the records and
/// their compression stay as sent.
pub fn set_base_sequence(raw: &mut [u8], base_sequence: i32) {
    if raw.len() >= HEADER_LEN {
        raw[53..57].copy_from_slice(&base_sequence.to_be_bytes());
        let crc = crc32c::crc32c(&raw[CRC_START..]);
        raw[17..21].copy_from_slice(&crc.to_be_bytes());
    }
}

fn take(data: &[u8], pos: &mut usize, len: i32) -> Result<Option<Range<usize>>, RecordError> {
    if len < 0 {
        return Ok(None);
    }
    let end = pos
        .checked_add(len as usize)
        .filter(|e| *e <= data.len())
        .ok_or(RecordError::Truncated("record field runs past the record"))?;
    let range = *pos..end;
    *pos = end;
    Ok(Some(range))
}

fn parse_record(data: &[u8], pos: &mut usize) -> Result<Record, RecordError> {
    let length = varint::read_i32(data, pos)?;
    let end = usize::try_from(length)
        .ok()
        .and_then(|l| pos.checked_add(l))
        .filter(|e| *e <= data.len())
        .ok_or(RecordError::Truncated("record longer than its batch"))?;
    let record = &data[..end];
    let head_start = *pos;
    *pos += 1; // attributes
    let timestamp_delta = varint::read_i64(record, pos)?;
    let head = head_start..*pos;
    let offset_delta = varint::read_i32(record, pos)?;
    let tail_start = *pos;
    let key_len = varint::read_i32(record, pos)?;
    let key = take(record, pos, key_len)?;
    let value_len = varint::read_i32(record, pos)?;
    let value = take(record, pos, value_len)?;
    let header_count = varint::read_i32(record, pos)?;
    if header_count < 0 || header_count as usize > end - *pos {
        return Err(RecordError::Malformed(format!(
            "header count {header_count}"
        )));
    }
    let mut headers = Vec::with_capacity(header_count as usize);
    for _ in 0..header_count {
        let key_len = varint::read_i32(record, pos)?;
        let key = take(record, pos, key_len)?
            .ok_or(RecordError::Malformed("header with a null key".into()))?;
        let value_len = varint::read_i32(record, pos)?;
        let value = take(record, pos, value_len)?;
        headers.push(Header { key, value });
    }
    if *pos != end {
        return Err(RecordError::Malformed(format!(
            "record length {length} does not match its fields"
        )));
    }
    Ok(Record {
        timestamp_delta,
        offset_delta,
        key,
        value,
        headers,
        head,
        tail: tail_start..end,
    })
}

/// Builds a batch from scratch, for records the proxy writes itself (dead letters).
pub struct Builder {
    records: Vec<u8>,
    count: i32,
    base_timestamp: i64,
    max_timestamp: i64,
}

/// A record the proxy writes: key, value and headers, with its timestamp.
pub struct OwnedRecord {
    pub timestamp: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

/// How many bytes [`put_bytes`] writes.
fn bytes_len(bytes: Option<&[u8]>) -> usize {
    match bytes {
        None => 1,
        Some(b) => varint::len_i64(b.len() as i64) + b.len(),
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => varint::write_i32(out, -1),
        Some(b) => {
            varint::write_i64(out, b.len() as i64);
            out.extend_from_slice(b);
        }
    }
}

impl Builder {
    pub fn new(base_timestamp: i64) -> Self {
        Self {
            records: Vec::new(),
            count: 0,
            base_timestamp,
            max_timestamp: base_timestamp,
        }
    }

    pub fn push(&mut self, record: &OwnedRecord) {
        let mut body = vec![0u8];
        varint::write_i64(
            &mut body,
            record.timestamp.wrapping_sub(self.base_timestamp),
        );
        varint::write_i32(&mut body, self.count);
        put_bytes(&mut body, record.key.as_deref());
        put_bytes(&mut body, record.value.as_deref());
        varint::write_i64(&mut body, record.headers.len() as i64);
        for (k, v) in &record.headers {
            put_bytes(&mut body, Some(k));
            put_bytes(&mut body, v.as_deref());
        }
        varint::write_i64(&mut self.records, body.len() as i64);
        self.records.extend_from_slice(&body);
        self.max_timestamp = self.max_timestamp.max(record.timestamp);
        self.count += 1;
    }

    pub fn len(&self) -> i32 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// An uncompressed, create-time batch for the given producer.
    pub fn finish(&self, producer_id: i64, producer_epoch: i16, base_sequence: i32) -> Vec<u8> {
        let batch = Batch {
            base_offset: 0,
            last_offset_delta: 0,
            partition_leader_epoch: -1,
            attributes: 0,
            base_timestamp: self.base_timestamp,
            max_timestamp: self.max_timestamp,
            producer_id,
            producer_epoch,
            base_sequence,
            records: Vec::new(),
            raw: 0..0,
            data: Bytes::new(),
        };
        let mut out = batch.rebuild(|_| false, base_sequence).unwrap_or_default();
        // Splice the records into the empty batch and fix its counts and CRC.
        out.extend_from_slice(&self.records);
        let batch_length = (out.len() - LOG_OVERHEAD) as i32;
        out[8..12].copy_from_slice(&batch_length.to_be_bytes());
        out[23..27].copy_from_slice(&(self.count - 1).max(0).to_be_bytes());
        out[35..43].copy_from_slice(&self.max_timestamp.to_be_bytes());
        out[57..61].copy_from_slice(&self.count.to_be_bytes());
        let crc = crc32c::crc32c(&out[CRC_START..]);
        out[17..21].copy_from_slice(&crc.to_be_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use bytes::{Bytes, BytesMut};
    use kafka_protocol::{
        indexmap::IndexMap,
        protocol::StrBytes,
        records::{
            Compression, Record as KpRecord, RecordBatchDecoder, RecordBatchEncoder,
            RecordEncodeOptions, TimestampType,
        },
    };

    use super::*;

    const CODECS: [(Compression, Codec); 5] = [
        (Compression::None, Codec::None),
        (Compression::Gzip, Codec::Gzip),
        (Compression::Snappy, Codec::Snappy),
        (Compression::Lz4, Codec::Lz4),
        (Compression::Zstd, Codec::Zstd),
    ];

    /// A batch as an independent encoder (kafka-protocol's) writes it.
    fn encoded(compression: Compression, n: usize, transactional: bool) -> Vec<u8> {
        let records: Vec<KpRecord> = (0..n)
            .map(|i| KpRecord {
                transactional,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 7,
                producer_id: 4242,
                producer_epoch: 3,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: 100 + i as i32,
                timestamp: 1_700_000_000_000 + i as i64 * 10,
                key: (i % 2 == 0).then(|| Bytes::from(format!("key-{i}"))),
                value: Some(Bytes::from(format!("value-{i}"))),
                headers: IndexMap::from([(
                    StrBytes::from_static_str("h"),
                    Some(Bytes::from(vec![i as u8])),
                )]),
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
        )
        .unwrap();
        buf.to_vec()
    }

    #[test]
    fn parses_what_an_independent_encoder_writes_with_every_codec() {
        for (compression, codec) in CODECS {
            let bytes = encoded(compression, 5, false);
            let mut limit = 1 << 20;
            let batches = Batch::parse_all(&Bytes::from(bytes), &mut limit).unwrap();
            assert_eq!(batches.len(), 1);
            let b = &batches[0];
            assert_eq!(b.codec(), codec);
            assert_eq!(
                (b.producer_id, b.producer_epoch, b.base_sequence),
                (4242, 3, 100)
            );
            assert_eq!(b.records.len(), 5);
            assert_eq!(b.key(&b.records[2]), Some(&b"key-2"[..]));
            assert_eq!(b.key(&b.records[1]), None);
            assert_eq!(b.value(&b.records[4]), Some(&b"value-4"[..]));
            assert_eq!(b.timestamp(&b.records[3]), 1_700_000_000_030);
        }
    }

    #[test]
    fn rebuilding_keeps_codec_producer_and_timestamps_and_renumbers_offsets() {
        for (compression, codec) in CODECS {
            let bytes = encoded(compression, 6, true);
            let batch = &Batch::parse_all(&Bytes::from(bytes.clone()), &mut (1 << 20)).unwrap()[0];
            let rebuilt = batch.rebuild(|i| i != 0 && i != 3, 90).unwrap();
            // The independent decoder checks the CRC and reads it back.
            let set = RecordBatchDecoder::decode(&mut Bytes::from(rebuilt.clone())).unwrap();
            let values: Vec<_> = set
                .records
                .iter()
                .map(|r| r.value.clone().unwrap())
                .collect();
            assert_eq!(
                values,
                ["value-1", "value-2", "value-4", "value-5"]
                    .map(|s| Bytes::from_static(s.as_bytes()))
            );
            let r = &set.records[0];
            assert!(r.transactional);
            assert_eq!((r.producer_id, r.producer_epoch, r.sequence), (4242, 3, 90));
            assert_eq!(r.partition_leader_epoch, 7);
            assert_eq!(r.timestamp, 1_700_000_000_010);
            assert_eq!(
                set.records.iter().map(|r| r.offset).collect::<Vec<_>>(),
                [0, 1, 2, 3]
            );
            let again =
                &Batch::parse_all(&Bytes::from(rebuilt.clone()), &mut (1 << 20)).unwrap()[0];
            assert_eq!(again.codec(), codec);
            assert_eq!(again.max_timestamp, 1_700_000_000_050);
        }
    }

    #[test]
    fn duplicate_header_keys_survive_a_round_trip() {
        let mut builder = Builder::new(1000);
        builder.push(&OwnedRecord {
            timestamp: 1001,
            key: None,
            value: Some(b"v".to_vec()),
            headers: vec![
                (b"dup".to_vec(), Some(b"1".to_vec())),
                (b"dup".to_vec(), Some(b"2".to_vec())),
                (b"null".to_vec(), None),
            ],
        });
        let bytes = builder.finish(-1, -1, -1);
        let batch = &Batch::parse_all(&Bytes::from(bytes.clone()), &mut (1 << 20)).unwrap()[0];
        let headers: Vec<_> = batch.records[0]
            .headers
            .iter()
            .map(|h| {
                (
                    batch.bytes(&h.key).to_vec(),
                    h.value.as_ref().map(|v| batch.bytes(v).to_vec()),
                )
            })
            .collect();
        assert_eq!(
            headers,
            [
                (b"dup".to_vec(), Some(b"1".to_vec())),
                (b"dup".to_vec(), Some(b"2".to_vec())),
                (b"null".to_vec(), None)
            ]
        );
        let rebuilt = batch.rebuild(|_| true, -1).unwrap();
        assert_eq!(rebuilt, bytes, "an unchanged batch rebuilds byte for byte");
        let mut moved = bytes.clone();
        set_base_sequence(&mut moved, 77);
        let again = &Batch::parse_all(&Bytes::from(moved.clone()), &mut (1 << 20)).unwrap()[0];
        assert_eq!(again.base_sequence, 77);
    }

    #[test]
    fn corrupt_batches_are_refused_not_trusted() {
        let bytes = encoded(Compression::None, 3, false);
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(matches!(
            Batch::parse_all(&Bytes::from(flipped.clone()), &mut (1 << 20)),
            Err(RecordError::Crc { .. })
        ));
        assert!(
            Batch::parse_all(
                &Bytes::from(bytes[..bytes.len() - 1].to_vec()),
                &mut (1 << 20)
            )
            .is_err()
        );
        let mut magic = bytes.clone();
        magic[16] = 1;
        assert_eq!(
            Batch::parse_all(&Bytes::from(magic.clone()), &mut (1 << 20)).unwrap_err(),
            RecordError::Magic(1)
        );
        let mut count = bytes.clone();
        count[57..61].copy_from_slice(&i32::MAX.to_be_bytes());
        let crc = crc32c::crc32c(&count[CRC_START..]);
        count[17..21].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(
            Batch::parse_all(&Bytes::from(count.clone()), &mut (1 << 20)),
            Err(RecordError::Malformed(_))
        ));
        assert!(matches!(
            Batch::parse_all(
                &Bytes::from(encoded(Compression::Gzip, 50, false)),
                &mut 100
            ),
            Err(RecordError::TooLarge { .. })
        ));
    }
}
