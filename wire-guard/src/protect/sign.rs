//! Record signatures (`sign:`): a signature over a record's key, value and chosen headers,
//! added on produce in a `wire-guard.sig` header and verified on fetch.
//!
//! The signing key is derived from the rule's KMS key ([`crate::kms::Kms::derive_key`] with
//! the context `{wire-guard.purpose: sign}`): the HMAC-SHA256 key itself, or the seed of an
//! Ed25519 key pair. Every instance with access to the KMS key derives the same key, so any
//! instance verifies what another signed.
//!
//! What is signed, version 1: `"wire-guard sig v1\0"`, then the topic, the key, the value and,
//! for each header the rule names, its name and the value of its first occurrence; each part as
//! an 8-byte big-endian length (-1 for a null or absent one) and the bytes. The value signed is
//! the one stored (after field protection), so the broker's copy verifies as it stands.
//!
//! The `wire-guard.sig` header: `0x01`, the algorithm (`1` HMAC-SHA256, `2` Ed25519), the KMS
//! key reference as a 2-byte big-endian length and the bytes, then the signature.

use ring::signature::KeyPair;
use shared::policy::SignAlgorithm;

use crate::kms::{EncryptionContext, KeyRef};

pub const SIG_HEADER: &str = "wire-guard.sig";
/// Added to a fetched record whose signature failed, under `on_failure: flag`.
pub const VERDICT_HEADER: &str = "wire-guard.signature";
const VERSION_1: u8 = 1;
const LABEL: &[u8] = b"wire-guard sig v1\0";

/// The context signing keys are derived with.
pub fn context() -> EncryptionContext {
    EncryptionContext::new().with("wire-guard.purpose", "sign")
}

/// A key that signs and verifies.
pub struct SigningKey {
    pub kms_key: KeyRef,
    inner: Inner,
}

enum Inner {
    Hmac(ring::hmac::Key),
    Ed25519(ring::signature::Ed25519KeyPair),
}

impl SigningKey {
    /// The key for `algorithm` from 32 derived bytes.
    pub fn new(algorithm: SignAlgorithm, kms_key: KeyRef, derived: &[u8; 32]) -> SigningKey {
        let inner = match algorithm {
            SignAlgorithm::HmacSha256 => {
                Inner::Hmac(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, derived))
            }
            SignAlgorithm::Ed25519 => Inner::Ed25519(
                ring::signature::Ed25519KeyPair::from_seed_unchecked(derived)
                    .expect("any 32 bytes are an Ed25519 seed"),
            ),
        };
        SigningKey { kms_key, inner }
    }

    fn algorithm_byte(&self) -> u8 {
        match self.inner {
            Inner::Hmac(_) => 1,
            Inner::Ed25519(_) => 2,
        }
    }

    /// The `wire-guard.sig` header value for `message`.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        let signature = match &self.inner {
            Inner::Hmac(key) => ring::hmac::sign(key, message).as_ref().to_vec(),
            Inner::Ed25519(pair) => pair.sign(message).as_ref().to_vec(),
        };
        let kms_key = self.kms_key.to_string();
        let mut out = vec![VERSION_1, self.algorithm_byte()];
        out.extend_from_slice(&(kms_key.len() as u16).to_be_bytes());
        out.extend_from_slice(kms_key.as_bytes());
        out.extend_from_slice(&signature);
        out
    }

    /// Whether `header` (a `wire-guard.sig` value) is this key's signature of `message`.
    pub fn verify(&self, message: &[u8], header: &[u8]) -> bool {
        let Some((&VERSION_1, rest)) = header.split_first() else {
            return false;
        };
        let Some((&algorithm, rest)) = rest.split_first() else {
            return false;
        };
        if algorithm != self.algorithm_byte() || rest.len() < 2 {
            return false;
        }
        let len = u16::from_be_bytes([rest[0], rest[1]]) as usize;
        let Some(kms_key) = rest.get(2..2 + len) else {
            return false;
        };
        // Only the policy's key verifies: a header naming another key is a failure.
        if kms_key != self.kms_key.to_string().as_bytes() {
            return false;
        }
        let signature = &rest[2 + len..];
        match &self.inner {
            Inner::Hmac(key) => ring::hmac::verify(key, message, signature).is_ok(),
            Inner::Ed25519(pair) => ring::signature::UnparsedPublicKey::new(
                &ring::signature::ED25519,
                pair.public_key().as_ref(),
            )
            .verify(message, signature)
            .is_ok(),
        }
    }
}

/// What is signed for one record; `headers` are the rule's header names with the value of
/// each one's first occurrence (`None`: absent, or a null value).
pub fn message(
    topic: &str,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[(&str, Option<&[u8]>)],
) -> Vec<u8> {
    let mut out = LABEL.to_vec();
    let mut part = |bytes: Option<&[u8]>| match bytes {
        Some(b) => {
            out.extend_from_slice(&(b.len() as i64).to_be_bytes());
            out.extend_from_slice(b);
        }
        None => out.extend_from_slice(&(-1i64).to_be_bytes()),
    };
    part(Some(topic.as_bytes()));
    part(key);
    part(value);
    for (name, value) in headers {
        part(Some(name.as_bytes()));
        part(*value);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(algorithm: SignAlgorithm, seed: u8) -> SigningKey {
        SigningKey::new(algorithm, "local:signing".parse().unwrap(), &[seed; 32])
    }

    #[test]
    fn signatures_verify_and_any_change_fails() {
        for algorithm in SignAlgorithm::ALL {
            let k = key(algorithm, 1);
            let m = message("t", Some(b"k"), Some(b"v"), &[("trace", Some(b"x"))]);
            let header = k.sign(&m);
            assert!(k.verify(&m, &header), "{algorithm:?}");
            for other in [
                message("u", Some(b"k"), Some(b"v"), &[("trace", Some(b"x"))]),
                message("t", None, Some(b"v"), &[("trace", Some(b"x"))]),
                message("t", Some(b"k"), Some(b"w"), &[("trace", Some(b"x"))]),
                message("t", Some(b"k"), Some(b"v"), &[("trace", None)]),
            ] {
                assert!(!k.verify(&other, &header), "{algorithm:?}");
            }
            assert!(!key(algorithm, 2).verify(&m, &header), "another key");
            let mut flipped = header.clone();
            *flipped.last_mut().unwrap() ^= 1;
            assert!(!k.verify(&m, &flipped));
            assert!(!k.verify(&m, &header[..header.len() - 1]));
            assert!(!k.verify(&m, b""));
        }
    }

    #[test]
    fn empty_and_null_parts_differ() {
        assert_ne!(
            message("t", Some(b""), None, &[]),
            message("t", None, Some(b""), &[])
        );
    }
}
