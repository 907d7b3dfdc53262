//! Code shared by `wire-guard` and `registry-proxy`.
//!
//! - [`policy`]: the YAML policy files under `policies/`: parsing, validation that lists every
//!   error with its file and line, and the runtime rule sets both services evaluate.
//! - [`principal`]: who is calling (user, groups, client id) and how a policy's principal
//!   patterns (`user:`, `group:`, `client:`, `*`) match them.
//! - [`keyref`]: key references (`aws-kms:…`, `local:…`) as policies name KMS keys.
//! - [`tls`]: rustls server and client configurations built from PEM files.
//! - [`telemetry`]: structured logging and the admin HTTP endpoint (`/metrics`, `/healthz`,
//!   `/readyz`) each service exposes.
//! - [`error`]: the crate's error type.

pub mod error;
pub mod keyref;
pub mod policy;
pub mod principal;
pub mod telemetry;
pub mod tls;

pub use error::Error;
