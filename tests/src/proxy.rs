//! wire-guard under test: in-process through `wire_guard::run`, or as the real binary when a
//! test needs its log output.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use wire_guard::Config;

use crate::{
    broker::TANSU_NODE_ID,
    stack::{ChildGuard, free_port, wait_for_port},
};

/// A broker port base under which Tansu's node lands on a port that was just free.
pub fn broker_port_base() -> u16 {
    let port = free_port();
    port.checked_sub(TANSU_NODE_ID as u16).unwrap_or(port)
}

/// wire-guard running inside the test process.
pub struct InProcess {
    pub addr: SocketAddr,
    /// The proxy port of node 0.
    pub broker_port_base: u16,
    pub admin: SocketAddr,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<Result<(), wire_guard::Error>>,
}

impl InProcess {
    /// Starts wire-guard in front of `upstream`; `tune` adjusts the configuration first.
    pub async fn start(upstream: &str, tune: impl FnOnce(&mut Config)) -> anyhow::Result<Self> {
        crate::stack::init_test_logging();
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
        let mut config = Config::new(vec![upstream.to_owned()], "127.0.0.1");
        let base = broker_port_base();
        config.broker_port_base = Some(base);
        config.admin_listen = Some(admin);
        config.drain_timeout = Duration::from_secs(5);
        tune(&mut config);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(wire_guard::run(config, listener, shutdown.clone()));
        wait_for_port(admin, Duration::from_secs(10)).await?;
        Ok(Self {
            addr,
            broker_port_base: base,
            admin,
            shutdown,
            task,
        })
    }

    pub fn bootstrap(&self) -> String {
        self.addr.to_string()
    }

    /// The proxy port Tansu's node is served on.
    pub fn broker_port(&self) -> anyhow::Result<u16> {
        Ok(self.broker_port_base + u16::try_from(TANSU_NODE_ID)?)
    }

    /// The Prometheus exposition from the admin endpoint.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        Ok(reqwest::get(format!("http://{}/metrics", self.admin))
            .await?
            .text()
            .await?)
    }

    /// Starts graceful shutdown and waits for `run` to return.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.task.await??;
        Ok(())
    }
}

/// The wire-guard binary built next to this test, for tests that read its log.
pub fn binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/wire-guard
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("wire-guard"))
        .expect("target directory");
    assert!(
        bin.exists(),
        "{} not found: build the workspace binaries first (cargo build --workspace)",
        bin.display()
    );
    bin
}

/// wire-guard as a child process, logging JSON lines to a file.
pub struct Process {
    pub addr: SocketAddr,
    pub log: PathBuf,
    _child: ChildGuard,
}

impl Process {
    pub async fn start(upstream: &str, extra: &[&str], log_dir: &Path) -> anyhow::Result<Self> {
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let log = log_dir.join("wire-guard.log");
        let out = std::fs::File::create(&log)?;
        let child = Command::new(binary())
            .args(["--upstream", upstream, "--listen", &addr.to_string()])
            .args(["--broker-port-base", &broker_port_base().to_string()])
            .args(["--log-format", "json"])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()?;
        let guard = ChildGuard {
            name: "wire-guard",
            child,
        };
        wait_for_port(addr, Duration::from_secs(20)).await?;
        Ok(Self {
            addr,
            log,
            _child: guard,
        })
    }

    pub fn bootstrap(&self) -> String {
        self.addr.to_string()
    }

    /// Waits (bounded) until the log holds a line containing every needle.
    pub async fn wait_for_log(&self, needles: &[&str]) -> anyhow::Result<String> {
        for _ in 0..100 {
            let text = std::fs::read_to_string(&self.log)?;
            if let Some(line) = text.lines().find(|l| needles.iter().all(|n| l.contains(n))) {
                return Ok(line.to_owned());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::bail!(
            "no log line with {needles:?} in:\n{}",
            std::fs::read_to_string(&self.log)?
        )
    }
}
