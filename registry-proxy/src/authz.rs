//! Authorization: the policy's decision for a classified request.
//!
//! Deny by default. A request concerning several subjects (a schema with references, a config
//! alias) needs every grant; a read by schema id needs `read` on any one subject using the id,
//! or, where the registry cannot say which subjects those are (Apicurio), on every subject.
//! The outcome carries the ids of the rules that permitted it, for the audit record.

use serde::Deserialize;
use shared::{
    policy::{Decision, Operation, RegistryPolicy, SubjectPattern},
    principal::Principal,
};

use crate::{
    endpoints::{BodyCheck, Endpoint, Namespace, Target},
    error::Error,
};

/// What the policy decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Permitted; the rule ids that did so (one per distinct rule).
    Permit(Vec<String>),
    /// A listing, permitted and to be filtered.
    Filtered,
    /// Denied: the client message and, for the audit record, which grant was missing.
    Deny { message: String, missing: String },
}

/// The (operation, subject) grants a request needs, from its endpoint and body.
pub fn requirements(endpoint: &Endpoint, body: &[u8]) -> Result<Vec<(Operation, String)>, Error> {
    let mut needs: Vec<(Operation, String)> = match &endpoint.target {
        Target::Subjects(subjects) => subjects
            .iter()
            .map(|s| (endpoint.operation, s.clone()))
            .collect(),
        _ => Vec::new(),
    };
    let ns = &endpoint.namespace;
    let qualify = |name: &str| -> Result<String, Error> {
        if name.is_empty() {
            return Err(Error::BadRequest("empty subject in request body".into()));
        }
        ns.qualify(name)
            .ok_or_else(|| Error::BadRequest("invalid subject in request body".into()))
    };
    match endpoint.body {
        BodyCheck::None => {}
        BodyCheck::References => {
            if let Some(refs) = parse::<SchemaBody>(body)?.references {
                for r in refs {
                    needs.push((Operation::Read, qualify(&r.subject)?));
                }
            }
        }
        BodyCheck::ConfigAlias => {
            // Confluent's AliasFilter rewrites `/subjects/{alias}/...` for every method, so
            // after the alias every operation on the subject acts on the target: setting it
            // needs every subject-level operation there.
            if let Some(alias) = parse::<ConfigBody>(body)?.alias.filter(|a| !a.is_empty()) {
                let target = qualify(&alias)?;
                for op in SUBJECT_OPERATIONS {
                    needs.push((op, target.clone()));
                }
            }
        }
        BodyCheck::ApicurioCreate => {
            let artifact = parse::<ApicurioCreateBody>(body)?
                .artifact_id
                .filter(|a| !a.is_empty() && !a.contains(':'))
                .ok_or_else(|| {
                    Error::BadRequest(
                        "artifactId is required in the body through registry-proxy".into(),
                    )
                })?;
            needs.push((Operation::Write, qualify(&artifact)?));
        }
    }
    Ok(needs)
}

/// Every operation that concerns a single subject.
const SUBJECT_OPERATIONS: [Operation; 5] = [
    Operation::Read,
    Operation::Write,
    Operation::Delete,
    Operation::CompatRead,
    Operation::CompatWrite,
];

/// Parses only the fields authorization needs. Derived `Deserialize` refuses a duplicated
/// field, so `{"alias": "a", "alias": "b"}` cannot be read one way here and another upstream.
fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, Error> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(Error::BadRequest("request body required".into()));
    }
    serde_json::from_slice(body).map_err(|e| Error::BadRequest(format!("request body: {e}")))
}

#[derive(Deserialize)]
struct SchemaBody {
    #[serde(default)]
    references: Option<Vec<ReferenceBody>>,
}

#[derive(Deserialize)]
struct ReferenceBody {
    subject: String,
}

#[derive(Deserialize)]
struct ConfigBody {
    #[serde(default)]
    alias: Option<String>,
}

#[derive(Deserialize)]
struct ApicurioCreateBody {
    #[serde(default, rename = "artifactId")]
    artifact_id: Option<String>,
}

fn denied(who: &Principal, op: Operation, subject: Option<&str>) -> Outcome {
    let on = subject.map_or_else(|| "the registry".to_owned(), |s| format!("subject {s}"));
    Outcome::Deny {
        message: format!("User {} is denied operation {op} on {on}", who.user),
        missing: format!("no rule grants {op} on {on}"),
    }
}

fn push_rule(rules: &mut Vec<String>, decision: &Decision) {
    if let Some(id) = decision.rule_id()
        && !rules.iter().any(|r| r == id)
    {
        rules.push(id.to_owned());
    }
}

/// Decides a request whose grants are known (every target but `SchemaId`).
pub fn decide(
    policy: &RegistryPolicy,
    who: &Principal,
    endpoint: &Endpoint,
    needs: &[(Operation, String)],
) -> Outcome {
    match &endpoint.target {
        Target::List => Outcome::Filtered,
        Target::EverySubject => {
            let op = endpoint.operation;
            match policy.rules.iter().find(|r| {
                r.operations.contains(&op)
                    && r.subjects.contains(&SubjectPattern::Any)
                    && r.principals.iter().any(|p| p.matches(who))
            }) {
                Some(rule) => Outcome::Permit(vec![rule.id.to_string()]),
                None => denied(who, op, Some("*")),
            }
        }
        Target::Global => match policy.check_global(who, endpoint.operation) {
            d @ Decision::Permit(_) => {
                Outcome::Permit(vec![d.rule_id().unwrap_or_default().to_owned()])
            }
            Decision::Deny => denied(who, endpoint.operation, None),
        },
        Target::Subjects(_) | Target::SchemaId(_) => {
            if needs.is_empty() {
                return denied(who, endpoint.operation, None);
            }
            let mut rules = Vec::new();
            for (op, subject) in needs {
                let d = policy.check(who, *op, subject);
                if !d.is_permit() {
                    return denied(who, *op, Some(subject));
                }
                push_rule(&mut rules, &d);
            }
            Outcome::Permit(rules)
        }
    }
}

/// Decides a read by id: permitted when `who` may read any subject using it.
pub fn decide_by_id(
    policy: &RegistryPolicy,
    who: &Principal,
    id: &str,
    subjects: &[String],
) -> Outcome {
    for s in subjects {
        let d = policy.check(who, Operation::Read, s);
        if let Some(rule) = d.rule_id() {
            return Outcome::Permit(vec![rule.to_owned()]);
        }
    }
    Outcome::Deny {
        message: format!(
            "User {} is denied operation read on schema id {id}",
            who.user
        ),
        missing: format!(
            "no rule grants read on any of the {} subject(s) using id {id}",
            subjects.len()
        ),
    }
}

/// Canonical subjects from an upstream `[{"subject": ..., "version": ...}]` answer.
pub fn subjects_of(body: &[u8], ns: &Namespace) -> Result<Vec<String>, Error> {
    let items: Vec<serde_json::Value> = serde_json::from_slice(body)
        .map_err(|e| Error::Upstream(format!("id lookup answer: {e}")))?;
    Ok(items
        .iter()
        .filter_map(|v| v.get("subject").and_then(|s| s.as_str()))
        .filter_map(|s| ns.qualify(s))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoints::{Filter, SubjectCheck};
    use shared::{
        policy::{RegistryRule, SubjectPattern},
        principal::PrincipalPattern,
    };

    fn endpoint(op: Operation, subject: &str, body: BodyCheck) -> Endpoint {
        Endpoint {
            name: "test",
            operation: op,
            target: Target::Subjects(vec![subject.into()]),
            body,
            filter: Filter::None,
            cacheable: false,
            namespace: Namespace::default(),
            names: Namespace::default(),
            subject_check: SubjectCheck::None,
            id_lookup: None,
        }
    }

    fn policy() -> RegistryPolicy {
        RegistryPolicy {
            rules: vec![
                RegistryRule {
                    id: "pay".into(),
                    principals: vec![PrincipalPattern::Any],
                    subjects: vec![SubjectPattern::parse("pay*").unwrap()],
                    operations: vec![Operation::Read, Operation::Write, Operation::CompatWrite],
                },
                RegistryRule {
                    id: "pay-owned".into(),
                    principals: vec![PrincipalPattern::Any],
                    subjects: vec![SubjectPattern::parse("pay-owned*").unwrap()],
                    operations: SUBJECT_OPERATIONS.to_vec(),
                },
            ],
        }
    }

    #[test]
    fn references_need_read_on_each_subject() {
        let who = Principal::user("a");
        let e = endpoint(Operation::Write, "pay-value", BodyCheck::References);
        let ok = requirements(
            &e,
            br#"{"schema":"x","references":[{"name":"n","subject":"pay-ref","version":1}]}"#,
        )
        .unwrap();
        assert_eq!(
            decide(&policy(), &who, &e, &ok),
            Outcome::Permit(vec!["pay".into()])
        );
        let bad = requirements(
            &e,
            br#"{"schema":"x","references":[{"name":"n","subject":"secret","version":1}]}"#,
        )
        .unwrap();
        assert!(matches!(
            decide(&policy(), &who, &e, &bad),
            Outcome::Deny { .. }
        ));
    }

    #[test]
    fn alias_needs_rights_on_both_subjects() {
        let who = Principal::user("a");
        let e = endpoint(Operation::CompatWrite, "pay-value", BodyCheck::ConfigAlias);
        let needs = requirements(&e, br#"{"alias":"secret-value"}"#).unwrap();
        assert!(matches!(
            decide(&policy(), &who, &e, &needs),
            Outcome::Deny { .. }
        ));
        let needs = requirements(&e, br#"{"alias":"pay-other"}"#).unwrap();
        assert!(
            matches!(decide(&policy(), &who, &e, &needs), Outcome::Deny { .. }),
            "read and compat_write on the target are not enough: writes and deletes follow the alias"
        );
        let needs = requirements(&e, br#"{"alias":"pay-owned-2"}"#).unwrap();
        assert!(matches!(
            decide(&policy(), &who, &e, &needs),
            Outcome::Permit(_)
        ));
        assert!(
            requirements(&e, br#"{"alias":"pay-other","alias":"secret"}"#).is_err(),
            "duplicate keys are refused"
        );
    }

    #[test]
    fn id_reads_need_one_readable_subject() {
        let who = Principal::user("a");
        assert!(matches!(
            decide_by_id(&policy(), &who, "1", &["x".into(), "pay".into()]),
            Outcome::Permit(_)
        ));
        assert!(matches!(
            decide_by_id(&policy(), &who, "1", &["x".into()]),
            Outcome::Deny { .. }
        ));
        assert!(matches!(
            decide_by_id(&policy(), &who, "1", &[]),
            Outcome::Deny { .. }
        ));
    }

    #[test]
    fn every_subject_targets_need_a_rule_on_star() {
        let who = Principal::user("a");
        let mut e = endpoint(Operation::Read, "x", BodyCheck::None);
        e.target = Target::EverySubject;
        assert!(matches!(
            decide(&policy(), &who, &e, &[]),
            Outcome::Deny { .. }
        ));
        let mut everything = policy();
        everything.rules.push(RegistryRule {
            id: "all".into(),
            principals: vec![PrincipalPattern::Any],
            subjects: vec![SubjectPattern::Any],
            operations: vec![Operation::Read],
        });
        assert_eq!(
            decide(&everything, &who, &e, &[]),
            Outcome::Permit(vec!["all".into()])
        );
    }
}
