//! Just enough request parsing to route a frame without decoding it.
//!
//! Every request header version starts with api key, api version and correlation id at fixed
//! offsets, so those are read even for API keys this build does not know. A Produce request's
//! `acks` is read by skipping the header and the transactional id, because `acks=0` produce
//! gets no response and must not enter the in-flight queue.

use kafka_protocol::messages::ApiKey;

use crate::error::{Error, Side};

/// What the proxy needs to know about a request before forwarding it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestMeta {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
}

/// Reads the fixed prefix shared by all request header versions.
pub fn peek_request(payload: &[u8]) -> Result<RequestMeta, Error> {
    if payload.len() < 8 {
        return Err(Error::ShortFrame {
            side: Side::Client,
            len: payload.len(),
            what: "request header (8 bytes)",
        });
    }
    Ok(RequestMeta {
        api_key: i16::from_be_bytes([payload[0], payload[1]]),
        api_version: i16::from_be_bytes([payload[2], payload[3]]),
        correlation_id: i32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]),
    })
}

/// Reads the correlation id every response header starts with.
pub fn peek_response_correlation(payload: &[u8]) -> Result<i32, Error> {
    match payload.get(..4) {
        Some(b) => Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]])),
        None => Err(Error::ShortFrame {
            side: Side::Upstream,
            len: payload.len(),
            what: "response header (4 bytes)",
        }),
    }
}

/// A cursor over a request that fails with a typed error instead of panicking.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    version: i16,
}

impl Cursor<'_> {
    fn malformed(&self, reason: &str) -> Error {
        Error::Malformed {
            side: Side::Client,
            api: ApiKey::Produce,
            version: self.version,
            reason: format!("{reason} at byte {}", self.pos),
        }
    }

    fn take(&mut self, n: usize) -> Result<&[u8], Error> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        match end {
            Some(end) => {
                let s = &self.buf[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(self.malformed("request ends early")),
        }
    }

    fn i16(&mut self) -> Result<i16, Error> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn uvarint(&mut self) -> Result<u64, Error> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.take(1)?[0];
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(self.malformed("varint longer than 10 bytes"))
    }

    fn skip_nullable_string(&mut self) -> Result<(), Error> {
        let len = self.i16()?;
        if len > 0 {
            self.take(len as usize)?;
        }
        Ok(())
    }

    fn skip_compact_nullable_string(&mut self) -> Result<(), Error> {
        let len_plus_one = self.uvarint()?;
        if len_plus_one > 1 {
            let len =
                usize::try_from(len_plus_one - 1).map_err(|_| self.malformed("huge string"))?;
            self.take(len)?;
        }
        Ok(())
    }

    fn skip_tagged_fields(&mut self) -> Result<(), Error> {
        for _ in 0..self.uvarint()? {
            self.uvarint()?;
            let size = usize::try_from(self.uvarint()?).map_err(|_| self.malformed("huge tag"))?;
            self.take(size)?;
        }
        Ok(())
    }
}

/// How far into a Produce request `acks` may lie: past the header and a client id and a
/// transactional id, which Kafka caps at 32,767 bytes each, with room for header tags. A request
/// whose `acks` is not within this is refused as malformed rather than buffered whole.
pub const PRODUCE_ACKS_HORIZON: usize = 128 * 1024;

/// The `acks` of a Produce request (`payload` is the frame after its length prefix).
pub fn produce_acks(payload: &[u8], version: i16) -> Result<i16, Error> {
    let header_version = ApiKey::Produce.request_header_version(version);
    let mut c = Cursor {
        buf: payload,
        pos: 8,
        version,
    };
    c.skip_nullable_string()?; // client_id is never compact, even in header v2
    if header_version >= 2 {
        c.skip_tagged_fields()?;
    }
    if version >= 3 {
        if version >= 9 {
            c.skip_compact_nullable_string()?;
        } else {
            c.skip_nullable_string()?;
        }
    }
    c.i16()
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use kafka_protocol::{
        messages::{ProduceRequest, RequestHeader, TransactionalId},
        protocol::{Encodable, StrBytes, encode_request_header_into_buffer},
    };

    use super::*;

    fn produce(version: i16, acks: i16, txn: Option<&'static str>) -> BytesMut {
        let mut header = RequestHeader::default();
        header.request_api_key = ApiKey::Produce as i16;
        header.request_api_version = version;
        header.correlation_id = 42;
        header.client_id = Some(StrBytes::from_static_str("client-1"));
        let mut body = ProduceRequest::default();
        body.acks = acks;
        body.timeout_ms = 1000;
        body.transactional_id = txn.map(|t| TransactionalId(StrBytes::from_static_str(t)));
        let mut buf = BytesMut::new();
        encode_request_header_into_buffer(&mut buf, &header).unwrap();
        body.encode(&mut buf, version).unwrap();
        buf
    }

    #[test]
    fn reads_acks_across_header_and_body_versions() {
        for version in 3..=13 {
            for acks in [0, 1, -1] {
                for txn in [None, Some("txn-a")] {
                    let buf = produce(version, acks, txn);
                    assert_eq!(
                        produce_acks(&buf, version).unwrap(),
                        acks,
                        "v{version} {txn:?}"
                    );
                    let meta = peek_request(&buf).unwrap();
                    assert_eq!(meta.correlation_id, 42);
                    assert_eq!(meta.api_version, version);
                }
            }
        }
    }

    #[test]
    fn truncated_produce_is_a_typed_error() {
        let buf = produce(9, 1, Some("txn"));
        let first_complete = (0..buf.len())
            .find(|&cut| produce_acks(&buf[..cut], 9).is_ok())
            .expect("the whole request parses");
        assert!(
            first_complete > 8,
            "acks sits after header and transactional id"
        );
        for cut in 0..first_complete {
            match produce_acks(&buf[..cut], 9) {
                Err(Error::Malformed { .. }) => {}
                other => panic!("cut at {cut}: {other:?}"),
            }
        }
        assert_eq!(produce_acks(&buf[..first_complete], 9).unwrap(), 1);
        assert!(matches!(
            peek_request(&[0, 0, 0]),
            Err(Error::ShortFrame { .. })
        ));
    }
}
