//! Bad input closes only the offending connection, with a log line that says why.

use integration_tests::{broker, client, proxy::Process, raw::RawClient, tansu::Tansu};
use kafka_protocol::{
    messages::{
        ApiKey, MetadataRequest, MetadataResponse, ProduceRequest, TopicName,
        produce_request::TopicProduceData,
    },
    protocol::StrBytes,
};
use tokio::io::AsyncWriteExt;

/// A request header for `api_key` with no body.
fn bare_request(api_key: i16) -> Vec<u8> {
    let mut payload = Vec::new();
    payload.extend_from_slice(&api_key.to_be_bytes());
    payload.extend_from_slice(&0i16.to_be_bytes());
    payload.extend_from_slice(&5i32.to_be_bytes());
    payload.extend_from_slice(&(-1i16).to_be_bytes());
    let mut frame = (payload.len() as i32).to_be_bytes().to_vec();
    frame.extend(payload);
    frame
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_close_only_their_connection_with_a_clear_log_line() -> anyhow::Result<()>
{
    let logs = tempfile::tempdir()?;
    let proxy = Process::start(
        &broker::shared().endpoint(),
        &["--max-frame-bytes", "1048576"],
        logs.path(),
    )
    .await?;

    // A connection opened before the bad ones, used between each of them.
    let mut healthy = RawClient::connect(proxy.addr).await?;
    let _: MetadataResponse = healthy
        .call(ApiKey::Metadata, 4, &MetadataRequest::default())
        .await?;

    let mut truncated = vec![0, 0, 0, 100];
    truncated.extend_from_slice(&[1; 10]);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "garbage",
            vec![0, 0, 0, 5, 0xde, 0xad, 0xbe, 0xef, 0x01],
            "too short for a request header",
        ),
        (
            "negative length",
            vec![0xff, 0xff, 0xff, 0xf0, 1, 2, 3],
            "negative frame length",
        ),
        (
            "oversized",
            vec![0x00, 0x20, 0x00, 0x00],
            "announced a 2097152-byte frame, over the 1048576-byte limit",
        ),
        (
            "truncated",
            truncated,
            "closed the connection mid-frame (10 of 100 bytes received)",
        ),
        (
            "unknown api key",
            bare_request(32_000),
            "unanswered; the oldest was api key 32000 v0",
        ),
    ];
    for (name, bytes, expected) in cases {
        let mut bad = RawClient::connect(proxy.addr).await?;
        bad.stream.write_all(&bytes).await?;
        if name == "truncated" {
            bad.stream.shutdown().await?;
        }
        assert!(bad.closed_by_peer().await, "{name}: connection left open");
        let line = proxy
            .wait_for_log(&["closing connection", expected])
            .await?;
        assert!(line.contains("\"level\":\"WARN\""), "{name}: {line}");

        let r: MetadataResponse = healthy
            .call(ApiKey::Metadata, 4, &MetadataRequest::default())
            .await?;
        assert!(!r.brokers.is_empty(), "{name}: healthy connection broken");
    }

    // A real client on the same proxy is unaffected.
    let result = client::scenario("confluent", &proxy.bootstrap(), "roundtrip", &[]).await?;
    assert_eq!(result["ok"], true);
    Ok(())
}

/// Tansu answers `acks=0` produce requests. A client that reuses the produce's correlation id for
/// a Metadata request once had that answer decoded as Metadata, its bytes read as an array
/// count, and the whole process aborted on the allocation. The reuse itself is now refused:
/// that connection closes, the proxy and its other clients carry on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_correlation_id_reused_while_in_flight_closes_only_that_connection() -> anyhow::Result<()>
{
    let broker = Tansu::start().await?;
    let logs = tempfile::tempdir()?;
    let proxy = Process::start(&broker.endpoint(), &[], logs.path()).await?;
    let mut healthy = RawClient::connect(proxy.addr).await?;

    let mut attacker = RawClient::connect(proxy.addr).await?;
    let mut produce = ProduceRequest::default();
    produce.acks = 0;
    produce.timeout_ms = 1000;
    let mut topic = TopicProduceData::default();
    topic.name = TopicName(StrBytes::from_static_str("reused-correlation-ids"));
    produce.topic_data.push(topic);
    attacker.send(ApiKey::Produce, 3, 5, &produce).await?;
    attacker
        .send(ApiKey::Metadata, 0, 5, &MetadataRequest::default())
        .await?;
    assert!(attacker.closed_by_peer().await, "connection left open");
    let line = proxy
        .wait_for_log(&["closing connection", "reused correlation id 5"])
        .await?;
    assert!(line.contains("\"level\":\"WARN\""), "{line}");

    let r: MetadataResponse = healthy
        .call(ApiKey::Metadata, 4, &MetadataRequest::default())
        .await?;
    assert!(!r.brokers.is_empty(), "the proxy stopped serving");
    Ok(())
}
