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

/// The grants a request needs, from its endpoint and body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Needs {
    /// (operation, canonical subject) pairs, each needed.
    pub grants: Vec<(Operation, String)>,
    /// Operations needed on every subject (a rule over `*`), because the body names subjects
    /// the proxy cannot read with certainty: it is not the JSON the proxy parses, a field it
    /// reads is duplicated or of another type, or a name is missing or invalid. A caller who
    /// may do this anywhere is not refused over the body's form: the registry answers it.
    pub everywhere: Vec<Operation>,
    /// Why `everywhere` is needed, for the audit record.
    pub unreadable: Option<String>,
}

impl Needs {
    fn everywhere(&mut self, ops: &[Operation], why: String) {
        for op in ops {
            if !self.everywhere.contains(op) {
                self.everywhere.push(*op);
            }
        }
        self.unreadable.get_or_insert(why);
    }
}

/// The grants a request needs, from its endpoint and body.
pub fn requirements(endpoint: &Endpoint, body: &[u8]) -> Needs {
    let mut needs = Needs {
        grants: match &endpoint.target {
            Target::Subjects(subjects) => subjects
                .iter()
                .map(|s| (endpoint.operation, s.clone()))
                .collect(),
            _ => Vec::new(),
        },
        ..Needs::default()
    };
    let ns = &endpoint.namespace;
    let qualify = |ns: &Namespace, name: &str| -> Result<String, String> {
        if name.is_empty() {
            return Err("empty subject in request body".into());
        }
        ns.qualify(name)
            .ok_or_else(|| format!("invalid subject {name:?} in request body"))
    };
    // An empty schema or config body names nothing beyond the path's subject, which is
    // authorized already; the registry answers it.
    if body.iter().all(u8::is_ascii_whitespace)
        && matches!(
            endpoint.body,
            BodyCheck::References | BodyCheck::ConfigAlias
        )
    {
        return needs;
    }
    match endpoint.body {
        BodyCheck::None => {}
        BodyCheck::References => {
            match parse::<SchemaBody>(body).and_then(|b| {
                b.references
                    .unwrap_or_default()
                    .iter()
                    .map(|r| qualify(ns, &r.subject))
                    .collect::<Result<Vec<_>, _>>()
            }) {
                Ok(refs) => needs
                    .grants
                    .extend(refs.into_iter().map(|s| (Operation::Read, s))),
                Err(why) => needs.everywhere(&[Operation::Read], why),
            }
        }
        BodyCheck::ConfigAlias => {
            // Confluent's AliasFilter rewrites `/subjects/{alias}/...` for every method, so
            // after the alias every operation on the subject acts on the target: setting it
            // needs every subject-level operation there.
            match parse::<ConfigBody>(body).and_then(|b| match b.alias.filter(|a| !a.is_empty()) {
                Some(alias) => qualify(ns, &alias).map(Some),
                None => Ok(None),
            }) {
                Ok(Some(target)) => {
                    for op in SUBJECT_OPERATIONS {
                        needs.grants.push((op, target.clone()));
                    }
                }
                Ok(None) => {}
                Err(why) => needs.everywhere(&SUBJECT_OPERATIONS, why),
            }
        }
        BodyCheck::ApicurioCreate => {
            match parse::<ApicurioCreateBody>(body).and_then(|b| {
                b.artifact_id
                    .filter(|a| !a.is_empty() && !a.contains(':'))
                    .ok_or_else(|| "no artifactId in the body: Apicurio generates one".into())
                    .and_then(|a| qualify(ns, &a))
            }) {
                Ok(subject) => needs.grants.push((Operation::Write, subject)),
                Err(why) => needs.everywhere(&[Operation::Write], why),
            }
        }
        BodyCheck::Association => match parse::<AssociationBody>(body) {
            Ok(b) => {
                for a in b.associations.unwrap_or_default() {
                    // No subject: the registry picks one (the resource's default or current).
                    let subject = match a.subject.as_deref().map(|s| qualify(ns, s)) {
                        Some(Ok(s)) => s,
                        Some(Err(why)) => {
                            needs.everywhere(&[Operation::Write], why);
                            continue;
                        }
                        None => {
                            needs.everywhere(
                                &[Operation::Write],
                                "association without a subject: the registry chooses it".into(),
                            );
                            continue;
                        }
                    };
                    let refs = a.schema.and_then(|s| s.references).unwrap_or_default();
                    let ref_ns = context_of(&subject);
                    for r in refs {
                        match qualify(&ref_ns, &r.subject) {
                            Ok(r) => needs.grants.push((Operation::Read, r)),
                            Err(why) => needs.everywhere(&[Operation::Read], why),
                        }
                    }
                    needs.grants.push((Operation::Write, subject));
                }
            }
            Err(why) => needs.everywhere(&[Operation::Write, Operation::Read], why),
        },
        BodyCheck::DekCreate => {
            match parse::<DekBody>(body).and_then(|b| {
                b.subject
                    .ok_or_else(|| "no subject in the body".to_owned())
                    .and_then(|s| qualify(ns, &s))
            }) {
                Ok(subject) => needs.grants.push((Operation::Write, subject)),
                Err(why) => needs.everywhere(&[Operation::Write], why),
            }
        }
    }
    needs
}

/// The context of a canonical subject: names in a schema registered under it are relative
/// to it, as Confluent's `qualifySubjectWithParent` reads them.
fn context_of(subject: &str) -> Namespace {
    match subject.strip_prefix(':').and_then(|r| r.split_once(':')) {
        Some((ctx, _)) => Namespace(Some(ctx.to_owned())),
        None => Namespace::default(),
    }
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
fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| format!("request body unreadable: {e}"))
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

#[derive(Deserialize)]
struct AssociationBody {
    #[serde(default)]
    associations: Option<Vec<AssociationInfo>>,
}

#[derive(Deserialize)]
struct AssociationInfo {
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    schema: Option<SchemaBody>,
}

#[derive(Deserialize)]
struct DekBody {
    #[serde(default)]
    subject: Option<String>,
}

/// The id of a rule granting `who` the operation `op` on every subject (`subjects: ["*"]`).
pub fn everywhere_rule<'p>(
    policy: &'p RegistryPolicy,
    who: &Principal,
    op: Operation,
) -> Option<&'p str> {
    policy
        .rules
        .iter()
        .find(|r| {
            r.operations.contains(&op)
                && r.subjects.contains(&SubjectPattern::Any)
                && r.principals.iter().any(|p| p.matches(who))
        })
        .map(|r| r.id.as_ref())
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

/// Decides a request whose grants are known (every target but `SchemaId`; for `Associated`,
/// once the associated subjects are in `needs`).
pub fn decide(
    policy: &RegistryPolicy,
    who: &Principal,
    endpoint: &Endpoint,
    needs: &Needs,
) -> Outcome {
    match &endpoint.target {
        Target::List => Outcome::Filtered,
        Target::EverySubject => {
            let op = endpoint.operation;
            match everywhere_rule(policy, who, op) {
                Some(rule) => Outcome::Permit(vec![rule.to_owned()]),
                None => denied(who, op, Some("*")),
            }
        }
        Target::Global => match policy.check_global(who, endpoint.operation) {
            d @ Decision::Permit(_) => {
                Outcome::Permit(vec![d.rule_id().unwrap_or_default().to_owned()])
            }
            Decision::Deny => denied(who, endpoint.operation, None),
        },
        Target::Subjects(_) | Target::SchemaId(_) | Target::Associated { .. } => {
            if needs.grants.is_empty() && needs.everywhere.is_empty() {
                return denied(who, endpoint.operation, None);
            }
            let mut rules = Vec::new();
            for (op, subject) in &needs.grants {
                let d = policy.check(who, *op, subject);
                if !d.is_permit() {
                    return denied(who, *op, Some(subject));
                }
                push_rule(&mut rules, &d);
            }
            for op in &needs.everywhere {
                match everywhere_rule(policy, who, *op) {
                    Some(rule) => {
                        if !rules.iter().any(|r| r == rule) {
                            rules.push(rule.to_owned());
                        }
                    }
                    None => {
                        return Outcome::Deny {
                            message: format!(
                                "User {} is denied operation {op} on subject *: the request \
                                 body names subjects registry-proxy cannot read, which only \
                                 a caller allowed {op} on every subject may send",
                                who.user
                            ),
                            missing: format!(
                                "no rule grants {op} on *, needed because {}",
                                needs
                                    .unreadable
                                    .as_deref()
                                    .unwrap_or("the body is unreadable")
                            ),
                        };
                    }
                }
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

/// Canonical subjects from Apicurio 3's `{"versions": [{"groupId": ..., "artifactId": ...}]}`
/// search answer: `artifact` in group `default` (or none), `:.group:artifact` otherwise.
pub fn apicurio_subjects_of(body: &[u8]) -> Result<Vec<String>, Error> {
    #[derive(Deserialize)]
    struct Answer {
        versions: Vec<Version>,
    }
    #[derive(Deserialize)]
    struct Version {
        #[serde(default, rename = "groupId")]
        group_id: Option<String>,
        #[serde(rename = "artifactId")]
        artifact_id: String,
    }
    let answer: Answer = serde_json::from_slice(body)
        .map_err(|e| Error::Upstream(format!("id search answer: {e}")))?;
    let mut subjects: Vec<String> = answer
        .versions
        .into_iter()
        .filter(|v| !v.artifact_id.contains(':'))
        .filter_map(|v| match v.group_id.as_deref() {
            None | Some("default") => Some(v.artifact_id),
            Some(g) if !g.is_empty() && !g.contains(':') => {
                Some(format!(":.{g}:{}", v.artifact_id))
            }
            Some(_) => None,
        })
        .collect();
    subjects.dedup();
    Ok(subjects)
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
        );
        assert_eq!(
            decide(&policy(), &who, &e, &ok),
            Outcome::Permit(vec!["pay".into()])
        );
        let bad = requirements(
            &e,
            br#"{"schema":"x","references":[{"name":"n","subject":"secret","version":1}]}"#,
        );
        assert!(matches!(
            decide(&policy(), &who, &e, &bad),
            Outcome::Deny { .. }
        ));
    }

    #[test]
    fn unreadable_bodies_need_the_grant_on_every_subject() {
        let who = Principal::user("a");
        let e = endpoint(Operation::Write, "pay-value", BodyCheck::References);
        for body in [
            &b"not json"[..],
            br#"{"schema":"x","references":"pay-ref"}"#,
            br#"{"schema":"x","references":[{"name":"n","version":1}]}"#,
            br#"{"schema":"x","references":[{"subject":""}]}"#,
            br#"{"references":[],"references":[{"subject":"secret"}]}"#,
        ] {
            let needs = requirements(&e, body);
            assert_eq!(needs.everywhere, [Operation::Read], "{body:?}");
            assert!(matches!(
                decide(&policy(), &who, &e, &needs),
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
                decide(&everything, &who, &e, &needs),
                Outcome::Permit(vec!["pay".into(), "all".into()])
            );
        }
        assert_eq!(
            requirements(&e, b"  "),
            Needs {
                grants: vec![(Operation::Write, "pay-value".into())],
                ..Needs::default()
            },
            "an empty body names nothing: the registry answers it"
        );
    }

    #[test]
    fn associations_need_write_on_each_subject_and_read_on_references() {
        let mut e = endpoint(Operation::Write, "unused", BodyCheck::Association);
        e.target = Target::Subjects(vec![]);
        let needs = requirements(
            &e,
            br#"{"resourceName":"t","resourceNamespace":"-","associations":[
                {"subject":"pay-value","associationType":"value",
                 "schema":{"schema":"x","references":[{"name":"r","subject":"pay-ref","version":1}]}},
                {"subject":":.ctx:pay-key","associationType":"key"}]}"#,
        );
        assert_eq!(
            needs.grants,
            [
                (Operation::Read, "pay-ref".to_owned()),
                (Operation::Write, "pay-value".to_owned()),
                (Operation::Write, ":.ctx:pay-key".to_owned()),
            ]
        );
        let unnamed = requirements(
            &e,
            br#"{"resourceName":"t","associations":[{"associationType":"value","lifecycle":"STRONG"}]}"#,
        );
        assert_eq!(unnamed.everywhere, [Operation::Write]);
    }

    #[test]
    fn alias_needs_rights_on_both_subjects() {
        let who = Principal::user("a");
        let e = endpoint(Operation::CompatWrite, "pay-value", BodyCheck::ConfigAlias);
        let needs = requirements(&e, br#"{"alias":"secret-value"}"#);
        assert!(matches!(
            decide(&policy(), &who, &e, &needs),
            Outcome::Deny { .. }
        ));
        let needs = requirements(&e, br#"{"alias":"pay-other"}"#);
        assert!(
            matches!(decide(&policy(), &who, &e, &needs), Outcome::Deny { .. }),
            "read and compat_write on the target are not enough: writes and deletes follow the alias"
        );
        let needs = requirements(&e, br#"{"alias":"pay-owned-2"}"#);
        assert!(matches!(
            decide(&policy(), &who, &e, &needs),
            Outcome::Permit(_)
        ));
        let duplicated = requirements(&e, br#"{"alias":"pay-other","alias":"secret"}"#);
        assert_eq!(
            duplicated.everywhere, SUBJECT_OPERATIONS,
            "a duplicated alias could be read either way: only a caller allowed everything everywhere may send it"
        );
        assert!(matches!(
            decide(&policy(), &who, &e, &duplicated),
            Outcome::Deny { .. }
        ));
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
            decide(&policy(), &who, &e, &Needs::default()),
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
            decide(&everything, &who, &e, &Needs::default()),
            Outcome::Permit(vec!["all".into()])
        );
    }
}
