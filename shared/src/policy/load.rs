//! Reading and validating a directory of policy files.
//!
//! Parsing uses serde-saphyr with `deny_unknown_fields` everywhere, so a misspelt key, or a
//! feature this version does not implement (field protection's `fields:`), is an error rather
//! than a rule that silently does nothing. Values are read as `Spanned` so that validation
//! errors point at the offending line and column, and keys a rule cannot do without are read
//! as optional so that their absence is reported with every other problem of the file instead
//! of stopping at the first.
//!
//! Both sections share one namespace of rule ids: an id names exactly one rule, `registry:` or
//! `topics:`, across every file of the directory.

use std::{
    collections::HashMap,
    fmt, fs,
    path::{Path, PathBuf},
};

use serde::{
    Deserialize, Deserializer,
    de::{MapAccess, Visitor},
};
use serde_saphyr::Spanned;

use super::{
    PolicyError, PolicySet,
    fields::{
        FieldAction, FieldPath, FieldRule, OnSignatureFailure, SignAlgorithm, SignRule,
        TaggedFields, WholeRule,
    },
    registry::{Operation, RegistryPolicy, RegistryRule, SubjectPattern},
    topics::{
        OnInvalid, RecordRule, RegistryUnavailable, SubjectStrategy, TopicPattern, TopicPolicy,
        TopicRule, check_topic_name,
    },
};
use crate::{Error, keyref::KeyRef, principal::PrincipalPattern};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    registry: Option<RegistrySection>,
    topics: Option<Vec<Spanned<TopicRuleDoc>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistrySection {
    rules: Vec<RuleDoc>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleDoc {
    id: Spanned<String>,
    #[serde(default)]
    description: Option<String>,
    principals: Vec<Spanned<String>>,
    subjects: Vec<Spanned<String>>,
    operations: Vec<Spanned<String>>,
}

type SpannedList = Spanned<Vec<Spanned<String>>>;

/// One entry of `topics:` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TopicRuleDoc {
    #[serde(default)]
    id: Option<Spanned<String>>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default, rename = "match")]
    topics: Option<SpannedList>,
    #[serde(default)]
    principals: Option<SpannedList>,
    #[serde(default)]
    key: Option<Spanned<RecordRuleDoc>>,
    #[serde(default)]
    value: Option<Spanned<RecordRuleDoc>>,
    #[serde(default)]
    fields: Option<SpannedDocs<FieldRuleDoc>>,
    #[serde(default)]
    sign: Option<Spanned<SignDoc>>,
    #[serde(default)]
    encrypt_key: Option<Spanned<WholeDoc>>,
    #[serde(default)]
    encrypt_value: Option<Spanned<WholeDoc>>,
}

/// `encrypt_key:` or `encrypt_value:` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WholeDoc {
    #[serde(default)]
    key: Option<Spanned<String>>,
    #[serde(default)]
    reveal_to: Option<SpannedList>,
}

/// A topic rule's `sign:` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignDoc {
    #[serde(default)]
    key: Option<Spanned<String>>,
    #[serde(default)]
    algorithm: Option<Spanned<String>>,
    #[serde(default)]
    headers: Option<SpannedList>,
    #[serde(default)]
    on_failure: Option<Spanned<String>>,
}

type SpannedDocs<T> = Spanned<Vec<Spanned<T>>>;

/// One entry of a topic rule's `fields:` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FieldRuleDoc {
    #[serde(default)]
    path: Option<Spanned<String>>,
    #[serde(default)]
    tags: Option<SpannedList>,
    #[serde(default)]
    action: Option<Spanned<String>>,
    #[serde(default)]
    key: Option<Spanned<String>>,
    #[serde(default)]
    reveal_to: Option<SpannedList>,
    #[serde(default)]
    keep_last: Option<Spanned<usize>>,
    #[serde(default)]
    reversible: Option<Spanned<bool>>,
}

/// A topic rule's `key:` or `value:` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordRuleDoc {
    #[serde(default)]
    schema: Option<Spanned<String>>,
    #[serde(default)]
    subject: Option<Spanned<String>>,
    #[serde(default)]
    subjects: Option<SpannedList>,
    #[serde(default)]
    on_invalid: Option<Spanned<OnInvalidDoc>>,
    #[serde(default)]
    registry_unavailable: Option<Spanned<String>>,
}

/// `on_invalid:` as written: a word (`reject`, `audit`) or a map (`{ dead_letter: TOPIC }`).
/// Read by hand so that a wrong word or key becomes a validation error with a hint, listed
/// with the file's other problems, rather than serde's "did not match any variant".
#[derive(Debug)]
enum OnInvalidDoc {
    Word(String),
    Map(Vec<(String, String)>),
}

impl<'de> Deserialize<'de> for OnInvalidDoc {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OnInvalidDoc;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("reject, audit, or { dead_letter: TOPIC }")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<OnInvalidDoc, E> {
                Ok(OnInvalidDoc::Word(v.to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OnInvalidDoc, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, String>()? {
                    entries.push(entry);
                }
                Ok(OnInvalidDoc::Map(entries))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// The validated content of one file, before rule ids are checked across files.
#[derive(Debug, Default)]
pub struct ParsedFile {
    pub registry: Vec<RegistryRule>,
    pub topics: Vec<TopicRule>,
    /// Every rule id of the file, both sections, with where it was written, for
    /// duplicate-id errors across files.
    ids: Vec<(String, (u64, u64))>,
}

/// Lists the policy files of `dir` in name order, so evaluation order is stable.
pub fn policy_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Loads every `*.yaml`/`*.yml` file in `dir`. Any problem in any file fails the whole load
/// with every problem listed.
pub fn load_dir(dir: &Path) -> Result<PolicySet, Error> {
    let files = policy_files(dir).map_err(|e| {
        Error::Policy(vec![PolicyError {
            file: dir.to_path_buf(),
            line: None,
            column: None,
            message: format!("cannot read policy directory: {e}"),
            hint: "pass the directory holding the *.yaml policy files".into(),
        }])
    })?;
    let mut errors = Vec::new();
    let mut registry = Vec::new();
    let mut topics = Vec::new();
    let mut seen: HashMap<String, (PathBuf, u64)> = HashMap::new();
    for file in &files {
        let text = match fs::read_to_string(file) {
            Ok(text) => text,
            Err(e) => {
                errors.push(err(file, None, format!("cannot read: {e}"), ""));
                continue;
            }
        };
        match parse_file(file, &text) {
            Ok(parsed) => {
                for (id, (line, column)) in parsed.ids {
                    if let Some((first_file, first_line)) = seen.get(&id) {
                        errors.push(err(
                            file,
                            Some((line, column)),
                            format!("duplicate rule id {id:?}"),
                            &format!(
                                "it is already used at {}:{first_line}; audit records, logs and metrics name rules by id, so each id must be unique across registry: and topics: rules",
                                first_file.display()
                            ),
                        ));
                    } else {
                        seen.insert(id, (file.clone(), line));
                    }
                }
                registry.extend(parsed.registry);
                topics.extend(parsed.topics);
            }
            Err(mut file_errors) => errors.append(&mut file_errors),
        }
    }
    if errors.is_empty() {
        Ok(PolicySet {
            registry: RegistryPolicy { rules: registry },
            topics: TopicPolicy { rules: topics },
            files,
        })
    } else {
        Err(Error::Policy(errors))
    }
}

fn err(file: &Path, at: Option<(u64, u64)>, message: String, hint: &str) -> PolicyError {
    PolicyError {
        file: file.to_path_buf(),
        line: at.map(|a| a.0).filter(|l| *l > 0),
        column: at.map(|a| a.1).filter(|c| *c > 0),
        message,
        hint: hint.to_owned(),
    }
}

fn at<T>(s: &Spanned<T>) -> Option<(u64, u64)> {
    Some((s.referenced.line(), s.referenced.column()))
}

/// Collects one file's problems and the ids it has used so far.
struct Checker<'a> {
    file: &'a Path,
    errors: Vec<PolicyError>,
    /// Ids seen in this file (both sections), with their line.
    ids_here: HashMap<String, u64>,
}

impl Checker<'_> {
    fn push(&mut self, at: Option<(u64, u64)>, message: String, hint: &str) {
        self.errors.push(err(self.file, at, message, hint));
    }

    /// Checks a rule id's spelling and uniqueness within the file; `Some` when it is usable.
    fn id(&mut self, id: &Spanned<String>) -> Option<String> {
        let text = id.value.trim();
        if text.is_empty()
            || text != id.value
            || !text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
        {
            self.push(
                at(id),
                format!("rule id {:?} is not a plain name", id.value),
                "use letters, digits, `-`, `_`, `.` or `:`, e.g. payments-owners",
            );
            return None;
        }
        if let Some(first) = self.ids_here.get(text) {
            let hint = format!("it is already used on line {first}; each rule needs its own id");
            self.push(at(id), format!("duplicate rule id {text:?}"), &hint);
            return None;
        }
        self.ids_here.insert(text.to_owned(), id.referenced.line());
        Some(text.to_owned())
    }

    fn principals(&mut self, list: &[Spanned<String>]) -> Vec<PrincipalPattern> {
        let mut out = Vec::new();
        for p in list {
            match PrincipalPattern::parse(&p.value) {
                Ok(pattern) => out.push(pattern),
                Err(e) => self.push(at(p), e.message, &e.hint),
            }
        }
        out
    }

    fn subjects(&mut self, list: &[Spanned<String>]) -> Vec<SubjectPattern> {
        let mut out = Vec::new();
        for s in list {
            match SubjectPattern::parse(&s.value) {
                Ok(pattern) => out.push(pattern),
                Err((message, hint)) => self.push(at(s), message, &hint),
            }
        }
        out
    }
}

/// Parses and validates one file's text; `file` is only used to name it in errors.
pub fn parse_file(file: &Path, text: &str) -> Result<ParsedFile, Vec<PolicyError>> {
    // An empty file (or one holding only comments) is a valid, empty policy.
    if text
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
    {
        return Ok(ParsedFile::default());
    }
    let doc: PolicyFile = serde_saphyr::from_str(text).map_err(|e| vec![yaml_error(file, &e)])?;
    let mut check = Checker {
        file,
        errors: Vec::new(),
        ids_here: HashMap::new(),
    };
    let mut parsed = ParsedFile::default();
    for rule in doc.registry.map(|s| s.rules).unwrap_or_default() {
        if let Some((rule, place)) = registry_rule(&mut check, rule) {
            parsed.ids.push((rule.id.to_string(), place));
            parsed.registry.push(rule);
        }
    }
    for rule in doc.topics.unwrap_or_default() {
        if let Some((rule, place)) = topic_rule(&mut check, rule) {
            parsed.ids.push((rule.id.clone(), place));
            parsed.topics.push(rule);
        }
    }
    if check.errors.is_empty() {
        Ok(parsed)
    } else {
        Err(check.errors)
    }
}

/// Validates one `registry:` rule; `None` when it has problems (they are in `check`).
fn registry_rule(check: &mut Checker<'_>, doc: RuleDoc) -> Option<(RegistryRule, (u64, u64))> {
    let before = check.errors.len();
    let id = check.id(&doc.id);
    let _ = doc.description;
    let principals = check.principals(&doc.principals);
    let subjects = check.subjects(&doc.subjects);
    let mut operations = Vec::new();
    for o in &doc.operations {
        match o.value.parse::<Operation>() {
            Ok(op) => {
                if op.is_global()
                    && !subjects.contains(&SubjectPattern::Any)
                    && doc.subjects.iter().all(|s| s.value != "*")
                {
                    check.push(
                        at(o),
                        format!("operation {op} applies to the whole registry, but this rule's subjects are narrower"),
                        "grant global operations in a rule with subjects: [\"*\"]",
                    );
                }
                operations.push(op);
            }
            Err(()) => {
                let names: Vec<&str> = Operation::ALL.iter().map(|o| o.as_str()).collect();
                check.push(
                    at(o),
                    format!("unknown operation {:?}", o.value),
                    &format!(
                        "expected one of {}{}",
                        names.join(", "),
                        suggestion(&o.value, &names)
                    ),
                );
            }
        }
    }
    for (list, name, what) in [
        (
            doc.principals.is_empty(),
            "principals",
            "user:NAME, group:NAME, client:NAME or *",
        ),
        (
            doc.subjects.is_empty(),
            "subjects",
            "a subject, PREFIX* or *",
        ),
        (
            doc.operations.is_empty(),
            "operations",
            "one or more of read, write, ...",
        ),
    ] {
        if list {
            check.push(
                at(&doc.id),
                format!(
                    "rule {:?} has an empty `{name}` list, so it can never match",
                    doc.id.value
                ),
                &format!("list at least one of {what}, or delete the rule"),
            );
        }
    }
    let id = id.filter(|_| check.errors.len() == before)?;
    Some((
        RegistryRule {
            id: id.into(),
            principals,
            subjects,
            operations,
        },
        (doc.id.referenced.line(), doc.id.referenced.column()),
    ))
}

/// Validates one `topics:` rule; `None` when it has problems (they are in `check`).
fn topic_rule(
    check: &mut Checker<'_>,
    doc: Spanned<TopicRuleDoc>,
) -> Option<(TopicRule, (u64, u64))> {
    let before = check.errors.len();
    let rule_at = at(&doc);
    let doc = doc.value;
    let id = match &doc.id {
        Some(id) => check.id(id),
        None => {
            check.push(
                rule_at,
                "topic rule has no `id`".into(),
                "add id: NAME (e.g. payments-values); wire-guard names the rule in logs, metrics and dead-letter headers",
            );
            None
        }
    };
    let name = doc.id.as_ref().map_or("", |id| id.value.as_str());
    let _ = doc.description;

    let mut topics = Vec::new();
    match &doc.topics {
        None => check.push(
            rule_at,
            format!("topic rule {name:?} has no `match`"),
            "add match: [\"TOPIC\", \"PREFIX*\"] listing the topics it governs",
        ),
        Some(list) if list.value.is_empty() => check.push(
            at(list),
            format!("topic rule {name:?} has an empty `match` list, so it governs no topic"),
            "list at least one topic name, PREFIX* or *, or delete the rule",
        ),
        Some(list) => {
            for t in &list.value {
                match TopicPattern::parse(&t.value) {
                    Ok(pattern) => topics.push(pattern),
                    Err((message, hint)) => check.push(at(t), message, &hint),
                }
            }
        }
    }

    let principals = match &doc.principals {
        None => None,
        Some(list) if list.value.is_empty() => {
            check.push(
                at(list),
                format!("topic rule {name:?} has an empty `principals` list, so it applies to no producer"),
                "list user:NAME, group:NAME, client:NAME or *, or remove `principals:` to govern every producer",
            );
            None
        }
        Some(list) => Some(check.principals(&list.value)),
    };

    if doc.key.is_none()
        && doc.value.is_none()
        && doc.sign.is_none()
        && doc.encrypt_key.is_none()
        && doc.encrypt_value.is_none()
    {
        check.push(
            rule_at,
            format!("topic rule {name:?} checks neither `key` nor `value`"),
            "add value: { schema: required } (or key:, or sign:), or delete the rule",
        );
    }
    let key = doc
        .key
        .as_ref()
        .and_then(|r| record_rule(check, r, &topics));
    let value = doc
        .value
        .as_ref()
        .and_then(|r| record_rule(check, r, &topics));

    let (fields, tagged) = match &doc.fields {
        None => (Vec::new(), Vec::new()),
        Some(list) => {
            if doc.value.is_none() && !list.value.is_empty() {
                check.push(
                    at(list),
                    format!("topic rule {name:?} protects fields but has no `value` rule"),
                    "add value: { schema: required }: fields are found through the value's registered schema",
                );
            }
            let mut by_path: Vec<FieldRule> = Vec::new();
            let mut by_tag: Vec<TaggedFields> = Vec::new();
            for f in &list.value {
                match field_rule(check, f) {
                    None => {}
                    Some(Selected::Path(rule)) => {
                        if by_path.iter().any(|o| o.path == rule.path) {
                            check.push(
                                f.value.path.as_ref().and_then(at),
                                format!("field {} is listed twice", rule.path),
                                "keep one entry per field: a field gets exactly one action",
                            );
                        } else {
                            by_path.push(rule);
                        }
                    }
                    Some(Selected::Tags(rule)) => by_tag.push(rule),
                }
            }
            (by_path, by_tag)
        }
    };

    let sign = doc.sign.as_ref().and_then(|s| sign_rule(check, s));
    let encrypt_key = doc
        .encrypt_key
        .as_ref()
        .and_then(|w| whole_rule(check, w, "encrypt_key"));
    let encrypt_value = doc
        .encrypt_value
        .as_ref()
        .and_then(|w| whole_rule(check, w, "encrypt_value"));
    if let (Some(w), Some(f)) = (&doc.encrypt_value, &doc.fields)
        && !f.value.is_empty()
    {
        check.push(
            at(w),
            format!("topic rule {name:?} encrypts the whole value and fields of it"),
            "keep encrypt_value: (nothing of the value is readable) or fields: (the rest stays readable), not both",
        );
    }

    let id = id.filter(|_| check.errors.len() == before)?;
    let place = doc
        .id
        .as_ref()
        .map_or((0, 0), |id| (id.referenced.line(), id.referenced.column()));
    Some((
        TopicRule {
            id,
            topics,
            principals,
            key,
            value,
            fields,
            tagged,
            sign,
            encrypt_key,
            encrypt_value,
        },
        place,
    ))
}

/// Validates `encrypt_key:` or `encrypt_value:`.
fn whole_rule(check: &mut Checker<'_>, doc: &Spanned<WholeDoc>, what: &str) -> Option<WholeRule> {
    let before = check.errors.len();
    let key = match &doc.value.key {
        None => {
            check.push(
                at(doc),
                format!("{what}: has no `key`"),
                "add key: aws-kms:alias/NAME or key: local:NAME",
            );
            None
        }
        Some(k) => match k.value.parse::<KeyRef>() {
            Ok(key) => Some(key),
            Err(e) => {
                check.push(
                    at(k),
                    e,
                    "name a key the wire-guard configuration's kms: section serves",
                );
                None
            }
        },
    };
    let reveal_to = doc
        .value
        .reveal_to
        .as_ref()
        .map(|list| check.principals(&list.value))
        .unwrap_or_default();
    (check.errors.len() == before).then_some(WholeRule {
        key: key?,
        reveal_to,
    })
}

/// Validates a `sign:`; `None` when it has problems (they are in `check`).
fn sign_rule(check: &mut Checker<'_>, doc: &Spanned<SignDoc>) -> Option<SignRule> {
    let before = check.errors.len();
    let s = &doc.value;
    let key = match &s.key {
        None => {
            check.push(
                at(doc),
                "sign: has no `key`".into(),
                "add key: aws-kms:alias/NAME or key: local:NAME; the signing key is derived from it",
            );
            None
        }
        Some(k) => match k.value.parse::<KeyRef>() {
            Ok(key) => Some(key),
            Err(e) => {
                check.push(
                    at(k),
                    e,
                    "name a key the wire-guard configuration's kms: section serves",
                );
                None
            }
        },
    };
    let algorithm = match &s.algorithm {
        None => SignAlgorithm::HmacSha256,
        Some(a) => SignAlgorithm::ALL
            .into_iter()
            .find(|x| x.as_str() == a.value)
            .unwrap_or_else(|| {
                let names: Vec<&str> = SignAlgorithm::ALL.iter().map(|x| x.as_str()).collect();
                check.push(
                    at(a),
                    format!("unknown signature algorithm {:?}", a.value),
                    &format!(
                        "expected {}{}",
                        names.join(" or "),
                        suggestion(&a.value, &names)
                    ),
                );
                SignAlgorithm::HmacSha256
            }),
    };
    let on_failure = match &s.on_failure {
        None => OnSignatureFailure::Flag,
        Some(o) => OnSignatureFailure::ALL
            .into_iter()
            .find(|x| x.as_str() == o.value)
            .unwrap_or_else(|| {
                let names: Vec<&str> = OnSignatureFailure::ALL.iter().map(|x| x.as_str()).collect();
                check.push(
                    at(o),
                    format!("unknown on_failure {:?}", o.value),
                    &format!(
                        "expected flag (a wire-guard.signature header), drop or fail{}",
                        suggestion(&o.value, &names)
                    ),
                );
                OnSignatureFailure::Flag
            }),
    };
    let mut headers = Vec::new();
    for h in s.headers.iter().flat_map(|l| &l.value) {
        if h.value.is_empty() || h.value.starts_with("wire-guard.") {
            check.push(
                at(h),
                format!("header {:?} cannot be signed", h.value),
                "name headers the producer sets; wire-guard's own headers are added after signing",
            );
        } else if headers.contains(&h.value) {
            check.push(
                at(h),
                format!("header {:?} is listed twice", h.value),
                "list each header once",
            );
        } else {
            headers.push(h.value.clone());
        }
    }
    (check.errors.len() == before).then_some(SignRule {
        key: key?,
        algorithm,
        headers,
        on_failure,
    })
}

/// A valid `fields:` entry: one field by path, or the fields a schema tags.
enum Selected {
    Path(FieldRule),
    Tags(TaggedFields),
}

/// The longest tag name accepted.
const MAX_TAG_LEN: usize = 128;

/// Validates one entry of `fields:`; `None` when it has problems (they are in `check`).
fn field_rule(check: &mut Checker<'_>, doc: &Spanned<FieldRuleDoc>) -> Option<Selected> {
    let before = check.errors.len();
    let f = &doc.value;
    let path = match (&f.path, &f.tags) {
        (None, None) => {
            check.push(
                at(doc),
                "field entry has no `path` and no `tags`".into(),
                "add path: \"$.FIELD\" naming the field from the top of the value, or tags: [TAG] selecting the fields the schema tags",
            );
            None
        }
        (Some(p), Some(_)) => {
            check.push(
                at(p),
                "field entry has both `path` and `tags`".into(),
                "keep one: path: names one field, tags: selects every field the schema tags",
            );
            None
        }
        (None, Some(tags)) => {
            if tags.value.is_empty() {
                check.push(
                    at(tags),
                    "`tags` is empty".into(),
                    "list the schema tags whose fields this entry protects, e.g. tags: [PII]",
                );
            }
            for t in &tags.value {
                if t.value.is_empty()
                    || t.value.len() > MAX_TAG_LEN
                    || t.value.chars().any(|c| c.is_whitespace() || c.is_control())
                {
                    check.push(
                        at(t),
                        format!("{:?} is not a tag name", t.value),
                        &format!("tag names are 1 to {MAX_TAG_LEN} characters without spaces, as the schema writes them (PII)"),
                    );
                }
            }
            None
        }
        (Some(p), None) => match FieldPath::parse(&p.value) {
            Ok(path) => Some(path),
            Err((message, hint)) => {
                check.push(at(p), message, &hint);
                None
            }
        },
    };
    let shown = match (&f.path, &f.tags) {
        (Some(p), _) => p.value.clone(),
        (None, Some(tags)) => format!(
            "tagged {}",
            tags.value
                .iter()
                .map(|t| t.value.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        (None, None) => String::new(),
    };
    const ACTIONS: [&str; 3] = ["encrypt", "tokenize", "mask"];
    let action = match &f.action {
        None => {
            check.push(
                at(doc),
                format!("field {shown} has no `action`"),
                "add action: encrypt, tokenize or mask",
            );
            None
        }
        Some(a) => match a.value.as_str() {
            "encrypt" => Some(FieldAction::Encrypt),
            "tokenize" => Some(FieldAction::Tokenize {
                reversible: f.reversible.as_ref().is_some_and(|r| r.value),
            }),
            "mask" => Some(FieldAction::Mask {
                keep_last: f.keep_last.as_ref().map_or(0, |k| k.value),
            }),
            other => {
                check.push(
                    at(a),
                    format!("unknown field action {other:?}"),
                    &format!(
                        "expected encrypt, tokenize or mask{}",
                        suggestion(other, &ACTIONS)
                    ),
                );
                None
            }
        },
    };
    if let (Some(r), Some(action)) = (&f.reversible, action)
        && !matches!(action, FieldAction::Tokenize { .. })
    {
        check.push(
            at(r),
            format!("field {shown}: reversible applies only to action: tokenize"),
            "remove reversible (an encrypted field is always readable by reveal_to)",
        );
    }
    if let (Some(k), Some(action)) = (&f.keep_last, action)
        && !matches!(action, FieldAction::Mask { .. })
    {
        check.push(
            at(k),
            format!("field {shown}: keep_last applies only to action: mask"),
            "remove keep_last, or use action: mask",
        );
    }
    let key = match &f.key {
        None => None,
        Some(k) => match k.value.parse::<KeyRef>() {
            Ok(key) => Some(key),
            Err(e) => {
                check.push(
                    at(k),
                    e,
                    "name a key the wire-guard configuration's kms: section serves",
                );
                None
            }
        },
    };
    let reveal_to = f
        .reveal_to
        .as_ref()
        .map(|list| check.principals(&list.value))
        .unwrap_or_default();
    match action {
        Some(FieldAction::Encrypt | FieldAction::Tokenize { .. }) if f.key.is_none() => check.push(
            at(doc),
            format!("field {shown}: {} needs a `key`", action.map_or("", |a| a.as_str())),
            "add key: aws-kms:alias/NAME or key: local:NAME",
        ),
        Some(FieldAction::Tokenize { reversible: false }) if f.reveal_to.is_some() => check.push(
            f.reveal_to.as_ref().and_then(at),
            format!("field {shown}: a token cannot be revealed"),
            "tokens are one-way; remove reveal_to, or add reversible: true for a token reveal_to reads back",
        ),
        Some(FieldAction::Mask { .. }) if f.key.is_none() && f.reveal_to.is_some() => check.push(
            f.reveal_to.as_ref().and_then(at),
            format!("field {shown}: without a `key`, a masked field is masked before the broker and cannot be revealed"),
            "add key: (the field is then stored encrypted and masked only for principals outside reveal_to), or remove reveal_to",
        ),
        _ => {}
    }
    if check.errors.len() != before {
        return None;
    }
    let action = action?;
    Some(match (path, &f.tags) {
        (Some(path), _) => Selected::Path(FieldRule {
            path,
            action,
            key,
            reveal_to,
        }),
        (None, tags) => Selected::Tags(TaggedFields {
            tags: tags
                .as_ref()?
                .value
                .iter()
                .map(|t| t.value.clone())
                .collect(),
            action,
            key,
            reveal_to,
        }),
    })
}

/// Validates a `key:` or `value:` rule; `topics` are the rule's parsed `match` patterns, which
/// its dead-letter topic must escape.
fn record_rule(
    check: &mut Checker<'_>,
    doc: &Spanned<RecordRuleDoc>,
    topics: &[TopicPattern],
) -> Option<RecordRule> {
    let before = check.errors.len();
    let rule = &doc.value;
    match &rule.schema {
        None => check.push(
            at(doc),
            "record rule has no `schema`".into(),
            "write schema: required (Confluent framing naming a registered schema)",
        ),
        Some(s) if s.value != "required" => check.push(
            at(s),
            format!("unknown schema requirement {:?}", s.value),
            "the only value is `required`: Confluent framing (magic byte 0 and a 4-byte id) naming a registered schema",
        ),
        Some(_) => {}
    }

    let strategy = match &rule.subject {
        None => SubjectStrategy::Topic,
        Some(s) => match s.value.parse::<SubjectStrategy>() {
            Ok(strategy) => strategy,
            Err(()) => {
                let names: Vec<&str> = SubjectStrategy::ALL.iter().map(|s| s.as_str()).collect();
                check.push(
                    at(s),
                    format!("unknown subject name strategy {:?}", s.value),
                    &format!(
                        "expected one of {} (TopicNameStrategy, RecordNameStrategy, TopicRecordNameStrategy){}",
                        names.join(", "),
                        suggestion(&s.value, &names)
                    ),
                );
                SubjectStrategy::Topic
            }
        },
    };

    let subjects = match &rule.subjects {
        None => None,
        Some(list) if list.value.is_empty() => {
            check.push(
                at(list),
                "empty `subjects` list, so no schema could ever be accepted".into(),
                "list subject patterns (a subject, PREFIX* or *), or remove `subjects:` to accept the subject the strategy names",
            );
            None
        }
        Some(list) => Some(check.subjects(&list.value)),
    };

    let on_invalid = match &rule.on_invalid {
        None => OnInvalid::Reject,
        Some(o) => on_invalid(check, o, topics),
    };

    let registry_unavailable = match &rule.registry_unavailable {
        None => RegistryUnavailable::FailClosed,
        Some(r) => r.value.parse().unwrap_or_else(|()| {
            let names: Vec<&str> = RegistryUnavailable::ALL
                .iter()
                .map(|r| r.as_str())
                .collect();
            check.push(
                at(r),
                format!("unknown registry_unavailable {:?}", r.value),
                &format!(
                    "expected {}{}",
                    names.join(" or "),
                    suggestion(&r.value, &names)
                ),
            );
            RegistryUnavailable::FailClosed
        }),
    };

    (check.errors.len() == before).then_some(RecordRule {
        strategy,
        subjects,
        on_invalid,
        registry_unavailable,
    })
}

fn on_invalid(
    check: &mut Checker<'_>,
    doc: &Spanned<OnInvalidDoc>,
    topics: &[TopicPattern],
) -> OnInvalid {
    const HINT: &str = "write reject, audit, or { dead_letter: TOPIC }";
    match &doc.value {
        OnInvalidDoc::Word(w) if w == "reject" => OnInvalid::Reject,
        OnInvalidDoc::Word(w) if w == "audit" => OnInvalid::Audit,
        OnInvalidDoc::Word(w) if w == "dead_letter" => {
            check.push(
                at(doc),
                "on_invalid: dead_letter needs the topic to write bad records to".into(),
                "write on_invalid: { dead_letter: TOPIC }",
            );
            OnInvalid::Reject
        }
        OnInvalidDoc::Word(w) => {
            check.push(
                at(doc),
                format!("unknown on_invalid {w:?}"),
                &format!(
                    "{HINT}{}",
                    suggestion(w, &["reject", "audit", "dead_letter"])
                ),
            );
            OnInvalid::Reject
        }
        OnInvalidDoc::Map(entries) => match entries.as_slice() {
            [(k, topic)] if k == "dead_letter" => {
                if let Err((message, hint)) = check_topic_name(topic) {
                    check.push(at(doc), format!("dead-letter topic: {message}"), &hint);
                } else if let Some(p) = topics.iter().find(|p| p.matches(topic)) {
                    check.push(
                        at(doc),
                        format!("dead-letter topic {topic:?} is governed by this rule's own match pattern {:?}", p.to_string()),
                        "a dead-letter topic holds the records this rule refuses, so the rule must not govern it; pick a topic its match does not cover, e.g. dlq.payments",
                    );
                }
                OnInvalid::DeadLetter(topic.clone())
            }
            _ => {
                let keys: Vec<&str> = entries.iter().map(|(k, _)| k.as_str()).collect();
                check.push(
                    at(doc),
                    format!("on_invalid map has keys {keys:?}; the only key is dead_letter"),
                    HINT,
                );
                OnInvalid::Reject
            }
        },
    }
}

/// "; did you mean ..." for a near miss, by edit distance.
fn suggestion(word: &str, names: &[&str]) -> String {
    names
        .iter()
        .map(|name| (edit_distance(word, name), *name))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, name)| format!(" (did you mean {name:?}?)"))
        .unwrap_or_default()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

fn yaml_error(file: &Path, e: &serde_saphyr::Error) -> PolicyError {
    let location = e.location().map(|l| (l.line(), l.column()));
    let plain = e.without_snippet().to_string();
    // The parser appends its own position; ours is in the prefix already.
    let message = plain
        .split_once(" at line ")
        .map_or(plain.as_str(), |(m, _)| m)
        .trim()
        .to_owned();
    let hint = if message.starts_with("unknown field `") {
        "keys this version does not know are refused rather than ignored, so that a misspelt key cannot silently disable a rule; see docs/policies.md"
    } else {
        ""
    };
    err(file, location, message, hint)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        fs::write(dir.join(name), text).unwrap();
    }

    fn errors_of(dir: &Path) -> Vec<String> {
        match load_dir(dir) {
            Err(Error::Policy(errors)) => errors.iter().map(ToString::to_string).collect(),
            other => panic!("expected policy errors, got {other:?}"),
        }
    }

    /// `expect` pairs a `:LINE:` with text an error there says; exactly those errors occur.
    fn assert_errors_at(errors: &[String], expect: &[&str]) {
        for pair in expect.chunks(2) {
            assert!(
                errors
                    .iter()
                    .any(|e| e.contains(pair[0]) && e.contains(pair[1])),
                "no error at {} saying {:?}: {errors:#?}",
                pair[0],
                pair[1]
            );
        }
        assert_eq!(errors.len(), expect.len() / 2, "{errors:#?}");
    }

    const GOOD: &str = "registry:\n  rules:\n    - id: owners\n      principals: [\"group:payments\"]\n      subjects: [\"payments.*\"]\n      operations: [read, write]\n";

    #[test]
    fn loads_rules_in_file_order() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.yaml", GOOD);
        write(
            dir.path(),
            "b.yml",
            "registry:\n  rules:\n    - id: readers\n      principals: [\"*\"]\n      subjects: [\"*\"]\n      operations: [read, global_read]\n",
        );
        write(dir.path(), "notes.txt", "not a policy");
        write(dir.path(), "empty.yaml", "# nothing yet\n");
        let set = load_dir(dir.path()).unwrap();
        let ids: Vec<_> = set.registry.rules.iter().map(|r| &*r.id).collect();
        assert_eq!(ids, ["owners", "readers"]);
        assert_eq!(set.files.len(), 3);
    }

    #[test]
    fn every_error_in_every_file_is_listed_with_its_place() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "registry.yaml",
            "registry:\n  rules:\n    - id: a\n      principals: [\"role:x\"]\n      subjects: [\"pay*ments\"]\n      operations: [read, wrte]\n",
        );
        write(
            dir.path(),
            "other.yaml",
            "registry:\n  rules:\n    - id: b\n      principals: [\"*\"]\n      subjects: [\"x\"]\n      operations: [global_read]\n",
        );
        let errors = errors_of(dir.path());
        assert_eq!(errors.len(), 4, "{errors:#?}");
        assert!(
            errors
                .iter()
                .any(|e| e.contains("other.yaml:6:") && e.contains("global_read")),
            "{errors:#?}"
        );
        let op = errors.iter().find(|e| e.contains("wrte")).unwrap();
        assert!(
            op.starts_with(&format!(
                "{}:6:",
                dir.path().join("registry.yaml").display()
            )),
            "{op}"
        );
        assert!(
            op.contains("unknown operation \"wrte\"; expected one of read, write, delete"),
            "{op}"
        );
        assert!(op.contains("did you mean \"write\""), "{op}");
        assert!(
            errors
                .iter()
                .any(|e| e.contains("registry.yaml:4:") && e.contains("role")),
            "{errors:#?}"
        );
        assert!(
            errors
                .iter()
                .any(|e| e.contains("registry.yaml:5:") && e.contains("pay*ments")),
            "{errors:#?}"
        );
    }

    #[test]
    fn unknown_keys_are_errors_not_ignored() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "payments.yaml",
            "topics:\n  - id: p\n    match: [\"payments.*\"]\n    value: { schema: required }\n    fields:\n      - { tag: [PII], action: encrypt, key: \"local:k\" }\n",
        );
        write(
            dir.path(),
            "typo.yaml",
            "registry:\n  rules:\n    - id: a\n      principal: [\"*\"]\n      subjects: [\"*\"]\n      operations: [read]\n",
        );
        write(
            dir.path(),
            "record.yaml",
            "topics:\n  - id: r\n    match: [orders]\n    value:\n      schema: required\n      on_invalid: reject\n      onInvalid: audit\n",
        );
        let errors = errors_of(dir.path());
        assert_eq!(errors.len(), 3, "{errors:#?}");
        let tag = errors.iter().find(|e| e.contains("payments.yaml")).unwrap();
        assert!(
            tag.contains("payments.yaml:6:")
                && tag.contains("unknown field `tag`")
                && tag.contains("refused rather than ignored"),
            "{tag}"
        );
        assert!(
            errors
                .iter()
                .any(|e| e.contains("typo.yaml:4:") && e.contains("principal")),
            "{errors:#?}"
        );
        assert!(
            errors
                .iter()
                .any(|e| e.contains("record.yaml:7:") && e.contains("`onInvalid`")),
            "{errors:#?}"
        );
    }

    #[test]
    fn field_rules_are_checked_with_every_mistake_listed() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "fields.yaml",
            r#"topics:
  - id: good
    match: [payments]
    value: { schema: required }
    fields:
      - { path: "$.card.number", action: encrypt, key: "aws-kms:alias/payments", reveal_to: ["group:fraud"] }
      - { path: "$.email", action: tokenize, key: "local:tokens" }
      - { path: "$.phone", action: mask, keep_last: 4, key: "local:pii", reveal_to: ["user:support"] }
      - { path: "$.note", action: mask }
  - id: bad
    match: [orders]
    value: { schema: required }
    fields:
      - { path: "card.number", action: encrypt, key: "local:k" }
      - { path: "$.a", action: encrpyt, key: "local:k" }
      - { path: "$.b", action: encrypt }
      - { path: "$.c", action: tokenize, key: "local:k", reveal_to: ["user:x"] }
      - { path: "$.d", action: mask, reveal_to: ["user:x"] }
      - { path: "$.e", action: encrypt, key: "vault:k" }
      - { path: "$.f", action: encrypt, key: "local:k", keep_last: 2 }
      - { path: "$.g", action: encrypt, key: "local:k" }
      - { path: "$.g", action: mask }
  - id: keyless
    match: [clicks]
    key: { schema: required }
    fields:
      - { path: "$.ip", action: mask }
"#,
        );
        assert_errors_at(
            &errors_of(dir.path()),
            &[
                ":14:",
                "does not start with `$.`",
                ":15:",
                "did you mean \"encrypt\"",
                ":16:",
                "encrypt needs a `key`",
                ":17:",
                "a token cannot be revealed",
                ":18:",
                "cannot be revealed",
                ":19:",
                "unknown scheme \"vault\"",
                ":20:",
                "keep_last applies only to action: mask",
                ":22:",
                "field $.g is listed twice",
                ":27:",
                "protects fields but has no `value` rule",
            ],
        );

        let one = tempfile::tempdir().unwrap();
        let good = r#"topics:
  - id: good
    match: [payments]
    value: { schema: required }
    fields:
      - { path: "$.card.number", action: encrypt, key: "aws-kms:alias/payments", reveal_to: ["group:fraud"] }
      - { path: "$.phone", action: mask, keep_last: 4, key: "local:pii", reveal_to: ["user:support"] }
"#;
        write(one.path(), "fields.yaml", good);
        let set = load_dir(one.path()).expect("valid field rules load");
        let rule = set.topics.protection_for("payments").expect("protected");
        assert_eq!(rule.fields.len(), 2);
        assert_eq!(rule.fields[1].action, FieldAction::Mask { keep_last: 4 });
        assert!(rule.fields[0].stored_encrypted());
        assert!(set.topics.protection_for("orders").is_none());
    }

    #[test]
    fn fields_are_selected_by_path_or_by_schema_tag() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "tags.yaml",
            r#"topics:
  - id: bad
    match: [orders]
    value: { schema: required }
    fields:
      - { path: "$.a", tags: [PII], action: encrypt, key: "local:k" }
      - { tags: [], action: encrypt, key: "local:k" }
      - { tags: ["has space"], action: encrypt, key: "local:k" }
      - { tags: [PII], action: tokenize, key: "local:k", reveal_to: ["user:x"] }
      - { action: mask }
"#,
        );
        assert_errors_at(
            &errors_of(dir.path()),
            &[
                ":6:",
                "both `path` and `tags`",
                ":7:",
                "`tags` is empty",
                ":8:",
                "\"has space\" is not a tag name",
                ":9:",
                "field tagged PII: a token cannot be revealed",
                ":10:",
                "no `path` and no `tags`",
            ],
        );

        let one = tempfile::tempdir().unwrap();
        write(
            one.path(),
            "tags.yaml",
            r#"topics:
  - id: pii
    match: [customers]
    value: { schema: required }
    fields:
      - { path: "$.id", action: tokenize, key: "local:t" }
      - { tags: [PII, SECRET], action: encrypt, key: "local:k", reveal_to: ["user:alice"] }
"#,
        );
        let set = load_dir(one.path()).expect("tag entries load");
        let rule = set.topics.protection_for("customers").expect("protected");
        assert_eq!(rule.fields.len(), 1);
        assert_eq!(rule.tagged.len(), 1);
        let tagged = &rule.tagged[0];
        assert!(tagged.selects(["GDPR", "SECRET"].into_iter()));
        assert!(!tagged.selects(["pii"].into_iter()));
        let at = tagged.at(FieldPath::parse("$.ssn").unwrap());
        assert_eq!(at.action, FieldAction::Encrypt);
        assert_eq!(at.reveal_to.len(), 1);
    }

    #[test]
    fn reversible_applies_to_tokens_and_lets_them_be_revealed() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "tokens.yaml",
            r#"topics:
  - id: t
    match: [payments]
    value: { schema: required }
    fields:
      - { path: "$.a", action: tokenize, reversible: true, key: "local:k", reveal_to: ["user:x"] }
      - { path: "$.b", action: encrypt, reversible: true, key: "local:k" }
"#,
        );
        let errors = errors_of(dir.path());
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert!(
            errors[0].contains("reversible applies only to action: tokenize"),
            "{errors:#?}"
        );
        let one = tempfile::tempdir().unwrap();
        write(
            one.path(),
            "tokens.yaml",
            "topics:\n  - id: t\n    match: [p]\n    value: { schema: required }\n    fields:\n      - { path: \"$.a\", action: tokenize, reversible: true, key: \"local:k\", reveal_to: [\"user:x\"] }\n",
        );
        let set = load_dir(one.path()).expect("a reversible token with reveal_to loads");
        let rule = set.topics.protection_for("p").unwrap();
        assert_eq!(
            rule.fields[0].action,
            FieldAction::Tokenize { reversible: true }
        );
    }

    #[test]
    fn sign_rules_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "sign.yaml",
            r#"topics:
  - id: good
    match: [payments]
    sign: { key: "local:signing", algorithm: ed25519, headers: [trace-id], on_failure: drop }
  - id: bad
    match: [orders]
    sign: { algorithm: rsa, headers: [wire-guard.key, a, a], on_failure: ignore }
"#,
        );
        let errors = errors_of(dir.path());
        for expected in [
            "sign: has no `key`",
            "unknown signature algorithm \"rsa\"",
            "header \"wire-guard.key\" cannot be signed",
            "header \"a\" is listed twice",
            "unknown on_failure \"ignore\"",
        ] {
            assert!(
                errors.iter().any(|e| e.contains(expected)),
                "{expected}: {errors:#?}"
            );
        }
        let one = tempfile::tempdir().unwrap();
        write(
            one.path(),
            "sign.yaml",
            "topics:\n  - id: s\n    match: [payments]\n    sign: { key: \"local:signing\" }\n",
        );
        let set = load_dir(one.path()).expect("a sign-only rule loads");
        let rule = set.topics.protection_for("payments").expect("protected");
        let sign = rule.sign.as_ref().unwrap();
        assert_eq!(sign.algorithm, SignAlgorithm::HmacSha256);
        assert_eq!(sign.on_failure, OnSignatureFailure::Flag);
        assert!(set.topics.protects_fields());
    }

    #[test]
    fn whole_key_and_value_encryption_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "whole.yaml",
            r#"topics:
  - id: good
    match: [accounts]
    encrypt_key: { key: "local:k", reveal_to: ["user:alice"] }
    encrypt_value: { key: "aws-kms:alias/accounts" }
  - id: both
    match: [orders]
    value: { schema: required }
    encrypt_value: { key: "local:k" }
    fields:
      - { path: "$.a", action: encrypt, key: "local:k" }
  - id: keyless
    match: [clicks]
    encrypt_key: { reveal_to: ["user:x"] }
"#,
        );
        let errors = errors_of(dir.path());
        assert_eq!(errors.len(), 2, "{errors:#?}");
        assert!(
            errors
                .iter()
                .any(|e| e.contains("encrypts the whole value and fields of it")),
            "{errors:#?}"
        );
        assert!(
            errors
                .iter()
                .any(|e| e.contains("encrypt_key: has no `key`")),
            "{errors:#?}"
        );
    }

    const TOPICS: &str = r#"topics:
  - id: payments-values
    description: card payments
    match: ["payments.*"]
    value:
      schema: required
      on_invalid: { dead_letter: payments-dlq }
  - id: backfill
    match: [orders]
    principals: ["user:backfill", "group:etl"]
    key: { schema: required, subject: record, on_invalid: audit }
    value:
      schema: required
      subject: topic_record
      subjects: ["orders-com.acme.*"]
      registry_unavailable: fail_open
  - id: orders
    match: [orders, "orders.*"]
    value: { schema: required }
"#;

    #[test]
    fn loads_topic_rules_with_their_defaults() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.yaml", GOOD);
        write(dir.path(), "b.yaml", TOPICS);
        let set = load_dir(dir.path()).unwrap();
        assert_eq!(set.registry.rules.len(), 1);
        let ids: Vec<_> = set.topics.rules.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["payments-values", "backfill", "orders"]);
        let payments = &set.topics.rules[0];
        assert_eq!(payments.topics, [TopicPattern::Prefix("payments.".into())]);
        assert_eq!(payments.principals, None);
        assert_eq!(payments.key, None);
        assert_eq!(
            payments.value,
            Some(RecordRule {
                strategy: SubjectStrategy::Topic,
                subjects: None,
                on_invalid: OnInvalid::DeadLetter("payments-dlq".into()),
                registry_unavailable: RegistryUnavailable::FailClosed,
            })
        );
        let backfill = &set.topics.rules[1];
        assert_eq!(
            backfill.principals,
            Some(vec![
                PrincipalPattern::User("backfill".into()),
                PrincipalPattern::Group("etl".into())
            ])
        );
        assert_eq!(
            backfill.key,
            Some(RecordRule {
                strategy: SubjectStrategy::Record,
                subjects: None,
                on_invalid: OnInvalid::Audit,
                registry_unavailable: RegistryUnavailable::FailClosed,
            })
        );
        assert_eq!(
            backfill.value,
            Some(RecordRule {
                strategy: SubjectStrategy::TopicRecord,
                subjects: Some(vec![SubjectPattern::Prefix("orders-com.acme.".into())]),
                on_invalid: OnInvalid::Reject,
                registry_unavailable: RegistryUnavailable::FailOpen,
            })
        );
        let backfill_user = crate::principal::Principal::from_kafka("User:backfill");
        assert_eq!(
            set.topics
                .rule_for("orders", Some(&backfill_user))
                .map(|r| r.id.as_str()),
            Some("backfill")
        );
        assert_eq!(
            set.topics.rule_for("orders", None).map(|r| r.id.as_str()),
            Some("orders")
        );
        assert!(set.topics.rule_for("payments-dlq", None).is_none());
    }

    #[test]
    fn every_topic_rule_error_is_listed_with_its_place() {
        let dir = tempfile::tempdir().unwrap();
        let long = "t".repeat(250);
        let text = format!(
            r#"topics:
  - description: no id
    match: [a]
    value: {{ schema: required }}
  - id: ""
    match: [b]
    value: {{ schema: required }}
  - id: empty-match
    match: []
    value: {{ schema: required }}
  - id: bad-topics
    match: ["pay*ments", "orders/eu", "{long}", "ok"]
    value: {{ schema: required }}
  - id: nothing-checked
    match: [c]
  - id: bad-record
    match: [d]
    principals: ["role:x", "*"]
    key:
      schema: optional
      subject: topic_name
      subjects: ["*-value"]
      registry_unavailable: fail_opne
    value:
      subject: record
      on_invalid: rejct
  - id: bad-dead-letters
    match: ["payments.*"]
    key: {{ schema: required, on_invalid: {{ dead_letter: "payments.dlq" }} }}
    value: {{ schema: required, on_invalid: {{ dead_letter: "dlq/payments" }} }}
  - id: no-match
    value: {{ schema: required, on_invalid: dead_letter }}
  - id: empty-lists
    match: [e]
    principals: []
    value: {{ schema: required, subjects: [], on_invalid: {{ dead_letter: x, topic: y }} }}
"#
        );
        write(dir.path(), "topics.yaml", &text);
        let errors = errors_of(dir.path());
        let expect: &[(&str, &str)] = &[
            ("2:5", r#"topic rule has no `id`"#),
            ("5:9", r#"rule id "" is not a plain name"#),
            (
                "9:12",
                r#"topic rule "empty-match" has an empty `match` list"#,
            ),
            (
                "12:13",
                r#"topic pattern "pay*ments" has a `*` that is not at the end"#,
            ),
            (
                "12:26",
                r#""orders/eu" contains '/', which Kafka does not allow in a topic name"#,
            ),
            (
                "12:39",
                r#"is 250 characters long; Kafka topic names have at most 249"#,
            ),
            (
                "14:5",
                r#"topic rule "nothing-checked" checks neither `key` nor `value`"#,
            ),
            ("18:18", r#"unknown principal kind "role""#),
            ("20:15", r#"unknown schema requirement "optional""#),
            (
                "21:16",
                r#"unknown subject name strategy "topic_name"; expected one of topic, record, topic_record"#,
            ),
            (
                "22:18",
                r#"subject pattern "*-value" has a `*` that is not at the end"#,
            ),
            (
                "23:29",
                r#"unknown registry_unavailable "fail_opne"; expected fail_closed or fail_open (did you mean "fail_open"?)"#,
            ),
            ("25:7", r#"record rule has no `schema`"#),
            (
                "26:19",
                r#"unknown on_invalid "rejct"; write reject, audit, or { dead_letter: TOPIC } (did you mean "reject"?)"#,
            ),
            (
                "29:42",
                r#"dead-letter topic "payments.dlq" is governed by this rule's own match pattern "payments.*""#,
            ),
            ("30:44", r#"dead-letter topic: "dlq/payments" contains '/'"#),
            ("31:5", r#"topic rule "no-match" has no `match`"#),
            ("32:44", r#"on_invalid: dead_letter needs the topic"#),
            ("35:17", r#"empty `principals` list"#),
            ("36:42", r#"empty `subjects` list"#),
            (
                "36:58",
                r#"on_invalid map has keys ["dead_letter", "topic"]"#,
            ),
        ];
        for (place, text) in expect {
            let prefix = format!("{}:{place}: ", dir.path().join("topics.yaml").display());
            assert!(
                errors
                    .iter()
                    .any(|e| e.starts_with(&prefix) && e.contains(text)),
                "no error {prefix}...{text} in {errors:#?}"
            );
        }
        assert_eq!(errors.len(), expect.len(), "{errors:#?}");
        assert!(
            errors.iter().all(|e| e.contains("; ")),
            "every error has a hint: {errors:#?}"
        );
    }

    #[test]
    fn rule_ids_are_one_namespace_across_sections() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.yaml", GOOD);
        write(
            dir.path(),
            "b.yaml",
            "topics:\n  - id: owners\n    match: [x]\n    value: { schema: required }\n",
        );
        write(
            dir.path(),
            "c.yaml",
            "registry:\n  rules:\n    - id: readers\n      principals: [\"*\"]\n      subjects: [\"*\"]\n      operations: [read]\ntopics:\n  - id: readers\n    match: [y]\n    value: { schema: required }\n  - id: y\n    match: [y]\n    value: { schema: required }\n  - id: y\n    match: [z]\n    value: { schema: required }\n",
        );
        let errors = errors_of(dir.path());
        assert_eq!(errors.len(), 3, "{errors:#?}");
        assert!(
            errors[0].contains("b.yaml:2:9: duplicate rule id \"owners\"")
                && errors[0].contains("a.yaml:3"),
            "{errors:#?}"
        );
        assert!(
            errors[1].contains("c.yaml:8:9: duplicate rule id \"readers\"")
                && errors[1].contains("line 3"),
            "{errors:#?}"
        );
        assert!(
            errors[2].contains("c.yaml:14:9: duplicate rule id \"y\""),
            "{errors:#?}"
        );
    }

    #[test]
    fn rule_ids_are_unique_across_files() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.yaml", GOOD);
        write(dir.path(), "b.yaml", GOOD);
        let errors = errors_of(dir.path());
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert!(
            errors[0].contains("b.yaml:3:") && errors[0].contains("duplicate rule id \"owners\""),
            "{errors:#?}"
        );
    }

    #[test]
    fn syntax_errors_carry_a_location() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "bad.yaml", "registry:\n  rules: [\n");
        let errors = errors_of(dir.path());
        assert_eq!(errors.len(), 1);
        assert!(errors[0].contains("bad.yaml:"), "{errors:#?}");
    }

    #[test]
    fn empty_lists_can_never_match_and_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "a.yaml",
            "registry:\n  rules:\n    - id: a\n      principals: []\n      subjects: [\"*\"]\n      operations: [read]\n",
        );
        let errors = errors_of(dir.path());
        assert!(errors[0].contains("empty `principals`"), "{errors:#?}");
    }

    #[test]
    fn example_policies_validate() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
        let set = load_dir(&dir).unwrap_or_else(|e| panic!("policies/ does not validate:\n{e}"));
        assert!(!set.registry.rules.is_empty());
        assert!(!set.topics.is_empty());
    }
}
