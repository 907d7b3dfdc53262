//! A Tansu broker with in-memory storage, one per test: the second, independent broker
//! implementation the client tests also run against.

use std::{
    net::SocketAddr,
    process::{Command, Stdio},
    time::Duration,
};

use crate::{
    broker::Endpoint,
    stack::{ChildGuard, free_port, tansu_bin, wait_for_port},
};

/// Tansu reports every broker as this node id.
pub const TANSU_NODE_ID: i32 = 111;

pub struct Tansu {
    pub addr: SocketAddr,
    pub log: std::path::PathBuf,
    _process: ChildGuard,
    _dir: tempfile::TempDir,
}

impl Tansu {
    /// Starts a broker on a free loopback port and waits until it accepts connections.
    pub async fn start() -> anyhow::Result<Self> {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
        let dir = tempfile::tempdir()?;
        let log = dir.path().join("tansu.log");
        let out = std::fs::File::create(&log)?;
        let child = Command::new(tansu_bin())
            .args(["broker", "--listener-url", &format!("tcp://{addr}")])
            .args(["--advertised-listener-url", &format!("tcp://{addr}")])
            .args(["--storage-engine", "memory://tansu/"])
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

    pub fn endpoint(&self) -> Endpoint {
        Endpoint {
            bootstrap: self.addr.to_string(),
            node_id: TANSU_NODE_ID,
        }
    }
}
