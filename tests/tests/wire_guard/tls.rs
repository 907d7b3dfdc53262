//! TLS between clients and the proxy, with each client library.

use std::path::Path;

use integration_tests::{broker::Broker, proxy::InProcess, python};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

/// Writes a CA and a server certificate for localhost/127.0.0.1 signed by it.
fn write_certificates(dir: &Path) -> anyhow::Result<()> {
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "wire-guard test CA");
    let ca = ca_params.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate()?;
    let mut server_params = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])?;
    server_params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let server = server_params.signed_by(&server_key, &issuer)?;

    std::fs::write(dir.join("ca.pem"), ca.pem())?;
    std::fs::write(dir.join("server.pem"), server.pem())?;
    std::fs::write(dir.join("server.key"), server_key.serialize_pem())?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_produce_and_consume_over_tls_to_the_proxy() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    write_certificates(dir.path())?;
    let broker = Broker::start().await?;
    let proxy = InProcess::start(&broker.bootstrap(), |c| {
        c.client_tls = Some(wire_guard::config::ClientTls {
            cert: dir.path().join("server.pem"),
            key: dir.path().join("server.key"),
            client_ca: None,
        });
    })
    .await?;
    let ca = dir.path().join("ca.pem");
    let ca = ca.to_str().expect("utf-8 path");
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
