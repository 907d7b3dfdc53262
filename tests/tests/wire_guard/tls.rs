//! TLS between clients and the proxy, with each client library.

use integration_tests::{broker::Broker, certs, proxy::InProcess, python};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_produce_and_consume_over_tls_to_the_proxy() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let certs = certs::write(dir.path())?;
    let broker = Broker::start().await?;
    let proxy = InProcess::start(&broker.bootstrap(), |c| {
        c.client_tls = Some(wire_guard::config::ClientTls {
            cert: certs.cert.clone(),
            key: certs.key.clone(),
            client_ca: None,
        });
    })
    .await?;
    let ca = certs.ca.to_str().expect("utf-8 path");
    for client in python::CLIENTS {
        let result = python::scenario(
            client,
            &proxy.bootstrap(),
            "roundtrip",
            &["--security-protocol", "SSL", "--ca-file", ca],
        )
        .await?;
        assert_eq!(result["ok"], true, "{client}: {result}");
    }

    // A plaintext client is refused rather than served.
    let plaintext = python::scenario(
        "kafka-python",
        &proxy.bootstrap(),
        "roundtrip",
        &["--timeout", "10"],
    )
    .await;
    assert!(
        plaintext.is_err(),
        "plaintext client was served over a TLS listener"
    );
    proxy.stop().await
}
