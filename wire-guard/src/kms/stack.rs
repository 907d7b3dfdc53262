//! Assembling the KMS stack from configuration: the backends a policy may name, wrapped in the
//! cache, retry and metrics decorators.

use std::{path::PathBuf, sync::Arc};

use async_trait::async_trait;
use prometheus::Registry;
use zeroize::Zeroizing;

use super::{
    AwsKms, AwsKmsConfig, CacheConfig, CachingKms, DATA_KEY_LEN, DataKey, EncryptionContext,
    InstrumentedKms, KeyRef, Kms, KmsError, LocalKeyring, RetryConfig, RetryingKms,
};

/// Where the local keyring file is.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalKeyringConfig {
    /// The keyring file (see the `local` module for its format and permissions).
    pub path: PathBuf,
}

/// The `kms:` section of the configuration. A backend that is absent cannot be named by a
/// policy; the cache and retry bounds have defaults.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KmsConfig {
    /// AWS KMS, for `aws-kms:` key references.
    pub aws: Option<AwsKmsConfig>,
    /// The local keyring, for `local:` key references.
    pub local: Option<LocalKeyringConfig>,
    #[serde(default)]
    pub cache: CacheConfig,
    #[serde(default)]
    pub retry: RetryConfig,
}

impl KmsConfig {
    /// Every problem with the configuration, so that one start lists them all.
    pub fn validate(&self) -> Result<(), KmsError> {
        let mut problems = self.cache.problems();
        problems.extend(self.retry.problems());
        if problems.is_empty() {
            Ok(())
        } else {
            Err(KmsError::Misconfigured(problems.join("; ")))
        }
    }
}

/// Sends each call to the backend its [`KeyRef`] names.
#[derive(Debug, Default)]
pub struct Backends {
    /// Serves `aws-kms:` references, when configured.
    pub aws: Option<Arc<dyn Kms>>,
    /// Serves `local:` references, when configured.
    pub local: Option<Arc<dyn Kms>>,
}

impl Backends {
    fn for_key(&self, key: &KeyRef) -> Result<&dyn Kms, KmsError> {
        let backend = match key {
            KeyRef::Aws(_) => &self.aws,
            KeyRef::Local(_) => &self.local,
        };
        backend.as_deref().ok_or_else(|| {
            KmsError::Misconfigured(format!(
                "{key} names the {} backend, which is not configured under kms:",
                key.backend()
            ))
        })
    }
}

#[async_trait]
impl Kms for Backends {
    async fn generate_data_key(
        &self,
        key: &KeyRef,
        context: &EncryptionContext,
    ) -> Result<DataKey, KmsError> {
        self.for_key(key)?.generate_data_key(key, context).await
    }

    async fn decrypt_data_key(
        &self,
        key: &KeyRef,
        wrapped: &[u8],
        context: &EncryptionContext,
    ) -> Result<Zeroizing<[u8; DATA_KEY_LEN]>, KmsError> {
        self.for_key(key)?
            .decrypt_data_key(key, wrapped, context)
            .await
    }

    async fn derive_key(
        &self,
        key: &KeyRef,
        context: &EncryptionContext,
    ) -> Result<Zeroizing<[u8; DATA_KEY_LEN]>, KmsError> {
        self.for_key(key)?.derive_key(key, context).await
    }
}

/// Builds the stack: cache, then retry, then metrics, then the backends.
///
/// The cache is outermost so that a cached key costs no retry bookkeeping and no metric; the
/// metrics layer is innermost so that it counts and times each real KMS call, retries included,
/// and logs each data key once.
pub async fn build(config: &KmsConfig, registry: &Registry) -> Result<Arc<dyn Kms>, KmsError> {
    config.validate()?;
    let mut backends = Backends::default();
    if let Some(aws) = &config.aws {
        backends.aws = Some(Arc::new(AwsKms::connect(aws).await?));
    }
    if let Some(local) = &config.local {
        backends.local = Some(Arc::new(LocalKeyring::load(&local.path)?));
    }
    wrap(Arc::new(backends), config, registry)
}

/// Wraps any backend in the decorators, as [`build`] does.
pub fn wrap(
    backend: Arc<dyn Kms>,
    config: &KmsConfig,
    registry: &Registry,
) -> Result<Arc<dyn Kms>, KmsError> {
    let instrumented: Arc<dyn Kms> = Arc::new(InstrumentedKms::new(backend, registry)?);
    let retrying: Arc<dyn Kms> = Arc::new(RetryingKms::new(instrumented, config.retry.clone()));
    Ok(Arc::new(CachingKms::new(
        retrying,
        &config.cache,
        registry,
    )?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kms::new_master_key_base64;

    #[tokio::test]
    async fn builds_a_local_stack_from_configuration() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keyring.yaml");
        std::fs::write(
            &path,
            format!("keys:\n  demo: \"{}\"\n", new_master_key_base64()),
        )
        .expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let config: KmsConfig = serde_saphyr::from_str(&format!(
            "local:\n  path: {}\ncache:\n  max_uses: 10\nretry:\n  max_attempts: 2\n",
            path.display()
        ))
        .expect("config");
        let registry = Registry::new();
        let kms = build(&config, &registry).await.expect("stack");
        let context = EncryptionContext::new().with("topic", "demo");
        let key: KeyRef = "local:demo".parse().expect("key ref");
        let data_key = kms
            .generate_data_key(&key, &context)
            .await
            .expect("generate");
        let plaintext = kms
            .decrypt_data_key(&key, &data_key.wrapped, &context)
            .await
            .expect("decrypt");
        assert_eq!(*plaintext, *data_key.plaintext);
        let err = kms
            .generate_data_key(&"aws-kms:alias/x".parse().expect("key ref"), &context)
            .await
            .expect_err("no aws backend");
        assert!(err.to_string().contains("not configured"), "{err}");
    }

    #[test]
    fn every_bad_bound_is_listed() {
        let config: KmsConfig = serde_saphyr::from_str(
            "cache:\n  max_uses: 0\n  max_age_secs: 0\nretry:\n  max_attempts: 0\n",
        )
        .expect("config");
        let err = config.validate().expect_err("bad bounds").to_string();
        for name in ["max_uses", "max_age_secs", "max_attempts"] {
            assert!(err.contains(name), "{err}");
        }
        assert!(serde_saphyr::from_str::<KmsConfig>("vault: {}\n").is_err());
    }
}
