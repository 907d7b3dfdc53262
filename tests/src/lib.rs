//! Integration harness: starts the real components the tests run against and tears them down.
//!
//! - [`stack`]: where `scripts/install-stack` put the broker, the Python clients and the
//!   identity provider; free ports; child processes killed on drop.
//! - [`broker`]: a Tansu broker with in-memory storage, optionally behind the SASL/TLS front
//!   in `tests/broker_front/` (Tansu can neither require SASL with a working login nor
//!   serve TLS).
//! - [`certs`]: throwaway CA and server certificates.
//! - [`python`]: runs the client scenarios under `tests/clients/` with a chosen client library.
//! - [`kafka`]: a raw protocol client for requests no real client sends.
//! - [`proxy`]: wire-guard in-process or as its binary, on ports picked for the test.
//! - [`oidc`]: the OAuth2/OIDC mock provider issuing client_credentials tokens.
//!
//! Every test starts its own processes on ports it picked, so tests run in parallel.

pub mod broker;
pub mod certs;
pub mod kafka;
pub mod oidc;
pub mod proxy;
pub mod python;
pub mod stack;
