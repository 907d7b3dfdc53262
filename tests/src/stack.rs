//! Locating the installed test stack, picking ports and owning child processes.

use std::{
    net::{SocketAddr, TcpListener},
    path::PathBuf,
    process::Child,
    time::{Duration, Instant},
};

/// The directory `scripts/install-stack` installs into.
pub fn cache_dir() -> PathBuf {
    match std::env::var_os("KAFKA_GUARD_CACHE") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
            .join(".cache/kafka-guard"),
    }
}

/// The repository root (the parent of this crate).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests crate lives in the workspace")
        .to_path_buf()
}

fn installed(env: &str, default: PathBuf) -> PathBuf {
    let path = std::env::var_os(env).map(PathBuf::from).unwrap_or(default);
    assert!(
        path.exists(),
        "{} not found: run scripts/install-stack first (or set {env})",
        path.display()
    );
    path
}

/// The Tansu broker binary.
pub fn tansu_bin() -> PathBuf {
    installed("TANSU_BIN", cache_dir().join("bin/tansu"))
}

/// The directory of jars holding Apache Kafka, its tools and the Java client.
pub fn kafka_libs() -> PathBuf {
    installed("KAFKA_LIBS", cache_dir().join("kafka/libs"))
}

/// The virtualenv Python with the Kafka client libraries.
pub fn python_bin() -> PathBuf {
    installed("KAFKA_GUARD_PYTHON", cache_dir().join("venv/bin/python"))
}

/// The `oauth2-mock-server` command.
pub fn oauth2_mock_server_bin() -> PathBuf {
    installed(
        "OAUTH2_MOCK_SERVER",
        cache_dir().join("node/node_modules/.bin/oauth2-mock-server"),
    )
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

/// Waits until something accepts TCP connections on `addr`.
pub async fn wait_for_port(addr: SocketAddr, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!("nothing listening on {addr} after {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A child process killed when dropped, so a failing test leaves nothing running.
pub struct ChildGuard {
    pub name: &'static str,
    pub child: Child,
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Logs from the services under test, shown by `cargo test` on failure.
pub fn init_test_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_test_writer()
        .try_init();
}
