//! wire-guard's KMS stack (cache, retry, metrics, AWS backend) against moto's AWS KMS emulator.

use std::sync::Arc;

use integration_tests::kms::Moto;
use prometheus::Registry;
use wire_guard::kms::{self, EncryptionContext, KeyRef, Kms, KmsConfig, KmsError, RetryConfig};

fn registry() -> Registry {
    Registry::new_custom(Some("wire_guard".into()), None).expect("registry")
}

/// The value of a counter with the given labels.
fn value(registry: &Registry, name: &str, labels: [(&str, &str); 2]) -> u64 {
    registry
        .gather()
        .iter()
        .filter(|family| family.name() == name)
        .flat_map(|family| family.get_metric().to_vec())
        .filter(|metric| {
            labels.iter().all(|(name, value)| {
                metric
                    .get_label()
                    .iter()
                    .any(|l| l.name() == *name && l.value() == *value)
            })
        })
        .map(|metric| metric.get_counter().get_value() as u64)
        .sum()
}

/// Calls that reached the KMS.
fn counter(registry: &Registry, operation: &str, outcome: &str) -> u64 {
    value(
        registry,
        "wire_guard_kms_requests_total",
        [("operation", operation), ("outcome", outcome)],
    )
}

async fn stack(moto: &Moto, retry: RetryConfig, registry: &Registry) -> Arc<dyn Kms> {
    let config = KmsConfig {
        aws: Some(moto.kms_config()),
        retry,
        ..KmsConfig::default()
    };
    kms::build(&config, registry).await.expect("kms stack")
}

fn context(field: &str) -> EncryptionContext {
    EncryptionContext::new()
        .with("topic", "payments")
        .with("field", field)
}

#[tokio::test]
async fn data_keys_round_trip_through_aws_kms() -> anyhow::Result<()> {
    integration_tests::stack::init_test_logging();
    let moto = Moto::start().await?;
    let (key_id, arn) = moto.create_key("alias/payments").await?;

    let producer_metrics = registry();
    let producer = stack(&moto, RetryConfig::default(), &producer_metrics).await;
    // A second proxy, with cold caches, that reads what the first one wrote.
    let consumer_metrics = registry();
    let consumer = stack(&moto, RetryConfig::default(), &consumer_metrics).await;

    for (reference, field) in [
        ("aws-kms:alias/payments".to_owned(), "$.card.number"),
        (format!("aws-kms:{key_id}"), "$.card.cvc"),
        (format!("aws-kms:{arn}"), "$.customer.email"),
    ] {
        let key: KeyRef = reference.parse().map_err(anyhow::Error::msg)?;
        let data_key = producer.generate_data_key(&key, &context(field)).await?;
        assert_ne!(*data_key.plaintext, [0; kms::DATA_KEY_LEN]);
        assert!(!data_key.wrapped.is_empty());
        // The same key serves the next records of the field.
        for _ in 0..100 {
            let again = producer.generate_data_key(&key, &context(field)).await?;
            assert_eq!(again.wrapped, data_key.wrapped);
        }
        let plaintext = consumer
            .decrypt_data_key(&key, &data_key.wrapped, &context(field))
            .await?;
        assert_eq!(*plaintext, *data_key.plaintext, "{reference}");
    }
    assert_eq!(counter(&producer_metrics, "generate_data_key", "ok"), 3);
    assert_eq!(
        counter(&producer_metrics, "decrypt", "ok"),
        0,
        "the producer never needs to unwrap its own keys"
    );
    assert_eq!(counter(&consumer_metrics, "decrypt", "ok"), 3);
    let cache = |cache: &str, result: &str| {
        value(
            &producer_metrics,
            "wire_guard_kms_cache_total",
            [("cache", cache), ("result", result)],
        )
    };
    assert_eq!(cache("generated", "miss"), 3);
    assert_eq!(cache("generated", "hit"), 300);
    Ok(())
}

#[tokio::test]
async fn a_wrong_context_is_refused_without_retrying() -> anyhow::Result<()> {
    integration_tests::stack::init_test_logging();
    let moto = Moto::start().await?;
    moto.create_key("alias/orders").await?;
    let key: KeyRef = "aws-kms:alias/orders".parse().map_err(anyhow::Error::msg)?;
    let producer = stack(&moto, RetryConfig::default(), &registry()).await;
    let data_key = producer
        .generate_data_key(&key, &context("$.card.number"))
        .await?;

    let metrics = registry();
    let consumer = stack(&moto, RetryConfig::default(), &metrics).await;
    let err = consumer
        .decrypt_data_key(&key, &data_key.wrapped, &context("$.customer.email"))
        .await
        .expect_err("another field's context");
    assert!(matches!(err, KmsError::Refused { .. }), "{err}");
    assert!(!err.is_retriable());
    assert_eq!(counter(&metrics, "decrypt", "refused"), 1, "not retried");

    let mut tampered = data_key.wrapped.to_vec();
    let last = tampered.len() - 1;
    tampered[last] ^= 0x01;
    let err = consumer
        .decrypt_data_key(&key, &tampered, &context("$.card.number"))
        .await
        .expect_err("tampered wrapped key");
    assert!(!err.is_retriable(), "{err}");

    let err = consumer
        .generate_data_key(
            &"aws-kms:alias/missing"
                .parse()
                .map_err(anyhow::Error::msg)?,
            &context("$.x"),
        )
        .await
        .expect_err("no such alias");
    assert!(matches!(err, KmsError::NotFound { .. }), "{err}");
    assert_eq!(counter(&metrics, "generate_data_key", "not_found"), 1);
    Ok(())
}

#[tokio::test]
async fn an_unreachable_kms_is_retried_then_reported_as_unavailable() -> anyhow::Result<()> {
    integration_tests::stack::init_test_logging();
    let mut moto = Moto::start().await?;
    moto.create_key("alias/audit").await?;
    let key: KeyRef = "aws-kms:alias/audit".parse().map_err(anyhow::Error::msg)?;
    let metrics = registry();
    let retry = RetryConfig {
        max_attempts: 3,
        initial_backoff_ms: 10,
        max_backoff_ms: 50,
        total_timeout_ms: 20_000,
    };
    let kms = stack(&moto, retry, &metrics).await;
    let cached = kms.generate_data_key(&key, &context("$.a")).await?;

    moto.stop();
    let err = kms
        .generate_data_key(&key, &context("$.b"))
        .await
        .expect_err("moto is gone");
    assert!(matches!(err, KmsError::Unavailable { .. }), "{err}");
    assert_eq!(
        counter(&metrics, "generate_data_key", "unavailable"),
        3,
        "every attempt reached the backend"
    );
    // What is cached keeps working while the KMS is away.
    let again = kms.generate_data_key(&key, &context("$.a")).await?;
    assert_eq!(again.wrapped, cached.wrapped);
    let plaintext = kms
        .decrypt_data_key(&key, &cached.wrapped, &context("$.a"))
        .await?;
    assert_eq!(*plaintext, *cached.plaintext);
    Ok(())
}

#[tokio::test]
async fn token_keys_derive_from_an_hmac_key_the_same_on_every_instance() -> anyhow::Result<()> {
    integration_tests::stack::init_test_logging();
    let moto = Moto::start().await?;
    let admin = moto.admin_client().await;
    let mut ids = Vec::new();
    for alias in ["alias/tokens", "alias/other-tokens"] {
        let created = admin
            .create_key()
            .key_spec(aws_sdk_kms::types::KeySpec::Hmac256)
            .key_usage(aws_sdk_kms::types::KeyUsageType::GenerateVerifyMac)
            .send()
            .await?;
        let id = created.key_metadata.map(|m| m.key_id).unwrap_or_default();
        admin
            .create_alias()
            .alias_name(alias)
            .target_key_id(&id)
            .send()
            .await?;
        ids.push(id);
    }
    moto.create_key("alias/symmetric").await?;
    let parse = |text: &str| text.parse::<KeyRef>().map_err(anyhow::Error::msg);
    let context = EncryptionContext::new().with("wire-guard.purpose", "token");
    let one = stack(&moto, RetryConfig::default(), &registry()).await;
    let two = stack(&moto, RetryConfig::default(), &registry()).await;
    let a = one
        .derive_key(&parse("aws-kms:alias/tokens")?, &context)
        .await?;
    let b = two
        .derive_key(&parse("aws-kms:alias/tokens")?, &context)
        .await?;
    assert_eq!(*a, *b, "two instances derive different token keys");
    let other = one
        .derive_key(&parse("aws-kms:alias/other-tokens")?, &context)
        .await?;
    assert_ne!(*a, *other);
    let by_id = one
        .derive_key(&parse(&format!("aws-kms:{}", ids[0]))?, &context)
        .await?;
    assert_eq!(*a, *by_id);
    // An encryption key cannot make MACs: refused, not retried.
    let err = one
        .derive_key(&parse("aws-kms:alias/symmetric")?, &context)
        .await
        .expect_err("a symmetric key derived a token key");
    assert!(!err.is_retriable(), "{err}");
    Ok(())
}
