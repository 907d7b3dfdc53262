//! Throwaway certificates: a CA, a server certificate for localhost and 127.0.0.1, and a client
//! certificate for mutual TLS.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

/// Paths of the PEM files written by [`write`].
pub struct Certs {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// A client certificate with subject `CN=payments-svc,O=kafka-guard tests`.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

/// Writes `ca.pem`, `server.pem`, `server.key`, `client.pem` and `client.key` into `dir`.
pub fn write(dir: &Path) -> anyhow::Result<Certs> {
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "kafka-guard test CA");
    let ca = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate()?;
    let mut server_params = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])?;
    server_params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let server = server_params.signed_by(&server_key, &issuer)?;

    let client_key = KeyPair::generate()?;
    let mut client_params = CertificateParams::new(Vec::<String>::new())?;
    client_params
        .distinguished_name
        .push(DnType::CommonName, "payments-svc");
    client_params
        .distinguished_name
        .push(DnType::OrganizationName, "kafka-guard tests");
    let client = client_params.signed_by(&client_key, &issuer)?;

    let certs = Certs {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client.key"),
    };
    std::fs::write(&certs.client_cert, client.pem())?;
    std::fs::write(&certs.client_key, client_key.serialize_pem())?;
    std::fs::write(&certs.ca, ca.pem())?;
    std::fs::write(&certs.cert, server.pem())?;
    std::fs::write(&certs.key, server_key.serialize_pem())?;
    Ok(certs)
}
