//! Data quality through wire-guard against Apache Kafka and the development registry: records
//! checked against the schema id they carry and the data-contract rules registered with it,
//! bad ones dead-lettered or refused, and every record accounted for exactly once.

use std::{collections::BTreeMap, path::Path, time::Duration};

use integration_tests::{
    broker,
    client::{self, JAVA},
    proxy::InProcess,
    records::{
        AVRO_PAYMENT, Got, JSON_PAYMENT, Out, Registry, avro_payment, create_topics, framed,
        payload_file, produce, read_topic, run_id,
    },
};
use serde_json::json;
use wire_guard::schema::RegistryConfig;

/// A topic, the values produced to it, and for each bad one (by index) the reasons it may be
/// dead-lettered with.
type Case<'a> = (&'a String, Vec<Vec<u8>>, BTreeMap<usize, &'a [&'a str]>);

/// wire-guard in front of the shared broker with `policy` (YAML) and the registry at `url`.
async fn guarded(policy: &str, url: &str, dir: &Path) -> anyhow::Result<InProcess> {
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies)?;
    std::fs::write(policies.join("data-quality.yaml"), policy)?;
    let kafka = tokio::task::spawn_blocking(broker::shared).await?;
    let url = url.to_owned();
    InProcess::start(&kafka.endpoint(), move |c| {
        c.policies = Some(policies);
        c.schema_registry = Some(RegistryConfig::new(url));
        c.dead_letter_timeout = Duration::from_secs(10);
    })
    .await
}

fn kafka_bootstrap() -> String {
    broker::shared().endpoint().bootstrap
}

fn with_trace(mut out: Out, i: usize) -> Out {
    out.headers = vec![
        ("trace".into(), Some(format!("first-{i}").into_bytes())),
        ("trace".into(), Some(format!("second-{i}").into_bytes())),
    ];
    out
}

fn metric(metrics: &str, prefix: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_kind_of_bad_record_is_dead_lettered_with_its_reason_and_good_ones_land_byte_for_byte()
-> anyhow::Result<()> {
    let run = run_id();
    let dir = tempfile::tempdir()?;
    let registry = Registry::start().await?;
    let (avro_t, json_t, proto_t, dlq) = (
        format!("dq-avro-{run}"),
        format!("dq-json-{run}"),
        format!("dq-proto-{run}"),
        format!("dq-dlq-{run}"),
    );
    let rule_set = json!({"domainRules": [{
        "name": "amount-positive", "kind": "CONDITION", "type": "CEL", "mode": "WRITE",
        "expr": "message.amount > 0", "onFailure": "DLQ", "params": {"dlq.topic": dlq},
    }]});
    let avro_id = registry
        .register(
            &format!("{avro_t}-value"),
            json!({"schema": AVRO_PAYMENT, "ruleSet": rule_set}),
        )
        .await?;
    let other_id = registry
        .register(
            &format!("other-{run}-value"),
            json!({"schema": r#"{"type":"record","name":"Other","fields":[{"name":"x","type":"long"}]}"#}),
        )
        .await?;
    let json_id = registry
        .register(
            &format!("{json_t}-value"),
            json!({"schema": JSON_PAYMENT, "schemaType": "JSON"}),
        )
        .await?;
    registry
        .register(
            &format!("money-{run}"),
            json!({"schemaType": "PROTOBUF", "schema": "syntax = \"proto3\";\npackage example.money;\nmessage Money { string currency = 1; int64 units = 2; }\n"}),
        )
        .await?;
    let proto_id = registry
        .register(
            &format!("{proto_t}-value"),
            json!({
                "schemaType": "PROTOBUF",
                "schema": "syntax = \"proto3\";\npackage example.payments;\nimport \"money.proto\";\nimport \"google/protobuf/timestamp.proto\";\nmessage Payment { string id = 1; example.money.Money amount = 2; google.protobuf.Timestamp at = 3; }\n",
                "references": [{"name": "money.proto", "subject": format!("money-{run}"), "version": 1}],
            }),
        )
        .await?;
    let bootstrap = kafka_bootstrap();
    create_topics(
        &bootstrap,
        &[(&avro_t, 1), (&json_t, 1), (&proto_t, 1), (&dlq, 1)],
    )
    .await?;
    let policy = format!(
        "topics:\n  - id: payments-quality\n    match: [\"dq-avro-{run}\", \"dq-json-{run}\", \"dq-proto-{run}\"]\n    value:\n      schema: required\n      subject: topic\n      on_invalid: {{ dead_letter: \"{dlq}\" }}\n"
    );
    let proxy = guarded(&policy, &registry.url, dir.path()).await?;

    // Protobuf Payment{id: "p-1", amount: Money{"EUR", 250}, at: Timestamp{seconds: 1700000000}}
    // behind the message-index array [0] (one zero byte).
    let mut proto = vec![
        0x00, 0x0a, 3, b'p', b'-', b'1', 0x12, 8, 0x0a, 3, b'E', b'U', b'R', 0x10, 0xfa, 0x01,
    ];
    proto.extend_from_slice(&[0x1a, 6, 0x08, 0x80, 0xe2, 0xcf, 0xaa, 0x06]);
    let mut proto_unknown = proto.clone();
    proto_unknown.extend_from_slice(&[0x48, 0x01]);

    // (topic, records, the reason each bad record must be dead-lettered with, by index)
    let cases: Vec<Case> = vec![
        (
            &avro_t,
            vec![
                framed(avro_id, &avro_payment("p-1", 10)),
                b"plain text, no framing".to_vec(),
                framed(999_999, &avro_payment("p-2", 10)),
                framed(other_id, &avro_payment("p-3", 10)),
                framed(avro_id, &[0x06, b'a']),
                framed(
                    avro_id,
                    &[avro_payment("p-4", 10), vec![0xff, 0xff]].concat(),
                ),
                framed(avro_id, &avro_payment("p-5", -5)),
                framed(avro_id, &avro_payment("p-6", 60)),
            ],
            BTreeMap::from([
                (1, &["no_magic_byte"][..]),
                (2, &["unknown_schema_id"][..]),
                (3, &["wrong_subject"][..]),
                (4, &["does_not_decode"][..]),
                (5, &["trailing_bytes"][..]),
                (6, &["condition_failed"][..]),
            ]),
        ),
        (
            &json_t,
            vec![
                framed(json_id, br#"{"id":"j-1","amount":5}"#),
                framed(json_id, br#"{"id":"j-2""#),
                framed(json_id, br#"{"id":"j-3"}"#),
                framed(json_id, br#"{"id":"j-4","amount":5} {}"#),
                framed(json_id, br#"{"id":"j-5","amount":7}"#),
            ],
            BTreeMap::from([
                (1, &["does_not_decode"][..]),
                (2, &["schema_violation"][..]),
                (3, &["does_not_decode", "trailing_bytes"][..]),
            ]),
        ),
        (
            &proto_t,
            vec![
                framed(proto_id, &proto),
                framed(proto_id, &[0x00, 0xff, 0xff, 0xff]),
                framed(proto_id, &proto_unknown),
                framed(proto_id, &proto),
            ],
            BTreeMap::from([(1, &["does_not_decode"][..]), (2, &["does_not_decode"][..])]),
        ),
    ];
    let mut dead_expected = 0;
    for (topic, values, bad) in &cases {
        let records: Vec<Out> = values
            .iter()
            .enumerate()
            .map(|(i, v)| with_trace(Out::value(0, v.clone()), i))
            .collect();
        let file = payload_file(dir.path(), topic, "none", true, &records)?;
        let result = produce("confluent", &proxy.bootstrap(), &file, &[]).await?;
        assert_eq!(result["failed"], json!([]), "{topic}: {result}");
        let good: Vec<&Vec<u8>> = values
            .iter()
            .enumerate()
            .filter(|(i, _)| !bad.contains_key(i))
            .map(|(_, v)| v)
            .collect();
        let landed = read_topic(&bootstrap, topic, good.len()).await?;
        let landed_values: Vec<&Vec<u8>> = landed.iter().filter_map(|g| g.value.as_ref()).collect();
        assert_eq!(
            landed_values, good,
            "{topic}: valid records land byte for byte, in order"
        );
        for (g, i) in landed
            .iter()
            .zip((0..values.len()).filter(|i| !bad.contains_key(i)))
        {
            assert_eq!(
                g.headers,
                with_trace(Out::value(0, vec![]), i).headers,
                "{topic}: headers kept"
            );
        }
        dead_expected += bad.len();
    }

    let dead = read_topic(&bootstrap, &dlq, dead_expected).await?;
    assert_eq!(dead.len(), dead_expected, "{dead:#?}");
    for (topic, values, bad) in &cases {
        let mine: Vec<&Got> = dead
            .iter()
            .filter(|g| g.header("wire-guard.topic").as_deref() == Some(topic.as_str()))
            .collect();
        assert_eq!(mine.len(), bad.len(), "{topic}: {mine:#?}");
        for (g, (i, reasons)) in mine.iter().zip(bad.iter()) {
            assert_eq!(
                g.value.as_ref(),
                Some(&values[*i]),
                "{topic} record {i}: value unchanged"
            );
            let reason = g.header("wire-guard.reason").unwrap_or_default();
            assert!(
                reasons.contains(&reason.as_str()),
                "{topic} record {i}: reason {reason}, want {reasons:?}"
            );
            let rule = g.header("wire-guard.rule").unwrap_or_default();
            let want_rule = if reason == "condition_failed" {
                "amount-positive"
            } else {
                "payments-quality"
            };
            assert_eq!(rule, want_rule, "{topic} record {i}");
            assert_eq!(g.header("wire-guard.partition").as_deref(), Some("0"));
            assert!(g.header("wire-guard.time").is_some());
            assert!(
                !g.header("wire-guard.message")
                    .unwrap_or_default()
                    .is_empty()
            );
            // The record's own headers come first, duplicates and all.
            assert_eq!(
                &g.headers[..2],
                &with_trace(Out::value(0, vec![]), *i).headers[..]
            );
        }
    }
    let metrics = proxy.metrics().await?;
    assert_eq!(
        metric(&metrics, "wire_guard_records_total{") as usize,
        cases.iter().map(|c| c.1.len()).sum::<usize>(),
        "{metrics}"
    );
    assert!(metrics.contains("outcome=\"dead_lettered\""), "{metrics}");
    assert!(
        // One registry fetch per schema id (five ids, one of them unknown), none per record.
        metric(&metrics, "wire_guard_schema_cache_total{result=\"miss\"}") <= 6.0
            && metric(&metrics, "wire_guard_schema_cache_total{result=\"miss\"}") >= 4.0,
        "{metrics}"
    );
    proxy.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reject_topic_refuses_the_partition_with_an_error_naming_record_and_rule()
-> anyhow::Result<()> {
    let run = run_id();
    let dir = tempfile::tempdir()?;
    let registry = Registry::start().await?;
    let topic = format!("dq-reject-{run}");
    let id = registry
        .register(&format!("{topic}-value"), json!({"schema": AVRO_PAYMENT}))
        .await?;
    let bootstrap = kafka_bootstrap();
    create_topics(&bootstrap, &[(&topic, 2)]).await?;
    let policy = format!(
        "topics:\n  - id: orders-strict\n    match: [\"{topic}\"]\n    value:\n      schema: required\n      on_invalid: reject\n"
    );
    let proxy = guarded(&policy, &registry.url, dir.path()).await?;
    // Partition 0 gets a bad record among good ones; partition 1 only good ones. Without
    // linger the confluent client sends each partition's records in one batch.
    let records = vec![
        Out::value(0, framed(id, &avro_payment("o-1", 1))),
        Out::value(0, framed(id, b"\x02")),
        Out::value(1, framed(id, &avro_payment("o-2", 2))),
        Out::value(1, framed(id, &avro_payment("o-3", 3))),
    ];
    let file = payload_file(dir.path(), &topic, "none", true, &records)?;
    let result = produce("confluent", &proxy.bootstrap(), &file, &[]).await?;
    let failed = result["failed"].as_array().cloned().unwrap_or_default();
    let failed_indexes: Vec<i64> = failed.iter().filter_map(|f| f["index"].as_i64()).collect();
    assert!(failed_indexes.contains(&1), "{result}");
    assert!(
        !failed_indexes.contains(&2) && !failed_indexes.contains(&3),
        "{result}"
    );
    let text = failed
        .iter()
        .map(|f| f["error"].to_string())
        .collect::<String>();
    assert!(
        text.contains("INVALID_RECORD") || text.contains("InvalidRecord") || text.contains("87"),
        "{result}"
    );
    let landed = read_topic(&bootstrap, &topic, 2 + (2 - failed.len().min(2))).await?;
    let on_1 = landed.iter().filter(|g| g.partition == 1).count();
    assert_eq!(on_1, 2, "the other partition is unaffected: {landed:#?}");
    assert!(
        landed
            .iter()
            .all(|g| g.value.as_deref() != Some(&framed(id, b"\x02")[..])),
        "the bad record never lands"
    );
    let metrics = proxy.metrics().await?;
    assert!(metric(&metrics, "wire_guard_records_total{") > 0.0);
    assert!(metrics.contains("outcome=\"rejected\""), "{metrics}");
    proxy.stop().await
}

/// N records over three partitions, every fifth one invalid: the topic holds exactly the
/// valid ones and the dead-letter topic exactly the invalid ones, each once, in order within
/// each partition.
async fn exact_accounting(
    client_name: &str,
    compression: &str,
    extra: &[&str],
) -> anyhow::Result<()> {
    exact_accounting_with(client_name, compression, extra, 300, false).await
}

async fn exact_accounting_with(
    client_name: &str,
    compression: &str,
    extra: &[&str],
    n: usize,
    cut_connections: bool,
) -> anyhow::Result<()> {
    let run = run_id();
    let dir = tempfile::tempdir()?;
    let registry = Registry::start().await?;
    let topic = format!(
        "dq-count-{}-{compression}-{run}",
        client_name.replace('-', "")
    );
    let dlq = format!("{topic}-dlq");
    let id = registry
        .register(&format!("{topic}-value"), json!({"schema": AVRO_PAYMENT}))
        .await?;
    let bootstrap = kafka_bootstrap();
    create_topics(&bootstrap, &[(&topic, 3), (&dlq, 3)]).await?;
    let policy = format!(
        "topics:\n  - id: counted\n    match: [\"{topic}\"]\n    value:\n      schema: required\n      on_invalid: {{ dead_letter: \"{dlq}\" }}\n"
    );
    let proxy = guarded(&policy, &registry.url, dir.path()).await?;
    let records: Vec<Out> = (0..n)
        .map(|i| {
            let value = if i % 5 == 3 {
                framed(id, format!("not avro {i}").as_bytes())
            } else {
                framed(id, &avro_payment(&format!("r-{i}"), i as i64 + 1))
            };
            let mut out = Out::value((i % 3) as i32, value);
            out.key = Some(format!("k-{i}").into_bytes());
            out
        })
        .collect();
    let file = payload_file(dir.path(), &topic, compression, true, &records)?;
    let chaos = cut_connections.then(|| {
        let port = proxy.broker_port().unwrap_or_default();
        tokio::spawn(async move {
            // Resets every client connection to the broker port, again and again, so the
            // producer retries batches that may or may not have been written.
            loop {
                tokio::time::sleep(Duration::from_millis(400)).await;
                let _ = tokio::process::Command::new("ss")
                    .args(["-K", "dst", "127.0.0.1", "dport", "=", &port.to_string()])
                    .output()
                    .await;
            }
        })
    });
    let result = produce(client_name, &proxy.bootstrap(), &file, extra).await;
    if let Some(chaos) = chaos {
        chaos.abort();
    }
    let result = result?;
    assert_eq!(
        result["failed"],
        json!([]),
        "{client_name} {compression}: {result}"
    );
    assert_eq!(result["delivered"], json!(n), "{result}");
    if cut_connections {
        // The cuts must really have happened (ss -K needs CAP_NET_ADMIN): the producer came
        // back on new connections, and wire-guard saw its connections end mid-stream.
        let metrics = proxy.metrics().await?;
        let accepted = metric(&metrics, "wire_guard_connections_total{");
        eprintln!("connections accepted while cutting: {accepted}");
        assert!(accepted >= 4.0, "connections were not cut: {metrics}");
    }
    let bad = n / 5;
    let good = read_topic(&bootstrap, &topic, n - bad).await?;
    let dead = read_topic(&bootstrap, &dlq, bad).await?;
    let keys = |got: &[Got], p: i32| -> Vec<Vec<u8>> {
        got.iter()
            .filter(|g| g.partition == p)
            .filter_map(|g| g.key.clone())
            .collect()
    };
    for p in 0..3 {
        let want_good: Vec<Vec<u8>> = (0..n)
            .filter(|i| i % 3 == p as usize && i % 5 != 3)
            .map(|i| format!("k-{i}").into_bytes())
            .collect();
        let want_dead: Vec<Vec<u8>> = (0..n)
            .filter(|i| i % 3 == p as usize && i % 5 == 3)
            .map(|i| format!("k-{i}").into_bytes())
            .collect();
        assert_eq!(
            keys(&good, p),
            want_good,
            "{client_name} {compression}: partition {p} of the topic"
        );
        assert_eq!(
            keys(&dead, p),
            want_dead,
            "{client_name} {compression}: partition {p} of the dead-letter topic"
        );
    }
    assert_eq!(good.len() + dead.len(), n, "nothing extra anywhere");
    proxy.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_accounting_with_every_codec_through_an_idempotent_librdkafka_producer()
-> anyhow::Result<()> {
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        exact_accounting("confluent", codec, &[]).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_accounting_holds_when_connections_are_cut_mid_stream() -> anyhow::Result<()> {
    exact_accounting_with("confluent", "lz4", &[], 6000, true).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_accounting_with_the_other_clients() -> anyhow::Result<()> {
    exact_accounting("kafka-python", "gzip", &[]).await?;
    exact_accounting("aiokafka", "lz4", &[]).await?;
    exact_accounting(JAVA, "zstd", &[]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transactional_batch_with_a_bad_record_is_refused_whole_and_the_transaction_aborts()
-> anyhow::Result<()> {
    let run = run_id();
    let dir = tempfile::tempdir()?;
    let registry = Registry::start().await?;
    let topic = format!("dq-txn-{run}");
    let dlq = format!("{topic}-dlq");
    let id = registry
        .register(&format!("{topic}-value"), json!({"schema": AVRO_PAYMENT}))
        .await?;
    let bootstrap = kafka_bootstrap();
    create_topics(&bootstrap, &[(&topic, 1), (&dlq, 1)]).await?;
    let policy = format!(
        "topics:\n  - id: txn\n    match: [\"{topic}\"]\n    value:\n      schema: required\n      on_invalid: {{ dead_letter: \"{dlq}\" }}\n"
    );
    let proxy = guarded(&policy, &registry.url, dir.path()).await?;
    let good: Vec<Out> = (0..3)
        .map(|i| Out::value(0, framed(id, &avro_payment(&format!("t-{i}"), 1))))
        .collect();
    let mut bad = good.clone();
    bad[1] = Out::value(0, framed(id, b"broken"));
    for client_name in ["confluent", JAVA] {
        let txn = format!("{topic}-{client_name}");
        let ok = payload_file(dir.path(), &topic, "none", true, &good)?;
        let ok = client::scenario(
            client_name,
            &proxy.bootstrap(),
            "produce-transaction",
            &[
                "--payloads",
                &ok.to_string_lossy(),
                "--transactional-id",
                &format!("{txn}-1"),
                "--commit",
            ],
        )
        .await?;
        assert_eq!(ok["committed"], true, "{client_name}: {ok}");
        let broken = payload_file(dir.path(), &topic, "none", true, &bad)?;
        let broken = client::scenario(
            client_name,
            &proxy.bootstrap(),
            "produce-transaction",
            &[
                "--payloads",
                &broken.to_string_lossy(),
                "--transactional-id",
                &format!("{txn}-2"),
                "--commit",
            ],
        )
        .await?;
        assert_eq!(broken["committed"], false, "{client_name}: {broken}");
        assert_eq!(broken["aborted"], true, "{client_name}: {broken}");
    }
    // read_committed: only the two committed transactions' records.
    let landed = read_topic(&bootstrap, &topic, 6).await?;
    assert_eq!(landed.len(), 6, "{landed:#?}");
    let dead = read_topic(&bootstrap, &dlq, 0).await?;
    assert!(
        dead.is_empty(),
        "a transaction is never split into the dead-letter topic: {dead:#?}"
    );
    proxy.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_registry_outage_cached_ids_keep_validating_and_unknown_ids_fail_closed_or_open()
-> anyhow::Result<()> {
    let run = run_id();
    let dir = tempfile::tempdir()?;
    let registry = Registry::start().await?;
    let (closed, open) = (format!("dq-closed-{run}"), format!("dq-open-{run}"));
    let dlq = format!("dq-outage-dlq-{run}");
    let closed_id = registry
        .register(&format!("{closed}-value"), json!({"schema": AVRO_PAYMENT}))
        .await?;
    let open_id = registry
        .register(&format!("{open}-value"), json!({"schema": AVRO_PAYMENT}))
        .await?;
    let later = registry
        .register(
            &format!("{closed}-value"),
            json!({"schema": AVRO_PAYMENT.replace("Payment", "Payment2")}),
        )
        .await?;
    let later_open = registry
        .register(
            &format!("{open}-value"),
            json!({"schema": AVRO_PAYMENT.replace("Payment", "Payment3")}),
        )
        .await?;
    let bootstrap = kafka_bootstrap();
    create_topics(&bootstrap, &[(&closed, 1), (&open, 1), (&dlq, 1)]).await?;
    let policy = format!(
        "topics:\n  - id: closed\n    match: [\"{closed}\"]\n    value:\n      schema: required\n      subjects: [\"{closed}-value\"]\n      on_invalid: {{ dead_letter: \"{dlq}\" }}\n      registry_unavailable: fail_closed\n  - id: open\n    match: [\"{open}\"]\n    value:\n      schema: required\n      subjects: [\"{open}-value\"]\n      on_invalid: {{ dead_letter: \"{dlq}\" }}\n      registry_unavailable: fail_open\n"
    );
    let proxy = guarded(&policy, &registry.url, dir.path()).await?;
    let send = |topic: &str, id: u32, label: &str| {
        let records = vec![Out::value(0, framed(id, &avro_payment(label, 1)))];
        payload_file(dir.path(), topic, "none", true, &records)
    };
    // Warm the cache, then take the registry away.
    for (t, id) in [(&closed, closed_id), (&open, open_id)] {
        let r = produce("confluent", &proxy.bootstrap(), &send(t, id, "warm")?, &[]).await?;
        assert_eq!(r["failed"], json!([]), "{r}");
    }
    registry.stop();
    for (t, id) in [(&closed, closed_id), (&open, open_id)] {
        let r = produce(
            "confluent",
            &proxy.bootstrap(),
            &send(t, id, "cached")?,
            &[],
        )
        .await?;
        assert_eq!(r["failed"], json!([]), "a cached id keeps validating: {r}");
    }
    // An id the proxy has never seen: fail_open lets it through, fail_closed asks the
    // producer to retry until its delivery timeout, and nothing is written.
    let r = produce(
        "confluent",
        &proxy.bootstrap(),
        &send(&open, later_open, "unknown")?,
        &[],
    )
    .await?;
    assert_eq!(r["failed"], json!([]), "{r}");
    let r = produce(
        "confluent",
        &proxy.bootstrap(),
        &send(&closed, later, "unknown")?,
        &["--delivery-timeout-ms", "5000"],
    )
    .await?;
    assert_eq!(r["failed"].as_array().map(Vec::len), Some(1), "{r}");
    let closed_got = read_topic(&bootstrap, &closed, 2).await?;
    assert_eq!(closed_got.len(), 2, "{closed_got:#?}");
    let open_got = read_topic(&bootstrap, &open, 3).await?;
    assert_eq!(open_got.len(), 3, "{open_got:#?}");
    assert!(read_topic(&bootstrap, &dlq, 0).await?.is_empty());
    let metrics = proxy.metrics().await?;
    assert!(metrics.contains("outcome=\"retried\""), "{metrics}");
    proxy.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_with_mistakes_is_refused_at_startup_with_every_error_listed() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    std::fs::write(
        dir.path().join("bad.yaml"),
        "topics:\n  - id: a\n    match: [\"pay*ments\"]\n    value: { schema: required, on_invalid: explode }\n  - id: a\n    match: []\n",
    )?;
    let kafka = tokio::task::spawn_blocking(broker::shared).await?;
    let mut config = wire_guard::Config::new(vec![kafka.endpoint().bootstrap], "127.0.0.1");
    config.policies = Some(dir.path().to_path_buf());
    config.schema_registry = Some(RegistryConfig::new("http://127.0.0.1:9"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let err = wire_guard::run(config, listener, tokio_util::sync::CancellationToken::new())
        .await
        .expect_err("a broken policy must stop startup");
    let text = err.to_string();
    for needle in ["bad.yaml", "pay*ments", "explode", "duplicate", "match"] {
        assert!(text.contains(needle), "missing {needle:?} in: {text}");
    }
    // And a policy with topics: rules but no registry to check against is refused too.
    std::fs::write(
        dir.path().join("bad.yaml"),
        "topics:\n  - id: a\n    match: [\"payments\"]\n    value: { schema: required }\n",
    )?;
    let mut config = wire_guard::Config::new(vec![kafka.endpoint().bootstrap], "127.0.0.1");
    config.policies = Some(dir.path().to_path_buf());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let err = wire_guard::run(config, listener, tokio_util::sync::CancellationToken::new())
        .await
        .expect_err("topics: rules need a registry");
    assert!(err.to_string().contains("schema-registry-url"), "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_producers_of_1mib_governed_batches_stay_within_the_buffer_budget()
-> anyhow::Result<()> {
    use bytes::Bytes;
    use integration_tests::{proxy::Process, raw::RawClient};
    use kafka_protocol::{
        messages::{
            ApiKey, ProduceRequest, ProduceResponse, TopicName,
            produce_request::{PartitionProduceData, TopicProduceData},
        },
        protocol::StrBytes,
    };
    use wire_guard::records::{Builder, OwnedRecord};

    const BUDGET: u64 = 16 * 1024 * 1024;
    const PRODUCERS: usize = 100;
    let run = run_id();
    let dir = tempfile::tempdir()?;
    let registry = Registry::start().await?;
    let topic = format!("dq-memory-{run}");
    let id = registry
        .register(&format!("{topic}-value"), json!({"schema": AVRO_PAYMENT}))
        .await?;
    let kafka = tokio::task::spawn_blocking(broker::shared).await?;
    create_topics(&kafka.endpoint().bootstrap, &[(&topic, 4)]).await?;
    let policies = dir.path().join("policies");
    std::fs::create_dir_all(&policies)?;
    std::fs::write(
        policies.join("memory.yaml"),
        format!(
            "topics:\n  - id: memory\n    match: [\"{topic}\"]\n    value: {{ schema: required }}\n"
        ),
    )?;
    let proxy = Process::start(
        &kafka.endpoint(),
        &[
            "--policies",
            &policies.to_string_lossy(),
            "--schema-registry-url",
            &registry.url,
            "--buffer-budget-bytes",
            &BUDGET.to_string(),
        ],
        dir.path(),
    )
    .await?;
    let baseline = proxy.rss_bytes()?;

    // About 1 MiB of valid Avro records, just under the broker's default message.max.bytes.
    let mut builder = Builder::new(1_700_000_000_000);
    let filler = "x".repeat(1000);
    for i in 0..1000 {
        builder.push(&OwnedRecord {
            timestamp: 1_700_000_000_000 + i,
            key: None,
            value: Some(framed(id, &avro_payment(&filler, i))),
            headers: Vec::new(),
        });
    }
    let batch = Bytes::from(builder.finish(-1, -1, -1));
    assert!(batch.len() > 1_000_000, "{}", batch.len());

    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(baseline));
    let pid = proxy.pid();
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status"))
                    && let Some(kib) = status
                        .lines()
                        .find_map(|l| l.strip_prefix("VmRSS:"))
                        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                {
                    peak.fetch_max(kib * 1024, std::sync::atomic::Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let mut producers = tokio::task::JoinSet::new();
    for p in 0..PRODUCERS {
        let (addr, topic, batch) = (proxy.addr, topic.clone(), batch.clone());
        producers.spawn(async move {
            let mut raw = RawClient::connect(addr).await?;
            for _ in 0..2 {
                let mut data = PartitionProduceData::default();
                data.index = (p % 4) as i32;
                data.records = Some(batch.clone());
                let mut t = TopicProduceData::default();
                t.name = TopicName(StrBytes::from_string(topic.clone()));
                t.partition_data = vec![data];
                let mut request = ProduceRequest::default();
                request.transactional_id = None;
                request.acks = 1;
                request.timeout_ms = 60_000;
                request.topic_data = vec![t];
                let response: ProduceResponse = raw.call(ApiKey::Produce, 9, &request).await?;
                let code = response.responses[0].partition_responses[0].error_code;
                anyhow::ensure!(code == 0, "producer {p}: error {code}");
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = producers.join_next().await {
        done??;
    }
    sampler.abort();
    let peak = peak.load(std::sync::atomic::Ordering::Relaxed);
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    eprintln!(
        "wire-guard RSS: baseline {:.1} MiB, peak {:.1} MiB with {PRODUCERS} producers of {:.2} MiB batches, budget {:.0} MiB",
        mib(baseline),
        mib(peak),
        mib(batch.len() as u64),
        mib(BUDGET)
    );
    // 200 MiB of requests passed through; what stays resident is the budget, the per-connection
    // socket buffers of 200 connections, and the process's own baseline.
    let allowance = 48 * 1024 * 1024;
    assert!(
        peak <= baseline + BUDGET + allowance,
        "peak RSS {:.1} MiB exceeds baseline {:.1} + budget {:.0} + {:.0} MiB",
        mib(peak),
        mib(baseline),
        mib(BUDGET),
        mib(allowance)
    );
    let metrics = proxy.metrics().await?;
    assert_eq!(
        metric(&metrics, "wire_guard_records_total{") as usize,
        PRODUCERS * 2 * 1000,
        "every record was checked"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_sasl_cluster_dead_letters_use_wire_guards_own_login_and_name_the_producer()
-> anyhow::Result<()> {
    let run = run_id();
    let dir = tempfile::tempdir()?;
    let registry = Registry::start().await?;
    let topic = format!("dq-sasl-{run}");
    let dlq = format!("{topic}-dlq");
    let id = registry
        .register(&format!("{topic}-value"), json!({"schema": AVRO_PAYMENT}))
        .await?;
    let kafka = tokio::task::spawn_blocking(broker::shared).await?;
    create_topics(&kafka.endpoint().bootstrap, &[(&topic, 1), (&dlq, 1)]).await?;
    let policies = dir.path().join("policies");
    std::fs::create_dir_all(&policies)?;
    std::fs::write(
        policies.join("sasl.yaml"),
        format!(
            "topics:\n  - id: sasl-values\n    match: [\"{topic}\"]\n    principals: [\"user:alice\"]\n    value: {{ schema: required, on_invalid: {{ dead_letter: \"{dlq}\" }} }}\n"
        ),
    )?;
    let url = registry.url.clone();
    let proxy = InProcess::start(
        &kafka.endpoint_of(kafka.listeners.sasl_plaintext),
        move |c| {
            c.policies = Some(policies);
            c.schema_registry = Some(RegistryConfig::new(url));
            c.dead_letter_login = Some(integration_tests::proxy::dead_letter_login());
        },
    )
    .await?;
    let records = vec![
        Out::value(0, framed(id, &avro_payment("s-1", 1))),
        Out::value(0, b"unframed".to_vec()),
    ];
    let file = payload_file(dir.path(), &topic, "none", true, &records)?;
    let (user, password) = broker::USERS[0];
    let result = produce(
        "confluent",
        &proxy.bootstrap(),
        &file,
        &[
            "--security-protocol",
            "SASL_PLAINTEXT",
            "--sasl-mechanism",
            "SCRAM-SHA-256",
            "--sasl-username",
            user,
            "--sasl-password",
            password,
        ],
    )
    .await?;
    assert_eq!(result["failed"], json!([]), "{result}");
    let bootstrap = kafka.endpoint().bootstrap;
    assert_eq!(read_topic(&bootstrap, &topic, 1).await?.len(), 1);
    let dead = read_topic(&bootstrap, &dlq, 1).await?;
    assert_eq!(dead.len(), 1, "{dead:#?}");
    assert_eq!(
        dead[0].header("wire-guard.principal").as_deref(),
        Some("user:alice")
    );
    assert_eq!(
        dead[0].header("wire-guard.reason").as_deref(),
        Some("no_magic_byte")
    );
    proxy.stop().await
}
