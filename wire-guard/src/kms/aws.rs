//! AWS KMS as a backend: GenerateDataKey (AES_256) and Decrypt, both with the encryption
//! context, through `aws-sdk-kms`.
//!
//! Credentials come from the SDK's standard chain (environment, profile, web identity, ECS and
//! EC2 roles). The SDK's own retries are switched off: the retry decorator is the one place
//! that decides, so attempts are not multiplied and every attempt shows in the metrics.
//! `endpoint_url` points the client at another endpoint, such as a VPC endpoint or the moto
//! emulator the tests use.

use std::time::Duration;

use async_trait::async_trait;
use aws_config::{BehaviorVersion, Region, retry::RetryConfig, timeout::TimeoutConfig};
use aws_sdk_kms::{
    Client,
    config::Credentials,
    error::{DisplayErrorContext, ProvideErrorMetadata, SdkError},
    primitives::Blob,
    types::{DataKeySpec, MacAlgorithmSpec},
};
use bytes::Bytes;
use zeroize::{Zeroize, Zeroizing};

use super::{DATA_KEY_LEN, DataKey, EncryptionContext, KeyRef, Kms, KmsError, Operation};

/// Where and how to reach AWS KMS.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsKmsConfig {
    /// The region of the keys; when absent the standard chain decides (`AWS_REGION`, profile).
    pub region: Option<String>,
    /// Another endpoint than the region's public one: a VPC endpoint, or an emulator.
    pub endpoint_url: Option<String>,
    /// The most one attempt may take, in milliseconds (connecting included); a KMS that does not
    /// answer within it counts as unavailable and the retry layer decides what next.
    pub attempt_timeout_ms: Option<u64>,
    /// Fixed credentials instead of the standard chain. Never read from a file, so that no
    /// policy or configuration file holds a secret; tests against an emulator set it.
    #[serde(skip)]
    pub credentials: Option<Credentials>,
}

/// Connecting is bounded apart from the attempt so that an unreachable endpoint fails fast.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// An AWS KMS client.
#[derive(Debug, Clone)]
pub struct AwsKms {
    client: Client,
}

impl AwsKms {
    /// Builds the client; the credential chain is consulted at the first call, not here.
    pub async fn connect(config: &AwsKmsConfig) -> Result<AwsKms, KmsError> {
        let attempt = config
            .attempt_timeout_ms
            .map_or(DEFAULT_ATTEMPT_TIMEOUT, Duration::from_millis);
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(CONNECT_TIMEOUT.min(attempt))
                    .operation_attempt_timeout(attempt)
                    .build(),
            );
        if let Some(region) = &config.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(url) = &config.endpoint_url {
            loader = loader.endpoint_url(url.clone());
        }
        if let Some(credentials) = &config.credentials {
            loader = loader.credentials_provider(credentials.clone());
        }
        let sdk_config = loader.load().await;
        if sdk_config.region().is_none() {
            return Err(KmsError::Misconfigured(
                "AWS KMS needs a region: set kms.aws.region or AWS_REGION".into(),
            ));
        }
        Ok(AwsKms {
            client: Client::new(&sdk_config),
        })
    }

    fn key_id(key: &KeyRef) -> Result<&str, KmsError> {
        match key {
            KeyRef::Aws(id) => Ok(id),
            KeyRef::Local(_) => Err(KmsError::Misconfigured(format!(
                "{key} was sent to AWS KMS"
            ))),
        }
    }
}

fn context_map(context: &EncryptionContext) -> Option<std::collections::HashMap<String, String>> {
    (!context.is_empty()).then(|| {
        context
            .iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    })
}

/// Copies a plaintext key out of the SDK's buffer and wipes that buffer.
fn take_plaintext(
    blob: Option<Blob>,
    operation: Operation,
    key: &KeyRef,
) -> Result<Zeroizing<[u8; DATA_KEY_LEN]>, KmsError> {
    let mut bytes = blob.map(Blob::into_inner).unwrap_or_default();
    let result = if bytes.len() == DATA_KEY_LEN {
        let mut plaintext = Zeroizing::new([0u8; DATA_KEY_LEN]);
        plaintext.copy_from_slice(&bytes);
        Ok(plaintext)
    } else {
        Err(KmsError::Refused {
            operation,
            key: key.to_string(),
            reason: format!(
                "AWS KMS returned a {}-byte plaintext key, expected {DATA_KEY_LEN}",
                bytes.len()
            ),
        })
    };
    bytes.zeroize();
    result
}

/// Sorts an SDK failure by what the caller can do about it.
///
/// Service errors are read by their error code, which covers the codes the SDK has no variant
/// for (throttling, access denied); an unknown code falls back on the HTTP status. Failures to
/// send at all are transient unless the SDK says the request itself could not be built. That
/// includes credentials the chain could not load: an instance role's endpoint that did not
/// answer is a passing fault, and a chain with nothing configured is retried only within the
/// retry bounds before it is reported.
fn classify<E>(
    err: SdkError<E, aws_sdk_kms::config::http::HttpResponse>,
    operation: Operation,
    key: &KeyRef,
) -> KmsError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let key_text = key.to_string();
    let reason = DisplayErrorContext(&err).to_string();
    match &err {
        SdkError::ServiceError(context) => {
            let status = context.raw().status().as_u16();
            let code = context.err().code().unwrap_or("");
            match code {
                "NotFoundException" => KmsError::NotFound {
                    operation,
                    key: key_text,
                    reason,
                },
                "ThrottlingException"
                | "LimitExceededException"
                | "RequestLimitExceeded"
                | "KMSInternalException"
                | "KeyUnavailableException"
                | "DependencyTimeoutException"
                | "ServiceUnavailableException"
                | "InternalFailure" => KmsError::Unavailable {
                    operation,
                    key: key_text,
                    reason,
                },
                "DisabledException"
                | "AccessDeniedException"
                | "InvalidCiphertextException"
                | "IncorrectKeyException"
                | "InvalidKeyUsageException"
                | "KMSInvalidStateException"
                | "InvalidGrantTokenException"
                | "UnrecognizedClientException"
                | "InvalidSignatureException"
                | "ExpiredTokenException"
                | "DryRunOperationException" => KmsError::Refused {
                    operation,
                    key: key_text,
                    reason,
                },
                _ if status == 429 || status >= 500 => KmsError::Unavailable {
                    operation,
                    key: key_text,
                    reason,
                },
                _ => KmsError::Refused {
                    operation,
                    key: key_text,
                    reason,
                },
            }
        }
        SdkError::ConstructionFailure(_) => {
            KmsError::Misconfigured(format!("AWS KMS request for {key_text}: {reason}"))
        }
        SdkError::DispatchFailure(failure) if failure.is_user() => {
            KmsError::Misconfigured(format!("AWS KMS request for {key_text}: {reason}"))
        }
        _ => KmsError::Unavailable {
            operation,
            key: key_text,
            reason,
        },
    }
}

#[async_trait]
impl Kms for AwsKms {
    async fn generate_data_key(
        &self,
        key: &KeyRef,
        context: &EncryptionContext,
    ) -> Result<DataKey, KmsError> {
        let operation = Operation::GenerateDataKey;
        let output = self
            .client
            .generate_data_key()
            .key_id(AwsKms::key_id(key)?)
            .key_spec(DataKeySpec::Aes256)
            .set_encryption_context(context_map(context))
            .send()
            .await
            .map_err(|e| classify(e, operation, key))?;
        let wrapped_by = output.key_id.clone().map(KeyRef::Aws);
        let wrapped = output
            .ciphertext_blob
            .map(|blob| Bytes::from(blob.into_inner()))
            .filter(|bytes| !bytes.is_empty());
        let plaintext = take_plaintext(output.plaintext, operation, key)?;
        let Some(wrapped) = wrapped else {
            return Err(KmsError::Refused {
                operation,
                key: key.to_string(),
                reason: "AWS KMS returned no wrapped key".into(),
            });
        };
        Ok(DataKey {
            plaintext,
            wrapped,
            use_index: 0,
            wrapped_by,
        })
    }

    async fn decrypt_data_key(
        &self,
        key: &KeyRef,
        wrapped: &[u8],
        context: &EncryptionContext,
    ) -> Result<Zeroizing<[u8; DATA_KEY_LEN]>, KmsError> {
        let operation = Operation::Decrypt;
        // KeyId makes KMS refuse a wrapped key made under any other key, so a record cannot
        // redirect the proxy to a key the policy did not name.
        let output = self
            .client
            .decrypt()
            .key_id(AwsKms::key_id(key)?)
            .ciphertext_blob(Blob::new(wrapped))
            .set_encryption_context(context_map(context))
            .send()
            .await
            .map_err(|e| classify(e, operation, key))?;
        take_plaintext(output.plaintext, operation, key)
    }

    async fn derive_key(
        &self,
        key: &KeyRef,
        context: &EncryptionContext,
    ) -> Result<Zeroizing<[u8; DATA_KEY_LEN]>, KmsError> {
        let operation = Operation::DeriveKey;
        let output = self
            .client
            .generate_mac()
            .key_id(AwsKms::key_id(key)?)
            .mac_algorithm(MacAlgorithmSpec::HmacSha256)
            .message(Blob::new(super::derivation_message(context)))
            .send()
            .await
            .map_err(|e| classify(e, operation, key))?;
        let mac = output.mac.map(Blob::into_inner).unwrap_or_default();
        if mac.len() != DATA_KEY_LEN {
            return Err(KmsError::Refused {
                operation,
                key: key.to_string(),
                reason: format!(
                    "GenerateMac returned {} bytes, not {DATA_KEY_LEN}",
                    mac.len()
                ),
            });
        }
        let mut derived = Zeroizing::new([0u8; DATA_KEY_LEN]);
        derived.copy_from_slice(&mac);
        let mut mac = mac;
        mac.zeroize();
        Ok(derived)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unreachable_endpoint_is_unavailable() {
        let config = AwsKmsConfig {
            region: Some("eu-west-1".into()),
            // Nothing listens on port 9 of the loopback interface.
            endpoint_url: Some("http://127.0.0.1:9".into()),
            attempt_timeout_ms: Some(2_000),
            credentials: Some(Credentials::new("testing", "testing", None, None, "test")),
        };
        let kms = AwsKms::connect(&config).await.expect("client");
        let err = kms
            .generate_data_key(
                &"aws-kms:alias/x".parse().expect("key ref"),
                &EncryptionContext::new(),
            )
            .await
            .expect_err("nothing listens");
        assert!(err.is_retriable(), "{err}");
    }

    #[tokio::test]
    async fn a_local_key_is_not_sent_to_aws() {
        let config = AwsKmsConfig {
            region: Some("eu-west-1".into()),
            ..AwsKmsConfig::default()
        };
        let kms = AwsKms::connect(&config).await.expect("client");
        let err = kms
            .decrypt_data_key(&KeyRef::Local("x".into()), b"w", &EncryptionContext::new())
            .await
            .expect_err("wrong backend");
        assert!(matches!(err, KmsError::Misconfigured(_)), "{err}");
    }
}
