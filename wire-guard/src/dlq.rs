//! wire-guard's own producer for dead-letter topics.
//!
//! Records a policy routes to a dead-letter topic are written by the proxy itself, on its own
//! connections to the cluster, before the rest of the client's batch goes upstream: the client
//! hears success only once both writes are acknowledged. The producer is idempotent (one
//! producer id for the process, a sequence per dead-letter partition) and writes with
//! `acks=all`; a write that fails part-way is retried with the same sequence, so the broker
//! drops a copy it already holds. Writes to one dead-letter partition are serialised, which
//! keeps records from one source partition in their order.
//!
//! Source partition `p` goes to dead-letter partition `p mod N`, so a dead-letter topic with as
//! many partitions as its source keeps every partition's order. A dead-letter topic must exist:
//! the proxy never creates topics.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use kafka_protocol::{
    ResponseError,
    messages::{
        ApiKey, InitProducerIdRequest, InitProducerIdResponse, MetadataRequest, MetadataResponse,
        ProduceRequest, ProduceResponse, RequestHeader, ResponseHeader, SaslAuthenticateRequest,
        SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse, TopicName,
        metadata_request::MetadataRequestTopic,
        produce_request::{PartitionProduceData, TopicProduceData},
    },
    protocol::{Decodable, Encodable, StrBytes},
};
use tokio::io::{AsyncWriteExt, BufReader};

use crate::{
    error::Side,
    frame,
    login::Credentials,
    records::{Builder, OwnedRecord},
    upstream::{BoxStream, Connector},
};

const METADATA_VERSION: i16 = 9;
const INIT_PRODUCER_ID_VERSION: i16 = 4;
const PRODUCE_VERSION: i16 = 9;
/// Largest response the producer reads from a broker.
const MAX_RESPONSE: usize = 16 * 1024 * 1024;
const CLIENT_ID: &str = "wire-guard-dead-letters";

/// Why a dead-letter write failed; the source partition is then refused with a retriable error.
#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    #[error("dead-letter topic {topic:?} does not exist")]
    NoSuchTopic { topic: String },
    #[error("dead-letter write to {topic:?} refused: {error:?}")]
    Refused { topic: String, error: ResponseError },
    #[error("dead-letter write to {topic:?} did not succeed within {after:?}: {last}")]
    GaveUp {
        topic: String,
        after: Duration,
        last: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ProducerId {
    id: i64,
    epoch: i16,
}

#[derive(Debug, Default)]
struct PartitionState {
    /// The producer id the sequence belongs to.
    producer: Option<ProducerId>,
    next_sequence: i32,
}

/// A dead-letter partition's producer state; held for the whole of a write so that writes to one
/// partition go one at a time, in order.
type SharedPartition = Arc<tokio::sync::Mutex<PartitionState>>;

#[derive(Debug, Clone)]
struct TopicLayout {
    /// Leader node of each partition, by index.
    leaders: Vec<i32>,
}

pub struct DeadLetters {
    connector: Connector,
    bootstrap: Vec<String>,
    /// The SASL login for wire-guard's own connections, when the cluster requires one.
    login: Option<Credentials>,
    /// How long one write may take, retries included.
    deadline: Duration,
    producer: tokio::sync::Mutex<Option<ProducerId>>,
    partitions: Mutex<HashMap<(String, i32), SharedPartition>>,
    topics: Mutex<HashMap<String, TopicLayout>>,
    brokers: Mutex<HashMap<i32, String>>,
    /// One connection per broker address, used one request at a time.
    conns: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<OwnConn>>>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A retriable failure, and what to refresh before the next attempt.
enum Retry {
    Metadata(String),
    Producer(String),
}

impl DeadLetters {
    pub fn new(
        connector: Connector,
        bootstrap: Vec<String>,
        login: Option<Credentials>,
        deadline: Duration,
    ) -> Self {
        Self {
            connector,
            bootstrap,
            login,
            deadline,
            producer: tokio::sync::Mutex::new(None),
            partitions: Mutex::default(),
            topics: Mutex::default(),
            brokers: Mutex::default(),
            conns: Mutex::default(),
        }
    }

    /// Writes `records` to `topic`, in the partition matching `source_partition`, with
    /// `acks=all`. Returns once the broker has acknowledged them.
    pub async fn write(
        &self,
        topic: &str,
        source_partition: i32,
        records: &[OwnedRecord],
    ) -> Result<(), DeadLetterError> {
        let started = Instant::now();
        let base_timestamp = records.iter().map(|r| r.timestamp).min().unwrap_or(0);
        let mut builder = Builder::new(base_timestamp);
        for record in records {
            builder.push(record);
        }
        let mut backoff = Duration::from_millis(50);
        let mut refresh = false;
        let mut state_lock: Option<(i32, SharedPartition)> = None;
        loop {
            let outcome = async {
                let layout = self.layout(topic, refresh).await?;
                let count = layout.leaders.len() as i32;
                if count == 0 {
                    return Err(Ok(DeadLetterError::NoSuchTopic {
                        topic: topic.to_owned(),
                    }));
                }
                let partition = source_partition.rem_euclid(count);
                let leader = layout.leaders[partition as usize];
                Ok((partition, leader))
            }
            .await;
            let attempt: Result<(), Retry> = match outcome {
                Err(Ok(fatal)) => return Err(fatal),
                Err(Err(retry)) => Err(retry),
                Ok((partition, leader)) => {
                    let state = match &state_lock {
                        Some((p, s)) if *p == partition => s.clone(),
                        _ => {
                            let s = self.partition_state(topic, partition);
                            state_lock = Some((partition, s.clone()));
                            s
                        }
                    };
                    let mut state = state.lock().await;
                    self.attempt(topic, partition, leader, &builder, &mut state)
                        .await?
                }
            };
            let why = match attempt {
                Ok(()) => return Ok(()),
                Err(Retry::Metadata(why)) => {
                    refresh = true;
                    why
                }
                Err(Retry::Producer(why)) => {
                    *self.producer.lock().await = None;
                    why
                }
            };
            if started.elapsed() + backoff > self.deadline {
                return Err(DeadLetterError::GaveUp {
                    topic: topic.to_owned(),
                    after: self.deadline,
                    last: why,
                });
            }
            tracing::debug!(topic, reason = %why, "dead-letter write retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }

    /// One produce attempt; `Err(fatal)` ends the write, `Ok(Err(retry))` tries again.
    async fn attempt(
        &self,
        topic: &str,
        partition: i32,
        leader: i32,
        builder: &Builder,
        state: &mut PartitionState,
    ) -> Result<Result<(), Retry>, DeadLetterError> {
        let producer = match self.producer_id().await {
            Ok(p) => p,
            Err(why) => return Ok(Err(Retry::Metadata(why))),
        };
        if state.producer != Some(producer) {
            state.producer = Some(producer);
            state.next_sequence = 0;
        }
        let batch = builder.finish(producer.id, producer.epoch, state.next_sequence);
        let Some(addr) = lock(&self.brokers).get(&leader).cloned() else {
            return Ok(Err(Retry::Metadata(format!("leader {leader} unknown"))));
        };
        let mut request = ProduceRequest::default();
        request.transactional_id = None;
        request.acks = -1;
        request.timeout_ms = self.deadline.as_millis().min(i32::MAX as u128) as i32;
        let mut data = PartitionProduceData::default();
        data.index = partition;
        data.records = Some(Bytes::from(batch));
        let mut topic_data = TopicProduceData::default();
        topic_data.name = TopicName(StrBytes::from_string(topic.to_owned()));
        topic_data.partition_data = vec![data];
        request.topic_data = vec![topic_data];
        let response: ProduceResponse = match self
            .call(&addr, ApiKey::Produce, PRODUCE_VERSION, &request)
            .await
        {
            Ok(r) => r,
            Err(why) => return Ok(Err(Retry::Metadata(why))),
        };
        let code = response
            .responses
            .first()
            .and_then(|t| t.partition_responses.first())
            .map_or(-1, |p| p.error_code);
        match ResponseError::try_from_code(code) {
            None | Some(ResponseError::DuplicateSequenceNumber) => {
                state.next_sequence = add_sequence(state.next_sequence, builder.len());
                Ok(Ok(()))
            }
            Some(
                e @ (ResponseError::OutOfOrderSequenceNumber
                | ResponseError::UnknownProducerId
                | ResponseError::InvalidProducerEpoch
                | ResponseError::ProducerFenced),
            ) => Ok(Err(Retry::Producer(format!("{e:?}")))),
            Some(e) if e.is_retriable() => Ok(Err(Retry::Metadata(format!("{e:?}")))),
            Some(ResponseError::UnknownTopicOrPartition) => {
                Ok(Err(Retry::Metadata("UnknownTopicOrPartition".into())))
            }
            Some(error) => Err(DeadLetterError::Refused {
                topic: topic.to_owned(),
                error,
            }),
        }
    }

    fn partition_state(&self, topic: &str, partition: i32) -> SharedPartition {
        lock(&self.partitions)
            .entry((topic.to_owned(), partition))
            .or_default()
            .clone()
    }

    /// The producer id, asking a broker for one the first time and after a fencing error.
    async fn producer_id(&self) -> Result<ProducerId, String> {
        let mut producer = self.producer.lock().await;
        if let Some(p) = *producer {
            return Ok(p);
        }
        let mut request = InitProducerIdRequest::default();
        // An idempotent producer has no transactional id (the default is an empty one, which
        // brokers refuse).
        request.transactional_id = None;
        request.transaction_timeout_ms = 60_000;
        request.producer_id = kafka_protocol::messages::ProducerId(-1);
        request.producer_epoch = -1;
        let mut last = "no broker answered".to_owned();
        for addr in self.bootstrap_and_known() {
            match self
                .call::<_, InitProducerIdResponse>(
                    &addr,
                    ApiKey::InitProducerId,
                    INIT_PRODUCER_ID_VERSION,
                    &request,
                )
                .await
            {
                Ok(r) if r.error_code == 0 => {
                    let p = ProducerId {
                        id: r.producer_id.0,
                        epoch: r.producer_epoch,
                    };
                    *producer = Some(p);
                    return Ok(p);
                }
                Ok(r) => last = format!("InitProducerId error {}", r.error_code),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn bootstrap_and_known(&self) -> Vec<String> {
        let mut addrs: Vec<String> = lock(&self.brokers).values().cloned().collect();
        addrs.sort();
        addrs.extend(self.bootstrap.iter().cloned());
        addrs
    }

    /// The topic's partitions and leaders, from the cache unless `refresh`.
    async fn layout(
        &self,
        topic: &str,
        refresh: bool,
    ) -> Result<TopicLayout, Result<DeadLetterError, Retry>> {
        if !refresh && let Some(layout) = lock(&self.topics).get(topic) {
            return Ok(layout.clone());
        }
        let mut request = MetadataRequest::default();
        let mut t = MetadataRequestTopic::default();
        t.name = Some(TopicName(StrBytes::from_string(topic.to_owned())));
        request.topics = Some(vec![t]);
        request.allow_auto_topic_creation = false;
        let mut last = "no broker answered".to_owned();
        for addr in self.bootstrap_and_known() {
            let response: MetadataResponse = match self
                .call(&addr, ApiKey::Metadata, METADATA_VERSION, &request)
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    last = e;
                    continue;
                }
            };
            {
                let mut brokers = lock(&self.brokers);
                for b in &response.brokers {
                    brokers.insert(b.node_id.0, format!("{}:{}", b.host, b.port));
                }
            }
            let Some(t) = response.topics.first() else {
                continue;
            };
            match ResponseError::try_from_code(t.error_code) {
                None => {}
                Some(ResponseError::UnknownTopicOrPartition) => {
                    return Err(Ok(DeadLetterError::NoSuchTopic {
                        topic: topic.to_owned(),
                    }));
                }
                Some(e) => return Err(Err(Retry::Metadata(format!("metadata: {e:?}")))),
            }
            let mut leaders = vec![-1; t.partitions.len()];
            for p in &t.partitions {
                if let Some(slot) = usize::try_from(p.partition_index)
                    .ok()
                    .and_then(|i| leaders.get_mut(i))
                {
                    *slot = p.leader_id.0;
                }
            }
            let layout = TopicLayout { leaders };
            lock(&self.topics).insert(topic.to_owned(), layout.clone());
            return Ok(layout);
        }
        Err(Err(Retry::Metadata(last)))
    }

    /// Sends one request to `addr` and reads its response, on the cached connection.
    async fn call<Req: Encodable, Resp: Decodable>(
        &self,
        addr: &str,
        key: ApiKey,
        version: i16,
        request: &Req,
    ) -> Result<Resp, String> {
        let slot = lock(&self.conns)
            .entry(addr.to_owned())
            .or_default()
            .clone();
        let mut conn = slot.lock().await;
        let own = match conn.as_mut() {
            Some(own) => own,
            None => {
                let stream = self
                    .connector
                    .connect(addr)
                    .await
                    .map_err(|e| e.to_string())?;
                let mut own = OwnConn {
                    stream: BufReader::new(stream),
                    next_correlation: 0,
                };
                if let Some(login) = &self.login {
                    tokio::time::timeout(self.deadline, own.log_in(login))
                        .await
                        .map_err(|_| format!("SASL login to {addr} timed out"))??;
                }
                conn.insert(own)
            }
        };
        let result = tokio::time::timeout(self.deadline, own.call(key, version, request))
            .await
            .map_err(|_| format!("{key:?} to {addr} timed out"))
            .and_then(|r| r);
        if result.is_err() {
            // The connection's state is unknown after a failure; the next call starts afresh.
            *conn = None;
        }
        result
    }
}

fn add_sequence(seq: i32, n: i32) -> i32 {
    (i64::from(seq) + i64::from(n)).rem_euclid(i64::from(i32::MAX) + 1) as i32
}

struct OwnConn {
    stream: BufReader<BoxStream>,
    next_correlation: i32,
}

impl OwnConn {
    /// Authenticates the connection as wire-guard's own user.
    async fn log_in(&mut self, login: &Credentials) -> Result<(), String> {
        let mut handshake = SaslHandshakeRequest::default();
        handshake.mechanism = StrBytes::from_static_str(login.mechanism.name());
        let answer: SaslHandshakeResponse = self.call(ApiKey::SaslHandshake, 1, &handshake).await?;
        if answer.error_code != 0 {
            return Err(format!(
                "the broker does not offer SASL {} (error {}; it offers {:?})",
                login.mechanism.name(),
                answer.error_code,
                answer.mechanisms
            ));
        }
        let mut exchange = login.start();
        let mut server = Bytes::new();
        while let Some(message) = exchange.step(&server)? {
            let mut request = SaslAuthenticateRequest::default();
            request.auth_bytes = Bytes::from(message);
            let answer: SaslAuthenticateResponse =
                self.call(ApiKey::SaslAuthenticate, 2, &request).await?;
            if answer.error_code != 0 {
                return Err(format!(
                    "SASL {} login as {:?} refused: {}",
                    login.mechanism.name(),
                    login.username,
                    answer.error_message.as_deref().unwrap_or("no reason given")
                ));
            }
            server = answer.auth_bytes;
        }
        Ok(())
    }

    async fn call<Req: Encodable, Resp: Decodable>(
        &mut self,
        key: ApiKey,
        version: i16,
        request: &Req,
    ) -> Result<Resp, String> {
        let correlation_id = self.next_correlation;
        self.next_correlation = self.next_correlation.wrapping_add(1);
        let mut header = RequestHeader::default();
        header.request_api_key = key as i16;
        header.request_api_version = version;
        header.correlation_id = correlation_id;
        header.client_id = Some(StrBytes::from_static_str(CLIENT_ID));
        let out = frame::build(256, |buf| {
            header.encode(buf, key.request_header_version(version))?;
            request.encode(buf, version)
        })
        .map_err(|e| format!("encoding {key:?}: {e}"))?;
        self.stream
            .get_mut()
            .write_all(out.wire())
            .await
            .map_err(|e| e.to_string())?;
        self.stream
            .get_mut()
            .flush()
            .await
            .map_err(|e| e.to_string())?;
        let response = frame::read(&mut self.stream, MAX_RESPONSE, Side::Upstream)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "broker closed the connection".to_owned())?;
        let mut buf = response.payload();
        let header = ResponseHeader::decode(&mut buf, key.response_header_version(version))
            .map_err(|e| e.to_string())?;
        if header.correlation_id != correlation_id {
            return Err(format!(
                "broker answered correlation id {} to {correlation_id}",
                header.correlation_id
            ));
        }
        Resp::decode(&mut buf, version).map_err(|e| e.to_string())
    }
}

impl std::fmt::Debug for DeadLetters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetters")
            .field("bootstrap", &self.bootstrap)
            .finish_non_exhaustive()
    }
}
