//! A Tansu broker with in-memory storage, one per test.

use std::{
    net::SocketAddr,
    process::{Command, Stdio},
    time::Duration,
};

use crate::stack::{ChildGuard, free_port, tansu_bin, wait_for_port};

/// Tansu reports every broker as this node id.
pub const TANSU_NODE_ID: i32 = 111;

pub struct Broker {
    pub addr: SocketAddr,
    pub log: std::path::PathBuf,
    _process: ChildGuard,
    _dir: tempfile::TempDir,
}

impl Broker {
    /// Starts a broker on a free loopback port and waits until it accepts connections.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(&[]).await
    }

    /// Starts a broker with extra command-line arguments or environment.
    pub async fn start_with(env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let dir = tempfile::tempdir()?;
        let log = dir.path().join("tansu.log");
        let out = std::fs::File::create(&log)?;
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(tansu_bin())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .envs(env.iter().copied())
            .stdout(out.try_clone()?)
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()?;
        let process = ChildGuard {
            name: "tansu",
            child,
        };
        wait_for_port(addr, Duration::from_secs(30)).await?;
        Ok(Self {
            addr,
            log,
            _process: process,
            _dir: dir,
        })
    }

    pub fn bootstrap(&self) -> String {
        self.addr.to_string()
    }
}
