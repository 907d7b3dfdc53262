//! The shared crate's error type.

use std::path::PathBuf;

/// Errors raised while loading configuration shared by both services.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A certificate, key or CA file could not be read or used.
    #[error("TLS material {path}: {reason}")]
    Tls { path: PathBuf, reason: String },
    /// The TLS library refused the assembled configuration.
    #[error("TLS configuration: {0}")]
    TlsConfig(#[from] rustls::Error),
    /// One or more policy files failed to parse or validate; every problem is listed.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Policy(Vec<crate::policy::PolicyError>),
    /// The admin endpoint could not be served.
    #[error("admin endpoint: {0}")]
    Admin(#[source] std::io::Error),
}
