//! Field protection through wire-guard against Apache Kafka, the development registry and a
//! local keyring: fields encrypted, tokenized and masked on produce, revealed only to the
//! principals the policy names, never stored in the clear, and tampering or plaintext written
//! around the proxy caught on fetch.

use std::{path::Path, time::Duration};

use integration_tests::{
    broker,
    proxy::InProcess,
    records::{
        Got, Out, Registry, avro_long, avro_string, create_topics, create_topics_with, framed,
        payload_file, produce, read_topic, read_topic_with, run_id,
    },
};
use serde_json::json;
use wire_guard::{
    kms::{KmsConfig, LocalKeyringConfig, new_master_key_base64},
    schema::RegistryConfig,
};

const CUSTOMER: &str = r#"{"type":"record","name":"Customer","namespace":"example.pii","fields":[
  {"name":"id","type":"string"},
  {"name":"card","type":{"type":"record","name":"Card","fields":[{"name":"number","type":"string"}]}},
  {"name":"email","type":["null","string"],"default":null},
  {"name":"phone","type":"string"},
  {"name":"amount","type":"long"}]}"#;

const CARD: &str = "4111111111111111";
const EMAIL: &str = "alice@example.com";
const PHONE: &str = "+44 7700 900123";

fn customer(id: &str, card: &str, email: &str, phone: &str) -> Vec<u8> {
    let mut out = Vec::new();
    avro_string(&mut out, id);
    avro_string(&mut out, card);
    avro_long(&mut out, 1); // union branch 1: string
    avro_string(&mut out, email);
    avro_string(&mut out, phone);
    avro_long(&mut out, 1250);
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

fn keyring(dir: &Path) -> anyhow::Result<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("keyring.yaml");
    std::fs::write(
        &path,
        format!(
            "keys:\n  pii: \"{}\"\n  tokens: \"{}\"\n",
            new_master_key_base64(),
            new_master_key_base64()
        ),
    )?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(path)
}

fn local_kms(keyring: &Path) -> KmsConfig {
    KmsConfig {
        local: Some(LocalKeyringConfig {
            path: keyring.to_owned(),
        }),
        ..KmsConfig::default()
    }
}

/// wire-guard in front of the broker's SASL listener, with `policy` and the local keyring.
async fn guarded(
    policy: &str,
    registry: &str,
    keyring: &Path,
    dir: &Path,
) -> anyhow::Result<InProcess> {
    guarded_with(policy, registry, local_kms(keyring), dir).await
}

async fn guarded_with(
    policy: &str,
    registry: &str,
    kms: KmsConfig,
    dir: &Path,
) -> anyhow::Result<InProcess> {
    let policies = dir.join(format!("policies-{}", run_id()));
    std::fs::create_dir_all(&policies)?;
    std::fs::write(policies.join("fields.yaml"), policy)?;
    let kafka = tokio::task::spawn_blocking(broker::shared).await?;
    let upstream = kafka.endpoint_of(kafka.listeners.sasl_plaintext);
    let registry = registry.to_owned();
    InProcess::start(&upstream, move |c| {
        c.policies = Some(policies);
        c.schema_registry = Some(RegistryConfig::new(registry));
        c.kms = Some(kms);
    })
    .await
}

fn login(user: &str) -> Vec<String> {
    [
        "--security-protocol",
        "SASL_PLAINTEXT",
        "--sasl-mechanism",
        "PLAIN",
        "--sasl-username",
        user,
        "--sasl-password",
        &format!("{user}-secret"),
    ]
    .map(str::to_owned)
    .to_vec()
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn policy(topic: &str) -> String {
    format!(
        r#"topics:
  - id: customers
    match: ["{topic}"]
    value: {{ schema: required }}
    fields:
      - {{ path: "$.card.number", action: encrypt, key: "local:pii", reveal_to: ["user:alice"] }}
      - {{ path: "$.email", action: tokenize, key: "local:tokens" }}
      - {{ path: "$.phone", action: mask, keep_last: 4, key: "local:pii", reveal_to: ["user:alice"] }}
"#
    )
}

fn metric(metrics: &str, needle: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#') && needle.iter().all(|n| l.contains(n)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn avro_fields_are_protected_on_the_broker_and_revealed_only_to_the_named_principal()
-> anyhow::Result<()> {
    let run = run_id();
    let dir = tempfile::tempdir()?;
    let keyring = keyring(dir.path())?;
    let registry = Registry::start().await?;
    let topic = format!("fp-avro-{run}");
    let id = registry
        .register(&format!("{topic}-value"), json!({ "schema": CUSTOMER }))
        .await?;
    let direct = broker::shared().endpoint().bootstrap;
    create_topics(&direct, &[(&topic, 1)]).await?;
    let proxy = guarded(&policy(&topic), &registry.url, &keyring, dir.path()).await?;
    let second = guarded(&policy(&topic), &registry.url, &keyring, dir.path()).await?;

    // Bob produces through one instance, carol through the other, each with two clients:
    // same email, same token.
    let bob = login("bob");
    let carol = login("carol");
    let producers = [
        (&proxy, &bob, "confluent"),
        (&second, &carol, "java"),
        (&proxy, &bob, "kafka-python"),
        (&second, &carol, "aiokafka"),
    ];
    for (n, (proxy, who, client)) in producers.into_iter().enumerate() {
        let file = payload_file(
            dir.path(),
            &topic,
            "zstd",
            true,
            &[Out::value(
                0,
                framed(id, &customer(&format!("c{n}"), CARD, EMAIL, PHONE)),
            )],
        )?;
        let result = produce(client, &proxy.bootstrap(), &file, &args(who)).await?;
        assert_eq!(result["delivered"], 1, "{client}: {result}");
    }

    // Straight from the broker: no protected field in the clear, one key header per
    // encrypted field, the same token from both instances.
    let stored = read_topic(&direct, &topic, 4).await?;
    assert_eq!(stored.len(), 4);
    for got in &stored {
        let value = got.value.as_deref().unwrap_or_default();
        for secret in [CARD, EMAIL, PHONE] {
            assert!(
                !contains(value, secret),
                "{secret} stored in the clear: {got:?}"
            );
        }
        assert!(contains(value, "wg1."), "{got:?}");
        assert!(contains(value, "tk1."), "{got:?}");
        let keys = got
            .headers
            .iter()
            .filter(|(k, _)| k == "wire-guard.key")
            .count();
        assert_eq!(keys, 2, "{got:?}");
    }
    let token = |got: &Got| -> Vec<u8> {
        let v = got.value.clone().unwrap_or_default();
        let at = v.windows(4).position(|w| w == b"tk1.").expect("token");
        v[at..at + 47].to_vec()
    };
    for other in &stored[1..] {
        assert_eq!(
            token(&stored[0]),
            token(other),
            "tokens differ across instances"
        );
    }

    // Alice may read card and phone; bob reads the card's ciphertext and a masked phone.
    let as_alice = read_topic_with(&proxy.bootstrap(), &topic, 4, &args(&login("alice"))).await?;
    assert_eq!(as_alice.len(), 4);
    for got in &as_alice {
        let value = got.value.as_deref().unwrap_or_default();
        assert!(contains(value, CARD) && contains(value, PHONE), "{got:?}");
        assert!(
            !contains(value, EMAIL) && contains(value, "tk1."),
            "{got:?}"
        );
    }
    let as_bob = read_topic_with(&second.bootstrap(), &topic, 4, &args(&bob)).await?;
    assert_eq!(as_bob.len(), 4);
    for got in &as_bob {
        let value = got.value.as_deref().unwrap_or_default();
        assert!(!contains(value, CARD) && contains(value, "wg1."), "{got:?}");
        assert!(contains(value, "***********0123"), "{got:?}");
        assert!(!contains(value, PHONE), "{got:?}");
    }

    // Written around the proxy: one record with a changed ciphertext byte, one in the clear.
    let mut tampered = stored[0].value.clone().unwrap_or_default();
    let at = tampered
        .windows(4)
        .position(|w| w == b"wg1.")
        .expect("envelope")
        + 20;
    tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
    let mut forged = Out::value(0, tampered);
    forged.headers = stored[0].headers.clone();
    let plain = Out::value(0, framed(id, &customer("c9", CARD, EMAIL, PHONE)));
    let file = payload_file(dir.path(), &topic, "none", false, &[forged, plain])?;
    let result = produce("confluent", &direct, &file, &[]).await?;
    assert_eq!(result["delivered"], 2, "{result}");
    let as_alice = read_topic_with(&proxy.bootstrap(), &topic, 6, &args(&login("alice"))).await?;
    let tampered_read = as_alice[4].value.as_deref().unwrap_or_default();
    assert!(
        !contains(tampered_read, CARD),
        "a changed ciphertext decrypted"
    );
    assert!(
        contains(tampered_read, "****************"),
        "{:?}",
        as_alice[4]
    );
    let as_bob = read_topic_with(&proxy.bootstrap(), &topic, 6, &args(&bob)).await?;
    let plain_read = as_bob[5].value.as_deref().unwrap_or_default();
    assert!(
        !contains(plain_read, CARD),
        "plaintext shown to a reader outside reveal_to"
    );
    let metrics = proxy.metrics().await?;
    assert!(
        metric(&metrics, &["wire_guard_fields_total", "unreadable"]) >= 1.0,
        "{metrics}"
    );
    assert!(
        metric(&metrics, &["wire_guard_fields_total", "plaintext_found"]) >= 1.0,
        "{metrics}"
    );
    assert!(
        metric(&metrics, &["wire_guard_fields_total", "protected"]) >= 3.0,
        "{metrics}"
    );
    proxy.stop().await?;
    second.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_and_protobuf_fields_round_trip_every_action_through_every_client()
-> anyhow::Result<()> {
    let run = run_id();
    let dir = tempfile::tempdir()?;
    let keyring = keyring(dir.path())?;
    let registry = Registry::start().await?;
    let json_topic = format!("fp-json-{run}");
    let proto_topic = format!("fp-proto-{run}");
    let json_id = registry
        .register(
            &format!("{json_topic}-value"),
            json!({"schemaType": "JSON", "schema": r#"{"type":"object","properties":{"id":{"type":"string"},"email":{"type":"string"},"phone":{"type":"string"},"ref":{"type":"string"}}}"#}),
        )
        .await?;
    let proto_id = registry
        .register(
            &format!("{proto_topic}-value"),
            json!({"schemaType": "PROTOBUF", "schema": "syntax = \"proto3\";\npackage example.pii;\nmessage Contact { string id = 1; bytes email = 2; string phone = 3; string ref = 4; }\n"}),
        )
        .await?;
    let direct = broker::shared().endpoint().bootstrap;
    create_topics(&direct, &[(&json_topic, 1), (&proto_topic, 1)]).await?;
    let policy = format!(
        r#"topics:
  # Checks bob's records first; the fields are still those of the rule below.
  - id: contacts-from-bob
    match: ["{json_topic}", "{proto_topic}"]
    principals: ["user:bob"]
    value: {{ schema: required, on_invalid: reject }}
  - id: contacts
    match: ["{json_topic}", "{proto_topic}"]
    value: {{ schema: required }}
    fields:
      - {{ path: "$.email", action: encrypt, key: "local:pii", reveal_to: ["user:alice"] }}
      - {{ path: "$.id", action: tokenize, reversible: true, key: "local:tokens", reveal_to: ["user:alice"] }}
      - {{ path: "$.phone", action: mask, keep_last: 4, key: "local:pii", reveal_to: ["user:alice"] }}
      - {{ path: "$.ref", action: tokenize, key: "local:tokens" }}
"#
    );
    let proxy = guarded(&policy, &registry.url, &keyring, dir.path()).await?;
    let clients = ["confluent", "kafka-python", "aiokafka", "java"];
    let phone = |n: usize| format!("+44 7700 90{n:04}");
    let reference = |client: &str| format!("ref-{client}");
    for (n, client) in clients.iter().enumerate() {
        let email = format!("{client}@example.com");
        let json_value = framed(
            json_id,
            json!({"id": n.to_string(), "email": email, "phone": phone(n), "ref": reference(client)})
                .to_string()
                .as_bytes(),
        );
        let mut proto = vec![0u8, 0x0a, 1, b'0' + n as u8, 0x12, email.len() as u8];
        proto.extend_from_slice(email.as_bytes());
        proto.extend_from_slice(&[0x1a, phone(n).len() as u8]);
        proto.extend_from_slice(phone(n).as_bytes());
        proto.extend_from_slice(&[0x22, reference(client).len() as u8]);
        proto.extend_from_slice(reference(client).as_bytes());
        let proto_value = framed(proto_id, &proto);
        for (topic, value) in [(&json_topic, json_value), (&proto_topic, proto_value)] {
            let file = payload_file(dir.path(), topic, "lz4", true, &[Out::value(0, value)])?;
            let result = produce(client, &proxy.bootstrap(), &file, &args(&login("bob"))).await?;
            assert_eq!(result["delivered"], 1, "{client} {topic}: {result}");
        }
    }
    for topic in [&json_topic, &proto_topic] {
        let stored = read_topic(&direct, topic, clients.len()).await?;
        let revealed = read_topic_with(
            &proxy.bootstrap(),
            topic,
            clients.len(),
            &args(&login("alice")),
        )
        .await?;
        let withheld = read_topic_with(
            &proxy.bootstrap(),
            topic,
            clients.len(),
            &args(&login("bob")),
        )
        .await?;
        for (n, client) in clients.iter().enumerate() {
            let email = format!("{client}@example.com");
            let has = |records: &[Got], text: &str| {
                records
                    .iter()
                    .any(|g| contains(g.value.as_deref().unwrap_or_default(), text))
            };
            assert!(
                !has(&stored, &email),
                "{topic}: {email} stored in the clear"
            );
            assert!(
                has(&revealed, &email),
                "{topic}: {email} not revealed to alice: {revealed:?}"
            );
            assert!(!has(&withheld, &email), "{topic}: {email} shown to bob");
            // Masked: alice reads the number, bob its last four digits only.
            let number = phone(n);
            let masked = format!(
                "{}{}",
                "*".repeat(number.len() - 4),
                &number[number.len() - 4..]
            );
            assert!(
                !has(&stored, &number),
                "{topic}: {number} stored in the clear"
            );
            assert!(has(&revealed, &number), "{topic}: {number} not revealed");
            assert!(
                !has(&withheld, &number) && has(&withheld, &masked),
                "{topic}: {number} not masked for bob: {withheld:?}"
            );
            // A one-way token: nobody reads the reference back.
            let plain = reference(client);
            for records in [&stored, &revealed, &withheld] {
                assert!(!has(records, &plain), "{topic}: {plain} readable");
            }
        }
        for records in [&stored, &revealed, &withheld] {
            assert!(
                records
                    .iter()
                    .all(|g| contains(g.value.as_deref().unwrap_or_default(), "tk1.")),
                "{topic}: a reference not tokenized: {records:?}"
            );
        }
        // JSON stays a JSON document of the same shape; the value is the envelope text.
        if topic == &json_topic {
            let doc: serde_json::Value =
                serde_json::from_slice(&stored[0].value.as_ref().unwrap()[5..])?;
            assert!(doc["email"].as_str().unwrap().starts_with("wg1."), "{doc}");
            // A reversible token: the same for the same id, read back by alice only.
            assert!(doc["id"].as_str().unwrap().starts_with("tkr1."), "{doc}");
            let ids = |records: &[Got]| -> Vec<String> {
                let mut ids: Vec<String> = records
                    .iter()
                    .map(|g| {
                        let doc: serde_json::Value =
                            serde_json::from_slice(&g.value.as_ref().unwrap()[5..]).unwrap();
                        doc["id"].as_str().unwrap().to_owned()
                    })
                    .collect();
                ids.sort();
                ids
            };
            assert_eq!(ids(&revealed), ["0", "1", "2", "3"]);
            assert!(ids(&withheld).iter().all(|id| id.starts_with("tkr1.")));
        }
    }
    proxy.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_naming_a_missing_or_unprotectable_field_is_refused_at_startup()
-> anyhow::Result<()> {
    let run = run_id();
    let dir = tempfile::tempdir()?;
    let keyring = keyring(dir.path())?;
    let registry = Registry::start().await?;
    let topic = format!("fp-bad-{run}");
    registry
        .register(&format!("{topic}-value"), json!({ "schema": CUSTOMER }))
        .await?;
    // A field selected by tag is checked too: an int tagged PII cannot hold ciphertext.
    let tagged = format!("fp-bad-tag-{run}");
    registry
        .register(
            &format!("{tagged}-value"),
            json!({ "schema": r#"{"type":"record","name":"Person","namespace":"example.pii","fields":[
                {"name":"name","type":"string","confluent:tags":["PII"]},
                {"name":"age","type":"int","confluent:tags":["PII"]}]}"# }),
        )
        .await?;
    let policy = format!(
        r#"topics:
  - id: bad-fields
    match: ["{topic}"]
    value: {{ schema: required }}
    fields:
      - {{ path: "$.card.cvv", action: encrypt, key: "local:pii" }}
      - {{ path: "$.amount", action: encrypt, key: "local:pii" }}
      - {{ path: "$.id", action: encrypt, key: "aws-kms:alias/payments" }}
  - id: bad-tags
    match: ["{tagged}"]
    value: {{ schema: required }}
    fields:
      - {{ tags: [PII], action: encrypt, key: "local:pii" }}
"#
    );
    // The admin endpoint may be up before the policy is checked; the process then stops.
    let err = match guarded(&policy, &registry.url, &keyring, dir.path()).await {
        Ok(proxy) => match tokio::time::timeout(Duration::from_secs(30), proxy.task).await?? {
            Ok(()) => anyhow::bail!("a policy naming a missing field started"),
            Err(e) => e.to_string(),
        },
        Err(e) => format!("{e:#}"),
    };
    for expected in [
        "field $.card.cvv",
        "has no field \"cvv\"; its fields are number",
        "field $.amount",
        "only string and bytes fields can be protected in place",
        "$.id names aws-kms:alias/payments, but the aws-kms backend is not configured",
        "rule bad-tags: subject fp-bad-tag-",
        "field example.pii.Person.age",
        "tagged PII) cannot be protected in place: $.age is of type int",
    ] {
        assert!(err.contains(expected), "{expected:?} missing from: {err}");
    }
    Ok(())
}

/// A TCP gate in front of the KMS emulator: closing it cuts every connection through it and
/// refuses new ones, as an unreachable KMS would; opening it lets them through again.
struct Gate {
    addr: std::net::SocketAddr,
    open: std::sync::Arc<std::sync::Mutex<Option<tokio_util::sync::CancellationToken>>>,
}

impl Gate {
    async fn start(target: std::net::SocketAddr) -> anyhow::Result<Gate> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let open = std::sync::Arc::new(std::sync::Mutex::new(Some(
            tokio_util::sync::CancellationToken::new(),
        )));
        let state = open.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let Some(epoch) = state.lock().expect("gate").clone() else {
                    continue; // closed: the connection is dropped at once
                };
                tokio::spawn(async move {
                    let Ok(mut upstream) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
                        () = epoch.cancelled() => {}
                    }
                });
            }
        });
        Ok(Gate { addr, open })
    }

    fn close(&self) {
        if let Some(epoch) = self.open.lock().expect("gate").take() {
            epoch.cancel();
        }
    }

    fn open(&self) {
        self.open
            .lock()
            .expect("gate")
            .get_or_insert_with(tokio_util::sync::CancellationToken::new);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_kms_outage_refuses_then_recovers_once_and_rotation_keeps_old_records_readable()
-> anyhow::Result<()> {
    let run = run_id();
    let dir = tempfile::tempdir()?;
    let moto = integration_tests::kms::Moto::start().await?;
    let (_, first_arn) = moto.create_key(&format!("alias/fp-{run}")).await?;
    let target: std::net::SocketAddr = moto.endpoint_url.trim_start_matches("http://").parse()?;
    let gate = Gate::start(target).await?;
    let registry = Registry::start().await?;
    let topic = format!("fp-aws-{run}");
    let id = registry
        .register(&format!("{topic}-value"), json!({ "schema": CUSTOMER }))
        .await?;
    let direct = broker::shared().endpoint().bootstrap;
    create_topics(&direct, &[(&topic, 1)]).await?;
    let policy = format!(
        r#"topics:
  - id: customers-aws
    match: ["{topic}"]
    value: {{ schema: required }}
    fields:
      - {{ path: "$.card.number", action: encrypt, key: "aws-kms:alias/fp-{run}", reveal_to: ["user:alice"] }}
"#
    );
    let mut aws = moto.kms_config();
    aws.endpoint_url = Some(format!("http://{}", gate.addr));
    aws.attempt_timeout_ms = Some(1_000);
    let kms = KmsConfig {
        aws: Some(aws),
        // One data key per batch, so every produce asks the KMS: data keys rotate.
        cache: wire_guard::kms::CacheConfig {
            max_uses: 1,
            ..Default::default()
        },
        retry: wire_guard::kms::RetryConfig {
            max_attempts: 2,
            initial_backoff_ms: 10,
            max_backoff_ms: 100,
            total_timeout_ms: 3_000,
        },
        ..KmsConfig::default()
    };
    let proxy = guarded_with(&policy, &registry.url, kms, dir.path()).await?;
    let bob = login("bob");
    let one = |n: usize| -> anyhow::Result<std::path::PathBuf> {
        payload_file(
            dir.path(),
            &topic,
            "snappy",
            true,
            &[Out::value(
                0,
                framed(id, &customer(&format!("c{n}"), CARD, EMAIL, PHONE)),
            )],
        )
    };
    let result = produce("java", &proxy.bootstrap(), &one(0)?, &args(&bob)).await?;
    assert_eq!(result["delivered"], 1, "{result}");

    // The KMS goes away: the idempotent producer's batch is refused with a retriable error and
    // nothing reaches the broker; it lands, once, when the KMS is back.
    gate.close();
    let file = one(1)?;
    let bootstrap = proxy.bootstrap();
    let mut extra = bob.clone();
    extra.extend(["--delivery-timeout-ms".to_owned(), "180000".to_owned()]);
    let pending =
        tokio::spawn(async move { produce("java", &bootstrap, &file, &args(&extra)).await });
    let mut refused = false;
    for _ in 0..600 {
        let metrics = proxy.metrics().await?;
        if metric(
            &metrics,
            &["wire_guard_records_total", "protection_refused"],
        ) >= 1.0
        {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(refused, "no produce was refused while the KMS was down");
    let during = read_topic(&direct, &topic, 1).await?;
    assert_eq!(
        during.len(),
        1,
        "something reached the broker during the outage: {during:?}"
    );
    gate.open();
    let result = pending.await??;
    assert_eq!(result["delivered"], 1, "{result}");
    let after = read_topic(&direct, &topic, 2).await?;
    assert_eq!(
        after.len(),
        2,
        "the retried batch landed {} times",
        after.len() - 1
    );
    for got in &after {
        assert!(
            !contains(got.value.as_deref().unwrap_or_default(), CARD),
            "{got:?}"
        );
    }

    // The alias moves to a new key (the KMS key rotated): new records use it, old ones still
    // decrypt, because each record names the key that wrapped its data key.
    let (second_key, second_arn) = moto.create_key(&format!("alias/fp-{run}-next")).await?;
    moto.admin_client()
        .await
        .update_alias()
        .alias_name(format!("alias/fp-{run}"))
        .target_key_id(&second_key)
        .send()
        .await?;
    let result = produce("java", &proxy.bootstrap(), &one(2)?, &args(&bob)).await?;
    assert_eq!(result["delivered"], 1, "{result}");
    let stored = read_topic(&direct, &topic, 3).await?;
    let key_of = |got: &Got| {
        let header = got.header("wire-guard.key").unwrap_or_default();
        (header.contains(&first_arn), header.contains(&second_arn))
    };
    assert_eq!(key_of(&stored[0]), (true, false), "{:?}", stored[0]);
    assert_eq!(key_of(&stored[2]), (false, true), "{:?}", stored[2]);
    let as_alice = read_topic_with(&proxy.bootstrap(), &topic, 3, &args(&login("alice"))).await?;
    assert_eq!(as_alice.len(), 3);
    for got in &as_alice {
        assert!(
            contains(got.value.as_deref().unwrap_or_default(), CARD),
            "not revealed: {got:?}"
        );
    }
    proxy.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_records_verify_and_tampered_ones_are_flagged_or_dropped() -> anyhow::Result<()> {
    let run = run_id();
    let dir = tempfile::tempdir()?;
    let keyring = keyring(dir.path())?;
    let registry = Registry::start().await?;
    let (flagged, dropped) = (format!("fp-sig-flag-{run}"), format!("fp-sig-drop-{run}"));
    let direct = broker::shared().endpoint().bootstrap;
    create_topics(&direct, &[(&flagged, 1), (&dropped, 1)]).await?;
    let policy = format!(
        r#"topics:
  - id: signed-flag
    match: ["{flagged}"]
    sign: {{ key: "local:tokens", algorithm: hmac-sha256, headers: [trace], on_failure: flag }}
  - id: signed-drop
    match: ["{dropped}"]
    sign: {{ key: "local:tokens", algorithm: ed25519, headers: [trace], on_failure: drop }}
"#
    );
    let proxy = guarded(&policy, &registry.url, &keyring, dir.path()).await?;
    for topic in [&flagged, &dropped] {
        let records: Vec<Out> = (0..2)
            .map(|i| {
                let mut out = Out::value(0, format!("payment {i}").into_bytes());
                out.key = Some(format!("k{i}").into_bytes());
                out.headers = vec![("trace".into(), Some(format!("t{i}").into_bytes()))];
                out
            })
            .collect();
        let file = payload_file(dir.path(), topic, "gzip", true, &records)?;
        let result = produce(
            "kafka-python",
            &proxy.bootstrap(),
            &file,
            &args(&login("bob")),
        )
        .await?;
        assert_eq!(result["delivered"], 2, "{topic}: {result}");
        let stored = read_topic(&direct, topic, 2).await?;
        assert!(
            stored.iter().all(|g| g.header("wire-guard.sig").is_some()),
            "{stored:?}"
        );
        // Around the proxy: the value changed, the signed header changed, no signature.
        let as_out = |g: &Got| Out {
            partition: 0,
            key: g.key.clone(),
            value: g.value.clone(),
            headers: g.headers.clone(),
        };
        let mut value_changed = as_out(&stored[0]);
        value_changed.value = Some(b"payment 9".to_vec());
        let mut header_changed = as_out(&stored[1]);
        for h in &mut header_changed.headers {
            if h.0 == "trace" {
                h.1 = Some(b"t9".to_vec());
            }
        }
        let unsigned = Out::value(0, b"payment 3".to_vec());
        let file = payload_file(
            dir.path(),
            topic,
            "none",
            false,
            &[value_changed, header_changed, unsigned],
        )?;
        let result = produce("confluent", &direct, &file, &[]).await?;
        assert_eq!(result["delivered"], 3, "{result}");
    }
    let read = read_topic_with(&proxy.bootstrap(), &flagged, 5, &args(&login("alice"))).await?;
    let verdicts: Vec<Option<String>> = read
        .iter()
        .map(|g| g.header("wire-guard.signature"))
        .collect();
    assert_eq!(
        verdicts,
        [
            None,
            None,
            Some("invalid".into()),
            Some("invalid".into()),
            Some("missing".into())
        ],
        "{read:?}"
    );
    let read = read_topic_with(&proxy.bootstrap(), &dropped, 2, &args(&login("alice"))).await?;
    let values: Vec<Vec<u8>> = read.iter().filter_map(|g| g.value.clone()).collect();
    assert_eq!(
        values,
        [b"payment 0".to_vec(), b"payment 1".to_vec()],
        "{read:?}"
    );
    let metrics = proxy.metrics().await?;
    assert!(
        metric(
            &metrics,
            &["wire_guard_fields_total", "action=\"sign\"", "invalid"]
        ) >= 4.0,
        "{metrics}"
    );
    proxy.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_record_keys_keep_partitioning_and_compaction_and_whole_values_reveal()
-> anyhow::Result<()> {
    let run = run_id();
    let dir = tempfile::tempdir()?;
    let keyring = keyring(dir.path())?;
    let registry = Registry::start().await?;
    let topic = format!("fp-compact-{run}");
    let direct = broker::shared().endpoint().bootstrap;
    // Small segments and an eager cleaner, so compaction runs within the test.
    create_topics_with(
        &direct,
        &[(&topic, 2)],
        &[
            ("cleanup.policy", "compact"),
            ("segment.ms", "100"),
            ("min.cleanable.dirty.ratio", "0.001"),
            ("min.compaction.lag.ms", "0"),
            ("delete.retention.ms", "100"),
        ],
    )
    .await?;
    let policy = format!(
        r#"topics:
  - id: accounts
    match: ["{topic}"]
    encrypt_key: {{ key: "local:pii", reveal_to: ["user:alice"] }}
    encrypt_value: {{ key: "local:pii", reveal_to: ["user:alice"] }}
"#
    );
    let proxy = guarded(&policy, &registry.url, &keyring, dir.path()).await?;
    let second = guarded(&policy, &registry.url, &keyring, dir.path()).await?;
    let record = |key: &str, value: &str| {
        let mut out = Out::value(0, value.as_bytes().to_vec());
        out.key = Some(key.as_bytes().to_vec());
        out
    };
    // The client partitions by the plaintext key; the proxy encrypts after it.
    let file = payload_file(
        dir.path(),
        &topic,
        "lz4",
        true,
        &[
            record("account-1", "balance 10"),
            record("account-2", "balance 20"),
        ],
    )?;
    let result = produce("java", &proxy.bootstrap(), &file, &args(&login("bob"))).await?;
    assert_eq!(result["delivered"], 2, "{result}");
    let file = payload_file(
        dir.path(),
        &topic,
        "lz4",
        true,
        &[record("account-1", "balance 11")],
    )?;
    let result = produce(
        "confluent",
        &second.bootstrap(),
        &file,
        &args(&login("bob")),
    )
    .await?;
    assert_eq!(result["delivered"], 1, "{result}");

    let stored = read_topic(&direct, &topic, 3).await?;
    assert_eq!(stored.len(), 3, "{stored:?}");
    for got in &stored {
        let (key, value) = (got.key.as_deref().unwrap(), got.value.as_deref().unwrap());
        assert!(!contains(key, "account"), "key in the clear: {got:?}");
        assert!(!contains(value, "balance"), "value in the clear: {got:?}");
    }
    let keys: std::collections::BTreeSet<_> = stored.iter().map(|g| g.key.clone()).collect();
    assert_eq!(
        keys.len(),
        2,
        "account-1 from two instances is one stored key: {stored:?}"
    );

    // A roll of the segment, then the cleaner keeps the latest record per encrypted key.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let file = payload_file(
        dir.path(),
        &topic,
        "none",
        false,
        &[record("account-3", "roll")],
    )?;
    let result = produce("confluent", &proxy.bootstrap(), &file, &args(&login("bob"))).await?;
    assert_eq!(result["delivered"], 1, "{result}");
    let mut compacted = Vec::new();
    for _ in 0..30 {
        compacted = read_topic_with(&proxy.bootstrap(), &topic, 3, &args(&login("alice"))).await?;
        if compacted.len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let mut seen: Vec<(String, String)> = compacted
        .iter()
        .map(|g| {
            (
                String::from_utf8_lossy(g.key.as_deref().unwrap_or_default()).into_owned(),
                String::from_utf8_lossy(g.value.as_deref().unwrap_or_default()).into_owned(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("account-1".to_owned(), "balance 11".to_owned()),
            ("account-2".to_owned(), "balance 20".to_owned()),
            ("account-3".to_owned(), "roll".to_owned()),
        ],
        "compacted and revealed to alice"
    );
    // Bob reads what the broker holds.
    let as_bob = read_topic_with(&proxy.bootstrap(), &topic, 3, &args(&login("bob"))).await?;
    assert!(
        as_bob
            .iter()
            .all(|g| !contains(g.value.as_deref().unwrap_or_default(), "balance"))
    );
    proxy.stop().await?;
    second.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_protection_grows_past_the_broker_limit_is_refused_as_too_large()
-> anyhow::Result<()> {
    let run = run_id();
    let dir = tempfile::tempdir()?;
    let keyring = keyring(dir.path())?;
    let registry = Registry::start().await?;
    let topic = format!("fp-large-{run}");
    let id = registry
        .register(&format!("{topic}-value"), json!({ "schema": CUSTOMER }))
        .await?;
    let direct = broker::shared().endpoint().bootstrap;
    create_topics(&direct, &[(&topic, 1)]).await?;
    let proxy = guarded(&policy(&topic), &registry.url, &keyring, dir.path()).await?;
    // About 1 KB each: librdkafka fills batches up to the broker's 1 MiB limit, and protection
    // adds a few hundred bytes per record. Kafka takes one batch per partition per request, so
    // the proxy cannot split it: the producer hears MSG_SIZE_TOO_LARGE and nothing is written.
    let filler = "f".repeat(900);
    let records: Vec<Out> = (0..3000)
        .map(|i| {
            Out::value(
                0,
                framed(id, &customer(&format!("{i}-{filler}"), CARD, EMAIL, PHONE)),
            )
        })
        .collect();
    let file = payload_file(dir.path(), &topic, "none", true, &records)?;
    let result = produce("confluent", &proxy.bootstrap(), &file, &args(&login("bob"))).await?;
    let failed = result["failed"].as_array().cloned().unwrap_or_default();
    assert!(
        !failed.is_empty(),
        "no batch was refused: {}",
        result["delivered"]
    );
    assert!(
        failed.iter().all(|f| f["error"]
            .as_str()
            .is_some_and(|e| e.contains("MSG_SIZE_TOO_LARGE"))),
        "{:?}",
        &failed[..1]
    );
    let stored = read_topic(
        &direct,
        &topic,
        result["delivered"].as_u64().unwrap_or(0) as usize,
    )
    .await?;
    assert_eq!(
        stored.len() as u64,
        result["delivered"].as_u64().unwrap_or(0)
    );
    for got in &stored {
        assert!(
            !contains(got.value.as_deref().unwrap_or_default(), CARD),
            "in the clear: {got:?}"
        );
    }
    let metrics = proxy.metrics().await?;
    assert!(
        metric(
            &metrics,
            &["wire_guard_records_total", "protection_refused"]
        ) >= 1.0,
        "{metrics}"
    );
    proxy.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_records_of_a_protected_topic_are_refused_not_dead_lettered_in_the_clear()
-> anyhow::Result<()> {
    let run = run_id();
    let dir = tempfile::tempdir()?;
    let keyring = keyring(dir.path())?;
    let registry = Registry::start().await?;
    let (protected, plain, dlq) = (
        format!("fp-dlq-customers-{run}"),
        format!("fp-dlq-orders-{run}"),
        format!("fp-dlq-{run}"),
    );
    let mut ids = Vec::new();
    for topic in [&protected, &plain] {
        ids.push(
            registry
                .register(&format!("{topic}-value"), json!({ "schema": CUSTOMER }))
                .await?,
        );
    }
    let direct = broker::shared().endpoint().bootstrap;
    create_topics(&direct, &[(&protected, 1), (&plain, 1), (&dlq, 1)]).await?;
    // As in the demo: one rule checks both topics and dead-letters what fails; another adds
    // the fields of one of them.
    let policy = format!(
        r#"topics:
  - id: checks
    match: ["{protected}", "{plain}"]
    value: {{ schema: required, on_invalid: {{ dead_letter: "{dlq}" }} }}
  - id: customers
    match: ["{protected}"]
    value: {{ schema: required }}
    fields:
      - {{ path: "$.card.number", action: encrypt, key: "local:pii", reveal_to: ["user:alice"] }}
"#
    );
    let policies = dir.path().join("policies");
    std::fs::create_dir_all(&policies)?;
    std::fs::write(policies.join("fields.yaml"), policy)?;
    let kafka = tokio::task::spawn_blocking(broker::shared).await?;
    let url = registry.url.clone();
    let proxy = InProcess::start(
        &kafka.endpoint_of(kafka.listeners.sasl_plaintext),
        move |c| {
            c.policies = Some(policies);
            c.schema_registry = Some(RegistryConfig::new(url));
            c.kms = Some(local_kms(&keyring));
            // On this SASL listener dead letters are written under wire-guard's own login.
            c.dead_letter_login = Some(integration_tests::proxy::dead_letter_login());
        },
    )
    .await?;
    // A record whose payload breaks off after the card number: invalid, and holding one.
    let mut broken = Vec::new();
    avro_string(&mut broken, "c-1");
    avro_string(&mut broken, CARD);
    for (topic, id) in [&protected, &plain].into_iter().zip(&ids) {
        let file = payload_file(
            dir.path(),
            topic,
            "none",
            true,
            &[Out::value(0, framed(*id, &broken))],
        )?;
        let result = produce("confluent", &proxy.bootstrap(), &file, &args(&login("bob"))).await?;
        if topic == &protected {
            let failed = result["failed"].as_array().cloned().unwrap_or_default();
            assert_eq!(failed.len(), 1, "{result}");
            assert!(
                failed[0]["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("INVALID_RECORD")),
                "{result}"
            );
        } else {
            assert_eq!(
                result["delivered"], 1,
                "dead-lettered, so delivered: {result}"
            );
        }
    }
    // Only the unprotected topic's record reached the dead-letter topic; nothing reached the
    // protected topic.
    let dead = read_topic(&direct, &dlq, 1).await?;
    assert_eq!(dead.len(), 1, "{dead:#?}");
    let origin = dead[0]
        .headers
        .iter()
        .find(|(k, _)| k == "wire-guard.topic")
        .and_then(|(_, v)| v.clone())
        .unwrap_or_default();
    assert_eq!(String::from_utf8_lossy(&origin), plain, "{dead:#?}");
    assert!(read_topic(&direct, &protected, 0).await?.is_empty());
    let metrics = proxy.metrics().await?;
    assert_eq!(
        metric(
            &metrics,
            &["wire_guard_records_total", &protected, "rejected"]
        ),
        1.0,
        "{metrics}"
    );
    proxy.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fields_selected_by_schema_tag_are_protected_in_every_format() -> anyhow::Result<()> {
    let run = run_id();
    let dir = tempfile::tempdir()?;
    let keyring = keyring(dir.path())?;
    let registry = Registry::start().await?;
    const SSN: &str = "078-05-1120";
    let topics: Vec<String> = ["avro", "json", "proto", "meta"]
        .iter()
        .map(|f| format!("fp-tag-{f}-{run}"))
        .collect();
    // Tags written on the fields: Avro and JSON Schema `confluent:tags`, Protobuf
    // `(confluent.field_meta).tags`.
    let avro = registry
        .register(
            &format!("{}-value", topics[0]),
            json!({ "schema": r#"{"type":"record","name":"Tagged","namespace":"example.pii","fields":[
                {"name":"id","type":"string"},
                {"name":"ssn","type":"string","confluent:tags":["PII"]},
                {"name":"card","type":{"type":"record","name":"TaggedCard","fields":[
                    {"name":"number","type":"string","confluent:tags":["PCI"]}]}}]}"# }),
        )
        .await?;
    let json_schema = registry
        .register(
            &format!("{}-value", topics[1]),
            json!({"schemaType": "JSON", "schema": r#"{"type":"object","properties":{
                "id":{"type":"string"},
                "ssn":{"type":"string","confluent:tags":["PII"]},
                "card":{"type":"object","properties":{"number":{"type":"string","confluent:tags":["PCI"]}}}}}"#}),
        )
        .await?;
    let proto = registry
        .register(
            &format!("{}-value", topics[2]),
            json!({"schemaType": "PROTOBUF", "schema": r#"syntax = "proto3";
package example.pii;
import "confluent/meta.proto";
message Tagged {
  string id = 1;
  string ssn = 2 [(confluent.field_meta).tags = "PII"];
  TaggedCard card = 3;
}
message TaggedCard { string number = 1 [(confluent.field_meta) = { tags: ["PCI"] }]; }
"#}),
        )
        .await?;
    // Tags in the registry's metadata, by field-name pattern, on a schema that has none.
    let meta = registry
        .register(
            &format!("{}-value", topics[3]),
            json!({
                "schema": r#"{"type":"record","name":"Plain","namespace":"example.pii","fields":[
                    {"name":"id","type":"string"},{"name":"ssn","type":"string"},
                    {"name":"card","type":{"type":"record","name":"PlainCard","fields":[{"name":"number","type":"string"}]}}]}"#,
                "metadata": {"tags": {"**.ssn": ["PII"], "example.pii.PlainCard.*": ["PCI"]}}
            }),
        )
        .await?;
    let direct = broker::shared().endpoint().bootstrap;
    let pairs: Vec<(&str, i32)> = topics.iter().map(|t| (t.as_str(), 1)).collect();
    create_topics(&direct, &pairs).await?;
    let listed: Vec<String> = topics.iter().map(|t| format!("\"{t}\"")).collect();
    let policy = format!(
        r#"topics:
  - id: tagged
    match: [{}]
    value: {{ schema: required }}
    fields:
      - {{ tags: [PII], action: encrypt, key: "local:pii", reveal_to: ["user:alice"] }}
      - {{ tags: [PCI], action: tokenize, key: "local:tokens" }}
"#,
        listed.join(", ")
    );
    let proxy = guarded(&policy, &registry.url, &keyring, dir.path()).await?;
    let clients = ["confluent", "java"];
    for (n, client) in clients.iter().enumerate() {
        let id = format!("c{n}");
        let mut avro_body = Vec::new();
        avro_string(&mut avro_body, &id);
        avro_string(&mut avro_body, SSN);
        avro_string(&mut avro_body, CARD);
        let json_body = json!({"id": id, "ssn": SSN, "card": {"number": CARD}}).to_string();
        let mut proto_body = vec![0u8, 0x0a, id.len() as u8];
        proto_body.extend_from_slice(id.as_bytes());
        proto_body.extend_from_slice(&[0x12, SSN.len() as u8]);
        proto_body.extend_from_slice(SSN.as_bytes());
        proto_body.extend_from_slice(&[0x1a, CARD.len() as u8 + 2, 0x0a, CARD.len() as u8]);
        proto_body.extend_from_slice(CARD.as_bytes());
        for (topic, value) in [
            (&topics[0], framed(avro, &avro_body)),
            (&topics[1], framed(json_schema, json_body.as_bytes())),
            (&topics[2], framed(proto, &proto_body)),
            (&topics[3], framed(meta, &avro_body)),
        ] {
            let file = payload_file(dir.path(), topic, "snappy", true, &[Out::value(0, value)])?;
            let result = produce(client, &proxy.bootstrap(), &file, &args(&login("bob"))).await?;
            assert_eq!(result["delivered"], 1, "{client} {topic}: {result}");
        }
    }
    for topic in &topics {
        let stored = read_topic(&direct, topic, clients.len()).await?;
        let alice = read_topic_with(
            &proxy.bootstrap(),
            topic,
            clients.len(),
            &args(&login("alice")),
        )
        .await?;
        let bob = read_topic_with(
            &proxy.bootstrap(),
            topic,
            clients.len(),
            &args(&login("bob")),
        )
        .await?;
        for got in &stored {
            let value = got.value.as_deref().unwrap_or_default();
            assert!(
                !contains(value, SSN) && !contains(value, CARD),
                "{topic}: stored in the clear: {got:?}"
            );
            assert!(
                contains(value, "wg1.") && contains(value, "tk1."),
                "{topic}: {got:?}"
            );
        }
        for got in &alice {
            let value = got.value.as_deref().unwrap_or_default();
            assert!(contains(value, SSN), "{topic}: not revealed: {got:?}");
            assert!(
                !contains(value, CARD) && contains(value, "tk1."),
                "{topic}: {got:?}"
            );
        }
        for got in &bob {
            let value = got.value.as_deref().unwrap_or_default();
            assert!(
                !contains(value, SSN) && !contains(value, CARD),
                "{topic}: shown to bob: {got:?}"
            );
        }
    }
    let metrics = proxy.metrics().await?;
    for field in ["$.ssn", "$.card.number"] {
        assert!(
            metric(
                &metrics,
                &[
                    "wire_guard_fields_total",
                    &format!("field=\"{field}\""),
                    "protected"
                ]
            ) >= 8.0,
            "{field}: {metrics}"
        );
    }
    proxy.stop().await?;
    Ok(())
}
