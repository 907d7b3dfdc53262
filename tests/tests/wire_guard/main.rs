//! wire-guard against a real Tansu broker and real Kafka clients.

mod clients;
mod malformed;
mod protocol;
mod sasl;
mod tls;
