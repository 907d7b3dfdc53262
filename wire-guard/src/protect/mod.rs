//! Field protection: the fields a topic rule's `fields:` names are encrypted, tokenized or
//! masked in every record produced to the topic, and revealed, masked or left protected in
//! every record fetched from it, according to who is reading.
//!
//! - [`envelope`]: the formats written into records (encrypted-field envelope, key header,
//!   tokens, masks), documented in `docs/field-protection.md`.
//! - this module: the two passes over a partition's record batches. Keys are gathered first
//!   (data keys from the KMS through its cache, one block of uses per batch; unwrapped keys
//!   for the key headers met on fetch), then the records are rewritten off the I/O threads,
//!   each field found through the value's registered schema
//!   ([`crate::schema::CompiledSchema::edit_fields`]).
//!
//! On produce, a record whose protected field cannot be found or rewritten refuses its
//! partition (`INVALID_RECORD`), and a KMS that cannot be reached refuses it with a retriable
//! error: a protected field never reaches the broker in the clear. On fetch, a field that does
//! not hold an envelope (written around the proxy) is counted, logged and masked for readers
//! outside `reveal_to`; a field that does not authenticate (changed on the broker side) is
//! masked for everyone.

pub mod envelope;
mod select;
pub mod sign;

use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
};

use bytes::Bytes;
use kafka_protocol::ResponseError;
use shared::{
    policy::{FieldAction, FieldRule, OnSignatureFailure, SignRule, TopicRule},
    principal::Principal,
};
use zeroize::Zeroizing;

use self::{
    envelope::{KEY_HEADER, KeyHeader, KeyId},
    select::Selection,
    sign::SigningKey,
};
use crate::{
    kms::{DATA_KEY_LEN, KeyRef, Kms, KmsError},
    metrics::Metrics,
    records::{Batch, RecordEdit, RecordError},
    schema::{
        CompiledSchema, Lookup, Schemas,
        fields::{EditError, FieldKind},
        framing,
    },
};

/// Why a partition could not be protected or revealed: the error code its answer carries.
#[derive(Debug)]
pub struct Refusal {
    pub error: ResponseError,
    pub message: String,
}

impl Refusal {
    fn new(error: ResponseError, message: impl Into<String>) -> Refusal {
        Refusal {
            error,
            message: message.into(),
        }
    }

    fn kms(e: &KmsError) -> Refusal {
        if e.is_retriable() {
            // The producer retries (and the consumer fetches again) once the KMS is back.
            Refusal::new(
                ResponseError::RequestTimedOut,
                format!("KMS unavailable, retry: {e}"),
            )
        } else {
            Refusal::new(
                ResponseError::UnknownServerError,
                format!("field protection: {e}"),
            )
        }
    }
}

fn record_refusal(e: RecordError) -> Refusal {
    Refusal::new(ResponseError::CorruptMessage, e.to_string())
}

/// The long-lived parts of field protection, shared by every connection.
pub struct Protection {
    /// `None` when no `kms:` backend is configured: only keyless masks can then be applied.
    pub kms: Option<Arc<dyn Kms>>,
    /// Most bytes one partition's batches may decompress to.
    pub max_decompressed: usize,
    /// The largest batch the brokers accept (`max.message.bytes`): a batch protection grows
    /// beyond it is refused `MESSAGE_TOO_LARGE` rather than sent.
    pub max_batch_bytes: usize,
}

/// The key material one field rule needs on produce.
enum ProduceKey {
    /// A data key with a block of uses reserved, ready to seal its field, and its header.
    Seal {
        /// Boxed: a cipher with its key schedule is large beside the other variants.
        sealer: Box<envelope::Sealer>,
        first_use: u32,
        header: Vec<u8>,
    },
    Token(ring::hmac::Key),
    ReversibleToken(Zeroizing<[u8; DATA_KEY_LEN]>),
    Mask(usize),
}

impl Protection {
    fn kms(&self) -> Result<&Arc<dyn Kms>, Refusal> {
        self.kms.as_ref().ok_or_else(|| {
            Refusal::new(
                ResponseError::UnknownServerError,
                "field protection needs a KMS, and none is configured (kms: in the configuration)",
            )
        })
    }

    /// The compiled schemas of every framed value in `batches`.
    async fn value_schemas(
        schemas: &Schemas,
        batches: &[Batch],
    ) -> Result<HashMap<u32, Arc<CompiledSchema>>, Refusal> {
        let mut ids = BTreeSet::new();
        for b in batches.iter().filter(|b| !b.is_control()) {
            for r in &b.records {
                if let Some(Ok((id, _))) = b.value(r).map(framing::split) {
                    ids.insert(id);
                }
            }
        }
        let mut out = HashMap::new();
        for id in ids {
            match schemas.get(id).await {
                Ok(schema) => {
                    out.insert(id, schema);
                }
                Err(Lookup::Unavailable(why)) => {
                    return Err(Refusal::new(
                        ResponseError::RequestTimedOut,
                        format!("schema registry unavailable, retry: {why}"),
                    ));
                }
                Err(other) => {
                    return Err(Refusal::new(
                        ResponseError::InvalidRecord,
                        format!("schema {id}: {other}"),
                    ));
                }
            }
        }
        Ok(out)
    }

    /// Protects the fields `rule` names in a partition's records produced to `topic`; returns
    /// the batches to send upstream.
    pub async fn on_produce(
        &self,
        topic: &str,
        rule: &TopicRule,
        records: Bytes,
        schemas: &Schemas,
        metrics: &Metrics,
    ) -> Result<Bytes, Refusal> {
        let limit = self.max_decompressed;
        let (batches, raw) = tokio::task::spawn_blocking(move || {
            let mut left = limit;
            Batch::parse_all(&records, &mut left).map(|b| (b, records))
        })
        .await
        .map_err(|e| Refusal::new(ResponseError::UnknownServerError, e.to_string()))?
        .map_err(record_refusal)?;
        let count: usize = batches.iter().map(|b| b.records.len()).sum();
        let uses = u32::try_from(count).unwrap_or(u32::MAX);
        let values = if rule.selects_fields() {
            Self::value_schemas(schemas, &batches).await?
        } else {
            HashMap::new()
        };
        let selection = Selection::new(rule, &values);
        let mut keys = Vec::with_capacity(selection.fields.len());
        for field in &selection.fields {
            keys.push(self.produce_key(topic, field, uses).await?);
        }
        let signer = match &rule.sign {
            Some(sign) => Some((self.signing_key(topic, sign).await?, sign.headers.clone())),
            None => None,
        };
        let whole = Whole {
            record_key: match &rule.encrypt_key {
                Some(w) => Some(self.record_key_cipher(topic, &w.key).await?),
                None => None,
            },
            value: match &rule.encrypt_value {
                Some(w) => Some(
                    self.seal_key(topic, &w.key, envelope::WHOLE_VALUE.to_owned(), uses)
                        .await?,
                ),
                None => None,
            },
        };
        let topic_owned = topic.to_owned();
        let max_batch_bytes = self.max_batch_bytes;
        let (selection, counts) = tokio::task::spawn_blocking(move || {
            let signing = signer
                .as_ref()
                .map(|(key, headers)| Signing { key, headers });
            let done = protect_batches(
                &topic_owned,
                &selection,
                &keys,
                &whole,
                &values,
                &batches,
                &raw,
                signing.as_ref(),
                max_batch_bytes,
            );
            (selection, done)
        })
        .await
        .map_err(|e| Refusal::new(ResponseError::UnknownServerError, e.to_string()))?;
        let (bytes, counts) = counts?;
        for (field, n) in selection.fields.iter().zip(counts) {
            metrics.field_outcome(
                topic,
                &field.path.to_string(),
                field.action.as_str(),
                "protected",
                n,
            );
        }
        Ok(bytes)
    }

    /// A data key for `uses` encryptions of `path` on `topic`, with its key header.
    async fn seal_key(
        &self,
        topic: &str,
        kms_key: &KeyRef,
        path: String,
        uses: u32,
    ) -> Result<ProduceKey, Refusal> {
        let data_key = self
            .kms()?
            .reserve_data_key(kms_key, &envelope::context(topic, &path), uses)
            .await
            .map_err(|e| {
                tracing::warn!(topic, field = %path, kms_key = %kms_key, error = %e, "no data key; partition refused, nothing sent upstream");
                Refusal::kms(&e)
            })?;
        let sealer = Box::new(envelope::Sealer::new(
            &data_key.plaintext,
            envelope::key_id(&data_key.wrapped),
            topic,
            &path,
        ));
        let header = KeyHeader {
            kms_key: data_key
                .wrapped_by
                .clone()
                .unwrap_or_else(|| kms_key.clone()),
            field: path,
            wrapped: data_key.wrapped.to_vec(),
        }
        .encode();
        Ok(ProduceKey::Seal {
            sealer,
            first_use: data_key.use_index,
            header,
        })
    }

    /// The deterministic key record keys on `topic` are sealed with.
    async fn record_key_cipher(
        &self,
        topic: &str,
        kms_key: &KeyRef,
    ) -> Result<Zeroizing<[u8; DATA_KEY_LEN]>, Refusal> {
        self.kms()?
            .derive_key(kms_key, &envelope::record_key_context(topic))
            .await
            .map_err(|e| {
                tracing::warn!(topic, kms_key = %kms_key, error = %e, "no record-key key");
                Refusal::kms(&e)
            })
    }

    /// The key `sign` signs and verifies with, derived from its KMS key.
    async fn signing_key(&self, topic: &str, sign: &SignRule) -> Result<SigningKey, Refusal> {
        let derived = self
            .kms()?
            .derive_key(&sign.key, &sign::context())
            .await
            .map_err(|e| {
                tracing::warn!(topic, kms_key = %sign.key, error = %e, "no signing key");
                Refusal::kms(&e)
            })?;
        Ok(SigningKey::new(sign.algorithm, sign.key.clone(), &derived))
    }

    async fn produce_key(
        &self,
        topic: &str,
        field: &FieldRule,
        uses: u32,
    ) -> Result<ProduceKey, Refusal> {
        let path = field.path.to_string();
        match (field.action, &field.key) {
            (FieldAction::Mask { keep_last }, None) => Ok(ProduceKey::Mask(keep_last)),
            (FieldAction::Tokenize { reversible: true }, Some(kms_key)) => {
                let derived = self
                    .kms()?
                    .derive_key(kms_key, &envelope::reversible_token_context())
                    .await
                    .map_err(|e| {
                        tracing::warn!(topic, field = %path, kms_key = %kms_key, error = %e, "no token key; partition refused");
                        Refusal::kms(&e)
                    })?;
                Ok(ProduceKey::ReversibleToken(derived))
            }
            (FieldAction::Tokenize { reversible: false }, Some(kms_key)) => {
                let derived = self
                    .kms()?
                    .derive_key(kms_key, &envelope::token_context())
                    .await
                    .map_err(|e| {
                        tracing::warn!(topic, field = %path, kms_key = %kms_key, error = %e, "no token key; partition refused");
                        Refusal::kms(&e)
                    })?;
                Ok(ProduceKey::Token(ring::hmac::Key::new(
                    ring::hmac::HMAC_SHA256,
                    derived.as_slice(),
                )))
            }
            (_, Some(kms_key)) => self.seal_key(topic, kms_key, path, uses).await,
            (action, None) => Err(Refusal::new(
                ResponseError::UnknownServerError,
                format!("field {path}: {} without a key", action.as_str()),
            )),
        }
    }

    /// Reveals, masks or leaves protected the fields `rule` names in a partition's fetched
    /// records, for `reader`; `None` when nothing changed.
    pub async fn on_fetch(
        &self,
        topic: &str,
        rule: &TopicRule,
        records: Bytes,
        reader: Option<&Principal>,
        schemas: &Schemas,
        metrics: &Metrics,
    ) -> Result<Option<Bytes>, Refusal> {
        let leaves_fields =
            rule.fields
                .iter()
                .map(|f| FetchPlan::for_field(f, reader))
                .chain(rule.tagged.iter().map(|t| {
                    FetchPlan::for_reader(t.action, t.key.is_some(), t.reveals_to(reader))
                }))
                .all(|p| matches!(p, FetchPlan::Leave));
        if leaves_fields
            && rule.sign.is_none()
            && rule.encrypt_key.is_none()
            && rule.encrypt_value.is_none()
        {
            return Ok(None);
        }
        let limit = self.max_decompressed;
        let parsed = tokio::task::spawn_blocking(move || {
            let mut left = limit;
            Batch::parse_fetched(&records, &mut left).map(|(b, end)| (b, end, records))
        })
        .await
        .map_err(|e| Refusal::new(ResponseError::UnknownServerError, e.to_string()))?;
        let (batches, end, raw) = match parsed {
            Ok(parsed) => parsed,
            Err(e) => {
                // What the broker holds is what the client gets: ciphertext at worst.
                tracing::warn!(topic, error = %e, "fetched records unreadable; passed on unchanged");
                return Ok(None);
            }
        };
        let values = if rule.selects_fields() {
            Self::value_schemas(schemas, &batches).await?
        } else {
            HashMap::new()
        };
        let selection = Selection::new(rule, &values);
        let plan: Vec<FetchPlan> = selection
            .fields
            .iter()
            .map(|f| FetchPlan::for_field(f, reader))
            .collect();
        // Unwrap the data keys of the fields this reader needs decrypted.
        let mut wanted: Vec<String> = selection
            .fields
            .iter()
            .zip(&plan)
            .filter(|(_, p)| p.decrypts())
            .map(|(f, _)| f.path.to_string())
            .collect();
        let reveal_value = rule.encrypt_value.as_ref().map(|w| w.reveals_to(reader));
        if reveal_value == Some(true) {
            wanted.push(envelope::WHOLE_VALUE.to_owned());
        }
        let mut headers: HashMap<KeyId, KeyHeader> = HashMap::new();
        // Records of a batch mostly carry the same few key headers: each is read once.
        let mut seen: std::collections::HashSet<&[u8]> = std::collections::HashSet::new();
        for b in batches.iter().filter(|b| !b.is_control()) {
            for r in &b.records {
                for h in &r.headers {
                    if b.bytes(&h.key) != KEY_HEADER.as_bytes() {
                        continue;
                    }
                    let Some(raw_header) = h.value.as_ref().map(|v| b.bytes(v)) else {
                        continue;
                    };
                    if !seen.insert(raw_header) {
                        continue;
                    }
                    if let Some(header) = KeyHeader::decode(raw_header)
                        && wanted.contains(&header.field)
                    {
                        headers
                            .entry(envelope::key_id(&header.wrapped))
                            .or_insert(header);
                    }
                }
            }
        }
        let mut unwrapped: HashMap<KeyId, envelope::Opener> = HashMap::new();
        if !headers.is_empty() {
            let kms = self.kms()?;
            for (id, header) in &headers {
                let context = envelope::context(topic, &header.field);
                match kms
                    .decrypt_data_key(&header.kms_key, &header.wrapped, &context)
                    .await
                {
                    Ok(key) => {
                        unwrapped.insert(*id, envelope::Opener::new(&key));
                    }
                    Err(e) if e.is_retriable() => return Err(Refusal::kms(&e)),
                    Err(e) => {
                        // A key the KMS refuses stays unreadable: its fields are masked.
                        tracing::warn!(topic, field = %header.field, kms_key = %header.kms_key, data_key = %crate::kms::fingerprint(&header.wrapped), error = %e, "data key refused; its fields are masked");
                    }
                }
            }
        }
        let verifier = match &rule.sign {
            Some(sign) => Some((self.signing_key(topic, sign).await?, sign.clone())),
            None => None,
        };
        let mut token_keys = HashMap::new();
        for (i, (field, plan)) in selection.fields.iter().zip(&plan).enumerate() {
            if let (FetchPlan::RevealToken, Some(kms_key)) = (plan, &field.key) {
                let derived = self
                    .kms()?
                    .derive_key(kms_key, &envelope::reversible_token_context())
                    .await
                    .map_err(|e| Refusal::kms(&e))?;
                token_keys.insert(i, derived);
            }
        }
        let whole = WholeFetch {
            reveal_value,
            record_key: match &rule.encrypt_key {
                Some(w) if w.reveals_to(reader) => {
                    Some(self.record_key_cipher(topic, &w.key).await?)
                }
                _ => None,
            },
        };
        let topic_owned = topic.to_owned();
        let (selection, done) = tokio::task::spawn_blocking(move || {
            let verifying = verifier.as_ref().map(|(key, rule)| Verifying { key, rule });
            let done = reveal_batches(
                &topic_owned,
                &selection,
                &plan,
                &unwrapped,
                &token_keys,
                &whole,
                &values,
                verifying.as_ref(),
                &batches,
                &raw,
                end,
            );
            (selection, done)
        })
        .await
        .map_err(|e| Refusal::new(ResponseError::UnknownServerError, e.to_string()))?;
        let (bytes, counts, failed) = done;
        if let Some(failed) = failed {
            metrics.field_outcome(topic, "", "sign", "failed", 1);
            tracing::warn!(topic, "fetch failed: {failed} (sign on_failure: fail)");
            return Err(Refusal::new(ResponseError::CorruptMessage, failed));
        }
        for ((field, outcome), n) in counts {
            if field == WHOLE_VALUE || field == RECORD_KEY {
                let what = if field == WHOLE_VALUE {
                    "$value"
                } else {
                    "$key"
                };
                if outcome != "revealed" {
                    tracing::warn!(
                        topic,
                        what,
                        records = n,
                        outcome,
                        "encrypted record keys or values not readable as stored"
                    );
                }
                metrics.field_outcome(topic, what, "encrypt", outcome, n);
                continue;
            }
            if field == SIGNATURE {
                if outcome != "verified" {
                    tracing::warn!(
                        topic,
                        records = n,
                        outcome,
                        "records whose signature does not verify"
                    );
                }
                metrics.field_outcome(topic, "", "sign", outcome, n);
                continue;
            }
            let rule = &selection.fields[field];
            if outcome == "plaintext_found" {
                tracing::warn!(topic, field = %rule.path, records = n, "plaintext found where the policy stores ciphertext: written around the proxy");
            } else if outcome == "unreadable" {
                tracing::warn!(topic, field = %rule.path, records = n, "encrypted field does not authenticate (changed on the broker side, or its key is refused); masked");
            }
            metrics.field_outcome(
                topic,
                &rule.path.to_string(),
                rule.action.as_str(),
                outcome,
                n,
            );
        }
        Ok(bytes)
    }
}

/// Problems with the policy's field rules that can be known before any record arrives: keys
/// whose backend is not configured, and (for rules naming literal topics with the topic
/// subject strategy) fields the subject's latest schema lacks or cannot protect in place.
/// A registry that cannot be asked is logged, not an error: records are checked as they come.
pub async fn check_policy(
    policy: &shared::policy::TopicPolicy,
    kms: Option<&crate::kms::KmsConfig>,
    schemas: Option<&Schemas>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for rule in &policy.rules {
        let named = rule
            .fields
            .iter()
            .filter_map(|f| f.key.as_ref().map(|k| (f.path.to_string(), k)))
            .chain(rule.sign.iter().map(|s| ("sign".to_owned(), &s.key)))
            .chain(
                rule.encrypt_key
                    .iter()
                    .map(|w| ("encrypt_key".to_owned(), &w.key)),
            )
            .chain(
                rule.encrypt_value
                    .iter()
                    .map(|w| ("encrypt_value".to_owned(), &w.key)),
            );
        for (what, key) in named {
            let configured = match (key, kms) {
                (crate::kms::KeyRef::Aws(_), Some(k)) => k.aws.is_some(),
                (crate::kms::KeyRef::Local(_), Some(k)) => k.local.is_some(),
                (_, None) => false,
            };
            if !configured {
                problems.push(format!(
                    "rule {}: {what} names {key}, but the {} backend is not configured (pass {}, or set kms: in the config file)",
                    rule.id,
                    key.backend(),
                    match key {
                        crate::kms::KeyRef::Aws(_) => "--kms-aws-region or --kms-aws-endpoint",
                        crate::kms::KeyRef::Local(_) => "--kms-local-keyring",
                    }
                ));
            }
        }
        let (Some(schemas), Some(value)) = (schemas, &rule.value) else {
            continue;
        };
        if !rule.selects_fields() || value.strategy != shared::policy::SubjectStrategy::Topic {
            continue;
        }
        for topic in &rule.topics {
            let shared::policy::TopicPattern::Literal(topic) = topic else {
                continue;
            };
            let subject = format!("{topic}-value");
            match schemas.latest(&subject).await {
                Ok(Some(schema)) => {
                    for field in &rule.fields {
                        if let Err(why) = schema.check_path(&field.path) {
                            problems.push(format!(
                                "rule {}: field {} in subject {subject} (schema {}): {why}",
                                rule.id, field.path, schema.id
                            ));
                        }
                    }
                    let only = HashMap::from([(schema.id, schema.clone())]);
                    let selection = Selection::new(rule, &only);
                    if let Some(why) = selection.refused.get(&schema.id) {
                        problems.push(format!("rule {}: subject {subject}: {why}", rule.id));
                    } else if !rule.tagged.is_empty() {
                        let tagged: Vec<String> = selection.fields[rule.fields.len()..]
                            .iter()
                            .map(|f| format!("{} ({})", f.path, f.action.as_str()))
                            .collect();
                        tracing::info!(rule = %rule.id, subject, schema = schema.id, fields = %tagged.join(", "), "fields selected by schema tag");
                    }
                }
                Ok(None) => {
                    tracing::info!(rule = %rule.id, subject, "no schema registered yet; protected fields are checked as records arrive")
                }
                Err(e) => {
                    tracing::warn!(rule = %rule.id, subject, error = %e, "protected fields not checked at startup: the registry did not answer; they are checked as records arrive")
                }
            }
        }
    }
    problems
}

/// What one field rule means for one reader.
#[derive(Debug, Clone, Copy)]
enum FetchPlan {
    /// Keyless masks: stored as the reader gets them.
    Leave,
    /// Tokens: stored as the reader gets them; a value that is not a token was written
    /// around the proxy and is masked.
    Token,
    /// Encrypted for a reader outside `reveal_to`: the ciphertext as stored; plaintext written
    /// around the proxy is masked.
    Withhold,
    /// Decrypted for a reader in `reveal_to`.
    Reveal,
    /// A reversible token read back for a reader in `reveal_to`.
    RevealToken,
    /// Decrypted and masked, keeping the last characters.
    Mask(usize),
}

impl FetchPlan {
    fn for_field(field: &FieldRule, reader: Option<&Principal>) -> FetchPlan {
        FetchPlan::for_reader(field.action, field.key.is_some(), field.reveals_to(reader))
    }

    /// The plan for a field with `action`, protected with a key or not, for a reader it is
    /// revealed to or not.
    fn for_reader(action: FieldAction, keyed: bool, revealed: bool) -> FetchPlan {
        if let FieldAction::Tokenize { reversible } = action {
            return if reversible && revealed {
                FetchPlan::RevealToken
            } else {
                FetchPlan::Token
            };
        }
        if !action.stored_encrypted(keyed) {
            return FetchPlan::Leave;
        }
        if revealed {
            return FetchPlan::Reveal;
        }
        match action {
            FieldAction::Mask { keep_last } => FetchPlan::Mask(keep_last),
            _ => FetchPlan::Withhold,
        }
    }

    fn decrypts(self) -> bool {
        matches!(self, FetchPlan::Reveal | FetchPlan::Mask(_))
    }
}

/// Whole record keys and values to encrypt, on produce.
struct Whole {
    /// The deterministic key record keys are sealed with.
    record_key: Option<Zeroizing<[u8; DATA_KEY_LEN]>>,
    /// A [`ProduceKey::Seal`] for whole values.
    value: Option<ProduceKey>,
}

/// The signature settings for one pass: the key, and the header names the rule signs.
pub(crate) struct Signing<'a> {
    key: &'a SigningKey,
    headers: &'a [String],
}

/// The values of the headers a signature covers, as stored in `record`.
fn signed_headers<'a>(
    batch: &'a Batch,
    record: &crate::records::Record,
    names: &'a [String],
) -> Vec<(&'a str, Option<&'a [u8]>)> {
    names
        .iter()
        .map(|name| {
            let value = record
                .headers
                .iter()
                .find(|h| batch.bytes(&h.key) == name.as_bytes())
                .and_then(|h| h.value.as_ref().map(|v| batch.bytes(v)));
            (name.as_str(), value)
        })
        .collect()
}

/// The produce pass: every record's protected fields rewritten, key headers added, and the
/// record signed. Returns the batches and, per field rule, how many fields it protected.
#[allow(clippy::too_many_arguments)]
fn protect_batches(
    topic: &str,
    selection: &Selection,
    keys: &[ProduceKey],
    whole: &Whole,
    values: &HashMap<u32, Arc<CompiledSchema>>,
    batches: &[Batch],
    raw: &Bytes,
    signing: Option<&Signing<'_>>,
    max_batch_bytes: usize,
) -> Result<(Bytes, Vec<u64>), Refusal> {
    let mut value_use = match &whole.value {
        Some(ProduceKey::Seal { first_use, .. }) => *first_use,
        _ => 0,
    };
    let fields = &selection.fields;
    let mut next_use: Vec<u32> = keys
        .iter()
        .map(|k| match k {
            ProduceKey::Seal { first_use, .. } => *first_use,
            _ => 0,
        })
        .collect();
    let mut counts = vec![0u64; fields.len()];
    let paths_of = selection.paths();
    let mut checked = std::collections::HashSet::new();
    // Which data keys a record used, for its key headers.
    let mut used = vec![false; fields.len()];
    let mut out = Vec::new();
    let mut index = 0usize;
    for batch in batches {
        if batch.is_control() {
            out.extend_from_slice(&raw[batch.raw.clone()]);
            continue;
        }
        let mut edits = Vec::with_capacity(batch.records.len());
        for record in &batch.records {
            let refuse = |why: String| {
                Refusal::new(
                    ResponseError::InvalidRecord,
                    format!("record {index}: field protection: {why}"),
                )
            };
            let value = batch.value(record);
            let mut new_value: Option<Vec<u8>> = None;
            let mut headers: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
            // A tombstone holds no field.
            if let (Some(value), true) = (value, selection.applies) {
                let (id, payload) =
                    framing::split(value).map_err(|e| refuse(format!("value: {}", e.message)))?;
                let schema = values
                    .get(&id)
                    .ok_or_else(|| refuse(format!("schema {id} unknown")))?;
                if let Some(why) = selection.refused.get(&id) {
                    return Err(refuse(why.clone()));
                }
                let mine = selection.for_schema(id);
                let paths = paths_of.get(&id).map_or(&[][..], Vec::as_slice);
                // A field the schema lacks would pass unprotected: refuse the schema instead.
                if checked.insert(id) {
                    for path in paths {
                        schema
                            .check_path(path)
                            .map_err(|why| refuse(format!("schema {id}: {why}")))?;
                    }
                }
                used.fill(false);
                let head = &value[..value.len() - payload.len()];
                let edited = schema.edit_fields(head, payload, paths, |local, kind, current| {
                    let i = mine[local];
                    let new = match &keys[i] {
                        ProduceKey::Seal { sealer, .. } => {
                            let n = next_use[i];
                            next_use[i] = n.wrapping_add(1);
                            used[i] = true;
                            sealer.seal(n, kind, current)?
                        }
                        ProduceKey::Token(mac) => envelope::token(mac, kind, current),
                        ProduceKey::ReversibleToken(key) => {
                            envelope::seal_token(key, kind, current)?
                        }
                        ProduceKey::Mask(keep_last) => envelope::mask(kind, current, *keep_last),
                    };
                    counts[i] += 1;
                    Ok::<_, envelope::SealError>(Some(new))
                });
                let edited = match edited {
                    Ok(edited) => edited,
                    Err(EditError::Shape(why)) => return Err(refuse(why)),
                    Err(EditError::Edit(e)) => return Err(refuse(e.to_string())),
                };
                if let Some(edited) = edited {
                    new_value = Some(edited);
                    for (k, used) in keys.iter().zip(&used) {
                        if let (ProduceKey::Seal { header, .. }, true) = (k, used) {
                            headers.push((KEY_HEADER.as_bytes().to_vec(), header.clone()));
                        }
                    }
                }
            }
            if let (Some(ProduceKey::Seal { sealer, header, .. }), Some(value)) =
                (&whole.value, value)
            {
                let n = value_use;
                value_use = n.wrapping_add(1);
                new_value = Some(
                    sealer
                        .seal(n, FieldKind::Bytes, value)
                        .map_err(|e| refuse(e.to_string()))?,
                );
                headers.push((KEY_HEADER.as_bytes().to_vec(), header.clone()));
            }
            let new_key = match (&whole.record_key, batch.key(record)) {
                (Some(cipher), Some(k)) => Some(
                    envelope::seal_record_key(cipher, topic, k)
                        .map_err(|e| refuse(e.to_string()))?,
                ),
                _ => None,
            };
            if let Some(signing) = signing {
                let stored = new_value.as_deref().or(value);
                let message = sign::message(
                    topic,
                    new_key.as_deref().or(batch.key(record)),
                    stored,
                    &signed_headers(batch, record, signing.headers),
                );
                headers.push((
                    sign::SIG_HEADER.as_bytes().to_vec(),
                    signing.key.sign(&message),
                ));
            }
            edits.push(
                (new_value.is_some() || new_key.is_some() || !headers.is_empty()).then(|| {
                    RecordEdit {
                        key: new_key,
                        value: new_value.or_else(|| value.map(<[u8]>::to_vec)),
                        headers,
                        drop: false,
                    }
                }),
            );
            index += 1;
        }
        if edits.iter().all(Option::is_none) {
            out.extend_from_slice(&raw[batch.raw.clone()]);
        } else {
            let rewritten = batch.rewrite(&edits).map_err(record_refusal)?;
            // Kafka takes one batch per partition per request, so a batch cannot be split
            // here: one grown past what the broker accepts is refused with the error that
            // tells producers to send smaller batches (the Java client splits and retries).
            if rewritten.len() > max_batch_bytes {
                return Err(Refusal::new(
                    ResponseError::MessageTooLarge,
                    format!(
                        "protection grew a {}-byte batch of {} records to {} bytes, over the {max_batch_bytes} the broker accepts (--max-batch-bytes); lower the producer's batch.size or raise the topic's max.message.bytes",
                        batch.raw.len(),
                        batch.records.len(),
                        rewritten.len()
                    ),
                ));
            }
            // A produced record set is mostly one batch: its rewrite becomes the set, uncopied.
            if out.is_empty() {
                out = rewritten;
            } else {
                out.extend_from_slice(&rewritten);
            }
        }
    }
    Ok((Bytes::from(out), counts))
}

/// The counts keys of signature, whole-value and record-key outcomes, beside the field
/// rules' indexes.
const SIGNATURE: usize = usize::MAX;
const WHOLE_VALUE: usize = usize::MAX - 1;
const RECORD_KEY: usize = usize::MAX - 2;

/// Whole values and record keys on fetch.
struct WholeFetch {
    /// `Some(reveal)` when values are encrypted whole: whether this reader sees them.
    reveal_value: Option<bool>,
    /// The record-key key, when keys are encrypted and this reader sees them.
    record_key: Option<Zeroizing<[u8; DATA_KEY_LEN]>>,
}

/// The verification settings for one fetch pass.
pub(crate) struct Verifying<'a> {
    key: &'a SigningKey,
    rule: &'a SignRule,
}

type Counts = HashMap<(usize, &'static str), u64>;

/// The fetch pass. Returns the new record set (or `None` when nothing changed), counts by
/// (field rule or [`SIGNATURE`], outcome), and why the fetch fails (`sign` with
/// `on_failure: fail` and a record that does not verify).
#[allow(clippy::too_many_arguments)]
fn reveal_batches(
    topic: &str,
    selection: &Selection,
    plan: &[FetchPlan],
    unwrapped: &HashMap<KeyId, envelope::Opener>,
    token_keys: &HashMap<usize, Zeroizing<[u8; DATA_KEY_LEN]>>,
    whole: &WholeFetch,
    values: &HashMap<u32, Arc<CompiledSchema>>,
    verifying: Option<&Verifying<'_>>,
    batches: &[Batch],
    raw: &Bytes,
    end: usize,
) -> (Option<Bytes>, Counts, Option<String>) {
    let aads: Vec<Vec<u8>> = selection
        .fields
        .iter()
        .map(|f| envelope::field_aad(topic, &f.path.to_string()))
        .collect();
    let whole_aad = envelope::field_aad(topic, envelope::WHOLE_VALUE);
    let paths_of = selection.paths();
    let mut counts: Counts = HashMap::new();
    let mut out = Vec::with_capacity(end);
    let mut changed = false;
    for batch in batches {
        let mut edits: Vec<Option<RecordEdit>> = Vec::new();
        if !batch.is_control() {
            for record in &batch.records {
                let value = batch.value(record);
                let mut edit: Option<RecordEdit> = None;
                if let Some(v) = verifying {
                    let message = sign::message(
                        topic,
                        batch.key(record),
                        value,
                        &signed_headers(batch, record, &v.rule.headers),
                    );
                    let header = record
                        .headers
                        .iter()
                        .find(|h| batch.bytes(&h.key) == sign::SIG_HEADER.as_bytes())
                        .and_then(|h| h.value.as_ref().map(|x| batch.bytes(x)));
                    let verdict = match header {
                        None => "missing",
                        Some(header) if v.key.verify(&message, header) => "verified",
                        Some(_) => "invalid",
                    };
                    *counts.entry((SIGNATURE, verdict)).or_default() += 1;
                    if verdict != "verified" {
                        let offset = batch.base_offset + i64::from(record.offset_delta);
                        match v.rule.on_failure {
                            OnSignatureFailure::Fail => {
                                return (
                                    None,
                                    counts,
                                    Some(format!(
                                        "the record at offset {offset} has a {verdict} signature"
                                    )),
                                );
                            }
                            OnSignatureFailure::Drop => {
                                edits.push(Some(RecordEdit {
                                    key: None,
                                    value: None,
                                    headers: Vec::new(),
                                    drop: true,
                                }));
                                continue;
                            }
                            OnSignatureFailure::Flag => {
                                edit = Some(RecordEdit {
                                    key: None,
                                    value: value.map(<[u8]>::to_vec),
                                    headers: vec![(
                                        sign::VERDICT_HEADER.as_bytes().to_vec(),
                                        verdict.as_bytes().to_vec(),
                                    )],
                                    drop: false,
                                });
                            }
                        }
                    }
                }
                let fresh = || RecordEdit {
                    key: None,
                    value: value.map(<[u8]>::to_vec),
                    headers: Vec::new(),
                    drop: false,
                };
                if let (Some(reveal), Some(v)) = (whole.reveal_value, value) {
                    match envelope::open_envelope(FieldKind::Bytes, v) {
                        Some(sealed) if reveal => {
                            let plain = unwrapped
                                .get(&sealed.key_id)
                                .and_then(|k| k.open(&sealed, &whole_aad));
                            let outcome = match plain {
                                Some(plain) => {
                                    edit.get_or_insert_with(fresh).value = Some(plain.to_vec());
                                    "revealed"
                                }
                                None => "unreadable",
                            };
                            *counts.entry((WHOLE_VALUE, outcome)).or_default() += 1;
                        }
                        Some(_) => {}
                        None => {
                            *counts.entry((WHOLE_VALUE, "plaintext_found")).or_default() += 1;
                            if !reveal {
                                edit.get_or_insert_with(fresh).value = None;
                            }
                        }
                    }
                }
                if let (Some(cipher), Some(k)) = (&whole.record_key, batch.key(record)) {
                    let outcome = match envelope::open_record_key(cipher, topic, k) {
                        Some(plain) => {
                            edit.get_or_insert_with(fresh).key = Some(plain);
                            "revealed"
                        }
                        None => "unreadable",
                    };
                    *counts.entry((RECORD_KEY, outcome)).or_default() += 1;
                }
                let revealed = value.and_then(|value| {
                    if selection.fields.is_empty() {
                        return None;
                    }
                    let (id, payload) = framing::split(value).ok()?;
                    let schema = values.get(&id)?;
                    let mine = selection.for_schema(id);
                    let paths = paths_of.get(&id).map_or(&[][..], Vec::as_slice);
                    let head = &value[..value.len() - payload.len()];
                    let edited =
                        schema.edit_fields(head, payload, paths, |local, kind, current| {
                            let i = mine[local];
                            let (new, outcome) = reveal_field(
                                plan[i],
                                kind,
                                current,
                                unwrapped,
                                token_keys.get(&i),
                                &aads[i],
                            );
                            if let Some(outcome) = outcome {
                                *counts.entry((i, outcome)).or_default() += 1;
                            }
                            Ok::<_, std::convert::Infallible>(new)
                        });
                    edited.ok().flatten()
                });
                if let Some(new) = revealed {
                    edit.get_or_insert_with(fresh).value = Some(new);
                }
                edits.push(edit);
            }
        }
        if edits.iter().all(Option::is_none) {
            out.extend_from_slice(&raw[batch.raw.clone()]);
            continue;
        }
        match batch.rewrite(&edits) {
            Ok(bytes) => {
                out.extend_from_slice(&bytes);
                changed = true;
            }
            Err(e) => {
                tracing::warn!(topic, error = %e, "rewriting a fetched batch failed; passed on unchanged");
                out.extend_from_slice(&raw[batch.raw.clone()]);
            }
        }
    }
    // A batch cut off at the fetch size is dropped only when the set changed (the client
    // fetches it again from its offset); an unchanged set goes on as received.
    (changed.then(|| Bytes::from(out)), counts, None)
}

/// One field for one reader: the replacement (if any) and the outcome to count.
fn reveal_field(
    plan: FetchPlan,
    kind: FieldKind,
    current: &[u8],
    unwrapped: &HashMap<KeyId, envelope::Opener>,
    token_key: Option<&Zeroizing<[u8; DATA_KEY_LEN]>>,
    aad: &[u8],
) -> (Option<Vec<u8>>, Option<&'static str>) {
    if let FetchPlan::RevealToken = plan {
        return match token_key.and_then(|k| envelope::open_token(k, kind, current)) {
            Some(plain) => (Some(plain), Some("revealed")),
            None if envelope::is_token(kind, current) => (None, Some("unreadable")),
            None => (None, Some("plaintext_found")),
        };
    }
    if let FetchPlan::Token = plan {
        return if envelope::is_token(kind, current) {
            (None, None)
        } else {
            (
                Some(envelope::mask(kind, current, 0)),
                Some("plaintext_found"),
            )
        };
    }
    let sealed = envelope::open_envelope(kind, current);
    match (plan, sealed) {
        (FetchPlan::Leave | FetchPlan::Token | FetchPlan::RevealToken, _) => (None, None),
        // Plaintext where ciphertext belongs: never shown to a reader who may not see it.
        (FetchPlan::Withhold | FetchPlan::Mask(_), None) => (
            Some(envelope::mask(kind, current, 0)),
            Some("plaintext_found"),
        ),
        (FetchPlan::Reveal, None) => (None, Some("plaintext_found")),
        (FetchPlan::Withhold, Some(_)) => (None, None),
        (FetchPlan::Reveal | FetchPlan::Mask(_), Some(sealed)) => {
            let plain = unwrapped
                .get(&sealed.key_id)
                .and_then(|key| key.open(&sealed, aad));
            match (plain, plan) {
                (Some(plain), FetchPlan::Reveal) => {
                    if kind == FieldKind::String && std::str::from_utf8(&plain).is_err() {
                        return (Some(envelope::mask(kind, current, 0)), Some("unreadable"));
                    }
                    (Some(plain.to_vec()), Some("revealed"))
                }
                (Some(plain), FetchPlan::Mask(keep_last)) => (
                    Some(envelope::mask(kind, &plain, keep_last)),
                    Some("masked"),
                ),
                _ => (Some(envelope::mask(kind, current, 0)), Some("unreadable")),
            }
        }
    }
}
