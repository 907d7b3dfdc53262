//! TLS between clients and the proxy, with each client library.

use integration_tests::{
    broker, certs, client,
    proxy::{InProcess, Process},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_produce_and_consume_over_tls_to_the_proxy() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let certs = certs::write(dir.path())?;
    let proxy = InProcess::start(&broker::shared().endpoint(), |c| {
        c.client_tls = Some(wire_guard::config::ClientTls {
            cert: certs.cert.clone(),
            key: certs.key.clone(),
            client_ca: None,
        });
    })
    .await?;
    let ca = certs.ca.to_str().expect("utf-8 path");
    for client in client::ALL_CLIENTS {
        let result = client::scenario(
            client,
            &proxy.bootstrap(),
            "roundtrip",
            &["--security-protocol", "SSL", "--ca-file", ca],
        )
        .await?;
        assert_eq!(result["ok"], true, "{client}: {result}");
    }

    // A plaintext client is refused rather than served.
    let plaintext = client::scenario(
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_requires_a_client_certificate_and_names_its_subject() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let certs = certs::write(dir.path())?;
    let path = |p: &std::path::Path| p.to_str().expect("utf-8 path").to_owned();
    let logs = tempfile::tempdir()?;
    let (cert, key, ca) = (path(&certs.cert), path(&certs.key), path(&certs.ca));
    let proxy = Process::start(
        &broker::shared().endpoint(),
        &[
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--tls-client-ca",
            &ca,
        ],
        logs.path(),
    )
    .await?;
    let (client_cert, client_key) = (path(&certs.client_cert), path(&certs.client_key));
    let with_cert = [
        "--security-protocol",
        "SSL",
        "--ca-file",
        &ca,
        "--cert-file",
        &client_cert,
        "--key-file",
        &client_key,
    ];
    for client in client::ALL_CLIENTS {
        let result = client::scenario(client, &proxy.bootstrap(), "roundtrip", &with_cert).await?;
        assert_eq!(result["ok"], true, "{client}: {result}");
    }
    let line = proxy
        .wait_for_log(&[
            "client authenticated",
            "User:CN=payments-svc",
            "\"mechanism\":\"TLS\"",
        ])
        .await?;
    assert!(
        line.contains("kafka-guard tests"),
        "whole subject named: {line}"
    );

    let without_cert = [
        "--security-protocol",
        "SSL",
        "--ca-file",
        &ca,
        "--timeout",
        "10",
    ];
    let refused =
        client::scenario("confluent", &proxy.bootstrap(), "roundtrip", &without_cert).await;
    assert!(
        refused.is_err(),
        "a client without a certificate was served"
    );
    proxy
        .wait_for_log(&["closing connection", "TLS handshake with client failed"])
        .await?;
    Ok(())
}
