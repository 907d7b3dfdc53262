//! rustls configurations built from PEM files.
//!
//! Both services terminate TLS from clients and may originate TLS to their upstream. The
//! `ring` provider is used everywhere so one crypto backend is compiled.

use std::{fs, path::Path, sync::Arc};

use rustls::{
    ClientConfig, RootCertStore, ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer},
    server::WebPkiClientVerifier,
};

use crate::Error;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_err(path: &Path, reason: impl ToString) -> Error {
    Error::Tls {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Reads every certificate in a PEM file; a file without one is an error.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let pem = fs::read(path).map_err(|e| tls_err(path, e))?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_err(path, e))?;
    if certs.is_empty() {
        return Err(tls_err(path, "no PEM certificate found"));
    }
    Ok(certs)
}

/// Reads the first private key (PKCS#8, PKCS#1 or SEC1) in a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, Error> {
    let pem = fs::read(path).map_err(|e| tls_err(path, e))?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| tls_err(path, e))?
        .ok_or_else(|| tls_err(path, "no PEM private key found"))
}

fn root_store(ca: &Path) -> Result<RootCertStore, Error> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(ca)? {
        roots.add(cert).map_err(|e| tls_err(ca, e))?;
    }
    Ok(roots)
}

/// A server configuration presenting `cert`/`key`; with `client_ca`, clients must present a
/// certificate signed by it (mutual TLS).
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, Error> {
    let builder =
        ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let builder = match client_ca {
        Some(ca) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(root_store(ca)?), provider())
                    .build()
                    .map_err(|e| tls_err(ca, e))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(load_certs(cert)?, load_key(key)?)?;
    // TLS 1.3 session tickets arrive on a socket the client is not reading from; kafka-python
    // takes that for a protocol error. Kafka connections are long-lived, so resumption buys
    // nothing: send none.
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// A client configuration trusting the CA certificates in `ca`, optionally presenting a client
/// certificate.
pub fn client_config(
    ca: &Path,
    identity: Option<(&Path, &Path)>,
) -> Result<Arc<ClientConfig>, Error> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(root_store(ca)?);
    let config = match identity {
        Some((cert, key)) => builder.with_client_auth_cert(load_certs(cert)?, load_key(key)?)?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
        fs::write(&c, cert.pem()).unwrap();
        fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }

    #[test]
    fn builds_server_and_client_configs_from_pem() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = write_pair(dir.path());
        server_config(&cert, &key, None).unwrap();
        server_config(&cert, &key, Some(&cert)).unwrap();
        client_config(&cert, None).unwrap();
    }

    #[test]
    fn missing_or_empty_files_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        fs::write(&empty, "").unwrap();
        let err = server_config(&empty, &empty, None).unwrap_err().to_string();
        assert!(
            err.contains("empty.pem") && err.contains("no PEM certificate"),
            "{err}"
        );
        let err = client_config(&dir.path().join("absent.pem"), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("absent.pem"), "{err}");
    }
}
