//! wire-guard against Apache Kafka (and Tansu, for the client scenarios) with real Kafka
//! clients, raw protocol clients and scripted hostile peers.

mod clients;
mod data_quality;
mod field_protection;
mod limits;
mod malformed;
mod protocol;
mod sasl;
mod tls;
