//! What the data-quality tests need around a proxy: the development registry in process,
//! topics created with a chosen partition count, Confluent-framed payloads built by hand (so a
//! test controls every byte, including the broken ones), and records read back with a real
//! client.

use std::{net::SocketAddr, path::Path};

use base64::Engine as _;
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, CreateTopicsResponse, TopicName,
    create_topics_request::CreatableTopic,
};
use kafka_protocol::protocol::StrBytes;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{client, raw::RawClient};

/// The development registry, stopped when dropped or on [`Registry::stop`].
pub struct Registry {
    pub url: String,
    stop: CancellationToken,
    http: reqwest::Client,
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Registry {
    pub async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let stop = CancellationToken::new();
        tokio::spawn(dev_registry::run(listener, stop.clone().cancelled_owned()));
        Ok(Self {
            url,
            stop,
            http: reqwest::Client::new(),
        })
    }

    /// Registers `body` (a Confluent registration body: schema, schemaType, references,
    /// ruleSet) under `subject`; returns the schema id.
    pub async fn register(&self, subject: &str, body: Value) -> anyhow::Result<u32> {
        let response = self
            .http
            .post(format!("{}/subjects/{subject}/versions", self.url))
            .header("content-type", "application/vnd.schemaregistry.v1+json")
            .json(&body)
            .send()
            .await?;
        let status = response.status();
        let answer: Value = response.json().await?;
        anyhow::ensure!(
            status.is_success(),
            "registering {subject}: {status} {answer}"
        );
        Ok(u32::try_from(answer["id"].as_u64().unwrap_or_default())?)
    }

    /// Stops serving: later lookups fail to connect, as in a registry outage.
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

/// Creates topics on the broker at `bootstrap` with the given partition counts.
pub async fn create_topics(bootstrap: &str, topics: &[(&str, i32)]) -> anyhow::Result<()> {
    create_topics_with(bootstrap, topics, &[]).await
}

/// [`create_topics`] with topic configs (`cleanup.policy`, `segment.ms`, ...) for each.
pub async fn create_topics_with(
    bootstrap: &str,
    topics: &[(&str, i32)],
    configs: &[(&str, &str)],
) -> anyhow::Result<()> {
    let addr: SocketAddr = bootstrap.parse()?;
    let mut raw = RawClient::connect(addr).await?;
    let mut request = CreateTopicsRequest::default();
    request.timeout_ms = 30_000;
    for (name, partitions) in topics {
        let mut t = CreatableTopic::default();
        t.name = TopicName(StrBytes::from_string((*name).to_owned()));
        t.num_partitions = *partitions;
        t.replication_factor = 1;
        for (name, value) in configs {
            let mut c =
                kafka_protocol::messages::create_topics_request::CreatableTopicConfig::default();
            c.name = StrBytes::from_string((*name).to_owned());
            c.value = Some(StrBytes::from_string((*value).to_owned()));
            t.configs.push(c);
        }
        request.topics.push(t);
    }
    let response: CreateTopicsResponse = raw.call(ApiKey::CreateTopics, 5, &request).await?;
    for t in response.topics {
        anyhow::ensure!(
            t.error_code == 0 || t.error_code == 36,
            "creating {}: error {} {:?}",
            &*t.name,
            t.error_code,
            t.error_message
        );
    }
    Ok(())
}

/// Confluent framing: magic byte 0, the schema id, then the payload.
pub fn framed(id: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0];
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Appends an Avro `long` (zigzag varint).
pub fn avro_long(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// Appends an Avro `string`: its length, then its bytes.
pub fn avro_string(out: &mut Vec<u8>, s: &str) {
    avro_long(out, s.len() as i64);
    out.extend_from_slice(s.as_bytes());
}

/// An Avro `Payment {id: string, amount: long}` in Avro's binary encoding.
pub fn avro_payment(id: &str, amount: i64) -> Vec<u8> {
    let mut out = Vec::new();
    avro_string(&mut out, id);
    avro_long(&mut out, amount);
    out
}

/// A name suffix unique to one test run, so topics and groups never collide with earlier runs
/// against the same broker.
pub fn run_id() -> String {
    format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
            & 0xffff_ffff_ffff
    )
}

pub const AVRO_PAYMENT: &str = r#"{"type":"record","name":"Payment","namespace":"example.payments","fields":[{"name":"id","type":"string"},{"name":"amount","type":"long"}]}"#;

pub const JSON_PAYMENT: &str = r#"{"$schema":"http://json-schema.org/draft-07/schema#","title":"Payment","type":"object","properties":{"id":{"type":"string"},"amount":{"type":"integer"}},"required":["id","amount"],"additionalProperties":false}"#;

/// A record for the `produce-payloads` client scenario.
#[derive(Debug, Clone)]
pub struct Out {
    pub partition: i32,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl Out {
    pub fn value(partition: i32, value: Vec<u8>) -> Self {
        Self {
            partition,
            key: None,
            value: Some(value),
            headers: Vec::new(),
        }
    }
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

pub fn unb64(v: &Value) -> Option<Vec<u8>> {
    v.as_str().map(|s| {
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .unwrap_or_default()
    })
}

/// Writes the payload file the `produce-payloads` scenario reads.
pub fn payload_file(
    dir: &Path,
    topic: &str,
    compression: &str,
    idempotent: bool,
    records: &[Out],
) -> anyhow::Result<std::path::PathBuf> {
    static FILES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = FILES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = dir.join(format!("{topic}-{compression}-{n}.json"));
    let records: Vec<Value> = records
        .iter()
        .map(|r| {
            json!({
                "partition": r.partition,
                "key": r.key.as_deref().map(b64),
                "value": r.value.as_deref().map(b64),
                "headers": r.headers.iter().map(|(k, v)| json!([k, v.as_deref().map(b64)])).collect::<Vec<_>>(),
            })
        })
        .collect();
    let doc = json!({
        "topic": topic,
        "compression": compression,
        "idempotent": idempotent,
        "max_in_flight": 5,
        "linger_ms": 5,
        "records": records,
    });
    std::fs::write(&path, serde_json::to_vec(&doc)?)?;
    Ok(path)
}

/// Produces with `client` through `bootstrap`; returns the scenario's result
/// (`delivered`, `failed`).
pub async fn produce(
    client_name: &str,
    bootstrap: &str,
    payloads: &Path,
    extra: &[&str],
) -> anyhow::Result<Value> {
    let path = payloads.to_string_lossy().into_owned();
    let mut args = vec!["--payloads", path.as_str()];
    args.extend_from_slice(extra);
    client::scenario(client_name, bootstrap, "produce-payloads", &args).await
}

/// A record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Got {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl Got {
    /// The last value of header `name`, as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_ref())
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }
}

/// Reads `topic` from the beginning with the confluent client, directly from the broker,
/// expecting `expect` records (and waiting briefly for any beyond them).
pub async fn read_topic(bootstrap: &str, topic: &str, expect: usize) -> anyhow::Result<Vec<Got>> {
    read_topic_with(bootstrap, topic, expect, &[]).await
}

/// [`read_topic`] with more client arguments, such as a SASL login.
pub async fn read_topic_with(
    bootstrap: &str,
    topic: &str,
    expect: usize,
    extra: &[&str],
) -> anyhow::Result<Vec<Got>> {
    let expect = expect.to_string();
    let mut args = vec!["--topic", topic, "--expect", &expect];
    args.extend_from_slice(extra);
    let result = client::scenario("confluent", bootstrap, "consume-all", &args).await?;
    let records = result["records"].as_array().cloned().unwrap_or_default();
    Ok(records
        .iter()
        .map(|r| Got {
            partition: r["partition"].as_i64().unwrap_or(-1) as i32,
            offset: r["offset"].as_i64().unwrap_or(-1),
            key: unb64(&r["key"]),
            value: unb64(&r["value"]),
            headers: r["headers"]
                .as_array()
                .map(|hs| {
                    hs.iter()
                        .map(|h| (h[0].as_str().unwrap_or_default().to_owned(), unb64(&h[1])))
                        .collect()
                })
                .unwrap_or_default(),
        })
        .collect())
}
