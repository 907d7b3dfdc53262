//! registry-proxy against the development registry and a real OIDC provider
//! (`oauth2-mock-server`), driven by confluent-kafka's `SchemaRegistryClient` with OAUTHBEARER.
//!
//! The endpoint table and the bypass corpus run in process with locally generated keys, in
//! `registry-proxy/tests/proxy.rs`; this binary covers what needs the real parts.

use std::{path::PathBuf, process::Stdio, time::Duration};

use integration_tests::{
    oidc::{OidcClient, OidcProvider},
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
