//! Protocol behaviour checked with a raw client: address rewriting, version narrowing,
//! ordering, `acks=0`, and graceful shutdown.

use bytes::Buf;
use integration_tests::{
    broker::{self, Endpoint, KAFKA_NODE_ID},
    proxy::InProcess,
    raw::RawClient,
};
use kafka_protocol::{
    ResponseError,
    messages::{
        ApiKey, ApiVersionsRequest, ApiVersionsResponse, DescribeClusterRequest,
        DescribeClusterResponse, DescribeConfigsRequest, DescribeConfigsResponse,
        FindCoordinatorRequest, FindCoordinatorResponse, MetadataRequest, MetadataResponse,
        ProduceRequest, describe_configs_request::DescribeConfigsResource,
    },
    protocol::{Decodable, StrBytes},
};

fn api_versions_request() -> ApiVersionsRequest {
    let mut r = ApiVersionsRequest::default();
    r.client_software_name = StrBytes::from_static_str("raw-test");
    r.client_software_version = StrBytes::from_static_str("1.0");
    r
}

async fn advertised(client: &mut RawClient, key: ApiKey) -> anyhow::Result<Option<(i16, i16)>> {
    let r: ApiVersionsResponse = client
        .call(ApiKey::ApiVersions, 3, &api_versions_request())
        .await?;
    Ok(r.api_keys
        .iter()
        .find(|k| k.api_key == key as i16)
        .map(|k| (k.min_version, k.max_version)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_coordinator_and_cluster_responses_carry_only_proxy_addresses()
-> anyhow::Result<()> {
    let proxy = InProcess::start(&broker::shared().endpoint(), |c| {
        c.advertised_host = "localhost".into()
    })
    .await?;
    let proxy_port = i32::from(proxy.broker_port()?);
    let mut client = RawClient::connect(proxy.addr).await?;

    let metadata_max = advertised(&mut client, ApiKey::Metadata)
        .await?
        .expect("Metadata advertised")
        .1;
    for version in [1, 4, 9, metadata_max] {
        let mut req = MetadataRequest::default();
        req.topics = None;
        let r: MetadataResponse = client.call(ApiKey::Metadata, version, &req).await?;
        assert!(!r.brokers.is_empty());
        for b in &r.brokers {
            assert_eq!(
                (&*b.host, b.port),
                ("localhost", proxy_port),
                "Metadata v{version}"
            );
        }
    }

    let mut old = FindCoordinatorRequest::default();
    old.key = StrBytes::from_static_str("group-a");
    // Kafka answers COORDINATOR_NOT_AVAILABLE until its offsets topic exists.
    let mut r: FindCoordinatorResponse = client.call(ApiKey::FindCoordinator, 3, &old).await?;
    for _ in 0..100 {
        if r.error_code != ResponseError::CoordinatorNotAvailable.code() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        r = client.call(ApiKey::FindCoordinator, 3, &old).await?;
    }
    assert_eq!(r.error_code, 0, "{r:?}");
    assert_eq!((&*r.host, r.port), ("localhost", proxy_port));

    if advertised(&mut client, ApiKey::FindCoordinator)
        .await?
        .is_some_and(|(_, max)| max >= 4)
    {
        let mut batched = FindCoordinatorRequest::default();
        batched.coordinator_keys = vec![
            StrBytes::from_static_str("group-a"),
            StrBytes::from_static_str("group-b"),
        ];
        let r: FindCoordinatorResponse = client.call(ApiKey::FindCoordinator, 4, &batched).await?;
        assert_eq!(r.coordinators.len(), 2);
        for c in &r.coordinators {
            assert_eq!((&*c.host, c.port), ("localhost", proxy_port), "{c:?}");
        }
    }

    if let Some((_, max)) = advertised(&mut client, ApiKey::DescribeCluster).await? {
        let r: DescribeClusterResponse = client
            .call(
                ApiKey::DescribeCluster,
                max.min(1),
                &DescribeClusterRequest::default(),
            )
            .await?;
        for b in &r.brokers {
            assert_eq!((&*b.host, b.port), ("localhost", proxy_port), "{b:?}");
        }
    }

    // The broker listener the metadata named really leads to the broker. (It was opened at
    // startup from the cluster's own metadata, before any client asked.)
    let mut via_broker_port =
        RawClient::connect(format!("127.0.0.1:{proxy_port}").parse()?).await?;
    let r: MetadataResponse = via_broker_port
        .call(ApiKey::Metadata, 4, &MetadataRequest::default())
        .await?;
    assert_eq!(r.brokers[0].port, proxy_port);
    proxy.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_ports_open_at_startup_so_clients_with_cached_metadata_reconnect()
-> anyhow::Result<()> {
    let proxy = InProcess::start(&broker::shared().endpoint(), |_| {}).await?;
    // No client has fetched metadata through this proxy instance.
    let broker_port = format!("127.0.0.1:{}", proxy.broker_port()?).parse()?;
    integration_tests::stack::wait_for_port(broker_port, std::time::Duration::from_secs(20))
        .await?;
    let mut client = RawClient::connect(broker_port).await?;
    let r: MetadataResponse = client
        .call(ApiKey::Metadata, 4, &MetadataRequest::default())
        .await?;
    assert_eq!(r.brokers[0].port, i32::from(proxy.broker_port()?));
    proxy.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_versions_are_narrowed_and_too_new_requests_get_unsupported_version()
-> anyhow::Result<()> {
    let kafka = broker::shared();
    let direct: ApiVersionsResponse = RawClient::connect(kafka.listeners.plaintext)
        .await?
        .call(ApiKey::ApiVersions, 3, &api_versions_request())
        .await?;
    let proxy = InProcess::start(&kafka.endpoint(), |_| {}).await?;
    let mut client = RawClient::connect(proxy.addr).await?;
    let proxied: ApiVersionsResponse = client
        .call(ApiKey::ApiVersions, 3, &api_versions_request())
        .await?;
    for entry in &proxied.api_keys {
        let theirs = direct
            .api_keys
            .iter()
            .find(|d| d.api_key == entry.api_key)
            .expect("broker has it");
        let Ok(key) = ApiKey::try_from(entry.api_key) else {
            // A key this build does not know is passed through as the broker sent it.
            assert_eq!(
                (entry.min_version, entry.max_version),
                (theirs.min_version, theirs.max_version)
            );
            continue;
        };
        let ours =
            wire_guard::versions::supported(key).expect("only supported keys are advertised");
        assert!(
            entry.min_version >= ours.min && entry.max_version <= ours.max,
            "{key:?} {entry:?}"
        );
        assert!(entry.min_version >= theirs.min_version && entry.max_version <= theirs.max_version);
    }
    if let Some(p) = proxied
        .api_keys
        .iter()
        .find(|k| k.api_key == ApiKey::Produce as i16)
    {
        assert!(
            p.max_version <= 9,
            "Produce v10+ carries broker addresses: {p:?}"
        );
    }
    if let Some(f) = proxied
        .api_keys
        .iter()
        .find(|k| k.api_key == ApiKey::Fetch as i16)
    {
        assert!(
            f.max_version <= 15,
            "Fetch v16+ carries broker addresses: {f:?}"
        );
    }

    // A client newer than this build gets the broker-style v0 answer and can retry.
    // ApiVersions v9 is newer than any encoder here: header v2 and an empty v3-style body.
    let mut payload = Vec::new();
    payload.extend_from_slice(&(ApiKey::ApiVersions as i16).to_be_bytes());
    payload.extend_from_slice(&9i16.to_be_bytes());
    payload.extend_from_slice(&77i32.to_be_bytes());
    payload.extend_from_slice(&(-1i16).to_be_bytes()); // client id: null
    payload.extend_from_slice(&[0, 1, 1, 0]); // header tags, two empty compact strings, body tags
    let mut frame = (payload.len() as i32).to_be_bytes().to_vec();
    frame.extend(payload);
    tokio::io::AsyncWriteExt::write_all(&mut client.stream, &frame).await?;
    let (correlation_id, mut body) = client.recv(ApiKey::ApiVersions, 0).await?;
    assert_eq!(correlation_id, 77);
    let r = ApiVersionsResponse::decode(&mut body, 0)?;
    assert_eq!(r.error_code, ResponseError::UnsupportedVersion.code());
    assert_eq!(r.api_keys[0].api_key, ApiKey::ApiVersions as i16);
    let again: ApiVersionsResponse = client
        .call(
            ApiKey::ApiVersions,
            r.api_keys[0].max_version,
            &api_versions_request(),
        )
        .await?;
    assert_eq!(again.error_code, 0);
    proxy.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order_and_acks0_produce_gets_no_response()
-> anyhow::Result<()> {
    let proxy = InProcess::start(&broker::shared().endpoint(), |_| {}).await?;
    let mut client = RawClient::connect(proxy.addr).await?;
    let mut fire_and_forget = ProduceRequest::default();
    fire_and_forget.acks = 0;
    fire_and_forget.timeout_ms = 1000;
    client
        .send(ApiKey::ApiVersions, 3, 10, &api_versions_request())
        .await?;
    client
        .send(ApiKey::Metadata, 4, 11, &MetadataRequest::default())
        .await?;
    client
        .send(ApiKey::Produce, 7, 12, &fire_and_forget)
        .await?;
    client
        .send(ApiKey::Metadata, 1, 13, &MetadataRequest::default())
        .await?;
    client
        .send(ApiKey::ApiVersions, 0, 14, &api_versions_request())
        .await?;

    let (id, _) = client.recv(ApiKey::ApiVersions, 3).await?;
    assert_eq!(id, 10);
    let (id, mut body) = client.recv(ApiKey::Metadata, 4).await?;
    assert_eq!(id, 11);
    MetadataResponse::decode(&mut body, 4)?;
    let (id, mut body) = client.recv(ApiKey::Metadata, 1).await?;
    assert_eq!(id, 13, "the acks=0 produce must not get a response");
    let r = MetadataResponse::decode(&mut body, 1)?;
    assert!(!body.has_remaining());
    assert_eq!(r.brokers[0].port, i32::from(proxy.broker_port()?));
    let (id, _) = client.recv(ApiKey::ApiVersions, 0).await?;
    assert_eq!(id, 14);
    proxy.stop().await
}

/// An upstream that reads one Heartbeat request, reports it, and answers (echoing the correlation id)
/// only when told to.
async fn held_upstream() -> anyhow::Result<(
    std::net::SocketAddr,
    tokio::sync::oneshot::Receiver<()>,
    tokio::sync::oneshot::Sender<()>,
)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (got_tx, got_rx) = tokio::sync::oneshot::channel();
    let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        // Other connections (the proxy's startup discovery, its readiness probe) are closed
        // unanswered.
        let (mut s, req) = loop {
            let (mut s, _) = listener.accept().await?;
            let Ok(len) = s.read_i32().await else {
                continue;
            };
            let mut req = vec![0u8; len.clamp(0, 1 << 20) as usize];
            if s.read_exact(&mut req).await.is_ok()
                && req.get(..2) == Some(&(ApiKey::Heartbeat as i16).to_be_bytes()[..])
            {
                break (s, req);
            }
        };
        let _ = got_tx.send(());
        let _ = release_rx.await;
        // Heartbeat v0 response: correlation id, then error_code 0.
        s.write_all(&6i32.to_be_bytes()).await?;
        s.write_all(&req[4..8]).await?;
        s.write_all(&0i16.to_be_bytes()).await?;
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest).await;
        anyhow::Ok(())
    });
    Ok((addr, got_rx, release_tx))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_in_flight_requests_then_stops_accepting() -> anyhow::Result<()> {
    let (upstream, request_seen, release) = held_upstream().await?;
    let upstream = Endpoint {
        bootstrap: upstream.to_string(),
        node_id: KAFKA_NODE_ID,
    };
    let proxy = InProcess::start(&upstream, |_| {}).await?;
    let addr = proxy.addr;
    let mut client = RawClient::connect(addr).await?;
    let heartbeat = kafka_protocol::messages::HeartbeatRequest::default();
    client.send(ApiKey::Heartbeat, 0, 41, &heartbeat).await?;
    request_seen.await?;
    let (shutdown, task) = (proxy.shutdown.clone(), proxy.task);
    shutdown.cancel();
    // Shutdown has begun with the request unanswered; the proxy must still deliver the answer.
    release
        .send(())
        .map_err(|_| anyhow::anyhow!("upstream gone"))?;
    let (id, mut body) = client.recv(ApiKey::Heartbeat, 0).await?;
    assert_eq!((id, body.get_i16()), (41, 0));
    assert!(
        client.closed_by_peer().await,
        "connection closes once drained"
    );
    task.await??;
    assert!(
        RawClient::connect(addr).await.is_err(),
        "no longer accepting"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_connections_requests_bytes_and_latency() -> anyhow::Result<()> {
    let proxy = InProcess::start(&broker::shared().endpoint(), |_| {}).await?;
    let mut client = RawClient::connect(proxy.addr).await?;
    let _: MetadataResponse = client
        .call(ApiKey::Metadata, 4, &MetadataRequest::default())
        .await?;
    let metrics = proxy.metrics().await?;
    for needle in [
        "wire_guard_connections_total{listener=\"bootstrap\"} 1",
        "wire_guard_connections_active 1",
        "wire_guard_requests_total{api=\"Metadata\"} 1",
        "wire_guard_upstream_latency_seconds_count{api=\"Metadata\"} 1",
        "wire_guard_bytes_total{direction=\"client_to_upstream\"}",
    ] {
        assert!(metrics.contains(needle), "missing {needle} in:\n{metrics}");
    }
    let ready = reqwest::get(format!("http://{}/readyz", proxy.admin)).await?;
    assert_eq!(ready.status(), 200);
    proxy.stop().await
}

/// Kafka's own answer names its listeners inside configuration values; through the proxy those
/// values are withheld, while every other value arrives as the broker sent it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_configs_do_not_reveal_listener_addresses() -> anyhow::Result<()> {
    let kafka = broker::shared();
    let proxy = InProcess::start(&kafka.endpoint(), |_| {}).await?;
    let mut client = RawClient::connect(proxy.addr).await?;
    let version = advertised(&mut client, ApiKey::DescribeConfigs)
        .await?
        .expect("DescribeConfigs advertised")
        .1
        .min(4);
    let mut resource = DescribeConfigsResource::default();
    resource.resource_type = 4; // BROKER
    resource.resource_name = StrBytes::from_string(KAFKA_NODE_ID.to_string());
    resource.configuration_keys = None;
    let mut request = DescribeConfigsRequest::default();
    request.resources.push(resource);
    let r: DescribeConfigsResponse = client
        .call(ApiKey::DescribeConfigs, version, &request)
        .await?;
    let configs = &r.results[0].configs;
    let find = |name: &str| configs.iter().find(|c| &*c.name == name);
    let advertised_listeners = find("advertised.listeners").expect("broker config listed");
    assert_eq!(advertised_listeners.value, None);
    assert!(advertised_listeners.is_sensitive);
    let text = format!("{r:?}");
    assert!(
        !text.contains(&kafka.listeners.plaintext.port().to_string()),
        "a broker port leaked: {text}"
    );
    let retention = find("log.retention.hours").expect("ordinary config listed");
    assert!(retention.value.is_some());
    proxy.stop().await
}
