//! Who is calling, and how a policy's principal patterns match them.
//!
//! registry-proxy builds a [`Principal`] from a validated OIDC token; wire-guard builds one
//! from the principal the broker names (SASL or a client certificate) with
//! [`Principal::from_kafka`]. Policies name principals as `user:NAME`, `group:NAME`,
//! `client:NAME` or `*` (anyone authenticated); there is no pattern for "unauthenticated".
//! registry-proxy refuses unauthenticated requests before policy evaluation; wire-guard
//! evaluates them with no principal, which only rules without `principals:` cover.

use std::fmt;

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Principal {
    /// The user or service name (the token's principal claim, `sub` by default).
    pub user: String,
    /// Groups the identity provider placed the caller in; `group:` patterns match these.
    pub groups: Vec<String>,
    /// The OAuth client the token was issued to (`azp` or `client_id`), when the token says.
    pub client_id: Option<String>,
}

impl Principal {
    /// A principal with only a user name, for tests and for mechanisms without groups.
    pub fn user(name: impl Into<String>) -> Self {
        Self {
            user: name.into(),
            ..Self::default()
        }
    }

    /// The principal Kafka names, as in its ACLs and logs: `User:alice` becomes the user
    /// `alice`, so policies write `user:alice` for what a broker calls `User:alice`.
    ///
    /// Only Kafka's own `User` type is stripped. A bare name (a SASL authorization id) is the
    /// user name as it stands, and so is a name of any other type (`Group:x` from a custom
    /// principal builder stays the user `Group:x`): reading a type Kafka does not define as
    /// ours could grant it more than the policy author meant.
    pub fn from_kafka(name: &str) -> Self {
        Self::user(name.strip_prefix("User:").unwrap_or(name))
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "user:{}", self.user)
    }
}

/// One entry of a rule's `principals:` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrincipalPattern {
    /// `*`: any authenticated caller.
    Any,
    /// `user:NAME`: the caller's user name, exactly.
    User(String),
    /// `group:NAME`: any caller in that group.
    Group(String),
    /// `client:NAME`: any token issued to that OAuth client.
    Client(String),
}

/// Why a principal pattern was refused, with what to write instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternError {
    pub message: String,
    pub hint: String,
}

impl PrincipalPattern {
    /// Parses `user:NAME`, `group:NAME`, `client:NAME` or `*`. Names are exact and
    /// case-sensitive: identity providers treat them that way, so a looser match would grant
    /// more than the policy author wrote.
    pub fn parse(text: &str) -> Result<Self, PatternError> {
        const HINT: &str =
            "write user:NAME, group:NAME, client:NAME, or * for any authenticated caller";
        if text == "*" {
            return Ok(Self::Any);
        }
        let Some((kind, name)) = text.split_once(':') else {
            return Err(PatternError {
                message: format!("principal {text:?} has no kind"),
                hint: HINT.into(),
            });
        };
        if name.is_empty() || name.trim() != name {
            return Err(PatternError {
                message: format!("principal {text:?} has an empty or padded name"),
                hint: HINT.into(),
            });
        }
        if name.contains('*') {
            return Err(PatternError {
                message: format!("principal {text:?} uses a wildcard in the name"),
                hint: "principal names are exact; use * alone for any authenticated caller, or a group".into(),
            });
        }
        match kind {
            "user" => Ok(Self::User(name.to_owned())),
            "group" => Ok(Self::Group(name.to_owned())),
            "client" => Ok(Self::Client(name.to_owned())),
            other => Err(PatternError {
                message: format!("unknown principal kind {other:?} in {text:?}"),
                hint: HINT.into(),
            }),
        }
    }

    pub fn matches(&self, who: &Principal) -> bool {
        match self {
            Self::Any => true,
            Self::User(name) => who.user == *name,
            Self::Group(name) => who.groups.iter().any(|g| g == name),
            Self::Client(name) => who.client_id.as_deref() == Some(name.as_str()),
        }
    }
}

impl fmt::Display for PrincipalPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("*"),
            Self::User(n) => write!(f, "user:{n}"),
            Self::Group(n) => write!(f, "group:{n}"),
            Self::Client(n) => write!(f, "client:{n}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Principal {
        Principal {
            user: "alice".into(),
            groups: vec!["payments".into(), "fraud".into()],
            client_id: Some("payments-svc".into()),
        }
    }

    #[test]
    fn each_kind_matches_its_own_field_only() {
        let p = alice();
        assert!(PrincipalPattern::parse("*").unwrap().matches(&p));
        assert!(PrincipalPattern::parse("user:alice").unwrap().matches(&p));
        assert!(PrincipalPattern::parse("group:fraud").unwrap().matches(&p));
        assert!(
            PrincipalPattern::parse("client:payments-svc")
                .unwrap()
                .matches(&p)
        );
        assert!(
            !PrincipalPattern::parse("user:payments")
                .unwrap()
                .matches(&p)
        );
        assert!(!PrincipalPattern::parse("group:alice").unwrap().matches(&p));
        assert!(!PrincipalPattern::parse("client:alice").unwrap().matches(&p));
        assert!(!PrincipalPattern::parse("user:Alice").unwrap().matches(&p));
    }

    #[test]
    fn client_pattern_needs_a_client_id() {
        let p = Principal::user("payments-svc");
        assert!(
            !PrincipalPattern::parse("client:payments-svc")
                .unwrap()
                .matches(&p)
        );
    }

    #[test]
    fn malformed_patterns_are_refused() {
        for bad in ["alice", "role:admin", "user:", "group: x", "user:a*", ""] {
            assert!(PrincipalPattern::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn kafka_principals_become_users() {
        assert_eq!(
            Principal::from_kafka("User:alice"),
            Principal::user("alice")
        );
        assert_eq!(Principal::from_kafka("alice"), Principal::user("alice"));
        assert_eq!(
            Principal::from_kafka("User:CN=svc,O=acme"),
            Principal::user("CN=svc,O=acme")
        );
        assert_eq!(
            Principal::from_kafka("User:spiffe://acme/svc"),
            Principal::user("spiffe://acme/svc"),
            "only the first `User:` is the type"
        );
        assert_eq!(
            Principal::from_kafka("Group:admins"),
            Principal::user("Group:admins"),
            "a type Kafka does not define is not read as a group"
        );
        assert_eq!(
            Principal::from_kafka("user:alice"),
            Principal::user("user:alice")
        );
        let p = Principal::from_kafka("User:alice");
        assert!(PrincipalPattern::parse("user:alice").unwrap().matches(&p));
        assert!(p.groups.is_empty() && p.client_id.is_none());
    }

    #[test]
    fn names_may_contain_colons() {
        assert_eq!(
            PrincipalPattern::parse("user:spiffe://a/b").unwrap(),
            PrincipalPattern::User("spiffe://a/b".into())
        );
    }
}
