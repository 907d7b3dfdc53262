//! Hostile clients and a silent broker against the real binary: the process survives, its memory
//! stays bounded, nothing leaks, and other clients keep being served.

use std::{
    net::{IpAddr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use integration_tests::{
    broker::{self, Endpoint, KAFKA_NODE_ID},
    client,
    proxy::Process,
    raw::RawClient,
};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, MetadataRequest, MetadataResponse, ProduceRequest, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
};

/// The value of one sample in a Prometheus exposition (0 when absent).
fn metric(text: &str, sample: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(sample))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Polls `check` every 100 ms for up to 30 s.
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> anyhow::Result<bool>) {
    for _ in 0..300 {
        if check().await.unwrap_or(false) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("not within 30 s: {what}");
}

async fn connect_from(ip: &str, to: SocketAddr) -> anyhow::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(ip.parse::<IpAddr>()?, 0))?;
    Ok(socket.connect(to).await?)
}

/// True once the peer has closed (end of stream or reset), within `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 64];
    loop {
        match tokio::time::timeout(limit, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

fn open_fds(pid_status: &Process) -> anyhow::Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{}/fd", pid_status.pid()))?.count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_cost_no_broker_connection_and_are_closed() -> anyhow::Result<()> {
    let logs = tempfile::tempdir()?;
    let proxy = Process::start(
        &broker::shared().endpoint(),
        // All from one address; the per-IP cap has its own test.
        &["--max-connections-per-ip", "5000"],
        logs.path(),
    )
    .await?;
    let fds_before = open_fds(&proxy)?;
    let rss_before = proxy.rss_bytes()?;
    let mut idle = Vec::new();
    for _ in 0..2000 {
        idle.push(TcpStream::connect(proxy.addr).await?);
    }
    eventually("2000 connections accepted", async || {
        Ok(metric(&proxy.metrics().await?, "wire_guard_connections_active") >= 2000.0)
    })
    .await;
    // One descriptor per client: none of them made the proxy open a broker connection.
    let fds = open_fds(&proxy)?;
    assert!(
        fds < fds_before + 2000 + 50,
        "{fds} descriptors for 2000 silent clients (from {fds_before})"
    );
    let rss = proxy.rss_bytes()?;
    assert!(
        rss < rss_before + 48 * 1024 * 1024,
        "2000 silent connections took RSS from {rss_before} to {rss} bytes"
    );
    // A real client is served beside them.
    let result = client::scenario("confluent", &proxy.bootstrap(), "roundtrip", &[]).await?;
    assert_eq!(result["ok"], true);

    // Each silent connection is closed once the first-request timeout (10 s) passes.
    for stream in &mut idle {
        assert!(closed_within(stream, Duration::from_secs(30)).await);
    }
    eventually(
        "silent connections counted as client timeouts",
        async || {
            let m = proxy.metrics().await?;
            Ok(metric(
                &m,
                "wire_guard_connection_errors_total{cause=\"timeout\",side=\"client\"}",
            ) >= 2000.0
                && metric(&m, "wire_guard_connections_active") == 0.0)
        },
    )
    .await;
    proxy
        .wait_for_log(&["closing connection", "client sent no request within 10s"])
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_caps_refuse_the_excess_per_ip_and_in_total() -> anyhow::Result<()> {
    let logs = tempfile::tempdir()?;
    let mut proxy = Process::start(
        &broker::shared().endpoint(),
        // Held connections send nothing: keep them past the first-request timeout, however
        // slowly a busy machine gets through opening them.
        &[
            "--max-connections",
            "45",
            "--max-connections-per-ip",
            "20",
            "--first-request-timeout-secs",
            "300",
        ],
        logs.path(),
    )
    .await?;
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(connect_from("127.0.0.1", proxy.addr).await?);
    }
    let mut over_ip = connect_from("127.0.0.1", proxy.addr).await?;
    assert!(closed_within(&mut over_ip, Duration::from_secs(10)).await);
    for _ in 0..20 {
        held.push(connect_from("127.0.0.2", proxy.addr).await?);
    }
    for _ in 0..5 {
        held.push(connect_from("127.0.0.3", proxy.addr).await?);
    }
    eventually("45 connections accepted", async || {
        Ok(metric(&proxy.metrics().await?, "wire_guard_connections_active") >= 45.0)
    })
    .await;
    let mut over_total = connect_from("127.0.0.4", proxy.addr).await?;
    assert!(closed_within(&mut over_total, Duration::from_secs(10)).await);
    let m = proxy.metrics().await?;
    for limit in ["max_connections", "max_connections_per_ip"] {
        let sample = format!("wire_guard_connections_refused_total{{limit=\"{limit}\"}}");
        assert_eq!(metric(&m, &sample), 1.0, "{limit}:\n{m}");
    }
    assert!(proxy.is_running());

    // Places are given back as connections close.
    held.truncate(10);
    eventually("closed connections freed", async || {
        Ok(metric(&proxy.metrics().await?, "wire_guard_connections_active") <= 10.0)
    })
    .await;
    let result = client::scenario("confluent", &proxy.bootstrap(), "roundtrip", &[]).await?;
    assert_eq!(result["ok"], true);
    Ok(())
}

/// A request header announcing a body of `len` bytes, followed by `body` (the rest withheld).
fn frame_head(api_key: ApiKey, version: i16, len: usize, body: &[u8]) -> Vec<u8> {
    let mut out = (len as i32).to_be_bytes().to_vec();
    out.extend_from_slice(&(api_key as i16).to_be_bytes());
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(&9i32.to_be_bytes());
    out.extend_from_slice(&(-1i16).to_be_bytes());
    out.extend_from_slice(body);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_large_frames_before_authentication_hold_no_memory() -> anyhow::Result<()> {
    let logs = tempfile::tempdir()?;
    let proxy = Process::start(
        &broker::shared().endpoint(),
        &["--max-frame-bytes", "104857600"],
        logs.path(),
    )
    .await?;
    let rss_before = proxy.rss_bytes()?;
    let chunk = vec![0x41u8; 1024 * 1024];

    // SaslAuthenticate frames just under the frame limit are over Kafka's SASL limit: refused
    // as soon as their length is known.
    let mut sasl = Vec::new();
    for _ in 0..8 {
        let mut s = TcpStream::connect(proxy.addr).await?;
        s.write_all(&frame_head(ApiKey::SaslAuthenticate, 1, 90 << 20, &[]))
            .await?;
        let _ = s.write_all(&chunk).await;
        sasl.push(s);
    }
    for s in &mut sasl {
        assert!(closed_within(s, Duration::from_secs(10)).await);
    }
    proxy
        .wait_for_log(&["closing connection", "over the 524288-byte limit"])
        .await?;

    // A Produce whose acks lies behind a long transactional id is streamed, not held whole.
    let mut request = ProduceRequest::default();
    request.transactional_id = Some(TransactionalId(StrBytes::from_string("t".repeat(20_000))));
    request.acks = -1;
    let mut body = bytes::BytesMut::new();
    kafka_protocol::protocol::Encodable::encode(&request, &mut body, 3)?;
    let mut produce = Vec::new();
    for _ in 0..8 {
        let mut s = TcpStream::connect(proxy.addr).await?;
        s.write_all(&frame_head(
            ApiKey::Produce,
            3,
            90 << 20,
            &body[..body.len() - 8],
        ))
        .await?;
        for _ in 0..4 {
            s.write_all(&chunk).await?;
        }
        produce.push(s);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss = proxy.rss_bytes()?;
    assert!(
        rss < rss_before + 64 * 1024 * 1024,
        "stalled frames took RSS from {rss_before} to {rss} bytes"
    );
    let m = proxy.metrics().await?;
    assert_eq!(metric(&m, "wire_guard_buffered_bytes"), 0.0, "{m}");
    let mut healthy = RawClient::connect(proxy.addr).await?;
    let r: MetadataResponse = healthy
        .call(ApiKey::Metadata, 4, &MetadataRequest::default())
        .await?;
    assert!(!r.brokers.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_clients_are_closed() -> anyhow::Result<()> {
    let logs = tempfile::tempdir()?;
    let proxy = Process::start(
        &broker::shared().endpoint(),
        &["--frame-timeout-secs", "2", "--idle-timeout-secs", "2"],
        logs.path(),
    )
    .await?;
    // One byte a second never finishes a frame.
    let mut slow = TcpStream::connect(proxy.addr).await?;
    let frame = frame_head(ApiKey::Metadata, 4, 100, &[0; 8]);
    let dripping = async {
        for byte in &frame {
            if slow.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), dripping).await?;
    assert!(closed_within(&mut slow, Duration::from_secs(10)).await);
    proxy
        .wait_for_log(&["closing connection", "client did not finish"])
        .await?;

    // A connection that was answered and then says nothing is closed as idle, quietly.
    let mut idle = RawClient::connect(proxy.addr).await?;
    let _: MetadataResponse = idle
        .call(ApiKey::Metadata, 4, &MetadataRequest::default())
        .await?;
    assert!(closed_within(&mut idle.stream, Duration::from_secs(10)).await);
    let log = std::fs::read_to_string(&proxy.log)?;
    assert!(
        !log.lines()
            .any(|l| l.contains("idle") && l.contains("WARN")),
        "an idle close is not a warning:\n{log}"
    );
    Ok(())
}

/// An upstream that accepts connections and reads requests but never answers; counts the
/// connections it holds open.
async fn silent_broker() -> anyhow::Result<(SocketAddr, Arc<AtomicUsize>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let open = Arc::new(AtomicUsize::new(0));
    let counter = open.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let counter = counter.clone();
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut sink = [0u8; 4096];
                while matches!(s.read(&mut sink).await, Ok(n) if n > 0) {}
                counter.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    Ok((addr, open))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_broker_gets_clients_closed_in_time_and_leaks_nothing() -> anyhow::Result<()> {
    let (addr, broker_side) = silent_broker().await?;
    let upstream = Endpoint {
        bootstrap: addr.to_string(),
        node_id: KAFKA_NODE_ID,
    };
    let logs = tempfile::tempdir()?;
    let proxy = Process::start(&upstream, &["--request-timeout-secs", "2"], logs.path()).await?;

    // A client waiting for an answer is closed once the request timeout passes.
    let mut waiting = RawClient::connect(proxy.addr).await?;
    waiting
        .send(ApiKey::ApiVersions, 3, 1, &ApiVersionsRequest::default())
        .await?;
    assert!(closed_within(&mut waiting.stream, Duration::from_secs(15)).await);
    proxy
        .wait_for_log(&[
            "closing connection",
            "upstream did not answer ApiVersions v3 (correlation id 1) within 2s",
            "\"blame\":\"broker\"",
        ])
        .await?;

    // Clients that send a request and leave: their broker connections are closed too.
    for _ in 0..200 {
        let mut c = RawClient::connect(proxy.addr).await?;
        c.send(ApiKey::Metadata, 4, 7, &MetadataRequest::default())
            .await?;
    }
    eventually("every connection released", async || {
        let active = metric(&proxy.metrics().await?, "wire_guard_connections_active");
        Ok(active == 0.0 && broker_side.load(Ordering::SeqCst) == 0)
    })
    .await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_whether_a_broker_can_be_reached() -> anyhow::Result<()> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    drop(listener);
    let upstream = Endpoint {
        bootstrap: addr.to_string(),
        node_id: KAFKA_NODE_ID,
    };
    let logs = tempfile::tempdir()?;
    let proxy = Process::start(&upstream, &[], logs.path()).await?;
    let ready = async || -> anyhow::Result<u16> {
        Ok(reqwest::get(format!("http://{}/readyz", proxy.admin))
            .await?
            .status()
            .as_u16())
    };
    eventually("not ready while nothing listens upstream", async || {
        Ok(ready().await? == 503)
    })
    .await;
    let _broker = tokio::net::TcpListener::bind(addr).await?;
    eventually("ready once the broker listens", async || {
        Ok(ready().await? == 200)
    })
    .await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_for_versions_the_client_was_not_offered_are_refused() -> anyhow::Result<()> {
    let logs = tempfile::tempdir()?;
    let proxy = Process::start(&broker::shared().endpoint(), &[], logs.path()).await?;
    let mut client = RawClient::connect(proxy.addr).await?;
    let _: kafka_protocol::messages::ApiVersionsResponse = client
        .call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default())
        .await?;
    // ShareFetch is never advertised (its answers carry broker addresses).
    client
        .stream
        .write_all(&frame_head(ApiKey::ShareFetch, 0, 10, &[]))
        .await?;
    assert!(client.closed_by_peer().await);
    proxy
        .wait_for_log(&[
            "closing connection",
            "did not advertise",
            "\"blame\":\"client\"",
        ])
        .await?;
    Ok(())
}

/// A broker (or anything at the broker's address) that answers every request with a response
/// whose first array claims two billion elements: the proxy's startup discovery and a client's
/// Metadata request both decode it. Once that aborted the process on the allocation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_announcing_absurd_array_lengths_cannot_take_the_proxy_down() -> anyhow::Result<()>
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                loop {
                    let Ok(len) = s.read_i32().await else { return };
                    let mut request = vec![0u8; len.clamp(0, 1 << 20) as usize];
                    if s.read_exact(&mut request).await.is_err() {
                        return;
                    }
                    let mut answer = request[4..8].to_vec(); // correlation id
                    answer.extend_from_slice(&0i32.to_be_bytes()); // throttle time
                    answer.extend_from_slice(&0x7fff_ffffi32.to_be_bytes()); // brokers
                    answer.extend_from_slice(b"payments-topic");
                    let mut frame = (answer.len() as i32).to_be_bytes().to_vec();
                    frame.extend(answer);
                    if s.write_all(&frame).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let upstream = Endpoint {
        bootstrap: addr.to_string(),
        node_id: KAFKA_NODE_ID,
    };
    let logs = tempfile::tempdir()?;
    let mut proxy = Process::start(&upstream, &[], logs.path()).await?;
    let mut client = RawClient::connect(proxy.addr).await?;
    client
        .send(ApiKey::Metadata, 4, 3, &MetadataRequest::default())
        .await?;
    assert!(client.closed_by_peer().await);
    proxy
        .wait_for_log(&[
            "closing connection",
            "\"blame\":\"broker\"",
            "malformed Metadata v4",
            "exceeds",
        ])
        .await?;
    assert!(proxy.is_running(), "the process died");
    let m = proxy.metrics().await?;
    assert!(m.contains("wire_guard_connections_active 0"), "{m}");
    Ok(())
}
