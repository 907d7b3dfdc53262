//! Integration harness: starts the real components the tests run against and tears them down.
//!
//! - [`stack`]: where `scripts/install-stack` put the broker, the Python clients and the
//!   identity provider; free ports; child processes killed on drop.
//! - [`broker`]: Apache Kafka, the reference broker: one single-node KRaft broker per test
//!   binary with plaintext, SASL (PLAIN, SCRAM) and TLS listeners; [`Endpoint`](broker::Endpoint)
//!   names what a proxy under test sends its traffic to.
//! - [`tansu`]: a Tansu broker with in-memory storage per test, the second broker
//!   implementation the client tests run against.
//! - [`certs`]: throwaway CA and server certificates.
//! - [`client`]: runs the client scenarios under `tests/clients/` with a chosen client library:
//!   three Python ones and the Java client.
//! - [`raw`]: a raw protocol client for requests no real client sends.
//! - [`records`]: the data-quality rig: the development registry, topics with partitions,
//!   hand-built Confluent-framed payloads, and records read back with a real client.
//! - [`proxy`]: wire-guard in-process or as its binary, on ports picked for the test.
//! - [`oidc`]: the OAuth2/OIDC mock provider issuing client_credentials tokens.
//! - [`kms`]: moto's AWS KMS emulator, with keys and aliases created through the SDK.
//!
//! Tests start their own proxies (and Tansu brokers) on ports they picked and use topics of their
//! own on the shared Kafka broker, so they run in parallel.

pub mod broker;
pub mod certs;
pub mod client;
pub mod kms;
pub mod oidc;
pub mod proxy;
pub mod raw;
pub mod records;
pub mod stack;
pub mod tansu;
