//! A Tansu broker with in-memory storage, one per test.

use std::{
    net::SocketAddr,
    process::{Command, Stdio},
    time::Duration,
};

use crate::stack::{ChildGuard, free_port, python_bin, repo_root, tansu_bin, wait_for_port};

/// Tansu reports every broker as this node id.
pub const TANSU_NODE_ID: i32 = 111;

pub struct Broker {
    /// Where clients (or the proxy) connect: Tansu itself, or the front when there is one.
    pub addr: SocketAddr,
    pub log: std::path::PathBuf,
    _front: Option<ChildGuard>,
    _process: ChildGuard,
    _dir: tempfile::TempDir,
}

/// How the SASL/TLS front in front of Tansu behaves.
#[derive(Debug, Default, Clone)]
pub struct Front<'a> {
    /// `name:password` pairs; with any, SASL is required.
    pub users: &'a [&'a str],
    /// TLS towards clients with this certificate and key.
    pub tls: Option<(&'a std::path::Path, &'a std::path::Path)>,
}

impl Broker {
    /// Starts a broker on a free loopback port and waits until it accepts connections.
    pub async fn start() -> anyhow::Result<Self> {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
        Self::start_tansu(addr, addr, None, tempfile::tempdir()?).await
    }

    /// Starts Tansu behind the SASL/TLS front; `addr` is the front. Tansu advertises the front's
    /// address, so every address it hands out leads through the front.
    pub async fn start_behind_front(front: Front<'_>) -> anyhow::Result<Self> {
        let tansu: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
        let mut cmd = Command::new(python_bin());
        cmd.arg(repo_root().join("tests/broker_front/broker_front.py"))
            .args([
                "--listen",
                &addr.to_string(),
                "--upstream",
                &tansu.to_string(),
            ]);
        for user in front.users {
            cmd.args(["--user", user]);
        }
        if let Some((cert, key)) = front.tls {
            cmd.arg("--tls-cert").arg(cert).arg("--tls-key").arg(key);
        }
        let dir = tempfile::tempdir()?;
        let front_log = std::fs::File::create(dir.path().join("broker-front.log"))?;
        let guard = ChildGuard {
            name: "broker-front",
            child: cmd
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(front_log)
                .spawn()?,
        };
        Self::start_tansu(tansu, addr, Some(guard), dir).await
    }

    async fn start_tansu(
        listen: SocketAddr,
        advertised: SocketAddr,
        front: Option<ChildGuard>,
        dir: tempfile::TempDir,
    ) -> anyhow::Result<Self> {
        let log = dir.path().join("tansu.log");
        let out = std::fs::File::create(&log)?;
        let child = Command::new(tansu_bin())
            .args(["broker", "--listener-url", &format!("tcp://{listen}")])
            .args(["--advertised-listener-url", &format!("tcp://{advertised}")])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(out.try_clone()?)
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()?;
        let process = ChildGuard {
            name: "tansu",
            child,
        };
        wait_for_port(listen, Duration::from_secs(30)).await?;
        wait_for_port(advertised, Duration::from_secs(30)).await?;
        Ok(Self {
            addr: advertised,
            log,
            _front: front,
            _process: process,
            _dir: dir,
        })
    }

    pub fn bootstrap(&self) -> String {
        self.addr.to_string()
    }
}
