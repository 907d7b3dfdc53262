//! Connections to the upstream brokers, in plaintext or TLS.

use std::{sync::Arc, time::Duration};

use rustls::pki_types::ServerName;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
};
use tokio_rustls::TlsConnector;

use crate::error::Error;

/// Either side of a proxied connection, after any TLS handshake.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}
pub type BoxStream = Box<dyn Stream>;

/// Probes after a minute of silence, every 10 s, and gives up after 6 unanswered probes.
const KEEPALIVE: socket2::TcpKeepalive = socket2::TcpKeepalive::new()
    .with_time(Duration::from_secs(60))
    .with_interval(Duration::from_secs(10))
    .with_retries(6);

/// Opens connections to brokers.
#[derive(Clone)]
pub struct Connector {
    tls: Option<TlsConnector>,
    timeout: Duration,
}

impl Connector {
    pub fn new(tls: Option<Arc<rustls::ClientConfig>>, timeout: Duration) -> Self {
        Self {
            tls: tls.map(TlsConnector::from),
            timeout,
        }
    }

    /// Connects to the first of `addrs` that answers.
    pub async fn connect_any(&self, addrs: &[String]) -> Result<BoxStream, Error> {
        let mut last = None;
        for addr in addrs {
            match self.connect(addr).await {
                Ok(stream) => return Ok(stream),
                Err(e) => {
                    tracing::warn!(upstream = %addr, error = %e, "upstream unreachable, trying the next");
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| Error::Config("no upstream configured".into())))
    }

    pub async fn connect(&self, addr: &str) -> Result<BoxStream, Error> {
        let fail = |reason: String| Error::UpstreamConnect {
            addr: addr.to_owned(),
            reason,
        };
        let tcp = tokio::time::timeout(self.timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| fail(format!("no answer within {:?}", self.timeout)))?
            .map_err(|e| fail(e.to_string()))?;
        tcp.set_nodelay(true).map_err(|e| fail(e.to_string()))?;
        // A broker that vanishes without a FIN (power loss, a dropped NAT entry) is noticed.
        socket2::SockRef::from(&tcp)
            .set_tcp_keepalive(&KEEPALIVE)
            .map_err(|e| fail(e.to_string()))?;
        let Some(tls) = &self.tls else {
            return Ok(Box::new(tcp));
        };
        let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(host.to_owned()).map_err(|e| fail(e.to_string()))?;
        let stream = tokio::time::timeout(self.timeout, tls.connect(name, tcp))
            .await
            .map_err(|_| fail("TLS handshake timed out".into()))?
            .map_err(|e| fail(format!("TLS handshake: {e}")))?;
        Ok(Box::new(stream))
    }
}
