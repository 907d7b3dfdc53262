//! registry-proxy against the development registry and a real OIDC provider
//! (`oauth2-mock-server`), driven by confluent-kafka's `SchemaRegistryClient` with OAUTHBEARER,
//! and by its stock serializers producing through wire-guard to Apache Kafka.
//!
//! The endpoint table and the bypass corpus run in process with locally generated keys, in
//! `registry-proxy/tests/proxy.rs`; this binary covers what needs the real parts.

use std::{path::PathBuf, process::Stdio, time::Duration};

use integration_tests::{
    broker,
    oidc::{OidcClient, OidcProvider},
    proxy::InProcess,
    stack::{init_test_logging, python_bin, repo_root},
};
use registry_proxy::{Config, audit::AuditSink, config::OidcConfig};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const AUDIENCE: &str = "registry-proxy";

const PAYMENTS: OidcClient = OidcClient {
    id: "payments-svc",
    secret: "payments-secret",
    sub: "payments-svc",
    groups: &["payments"],
};
/// wire-guard's own identity, for reading the schemas it checks records against.
const WIRE_GUARD: OidcClient = OidcClient {
    id: "wire-guard",
    secret: "wire-guard-secret",
    sub: "wire-guard",
    groups: &["platform-readers"],
};
const ANALYTICS: OidcClient = OidcClient {
    id: "analytics-svc",
    secret: "analytics-secret",
    sub: "analytics-svc",
    groups: &["analytics"],
};

/// The development registry and registry-proxy (with the example policy from `policies/`).
struct Proxied {
    url: String,
    audit: PathBuf,
    _dir: tempfile::TempDir,
    _shutdown: tokio_util::sync::DropGuard,
}

async fn start_proxy(provider: &OidcProvider) -> anyhow::Result<Proxied> {
    let shutdown = CancellationToken::new();
    let registry = TcpListener::bind("127.0.0.1:0").await?;
    let upstream = format!("http://{}", registry.local_addr()?);
    tokio::spawn(dev_registry::run(
        registry,
        shutdown.clone().cancelled_owned(),
    ));
    let dir = tempfile::tempdir()?;
    let audit = dir.path().join("audit.log");
    let config = Config {
        upstream,
        policies: repo_root().join("policies"),
        oidc: OidcConfig {
            issuer: provider.issuer.clone(),
            audience: vec![AUDIENCE.into()],
            // Every client process mints tokens of its own, all from 127.0.0.1.
            verify_rate_per_ip: 1000,
            verify_burst: 1000,
            ..OidcConfig::default()
        },
        audit: AuditSink::File(audit.clone()),
        ..Config::default()
    };
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let stop = shutdown.clone();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<String>();
    tokio::spawn(async move {
        if let Err(e) = registry_proxy::run(config, listener, stop).await {
            let _ = ready_tx.send(e.to_string());
        }
    });
    // Ready once it authenticates: discovery and the JWKS fetch happen before it serves.
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut ready_rx = ready_rx;
    loop {
        if let Ok(failure) = ready_rx.try_recv() {
            anyhow::bail!("registry-proxy failed to start: {failure}");
        }
        if let Ok(r) = http.get(format!("{url}/subjects")).send().await
            && r.status() == 401
        {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "registry-proxy not serving"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(Proxied {
        url,
        audit,
        _dir: dir,
        _shutdown: shutdown.drop_guard(),
    })
}

async fn sr_client(
    proxy: &Proxied,
    provider: &OidcProvider,
    client: &OidcClient,
    subject: &str,
    scenario: &str,
) -> anyhow::Result<Value> {
    let output = tokio::process::Command::new(python_bin())
        .arg(repo_root().join("tests/clients/schema_registry_client.py"))
        .args([
            "--url",
            &proxy.url,
            "--token-endpoint",
            &provider.token_endpoint(),
        ])
        .args(["--client-id", client.id, "--client-secret", client.secret])
        .args(["--subject", subject, "--scenario", scenario])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), output).await??;
    let stdout = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(
        output.status.success(),
        "{scenario} failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    let last = stdout.lines().last().unwrap_or_default();
    Ok(serde_json::from_str(last)?)
}

fn audit_records(path: &PathBuf) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[tokio::test]
async fn schema_registry_client_registers_looks_up_and_reads_through_the_proxy()
-> anyhow::Result<()> {
    init_test_logging();
    let provider = OidcProvider::start(AUDIENCE, &[PAYMENTS, ANALYTICS]).await?;
    let proxy = start_proxy(&provider).await?;

    let allowed = sr_client(
        &proxy,
        &provider,
        &PAYMENTS,
        "payments.card-value",
        "register",
    )
    .await?;
    let id = allowed["registered_id"].as_i64().expect("an id");
    assert_eq!(allowed["lookup_id"].as_i64(), Some(id), "{allowed}");
    assert_eq!(allowed["lookup_version"], 1);
    assert_eq!(allowed["latest_version"], 1);
    assert_eq!(allowed["fetched_schema"]["name"], "Payment", "{allowed}");
    assert_eq!(
        allowed["subjects"],
        serde_json::json!(["payments.card-value"])
    );

    let refused = sr_client(
        &proxy,
        &provider,
        &ANALYTICS,
        "payments.card-value",
        "forbidden",
    )
    .await?;
    assert_eq!(refused["http_status_code"], 403, "{refused}");
    assert_eq!(refused["error_code"], 40301, "{refused}");
    let said = refused["str"].as_str().unwrap_or_default();
    assert!(
        said.contains(
            "User analytics-svc is denied operation write on subject payments.card-value"
        ),
        "the client's error says what was refused: {said}"
    );

    // The audit writer is asynchronous: wait (bounded) for the refusal's record.
    let mut records = Vec::new();
    for _ in 0..200 {
        records = audit_records(&proxy.audit);
        if records
            .iter()
            .any(|r| r["principal"] == "user:analytics-svc")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let register = records
        .iter()
        .find(|r| r["endpoint"] == "POST /subjects/{subject}/versions" && r["decision"] == "permit")
        .expect("the registration is audited");
    assert_eq!(register["principal"], "user:payments-svc");
    assert_eq!(register["client_id"], "payments-svc");
    assert_eq!(register["rule_id"], "payments-owners");
    assert_eq!(
        register["subjects"],
        serde_json::json!(["payments.card-value"])
    );
    let by_id = records
        .iter()
        .find(|r| r["endpoint"] == "GET /schemas/ids/{id}")
        .expect("the read by id is audited");
    assert_eq!(by_id["decision"], "permit");
    let denied = records
        .iter()
        .find(|r| r["principal"] == "user:analytics-svc" && r["operation"] == "write")
        .expect("the refusal is audited");
    assert_eq!(denied["decision"], "deny");
    assert_eq!(denied["status"], 403);
    assert!(
        denied["reason"]
            .as_str()
            .is_some_and(|r| r.contains("no rule grants write")),
        "{denied}"
    );
    Ok(())
}

#[tokio::test]
async fn provider_tokens_authenticate_and_nothing_else_does() -> anyhow::Result<()> {
    init_test_logging();
    let provider = OidcProvider::start(AUDIENCE, &[PAYMENTS]).await?;
    let proxy = start_proxy(&provider).await?;
    let http = reqwest::Client::new();

    let token = provider.token(&PAYMENTS).await?;
    let ok = http
        .get(format!("{}/subjects", proxy.url))
        .bearer_auth(&token)
        .send()
        .await?;
    assert_eq!(ok.status(), 200);

    let missing = http.get(format!("{}/subjects", proxy.url)).send().await?;
    assert_eq!(missing.status(), 401);
    let body: Value = missing.json().await?;
    assert_eq!(body["error_code"], 40101, "{body}");

    let wrong_secret = OidcClient {
        secret: "guess",
        ..PAYMENTS
    };
    assert!(
        provider.token(&wrong_secret).await.is_err(),
        "the provider refuses unknown credentials"
    );

    // A token from another provider instance (other keys, other issuer) is refused.
    let other = OidcProvider::start(AUDIENCE, &[PAYMENTS]).await?;
    let foreign = other.token(&PAYMENTS).await?;
    let refused = http
        .get(format!("{}/subjects", proxy.url))
        .bearer_auth(&foreign)
        .send()
        .await?;
    assert_eq!(refused.status(), 401);
    Ok(())
}

/// One run of `tests/clients/serializer_scenarios.py`.
struct Serde {
    client: &'static OidcClient,
    format: &'static str,
    topic: String,
    conf: Option<&'static str>,
    preregister: bool,
    scenario: &'static str,
}

async fn run_serde(
    proxy_url: String,
    token_endpoint: String,
    bootstrap: String,
    run: Serde,
) -> anyhow::Result<Value> {
    let mut cmd = tokio::process::Command::new(python_bin());
    cmd.arg(repo_root().join("tests/clients/serializer_scenarios.py"))
        .args([
            "--registry-url",
            &proxy_url,
            "--token-endpoint",
            &token_endpoint,
        ])
        .args([
            "--client-id",
            run.client.id,
            "--client-secret",
            run.client.secret,
        ])
        .args(["--bootstrap", &bootstrap, "--topic", &run.topic])
        .args(["--format", run.format, "--scenario", run.scenario]);
    if let Some(conf) = run.conf {
        cmd.args(["--serializer-conf", conf]);
    }
    if run.preregister {
        cmd.arg("--preregister");
    }
    let output = cmd.stdin(Stdio::null()).kill_on_drop(true).output();
    let output = tokio::time::timeout(Duration::from_secs(180), output).await??;
    let stdout = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(
        output.status.success(),
        "{} {} {:?} failed: {}\n{stdout}",
        run.format,
        run.scenario,
        run.conf,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(serde_json::from_str(
        stdout.lines().last().unwrap_or_default(),
    )?)
}

#[tokio::test]
async fn stock_serializers_round_trip_through_registry_proxy_and_wire_guard() -> anyhow::Result<()>
{
    init_test_logging();
    let provider = OidcProvider::start(AUDIENCE, &[PAYMENTS, ANALYTICS, WIRE_GUARD]).await?;
    let proxy = start_proxy(&provider).await?;
    let kafka = tokio::task::spawn_blocking(broker::shared).await?;
    // wire-guard checks every value against its schema, read through registry-proxy with its
    // own client credentials; a value the stock serializers write that it refused would fail
    // the round trip.
    let policies = tempfile::tempdir()?;
    std::fs::write(
        policies.path().join("serde.yaml"),
        "topics:\n  - id: serde-values\n    match: [\"payments.serde-*\"]\n    value: { schema: required, subject: topic, on_invalid: reject }\n",
    )?;
    let mut registry = wire_guard::schema::RegistryConfig::new(proxy.url.clone());
    registry.credentials = Some(wire_guard::schema::ClientCredentials {
        issuer: provider.issuer.clone(),
        client_id: WIRE_GUARD.id.into(),
        client_secret: WIRE_GUARD.secret.into(),
        scopes: Vec::new(),
    });
    let policy_dir = policies.path().to_path_buf();
    let wire = InProcess::start(&kafka.endpoint(), move |c| {
        c.policies = Some(policy_dir);
        c.schema_registry = Some(registry);
    })
    .await?;
    let run_id = &uuid_like();

    // scripts/install-stack installs every serializer's dependencies and checks they import.
    let formats = ["avro", "json", "protobuf"];
    let topic = |format: &str, label: &str| format!("payments.serde-{format}-{label}-{run_id}");
    let mut runs = Vec::new();
    for format in &formats {
        let format: &'static str = format;
        // Default settings: the associated name strategy, auto-registration.
        runs.push(Serde {
            client: &PAYMENTS,
            format,
            topic: topic(format, "defaults"),
            conf: None,
            preregister: false,
            scenario: "roundtrip",
        });
        // A serializer that must not register, writing with the subject's latest version.
        runs.push(Serde {
            client: &PAYMENTS,
            format,
            topic: topic(format, "latest"),
            conf: Some(r#"{"auto.register.schemas": false, "use.latest.version": true}"#),
            preregister: true,
            scenario: "roundtrip",
        });
        // A serializer that must not register, looking its schema up.
        runs.push(Serde {
            client: &PAYMENTS,
            format,
            topic: topic(format, "lookup"),
            conf: Some(r#"{"auto.register.schemas": false}"#),
            preregister: true,
            scenario: "roundtrip",
        });
        // A principal that may read but not write: refused when the serializer registers.
        runs.push(Serde {
            client: &ANALYTICS,
            format,
            topic: topic(format, "refused"),
            conf: None,
            preregister: false,
            scenario: "refused",
        });
    }
    let mut set = tokio::task::JoinSet::new();
    for run in runs {
        let (url, token, bootstrap) = (
            proxy.url.clone(),
            provider.token_endpoint(),
            wire.bootstrap(),
        );
        let label = format!("{} {} {:?}", run.format, run.scenario, run.conf);
        set.spawn(async move { (label, run_serde(url, token, bootstrap, run).await) });
    }
    let mut results = Vec::new();
    while let Some(joined) = set.join_next().await {
        let (label, result) = joined?;
        results.push((label, result?));
    }
    for (label, result) in &results {
        if label.contains("refused") {
            assert_eq!(result["http_status_code"], 403, "{label}: {result}");
            assert_eq!(result["error_code"], 40301, "{label}: {result}");
            assert!(
                result["str"]
                    .as_str()
                    .is_some_and(|s| s.contains("User analytics-svc is denied operation write")),
                "{label}: the serializer's error says what was refused: {result}"
            );
        } else {
            assert_eq!(result["round_trip"], true, "{label}: {result}");
            assert_eq!(result["latest_version"], 1, "{label}: {result}");
        }
    }

    // The reader principal can still produce with a schema that is registered: only the
    // registration was refused.
    let readable = run_serde(
        proxy.url.clone(),
        provider.token_endpoint(),
        wire.bootstrap(),
        Serde {
            client: &ANALYTICS,
            format: "avro",
            topic: topic("avro", "lookup"),
            conf: Some(r#"{"auto.register.schemas": false}"#),
            preregister: false,
            scenario: "roundtrip",
        },
    )
    .await?;
    assert_eq!(readable["round_trip"], true, "{readable}");
    let metrics = wire.metrics().await?;
    let count = |outcome: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| {
                l.starts_with("wire_guard_records_total{")
                    && l.contains(&format!("outcome=\"{outcome}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert!(
        count("valid") >= 50.0,
        "every serializer's records were checked: {metrics}"
    );
    assert_eq!(count("rejected"), 0.0, "{metrics}");

    // What the serializers asked the registry, as the audit log saw it.
    let records = {
        let mut records = Vec::new();
        for _ in 0..200 {
            records = audit_records(&proxy.audit);
            if records
                .iter()
                .any(|r| r["principal"] == "user:analytics-svc")
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        records
    };
    let associations: Vec<&Value> = records
        .iter()
        .filter(|r| {
            r["endpoint"] == "GET /associations/resources/{namespace}/{name}"
                || r["endpoint"] == "GET /associations/resources/{id}"
        })
        .collect();
    assert!(
        !associations.is_empty(),
        "the serializers ask for associations first"
    );
    for r in &associations {
        assert_eq!(
            (r["decision"].as_str(), r["upstream_status"].as_u64()),
            (Some("permit"), Some(404)),
            "forwarded; the registry's 404 sends the serializer to the topic strategy: {r}"
        );
    }
    // (The unauthenticated records are start_proxy's readiness probes.)
    for r in records.iter().filter(|r| !r["principal"].is_null()) {
        let refused_registration = r["principal"] == "user:analytics-svc"
            && r["endpoint"] == "POST /subjects/{subject}/versions";
        if r["principal"] == "user:wire-guard" {
            assert_eq!(r["operation"], "read", "wire-guard only reads: {r}");
        }
        if refused_registration {
            assert_eq!(
                (r["decision"].as_str(), r["status"].as_u64()),
                (Some("deny"), Some(403))
            );
        } else {
            assert_eq!(
                r["decision"], "permit",
                "only the registrations are refused: {r}"
            );
        }
    }
    Ok(())
}

/// A short unique suffix for names in the shared broker.
fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("{:x}", nanos & 0xffff_ffff_ffff)
}
