//! The data-quality stage: every record produced to a governed topic must carry a registered
//! schema id of the right subject, decode completely under that schema, and pass the schema's
//! data-contract rules.
//!
//! For one Produce request:
//! 1. Topics no `topics:` rule governs (for this producer) are left alone; a request with none
//!    is forwarded as received.
//! 2. A governed partition's batches are parsed ([`crate::records`]), with decompression
//!    bounded and CRCs checked, off the I/O threads.
//! 3. The schema ids the records carry are looked up ([`crate::schema`]: cached by id, misses
//!    coalesced), then every key and value is checked, again off the I/O threads.
//! 4. Each failing record gets the action its rule names. The strongest wins for the
//!    partition: *retry* (the registry is unreachable and the id unknown, `fail_closed`) answers
//!    the partition `REQUEST_TIMED_OUT` so the producer retries; *reject* answers it
//!    `INVALID_RECORD` with one record error per bad record; *dead-letter* writes the bad records
//!    to the dead-letter topic ([`crate::dlq`]) and sends the rest upstream in a rebuilt batch;
//!    *audit* only logs and counts.
//! 5. Dead-lettering from an idempotent producer's batch shifts its sequences
//!    ([`super::sequences`]). A transactional batch is never split: if it holds a record bound
//!    for a dead-letter topic it is refused whole, so the producer's transaction aborts.
//!
//! A partition whose dead-letter write fails is refused with a retriable error and nothing of
//! it goes upstream: a record ends in exactly one of the two topics.

use std::{
    collections::{BTreeMap, HashMap},
    fmt::Write as _,
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use kafka_protocol::{
    ResponseError,
    messages::{
        ApiKey, ProduceRequest,
        produce_response::{BatchIndexAndErrorMessage, PartitionProduceResponse},
    },
    protocol::StrBytes,
};
use shared::{
    policy::{OnInvalid, RecordRule, RegistryUnavailable, TopicPolicy, TopicRule},
    principal::Principal,
};

use super::{
    LocalPartition, ProduceAction,
    sequences::{Key, Sequences},
};
use crate::{
    codec,
    dlq::DeadLetters,
    error::{Error, Side},
    frame::Frame,
    limits::Budget,
    metrics::Metrics,
    protect::Protection,
    records::{Batch, OwnedRecord, RecordError, set_base_sequence},
    schema::{self, CompiledSchema, Lookup, OnFailure, Schemas},
};

/// Who is producing, for rule selection, logs and dead-letter headers.
pub struct Producer<'a> {
    pub principal: Option<&'a Principal>,
    pub conn: u64,
}

/// The stage's long-lived parts, shared by every connection.
pub struct DataQuality {
    pub schemas: Schemas,
    pub dead_letters: DeadLetters,
    pub sequences: Sequences,
    /// Most bytes one request's batches may decompress to.
    pub max_decompressed: usize,
    /// Protects the fields a rule names, in the records that go upstream.
    pub protection: Protection,
}

/// What happens to one record.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Action {
    Deliver,
    Audit,
    DeadLetter(String),
    Reject,
    /// The registry could not be asked and the policy fails closed: the producer retries.
    Retry,
}

/// Why one key or value failed.
#[derive(Debug, Clone)]
struct Finding {
    field: &'static str,
    reason: &'static str,
    rule: String,
    schema_id: Option<u32>,
    message: String,
    action: Action,
}

impl Finding {
    fn describe(&self) -> String {
        format!(
            "{} ({}): rule {}: {}",
            self.field, self.reason, self.rule, self.message
        )
    }
}

/// One governed partition's verdicts, record by record in partition order.
struct Verdicts {
    batches: Vec<Batch>,
    findings: Vec<Vec<Finding>>,
}

/// Checks every record of `batches` off the I/O threads.
async fn check_all(
    batches: Vec<Batch>,
    topic: &str,
    rule: &TopicRule,
    schemas: Arc<HashMap<u32, Result<Arc<CompiledSchema>, Lookup>>>,
) -> Result<Verdicts, (ResponseError, String)> {
    let rule = rule.clone();
    let topic = topic.to_owned();
    // The subjects the naming strategy fixes by topic alone, once per partition rather than
    // once per record: [key, value].
    let named = [(true, &rule.key), (false, &rule.value)].map(|(is_key, record_rule)| {
        record_rule
            .as_ref()
            .and_then(|r| r.strategy.subject(&topic, is_key, None))
    });
    tokio::task::spawn_blocking(move || {
        let findings = batches
            .iter()
            .flat_map(|b| b.records.iter().map(move |r| (b, r)))
            .map(|(b, r)| check_record(&topic, &rule, &named, &schemas, b.key(r), b.value(r)))
            .collect();
        Verdicts { batches, findings }
    })
    .await
    .map_err(|join| {
        (
            ResponseError::UnknownServerError,
            format!("record check failed: {join}"),
        )
    })
}

impl Verdicts {
    /// Schema ids that failed a subject check.
    fn subject_mismatches(&self) -> std::collections::BTreeSet<u32> {
        self.findings
            .iter()
            .flatten()
            .filter(|f| matches!(f.reason, "wrong_subject" | "subject_not_allowed"))
            .filter_map(|f| f.schema_id)
            .collect()
    }

    fn action(&self, i: usize) -> Action {
        self.findings[i]
            .iter()
            .map(|f| f.action.clone())
            .max()
            .unwrap_or(Action::Deliver)
    }
}

fn partition_answer(index: i32, error: ResponseError, message: String) -> PartitionProduceResponse {
    let mut p = PartitionProduceResponse::default();
    p.index = index;
    p.error_code = error.code();
    p.base_offset = -1;
    p.log_append_time_ms = -1;
    p.log_start_offset = -1;
    p.error_message = Some(StrBytes::from_string(message));
    p
}

fn record_error_code(e: &RecordError) -> ResponseError {
    match e {
        RecordError::Magic(_) => ResponseError::UnsupportedForMessageFormat,
        RecordError::TooLarge { .. } => ResponseError::RecordListTooLarge,
        _ => ResponseError::CorruptMessage,
    }
}

impl DataQuality {
    /// Checks a Produce request against `policy`.
    pub async fn on_produce(
        &self,
        frame: &Frame,
        version: i16,
        policy: &TopicPolicy,
        producer: &Producer<'_>,
        metrics: &Metrics,
        budget: &Budget,
    ) -> Result<ProduceAction, Error> {
        let governs = |name: &str| policy.rule_for(name, producer.principal);
        // Fields are protected whoever produces: the rule that checks a producer's records
        // need not be the one that protects the topic's fields.
        let protects = |name: &str| policy.protection_for(name);
        let (header, mut request) =
            codec::decode_request::<ProduceRequest>(frame, ApiKey::Produce, version)?;
        if !request
            .topic_data
            .iter()
            .any(|t| governs(&t.name).is_some() || protects(&t.name).is_some())
        {
            return Ok(ProduceAction::Forward);
        }
        // Partitions are checked concurrently: their dead-letter writes and registry lookups
        // overlap instead of queueing behind each other.
        let mut checks = Vec::new();
        for (t, topic) in request.topic_data.iter().enumerate() {
            let rule = governs(&topic.name);
            let protect = protects(&topic.name);
            if rule.is_none() && protect.is_none() {
                continue;
            }
            for (p, data) in topic.partition_data.iter().enumerate() {
                if let Some(records) = data.records.clone() {
                    let name = topic.name.to_string();
                    let index = data.index;
                    checks.push(async move {
                        let checked = match rule {
                            Some(rule) => {
                                let hidden = protect.is_some_and(TopicRule::hides_content);
                                self.partition(
                                    &name,
                                    index,
                                    records.clone(),
                                    rule,
                                    hidden,
                                    producer,
                                    metrics,
                                    budget,
                                )
                                .await
                            }
                            None => Outcome::Unchanged,
                        };
                        let outcome = match protect {
                            Some(protect) => {
                                self.protect(
                                    &name, index, records, checked, protect, producer, metrics,
                                )
                                .await
                            }
                            None => checked,
                        };
                        (t, p, outcome)
                    });
                }
            }
        }
        let outcomes = futures::future::join_all(checks).await;
        let mut changed = false;
        let mut local = Vec::new();
        let mut answered = std::collections::HashSet::new();
        for (t, p, outcome) in outcomes {
            let topic = &mut request.topic_data[t];
            match outcome {
                Outcome::Unchanged => {}
                Outcome::Replace(bytes) => {
                    topic.partition_data[p].records = Some(bytes);
                    changed = true;
                }
                Outcome::Answer(response) => {
                    changed = true;
                    answered.insert((t, p));
                    local.push(LocalPartition {
                        topic: topic.name.clone(),
                        response,
                    });
                }
            }
        }
        for (t, topic) in request.topic_data.iter_mut().enumerate() {
            let mut p = 0;
            topic.partition_data.retain(|_| {
                let keep = !answered.contains(&(t, p));
                p += 1;
                keep
            });
        }
        if !changed {
            return Ok(ProduceAction::Forward);
        }
        request.topic_data.retain(|t| !t.partition_data.is_empty());
        if request.topic_data.is_empty() {
            return Ok(ProduceAction::Respond(local));
        }
        let request =
            codec::encode_request(&header, &request, ApiKey::Produce, version, frame.len())?;
        Ok(ProduceAction::ForwardChanged { request, local })
    }

    #[allow(clippy::too_many_arguments)]
    /// `hidden`: the topic's content is protected (see [`TopicRule::hides_content`]), so its
    /// invalid records cannot be dead-lettered as produced.
    async fn partition(
        &self,
        topic: &str,
        partition: i32,
        records: Bytes,
        rule: &TopicRule,
        hidden: bool,
        producer: &Producer<'_>,
        metrics: &Metrics,
        budget: &Budget,
    ) -> Outcome {
        let limit = self.max_decompressed;
        let parsed = tokio::task::spawn_blocking(move || {
            let mut left = limit;
            Batch::parse_all(&records, &mut left).map(|b| (b, records))
        })
        .await;
        let (batches, raw) = match parsed {
            Ok(Ok(parsed)) => parsed,
            Ok(Err(e)) => {
                tracing::warn!(conn = producer.conn, topic, partition, rule = %rule.id, error = %e, "refusing unreadable record batch");
                metrics.record_outcome(topic, &rule.id, "rejected", 1);
                return Outcome::Answer(partition_answer(
                    partition,
                    record_error_code(&e),
                    e.to_string(),
                ));
            }
            Err(join) => {
                return Outcome::Answer(partition_answer(
                    partition,
                    ResponseError::UnknownServerError,
                    format!("record check failed: {join}"),
                ));
            }
        };
        // Decompressed records count against the buffer budget like the frames they came in;
        // uncompressed ones are views of the request's bytes, already counted.
        let decompressed: usize = batches
            .iter()
            .filter(|b| b.codec() != crate::records::Codec::None)
            .map(Batch::data_len)
            .sum();
        let _held = match budget.reserve(decompressed, Side::Client).await {
            Ok(held) => held,
            Err(e) => {
                return Outcome::Answer(partition_answer(
                    partition,
                    ResponseError::RecordListTooLarge,
                    e.to_string(),
                ));
            }
        };
        let mut schemas = self.fetch_schemas(&batches, rule).await;
        let mut verdicts = match check_all(batches, topic, rule, schemas.clone()).await {
            Ok(v) => v,
            Err(answer) => return Outcome::Answer(partition_answer(partition, answer.0, answer.1)),
        };
        // A subject mismatch may only mean the cached subject list is older than the
        // registration the producer used: look once more before deciding.
        let mut stale = false;
        for id in verdicts.subject_mismatches() {
            stale |= self.schemas.refresh(id).await;
        }
        if stale {
            schemas = self.fetch_schemas(&verdicts.batches, rule).await;
            verdicts = match check_all(verdicts.batches, topic, rule, schemas).await {
                Ok(v) => v,
                Err(answer) => {
                    return Outcome::Answer(partition_answer(partition, answer.0, answer.1));
                }
            };
        }
        self.decide(
            topic, partition, raw, rule, hidden, verdicts, producer, metrics,
        )
        .await
    }

    /// Protects the fields `rule` names in what goes upstream for one partition (`raw` when
    /// the checks left it unchanged).
    #[allow(clippy::too_many_arguments)]
    async fn protect(
        &self,
        topic: &str,
        partition: i32,
        raw: Bytes,
        checked: Outcome,
        rule: &TopicRule,
        producer: &Producer<'_>,
        metrics: &Metrics,
    ) -> Outcome {
        let upstream = match checked {
            Outcome::Unchanged => raw,
            Outcome::Replace(bytes) => bytes,
            answered @ Outcome::Answer(_) => return answered,
        };
        match self
            .protection
            .on_produce(topic, rule, upstream, &self.schemas, metrics)
            .await
        {
            Ok(protected) => Outcome::Replace(protected),
            Err(refusal) => {
                tracing::warn!(conn = producer.conn, topic, partition, policy = %rule.id, error = ?refusal.error, "{}", refusal.message);
                metrics.record_outcome(topic, &rule.id, "protection_refused", 1);
                Outcome::Answer(partition_answer(partition, refusal.error, refusal.message))
            }
        }
    }

    /// Looks up every schema id the governed keys and values carry, at most once each.
    async fn fetch_schemas(
        &self,
        batches: &[Batch],
        rule: &TopicRule,
    ) -> Arc<HashMap<u32, Result<Arc<CompiledSchema>, Lookup>>> {
        let mut ids = std::collections::BTreeSet::new();
        for b in batches {
            for r in &b.records {
                if rule.key.is_some()
                    && let Some(Ok((id, _))) = b.key(r).map(schema::framing::split)
                {
                    ids.insert(id);
                }
                if rule.value.is_some()
                    && let Some(Ok((id, _))) = b.value(r).map(schema::framing::split)
                {
                    ids.insert(id);
                }
            }
        }
        let lookups = futures::future::join_all(ids.iter().map(|id| self.schemas.get(*id))).await;
        Arc::new(ids.into_iter().zip(lookups).collect())
    }

    #[allow(clippy::too_many_arguments)]
    async fn decide(
        &self,
        topic: &str,
        partition: i32,
        raw: Bytes,
        rule: &TopicRule,
        hidden: bool,
        verdicts: Verdicts,
        producer: &Producer<'_>,
        metrics: &Metrics,
    ) -> Outcome {
        let principal = producer.principal.map(ToString::to_string);
        let principal_log = principal.as_deref().unwrap_or("ANONYMOUS");
        let total = verdicts.findings.len();
        let worst = (0..total)
            .map(|i| verdicts.action(i))
            .max()
            .unwrap_or(Action::Deliver);
        let log = |i: usize, outcome: &str| {
            for f in &verdicts.findings[i] {
                tracing::warn!(
                    conn = producer.conn,
                    topic,
                    partition,
                    record = i,
                    outcome,
                    rule = %f.rule,
                    policy = %rule.id,
                    reason = f.reason,
                    field = f.field,
                    schema_id = f.schema_id,
                    principal = principal_log,
                    "{}",
                    f.message
                );
            }
        };
        let failing: Vec<usize> = (0..total)
            .filter(|i| !verdicts.findings[*i].is_empty())
            .collect();
        match worst {
            Action::Deliver => {
                metrics.record_outcome(topic, &rule.id, "valid", total);
                return self.translate_only(topic, partition, raw, &verdicts);
            }
            Action::Audit => {
                for &i in &failing {
                    log(i, "audited");
                }
                metrics.record_outcome(topic, &rule.id, "valid", total - failing.len());
                metrics.record_outcome(topic, &rule.id, "audited", failing.len());
                return self.translate_only(topic, partition, raw, &verdicts);
            }
            Action::Retry => {
                let first = failing
                    .iter()
                    .find(|i| verdicts.action(**i) == Action::Retry)
                    .map(|i| verdicts.findings[*i][0].describe())
                    .unwrap_or_default();
                tracing::warn!(conn = producer.conn, topic, partition, policy = %rule.id, "schema registry unavailable; producer asked to retry: {first}");
                metrics.record_outcome(topic, &rule.id, "retried", total);
                return Outcome::Answer(partition_answer(
                    partition,
                    ResponseError::RequestTimedOut,
                    first,
                ));
            }
            Action::Reject => {
                for &i in &failing {
                    log(i, "rejected");
                }
                metrics.record_outcome(topic, &rule.id, "rejected", failing.len());
                return Outcome::Answer(reject(partition, &verdicts, &failing));
            }
            Action::DeadLetter(_) => {}
        }
        // Invalid records that cannot be moved aside are refused with the rest: a transaction
        // is all or nothing, and a dead letter would hold protected fields in the clear.
        let refused = if verdicts.batches.iter().any(Batch::is_transactional) {
            Some("a transactional batch cannot be split")
        } else if hidden {
            Some(
                "not dead-lettered: the topic's fields are protected, and the dead-letter topic would hold them in the clear",
            )
        } else {
            None
        };
        if let Some(why) = refused {
            for &i in &failing {
                log(i, "rejected");
            }
            metrics.record_outcome(topic, &rule.id, "rejected", failing.len());
            let mut answer = reject(partition, &verdicts, &failing);
            answer.error_message = Some(StrBytes::from_string(format!(
                "{why}; {} invalid record(s): {}",
                failing.len(),
                verdicts.findings[failing[0]][0].describe()
            )));
            return Outcome::Answer(answer);
        }

        // Dead letters first; the rest goes upstream only once they are safely written.
        let mut letters: BTreeMap<String, Vec<OwnedRecord>> = BTreeMap::new();
        let mut index = 0;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        for batch in &verdicts.batches {
            let retry = batch.is_idempotent()
                && self.sequences.is_retry(
                    &seq_key(batch, topic, partition),
                    batch.producer_epoch,
                    batch.base_sequence,
                    batch.records.len() as i32,
                );
            for record in &batch.records {
                if let Action::DeadLetter(dlq) = verdicts.action(index)
                    && !retry
                {
                    let f = &verdicts.findings[index];
                    letters.entry(dlq).or_default().push(dead_letter(
                        batch,
                        record,
                        f,
                        topic,
                        partition,
                        principal.as_deref(),
                        now,
                    ));
                }
                index += 1;
            }
        }
        for (dlq, records) in &letters {
            if let Err(e) = self.dead_letters.write(dlq, partition, records).await {
                tracing::warn!(conn = producer.conn, topic, partition, dead_letter_topic = %dlq, policy = %rule.id, error = %e, "dead-letter write failed; partition refused with a retriable error");
                metrics.record_outcome(topic, &rule.id, "retried", total);
                return Outcome::Answer(partition_answer(
                    partition,
                    ResponseError::NotEnoughReplicas,
                    format!("dead-letter write failed, retry: {e}"),
                ));
            }
        }
        let mut dead = 0;
        for &i in &failing {
            match verdicts.action(i) {
                Action::DeadLetter(_) => {
                    dead += 1;
                    log(i, "dead_lettered");
                }
                _ => log(i, "audited"),
            }
        }
        metrics.record_outcome(topic, &rule.id, "dead_lettered", dead);
        metrics.record_outcome(topic, &rule.id, "valid", total - dead);

        let mut out = Vec::with_capacity(raw.len());
        let mut index = 0;
        for batch in &verdicts.batches {
            let n = batch.records.len();
            let keep: Vec<bool> = (index..index + n)
                .map(|i| !matches!(verdicts.action(i), Action::DeadLetter(_)))
                .collect();
            index += n;
            let kept = keep.iter().filter(|k| **k).count();
            let base = if batch.is_idempotent() {
                self.sequences
                    .translate(
                        &seq_key(batch, topic, partition),
                        batch.producer_epoch,
                        batch.base_sequence,
                        n as i32,
                        kept as i32,
                    )
                    .upstream_base
            } else {
                batch.base_sequence
            };
            if kept == 0 {
                continue;
            }
            if kept == n {
                let start = out.len();
                out.extend_from_slice(&raw[batch.raw.clone()]);
                if base != batch.base_sequence {
                    set_base_sequence(&mut out[start..], base);
                }
                continue;
            }
            match batch.rebuild(|i| keep[i], base) {
                Ok(bytes) => out.extend_from_slice(&bytes),
                Err(e) => {
                    return Outcome::Answer(partition_answer(
                        partition,
                        ResponseError::UnknownServerError,
                        format!("rebuilding the batch failed: {e}"),
                    ));
                }
            }
        }
        if out.is_empty() {
            // Every record went to the dead-letter topic: nothing to send, and the producer
            // hears success for records it will find there.
            let mut ok =
                partition_answer(partition, ResponseError::UnknownServerError, String::new());
            ok.error_code = 0;
            ok.error_message = None;
            return Outcome::Answer(ok);
        }
        Outcome::Replace(Bytes::from(out))
    }

    /// A partition with nothing to remove still needs its sequences moved if earlier batches
    /// of its producer lost records.
    fn translate_only(
        &self,
        topic: &str,
        partition: i32,
        raw: Bytes,
        verdicts: &Verdicts,
    ) -> Outcome {
        let mut out: Option<Vec<u8>> = None;
        for batch in &verdicts.batches {
            if !batch.is_idempotent() {
                continue;
            }
            let n = batch.records.len() as i32;
            let base = self
                .sequences
                .translate(
                    &seq_key(batch, topic, partition),
                    batch.producer_epoch,
                    batch.base_sequence,
                    n,
                    n,
                )
                .upstream_base;
            if base != batch.base_sequence {
                let bytes = out.get_or_insert_with(|| raw.to_vec());
                set_base_sequence(&mut bytes[batch.raw.clone()], base);
            }
        }
        match out {
            Some(bytes) => Outcome::Replace(Bytes::from(bytes)),
            None => Outcome::Unchanged,
        }
    }
}

enum Outcome {
    Unchanged,
    Replace(Bytes),
    Answer(PartitionProduceResponse),
}

fn seq_key(batch: &Batch, topic: &str, partition: i32) -> Key {
    Key {
        producer_id: batch.producer_id,
        topic: topic.to_owned(),
        partition,
    }
}

fn reject(partition: i32, verdicts: &Verdicts, failing: &[usize]) -> PartitionProduceResponse {
    let mut summary = format!("{} invalid record(s)", failing.len());
    if let Some(first) = failing.first() {
        let _ = write!(
            summary,
            "; record {first}: {}",
            verdicts.findings[*first][0].describe()
        );
    }
    let mut answer = partition_answer(partition, ResponseError::InvalidRecord, summary);
    answer.record_errors = failing
        .iter()
        .map(|&i| {
            let mut e = BatchIndexAndErrorMessage::default();
            e.batch_index = i as i32;
            let message = verdicts.findings[i]
                .iter()
                .map(Finding::describe)
                .collect::<Vec<_>>()
                .join("; ");
            e.batch_index_error_message = Some(StrBytes::from_string(message));
            e
        })
        .collect();
    answer
}

/// The dead-letter copy of a record: its key, value and headers unchanged, then headers saying
/// why, where from and who.
fn dead_letter(
    batch: &Batch,
    record: &crate::records::Record,
    findings: &[Finding],
    topic: &str,
    partition: i32,
    principal: Option<&str>,
    now: i64,
) -> OwnedRecord {
    let mut headers: Vec<(Vec<u8>, Option<Vec<u8>>)> = record
        .headers
        .iter()
        .map(|h| {
            (
                batch.bytes(&h.key).to_vec(),
                h.value.as_ref().map(|v| batch.bytes(v).to_vec()),
            )
        })
        .collect();
    let first = findings
        .iter()
        .find(|f| matches!(f.action, Action::DeadLetter(_)))
        .unwrap_or(&findings[0]);
    let mut put = |k: &str, v: String| headers.push((k.as_bytes().to_vec(), Some(v.into_bytes())));
    put("wire-guard.reason", first.reason.to_owned());
    put("wire-guard.rule", first.rule.clone());
    put("wire-guard.field", first.field.to_owned());
    put("wire-guard.message", first.message.clone());
    put("wire-guard.topic", topic.to_owned());
    put("wire-guard.partition", partition.to_string());
    if let Some(id) = first.schema_id {
        put("wire-guard.schema-id", id.to_string());
    }
    if let Some(p) = principal {
        put("wire-guard.principal", p.to_owned());
    }
    put("wire-guard.time", now.to_string());
    OwnedRecord {
        timestamp: batch.timestamp(record),
        key: batch.key(record).map(<[u8]>::to_vec),
        value: batch.value(record).map(<[u8]>::to_vec),
        headers,
    }
}

fn policy_action(rule: &RecordRule) -> Action {
    match &rule.on_invalid {
        OnInvalid::Reject => Action::Reject,
        OnInvalid::Audit => Action::Audit,
        OnInvalid::DeadLetter(topic) => Action::DeadLetter(topic.clone()),
    }
}

/// Checks a record's key and value against the rule.
fn check_record(
    topic: &str,
    rule: &TopicRule,
    named: &[Option<String>; 2],
    schemas: &HashMap<u32, Result<Arc<CompiledSchema>, Lookup>>,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
) -> Vec<Finding> {
    let mut findings = Vec::new();
    for (field, is_key, record_rule, named, bytes) in [
        ("key", true, rule.key.as_ref(), &named[0], key),
        ("value", false, rule.value.as_ref(), &named[1], value),
    ] {
        // A null key or value (a tombstone) carries no schema to check.
        let (Some(record_rule), Some(bytes)) = (record_rule, bytes) else {
            continue;
        };
        check_field(
            topic,
            &rule.id,
            field,
            is_key,
            record_rule,
            named.as_deref(),
            schemas,
            bytes,
            &mut findings,
        );
    }
    findings
}

#[allow(clippy::too_many_arguments)]
fn check_field(
    topic: &str,
    rule_id: &str,
    field: &'static str,
    is_key: bool,
    rule: &RecordRule,
    named: Option<&str>,
    schemas: &HashMap<u32, Result<Arc<CompiledSchema>, Lookup>>,
    bytes: &[u8],
    findings: &mut Vec<Finding>,
) {
    let audit = matches!(rule.on_invalid, OnInvalid::Audit);
    let mut fail =
        |reason: &'static str, schema_id: Option<u32>, message: String, action: Action| {
            findings.push(Finding {
                field,
                reason,
                rule: rule_id.to_owned(),
                schema_id,
                message,
                action: if audit { Action::Audit } else { action },
            });
        };
    let (id, payload) = match schema::framing::split(bytes) {
        Ok(split) => split,
        Err(invalid) => {
            fail(
                invalid.reason.as_str(),
                None,
                invalid.message,
                policy_action(rule),
            );
            return;
        }
    };
    let compiled = match schemas.get(&id) {
        Some(Ok(compiled)) => compiled,
        Some(Err(Lookup::NotFound)) | None => {
            fail(
                "unknown_schema_id",
                Some(id),
                format!("schema id {id} is not registered"),
                policy_action(rule),
            );
            return;
        }
        Some(Err(Lookup::Unavailable(why))) => {
            if rule.registry_unavailable == RegistryUnavailable::FailClosed {
                fail(
                    "registry_unavailable",
                    Some(id),
                    format!("schema id {id} could not be looked up: {why}"),
                    Action::Retry,
                );
            }
            return;
        }
        Some(Err(Lookup::Unusable(why))) => {
            fail(
                "unusable_schema",
                Some(id),
                format!("schema id {id} cannot be used: {why}"),
                policy_action(rule),
            );
            return;
        }
    };
    // The subject checks that need no record name come first: a record carrying another
    // subject's schema id is refused for that, whatever its bytes decode to.
    let wrong_subject = |expected: &str| {
        format!(
            "schema id {id} is registered under {:?}, not {expected:?}",
            compiled.subjects
        )
    };
    if let Some(expected) = named
        && !compiled.subjects.iter().any(|s| s == expected)
    {
        fail(
            "wrong_subject",
            Some(id),
            wrong_subject(expected),
            policy_action(rule),
        );
        return;
    }
    if let Some(allowed) = &rule.subjects
        && !compiled
            .subjects
            .iter()
            .any(|s| allowed.iter().any(|p| p.matches(s)))
    {
        fail(
            "subject_not_allowed",
            Some(id),
            format!(
                "schema id {id}'s subjects {:?} are not in the allow-list",
                compiled.subjects
            ),
            policy_action(rule),
        );
        return;
    }
    let validated = match compiled.validate(payload) {
        Ok(v) => v,
        Err(invalid) => {
            fail(
                invalid.reason.as_str(),
                Some(id),
                invalid.message,
                policy_action(rule),
            );
            return;
        }
    };
    if named.is_none() {
        match rule
            .strategy
            .subject(topic, is_key, validated.record_name.as_deref())
        {
            Some(expected) if compiled.subjects.contains(&expected) => {}
            Some(expected) => {
                fail(
                    "wrong_subject",
                    Some(id),
                    wrong_subject(&expected),
                    policy_action(rule),
                );
                return;
            }
            None => {
                fail(
                    "wrong_subject",
                    Some(id),
                    format!(
                        "schema id {id} names no record, so the {} strategy has no subject to check",
                        rule.strategy
                    ),
                    policy_action(rule),
                );
                return;
            }
        }
    }
    for failure in validated.failed_rules {
        let action = match failure.on_failure {
            OnFailure::Error => Action::Reject,
            OnFailure::DeadLetter(topic) => Action::DeadLetter(topic),
            OnFailure::None => Action::Audit,
        };
        findings.push(Finding {
            field,
            reason: "condition_failed",
            rule: failure.rule,
            schema_id: Some(id),
            message: failure.message,
            action: if audit { Action::Audit } else { action },
        });
    }
}
