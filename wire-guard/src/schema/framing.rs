//! Confluent wire framing: magic byte 0, a 4-byte big-endian schema id, then the payload. For
//! Protobuf the payload starts with the message-index array that selects the message type
//! within the schema's file: a zigzag varint count, then that many zigzag varint indexes, the
//! first into the file's top-level messages and each further one into the previous message's
//! nested types. A count of 0 (a single 0 byte) is Confluent's short form of `[0]`.

use super::{Invalid, Reason};

/// Bytes of the magic byte plus the schema id.
pub const HEADER_LEN: usize = 5;

/// Nesting depth no real `.proto` file reaches; a larger count in a record is corruption, and
/// refusing it bounds the allocation before any index is read.
pub const MAX_MESSAGE_INDEXES: usize = 64;

/// Splits a framed record into its schema id and the payload after the header.
pub fn split(bytes: &[u8]) -> Result<(u32, &[u8]), Invalid> {
    match bytes {
        [0, a, b, c, d, payload @ ..] => Ok((u32::from_be_bytes([*a, *b, *c, *d]), payload)),
        [0, ..] => Err(Invalid::new(
            Reason::NoMagicByte,
            format!(
                "{} byte(s) after the magic byte; the schema id needs 4",
                bytes.len() - 1
            ),
        )),
        [first, ..] => Err(Invalid::new(
            Reason::NoMagicByte,
            format!("first byte is {first:#04x}, not the magic byte 0x00"),
        )),
        [] => Err(Invalid::new(Reason::NoMagicByte, "empty payload")),
    }
}

/// Reads the Protobuf message-index array at the start of `payload` and returns the indexes and
/// the message bytes after it.
pub fn message_indexes(payload: &[u8]) -> Result<(Vec<usize>, &[u8]), Invalid> {
    let mut rest = payload;
    let count = read_zigzag(&mut rest, "message-index count")?;
    if count == 0 {
        return Ok((vec![0], rest));
    }
    let count = usize::try_from(count)
        .ok()
        .filter(|count| *count <= MAX_MESSAGE_INDEXES)
        .ok_or_else(|| {
            Invalid::new(
                Reason::DoesNotDecode,
                format!("message-index count {count} is outside 1..={MAX_MESSAGE_INDEXES}"),
            )
        })?;
    let mut indexes = Vec::with_capacity(count);
    for position in 0..count {
        let index = read_zigzag(&mut rest, "message index")?;
        let index = usize::try_from(index).map_err(|_| {
            Invalid::new(
                Reason::DoesNotDecode,
                format!("message index {position} is negative ({index})"),
            )
        })?;
        indexes.push(index);
    }
    Ok((indexes, rest))
}

/// One zigzag-encoded varint of at most 32 bits, as Confluent's serializers write them.
fn read_zigzag(rest: &mut &[u8], what: &str) -> Result<i64, Invalid> {
    let mut value: u64 = 0;
    for (i, byte) in rest.iter().enumerate() {
        // Five 7-bit groups hold 32 bits; a sixth byte means the writer did not write an int32.
        if i == 5 {
            break;
        }
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            *rest = &rest[i + 1..];
            let unsigned = u32::try_from(value).map_err(|_| {
                Invalid::new(Reason::DoesNotDecode, format!("{what} overflows 32 bits"))
            })?;
            return Ok(i64::from((unsigned >> 1) as i32 ^ -((unsigned & 1) as i32)));
        }
    }
    Err(Invalid::new(
        Reason::DoesNotDecode,
        if rest.is_empty() {
            format!("payload ends before the {what}")
        } else {
            format!("{what} is not a 32-bit varint")
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_reads_the_id_and_keeps_the_payload() {
        let (id, payload) = split(&[0, 0, 0, 1, 2, 9, 8]).unwrap();
        assert_eq!(id, 258);
        assert_eq!(payload, &[9, 8]);
        assert_eq!(split(&[0, 0, 0, 0, 7]).unwrap(), (7, &[][..]));
    }

    #[test]
    fn split_refuses_a_missing_magic_byte_or_a_short_header() {
        for bytes in [&b"{\"a\":1}"[..], &[1, 0, 0, 0, 1], &[], &[0, 0, 0, 1]] {
            let err = split(bytes).unwrap_err();
            assert_eq!(err.reason, Reason::NoMagicByte, "{bytes:?}: {err}");
        }
        assert!(split(&[0, 0, 0]).unwrap_err().message.contains("needs 4"));
        assert!(split(&[0x7b]).unwrap_err().message.contains("0x7b"));
    }

    #[test]
    fn a_single_zero_byte_means_the_first_message() {
        assert_eq!(message_indexes(&[0, 8, 1]).unwrap(), (vec![0], &[8, 1][..]));
    }

    #[test]
    fn index_arrays_are_zigzag_encoded() {
        // [1, 0]: count 2 -> 4, indexes 1 -> 2 and 0 -> 0.
        assert_eq!(
            message_indexes(&[4, 2, 0, 8]).unwrap(),
            (vec![1, 0], &[8][..])
        );
        // [70]: 70 zigzags to 140, a two-byte varint.
        assert_eq!(message_indexes(&[2, 0x8c, 0x01]).unwrap().0, vec![70]);
    }

    #[test]
    fn negative_huge_or_truncated_counts_are_refused_without_allocating() {
        // Count -1 (zigzag 1).
        let err = message_indexes(&[1, 0]).unwrap_err();
        assert_eq!(err.reason, Reason::DoesNotDecode);
        assert!(err.message.contains("count -1"), "{err}");
        // Count i32::MAX (zigzag 0xfffffffe).
        let err = message_indexes(&[0xfe, 0xff, 0xff, 0xff, 0x0f]).unwrap_err();
        assert!(err.message.contains("outside"), "{err}");
        // A varint longer than 32 bits.
        let err = message_indexes(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x01]).unwrap_err();
        assert!(err.message.contains("32-bit"), "{err}");
        // A negative index, and an array cut short.
        assert!(
            message_indexes(&[2, 1])
                .unwrap_err()
                .message
                .contains("negative")
        );
        assert!(
            message_indexes(&[4, 2])
                .unwrap_err()
                .message
                .contains("ends before")
        );
        assert!(
            message_indexes(&[])
                .unwrap_err()
                .message
                .contains("ends before")
        );
    }
}
