//! Every message wire-guard decodes, fed random and mutated bytes: decoding ends in a value or a
//! typed error, never a panic or an abort. The proxy decodes broker responses that carry
//! addresses or versions, and SASL requests from clients; a crafted length prefix in any of them
//! must not size an allocation.
//!
//! Runs a bounded number of rounds per message by default; set `WIRE_GUARD_FUZZ_ROUNDS` for a
//! longer run (for example `WIRE_GUARD_FUZZ_ROUNDS=200000 cargo test -p wire-guard --release
//! --test decode_fuzz`).

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::{
    messages::{
        ApiKey, ApiVersionsResponse, BrokerId, DescribeClusterResponse, DescribeConfigsResponse,
        FindCoordinatorResponse, MetadataResponse, ResponseHeader, SaslAuthenticateResponse,
        api_versions_response::ApiVersion,
        describe_cluster_response::DescribeClusterBroker,
        describe_configs_response::{
            DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
        },
        find_coordinator_response::Coordinator,
        metadata_response::{
            MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
        },
    },
    protocol::{Decodable, Encodable, StrBytes},
};
use wire_guard::{
    Error,
    codec::{decode_response, encode_response},
    frame::Frame,
};

/// A small xorshift generator: the same seed gives the same inputs, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn rounds() -> usize {
    std::env::var("WIRE_GUARD_FUZZ_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_500)
}

/// Length prefixes an attacker would pick: the largest counts each encoding can express.
const HOSTILE: &[&[u8]] = &[
    &[0x7f, 0xff, 0xff, 0xff],
    &[0x40, 0x00, 0x00, 0x00],
    &[0xff, 0xff, 0xff, 0x0f],
    &[0xfe, 0xff, 0xff, 0xff, 0x0f],
    &[0x80, 0x80, 0x80, 0x80, 0x08],
    &[0xff, 0xff],
];

/// One mutation of a valid frame payload.
fn mutate(rng: &mut Rng, valid: &[u8]) -> Vec<u8> {
    let mut bytes = valid.to_vec();
    for _ in 0..=rng.below(3) {
        if bytes.is_empty() {
            break;
        }
        let at = rng.below(bytes.len());
        match rng.below(5) {
            0 => bytes[at] ^= 1 << rng.below(8),
            1 => bytes[at] = rng.next() as u8,
            2 => {
                let hostile = HOSTILE[rng.below(HOSTILE.len())];
                for (i, b) in hostile.iter().enumerate() {
                    if let Some(slot) = bytes.get_mut(at + i) {
                        *slot = *b;
                    }
                }
            }
            3 => bytes.truncate(at),
            _ => {
                let extra: Vec<u8> = (0..rng.below(16)).map(|_| rng.next() as u8).collect();
                bytes.splice(at..at, extra);
            }
        }
    }
    bytes
}

fn frame_of(payload: &[u8]) -> Frame {
    let mut buf = BytesMut::with_capacity(payload.len() + 4);
    buf.put_i32(payload.len() as i32);
    buf.put_slice(payload);
    Frame::from_wire(buf.freeze())
}

/// Fuzzes the decoding of `M` at every version this build decodes, starting from `sample`'s
/// value for that version.
fn fuzz<M: Decodable + Encodable>(key: ApiKey, sample: impl Fn(i16) -> M, seed: u64) {
    let mut rng = Rng(seed);
    let versions = key.valid_versions();
    let mut header = ResponseHeader::default();
    header.correlation_id = 42;
    for version in versions.min..=versions.max {
        let valid = encode_response(&header, &sample(version), key, version, 256)
            .unwrap_or_else(|e| panic!("{key:?} v{version} sample does not encode: {e}"));
        let decoded: Result<M, Error> = decode_response(&valid, key, version);
        assert!(decoded.is_ok(), "{key:?} v{version}: valid sample refused");
        for _ in 0..rounds() {
            let input = if rng.below(8) == 0 {
                (0..rng.below(128)).map(|_| rng.next() as u8).collect()
            } else {
                mutate(&mut rng, &valid.payload())
            };
            let _: Result<M, Error> = decode_response(&frame_of(&input), key, version);
        }
    }
}

fn s(text: &'static str) -> StrBytes {
    StrBytes::from_static_str(text)
}

#[test]
fn metadata_responses() {
    let mut r = MetadataResponse::default();
    for id in [1, 2] {
        let mut b = MetadataResponseBroker::default();
        b.node_id = BrokerId(id);
        b.host = s("broker.internal");
        b.port = 9092;
        b.rack = Some(s("rack-a"));
        r.brokers.push(b);
    }
    let mut topic = MetadataResponseTopic::default();
    topic.name = Some(s("payments").into());
    let mut p = MetadataResponsePartition::default();
    p.replica_nodes = vec![BrokerId(1), BrokerId(2)];
    p.isr_nodes = vec![BrokerId(1)];
    topic.partitions = vec![p.clone(), p];
    r.topics.push(topic);
    fuzz(ApiKey::Metadata, |_| r.clone(), 0x9e37_79b9_7f4a_7c15);
}

#[test]
fn api_versions_responses() {
    let mut r = ApiVersionsResponse::default();
    for key in 0..20 {
        let mut v = ApiVersion::default();
        v.api_key = key;
        v.max_version = 9;
        r.api_keys.push(v);
    }
    fuzz(ApiKey::ApiVersions, |_| r.clone(), 0x2545_f491_4f6c_dd1d);
}

#[test]
fn find_coordinator_responses() {
    // Before v4 one coordinator is answered in top-level fields, from v4 a batch of them.
    let sample = |version: i16| {
        let mut r = FindCoordinatorResponse::default();
        if version < 4 {
            r.node_id = BrokerId(1);
            r.host = s("broker.internal");
            r.port = 9092;
            return r;
        }
        for id in [1, 2, 3] {
            let mut c = Coordinator::default();
            c.key = s("group");
            c.node_id = BrokerId(id);
            c.host = s("broker.internal");
            c.port = 9092;
            r.coordinators.push(c);
        }
        r
    };
    fuzz(ApiKey::FindCoordinator, sample, 0x1234_5678_9abc_def1);
}

#[test]
fn describe_cluster_responses() {
    let mut r = DescribeClusterResponse::default();
    r.cluster_id = s("cluster");
    for id in [1, 2] {
        let mut b = DescribeClusterBroker::default();
        b.broker_id = BrokerId(id);
        b.host = s("broker.internal");
        b.port = 9092;
        r.brokers.push(b);
    }
    fuzz(
        ApiKey::DescribeCluster,
        |_| r.clone(),
        0x0f0f_1234_dead_beef,
    );
}

#[test]
fn describe_configs_responses() {
    let mut r = DescribeConfigsResponse::default();
    let mut result = DescribeConfigsResult::default();
    result.resource_name = s("1");
    for (name, value) in [
        ("advertised.listeners", "PLAINTEXT://b1:9092"),
        ("log.retention.ms", "1"),
    ] {
        let mut c = DescribeConfigsResourceResult::default();
        c.name = s(name);
        c.value = Some(s(value));
        let mut synonym = DescribeConfigsSynonym::default();
        synonym.name = s(name);
        c.synonyms.push(synonym);
        result.configs.push(c);
    }
    r.results.push(result);
    fuzz(
        ApiKey::DescribeConfigs,
        |_| r.clone(),
        0x7777_1111_9999_2222,
    );
}

#[test]
fn sasl_authenticate_responses() {
    let mut r = SaslAuthenticateResponse::default();
    r.auth_bytes = Bytes::from_static(b"v=c2lnbmF0dXJl");
    fuzz(
        ApiKey::SaslAuthenticate,
        |_| r.clone(),
        0x5555_aaaa_3333_cccc,
    );
}

/// The case that once aborted the process: a Produce response read as a Metadata v0 response,
/// its topic-name bytes taken for an array count of about two billion brokers.
#[test]
fn a_huge_array_count_is_a_malformed_response_not_an_allocation() {
    let mut payload = 5i32.to_be_bytes().to_vec(); // correlation id
    payload.extend_from_slice(&0x7fff_ffffi32.to_be_bytes()); // brokers: i32::MAX of them
    payload.extend_from_slice(b"payments-topic");
    let result: Result<MetadataResponse, Error> =
        decode_response(&frame_of(&payload), ApiKey::Metadata, 0);
    match result {
        Err(Error::Malformed { reason, .. }) => {
            assert!(reason.contains("exceeds"), "{reason}")
        }
        other => panic!("expected a malformed response, got {other:?}"),
    }
    // Flexible versions count with an unsigned varint.
    let mut payload = 5i32.to_be_bytes().to_vec();
    payload.push(0); // header tagged fields
    payload.extend_from_slice(&0i32.to_be_bytes()); // throttle time
    payload.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x07]);
    let result: Result<MetadataResponse, Error> =
        decode_response(&frame_of(&payload), ApiKey::Metadata, 12);
    assert!(matches!(result, Err(Error::Malformed { .. })), "{result:?}");
}
