//! The `registry:` section: who may do what to which schema-registry subjects.
//!
//! Evaluation is deny by default: a request is permitted only when some rule names the
//! caller, the operation and a pattern matching the subject. Rules only grant; there is no
//! deny rule, so rule order never changes an outcome, only which permitting rule id the audit
//! record names (the first one, in file-name then file order).
//!
//! Subjects are matched in their canonical, context-qualified form: `orders-value` in the
//! default context, `:.staging:orders-value` in context `.staging` (registry-proxy also uses
//! this form for Apicurio groups). A pattern for the default context never matches another
//! context's subject.

use std::{fmt, str::FromStr, sync::Arc};

use crate::principal::{Principal, PrincipalPattern};

/// The operation classes of the registry ACL, after Confluent's RBAC operation classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// Read schemas, versions and references of a subject; look a schema up; test
    /// compatibility against it.
    Read,
    /// Register new schema versions.
    Write,
    /// Delete versions or the subject, soft or permanent.
    Delete,
    /// Read subject-level settings: compatibility config and mode.
    CompatRead,
    /// Change subject-level settings.
    CompatWrite,
    /// Read registry-wide (or context-wide) settings and metadata.
    GlobalRead,
    /// Change registry-wide (or context-wide) settings.
    GlobalWrite,
}

impl Operation {
    pub const ALL: [Operation; 7] = [
        Self::Read,
        Self::Write,
        Self::Delete,
        Self::CompatRead,
        Self::CompatWrite,
        Self::GlobalRead,
        Self::GlobalWrite,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Delete => "delete",
            Self::CompatRead => "compat_read",
            Self::CompatWrite => "compat_write",
            Self::GlobalRead => "global_read",
            Self::GlobalWrite => "global_write",
        }
    }

    /// Global operations concern no subject; only rules over `*` may grant them.
    pub fn is_global(self) -> bool {
        matches!(self, Self::GlobalRead | Self::GlobalWrite)
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Operation {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Self::ALL.into_iter().find(|op| op.as_str() == s).ok_or(())
    }
}

/// A subject pattern: `*`, a literal, or a prefix glob.
///
/// The only wildcard is a single trailing `*`, which matches any remainder, including none.
/// Every other character is literal (`.` is a dot, not "any character") and the pattern is
/// anchored at both ends: `payments.*` matches `payments.card` and `payments.`, never
/// `xpayments.card` nor `paymentsXcard`; the literal `payments` matches only `payments`, not
/// `payments-value`. Karapace's authfile anchors its regexes at the start only, which turns a
/// literal into a prefix grant; this type cannot express that mistake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubjectPattern {
    /// `*`: every subject in every context.
    Any,
    /// A subject name, compared exactly.
    Literal(String),
    /// `PREFIX*`: every subject starting with `PREFIX`.
    Prefix(String),
}

impl SubjectPattern {
    /// Parses a pattern, explaining a refusal as `(message, hint)`.
    pub fn parse(text: &str) -> Result<Self, (String, String)> {
        if text == "*" {
            return Ok(Self::Any);
        }
        if text.is_empty() {
            return Err((
                "empty subject pattern".into(),
                "write a subject name, PREFIX*, or *".into(),
            ));
        }
        let (body, prefix) = match text.strip_suffix('*') {
            Some(body) => (body, true),
            None => (text, false),
        };
        if body.contains('*') {
            return Err((
                format!("subject pattern {text:?} has a `*` that is not at the end"),
                "only a single trailing * is a wildcard (payments.*); list the subjects or prefixes you mean".into(),
            ));
        }
        if let Some(rest) = body.strip_prefix(":.:") {
            return Err((
                format!("subject pattern {text:?} names the default context explicitly"),
                format!(
                    "subjects in the default context are unqualified: write {:?}",
                    format!("{rest}{}", if prefix { "*" } else { "" })
                ),
            ));
        }
        Ok(if prefix {
            Self::Prefix(body.to_owned())
        } else {
            Self::Literal(body.to_owned())
        })
    }

    pub fn matches(&self, subject: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Literal(s) => s == subject,
            Self::Prefix(p) => subject.starts_with(p.as_str()),
        }
    }
}

impl fmt::Display for SubjectPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("*"),
            Self::Literal(s) => f.write_str(s),
            Self::Prefix(p) => write!(f, "{p}*"),
        }
    }
}

/// One validated rule.
#[derive(Debug, Clone)]
pub struct RegistryRule {
    /// Unique across the directory; named in every audit record of a request it permits.
    pub id: Arc<str>,
    pub principals: Vec<PrincipalPattern>,
    pub subjects: Vec<SubjectPattern>,
    pub operations: Vec<Operation>,
}

impl RegistryRule {
    fn grants(&self, who: &Principal, op: Operation) -> bool {
        self.operations.contains(&op) && self.principals.iter().any(|p| p.matches(who))
    }
}

/// The outcome of evaluating one (principal, operation, subject).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Permitted by the rule with this id.
    Permit(Arc<str>),
    /// No rule grants it.
    Deny,
}

impl Decision {
    pub fn is_permit(&self) -> bool {
        matches!(self, Self::Permit(_))
    }

    pub fn rule_id(&self) -> Option<&str> {
        match self {
            Self::Permit(id) => Some(id),
            Self::Deny => None,
        }
    }
}

/// Every `registry:` rule of a policy directory.
#[derive(Debug, Clone, Default)]
pub struct RegistryPolicy {
    pub rules: Vec<RegistryRule>,
}

impl RegistryPolicy {
    /// May `who` perform `op` on `subject`? `subject` is canonical and context-qualified.
    /// Global operations ignore `subject`; see [`RegistryPolicy::check_global`].
    pub fn check(&self, who: &Principal, op: Operation, subject: &str) -> Decision {
        if op.is_global() {
            return self.check_global(who, op);
        }
        self.rules
            .iter()
            .find(|r| r.grants(who, op) && r.subjects.iter().any(|s| s.matches(subject)))
            .map_or(Decision::Deny, |r| Decision::Permit(r.id.clone()))
    }

    /// May `who` perform a registry-wide operation? Validation guarantees that rules
    /// granting global operations cover `*`.
    pub fn check_global(&self, who: &Principal, op: Operation) -> Decision {
        self.rules
            .iter()
            .find(|r| r.grants(who, op) && r.subjects.contains(&SubjectPattern::Any))
            .map_or(Decision::Deny, |r| Decision::Permit(r.id.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(id: &str, principals: &[&str], subjects: &[&str], ops: &[Operation]) -> RegistryRule {
        RegistryRule {
            id: id.into(),
            principals: principals
                .iter()
                .map(|p| PrincipalPattern::parse(p).unwrap())
                .collect(),
            subjects: subjects
                .iter()
                .map(|s| SubjectPattern::parse(s).unwrap())
                .collect(),
            operations: ops.to_vec(),
        }
    }

    #[test]
    fn glob_is_anchored_at_both_ends() {
        let p = SubjectPattern::parse("payments.*").unwrap();
        assert!(p.matches("payments.card-value"));
        assert!(p.matches("payments."));
        assert!(!p.matches("paymentsXcard"), "`.` must be literal");
        assert!(!p.matches("xpayments.card"), "anchored at the start");
        assert!(
            !p.matches(":.staging:payments.card"),
            "other contexts are not the default"
        );
        let lit = SubjectPattern::parse("payments").unwrap();
        assert!(lit.matches("payments"));
        assert!(
            !lit.matches("payments-value"),
            "a literal is not a prefix (Karapace's trap)"
        );
        assert!(!lit.matches("old-payments"));
        let dash = SubjectPattern::parse("payments-*").unwrap();
        assert!(dash.matches("payments-value") && !dash.matches("payments.value"));
        let ctx = SubjectPattern::parse(":.staging:payments.*").unwrap();
        assert!(ctx.matches(":.staging:payments.x") && !ctx.matches("payments.x"));
    }

    #[test]
    fn bad_patterns_are_refused() {
        for bad in ["", "pay*ments", "**", "*-value", ":.:payments"] {
            assert!(SubjectPattern::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn deny_by_default_and_permit_names_the_rule() {
        let policy = RegistryPolicy {
            rules: vec![
                rule(
                    "owners",
                    &["group:payments"],
                    &["payments.*"],
                    &[Operation::Read, Operation::Write],
                ),
                rule("everyone-reads", &["*"], &["*"], &[Operation::Read]),
            ],
        };
        let member = Principal {
            user: "a".into(),
            groups: vec!["payments".into()],
            client_id: None,
        };
        let other = Principal::user("b");
        assert_eq!(
            policy.check(&member, Operation::Write, "payments.x"),
            Decision::Permit("owners".into())
        );
        assert_eq!(
            policy.check(&member, Operation::Read, "payments.x"),
            Decision::Permit("owners".into())
        );
        assert_eq!(
            policy.check(&other, Operation::Read, "payments.x"),
            Decision::Permit("everyone-reads".into())
        );
        assert_eq!(
            policy.check(&other, Operation::Write, "payments.x"),
            Decision::Deny
        );
        assert_eq!(
            policy.check(&member, Operation::Write, "orders"),
            Decision::Deny
        );
        assert_eq!(
            policy.check(&member, Operation::Delete, "payments.x"),
            Decision::Deny
        );
        assert_eq!(
            RegistryPolicy::default().check(&member, Operation::Read, "x"),
            Decision::Deny
        );
    }

    #[test]
    fn global_operations_need_a_rule_over_everything() {
        let policy = RegistryPolicy {
            rules: vec![rule(
                "admins",
                &["group:admins"],
                &["*"],
                &[Operation::GlobalWrite],
            )],
        };
        let admin = Principal {
            user: "a".into(),
            groups: vec!["admins".into()],
            client_id: None,
        };
        assert!(
            policy
                .check_global(&admin, Operation::GlobalWrite)
                .is_permit()
        );
        assert!(
            !policy
                .check_global(&admin, Operation::GlobalRead)
                .is_permit()
        );
        assert!(
            !policy
                .check_global(&Principal::user("x"), Operation::GlobalWrite)
                .is_permit()
        );
    }
}
