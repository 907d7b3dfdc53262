//! The AWS KMS emulator: `moto_server` from the `moto[server]` package `scripts/install-stack`
//! puts in the venv, one per test, on a port of its own.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use aws_config::{BehaviorVersion, Region};
use aws_sdk_kms::config::Credentials;
use wire_guard::kms::AwsKmsConfig;

use crate::stack::{ChildGuard, free_port, python_bin};

/// moto accepts any credentials; these are the ones its documentation uses.
const ACCESS_KEY: &str = "testing";
const REGION: &str = "us-east-1";

/// A running `moto_server`; killed when dropped.
pub struct Moto {
    pub endpoint_url: String,
    /// `None` once [`Moto::stop`] ran.
    child: Option<ChildGuard>,
}

impl Moto {
    /// Starts the emulator on a free port and waits until it answers HTTP.
    pub async fn start() -> anyhow::Result<Moto> {
        let python = python_bin();
        let bin = python
            .parent()
            .ok_or_else(|| anyhow::anyhow!("no parent for {}", python.display()))?
            .join("moto_server");
        anyhow::ensure!(
            bin.exists(),
            "{} not found: run scripts/install-stack (it installs moto[server])",
            bin.display()
        );
        let port = free_port();
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let moto = Moto {
            endpoint_url: format!("http://127.0.0.1:{port}"),
            child: Some(ChildGuard {
                name: "moto_server",
                child,
            }),
        };
        moto.wait_until_answering(Duration::from_secs(60)).await?;
        Ok(moto)
    }

    async fn wait_until_answering(&self, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        let http = reqwest::Client::new();
        // moto's own API: answers once the server is up, whatever the service.
        let url = format!("{}/moto-api/", self.endpoint_url);
        loop {
            if http.get(&url).send().await.is_ok() {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "moto_server did not answer at {url} within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kills the emulator, so that calls to it fail as with an unreachable KMS.
    pub fn stop(&mut self) {
        self.child = None;
    }

    fn credentials() -> Credentials {
        Credentials::new(ACCESS_KEY, ACCESS_KEY, None, None, "moto")
    }

    /// The configuration that points wire-guard's AWS backend at this emulator.
    pub fn kms_config(&self) -> AwsKmsConfig {
        AwsKmsConfig {
            region: Some(REGION.to_owned()),
            endpoint_url: Some(self.endpoint_url.clone()),
            attempt_timeout_ms: Some(5_000),
            credentials: Some(Moto::credentials()),
        }
    }

    /// An SDK client for setting up keys and aliases.
    pub async fn admin_client(&self) -> aws_sdk_kms::Client {
        let config = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .endpoint_url(&self.endpoint_url)
            .credentials_provider(Moto::credentials())
            .load()
            .await;
        aws_sdk_kms::Client::new(&config)
    }

    /// Creates a symmetric key with an alias; returns the key's id and ARN.
    pub async fn create_key(&self, alias: &str) -> anyhow::Result<(String, String)> {
        let client = self.admin_client().await;
        let created = client
            .create_key()
            .description("wire-guard kms test")
            .send()
            .await?;
        let metadata = created
            .key_metadata
            .ok_or_else(|| anyhow::anyhow!("CreateKey returned no metadata"))?;
        let arn = metadata
            .arn
            .clone()
            .ok_or_else(|| anyhow::anyhow!("CreateKey returned no ARN"))?;
        client
            .create_alias()
            .alias_name(alias)
            .target_key_id(&metadata.key_id)
            .send()
            .await?;
        Ok((metadata.key_id, arn))
    }
}
