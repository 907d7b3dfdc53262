//! A topic rule's `fields:`: which fields of a record's value wire-guard protects, how, with
//! which key, and who may see them in the clear.
//!
//! ```yaml
//! fields:
//!   - { path: "$.card.number", action: encrypt, key: "aws-kms:alias/payments", reveal_to: ["group:fraud"] }
//!   - { path: "$.customer.email", action: tokenize, key: "local:tokens" }
//!   - { path: "$.customer.phone", action: mask, keep_last: 4, key: "local:payments", reveal_to: ["group:support"] }
//! ```
//!
//! - `encrypt`: the field is encrypted before it reaches the broker; principals in
//!   `reveal_to` read the plaintext through wire-guard, everyone else the ciphertext.
//! - `tokenize`: the field is replaced by a deterministic keyed token (same input and key,
//!   same token, on every wire-guard instance), so joins and counts still work; nobody reads
//!   the original back, unless `reversible: true` makes the token a deterministic encryption
//!   that principals in `reveal_to` read in the clear.
//! - `mask`: with a `key`, the field is stored encrypted and principals outside `reveal_to`
//!   read it masked (all of it, or all but the last `keep_last` characters); without a key
//!   the mask is applied before the broker, and nobody reads the original back.
//!
//! An entry names its field by `path:`, or every field its schema tags with one of `tags:`
//! (`{ tags: [PII], action: encrypt, key: … }`): the tags a schema carries inline (Avro and
//! JSON Schema `confluent:tags`, Protobuf `(confluent.field_meta).tags`) or in its registry
//! `metadata.tags`. Which fields those are is known only per schema; wire-guard resolves a
//! [`TaggedFields`] entry into [`FieldRule`]s for each schema it meets.

use std::fmt;

use crate::{
    keyref::KeyRef,
    principal::{Principal, PrincipalPattern},
};

/// One validated entry of `fields:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRule {
    pub path: FieldPath,
    pub action: FieldAction,
    /// The KMS key the field's data keys come from; always present for `encrypt` and
    /// `tokenize`, optional for `mask`.
    pub key: Option<KeyRef>,
    /// Who reads the field in the clear through wire-guard. Empty: nobody.
    pub reveal_to: Vec<PrincipalPattern>,
}

impl FieldRule {
    /// Whether `principal` (`None`: not authenticated) reads this field in the clear.
    pub fn reveals_to(&self, principal: Option<&Principal>) -> bool {
        principal.is_some_and(|p| self.reveal_to.iter().any(|m| m.matches(p)))
    }

    /// Whether the broker holds the field encrypted (and wire-guard decrypts it on fetch).
    pub fn stored_encrypted(&self) -> bool {
        self.action.stored_encrypted(self.key.is_some())
    }
}

/// One entry of `fields:` that selects fields by schema tag rather than by path: every
/// field of a record's schema carrying one of `tags` gets the action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaggedFields {
    /// Tag names as the schema writes them (`PII`); a field with any of them is selected.
    pub tags: Vec<String>,
    pub action: FieldAction,
    pub key: Option<KeyRef>,
    pub reveal_to: Vec<PrincipalPattern>,
}

impl TaggedFields {
    /// Whether `principal` reads the fields this entry selects in the clear.
    pub fn reveals_to(&self, principal: Option<&Principal>) -> bool {
        principal.is_some_and(|p| self.reveal_to.iter().any(|m| m.matches(p)))
    }

    /// Whether a field tagged with `tags` is selected.
    pub fn selects<'a>(&self, mut tags: impl Iterator<Item = &'a str>) -> bool {
        tags.any(|t| self.tags.iter().any(|mine| mine == t))
    }

    /// The rule for one field this entry selects.
    pub fn at(&self, path: FieldPath) -> FieldRule {
        FieldRule {
            path,
            action: self.action,
            key: self.key.clone(),
            reveal_to: self.reveal_to.clone(),
        }
    }
}

/// A topic rule's `encrypt_key:` or `encrypt_value:`: the whole record key (deterministically,
/// so that partitioning and compaction still work) or the whole value is encrypted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WholeRule {
    pub key: KeyRef,
    /// Who reads it in the clear through wire-guard. Empty: nobody.
    pub reveal_to: Vec<PrincipalPattern>,
}

impl WholeRule {
    pub fn reveals_to(&self, principal: Option<&Principal>) -> bool {
        principal.is_some_and(|p| self.reveal_to.iter().any(|m| m.matches(p)))
    }
}

/// A topic rule's `sign:`: every record produced to the topic is signed, and every record
/// fetched from it verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignRule {
    /// The KMS key the signing key is derived from.
    pub key: KeyRef,
    pub algorithm: SignAlgorithm,
    /// Headers covered by the signature besides key and value (the first of each name).
    pub headers: Vec<String>,
    pub on_failure: OnSignatureFailure,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignAlgorithm {
    HmacSha256,
    Ed25519,
}

impl SignAlgorithm {
    pub const ALL: [SignAlgorithm; 2] = [SignAlgorithm::HmacSha256, SignAlgorithm::Ed25519];

    pub fn as_str(self) -> &'static str {
        match self {
            SignAlgorithm::HmacSha256 => "hmac-sha256",
            SignAlgorithm::Ed25519 => "ed25519",
        }
    }
}

/// What a consumer gets for a record whose signature is missing or does not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnSignatureFailure {
    /// The record, with a `wire-guard.signature` header saying `invalid` or `missing`.
    Flag,
    /// Nothing: the record is left out of the fetched batch (its offset is skipped).
    Drop,
    /// The partition's fetch fails with `CORRUPT_MESSAGE`.
    Fail,
}

impl OnSignatureFailure {
    pub const ALL: [OnSignatureFailure; 3] = [
        OnSignatureFailure::Flag,
        OnSignatureFailure::Drop,
        OnSignatureFailure::Fail,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OnSignatureFailure::Flag => "flag",
            OnSignatureFailure::Drop => "drop",
            OnSignatureFailure::Fail => "fail",
        }
    }
}

/// What is done to a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldAction {
    Encrypt,
    /// `reversible`: the token is a deterministic encryption that principals in `reveal_to`
    /// read back; otherwise a keyed hash nobody can reverse.
    Tokenize {
        reversible: bool,
    },
    /// `keep_last`: how many trailing characters stay visible (0: masked entirely).
    Mask {
        keep_last: usize,
    },
}

impl FieldAction {
    /// Whether a field with this action, given a `key` or not, is held encrypted by the broker.
    pub fn stored_encrypted(self, keyed: bool) -> bool {
        match self {
            FieldAction::Encrypt => true,
            FieldAction::Mask { .. } => keyed,
            FieldAction::Tokenize { .. } => false,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            FieldAction::Encrypt => "encrypt",
            FieldAction::Tokenize { .. } => "tokenize",
            FieldAction::Mask { .. } => "mask",
        }
    }
}

/// A field's place in a record, written `$.customer.email`: record fields (or JSON object
/// members, or Protobuf message fields) by name from the top of the value. Optional values
/// (Avro unions with null, Protobuf `optional`) are looked through.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FieldPath {
    pub segments: Vec<String>,
}

/// The longest path accepted; real schemas nest far less.
const MAX_SEGMENTS: usize = 32;

impl FieldPath {
    /// Parses `$.a.b`, explaining a refusal as `(message, hint)`.
    pub fn parse(text: &str) -> Result<FieldPath, (String, String)> {
        let hint = "write $.FIELD or $.RECORD.FIELD: field names from the top of the value, separated by dots";
        let Some(rest) = text.strip_prefix("$.") else {
            return Err((
                format!("field path {text:?} does not start with `$.`"),
                hint.into(),
            ));
        };
        let segments: Vec<String> = rest.split('.').map(str::to_owned).collect();
        if let Some(bad) = segments.iter().find(|s| {
            s.is_empty()
                || !s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                || s.starts_with(|c: char| c.is_ascii_digit())
        }) {
            return Err((
                format!("field path {text:?} has the segment {bad:?}, which is not a field name"),
                format!(
                    "{hint}; field names are letters, digits and `_`, as Avro and Protobuf allow (arrays and maps are not addressable yet)"
                ),
            ));
        }
        if segments.len() > MAX_SEGMENTS {
            return Err((
                format!("field path {text:?} is {} levels deep", segments.len()),
                format!("paths have at most {MAX_SEGMENTS} levels"),
            ));
        }
        Ok(FieldPath { segments })
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "$.{}", self.segments.join("."))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse_and_print_back() {
        let path = FieldPath::parse("$.card.number").unwrap();
        assert_eq!(path.segments, ["card", "number"]);
        assert_eq!(path.to_string(), "$.card.number");
        for bad in [
            "card.number",
            "$.",
            "$.card..number",
            "$.card[0]",
            "$.1st",
            "$.a-b",
        ] {
            assert!(FieldPath::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn reveal_needs_an_authenticated_principal_in_the_list() {
        let rule = FieldRule {
            path: FieldPath::parse("$.card").unwrap(),
            action: FieldAction::Encrypt,
            key: Some("local:k".parse().unwrap()),
            reveal_to: vec![PrincipalPattern::parse("user:fraud").unwrap()],
        };
        assert!(rule.reveals_to(Some(&Principal::from_kafka("User:fraud"))));
        assert!(!rule.reveals_to(Some(&Principal::from_kafka("User:bob"))));
        assert!(!rule.reveals_to(None));
    }
}
