//! Apache Kafka, the reference broker: a single-node KRaft broker started by
//! `scripts/kafka-broker` from the jars `scripts/install-stack` resolved.
//!
//! One broker serves every test of a test binary ([`shared`]): starting a JVM broker takes
//! seconds, and tests stay apart by using topics, groups and transactional ids of their own. It
//! listens on four listeners, each advertised as itself, so a client (or wire-guard) that
//! connects to one is only ever sent to that one:
//!
//! | listener         | security                                            |
//! |------------------|-----------------------------------------------------|
//! | `plaintext`      | none                                                |
//! | `sasl_plaintext` | SASL PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 ([`USERS`]) |
//! | `ssl`            | TLS with the certificate in [`Kafka::certs`]        |
//! | `sasl_ssl`       | TLS and SASL                                        |
//!
//! The launcher watches its standard input, a pipe this process holds: when the test process
//! exits, however it exits, the pipe closes and the launcher stops the broker.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    process::{Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use bytes::{Buf, BufMut, BytesMut};
use kafka_protocol::{
    messages::{ApiKey, MetadataRequest, MetadataResponse, RequestHeader, ResponseHeader},
    protocol::{Decodable, Encodable},
};

use crate::{
    certs::{self, Certs},
    stack::{ChildGuard, free_port, kafka_libs, repo_root},
};

/// The node id of every broker the harness starts.
pub const KAFKA_NODE_ID: i32 = 1;

/// SASL users known to the broker, for PLAIN and both SCRAM mechanisms: `(name, password)`.
pub const USERS: [(&str, &str); 3] = [
    ("alice", "alice-secret"),
    ("bob", "bob-secret"),
    ("carol", "carol-secret"),
];

/// How long a broker may take to start before the harness gives up.
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// Where a proxy under test sends its traffic: a bootstrap address and the node id the broker
/// behind it reports (which decides the broker's proxy port).
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub bootstrap: String,
    pub node_id: i32,
}

/// The four client listeners of one broker.
#[derive(Debug, Clone, Copy)]
pub struct Listeners {
    pub plaintext: SocketAddr,
    pub sasl_plaintext: SocketAddr,
    pub ssl: SocketAddr,
    pub sasl_ssl: SocketAddr,
}

pub struct Kafka {
    pub listeners: Listeners,
    /// The broker's TLS certificate (`cert`, `key`), the CA that signed it (`ca`), and a client
    /// certificate signed by the same CA.
    pub certs: Certs,
    pub log: std::path::PathBuf,
    _process: ChildGuard,
    _dir: tempfile::TempDir,
}

/// The broker shared by every test in this test binary, started on first use.
pub fn shared() -> &'static Kafka {
    static SHARED: OnceLock<Kafka> = OnceLock::new();
    SHARED.get_or_init(|| match Kafka::start() {
        Ok(kafka) => kafka,
        Err(e) => panic!("cannot start Apache Kafka: {e:#}"),
    })
}

impl Kafka {
    /// Starts a broker of its own and waits until it serves Metadata. Blocks: brokers start in
    /// seconds, and [`shared`] starts one inside a `OnceLock`.
    pub fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let certs = certs::write(dir.path())?;
        let addr = |port: u16| -> SocketAddr { SocketAddr::from(([127, 0, 0, 1], port)) };
        let listeners = Listeners {
            plaintext: addr(free_port()),
            sasl_plaintext: addr(free_port()),
            ssl: addr(free_port()),
            sasl_ssl: addr(free_port()),
        };
        let log = dir.path().join("broker.log");
        let out = std::fs::File::create(&log)?;
        let mut cmd = Command::new("bash");
        cmd.arg(repo_root().join("scripts/kafka-broker"))
            .env("KAFKA_LIBS", kafka_libs())
            .arg("--dir")
            .arg(dir.path().join("kafka"))
            .args(["--node-id", &KAFKA_NODE_ID.to_string()])
            .args(["--controller-port", &free_port().to_string()])
            .args(["--plaintext-port", &listeners.plaintext.port().to_string()])
            .args([
                "--sasl-plaintext-port",
                &listeners.sasl_plaintext.port().to_string(),
            ])
            .args(["--ssl-port", &listeners.ssl.port().to_string()])
            .args(["--sasl-ssl-port", &listeners.sasl_ssl.port().to_string()])
            .arg("--cert")
            .arg(&certs.cert)
            .arg("--key")
            .arg(&certs.key)
            .arg("--exit-on-stdin-eof");
        for (name, password) in USERS {
            cmd.args(["--user", &format!("{name}:{password}")]);
        }
        let child = cmd
            .stdin(Stdio::piped())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()?;
        let mut process = ChildGuard {
            name: "kafka",
            child,
        };
        let started = Instant::now();
        loop {
            if let Some(status) = process.child.try_wait()? {
                anyhow::bail!("scripts/kafka-broker exited ({status}):\n{}", tail(&log));
            }
            if serves_metadata(listeners.plaintext) {
                break;
            }
            if started.elapsed() > START_TIMEOUT {
                anyhow::bail!(
                    "Kafka did not serve Metadata within {START_TIMEOUT:?}:\n{}",
                    tail(&log)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        tracing::info!(elapsed = ?started.elapsed(), plaintext = %listeners.plaintext, "Apache Kafka ready");
        // The guard keeps the write end of the launcher's stdin: the pipe stays open for as long
        // as this process lives.
        Ok(Self {
            listeners,
            certs,
            log,
            _process: process,
            _dir: dir,
        })
    }

    /// The plaintext listener, for a proxy or a client.
    pub fn endpoint(&self) -> Endpoint {
        self.endpoint_of(self.listeners.plaintext)
    }

    /// One of the listeners, for a proxy.
    pub fn endpoint_of(&self, listener: SocketAddr) -> Endpoint {
        Endpoint {
            bootstrap: listener.to_string(),
            node_id: KAFKA_NODE_ID,
        }
    }
}

fn tail(log: &std::path::Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Whether the broker at `addr` answers a Metadata request naming at least one broker: the
/// port opens a little before the broker has caught up with its own metadata.
fn serves_metadata(addr: SocketAddr) -> bool {
    metadata_brokers(addr).is_ok_and(|n| n > 0)
}

fn metadata_brokers(addr: SocketAddr) -> anyhow::Result<usize> {
    const VERSION: i16 = 4;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut header = RequestHeader::default();
    header.request_api_key = ApiKey::Metadata as i16;
    header.request_api_version = VERSION;
    header.correlation_id = 1;
    let mut request = MetadataRequest::default();
    request.topics = Some(Vec::new());
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    header.encode(&mut buf, ApiKey::Metadata.request_header_version(VERSION))?;
    request.encode(&mut buf, VERSION)?;
    let len = i32::try_from(buf.len() - 4)?;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    stream.write_all(&buf)?;
    let mut prefix = [0u8; 4];
    stream.read_exact(&mut prefix)?;
    let len = usize::try_from(i32::from_be_bytes(prefix))?;
    anyhow::ensure!(len < 1 << 20, "implausible Metadata response size {len}");
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body)?;
    let mut body = bytes::Bytes::from(body);
    ResponseHeader::decode(&mut body, ApiKey::Metadata.response_header_version(VERSION))?;
    let response = MetadataResponse::decode(&mut body, VERSION)?;
    anyhow::ensure!(!body.has_remaining(), "trailing bytes");
    Ok(response.brokers.len())
}
