//! The `topics:` section: what records produced to governed topics must look like.
//!
//! wire-guard evaluates these rules on Produce. For each (topic, producer) it takes the
//! *first* rule, in file-name then file order, whose `match` covers the topic and whose
//! `principals` (when present) cover the producer; that one rule decides for every record of
//! the partition. Unlike `registry:` rules, order matters here: a narrow rule (one producer,
//! one topic) listed before a broad one overrides it for that producer. A topic no rule
//! covers is not governed and its records pass untouched.
//!
//! Topic patterns have the same shape and anchoring as subject patterns (a literal,
//! `PREFIX*`, or `*`), restricted to the characters Kafka allows in a topic name, so a
//! pattern that could never match a real topic is refused when the file is loaded.

use std::fmt;

use super::{
    fields::{FieldRule, SignRule, TaggedFields, WholeRule},
    registry::SubjectPattern,
};
use crate::principal::{Principal, PrincipalPattern};

/// The longest topic name Kafka accepts (`Topic.MAX_NAME_LENGTH`).
pub const MAX_TOPIC_NAME_LEN: usize = 249;

/// Every `topics:` rule of a policy directory, in evaluation order.
#[derive(Debug, Clone, Default)]
pub struct TopicPolicy {
    pub rules: Vec<TopicRule>,
}

impl TopicPolicy {
    /// No rule at all: wire-guard need not decode a single Produce request.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The first rule (in file order, then rule order) whose `match` covers `topic` and whose
    /// principals (if any) cover `principal`; `None` means the topic is not governed for this
    /// producer.
    ///
    /// `principal` is `None` for a connection that did not authenticate. A rule that lists
    /// principals never applies to such a producer, not even through `*`, which means "any
    /// authenticated producer"; a rule without `principals:` applies to everyone.
    pub fn rule_for(&self, topic: &str, principal: Option<&Principal>) -> Option<&TopicRule> {
        self.rules.iter().find(|r| r.applies_to(topic, principal))
    }

    /// Whether some rule protects fields, so that Fetch responses must be read.
    pub fn protects_fields(&self) -> bool {
        self.rules.iter().any(TopicRule::protects)
    }

    /// The rule whose `fields:` protect `topic`: the first that matches the topic and protects
    /// fields, whatever its `principals` (fields are protected whoever produces, and a consumer
    /// is served under the same rule whoever produced the records). The rule that checks a
    /// producer's records ([`TopicPolicy::rule_for`]) may be another.
    pub fn protection_for(&self, topic: &str) -> Option<&TopicRule> {
        self.rules
            .iter()
            .find(|r| r.protects() && r.topics.iter().any(|t| t.matches(topic)))
    }
}

/// One validated `topics:` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicRule {
    /// Unique across the directory, `registry:` rules included; wire-guard names it in logs,
    /// metrics and dead-letter headers so a refused record can be traced to its rule.
    pub id: String,
    /// The topics the rule governs (`match:` in the file); never empty.
    pub topics: Vec<TopicPattern>,
    /// `None`: every producer, authenticated or not. `Some`: only producers matching one
    /// entry, so a rule can single out one application (never empty).
    pub principals: Option<Vec<PrincipalPattern>>,
    /// What record keys must look like; `None` leaves keys unchecked.
    pub key: Option<RecordRule>,
    /// What record values must look like; `None` leaves values unchecked. Validation
    /// guarantees that `key` and `value` are not both `None`.
    pub value: Option<RecordRule>,
    /// Fields of the value protected on produce and revealed, masked or left protected on
    /// fetch (`fields:`). Validation guarantees a `value:` rule when this is not empty: a
    /// field is found through the value's registered schema.
    pub fields: Vec<FieldRule>,
    /// Fields of the value selected by schema tag (`fields:` entries with `tags:`). A field
    /// named by path in `fields` keeps that entry's action; among tag entries, the first
    /// that selects a field decides.
    pub tagged: Vec<TaggedFields>,
    /// Records produced to the topic are signed and fetched ones verified (`sign:`).
    pub sign: Option<SignRule>,
    /// The record key is encrypted deterministically (`encrypt_key:`).
    pub encrypt_key: Option<WholeRule>,
    /// The whole value is encrypted (`encrypt_value:`); never together with `fields`.
    pub encrypt_value: Option<WholeRule>,
}

impl TopicRule {
    /// Whether the rule protects fields of the value, by path or by schema tag.
    pub fn selects_fields(&self) -> bool {
        !self.fields.is_empty() || !self.tagged.is_empty()
    }

    /// Whether what the broker stores differs from what producers send in content, not only
    /// in added headers: fields, keys or values encrypted, tokenized or masked (signing alone
    /// hides nothing).
    pub fn hides_content(&self) -> bool {
        self.selects_fields() || self.encrypt_key.is_some() || self.encrypt_value.is_some()
    }

    /// Whether the rule protects the topic's records: fields or signatures.
    pub fn protects(&self) -> bool {
        self.hides_content() || self.sign.is_some()
    }
}

impl TopicRule {
    /// Does this rule govern records that `principal` produces to `topic`?
    pub fn applies_to(&self, topic: &str, principal: Option<&Principal>) -> bool {
        self.topics.iter().any(|t| t.matches(topic))
            && match &self.principals {
                None => true,
                Some(patterns) => principal.is_some_and(|p| patterns.iter().any(|m| m.matches(p))),
            }
    }

    /// The rule for keys (`is_key`) or values.
    pub fn record(&self, is_key: bool) -> Option<&RecordRule> {
        if is_key {
            self.key.as_ref()
        } else {
            self.value.as_ref()
        }
    }
}

/// A topic pattern: `*`, a literal topic name, or a prefix glob.
///
/// As with [`SubjectPattern`], the only wildcard is a single trailing `*`, every other
/// character is literal (`.` is a dot), and the pattern is anchored at both ends:
/// `payments.*` matches `payments.card` and `payments.`, never `xpayments.card` nor
/// `paymentsXcard`; the literal `orders` matches only `orders`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicPattern {
    /// `*`: every topic.
    Any,
    /// A topic name, compared exactly.
    Literal(String),
    /// `PREFIX*`: every topic starting with `PREFIX`.
    Prefix(String),
}

impl TopicPattern {
    /// Parses a pattern, explaining a refusal as `(message, hint)`.
    pub fn parse(text: &str) -> Result<Self, (String, String)> {
        if text == "*" {
            return Ok(Self::Any);
        }
        if text.is_empty() {
            return Err((
                "empty topic pattern".into(),
                "write a topic name, PREFIX*, or * for every topic".into(),
            ));
        }
        let (body, prefix) = match text.strip_suffix('*') {
            Some(body) => (body, true),
            None => (text, false),
        };
        if body.contains('*') {
            return Err((
                format!("topic pattern {text:?} has a `*` that is not at the end"),
                "only a single trailing * is a wildcard (payments.*); list the topics or prefixes you mean".into(),
            ));
        }
        if prefix {
            check_chars(text, body)?;
            Ok(Self::Prefix(body.to_owned()))
        } else {
            check_topic_name(body)?;
            Ok(Self::Literal(body.to_owned()))
        }
    }

    pub fn matches(&self, topic: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Literal(t) => t == topic,
            Self::Prefix(p) => topic.starts_with(p.as_str()),
        }
    }
}

impl fmt::Display for TopicPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("*"),
            Self::Literal(t) => f.write_str(t),
            Self::Prefix(p) => write!(f, "{p}*"),
        }
    }
}

/// Refuses a name the broker would refuse (Kafka's `Topic.validate`), as `(message, hint)`.
pub fn check_topic_name(name: &str) -> Result<(), (String, String)> {
    if name.is_empty() || name == "." || name == ".." {
        return Err((
            format!("{name:?} is not a valid topic name"),
            "Kafka refuses empty topic names and the names . and ..".into(),
        ));
    }
    check_chars(name, name)
}

/// `text` is what the author wrote, `body` the part that must be topic-name characters.
fn check_chars(text: &str, body: &str) -> Result<(), (String, String)> {
    if let Some(bad) = body
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err((
            format!("{text:?} contains {bad:?}, which Kafka does not allow in a topic name"),
            "topic names use only ASCII letters, digits, `.`, `_` and `-`".into(),
        ));
    }
    if body.len() > MAX_TOPIC_NAME_LEN {
        return Err((
            format!(
                "{text:?} is {} characters long; Kafka topic names have at most {MAX_TOPIC_NAME_LEN}",
                body.len()
            ),
            "shorten it; a longer pattern could never match a topic".into(),
        ));
    }
    Ok(())
}

/// What the key or the value of every record on a governed topic must satisfy: Confluent
/// framing (magic byte 0, a 4-byte schema id, and for Protobuf the message indexes) naming a
/// schema registered in the registry (`schema: required`, the only requirement today).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordRule {
    /// How the subject the schema must be registered under is named (`subject:`).
    pub strategy: SubjectStrategy,
    /// When present, the schema id must also be registered under a subject matching one of
    /// these: with the `record` strategies the producer's schema picks the subject, and this
    /// bounds which record types the topic accepts. Never empty.
    pub subjects: Option<Vec<SubjectPattern>>,
    /// What happens to a record that fails the rule.
    pub on_invalid: OnInvalid,
    /// What happens to a record whose schema id the cache does not hold while the registry
    /// cannot be reached.
    pub registry_unavailable: RegistryUnavailable,
}

/// Confluent's subject name strategies, which name the subject a record's schema is
/// registered under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectStrategy {
    /// `topic` (TopicNameStrategy, the serializers' default): `<topic>-key` or `<topic>-value`.
    Topic,
    /// `record` (RecordNameStrategy): the record's full name, whatever the topic.
    Record,
    /// `topic_record` (TopicRecordNameStrategy): `<topic>-<record full name>`.
    TopicRecord,
}

impl SubjectStrategy {
    pub const ALL: [SubjectStrategy; 3] = [Self::Topic, Self::Record, Self::TopicRecord];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Topic => "topic",
            Self::Record => "record",
            Self::TopicRecord => "topic_record",
        }
    }

    /// The subject for a record's key (`is_key`) or value on `topic`. `record_name` is the
    /// full name of the record's schema (Avro `namespace.name`, Protobuf `package.Message`,
    /// JSON Schema `title`). `None` when the record strategies need one and the schema has
    /// none: there is then no subject to compare, and only [`RecordRule::subjects`] applies.
    pub fn subject(&self, topic: &str, is_key: bool, record_name: Option<&str>) -> Option<String> {
        match self {
            Self::Topic => Some(format!("{topic}-{}", if is_key { "key" } else { "value" })),
            Self::Record => record_name.map(str::to_owned),
            Self::TopicRecord => record_name.map(|name| format!("{topic}-{name}")),
        }
    }
}

impl fmt::Display for SubjectStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for SubjectStrategy {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Self::ALL.into_iter().find(|st| st.as_str() == s).ok_or(())
    }
}

/// What wire-guard does with a record that fails its rule.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum OnInvalid {
    /// Refuse the partition's batch with INVALID_RECORD, naming each bad record.
    #[default]
    Reject,
    /// Deliver the record anyway; log and count it (a dry run before enforcing).
    Audit,
    /// Write the bad records to this topic, with headers saying why, and deliver the rest.
    DeadLetter(String),
}

impl fmt::Display for OnInvalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Reject => f.write_str("reject"),
            Self::Audit => f.write_str("audit"),
            Self::DeadLetter(topic) => write!(f, "dead_letter:{topic}"),
        }
    }
}

/// What wire-guard does with a schema id it must look up while the registry is unreachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RegistryUnavailable {
    /// Refuse the partition with a retriable error so the producer retries until the
    /// registry is back: nothing unverified reaches the topic.
    #[default]
    FailClosed,
    /// Deliver the record unchecked: availability over enforcement.
    FailOpen,
}

impl RegistryUnavailable {
    pub const ALL: [RegistryUnavailable; 2] = [Self::FailClosed, Self::FailOpen];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::FailClosed => "fail_closed",
            Self::FailOpen => "fail_open",
        }
    }
}

impl fmt::Display for RegistryUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for RegistryUnavailable {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Self::ALL.into_iter().find(|r| r.as_str() == s).ok_or(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value_rule() -> RecordRule {
        RecordRule {
            strategy: SubjectStrategy::Topic,
            subjects: None,
            on_invalid: OnInvalid::Reject,
            registry_unavailable: RegistryUnavailable::FailClosed,
        }
    }

    fn rule(id: &str, topics: &[&str], principals: Option<&[&str]>) -> TopicRule {
        TopicRule {
            id: id.into(),
            topics: topics
                .iter()
                .map(|t| TopicPattern::parse(t).unwrap())
                .collect(),
            principals: principals.map(|ps| {
                ps.iter()
                    .map(|p| PrincipalPattern::parse(p).unwrap())
                    .collect()
            }),
            key: None,
            fields: Vec::new(),
            tagged: Vec::new(),
            sign: None,
            encrypt_key: None,
            encrypt_value: None,
            value: Some(value_rule()),
        }
    }

    fn id_for<'a>(
        policy: &'a TopicPolicy,
        topic: &str,
        principal: Option<&Principal>,
    ) -> Option<&'a str> {
        policy.rule_for(topic, principal).map(|r| r.id.as_str())
    }

    #[test]
    fn topic_glob_is_anchored_at_both_ends() {
        let p = TopicPattern::parse("payments.*").unwrap();
        assert!(p.matches("payments.card") && p.matches("payments."));
        assert!(!p.matches("paymentsXcard"), "`.` must be literal");
        assert!(!p.matches("xpayments.card"), "anchored at the start");
        let lit = TopicPattern::parse("orders").unwrap();
        assert!(lit.matches("orders"));
        assert!(!lit.matches("orders.v2") && !lit.matches("old-orders"));
        assert!(TopicPattern::parse("*").unwrap().matches("anything"));
        assert_eq!(
            TopicPattern::parse("a_b-c.*").unwrap().to_string(),
            "a_b-c.*"
        );
    }

    #[test]
    fn patterns_kafka_could_never_match_are_refused() {
        let long = "t".repeat(MAX_TOPIC_NAME_LEN + 1);
        for bad in [
            "",
            "pay*ments",
            "**",
            "*.dlq",
            "orders/eu",
            "orders eu",
            "ordérs",
            ".",
            "..",
            &long,
        ] {
            assert!(TopicPattern::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(TopicPattern::parse(&"t".repeat(MAX_TOPIC_NAME_LEN)).is_ok());
        assert!(TopicPattern::parse(".*").is_ok(), "a prefix of `.` is fine");
        assert!(check_topic_name("payments.dlq").is_ok());
        assert!(check_topic_name("payments.*").is_err());
    }

    #[test]
    fn the_first_matching_rule_decides() {
        let policy = TopicPolicy {
            rules: vec![
                rule("backfill", &["orders"], Some(&["user:backfill"])),
                rule("orders", &["orders"], None),
                rule("payments", &["payments.*"], None),
                rule("later-payments", &["payments.card"], None),
            ],
        };
        let backfill = Principal::user("backfill");
        let other = Principal::user("shop");
        assert_eq!(id_for(&policy, "orders", Some(&backfill)), Some("backfill"));
        assert_eq!(id_for(&policy, "orders", Some(&other)), Some("orders"));
        assert_eq!(id_for(&policy, "orders", None), Some("orders"));
        assert_eq!(
            id_for(&policy, "payments.card", Some(&other)),
            Some("payments"),
            "an earlier broad rule shadows a later narrow one"
        );
        assert_eq!(id_for(&policy, "clicks", Some(&other)), None);
        assert!(!policy.is_empty() && TopicPolicy::default().is_empty());
    }

    #[test]
    fn listed_principals_never_cover_an_unauthenticated_producer() {
        let policy = TopicPolicy {
            rules: vec![
                rule("authenticated", &["*"], Some(&["*"])),
                rule("group", &["g"], Some(&["group:etl", "client:loader"])),
            ],
        };
        assert_eq!(id_for(&policy, "t", None), None);
        assert_eq!(
            id_for(&policy, "t", Some(&Principal::user("a"))),
            Some("authenticated")
        );
        let etl = Principal {
            user: "x".into(),
            groups: vec!["etl".into()],
            client_id: None,
        };
        let policy = TopicPolicy {
            rules: policy.rules[1..].to_vec(),
        };
        assert_eq!(id_for(&policy, "g", Some(&etl)), Some("group"));
        assert_eq!(id_for(&policy, "g", Some(&Principal::user("etl"))), None);
    }

    #[test]
    fn strategies_name_subjects_as_the_confluent_serializers_do() {
        let s = SubjectStrategy::Topic;
        assert_eq!(
            s.subject("orders", false, None).as_deref(),
            Some("orders-value")
        );
        assert_eq!(
            s.subject("orders", true, Some("com.acme.Order")).as_deref(),
            Some("orders-key"),
            "the topic strategy ignores the record name"
        );
        let r = SubjectStrategy::Record;
        assert_eq!(
            r.subject("orders", false, Some("com.acme.Order"))
                .as_deref(),
            Some("com.acme.Order")
        );
        assert_eq!(r.subject("orders", false, None), None);
        let tr = SubjectStrategy::TopicRecord;
        assert_eq!(
            tr.subject("orders", true, Some("com.acme.OrderKey"))
                .as_deref(),
            Some("orders-com.acme.OrderKey")
        );
        assert_eq!(tr.subject("orders", true, None), None);
        for st in SubjectStrategy::ALL {
            assert_eq!(st.as_str().parse::<SubjectStrategy>(), Ok(st));
        }
    }

    #[test]
    fn record_picks_key_or_value() {
        let r = rule("r", &["t"], None);
        assert!(r.record(true).is_none());
        assert_eq!(r.record(false), Some(&value_rule()));
    }
}
