//! The record-batch codecs, bounded: decompression stops at a caller-given size, so a few
//! kilobytes of crafted gzip or a snappy length header cannot make the proxy allocate
//! gigabytes. Compression writes what Kafka's own producers write (xerial-framed snappy, LZ4
//! frames).

use std::io::{Read, Write};

use super::RecordError;

/// A batch's compression type, from the low three bits of its attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Codec {
    pub fn from_attributes(attributes: i16) -> Result<Self, RecordError> {
        Ok(match attributes & 0x07 {
            0 => Self::None,
            1 => Self::Gzip,
            2 => Self::Snappy,
            3 => Self::Lz4,
            4 => Self::Zstd,
            other => return Err(RecordError::UnknownCodec(other)),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Gzip => "gzip",
            Self::Snappy => "snappy",
            Self::Lz4 => "lz4",
            Self::Zstd => "zstd",
        }
    }

    /// Decompresses `data`, refusing output larger than `limit` bytes.
    pub fn decompress(self, data: &[u8], limit: usize) -> Result<Vec<u8>, RecordError> {
        let fail = |e: std::io::Error| RecordError::Decompress {
            codec: self.name(),
            reason: e.to_string(),
        };
        match self {
            Self::None => {
                if data.len() > limit {
                    return Err(RecordError::TooLarge { limit });
                }
                Ok(data.to_vec())
            }
            Self::Gzip => read_bounded(flate2::read::GzDecoder::new(data), limit).map_err(fail)?,
            Self::Snappy => snappy_decompress(data, limit),
            Self::Lz4 => {
                read_bounded(lz4::Decoder::new(data).map_err(fail)?, limit).map_err(fail)?
            }
            Self::Zstd => {
                let mut decoder = zstd::stream::read::Decoder::new(data).map_err(fail)?;
                // The window a frame may demand is memory the proxy must allocate; producers'
                // levels use at most a few MiB.
                decoder.window_log_max(ZSTD_WINDOW_LOG_MAX).map_err(fail)?;
                read_bounded(decoder, limit).map_err(fail)?
            }
        }
    }

    pub fn compress(self, data: &[u8]) -> Result<Vec<u8>, RecordError> {
        let fail = |e: std::io::Error| RecordError::Compress {
            codec: self.name(),
            reason: e.to_string(),
        };
        match self {
            Self::None => Ok(data.to_vec()),
            Self::Gzip => {
                let mut encoder = flate2::write::GzEncoder::new(
                    Vec::with_capacity(data.len() / 2),
                    flate2::Compression::default(),
                );
                encoder.write_all(data).map_err(fail)?;
                encoder.finish().map_err(fail)
            }
            Self::Snappy => snappy_compress(data).map_err(|e| RecordError::Compress {
                codec: "snappy",
                reason: e.to_string(),
            }),
            Self::Lz4 => {
                let mut encoder = lz4::EncoderBuilder::new()
                    .block_mode(lz4::BlockMode::Independent)
                    .build(Vec::with_capacity(data.len() / 2))
                    .map_err(fail)?;
                encoder.write_all(data).map_err(fail)?;
                let (out, result) = encoder.finish();
                result.map_err(fail)?;
                Ok(out)
            }
            Self::Zstd => zstd::stream::encode_all(data, 3).map_err(fail),
        }
    }
}

const ZSTD_WINDOW_LOG_MAX: u32 = 24;

/// Reads all of `reader`, failing once more than `limit` bytes come out.
fn read_bounded(reader: impl Read, limit: usize) -> std::io::Result<Result<Vec<u8>, RecordError>> {
    let mut out = Vec::new();
    reader.take(limit as u64 + 1).read_to_end(&mut out)?;
    if out.len() > limit {
        return Ok(Err(RecordError::TooLarge { limit }));
    }
    Ok(Ok(out))
}

/// snappy-java's stream header, which the Java client writes; librdkafka may write raw snappy.
const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
const XERIAL_HEADER_LEN: usize = 16;
const XERIAL_BLOCK: usize = 32 * 1024;

fn snappy_decompress(data: &[u8], limit: usize) -> Result<Vec<u8>, RecordError> {
    let corrupt = |reason: String| RecordError::Decompress {
        codec: "snappy",
        reason,
    };
    let mut decoder = snap::raw::Decoder::new();
    let mut block = |compressed: &[u8], out: &mut Vec<u8>| -> Result<(), RecordError> {
        let len = snap::raw::decompress_len(compressed).map_err(|e| corrupt(e.to_string()))?;
        if out.len() + len > limit {
            return Err(RecordError::TooLarge { limit });
        }
        let start = out.len();
        out.resize(start + len, 0);
        let written = decoder
            .decompress(compressed, &mut out[start..])
            .map_err(|e| corrupt(e.to_string()))?;
        out.truncate(start + written);
        Ok(())
    };
    let mut out = Vec::new();
    if !data.starts_with(XERIAL_MAGIC) {
        block(data, &mut out)?;
        return Ok(out);
    }
    let mut rest = data
        .get(XERIAL_HEADER_LEN..)
        .ok_or_else(|| corrupt("xerial header is truncated".into()))?;
    while !rest.is_empty() {
        let (len, tail) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| corrupt("xerial block length is truncated".into()))?;
        let len = u32::from_be_bytes(*len) as usize;
        let compressed = tail
            .get(..len)
            .ok_or_else(|| corrupt("xerial block is truncated".into()))?;
        block(compressed, &mut out)?;
        rest = &tail[len..];
    }
    Ok(out)
}

fn snappy_compress(data: &[u8]) -> Result<Vec<u8>, snap::Error> {
    let mut out = Vec::with_capacity(XERIAL_HEADER_LEN + data.len() / 2);
    out.extend_from_slice(XERIAL_MAGIC);
    // Stream format version 1, minimum compatible version 1, as snappy-java writes.
    out.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1]);
    let mut encoder = snap::raw::Encoder::new();
    for chunk in data.chunks(XERIAL_BLOCK) {
        let compressed = encoder.compress_vec(chunk)?;
        out.extend_from_slice(&(compressed.len() as u32).to_be_bytes());
        out.extend_from_slice(&compressed);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Codec; 5] = [
        Codec::None,
        Codec::Gzip,
        Codec::Snappy,
        Codec::Lz4,
        Codec::Zstd,
    ];

    #[test]
    fn every_codec_round_trips() {
        let data: Vec<u8> = (0..100_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for codec in ALL {
            let packed = codec.compress(&data).unwrap();
            assert_eq!(
                codec.decompress(&packed, data.len()).unwrap(),
                data,
                "{codec:?}"
            );
        }
    }

    #[test]
    fn decompression_stops_at_the_limit() {
        let data = vec![0u8; 1 << 20];
        for codec in ALL {
            let packed = codec.compress(&data).unwrap();
            assert_eq!(
                codec.decompress(&packed, 1000),
                Err(RecordError::TooLarge { limit: 1000 }),
                "{codec:?}"
            );
        }
    }

    #[test]
    fn a_snappy_length_header_cannot_claim_gigabytes() {
        // A raw snappy stream whose header claims 4 GiB of output.
        let bomb = [0xff, 0xff, 0xff, 0xff, 0x0f, 0x00];
        assert_eq!(
            Codec::Snappy.decompress(&bomb, 1 << 20),
            Err(RecordError::TooLarge { limit: 1 << 20 })
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for codec in [Codec::Gzip, Codec::Snappy, Codec::Lz4, Codec::Zstd] {
            assert!(
                codec
                    .decompress(b"definitely not compressed", 1 << 20)
                    .is_err()
            );
        }
    }
}
