//! wire-guard: a Kafka-protocol proxy. Clients change only `bootstrap.servers`.
//!
//! How a connection flows through the modules:
//!
//! 1. [`server`] accepts on the bootstrap listener, or on a broker listener opened when that
//!    broker first appeared in a rewritten response ([`brokers`] holds the port mapping and the
//!    learnt routes; [`discovery`] opens the broker listeners at startup). TLS towards clients
//!    is terminated here; [`upstream`] connects onwards. The server also holds the policy in
//!    force (reloaded from the policy directory) and the shared parts of the stages.
//! 2. [`connection`] runs the request and response loops of one connection. [`frame`] reads
//!    length-prefixed frames, refusing oversized ones before allocating; [`header`] peeks at
//!    the request header (and a Produce request's `acks`) without decoding the body;
//!    [`inflight`] is the ordered queue matching responses to requests, and carries the
//!    partitions the proxy answered itself to be merged into the broker's response.
//! 3. [`stage`] decides which frames are read whole (one decode table) and holds the stages
//!    that read them. Responses whose API carries broker addresses are rewritten by
//!    [`rewrite`]; ApiVersions is narrowed by [`versions`] to what this build decodes; [`sasl`]
//!    learns each connection's authenticated principal; [`stage::data_quality`] checks every
//!    record produced to a topic a `topics:` policy governs, with [`records`] reading and
//!    rebuilding record batches, [`schema`] fetching, caching and applying the registry's
//!    schemas and data-contract rules, [`dlq`] writing dead letters with the proxy's own
//!    idempotent producer, and [`stage::sequences`] keeping idempotent producers' sequence
//!    numbers consistent when records leave their batches. [`codec`] does the decode and
//!    re-encode. Every other frame is forwarded as the original bytes.
//! 4. [`limits`] bounds what any one peer can cost: connection caps (global and per IP), the
//!    timeouts on clients and brokers, and the byte budget for frames (and decompressed
//!    records) held whole.
//! 5. [`protect`] encrypts, tokenizes and masks the fields a rule names in the records that go
//!    upstream (after [`stage::data_quality`]), and reveals or masks them in Fetch responses
//!    for the reading principal ([`stage::reveal`], with [`topic_ids`] naming topics that
//!    newer Fetch versions send by id). [`kms`] supplies its keys: a [`kms::Kms`] trait with
//!    AWS KMS and a local keyring behind it, wrapped in cache, retry and metrics decorators of
//!    the same trait.
//! 6. [`metrics`] counts connections, requests, bytes, upstream latency and record outcomes;
//!    [`cli`] and [`config`] turn flags, environment and an optional YAML file into a
//!    [`Config`].

pub mod brokers;
pub mod cli;
pub mod codec;
pub mod config;
pub mod connection;
pub mod discovery;
pub mod dlq;
pub mod error;
pub mod frame;
pub mod header;
pub mod inflight;
pub mod kms;
pub mod limits;
pub mod login;
pub mod metrics;
pub mod protect;
pub mod records;
pub mod rewrite;
pub mod sasl;
pub mod schema;
pub mod server;
pub mod stage;
pub mod topic_ids;
pub mod upstream;
pub mod versions;

pub use config::Config;
pub use error::Error;
pub use server::run;
