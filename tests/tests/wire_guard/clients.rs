//! Every scenario with each independent client implementation, through the proxy.

use integration_tests::{broker::Broker, proxy::InProcess, python};

/// Runs one scenario through a fresh proxy and checks the traffic really went through it.
async fn through_proxy(client: &str, scenario: &str) -> anyhow::Result<()> {
    let broker = Broker::start().await?;
    let proxy = InProcess::start(&broker.bootstrap(), |_| {}).await?;
    let result = python::scenario(client, &proxy.bootstrap(), scenario, &[]).await?;
    assert_eq!(result["ok"], true, "{result}");
    let metrics = proxy.metrics().await?;
    for api in ["Metadata", "Produce", "Fetch"] {
        if scenario == "admin" && api != "Metadata" {
            continue;
        }
        let line = format!("wire_guard_requests_total{{api=\"{api}\"}}");
        let count: f64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&line))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0);
        assert!(
            count > 0.0,
            "no {api} request went through the proxy:\n{metrics}"
        );
    }
    proxy.stop().await
}

/// Runs a scenario directly against the broker and through the proxy: the outcome must be the
/// same. Used where the broker itself limits what a client can do (Tansu rejects InitProducerId
/// v0, the only version aiokafka sends), so the proxy is held to being transparent rather than
/// to the broker's gaps.
async fn same_as_direct(client: &str, scenario: &str) -> anyhow::Result<()> {
    let broker = Broker::start().await?;
    let direct = python::scenario(client, &broker.bootstrap(), scenario, &[]).await;
    let proxy = InProcess::start(&broker.bootstrap(), |_| {}).await?;
    let proxied = python::scenario(client, &proxy.bootstrap(), scenario, &[]).await;
    match (&direct, &proxied) {
        (Ok(d), Ok(p)) => {
            assert_eq!(d["ok"], true);
            assert_eq!(p["ok"], true);
        }
        (Err(d), Err(p)) => {
            let reason = |e: &anyhow::Error| {
                e.to_string()
                    .lines()
                    .find(|l| l.starts_with("FAIL"))
                    .map(|l| l.split(" failed: ").last().unwrap_or(l).to_owned())
            };
            assert!(
                reason(d).is_some(),
                "direct run failed without a reason: {d}"
            );
            assert_eq!(reason(d), reason(p), "direct: {d}\nproxied: {p}");
        }
        _ => panic!(
            "{client} {scenario} differs through the proxy:\ndirect: {direct:?}\nproxied: {proxied:?}"
        ),
    }
    proxy.stop().await
}

macro_rules! scenarios {
    ($($name:ident: $client:literal $scenario:literal;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() -> anyhow::Result<()> {
            through_proxy($client, $scenario).await
        }
    )*};
}

scenarios! {
    confluent_admin: "confluent" "admin";
    confluent_compression_and_headers: "confluent" "compression";
    confluent_group_commit_and_resume: "confluent" "groups";
    confluent_idempotent_producer: "confluent" "idempotent";
    kafka_python_admin: "kafka-python" "admin";
    kafka_python_compression_and_headers: "kafka-python" "compression";
    kafka_python_group_commit_and_resume: "kafka-python" "groups";
    kafka_python_idempotent_producer: "kafka-python" "idempotent";
    aiokafka_admin: "aiokafka" "admin";
    aiokafka_compression_and_headers: "aiokafka" "compression";
    aiokafka_group_commit_and_resume: "aiokafka" "groups";
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiokafka_idempotent_producer_same_as_direct() -> anyhow::Result<()> {
    same_as_direct("aiokafka", "idempotent").await
}

/// What each client library is told about the cluster names only the proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_see_only_proxy_addresses() -> anyhow::Result<()> {
    let broker = Broker::start().await?;
    let proxy = InProcess::start(&broker.bootstrap(), |c| {
        c.advertised_host = "localhost".into()
    })
    .await?;
    let expected_port = i64::from(proxy.broker_port()?);
    for client in python::CLIENTS {
        let result = python::scenario(client, &proxy.bootstrap(), "metadata", &[]).await?;
        let brokers = result["brokers"].as_array().expect("brokers list");
        assert!(!brokers.is_empty(), "{client}: {result}");
        for b in brokers {
            assert_eq!(b["host"], "localhost", "{client}: {result}");
            assert_eq!(
                b["port"].as_i64(),
                Some(expected_port),
                "{client}: {result}"
            );
        }
        let text = result.to_string();
        assert!(
            !text.contains(&format!(":{}", broker.addr.port()))
                && !text.contains(&format!("{}", broker.addr.port())),
            "{client} saw the broker's own port: {result}"
        );
    }
    proxy.stop().await
}
