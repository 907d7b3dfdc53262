//! Kafka's zigzag-encoded variable-length integers (protobuf's `sint32`/`sint64` encoding), as
//! used inside v2 records.

use super::RecordError;

/// Reads a zigzag varint of at most `max_bytes` bytes from `buf` at `*pos`, advancing `*pos`.
fn read_raw(buf: &[u8], pos: &mut usize, max_bytes: usize) -> Result<u64, RecordError> {
    let mut value: u64 = 0;
    for i in 0..max_bytes {
        let byte = *buf
            .get(*pos)
            .ok_or(RecordError::Truncated("varint runs past the end"))?;
        *pos += 1;
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(RecordError::Malformed("varint is too long".into()))
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

pub fn read_i32(buf: &[u8], pos: &mut usize) -> Result<i32, RecordError> {
    let v = unzigzag(read_raw(buf, pos, 5)?);
    i32::try_from(v).map_err(|_| RecordError::Malformed("varint overflows 32 bits".into()))
}

pub fn read_i64(buf: &[u8], pos: &mut usize) -> Result<i64, RecordError> {
    read_raw(buf, pos, 10).map(unzigzag)
}

pub fn write_i64(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

pub fn write_i32(out: &mut Vec<u8>, v: i32) {
    write_i64(out, i64::from(v));
}

/// How many bytes [`write_i64`] writes for `v`.
pub fn len_i64(v: i64) -> usize {
    let z = ((v << 1) ^ (v >> 63)) as u64;
    (64 - (z | 1).leading_zeros() as usize).div_ceil(7)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_edges() {
        for v in [
            0i64,
            1,
            -1,
            63,
            -64,
            64,
            -65,
            300,
            8191,
            8192,
            i64::from(i32::MAX),
            i64::from(i32::MIN),
            i64::MAX,
            i64::MIN,
        ] {
            let mut out = Vec::new();
            write_i64(&mut out, v);
            assert_eq!(len_i64(v), out.len(), "{v}: length known before writing");
            let mut pos = 0;
            assert_eq!(read_i64(&out, &mut pos).unwrap(), v);
            assert_eq!(pos, out.len());
        }
    }

    #[test]
    fn refuses_truncated_and_overlong() {
        let mut pos = 0;
        assert!(read_i64(&[0x80, 0x80], &mut pos).is_err());
        let mut pos = 0;
        assert!(read_i32(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x01], &mut pos).is_err());
        let mut out = Vec::new();
        write_i64(&mut out, i64::from(i32::MAX) + 1);
        assert!(read_i32(&out, &mut 0).is_err());
    }
}
