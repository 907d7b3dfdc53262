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
    broker::Endpoint,
    stack::{ChildGuard, free_port, wait_for_port},
};

/// wire-guard's own login for dead-letter writes on the broker's SASL listener: the third of
/// [`crate::broker::USERS`], over SCRAM-SHA-512.
pub fn dead_letter_login() -> wire_guard::login::Credentials {
    let (username, password) = crate::broker::USERS[2];
    wire_guard::login::Credentials {
        mechanism: wire_guard::login::Mechanism::ScramSha512,
        username: username.into(),
        password: password.into(),
    }
}

/// A broker port base under which node `node_id` lands on a port that was just free.
pub fn broker_port_base(node_id: i32) -> u16 {
    let port = free_port();
    u16::try_from(node_id)
        .ok()
        .and_then(|id| port.checked_sub(id))
        .unwrap_or(port)
}

/// wire-guard running inside the test process.
pub struct InProcess {
    pub addr: SocketAddr,
    /// The proxy port of node 0.
    pub broker_port_base: u16,
    /// The node id of the broker behind the proxy.
    pub node_id: i32,
    pub admin: SocketAddr,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<Result<(), wire_guard::Error>>,
}

impl InProcess {
    /// Starts wire-guard in front of `upstream`; `tune` adjusts the configuration first.
    pub async fn start(
        upstream: &Endpoint,
        tune: impl FnOnce(&mut Config),
    ) -> anyhow::Result<Self> {
        crate::stack::init_test_logging();
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
        let mut config = Config::new(vec![upstream.bootstrap.clone()], "127.0.0.1");
        let base = broker_port_base(upstream.node_id);
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
            node_id: upstream.node_id,
            admin,
            shutdown,
            task,
        })
    }

    pub fn bootstrap(&self) -> String {
        self.addr.to_string()
    }

    /// The proxy port the broker's node is served on.
    pub fn broker_port(&self) -> anyhow::Result<u16> {
        Ok(self.broker_port_base + u16::try_from(self.node_id)?)
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
    child: ChildGuard,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub admin: SocketAddr,
}

impl Process {
    /// Starts the binary on ports picked for it. A port picked as free can be taken by another
    /// test before the proxy binds it, and the proxy then exits at startup; that start is
    /// retried on new ports, so a test never talks to a proxy that already gave up.
    pub async fn start(
        upstream: &Endpoint,
        extra: &[&str],
        log_dir: &Path,
    ) -> anyhow::Result<Self> {
        let mut last = None;
        for _ in 0..3 {
            match Self::start_once(upstream, extra, log_dir).await {
                Ok(process) => return Ok(process),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("wire-guard did not start")))
    }

    async fn start_once(
        upstream: &Endpoint,
        extra: &[&str],
        log_dir: &Path,
    ) -> anyhow::Result<Self> {
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
        let log = log_dir.join("wire-guard.log");
        let out = std::fs::File::create(&log)?;
        let child = Command::new(binary())
            .args(["--upstream", &upstream.bootstrap])
            .args(["--listen", &addr.to_string()])
            .args([
                "--broker-port-base",
                &broker_port_base(upstream.node_id).to_string(),
            ])
            .args(["--log-format", "json"])
            .args(["--admin-listen", &admin.to_string()])
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
        let mut process = Self {
            addr,
            log,
            child: guard,
            admin,
        };
        // The admin endpoint is bound after the bootstrap listener: once it answers, startup
        // is past every bind.
        wait_for_port(addr, Duration::from_secs(20)).await?;
        wait_for_port(admin, Duration::from_secs(20)).await?;
        anyhow::ensure!(
            process.is_running(),
            "wire-guard exited at startup: {}",
            std::fs::read_to_string(&process.log).unwrap_or_default()
        );
        Ok(process)
    }

    pub fn bootstrap(&self) -> String {
        self.addr.to_string()
    }

    /// The process's resident memory, from `/proc`.
    pub fn rss_bytes(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .ok_or_else(|| anyhow::anyhow!("no VmRSS in /proc status"))?
            .parse()?;
        Ok(kib * 1024)
    }

    /// The Prometheus exposition from the admin endpoint.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        Ok(reqwest::get(format!("http://{}/metrics", self.admin))
            .await?
            .text()
            .await?)
    }

    pub fn pid(&self) -> u32 {
        self.child.child.id()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.child.try_wait(), Ok(None))
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
