//! Confluent data-contract rules (`ruleSet.domainRules`) that wire-guard enforces on produce:
//! enabled `CONDITION` rules of type `CEL` (over the whole record, bound as `message`) or
//! `CEL_FIELD` (over every primitive field), whose mode applies on write (`WRITE`,
//! `WRITEREAD`).
//!
//! Everything else is ignored, because it is not a check a proxy can make on the producer's
//! behalf: `TRANSFORM` rules (they rewrite records, which is the client's business), other rule
//! types (`ENCRYPT`, `JSONATA`, custom executors), `READ`/`UPGRADE`/`DOWNGRADE`/`UPDOWN` modes,
//! migration rules, and disabled rules. A rule that is in scope but cannot be enforced as
//! written (an expression that does not parse, a `DLQ` action without `dlq.topic`, an unknown
//! action, field selection by tags) makes the whole schema unusable: silently skipping a rule
//! would let through records its owner meant to stop.
//!
//! Bindings follow Confluent's CEL executors: a `GUARD ; EXPR` expression passes when the guard
//! is not true; `CEL_FIELD` binds `name`, `fullName` (the containing record's full name, a dot
//! and the field name), `typeName`, `value`, `tags` (always empty here) and `message` (the
//! record holding the field). A condition holds only when it evaluates to boolean true.

use std::{collections::HashMap, sync::Arc, sync::LazyLock};

use cel::{Context, Program};
use serde::Deserialize;

use super::{OnFailure, RuleFailure, datum::Datum};

/// One interpreter environment (the standard library) for every evaluation; building it per
/// record would cost more than most rules.
static ENV: LazyLock<Arc<cel::Env>> = LazyLock::new(|| Arc::new(cel::Env::stdlib()));

/// The parts of a registry `ruleSet` this module reads.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct RuleSetDoc {
    #[serde(rename = "domainRules", default)]
    domain_rules: Vec<RuleDoc>,
}

#[derive(Debug, Deserialize)]
struct RuleDoc {
    name: String,
    kind: Option<String>,
    #[serde(rename = "type")]
    rule_type: Option<String>,
    mode: Option<String>,
    expr: Option<String>,
    #[serde(rename = "onFailure")]
    on_failure: Option<String>,
    #[serde(default)]
    params: HashMap<String, String>,
    #[serde(default)]
    disabled: bool,
    #[serde(default)]
    tags: Vec<String>,
}

/// The write-side conditions of one schema, compiled.
#[derive(Debug, Default)]
pub(crate) struct Rules {
    rules: Vec<Rule>,
    /// The record fields the `CEL` rules read as `message.NAME`, when that is all they read of
    /// `message`: only those are converted for CEL, so a rule on one field of a large record
    /// does not copy the rest of it for every record. `None`: bind the whole record.
    message_fields: Option<std::collections::BTreeSet<String>>,
}

/// The names `text` reads as `message.NAME`, or `None` if it uses `message` any other way
/// (whole, indexed, passed to a function). Over-collecting is harmless; missing a use is not,
/// so anything unusual binds the whole record.
fn message_fields(text: &str) -> Option<std::collections::BTreeSet<String>> {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut fields = std::collections::BTreeSet::new();
    for (at, word) in text.match_indices("message") {
        let after = &text[at + word.len()..];
        if text[..at].ends_with(ident) || after.starts_with(ident) {
            continue;
        }
        let name: String = after
            .strip_prefix('.')?
            .chars()
            .take_while(|c| ident(*c))
            .collect();
        if name.is_empty() {
            return None;
        }
        fields.insert(name);
    }
    Some(fields)
}

#[derive(Debug)]
struct Rule {
    name: String,
    on_failure: OnFailure,
    scope: Scope,
    /// The guard before `;`, if any: the rule holds wherever it is not true.
    guard: Option<Expression>,
    condition: Expression,
}

/// A compiled expression with its text, which failure messages quote. `cel::Program` is a plain
/// syntax tree (`Send + Sync`, asserted below), so one compiled program is shared by every
/// thread that validates records.
#[derive(Debug)]
struct Expression {
    text: String,
    program: Program,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// `CEL`: once per record.
    Message,
    /// `CEL_FIELD`: once per primitive field.
    Field,
}

const _: () = {
    const fn shared_across_threads<T: Send + Sync>() {}
    shared_across_threads::<Expression>();
    shared_across_threads::<cel::Env>();
};

impl Rules {
    /// Compiles the rules of a registry `ruleSet` (absent: no rules).
    pub(crate) fn compile(rule_set: Option<&serde_json::Value>) -> Result<Self, String> {
        let Some(rule_set) = rule_set.filter(|value| !value.is_null()) else {
            return Ok(Rules::default());
        };
        let doc = RuleSetDoc::deserialize(rule_set).map_err(|e| format!("ruleSet: {e}"))?;
        let mut rules = Vec::new();
        for rule in doc.domain_rules {
            if let Some(rule) = compile_rule(rule)? {
                rules.push(rule);
            }
        }
        let mut wanted = Some(std::collections::BTreeSet::new());
        for rule in rules.iter().filter(|r| r.scope == Scope::Message) {
            for expression in rule.guard.iter().chain([&rule.condition]) {
                match (message_fields(&expression.text), wanted.as_mut()) {
                    (Some(fields), Some(all)) => all.extend(fields),
                    _ => wanted = None,
                }
            }
        }
        Ok(Rules {
            rules,
            message_fields: wanted,
        })
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Evaluates every rule against a decoded record and returns the ones that failed.
    pub(crate) fn evaluate(&self, record: &Datum) -> Vec<RuleFailure> {
        let mut failures = Vec::new();
        let message = match &self.message_fields {
            Some(fields) => record.to_cel_with(fields),
            None => record.to_cel(),
        };
        for rule in &self.rules {
            let outcome = match rule.scope {
                Scope::Message => rule.check(&[("message", message.clone())]),
                Scope::Field => rule.check_fields(record),
            };
            if let Err(message) = outcome {
                failures.push(RuleFailure {
                    rule: rule.name.clone(),
                    on_failure: rule.on_failure.clone(),
                    message,
                });
            }
        }
        failures
    }
}

fn compile_rule(rule: RuleDoc) -> Result<Option<Rule>, String> {
    let scope = match rule.rule_type.as_deref() {
        Some("CEL") => Scope::Message,
        Some("CEL_FIELD") => Scope::Field,
        _ => return Ok(None),
    };
    if rule.disabled || rule.kind.as_deref() != Some("CONDITION") {
        return Ok(None);
    }
    let name = rule.name;
    match rule.mode.as_deref() {
        Some("WRITE" | "WRITEREAD") => {}
        Some(_) => return Ok(None),
        None => return Err(format!("rule {name} has no mode")),
    }
    if scope == Scope::Field && !rule.tags.is_empty() {
        return Err(format!(
            "rule {name} selects fields by tags {:?}, which wire-guard does not resolve",
            rule.tags
        ));
    }
    // WRITEREAD rules may name two actions, "write,read".
    let action = rule
        .on_failure
        .as_deref()
        .and_then(|actions| actions.split(',').next())
        .map(str::trim);
    let on_failure = match action {
        None | Some("" | "ERROR") => OnFailure::Error,
        Some("NONE") => OnFailure::None,
        Some("DLQ") => match rule.params.get("dlq.topic").filter(|t| !t.is_empty()) {
            Some(topic) => OnFailure::DeadLetter(topic.clone()),
            None => {
                return Err(format!(
                    "rule {name} sends failures to a DLQ but has no dlq.topic parameter"
                ));
            }
        },
        Some(other) => {
            return Err(format!(
                "rule {name} has an unknown onFailure action {other}"
            ));
        }
    };
    let text = rule
        .expr
        .filter(|expr| !expr.trim().is_empty())
        .ok_or_else(|| format!("rule {name} has no expression"))?;
    let (guard, condition) = match text.split_once(';') {
        Some((guard, condition)) => {
            let guard = guard.trim();
            let guard = if guard.is_empty() {
                None
            } else {
                Some(expression(&name, guard)?)
            };
            (guard, expression(&name, condition.trim())?)
        }
        None => (None, expression(&name, text.trim())?),
    };
    Ok(Some(Rule {
        name,
        on_failure,
        scope,
        guard,
        condition,
    }))
}

fn expression(rule: &str, text: &str) -> Result<Expression, String> {
    let program = ENV
        .compile(text)
        .map_err(|e| format!("rule {rule}: expression `{text}` does not parse: {e}"))?;
    Ok(Expression {
        text: text.to_owned(),
        program,
    })
}

impl Expression {
    fn run(&self, bindings: &[(&str, cel::Value)]) -> Result<cel::Value, String> {
        let mut context = Context::with_env(ENV.clone());
        for (name, value) in bindings {
            context
                .add_variable(*name, value.clone())
                .map_err(|e| format!("`{}`: cannot bind {name}: {e}", self.text))?;
        }
        self.program
            .execute(&context)
            .map_err(|e| format!("`{}` failed to evaluate: {e}", self.text))
    }
}

impl Rule {
    /// `Ok` when the guard is not true or the condition is true; otherwise says why.
    fn check(&self, bindings: &[(&str, cel::Value)]) -> Result<(), String> {
        if let Some(guard) = &self.guard {
            match guard.run(bindings)? {
                cel::Value::Bool(true) => {}
                cel::Value::Bool(false) => return Ok(()),
                other => {
                    return Err(format!(
                        "guard `{}` evaluated to {other:?}, not a boolean",
                        guard.text
                    ));
                }
            }
        }
        match self.condition.run(bindings)? {
            cel::Value::Bool(true) => Ok(()),
            cel::Value::Bool(false) => Err(format!("`{}` is false", self.condition.text)),
            other => Err(format!(
                "`{}` evaluated to {other:?}, not a boolean",
                self.condition.text
            )),
        }
    }

    /// Checks every primitive field, walking nested records, arrays and maps; stops at the
    /// first field that fails and names it.
    fn check_fields(&self, record: &Datum) -> Result<(), String> {
        let Datum::Record { name, fields } = record else {
            return Ok(());
        };
        let message = record.to_cel();
        for (field, value) in fields {
            let full_name = format!("{name}.{field}");
            self.check_value(value, field, &full_name, field, &message)?;
        }
        Ok(())
    }

    fn check_value(
        &self,
        value: &Datum,
        field: &str,
        full_name: &str,
        path: &str,
        message: &cel::Value,
    ) -> Result<(), String> {
        match value {
            Datum::Record { .. } => self
                .check_fields(value)
                .map_err(|why| format!("{path}.{why}")),
            Datum::Array(items) => items.iter().enumerate().try_for_each(|(i, item)| {
                self.check_value(item, field, full_name, &format!("{path}[{i}]"), message)
            }),
            Datum::Map(entries) => entries.iter().try_for_each(|(key, item)| {
                self.check_value(item, field, full_name, &format!("{path}[{key}]"), message)
            }),
            leaf if leaf.is_rule_leaf() => {
                let bindings = [
                    ("name", cel::Value::from(field)),
                    ("fullName", cel::Value::from(full_name)),
                    ("typeName", cel::Value::from(leaf.type_name())),
                    ("value", leaf.to_cel()),
                    ("tags", cel::Value::List(Arc::new(Vec::new()))),
                    ("message", message.clone()),
                ];
                self.check(&bindings)
                    .map_err(|why| format!("{path}: {why}"))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user(age: i64, email: &str) -> Datum {
        Datum::Record {
            name: "acme.User".into(),
            fields: vec![
                ("age".into(), Datum::Int(age)),
                (
                    "contact".into(),
                    Datum::Record {
                        name: "acme.Contact".into(),
                        fields: vec![
                            ("email".into(), Datum::String(email.into())),
                            (
                                "phones".into(),
                                Datum::Array(vec![Datum::String("1".into())]),
                            ),
                        ],
                    },
                ),
            ],
        }
    }

    fn rules(rules: serde_json::Value) -> Result<Rules, String> {
        Rules::compile(Some(&json!({ "domainRules": rules })))
    }

    fn condition(name: &str, rule_type: &str, expr: &str) -> serde_json::Value {
        json!({"name": name, "kind": "CONDITION", "type": rule_type, "mode": "WRITE", "expr": expr})
    }

    #[test]
    fn only_the_fields_rules_read_are_bound() {
        assert_eq!(
            message_fields("message.amount > 0 && has(message.id)"),
            Some(["amount".to_owned(), "id".to_owned()].into())
        );
        assert_eq!(message_fields("size(message) > 1"), None);
        assert_eq!(message_fields("message['amount'] > 0"), None);
        assert_eq!(
            message_fields("messages.x == 1 && my_message.y"),
            Some([].into())
        );
        let compiled = rules(json!([condition("adult", "CEL", "message.age >= 18")])).unwrap();
        assert!(compiled.evaluate(&user(30, "a@b")).is_empty());
        assert_eq!(compiled.evaluate(&user(12, "a@b")).len(), 1);
        let whole = rules(json!([condition("two", "CEL", "size(message) == 2")])).unwrap();
        assert!(
            whole.evaluate(&user(30, "a@b")).is_empty(),
            "the whole record is bound"
        );
    }

    #[test]
    fn cel_conditions_pass_fail_or_error() {
        let compiled = rules(json!([
            condition("adult", "CEL", "message.age >= 18"),
            condition("has-email", "CEL", "message.contact.email.contains('@')"),
            condition("typo", "CEL", "message.missing == 1"),
            condition("not-bool", "CEL", "message.age"),
        ]))
        .unwrap();
        let failures = compiled.evaluate(&user(30, "a@b"));
        let failed: Vec<&str> = failures.iter().map(|f| f.rule.as_str()).collect();
        assert_eq!(failed, ["typo", "not-bool"]);
        assert!(
            failures[0].message.contains("message.missing == 1"),
            "{failures:?}"
        );
        assert!(
            failures[1].message.contains("not a boolean"),
            "{failures:?}"
        );
        assert_eq!(failures[0].on_failure, OnFailure::Error);

        let failures = compiled.evaluate(&user(12, "nobody"));
        assert_eq!(failures[0].rule, "adult");
        assert_eq!(failures[0].message, "`message.age >= 18` is false");
        assert_eq!(failures[1].rule, "has-email");
    }

    #[test]
    fn cel_field_rules_walk_nested_fields_behind_a_guard() {
        let compiled = rules(json!([condition(
            "short-strings",
            "CEL_FIELD",
            "typeName == 'STRING' ; size(value) <= 5"
        )]))
        .unwrap();
        assert!(compiled.evaluate(&user(30, "a@b.c")).is_empty());
        let failures = compiled.evaluate(&user(30, "someone@example.com"));
        assert_eq!(failures.len(), 1);
        assert!(
            failures[0].message.starts_with("contact.email: "),
            "{failures:?}"
        );

        let by_name = rules(json!([condition(
            "email-names",
            "CEL_FIELD",
            "fullName == 'acme.Contact.email' ; value.contains('@') && message.phones.size() == 1"
        )]))
        .unwrap();
        assert!(by_name.evaluate(&user(3, "a@b")).is_empty());
        assert_eq!(by_name.evaluate(&user(3, "ab")).len(), 1);
    }

    #[test]
    fn dead_letter_rules_carry_their_topic() {
        let mut rule = condition("adult", "CEL", "message.age >= 18");
        rule["onFailure"] = json!("DLQ");
        assert!(
            rules(json!([rule.clone()]))
                .unwrap_err()
                .contains("dlq.topic")
        );
        rule["params"] = json!({"dlq.topic": "users.dlq"});
        rule["mode"] = json!("WRITEREAD");
        rule["onFailure"] = json!("DLQ,ERROR");
        let failures = rules(json!([rule])).unwrap().evaluate(&user(1, "a@b"));
        assert_eq!(
            failures[0].on_failure,
            OnFailure::DeadLetter("users.dlq".into())
        );
    }

    #[test]
    fn rules_out_of_scope_are_ignored() {
        let mut disabled = condition("off", "CEL", "false");
        disabled["disabled"] = json!(true);
        let mut read_only = condition("read", "CEL", "false");
        read_only["mode"] = json!("READ");
        let mut transform = condition("rewrite", "CEL", "false");
        transform["kind"] = json!("TRANSFORM");
        let encrypt = json!({"name": "pii", "kind": "TRANSFORM", "type": "ENCRYPT", "mode": "WRITEREAD", "tags": ["PII"]});
        let compiled = rules(json!([disabled, read_only, transform, encrypt])).unwrap();
        assert!(compiled.is_empty());
        assert!(Rules::compile(None).unwrap().is_empty());
    }

    #[test]
    fn rules_that_cannot_be_enforced_make_the_schema_unusable() {
        let err = rules(json!([condition("broken", "CEL", "message.age >=")])).unwrap_err();
        assert!(
            err.contains("broken") && err.contains("does not parse"),
            "{err}"
        );
        let mut odd = condition("odd", "CEL", "true");
        odd["onFailure"] = json!("PAGE_SOMEONE");
        assert!(rules(json!([odd])).unwrap_err().contains("PAGE_SOMEONE"));
        let mut tagged = condition("tagged", "CEL_FIELD", "true");
        tagged["tags"] = json!(["PII"]);
        assert!(rules(json!([tagged])).unwrap_err().contains("tags"));
    }
}
