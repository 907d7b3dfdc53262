//! In-process harness: the development registry, a small identity provider serving a locally
//! generated JWKS, and registry-proxy in front, each on an ephemeral port.
// Each test binary (`proxy`, `hardening`) compiles this module and uses part of it.
#![allow(dead_code)]

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, RwLock},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{Json, Router, extract::State, routing::get};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header, jwk::Jwk};
use registry_proxy::{
    Config,
    config::{Mode, OidcConfig},
    endpoints::Flavor,
};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub const AUDIENCE: &str = "registry-proxy";
pub const RSA_KID: &str = "rsa-1";
pub const EC_KID: &str = "ec-1";
pub const ROTATED_KID: &str = "rsa-2";

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name),
    )
    .expect("fixture")
}

/// The policy every test runs with.
pub const POLICY: &str = r#"
registry:
  rules:
    - id: owners
      principals: ["group:owners"]
      subjects: ["payments-*", ":.ctx:payments-*", ":.grp:payments-*"]
      operations: [read, write, delete, compat_read, compat_write]
    - id: admins
      principals: ["group:admins"]
      subjects: ["*"]
      operations: [read, global_read, global_write]
    - id: owners-shared
      principals: ["group:owners"]
      subjects: ["shared-*"]
      operations: [read, compat_read, compat_write]
    - id: mine-readers
      principals: ["group:mine-readers"]
      subjects: [":.mine:*"]
      operations: [read]
    - id: auditors
      principals: ["group:auditors"]
      subjects: ["*"]
      operations: [global_read]
    - id: superusers
      principals: ["group:superusers"]
      subjects: ["*"]
      operations: [read, write, delete, compat_read, compat_write, global_read, global_write]
"#;

/// Signing keys and the JWKS the proxy fetches.
pub struct Idp {
    pub issuer: String,
    rsa: EncodingKey,
    ec: EncodingKey,
    rotated: EncodingKey,
    pub rsa_public_pem: Vec<u8>,
    jwks: Arc<RwLock<Value>>,
    _shutdown: tokio_util::sync::DropGuard,
}

fn jwk(key: &EncodingKey, alg: Algorithm, kid: &str) -> Value {
    let mut jwk = Jwk::from_encoding_key(key, alg).expect("public JWK");
    jwk.common.key_id = Some(kid.into());
    serde_json::to_value(jwk).expect("JWK serializes")
}

impl Idp {
    pub async fn start() -> Self {
        let rsa = EncodingKey::from_rsa_pem(&fixture("rsa-test-key.pem")).expect("RSA key");
        let rotated = EncodingKey::from_rsa_pem(&fixture("rsa-rotated-key.pem")).expect("RSA key");
        let ec_pair = rcgen::KeyPair::generate().expect("EC key");
        let ec = EncodingKey::from_ec_pem(ec_pair.serialize_pem().as_bytes()).expect("EC key");
        let jwks = Arc::new(RwLock::new(
            json!({"keys": [jwk(&rsa, Algorithm::RS256, RSA_KID), jwk(&ec, Algorithm::ES256, EC_KID)]}),
        ));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let discovery = json!({
            "issuer": issuer,
            "authorization_endpoint": format!("{issuer}/authorize"),
            "token_endpoint": format!("{issuer}/token"),
            "jwks_uri": format!("{issuer}/jwks"),
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256", "ES256"],
        });
        let app = Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(move || async move { Json(discovery) }),
            )
            .route(
                "/jwks",
                get(|State(j): State<Arc<RwLock<Value>>>| async move {
                    Json(j.read().unwrap().clone())
                }),
            )
            .with_state(jwks.clone());
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        });
        Self {
            issuer,
            rsa,
            ec,
            rotated,
            rsa_public_pem: fixture("rsa-test-key.pub.pem"),
            jwks,
            _shutdown: shutdown.drop_guard(),
        }
    }

    /// Publishes the rotated key (as a provider does before signing with it).
    pub fn publish_rotated_key(&self) {
        self.jwks.write().unwrap()["keys"]
            .as_array_mut()
            .unwrap()
            .push(jwk(&self.rotated, Algorithm::RS256, ROTATED_KID));
    }

    pub fn claims(&self, sub: &str, groups: &[&str]) -> Value {
        let now = now();
        json!({"iss": self.issuer, "aud": AUDIENCE, "sub": sub, "groups": groups, "azp": format!("{sub}-client"), "iat": now, "exp": now + 600})
    }

    /// An RS256 token for `sub` in `groups`.
    pub fn token(&self, sub: &str, groups: &[&str]) -> String {
        self.sign(&self.claims(sub, groups), Algorithm::RS256, Some(RSA_KID))
    }

    /// Signs `claims` with the key that goes with `kid` (RSA unless the kid is the EC one).
    pub fn sign(&self, claims: &Value, alg: Algorithm, kid: Option<&str>) -> String {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_owned);
        self.sign_with_header(&header, claims)
    }

    /// Signs `claims` under `header` (its `kid` picks the key, as in [`Idp::sign`]).
    pub fn sign_with_header(&self, header: &Header, claims: &Value) -> String {
        let key = match header.kid.as_deref() {
            Some(EC_KID) => &self.ec,
            Some(ROTATED_KID) => &self.rotated,
            _ => &self.rsa,
        };
        jsonwebtoken::encode(header, claims, key).expect("sign")
    }

    /// An HS256 token whose HMAC secret is the RSA public key: the classic confusion attack.
    pub fn hs256_with_public_key(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(RSA_KID.into());
        jsonwebtoken::encode(
            &header,
            claims,
            &EncodingKey::from_secret(&self.rsa_public_pem),
        )
        .expect("sign")
    }
}

/// An unsigned token with `alg: none`.
pub fn alg_none(claims: &Value) -> String {
    let header =
        URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "JWT", "kid": RSA_KID}).to_string());
    let body = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{header}.{body}.")
}

/// `token` with its header's `alg` replaced (the signature no longer matches the header).
pub fn with_alg(token: &str, alg: &str) -> String {
    let (header, rest) = token.split_once('.').expect("JWT");
    let mut header: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).expect("base64")).expect("JSON");
    header["alg"] = json!(alg);
    format!("{}.{rest}", URL_SAFE_NO_PAD.encode(header.to_string()))
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A running stack.
pub struct Stack {
    pub idp: Idp,
    pub proxy: String,
    pub admin: String,
    pub registry: String,
    pub audit_path: PathBuf,
    /// The policy directory the proxy polls.
    pub policies: PathBuf,
    pub http: reqwest::Client,
    _dir: tempfile::TempDir,
    _shutdown: tokio_util::sync::DropGuard,
}

impl Stack {
    pub async fn start(flavor: Flavor) -> Self {
        Self::start_with(flavor, Mode::Enforce).await
    }

    pub async fn start_with(flavor: Flavor, mode: Mode) -> Self {
        Self::start_configured(flavor, |c| c.mode = mode).await
    }

    /// A stack whose proxy configuration `edit` adjusts.
    pub async fn start_configured(flavor: Flavor, edit: impl FnOnce(&mut Config)) -> Self {
        Self::start_inner(flavor, None, edit).await
    }

    /// A stack whose upstream is `upstream` (a scripted registry answering what a real one
    /// would, where the development registry does not) instead of the development registry.
    pub async fn start_scripted(flavor: Flavor, upstream: Router) -> Self {
        Self::start_inner(flavor, Some(upstream), |_| {}).await
    }

    /// [`Stack::start_scripted`], with the proxy configuration adjusted by `edit`.
    pub async fn start_scripted_configured(
        flavor: Flavor,
        upstream: Router,
        edit: impl FnOnce(&mut Config),
    ) -> Self {
        Self::start_inner(flavor, Some(upstream), edit).await
    }

    async fn start_inner(
        flavor: Flavor,
        upstream: Option<Router>,
        edit: impl FnOnce(&mut Config),
    ) -> Self {
        let idp = Idp::start().await;
        let dir = tempfile::tempdir().unwrap();
        let policies = dir.path().join("policies");
        std::fs::create_dir(&policies).unwrap();
        std::fs::write(policies.join("registry.yaml"), POLICY).unwrap();
        let audit_path = dir.path().join("audit.log");
        let shutdown = CancellationToken::new();

        let registry_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let registry = format!("http://{}", registry_listener.local_addr().unwrap());
        match upstream {
            None => {
                tokio::spawn(dev_registry::run(
                    registry_listener,
                    shutdown.clone().cancelled_owned(),
                ));
            }
            Some(app) => {
                let stop = shutdown.clone();
                tokio::spawn(async move {
                    axum::serve(registry_listener, app)
                        .with_graceful_shutdown(stop.cancelled_owned())
                        .await
                });
            }
        }

        let mut config = Config {
            upstream: registry.clone(),
            upstream_kind: flavor,
            policies: policies.clone(),
            policy_poll_ms: 100,
            oidc: OidcConfig {
                issuer: idp.issuer.clone(),
                audience: vec![AUDIENCE.into()],
                leeway_secs: 5,
                jwks_min_refetch_ms: 0,
                ..OidcConfig::default()
            },
            audit: registry_proxy::audit::AuditSink::File(audit_path.clone()),
            ..Config::default()
        };
        edit(&mut config);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = format!("http://{}", listener.local_addr().unwrap());
        let admin = format!("http://{}", admin_listener.local_addr().unwrap());
        let stop = shutdown.clone();
        tokio::spawn(async move {
            if let Err(e) =
                registry_proxy::run_with_admin(config, listener, Some(admin_listener), stop).await
            {
                panic!("registry-proxy stopped: {e}");
            }
        });
        let http = reqwest::Client::new();
        // Ready once the admin endpoint says so (policy loaded, keys fetched).
        for _ in 0..200 {
            if let Ok(r) = http.get(format!("{admin}/readyz")).send().await
                && r.status().is_success()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Self {
            idp,
            proxy,
            admin,
            registry,
            audit_path,
            policies,
            http,
            _dir: dir,
            _shutdown: shutdown.drop_guard(),
        }
    }

    /// Sends a raw request line over TCP, so paths reach the proxy exactly as written
    /// (HTTP client libraries normalize `..` and encodings). Returns (status, body).
    pub async fn raw(
        &self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> (u16, Value) {
        let (status, body, _) = self.raw_with_id(method, target, headers, body).await;
        (status, body)
    }

    /// [`Stack::raw`], also returning the `x-request-id` the proxy answered with.
    pub async fn raw_with_id(
        &self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> (u16, Value, Option<String>) {
        let r = raw_request(&self.proxy, method, target, headers, body).await;
        let request_id = r.header("x-request-id");
        (
            r.status,
            serde_json::from_str(&r.body).unwrap_or(Value::String(r.body)),
            request_id,
        )
    }

    /// A request with a bearer token.
    pub async fn call(
        &self,
        method: &str,
        target: &str,
        token: &str,
        body: Option<&str>,
    ) -> (u16, Value) {
        let auth = format!("Bearer {token}");
        self.raw(method, target, &[("Authorization", &auth)], body)
            .await
    }

    /// The admin endpoint's `/readyz` status.
    pub async fn readyz(&self) -> u16 {
        self.http
            .get(format!("{}/readyz", self.admin))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// The value of one metric sample, e.g. `registry_proxy_audit_failures_total{reason="queue_full"}`
    /// (0 when absent).
    pub async fn metric(&self, sample: &str) -> f64 {
        let text = self
            .http
            .get(format!("{}/metrics", self.admin))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    }

    /// Every audit record written so far.
    pub fn audit(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.audit_path).unwrap_or_default();
        // The writer may be mid-line: only complete lines are records.
        let complete = text.rfind('\n').map_or("", |end| &text[..end]);
        complete
            .lines()
            .map(|l| serde_json::from_str(l).expect("audit lines are JSON"))
            .collect()
    }

    /// The records of one request, once at least one is written (the writer is asynchronous).
    pub async fn audit_of(&self, request_id: &str) -> Vec<Value> {
        for _ in 0..400 {
            let records: Vec<Value> = self
                .audit()
                .into_iter()
                .filter(|r| r["request_id"] == request_id)
                .collect();
            if !records.is_empty() {
                return records;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Vec::new()
    }
}

/// An answer as received: status, head lines and body (de-chunked).
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl RawResponse {
    /// The value of header `name` (case-insensitive), if present.
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim().to_owned())
        })
    }
}

/// Sends a raw request line over TCP to `base` (`http://host:port`), so paths arrive exactly
/// as written (HTTP client libraries normalize `..` and encodings).
pub async fn raw_request(
    base: &str,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> RawResponse {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr: SocketAddr = base.trim_start_matches("http://").parse().unwrap();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request =
        format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() || matches!(method, "POST" | "PUT") {
        request.push_str(&format!(
            "Content-Type: application/vnd.schemaregistry.v1+json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response);
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    RawResponse {
        status,
        head: head.to_owned(),
        body: if chunked {
            decode_chunked(body)
        } else {
            body.to_owned()
        },
    }
}

fn decode_chunked(body: &str) -> String {
    // Responses without Content-Length come chunked; small test bodies fit one chunk.
    let mut out = String::new();
    let mut rest = body;
    loop {
        let Some((size, after)) = rest.split_once("\r\n") else {
            return body.to_owned();
        };
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            return body.to_owned();
        };
        if n == 0 || after.len() < n {
            return if out.is_empty() && n != 0 {
                body.to_owned()
            } else {
                out
            };
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
}
