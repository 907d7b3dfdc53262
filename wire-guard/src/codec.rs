//! Decoding a request or response the proxy must read or change, and encoding it back into a
//! frame.

use bytes::Bytes;
use kafka_protocol::{
    messages::{ApiKey, RequestHeader, ResponseHeader},
    protocol::{Decodable, Encodable},
};

use crate::{
    error::{Error, Side},
    frame::{self, Frame},
};

fn malformed(key: ApiKey, version: i16) -> impl Fn(anyhow::Error) -> Error {
    move |e| Error::Malformed {
        side: Side::Upstream,
        api: key,
        version,
        reason: e.to_string(),
    }
}

/// Decodes a response body (header skipped) without changing anything.
pub fn decode_response<M: Decodable>(frame: &Frame, key: ApiKey, version: i16) -> Result<M, Error> {
    let mut buf: Bytes = frame.payload();
    ResponseHeader::decode(&mut buf, key.response_header_version(version))
        .map_err(malformed(key, version))?;
    M::decode(&mut buf, version).map_err(malformed(key, version))
}

/// Decodes a response, lets `edit` change it, and encodes it back with the same header.
/// Decodes a response frame's header and body.
pub fn decode_response_with_header<M: Decodable>(
    frame: &Frame,
    key: ApiKey,
    version: i16,
) -> Result<(ResponseHeader, M), Error> {
    let mut buf: Bytes = frame.payload();
    let header = ResponseHeader::decode(&mut buf, key.response_header_version(version))
        .map_err(malformed(key, version))?;
    let body = M::decode(&mut buf, version).map_err(malformed(key, version))?;
    Ok((header, body))
}

pub fn transcode<M: Decodable + Encodable>(
    frame: &Frame,
    key: ApiKey,
    version: i16,
    edit: impl FnOnce(&mut M) -> Result<(), Error>,
) -> Result<Frame, Error> {
    let header_version = key.response_header_version(version);
    let mut buf: Bytes = frame.payload();
    let header =
        ResponseHeader::decode(&mut buf, header_version).map_err(malformed(key, version))?;
    let mut body = M::decode(&mut buf, version).map_err(malformed(key, version))?;
    edit(&mut body)?;
    encode_response(&header, &body, key, version, frame.len())
}

/// Encodes a response header and body into a frame.
pub fn encode_response<M: Encodable>(
    header: &ResponseHeader,
    body: &M,
    key: ApiKey,
    version: i16,
    size_hint: usize,
) -> Result<Frame, Error> {
    let header_version = key.response_header_version(version);
    frame::build(encoded_size(body, version, size_hint), |buf| {
        header.encode(buf, header_version)?;
        body.encode(buf, version)
    })
    .map_err(|e| Error::Malformed {
        side: Side::Upstream,
        api: key,
        version,
        reason: format!("cannot re-encode: {e}"),
    })
}

/// The buffer to reserve for `body` and its header: a message rewritten larger than it came
/// (protected fields) would otherwise be copied again as the buffer grows.
fn encoded_size<M: Encodable>(body: &M, version: i16, size_hint: usize) -> usize {
    // Headers are a few dozen bytes; a longer one (a long client id) only grows the buffer.
    const HEADER_ROOM: usize = 256;
    body.compute_size(version)
        .map_or(size_hint, |size| size.saturating_add(HEADER_ROOM))
}

/// Decodes a client's request: its header and body.
pub fn decode_request<M: Decodable>(
    frame: &Frame,
    key: ApiKey,
    version: i16,
) -> Result<(RequestHeader, M), Error> {
    let client = |e: anyhow::Error| Error::Malformed {
        side: Side::Client,
        api: key,
        version,
        reason: e.to_string(),
    };
    let mut buf: Bytes = frame.payload();
    let header =
        RequestHeader::decode(&mut buf, key.request_header_version(version)).map_err(client)?;
    let body = M::decode(&mut buf, version).map_err(client)?;
    Ok((header, body))
}

/// Encodes a request header and body into a frame.
pub fn encode_request<M: Encodable>(
    header: &RequestHeader,
    body: &M,
    key: ApiKey,
    version: i16,
    size_hint: usize,
) -> Result<Frame, Error> {
    frame::build(encoded_size(body, version, size_hint), |buf| {
        header.encode(buf, key.request_header_version(version))?;
        body.encode(buf, version)
    })
    .map_err(|e| Error::Malformed {
        side: Side::Client,
        api: key,
        version,
        reason: format!("cannot re-encode: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use kafka_protocol::{
        messages::{MetadataResponse, metadata_response::MetadataResponseBroker},
        protocol::StrBytes,
    };

    use super::*;

    #[test]
    fn transcode_round_trips_and_applies_the_edit_across_versions() {
        for version in 0..=13 {
            let mut header = ResponseHeader::default();
            header.correlation_id = 7;
            let mut body = MetadataResponse::default();
            let mut broker = MetadataResponseBroker::default();
            broker.host = StrBytes::from_static_str("upstream-host");
            broker.port = 9092;
            body.brokers.push(broker);
            let original = encode_response(&header, &body, ApiKey::Metadata, version, 64).unwrap();
            let edited = transcode::<MetadataResponse>(&original, ApiKey::Metadata, version, |m| {
                m.brokers[0].host = StrBytes::from_static_str("proxy");
                Ok(())
            })
            .unwrap();
            let back: MetadataResponse =
                decode_response(&edited, ApiKey::Metadata, version).unwrap();
            assert_eq!(&*back.brokers[0].host, "proxy", "v{version}");
            assert_eq!(back.brokers[0].port, 9092);
            assert_eq!(&edited.payload()[..4], &7i32.to_be_bytes());
        }
    }

    #[test]
    fn truncated_response_is_malformed_not_a_panic() {
        let header = ResponseHeader::default();
        let mut body = MetadataResponse::default();
        body.brokers.push(MetadataResponseBroker::default());
        let whole = encode_response(&header, &body, ApiKey::Metadata, 12, 64).unwrap();
        for cut in 4..whole.len() {
            let mut bytes = whole.wire().slice(..cut).to_vec();
            bytes[..4].copy_from_slice(&((cut - 4) as i32).to_be_bytes());
            let frame = Frame::from_wire(bytes.into());
            let result = decode_response::<MetadataResponse>(&frame, ApiKey::Metadata, 12);
            assert!(
                matches!(result, Err(Error::Malformed { .. })),
                "cut at {cut}"
            );
        }
    }
}
