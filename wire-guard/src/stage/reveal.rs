//! The fetch side of field protection: in Fetch responses for topics whose rule protects
//! fields, each record's protected fields are revealed, masked or left as stored, according to
//! the reading principal ([`crate::protect::Protection::on_fetch`]).
//!
//! Fetch v13 and later name topics by id; [`crate::topic_ids`] turns ids into names. An id
//! not yet seen in a Metadata response cannot be checked against the policy, so while any
//! rule protects fields its partitions are answered `UNKNOWN_TOPIC_ID` without records: the
//! client refreshes its metadata (through the proxy, which learns the id) and fetches again.
//! A partition that cannot be served now (KMS or registry unreachable) is answered with a
//! retriable error and no records, never with fields the reader should have seen in the clear
//! shown as ciphertext.

use kafka_protocol::{
    ResponseError,
    messages::{ApiKey, FetchResponse},
};
use shared::{policy::TopicPolicy, principal::Principal};

use super::data_quality::DataQuality;
use crate::{codec, error::Error, frame::Frame, metrics::Metrics, topic_ids::TopicIds};

/// Rewrites a Fetch response for `reader` under `policy`.
pub async fn on_fetch_response(
    frame: &Frame,
    version: i16,
    policy: &TopicPolicy,
    reader: Option<&Principal>,
    stage: &DataQuality,
    topic_ids: &TopicIds,
    metrics: &Metrics,
) -> Result<Frame, Error> {
    let (header, mut response) =
        codec::decode_response_with_header::<FetchResponse>(frame, ApiKey::Fetch, version)?;
    let mut changed = false;
    let mut work = Vec::new();
    for (t, topic) in response.responses.iter_mut().enumerate() {
        let name = if version >= 13 {
            match topic_ids.name(&topic.topic_id) {
                Some(name) => name,
                None => {
                    for p in &mut topic.partitions {
                        if p.records.as_ref().is_some_and(|r| !r.is_empty()) {
                            p.error_code = ResponseError::UnknownTopicId.code();
                            p.records = None;
                            changed = true;
                        }
                    }
                    continue;
                }
            }
        } else {
            topic.topic.to_string()
        };
        let Some(rule) = policy.protection_for(&name) else {
            continue;
        };
        for (p, partition) in topic.partitions.iter().enumerate() {
            if let Some(records) = partition.records.clone().filter(|r| !r.is_empty()) {
                let name = name.clone();
                work.push(async move {
                    let outcome = stage
                        .protection
                        .on_fetch(&name, rule, records, reader, &stage.schemas, metrics)
                        .await;
                    (t, p, name, outcome)
                });
            }
        }
    }
    for (t, p, name, outcome) in futures::future::join_all(work).await {
        let partition = &mut response.responses[t].partitions[p];
        match outcome {
            Ok(None) => {}
            Ok(Some(records)) => {
                partition.records = Some(records);
                changed = true;
            }
            Err(refusal) => {
                tracing::warn!(topic = %name, partition = partition.partition_index, error = ?refusal.error, "fetched records withheld: {}", refusal.message);
                partition.error_code = refusal.error.code();
                partition.records = None;
                changed = true;
            }
        }
    }
    if !changed {
        return Ok(frame.clone());
    }
    codec::encode_response(&header, &response, ApiKey::Fetch, version, frame.len())
}
