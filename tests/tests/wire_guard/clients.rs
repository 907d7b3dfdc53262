//! Every scenario with each independent client implementation, through the proxy: against
//! Apache Kafka (all four clients) and against Tansu (the three Python clients), so a proxy bug
//! that one client or one broker hides shows up in another.

use integration_tests::{
    broker::{self, Endpoint},
    client,
    proxy::InProcess,
    tansu::Tansu,
};

/// Runs one scenario through a fresh proxy and checks the traffic really went through it.
async fn through_proxy(upstream: &Endpoint, client: &str, scenario: &str) -> anyhow::Result<()> {
    let proxy = InProcess::start(upstream, |_| {}).await?;
    let result = client::scenario(client, &proxy.bootstrap(), scenario, &[]).await?;
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
async fn same_as_direct(upstream: &Endpoint, client: &str, scenario: &str) -> anyhow::Result<()> {
    let direct = client::scenario(client, &upstream.bootstrap, scenario, &[]).await;
    let proxy = InProcess::start(upstream, |_| {}).await?;
    let proxied = client::scenario(client, &proxy.bootstrap(), scenario, &[]).await;
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

/// Against Apache Kafka, the reference broker shared by this test binary.
mod kafka {
    use super::*;

    macro_rules! scenarios {
        ($($name:ident: $client:literal $scenario:literal;)*) => {$(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() -> anyhow::Result<()> {
                through_proxy(&broker::shared().endpoint(), $client, $scenario).await
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
        aiokafka_idempotent_producer: "aiokafka" "idempotent";
        java_admin: "java" "admin";
        java_compression_and_headers: "java" "compression";
        java_idempotent_producer: "java" "idempotent";
        java_transactions_commit_and_abort: "java" "transactions";
        java_classic_group_commit_and_resume: "java" "groups-classic";
        java_kip848_group_commit_and_resume: "java" "groups-consumer";
    }
}

/// Against Tansu, a second broker implementation with its own quirks.
mod tansu {
    use super::*;

    macro_rules! scenarios {
        ($($name:ident: $client:literal $scenario:literal;)*) => {$(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() -> anyhow::Result<()> {
                let broker = Tansu::start().await?;
                through_proxy(&broker.endpoint(), $client, $scenario).await
            }
        )*};
    }

    scenarios! {
        confluent_compression_and_headers: "confluent" "compression";
        confluent_group_commit_and_resume: "confluent" "groups";
        confluent_idempotent_producer: "confluent" "idempotent";
        kafka_python_compression_and_headers: "kafka-python" "compression";
        kafka_python_group_commit_and_resume: "kafka-python" "groups";
        aiokafka_compression_and_headers: "aiokafka" "compression";
        aiokafka_group_commit_and_resume: "aiokafka" "groups";
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn aiokafka_idempotent_producer_same_as_direct() -> anyhow::Result<()> {
        let broker = Tansu::start().await?;
        same_as_direct(&broker.endpoint(), "aiokafka", "idempotent").await
    }
}

/// What each client library is told about the cluster names only the proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_see_only_proxy_addresses() -> anyhow::Result<()> {
    let kafka = broker::shared();
    let proxy = InProcess::start(&kafka.endpoint(), |c| {
        c.advertised_host = "localhost".into()
    })
    .await?;
    let expected_port = i64::from(proxy.broker_port()?);
    for client in client::ALL_CLIENTS {
        let result = client::scenario(client, &proxy.bootstrap(), "metadata", &[]).await?;
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
        let upstream_port = kafka.listeners.plaintext.port().to_string();
        assert!(
            !text.contains(&upstream_port),
            "{client} saw the broker's own port: {result}"
        );
    }
    proxy.stop().await
}
