//! The identity provider: `oauth2-mock-server` (npm) issuing client_credentials tokens.
//!
//! `tests/oidc/provider.mjs` starts it through its programmatic API, because only the hooks
//! can give a client_credentials token the `sub`, `groups` and `aud` a real provider would.

use std::{
    net::SocketAddr,
    process::{Command, Stdio},
    time::Duration,
};

use crate::stack::{ChildGuard, free_port, oauth2_mock_server_bin, repo_root, wait_for_port};

/// A client registered with the provider.
#[derive(Debug, Clone)]
pub struct OidcClient {
    pub id: &'static str,
    pub secret: &'static str,
    /// The token's `sub`.
    pub sub: &'static str,
    pub groups: &'static [&'static str],
}

/// A running provider; stopped when dropped.
pub struct OidcProvider {
    /// The issuer URL, exactly as tokens carry it in `iss`.
    pub issuer: String,
    pub audience: String,
    _child: ChildGuard,
}

/// The package's entry module, next to the CLI the install script linked.
fn module_path() -> anyhow::Result<std::path::PathBuf> {
    let cli = std::fs::canonicalize(oauth2_mock_server_bin())?;
    let dist = cli
        .parent()
        .ok_or_else(|| anyhow::anyhow!("no parent for {}", cli.display()))?;
    let module = dist.join("index.mjs");
    anyhow::ensure!(module.exists(), "{} not found", module.display());
    Ok(module)
}

impl OidcProvider {
    /// Starts the provider on a free port with an explicit issuer URL.
    pub async fn start(audience: &str, clients: &[OidcClient]) -> anyhow::Result<Self> {
        let port = free_port();
        let registered: serde_json::Map<String, serde_json::Value> = clients
            .iter()
            .map(|c| {
                (
                    c.id.to_owned(),
                    serde_json::json!({"secret": c.secret, "sub": c.sub, "groups": c.groups}),
                )
            })
            .collect();
        let child = Command::new("node")
            .arg(repo_root().join("tests/oidc/provider.mjs"))
            .arg(port.to_string())
            .arg(audience)
            .arg(serde_json::Value::Object(registered).to_string())
            .env("OAUTH2_MOCK_SERVER_MODULE", module_path()?)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()?;
        let guard = ChildGuard {
            name: "oauth2-mock-server",
            child,
        };
        wait_for_port(
            SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_secs(30),
        )
        .await?;
        Ok(Self {
            issuer: format!("http://127.0.0.1:{port}"),
            audience: audience.to_owned(),
            _child: guard,
        })
    }

    pub fn token_endpoint(&self) -> String {
        format!("{}/token", self.issuer)
    }

    /// A client_credentials access token for `client`.
    pub async fn token(&self, client: &OidcClient) -> anyhow::Result<String> {
        let response = reqwest::Client::new()
            .post(self.token_endpoint())
            .basic_auth(client.id, Some(client.secret))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("grant_type=client_credentials&scope=schema_registry")
            .send()
            .await?;
        anyhow::ensure!(
            response.status().is_success(),
            "token endpoint answered {}",
            response.status()
        );
        let body: serde_json::Value = response.json().await?;
        body["access_token"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow::anyhow!("no access_token in {body}"))
    }
}
