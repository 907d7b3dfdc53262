//! A reference to a key held by a key management service, as policies name it: `aws-kms:` for
//! AWS KMS (an alias, ARN or key id) and `local:` for a key of wire-guard's local keyring.
//! Parsed here so that a policy naming a malformed key is refused when it is loaded.

use std::{fmt, str::FromStr};

/// A KMS key named by a policy's `key:` field.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyRef {
    /// An AWS KMS key: `alias/NAME`, a key ARN or alias ARN, or a key id, exactly as the
    /// `KeyId` parameter of the KMS API takes it.
    Aws(String),
    /// A master key of the local keyring, by its name in the keyring file.
    Local(String),
}

impl KeyRef {
    /// Which backend serves the key, for logs and errors.
    pub fn backend(&self) -> &'static str {
        match self {
            KeyRef::Aws(_) => "aws-kms",
            KeyRef::Local(_) => "local",
        }
    }
}

impl fmt::Display for KeyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyRef::Aws(id) => write!(f, "aws-kms:{id}"),
            KeyRef::Local(name) => write!(f, "local:{name}"),
        }
    }
}

const KEY_REF_HINT: &str = "write aws-kms:alias/NAME, aws-kms:arn:aws:kms:REGION:ACCOUNT:key/ID, \
                            aws-kms:KEY-ID or local:NAME";

impl FromStr for KeyRef {
    type Err = String;

    fn from_str(text: &str) -> Result<KeyRef, String> {
        let bad = |why: &str| format!("key reference {text:?} {why}; {KEY_REF_HINT}");
        let Some((scheme, rest)) = text.split_once(':') else {
            return Err(bad("has no scheme"));
        };
        match scheme {
            "aws-kms" => {
                if let Some(name) = rest.strip_prefix("alias/") {
                    if !valid_alias_name(name) {
                        return Err(bad(
                            "has an alias name that is empty, longer than 250 characters or \
                             uses characters other than letters, digits, '/', '_' and '-'",
                        ));
                    }
                } else if rest.starts_with("arn:") {
                    if !valid_kms_arn(rest) {
                        return Err(bad(
                            "is not a KMS key or alias ARN (arn:PARTITION:kms:REGION:ACCOUNT:key/ID \
                             or ...:alias/NAME)",
                        ));
                    }
                } else if !valid_key_id(rest) {
                    return Err(bad(
                        "is neither an alias, an ARN nor a key id (a UUID, or mrk- and 32 hex \
                         digits)",
                    ));
                }
                Ok(KeyRef::Aws(rest.to_owned()))
            }
            "local" => {
                if rest.is_empty()
                    || !rest
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                {
                    return Err(bad(
                        "names no local key (letters, digits, '-', '_' and '.' only)",
                    ));
                }
                Ok(KeyRef::Local(rest.to_owned()))
            }
            other => Err(bad(&format!("uses the unknown scheme {other:?}"))),
        }
    }
}

impl TryFrom<String> for KeyRef {
    type Error = String;

    fn try_from(text: String) -> Result<KeyRef, String> {
        text.parse()
    }
}

impl<'de> serde::Deserialize<'de> for KeyRef {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<KeyRef, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

fn valid_alias_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 250
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '-'))
}

fn valid_key_id(id: &str) -> bool {
    let hex = |s: &str| s.chars().all(|c| c.is_ascii_hexdigit());
    if let Some(rest) = id.strip_prefix("mrk-") {
        return rest.len() == 32 && hex(rest);
    }
    let groups: Vec<&str> = id.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, len)| g.len() == len && hex(g))
}

fn valid_kms_arn(arn: &str) -> bool {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let [_, partition, service, region, account, resource] = parts.as_slice() else {
        return false;
    };
    partition.starts_with("aws")
        && *service == "kms"
        && !region.is_empty()
        && account.len() == 12
        && account.chars().all(|c| c.is_ascii_digit())
        && match resource.split_once('/') {
            Some(("key", id)) => valid_key_id(id),
            Some(("alias", name)) => valid_alias_name(name),
            _ => false,
        }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_aws_form() {
        for id in [
            "alias/payments",
            "alias/team/payments_v2",
            "1234abcd-12ab-34cd-56ef-1234567890ab",
            "mrk-1234abcd12ab34cd56ef1234567890ab",
            "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
            "arn:aws:kms:eu-west-1:111122223333:alias/payments",
            "arn:aws-us-gov:kms:us-gov-west-1:111122223333:key/mrk-1234abcd12ab34cd56ef1234567890ab",
        ] {
            let text = format!("aws-kms:{id}");
            let parsed: KeyRef = text.parse().expect(&text);
            assert_eq!(parsed, KeyRef::Aws(id.to_owned()));
            assert_eq!(parsed.to_string(), text);
        }
    }

    #[test]
    fn parses_local() {
        let parsed: KeyRef = "local:tokens".parse().expect("local key");
        assert_eq!(parsed, KeyRef::Local("tokens".into()));
        assert_eq!(parsed.backend(), "local");
    }

    #[test]
    fn refuses_malformed_references_with_a_hint() {
        for text in [
            "payments",
            "vault:transit/payments",
            "aws-kms:",
            "aws-kms:alias/",
            "aws-kms:alias/pay ments",
            "aws-kms:not-a-key-id",
            "aws-kms:1234abcd-12ab-34cd-56ef-1234567890",
            "aws-kms:arn:aws:s3:::bucket",
            "aws-kms:arn:aws:kms:eu-west-1:1111:key/1234abcd-12ab-34cd-56ef-1234567890ab",
            "aws-kms:arn:aws:kms:eu-west-1:111122223333:grant/x",
            "local:",
            "local:a/b",
        ] {
            let err = text.parse::<KeyRef>().expect_err(text);
            assert!(err.contains("aws-kms:alias/NAME"), "{text}: {err}");
        }
    }
}
