//! registry-proxy at its bounds: what happens when the audit log cannot be written, when a
//! client holds connections or sends its request slowly, when the HTTP layer refuses a
//! request, when a token is stranger than the signature check alone can tell, and when an
//! answer from the registry is too large. Each test drives the proxy to the bound and checks
//! the answer, the audit record and the metric.
//!
//! - `audit_failure`: a sink that fails (`/dev/full`) or stalls (a FIFO nobody reads).
//! - `connections`: connection caps, header and idle timeouts.
//! - `http_layer`: requests hyper refuses, overlong targets, body size and time.
//! - `tokens`: `crit`, `iat`, token lifetime, tokens in the query, repeated `Authorization`,
//!   the verification rate limit and the cache of refused tokens.
//! - `upstream_limits`: answers over the upstream body limit.

mod support;

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use registry_proxy::{audit::AuditSink, endpoints::Flavor};
use serde_json::{Value, json};
use support::Stack;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

fn addr(stack: &Stack) -> SocketAddr {
    stack.proxy.trim_start_matches("http://").parse().unwrap()
}

/// Writes `request` as is and reads until the proxy closes (or 5 s pass): the raw answer.
async fn raw_exchange(stack: &Stack, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr(stack)).await.unwrap();
    stream.write_all(request).await.unwrap();
    read_all(&mut stream, Duration::from_secs(5)).await
}

async fn read_all(stream: &mut TcpStream, within: Duration) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(within, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    String::from_utf8_lossy(&out).into_owned()
}

fn status_of(raw: &str) -> u16 {
    raw.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Waits for an audit record `matches` accepts.
async fn record_where(stack: &Stack, matches: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..300 {
        if let Some(r) = stack.audit().into_iter().find(&matches) {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no such audit record in {:#?}", stack.audit());
}

fn reason(r: &Value) -> &str {
    r["reason"].as_str().unwrap_or_default()
}

mod audit_failure {
    use super::*;

    #[tokio::test]
    async fn a_full_disk_refuses_requests_with_503_and_unreadies_the_proxy() {
        let stack = Stack::start_configured(Flavor::Confluent, |c| {
            c.audit = AuditSink::File("/dev/full".into());
        })
        .await;
        assert_eq!(stack.readyz().await, 200);
        let token = stack.idp.token("adam", &["admins"]);
        // The first request is served: its record is queued before the write fails. From the
        // failure on, nothing is served.
        let mut refused = None;
        for _ in 0..100 {
            let (status, body) = stack.call("GET", "/subjects", &token, None).await;
            if status == 503 {
                refused = Some(body);
                break;
            }
            assert_eq!(status, 200, "{body}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let body = refused.expect("a failing audit sink refuses requests");
        assert_eq!(body["error_code"], 50301, "{body}");
        assert!(
            body["message"].as_str().unwrap().contains("audit"),
            "{body}"
        );
        for _ in 0..5 {
            let (status, _) = stack.call("GET", "/subjects", &token, None).await;
            assert_eq!(status, 503, "fails closed while the sink fails");
        }
        let answer = raw_exchange(
            &stack,
            format!("GET /subjects HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        assert!(answer.to_lowercase().contains("retry-after: 1"), "{answer}");
        assert_eq!(
            stack.readyz().await,
            503,
            "not ready while records cannot be written"
        );
        assert!(
            stack
                .metric(r#"registry_proxy_audit_failures_total{reason="write_error"}"#)
                .await
                >= 1.0
        );
        assert!(
            stack
                .metric(r#"registry_proxy_requests_total{decision="error",operation="none",status="503"}"#)
                .await
                >= 6.0
        );
    }

    #[tokio::test]
    async fn serve_mode_keeps_serving_and_counts_the_failure() {
        let stack = Stack::start_configured(Flavor::Confluent, |c| {
            c.audit = AuditSink::File("/dev/full".into());
            c.audit_on_failure = registry_proxy::audit::OnAuditFailure::Serve;
        })
        .await;
        let token = stack.idp.token("adam", &["admins"]);
        for _ in 0..20 {
            let (status, body) = stack.call("GET", "/subjects", &token, None).await;
            assert_eq!(status, 200, "{body}");
        }
        assert!(
            stack
                .metric(r#"registry_proxy_audit_failures_total{reason="write_error"}"#)
                .await
                >= 1.0
        );
        assert_eq!(stack.readyz().await, 200, "serving unaudited was chosen");
    }

    #[tokio::test]
    async fn a_stalled_sink_holds_a_bounded_queue_then_refuses_and_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("audit.fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        // Read-write, so opening it does not wait for a reader; nothing reads it yet, so once
        // the pipe's buffer (64 KiB on Linux) is full every write blocks.
        let held = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&fifo)
            .unwrap();
        let stack = Stack::start_configured(Flavor::Confluent, |c| {
            c.audit = AuditSink::File(fifo.clone());
            c.audit_queue_records = 16;
        })
        .await;
        let token = stack.idp.token("adam", &["admins"]);
        let mut served = 0;
        let mut refused = false;
        for _ in 0..3000 {
            let (status, body) = stack.call("GET", "/subjects", &token, None).await;
            match status {
                200 => served += 1,
                503 => {
                    assert_eq!(body["error_code"], 50301);
                    refused = true;
                    break;
                }
                other => panic!("{other}: {body}"),
            }
        }
        assert!(refused, "a stalled sink must refuse ({served} served)");
        // The pipe buffer plus 16 queued records plus the one being written, at a few hundred
        // bytes per record: anything far beyond means the queue is not bounded.
        assert!(
            served < 1000,
            "{served} requests served into a stalled sink"
        );
        assert_eq!(stack.readyz().await, 503);
        assert!(
            stack
                .metric(r#"registry_proxy_audit_failures_total{reason="queue_full"}"#)
                .await
                >= 1.0
        );

        // Drain the pipe: the writer resumes, and the proxy serves and is ready again.
        let mut reader = held.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut sink = std::io::sink();
            let _ = std::io::copy(&mut reader, &mut sink);
        });
        let mut ready = false;
        for _ in 0..200 {
            if stack.readyz().await == 200 {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(ready, "ready again once records are written");
        let (status, body) = stack.call("GET", "/subjects", &token, None).await;
        assert_eq!(status, 200, "{body}");
    }
}

mod connections {
    use super::*;

    #[tokio::test]
    async fn connections_over_the_per_ip_and_global_caps_are_closed_at_once() {
        for (global, per_ip, reason) in [
            (100, 3, "max_connections_per_ip"),
            (3, 100, "max_connections"),
        ] {
            let stack = Stack::start_configured(Flavor::Confluent, |c| {
                c.max_connections = global;
                c.max_connections_per_ip = per_ip;
            })
            .await;
            let mut held = Vec::new();
            for _ in 0..3 {
                held.push(TcpStream::connect(addr(&stack)).await.unwrap());
            }
            // Let the proxy accept the three before the fourth arrives.
            tokio::time::sleep(Duration::from_millis(100)).await;
            let mut over = TcpStream::connect(addr(&stack)).await.unwrap();
            let _ = over
                .write_all(b"GET /subjects HTTP/1.1\r\nHost: x\r\n\r\n")
                .await;
            let answer = read_all(&mut over, Duration::from_secs(5)).await;
            assert_eq!(answer, "", "{reason}: closed without an answer");
            assert_eq!(
                stack
                    .metric(&format!(
                        r#"registry_proxy_connections_refused_total{{reason="{reason}"}}"#
                    ))
                    .await,
                1.0
            );
            assert_eq!(stack.metric("registry_proxy_connections_open").await, 3.0);
            drop(held.pop());
            tokio::time::sleep(Duration::from_millis(100)).await;
            let answer = raw_exchange(
                &stack,
                b"GET /subjects HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            )
            .await;
            assert_eq!(status_of(&answer), 401, "{reason}: a freed place is usable");
        }
    }

    #[tokio::test]
    async fn a_slow_request_head_is_cut_off_and_audited() {
        let stack = Stack::start_configured(Flavor::Confluent, |c| {
            c.header_read_timeout_ms = 300;
            c.idle_timeout_ms = 10_000;
        })
        .await;
        let mut stream = TcpStream::connect(addr(&stack)).await.unwrap();
        let started = Instant::now();
        // A slowloris: a request line and one header, then nothing.
        stream
            .write_all(b"GET /subjects?access_token=secret HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        let answer = read_all(&mut stream, Duration::from_secs(5)).await;
        let waited = started.elapsed();
        assert_eq!(answer, "", "closed without an answer");
        assert!(
            waited >= Duration::from_millis(250) && waited < Duration::from_secs(3),
            "{waited:?}"
        );
        let r = record_where(&stack, |r| reason(r).contains("request head not complete")).await;
        assert_eq!(
            (
                r["decision"].as_str(),
                r["status"].as_u64(),
                r["method"].as_str()
            ),
            (Some("refused"), Some(0), Some("GET"))
        );
        assert_eq!(r["path"], "/subjects?access_token=REDACTED");
        assert_eq!(r["principal"], Value::Null);
        assert_eq!(
            stack
                .metric(r#"registry_proxy_connection_timeouts_total{phase="header"}"#)
                .await,
            1.0
        );
    }

    #[tokio::test]
    async fn idle_connections_are_closed_without_a_record() {
        let stack = Stack::start_configured(Flavor::Confluent, |c| {
            c.header_read_timeout_ms = 10_000;
            c.idle_timeout_ms = 300;
        })
        .await;
        // A connection that never sends, and one kept alive after a request.
        let mut silent = TcpStream::connect(addr(&stack)).await.unwrap();
        let mut kept = TcpStream::connect(addr(&stack)).await.unwrap();
        kept.write_all(b"GET /subjects HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let started = Instant::now();
        let answer = read_all(&mut kept, Duration::from_secs(5)).await;
        assert_eq!(status_of(&answer), 401, "{answer}");
        assert!(started.elapsed() < Duration::from_secs(3));
        assert_eq!(read_all(&mut silent, Duration::from_secs(5)).await, "");
        assert_eq!(
            stack
                .metric(r#"registry_proxy_connection_timeouts_total{phase="idle"}"#)
                .await,
            2.0
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(stack.audit().len(), 1, "only the request is recorded");
    }

    #[tokio::test]
    async fn a_head_given_time_is_not_cut_by_the_idle_timeout() {
        // Idle shorter than the header timeout: a head started in time has the header timeout.
        let stack = Stack::start_configured(Flavor::Confluent, |c| {
            c.header_read_timeout_ms = 5_000;
            c.idle_timeout_ms = 200;
        })
        .await;
        let mut stream = TcpStream::connect(addr(&stack)).await.unwrap();
        stream
            .write_all(b"GET /subjects HTTP/1.1\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(600)).await;
        stream
            .write_all(b"Host: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let answer = read_all(&mut stream, Duration::from_secs(5)).await;
        assert_eq!(status_of(&answer), 401, "{answer}");
    }
}

mod http_layer {
    use super::*;

    #[tokio::test]
    async fn requests_the_http_parser_refuses_are_audited() {
        let stack = Stack::start(Flavor::Confluent).await;
        let big = "a".repeat(40 * 1024);
        let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
            (
                "conflicting Content-Length",
                b"POST /subjects/s/versions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!".to_vec(),
                400,
                "content-length",
            ),
            (
                "Transfer-Encoding not ending in chunked",
                b"POST /subjects/t/versions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n".to_vec(),
                400,
                "transfer-encoding",
            ),
            (
                "head over max_header_bytes",
                format!("GET /subjects/u HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n").into_bytes(),
                431,
                "too large",
            ),
        ];
        for (name, request, status, why) in cases {
            let answer = raw_exchange(&stack, &request).await;
            assert_eq!(status_of(&answer), status, "{name}: {answer}");
            let target = String::from_utf8_lossy(&request)
                .split(' ')
                .nth(1)
                .unwrap()
                .to_owned();
            let r = record_where(&stack, |r| r["path"] == target.as_str()).await;
            assert_eq!(r["decision"], "refused", "{name}: {r}");
            assert_eq!(r["status"], status, "{name}: {r}");
            assert!(
                reason(&r).starts_with("refused by the HTTP layer"),
                "{name}: {r}"
            );
            assert!(reason(&r).to_lowercase().contains(why), "{name}: {r}");
            assert_eq!(r["principal"], Value::Null, "{name}");
        }
    }

    #[tokio::test]
    async fn overlong_targets_are_answered_414_and_recorded_by_their_start() {
        let stack = Stack::start_configured(Flavor::Confluent, |c| c.max_uri_bytes = 1024).await;
        let token = stack.idp.token("adam", &["admins"]);
        let target = format!("/subjects/{}", "p".repeat(2000));
        let (status, body) = stack.call("GET", &target, &token, None).await;
        assert_eq!(
            (status, &body["error_code"]),
            (414, &json!(41401)),
            "{body}"
        );
        let r = record_where(&stack, |r| r["status"] == 414).await;
        assert_eq!(r["decision"], "refused");
        assert_eq!(r["path"].as_str().unwrap().len(), 1024);
    }

    #[tokio::test]
    async fn bodies_are_bounded_in_size_and_time() {
        let stack = Stack::start_configured(Flavor::Confluent, |c| {
            c.max_body_bytes = 1024;
            c.body_read_timeout_ms = 300;
        })
        .await;
        let token = stack.idp.token("olivia", &["owners"]);
        let big = format!(r#"{{"schema":"{}"}}"#, "x".repeat(2000));
        let (status, body) = stack
            .call(
                "POST",
                "/subjects/payments-value/versions",
                &token,
                Some(&big),
            )
            .await;
        assert_eq!(
            (status, &body["error_code"]),
            (413, &json!(41301)),
            "{body}"
        );

        let started = Instant::now();
        let answer = raw_exchange(
            &stack,
            format!(
                "POST /subjects/payments-value/versions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
                 Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"sch"
            )
            .as_bytes(),
        )
        .await;
        assert_eq!(status_of(&answer), 408, "{answer}");
        assert!(answer.contains("40801"), "{answer}");
        assert!(started.elapsed() < Duration::from_secs(3));
        let r = record_where(&stack, |r| r["status"] == 408).await;
        assert_eq!(
            (r["decision"].as_str(), r["principal"].as_str()),
            (Some("refused"), Some("user:olivia"))
        );
    }
}

mod tokens {
    use super::*;
    use jsonwebtoken::{Algorithm, Header};

    const TARGET: &str = "/subjects/payments-value/versions";

    async fn expect_401(stack: &Stack, name: &str, token: &str, why: &str) {
        let (status, body) = stack.call("GET", TARGET, token, None).await;
        assert_eq!(status, 401, "{name}: {body}");
        assert_eq!(body["error_code"], 40101, "{name}");
        let r = record_where(stack, |r| {
            r["decision"] == "unauthenticated" && reason(r).contains(why)
        })
        .await;
        assert_eq!(r["principal"], Value::Null, "{name}");
    }

    #[tokio::test]
    async fn crit_iat_and_lifetime_are_checked() {
        let stack = Stack::start(Flavor::Confluent).await;
        let idp = &stack.idp;
        let now = support::now();
        let base = idp.claims("olivia", &["owners"]);
        let with = |changes: Value| {
            let mut claims = base.clone();
            for (k, v) in changes.as_object().unwrap() {
                if v.is_null() {
                    claims.as_object_mut().unwrap().remove(k);
                } else {
                    claims[k] = v.clone();
                }
            }
            idp.sign(&claims, Algorithm::RS256, Some(support::RSA_KID))
        };

        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(support::RSA_KID.into());
        header.crit = Some(vec!["exp".into()]);
        let crit = idp.sign_with_header(&header, &base);
        expect_401(&stack, "crit", &crit, "crit header").await;
        header.crit = Some(vec![]);
        let empty_crit = idp.sign_with_header(&header, &base);
        expect_401(&stack, "empty crit", &empty_crit, "crit header").await;

        let future = now + 3600;
        for (name, iat, why) in [
            (
                "float iat in the future",
                json!(future as f64 + 0.5),
                "iat is not",
            ),
            (
                "float iat in the past",
                json!(now as f64 - 10.0),
                "iat is not",
            ),
            (
                "string iat in the future",
                json!(future.to_string()),
                "iat is not",
            ),
            ("negative iat", json!(-1), "iat is not"),
            (
                "integer iat in the future",
                json!(future),
                "issued in the future",
            ),
        ] {
            expect_401(&stack, name, &with(json!({"iat": iat})), why).await;
        }

        let day = 86_400;
        expect_401(
            &stack,
            "lives 25 h",
            &with(json!({"iat": now, "exp": now + day + 3600})),
            "lifetime",
        )
        .await;
        expect_401(
            &stack,
            "no iat, 25 h left",
            &with(json!({"iat": null, "exp": now + day + 3600})),
            "lifetime",
        )
        .await;
        for (name, token) in [
            (
                "lives 23 h",
                with(json!({"iat": now, "exp": now + day - 3600})),
            ),
            ("no iat, 10 min left", with(json!({"iat": null}))),
            ("issued within the leeway", with(json!({"iat": now + 2}))),
        ] {
            let (status, body) = stack.call("GET", TARGET, &token, None).await;
            assert_ne!(status, 401, "{name}: {body}");
        }
    }

    /// Records each request's target as the upstream received it.
    fn recording_upstream() -> (axum::Router, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
            let log = log.clone();
            async move {
                log.lock().unwrap().push(uri.to_string());
                axum::Json(json!([1]))
            }
        });
        (app, seen)
    }

    #[tokio::test]
    async fn tokens_in_the_query_are_stripped_and_never_credentials() {
        let (upstream, seen) = recording_upstream();
        let stack = Stack::start_scripted(Flavor::Confluent, upstream).await;
        let token = stack.idp.token("olivia", &["owners"]);

        let (status, _, id) = stack
            .raw_with_id("GET", &format!("{TARGET}?access_token={token}"), &[], None)
            .await;
        assert_eq!(status, 401, "a token in the query is no credential");
        let r = &stack.audit_of(&id.unwrap()).await[0];
        assert_eq!(r["path"], TARGET);

        let auth = format!("Bearer {token}");
        let (status, _, id) = stack
            .raw_with_id(
                "GET",
                &format!("{TARGET}?Access_Token=leaked-secret&deleted=true"),
                &[("Authorization", &auth)],
                None,
            )
            .await;
        assert_eq!(status, 200);
        let r = &stack.audit_of(&id.unwrap()).await[0];
        assert_eq!(r["path"], format!("{TARGET}?deleted=true"));
        assert_eq!(
            seen.lock().unwrap().as_slice(),
            [format!("{TARGET}?deleted=true")],
            "not forwarded"
        );

        let (status, _, id) = stack
            .raw_with_id(
                "GET",
                "/subjects/a/../b?access_token=leaked-secret",
                &[("Authorization", &auth)],
                None,
            )
            .await;
        assert_eq!(status, 400);
        let r = &stack.audit_of(&id.unwrap()).await[0];
        assert_eq!(r["path"], "/subjects/a/../b?access_token=REDACTED");
        assert!(
            !std::fs::read_to_string(&stack.audit_path)
                .unwrap()
                .contains("leaked-secret")
        );
    }

    #[tokio::test]
    async fn two_authorization_headers_are_refused() {
        let stack = Stack::start(Flavor::Confluent).await;
        let owner = format!("Bearer {}", stack.idp.token("olivia", &["owners"]));
        let admin = format!("Bearer {}", stack.idp.token("adam", &["admins"]));
        for pair in [[&owner, &admin], [&owner, &owner]] {
            let (status, body, id) = stack
                .raw_with_id(
                    "GET",
                    TARGET,
                    &[("Authorization", pair[0]), ("Authorization", pair[1])],
                    None,
                )
                .await;
            assert_eq!(
                (status, &body["error_code"]),
                (400, &json!(40001)),
                "{body}"
            );
            let r = &stack.audit_of(&id.unwrap()).await[0];
            assert_eq!(r["decision"], "refused");
            assert!(reason(r).contains("Authorization header given more than once"));
        }
    }

    /// `token` with the first bytes of its signature replaced: same header and claims, a
    /// signature that does not verify, different for each `i`.
    fn forged(token: &str, i: u32) -> String {
        use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
        let (signed, sig) = token.rsplit_once('.').unwrap();
        let mut sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
        sig[..4].copy_from_slice(&i.to_be_bytes());
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig))
    }

    #[tokio::test]
    async fn new_tokens_are_rate_limited_per_client_and_forgeries_remembered() {
        let stack = Stack::start_configured(Flavor::Confluent, |c| {
            c.oidc.verify_rate_per_ip = 1;
            c.oidc.verify_burst = 3;
        })
        .await;
        let good = stack.idp.token("olivia", &["owners"]);
        let (status, _) = stack.call("GET", "/subjects", &good, None).await;
        assert_eq!(status, 200, "verification 1 of the burst");
        // The bucket refills at one a second, so how many forgeries pass before the first
        // 429 depends on the machine's speed: at least the two left in the burst.
        let mut verified_forgeries = 0;
        let mut limited = None;
        for i in 0..20 {
            let answer = raw_exchange(
                &stack,
                format!(
                    "GET /subjects HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
                    forged(&good, i)
                )
                .as_bytes(),
            )
            .await;
            match status_of(&answer) {
                401 => verified_forgeries += 1,
                429 => {
                    limited = Some(answer);
                    break;
                }
                other => panic!("{other}: {answer}"),
            }
        }
        let answer = limited.expect("new tokens beyond the budget are refused");
        assert!(verified_forgeries >= 2, "{verified_forgeries}");
        assert!(answer.contains("42901"), "{answer}");
        assert!(answer.to_lowercase().contains("retry-after: 1"), "{answer}");
        record_where(&stack, |r| {
            r["decision"] == "rate_limited" && r["status"] == 429
        })
        .await;

        let (status, _) = stack.call("GET", "/subjects", &good, None).await;
        assert_eq!(status, 200, "a validated token is not limited");
        for _ in 0..5 {
            let (status, _) = stack
                .call("GET", "/subjects", &forged(&good, 0), None)
                .await;
            assert_eq!(
                status, 401,
                "a refused token replayed is refused from the cache"
            );
        }
        assert_eq!(
            stack
                .metric(r#"registry_proxy_token_verifications_total{result="failed"}"#)
                .await,
            f64::from(verified_forgeries),
            "the replays cost no verification"
        );
        assert_eq!(
            stack
                .metric(r#"registry_proxy_cache_total{cache="failed_token",result="hit"}"#)
                .await,
            5.0
        );
        assert!(
            stack
                .metric(r#"registry_proxy_token_verifications_total{result="rate_limited"}"#)
                .await
                >= 1.0
        );
    }
}

mod upstream_limits {
    use super::*;

    #[tokio::test]
    async fn answers_over_the_limit_become_502() {
        let listing: Vec<String> = (0..200).map(|i| format!("payments-{i:04}")).collect();
        let app = axum::Router::new().fallback(move || {
            let listing = listing.clone();
            async move { axum::Json(listing) }
        });
        let stack = Stack::start_scripted(Flavor::Confluent, app).await;
        let token = stack.idp.token("adam", &["admins"]);
        let (status, body) = stack.call("GET", "/subjects", &token, None).await;
        assert_eq!(status, 200, "under the default limit: {body}");
        drop(stack);

        // Chunked (no Content-Length), so the limit is found while reading, and with a length.
        for chunked in [true, false] {
            let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let upstream_addr = upstream.local_addr().unwrap();
            tokio::spawn(async move {
                while let Ok((mut s, _)) = upstream.accept().await {
                    tokio::spawn(async move {
                        let mut buf = [0u8; 4096];
                        let _ = s.read(&mut buf).await;
                        let chunk = format!("\"{}\",", "x".repeat(1000));
                        let mut answer = String::new();
                        if chunked {
                            answer.push_str("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n");
                            for _ in 0..10 {
                                answer.push_str(&format!("{:x}\r\n{chunk}\r\n", chunk.len()));
                            }
                            answer.push_str("0\r\n\r\n");
                        } else {
                            let body = format!("[{}\"end\"]", chunk.repeat(10));
                            answer.push_str(&format!(
                                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                                body.len()
                            ));
                        }
                        let _ = s.write_all(answer.as_bytes()).await;
                    });
                }
            });
            let stack = Stack::start_configured(Flavor::Confluent, |c| {
                c.upstream = format!("http://{upstream_addr}");
                c.max_upstream_body_bytes = 4096;
            })
            .await;
            let (status, body, id) = stack
                .raw_with_id(
                    "GET",
                    "/subjects",
                    &[(
                        "Authorization",
                        &format!(
                            "Bearer {token_}",
                            token_ = stack.idp.token("adam", &["admins"])
                        ),
                    )],
                    None,
                )
                .await;
            assert_eq!(
                (status, &body["error_code"]),
                (502, &json!(50202)),
                "chunked {chunked}: {body}"
            );
            let r = &stack.audit_of(&id.unwrap()).await[0];
            assert_eq!(r["decision"], "error");
            assert!(
                reason(r).contains("upstream response over 4096 bytes"),
                "{r}"
            );
        }
    }
}
