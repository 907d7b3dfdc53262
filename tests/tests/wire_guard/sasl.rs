//! SASL through the proxy to Kafka's own SASL listeners, and TLS towards the upstream.

use integration_tests::{
    broker, client,
    proxy::{InProcess, Process},
};

fn sasl_args<'a>(mechanism: &'a str, user: &'a str, password: &'a str) -> [&'a str; 8] {
    [
        "--security-protocol",
        "SASL_PLAINTEXT",
        "--sasl-mechanism",
        mechanism,
        "--sasl-username",
        user,
        "--sasl-password",
        password,
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_passes_through_and_the_proxy_logs_each_principal() -> anyhow::Result<()> {
    let kafka = broker::shared();
    let logs = tempfile::tempdir()?;
    let upstream = kafka.endpoint_of(kafka.listeners.sasl_plaintext);
    let proxy = Process::start(&upstream, &[], logs.path()).await?;

    for (client, mechanism, user) in [
        ("confluent", "SCRAM-SHA-256", "alice"),
        ("kafka-python", "PLAIN", "bob"),
        ("aiokafka", "SCRAM-SHA-512", "carol"),
        ("java", "SCRAM-SHA-512", "bob"),
    ] {
        let password = format!("{user}-secret");
        let args = sasl_args(mechanism, user, &password);
        let result = client::scenario(client, &proxy.bootstrap(), "roundtrip", &args).await?;
        assert_eq!(result["ok"], true, "{client}: {result}");
        let principal = format!("\"principal\":\"User:{user}\"");
        let line = proxy
            .wait_for_log(&["client authenticated", &principal, mechanism])
            .await?;
        assert!(line.contains("\"level\":\"INFO\""), "{line}");
    }

    // A wrong password is refused by the broker, and the proxy names no principal for it.
    let alice_logins = || -> anyhow::Result<usize> {
        let log = std::fs::read_to_string(&proxy.log)?;
        Ok(log
            .lines()
            .filter(|l| l.contains("client authenticated") && l.contains("User:alice"))
            .count())
    };
    let before = alice_logins()?;
    let mut args = sasl_args("SCRAM-SHA-256", "alice", "wrong").to_vec();
    args.extend(["--timeout", "15"]);
    let refused = client::scenario("confluent", &proxy.bootstrap(), "roundtrip", &args).await;
    assert!(refused.is_err(), "a wrong password was accepted");
    assert_eq!(
        alice_logins()?,
        before,
        "a refused login was logged as authenticated"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_on_both_sides_with_sasl_ssl_clients() -> anyhow::Result<()> {
    let kafka = broker::shared();
    let certs = &kafka.certs;
    let upstream = kafka.endpoint_of(kafka.listeners.sasl_ssl);
    let proxy = InProcess::start(&upstream, |c| {
        c.client_tls = Some(wire_guard::config::ClientTls {
            cert: certs.cert.clone(),
            key: certs.key.clone(),
            client_ca: None,
        });
        c.upstream_tls = Some(wire_guard::config::UpstreamTls {
            ca: certs.ca.clone(),
            identity: None,
        });
    })
    .await?;
    let ca = certs.ca.to_str().expect("utf-8 path");
    for (client, mechanism, user) in [
        ("confluent", "SCRAM-SHA-512", "alice"),
        ("kafka-python", "SCRAM-SHA-256", "bob"),
        ("aiokafka", "PLAIN", "carol"),
        ("java", "SCRAM-SHA-256", "alice"),
    ] {
        let password = format!("{user}-secret");
        let mut args = sasl_args(mechanism, user, &password).to_vec();
        args[1] = "SASL_SSL";
        args.extend(["--ca-file", ca]);
        let result = client::scenario(client, &proxy.bootstrap(), "roundtrip", &args).await?;
        assert_eq!(result["ok"], true, "{client}: {result}");
    }
    proxy.stop().await
}
