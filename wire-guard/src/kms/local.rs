//! The local keyring: master keys from a file, for the embedded default and the demo, where no
//! KMS is at hand.
//!
//! The file (YAML, or JSON, which is YAML too) maps key names to base64-encoded 256-bit master
//! keys:
//!
//! ```yaml
//! keys:
//!   tokens: "q83vEjRWeJASNFZ4kBI0VniQEjRWeJASNFZ4kBI0Vng="
//! ```
//!
//! Anyone who can read the file can unwrap every data key made with it, so it is refused when
//! other users may read or write it (on Unix): keep it `chmod 600`, owned by the proxy's user.
//! [`new_master_key_base64`] makes a fresh entry.
//!
//! A wrapped data key is `version (1) || nonce (12) || AES-256-GCM(master, data key) || tag (16)`,
//! 61 bytes; the associated data binds the key name and the [`EncryptionContext`], so a wrapped
//! key unwraps only under the name and context it was made for.

use std::{collections::HashMap, fmt, path::Path};

use aes_gcm::{
    Aes256Gcm, KeyInit,
    aead::{Aead, AeadInOut, Generate, Nonce, Payload},
};
use async_trait::async_trait;
use base64::Engine;
use bytes::Bytes;
use zeroize::{Zeroize, Zeroizing};

use super::{DATA_KEY_LEN, DataKey, EncryptionContext, KeyRef, Kms, KmsError, Operation};

/// The first byte of every wrapped key this version writes; a later format gets a new number.
const FORMAT_V1: u8 = 1;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const WRAPPED_LEN: usize = 1 + NONCE_LEN + DATA_KEY_LEN + TAG_LEN;
/// Separates this use of the master keys from any other use of the same key bytes.
const AAD_LABEL: &[u8] = b"wire-guard local keyring v1\0";

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyringFile {
    keys: HashMap<String, String>,
}

/// Master keys by name. Each cipher wipes its key schedule when dropped.
pub struct LocalKeyring {
    keys: HashMap<String, Aes256Gcm>,
    /// The same master keys as HMAC keys, for [`Kms::derive_key`].
    macs: HashMap<String, ring::hmac::Key>,
}

impl fmt::Debug for LocalKeyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&String> = self.keys.keys().collect();
        names.sort();
        f.debug_struct("LocalKeyring")
            .field("keys", &names)
            .finish()
    }
}

/// A new master key for the keyring file, base64-encoded.
pub fn new_master_key_base64() -> String {
    let key = Zeroizing::new(<[u8; DATA_KEY_LEN]>::generate());
    base64::engine::general_purpose::STANDARD.encode(*key)
}

impl LocalKeyring {
    /// Reads a keyring file, refusing one that other users can read or write.
    pub fn load(path: &Path) -> Result<LocalKeyring, KmsError> {
        let bad =
            |why: String| KmsError::Misconfigured(format!("keyring {}: {why}", path.display()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path)
                .map_err(|e| bad(e.to_string()))?
                .permissions()
                .mode();
            if mode & 0o007 != 0 {
                return Err(bad(format!(
                    "other users may access it (mode {:o}); run chmod 600 on it",
                    mode & 0o777
                )));
            }
        }
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?);
        LocalKeyring::parse(&text).map_err(|e| match e {
            KmsError::Misconfigured(why) => bad(why),
            other => other,
        })
    }

    /// Parses a keyring document; every bad entry is listed in the one error.
    pub fn parse(text: &str) -> Result<LocalKeyring, KmsError> {
        let mut file: KeyringFile = serde_saphyr::from_str(text)
            .map_err(|e| KmsError::Misconfigured(format!("not a keyring document: {e}")))?;
        let mut keys = HashMap::new();
        let mut macs = HashMap::new();
        let mut problems = Vec::new();
        for (name, encoded) in &file.keys {
            if let Err(e) = format!("local:{name}").parse::<KeyRef>() {
                problems.push(format!("key {name:?}: {e}"));
                continue;
            }
            let bytes = match base64::engine::general_purpose::STANDARD.decode(encoded.trim()) {
                Ok(bytes) => Zeroizing::new(bytes),
                Err(e) => {
                    problems.push(format!("key {name:?} is not base64: {e}"));
                    continue;
                }
            };
            match Aes256Gcm::new_from_slice(&bytes) {
                Ok(cipher) => {
                    keys.insert(name.clone(), cipher);
                    macs.insert(
                        name.clone(),
                        ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &bytes),
                    );
                }
                Err(_) => problems.push(format!(
                    "key {name:?} has {} bytes, not {DATA_KEY_LEN}",
                    bytes.len()
                )),
            }
        }
        // The base64 text is the key material too.
        file.keys.values_mut().for_each(Zeroize::zeroize);
        if !problems.is_empty() {
            problems.sort();
            return Err(KmsError::Misconfigured(problems.join("; ")));
        }
        Ok(LocalKeyring { keys, macs })
    }

    fn cipher<'a>(
        &'a self,
        key: &'a KeyRef,
        operation: Operation,
    ) -> Result<(&'a str, &'a Aes256Gcm), KmsError> {
        let KeyRef::Local(name) = key else {
            return Err(KmsError::Misconfigured(format!(
                "{key} was sent to the local keyring"
            )));
        };
        self.keys
            .get(name)
            .map(|cipher| (name.as_str(), cipher))
            .ok_or_else(|| KmsError::NotFound {
                operation,
                key: key.to_string(),
                reason: "no key of that name in the local keyring".into(),
            })
    }
}

fn aad(name: &str, context: &EncryptionContext) -> Vec<u8> {
    let mut aad = AAD_LABEL.to_vec();
    aad.extend_from_slice(&(name.len() as u64).to_be_bytes());
    aad.extend_from_slice(name.as_bytes());
    aad.extend_from_slice(&context.canonical_bytes());
    aad
}

#[async_trait]
impl Kms for LocalKeyring {
    async fn generate_data_key(
        &self,
        key: &KeyRef,
        context: &EncryptionContext,
    ) -> Result<DataKey, KmsError> {
        let (name, cipher) = self.cipher(key, Operation::GenerateDataKey)?;
        let plaintext = Zeroizing::new(<[u8; DATA_KEY_LEN]>::generate());
        let nonce = Nonce::<Aes256Gcm>::generate();
        let sealed = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext.as_slice(),
                    aad: &aad(name, context),
                },
            )
            .map_err(|_| {
                KmsError::Misconfigured(format!("{key}: AES-GCM refused to wrap a data key"))
            })?;
        let mut wrapped = Vec::with_capacity(WRAPPED_LEN);
        wrapped.push(FORMAT_V1);
        wrapped.extend_from_slice(&nonce);
        wrapped.extend_from_slice(&sealed);
        Ok(DataKey {
            plaintext,
            wrapped: Bytes::from(wrapped),
            use_index: 0,
            wrapped_by: None,
        })
    }

    async fn decrypt_data_key(
        &self,
        key: &KeyRef,
        wrapped: &[u8],
        context: &EncryptionContext,
    ) -> Result<Zeroizing<[u8; DATA_KEY_LEN]>, KmsError> {
        let (name, cipher) = self.cipher(key, Operation::Decrypt)?;
        let refused = |reason: String| KmsError::Refused {
            operation: Operation::Decrypt,
            key: key.to_string(),
            reason,
        };
        let Some((&version, rest)) = wrapped.split_first() else {
            return Err(refused("the wrapped key is empty".into()));
        };
        if version != FORMAT_V1 {
            return Err(refused(format!(
                "wrapped key format {version} is unknown (this build reads {FORMAT_V1})"
            )));
        }
        if wrapped.len() != WRAPPED_LEN {
            return Err(refused(format!(
                "a wrapped key is {WRAPPED_LEN} bytes, this one {}",
                wrapped.len()
            )));
        }
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::<Aes256Gcm>::try_from(nonce)
            .map_err(|_| refused("the wrapped key's nonce is malformed".into()))?;
        let mut buffer = Zeroizing::new(sealed.to_vec());
        cipher
            .decrypt_in_place(&nonce, &aad(name, context), &mut *buffer)
            .map_err(|_| {
                refused(
                    "the wrapped key does not authenticate: it is corrupt, or was made for \
                     another key or encryption context"
                        .into(),
                )
            })?;
        let mut plaintext = Zeroizing::new([0u8; DATA_KEY_LEN]);
        if buffer.len() != DATA_KEY_LEN {
            return Err(refused("the unwrapped key has the wrong length".into()));
        }
        plaintext.copy_from_slice(&buffer);
        Ok(plaintext)
    }

    async fn derive_key(
        &self,
        key: &KeyRef,
        context: &EncryptionContext,
    ) -> Result<Zeroizing<[u8; DATA_KEY_LEN]>, KmsError> {
        let (name, _) = self.cipher(key, Operation::DeriveKey)?;
        let mac = &self.macs[name];
        let tag = ring::hmac::sign(mac, &super::derivation_message(context));
        let mut derived = Zeroizing::new([0u8; DATA_KEY_LEN]);
        derived.copy_from_slice(tag.as_ref());
        Ok(derived)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyring() -> LocalKeyring {
        let doc = format!(
            "keys:\n  tokens: \"{}\"\n  other: \"{}\"\n",
            new_master_key_base64(),
            new_master_key_base64()
        );
        LocalKeyring::parse(&doc).expect("keyring")
    }

    fn context() -> EncryptionContext {
        EncryptionContext::new()
            .with("topic", "payments")
            .with("field", "$.card.number")
    }

    fn tokens() -> KeyRef {
        KeyRef::Local("tokens".into())
    }

    #[tokio::test]
    async fn round_trip() {
        let ring = keyring();
        let key = ring
            .generate_data_key(&tokens(), &context())
            .await
            .expect("generate");
        assert_eq!(key.wrapped.len(), WRAPPED_LEN);
        assert_eq!(key.wrapped[0], FORMAT_V1);
        let unwrapped = ring
            .decrypt_data_key(&tokens(), &key.wrapped, &context())
            .await
            .expect("decrypt");
        assert_eq!(*unwrapped, *key.plaintext);
        let again = ring
            .generate_data_key(&tokens(), &context())
            .await
            .expect("generate");
        assert_ne!(*again.plaintext, *key.plaintext, "every data key is new");
    }

    #[tokio::test]
    async fn wrong_context_or_key_name_is_refused() {
        let ring = keyring();
        let key = ring
            .generate_data_key(&tokens(), &context())
            .await
            .expect("generate");
        let other_field = context().with("field", "$.customer.email");
        let err = ring
            .decrypt_data_key(&tokens(), &key.wrapped, &other_field)
            .await
            .expect_err("another context");
        assert!(matches!(err, KmsError::Refused { .. }), "{err}");
        assert!(!err.is_retriable());
        let err = ring
            .decrypt_data_key(&KeyRef::Local("other".into()), &key.wrapped, &context())
            .await
            .expect_err("another master key");
        assert!(matches!(err, KmsError::Refused { .. }), "{err}");
    }

    #[tokio::test]
    async fn tampered_or_truncated_wrapped_keys_are_refused() {
        let ring = keyring();
        let key = ring
            .generate_data_key(&tokens(), &context())
            .await
            .expect("generate");
        for index in [1, NONCE_LEN + 3, WRAPPED_LEN - 1] {
            let mut tampered = key.wrapped.to_vec();
            tampered[index] ^= 0x01;
            let err = ring
                .decrypt_data_key(&tokens(), &tampered, &context())
                .await
                .expect_err("tampered");
            assert!(matches!(err, KmsError::Refused { .. }), "{err}");
        }
        let mut future_version = key.wrapped.to_vec();
        future_version[0] = 2;
        for bad in [&[][..], &key.wrapped[..20], &future_version[..]] {
            let err = ring
                .decrypt_data_key(&tokens(), bad, &context())
                .await
                .expect_err("malformed");
            assert!(matches!(err, KmsError::Refused { .. }), "{err}");
        }
    }

    #[tokio::test]
    async fn unknown_key_name_is_not_found() {
        let err = keyring()
            .generate_data_key(&KeyRef::Local("missing".into()), &context())
            .await
            .expect_err("unknown key");
        assert!(matches!(err, KmsError::NotFound { .. }), "{err}");
    }

    #[test]
    fn bad_entries_are_all_listed() {
        let doc = "keys:\n  short: \"AAAA\"\n  garbage: \"!!\"\n";
        let err = LocalKeyring::parse(doc)
            .expect_err("bad keyring")
            .to_string();
        assert!(err.contains("\"short\" has 3 bytes"), "{err}");
        assert!(err.contains("\"garbage\" is not base64"), "{err}");
        let err = LocalKeyring::parse("keys: {}\nextra: 1\n").expect_err("unknown field");
        assert!(matches!(err, KmsError::Misconfigured(_)), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn world_readable_file_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keyring.yaml");
        std::fs::write(
            &path,
            format!("keys:\n  k: \"{}\"\n", new_master_key_base64()),
        )
        .expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = LocalKeyring::load(&path).expect_err("world-readable");
        assert!(err.to_string().contains("chmod 600"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        LocalKeyring::load(&path).expect("private keyring");
    }
}
