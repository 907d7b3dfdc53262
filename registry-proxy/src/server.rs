//! Client connections: what one client can hold, for how long, and an audit record for
//! every request the HTTP layer refuses.
//!
//! Connections are served one by one with hyper's HTTP/1 server (rather than through
//! `axum::serve`) for three things axum does not expose:
//!
//! - **Caps on accept.** A global cap (`max_connections`) and a per-client-address cap
//!   (`max_connections_per_ip`, IPv6 per /64); a connection over either is closed at once,
//!   before a byte is read, and counted in `registry_proxy_connections_refused_total`.
//! - **Timeouts by phase.** A connection is idle (no request started), reading a request head
//!   (from its first byte), or busy (the request is with [`proxy::handle`], which bounds the
//!   body read and the upstream call itself). An idle connection is closed after
//!   `idle_timeout_ms`; a head not complete `header_read_timeout_ms` after its first byte
//!   closes the connection too. hyper's own header timer cannot tell the two phases apart (it
//!   also runs while a keep-alive connection waits), so the phases are tracked here: reads
//!   are watched by [`Watched`], requests by the service.
//! - **Refusals audited.** hyper answers a head it cannot parse itself (400 for conflicting
//!   `Content-Length` or a bad `Transfer-Encoding`, 431 for a head over `max_header_bytes`)
//!   and ends the connection with an error; that error, the header timeout and a client
//!   leaving mid-head each become an audit record, with the request line when one was read.
//!
//! hyper's read buffer is `max_header_bytes` too, so a connection buffers at most that much
//! before its request is parsed.

use std::{
    collections::HashMap,
    convert::Infallible,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use axum::body::Body;
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{Notify, OwnedSemaphorePermit, Semaphore},
    time::Instant,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    audit::{AuditRecord, rfc3339_now},
    auth::limit::client_key,
    canonical::redacted_target,
    proxy::{self, AppState},
};

/// Serves `listener` until `shutdown`, then lets open connections finish their requests.
pub async fn serve(listener: TcpListener, state: Arc<AppState>, shutdown: CancellationToken) {
    let config = &state.config;
    let global = Arc::new(Semaphore::new(config.max_connections));
    let per_ip = Arc::new(PerIp::default());
    let mut http = http1::Builder::new();
    http.max_buf_size(config.max_header_bytes)
        .max_header_size(config.max_header_bytes)
        // The phases are timed here instead (see the module documentation).
        .header_read_timeout(None)
        .keep_alive(true);
    let tracker = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, most likely: give connections time to close.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(global_permit) = global.clone().try_acquire_owned() else {
            refuse(&state, "max_connections", peer);
            continue;
        };
        let Some(ip_permit) = per_ip.acquire(peer.ip(), config.max_connections_per_ip) else {
            refuse(&state, "max_connections_per_ip", peer);
            continue;
        };
        let _ = stream.set_nodelay(true);
        tracker.spawn(connection(
            stream,
            peer,
            state.clone(),
            http.clone(),
            shutdown.clone(),
            (global_permit, ip_permit),
        ));
    }
    drop(listener);
    tracker.close();
    tracker.wait().await;
}

fn refuse(state: &AppState, reason: &str, peer: SocketAddr) {
    tracing::debug!(%peer, reason, "connection refused");
    state
        .metrics
        .connections_refused
        .with_label_values(&[reason])
        .inc();
}

/// Open connections per client address.
#[derive(Default)]
struct PerIp(Mutex<HashMap<IpAddr, usize>>);

/// One connection's place in [`PerIp`], given back on drop.
struct IpPermit {
    counts: Arc<PerIp>,
    key: IpAddr,
}

impl PerIp {
    fn acquire(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<IpPermit> {
        let key = client_key(ip);
        let mut counts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let count = counts.entry(key).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(IpPermit {
            counts: self.clone(),
            key,
        })
    }
}

impl Drop for IpPermit {
    fn drop(&mut self) {
        let mut counts = self.counts.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = counts.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// No request started since the last response.
    Idle,
    /// Bytes of a request head have arrived; hyper has not yet parsed it.
    Head,
    /// A request is being served.
    Busy,
}

struct PhaseState {
    kind: Kind,
    since: Instant,
    /// The start of the head being read, kept up to a bound, for the audit record of a head
    /// that is refused or never completed.
    head_start: Vec<u8>,
}

/// Where one connection is, shared by the reads, the service and the timer.
struct Phase {
    state: Mutex<PhaseState>,
    /// Wakes the timer when the deadline moves earlier (idle -> head) or appears (busy -> idle).
    changed: Notify,
    head_start_max: usize,
}

impl Phase {
    fn new(head_start_max: usize) -> Self {
        Self {
            state: Mutex::new(PhaseState {
                kind: Kind::Idle,
                since: Instant::now(),
                head_start: Vec::new(),
            }),
            changed: Notify::new(),
            head_start_max,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PhaseState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes arrived. Bytes of a request pipelined behind one being served are already in
    /// hyper's buffer when that one ends, so such a head is timed as idle, not as a head.
    fn read(&self, bytes: &[u8]) {
        let mut state = self.lock();
        match state.kind {
            Kind::Idle => {
                state.kind = Kind::Head;
                state.since = Instant::now();
                state.head_start.clear();
                self.changed.notify_one();
            }
            Kind::Head => {}
            Kind::Busy => return,
        }
        let room = self.head_start_max.saturating_sub(state.head_start.len());
        state
            .head_start
            .extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    /// A request reached the service; idle again once the returned guard drops.
    fn busy(self: &Arc<Self>) -> BusyGuard {
        let mut state = self.lock();
        state.kind = Kind::Busy;
        state.since = Instant::now();
        BusyGuard(self.clone())
    }

    fn kind(&self) -> Kind {
        self.lock().kind
    }

    /// When the current phase runs out, and which phase it is.
    fn deadline(&self, header: Duration, idle: Duration) -> (Kind, Option<Instant>) {
        let state = self.lock();
        let deadline = match state.kind {
            Kind::Idle => Some(state.since + idle),
            Kind::Head => Some(state.since + header),
            Kind::Busy => None,
        };
        (state.kind, deadline)
    }

    /// Method and target of the head read so far, if it has a request line's worth.
    fn request_line(&self) -> Option<(String, String)> {
        let state = self.lock();
        let text = String::from_utf8_lossy(&state.head_start);
        let line = text.trim_start().lines().next()?.trim_end();
        if line.is_empty() {
            return None;
        }
        let mut words = line.split(' ');
        let method = words.next().unwrap_or_default().to_owned();
        let target = words.next().map(redacted_target).unwrap_or_default();
        Some((method, target))
    }
}

struct BusyGuard(Arc<Phase>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.kind = Kind::Idle;
        state.since = Instant::now();
        self.0.changed.notify_one();
    }
}

/// The client's stream, with reads reported to the connection's [`Phase`].
struct Watched {
    stream: TcpStream,
    phase: Arc<Phase>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.phase.read(&buf.filled()[before..]);
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Why a connection ended, as far as the audit log cares.
enum End {
    /// hyper ended it; an error when it refused or lost a request.
    Closed(Result<(), hyper::Error>),
    /// A phase ran out of time.
    TimedOut(Kind),
}

/// Keeps `registry_proxy_connections_open` right however the connection ends.
struct OpenGuard(prometheus::IntGauge);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    state: Arc<AppState>,
    http: http1::Builder,
    shutdown: CancellationToken,
    _permits: (OwnedSemaphorePermit, IpPermit),
) {
    state.metrics.connections_open.inc();
    let _open = OpenGuard(state.metrics.connections_open.clone());
    let header_timeout = Duration::from_millis(state.config.header_read_timeout_ms);
    let idle_timeout = Duration::from_millis(state.config.idle_timeout_ms);
    // Enough for a method, a target of the largest accepted length and the version.
    let phase = Arc::new(Phase::new(state.config.max_uri_bytes + 32));
    let io = TokioIo::new(Watched {
        stream,
        phase: phase.clone(),
    });
    let service = {
        let (state, phase) = (state.clone(), phase.clone());
        service_fn(move |req: hyper::Request<Incoming>| {
            let busy = phase.busy();
            let state = state.clone();
            async move {
                let response = proxy::handle(state, peer, req.map(Body::new)).await;
                drop(busy);
                Ok::<_, Infallible>(response)
            }
        })
    };
    let conn = http.serve_connection(io, service);
    tokio::pin!(conn);
    let mut draining = false;
    let end = loop {
        let (kind, deadline) = phase.deadline(header_timeout, idle_timeout);
        tokio::select! {
            result = conn.as_mut() => break End::Closed(result),
            _ = phase.changed.notified() => {}
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                // The phase may have moved on just as the timer fired.
                if phase.deadline(header_timeout, idle_timeout) == (kind, deadline) {
                    break End::TimedOut(kind);
                }
            }
            _ = shutdown.cancelled(), if !draining => {
                // Finishes a request in flight, then closes; closes an idle connection now.
                conn.as_mut().graceful_shutdown();
                draining = true;
            }
        }
    };
    let (decision, reason, status) = match end {
        End::TimedOut(kind) => {
            let phase_name = if kind == Kind::Head { "header" } else { "idle" };
            state
                .metrics
                .connection_timeouts
                .with_label_values(&[phase_name])
                .inc();
            if kind != Kind::Head {
                return;
            }
            (
                "refused",
                format!(
                    "refused by the HTTP layer: request head not complete within {} ms; \
                     connection closed",
                    state.config.header_read_timeout_ms
                ),
                0,
            )
        }
        End::Closed(Ok(())) => return,
        End::Closed(Err(e)) if e.is_parse() => {
            // What hyper answered (role.rs `on_error`): 431 for a head over the limit, no
            // answer to an HTTP/2 preface, 400 otherwise.
            let status = if e.is_parse_too_large() {
                431
            } else if e.is_parse_version_h2() {
                0
            } else {
                400
            };
            ("refused", format!("refused by the HTTP layer: {e}"), status)
        }
        End::Closed(Err(e)) => {
            if phase.kind() != Kind::Head {
                // A reset, or a client leaving while its response was written: the request
                // itself was recorded by the proxy.
                tracing::debug!(%peer, error = %e, "connection ended");
                return;
            }
            (
                "aborted",
                format!("client closed the connection during the request head: {e}"),
                0,
            )
        }
    };
    let (method, path) = phase.request_line().unwrap_or_default();
    let record = AuditRecord {
        time: rfc3339_now(),
        request_id: state.next_request_id(),
        client_addr: peer.to_string(),
        method,
        path,
        decision,
        reason: Some(reason),
        status,
        ..AuditRecord::default()
    };
    state.count(&record);
    state.audit.write_unreserved(&record);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_ip_permits_are_counted_and_given_back() {
        let per_ip = Arc::new(PerIp::default());
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let first = per_ip.acquire(ip, 2).unwrap();
        let _second = per_ip.acquire(ip, 2).unwrap();
        assert!(per_ip.acquire(ip, 2).is_none());
        assert!(per_ip.acquire("192.0.2.8".parse().unwrap(), 2).is_some());
        drop(first);
        assert!(per_ip.acquire(ip, 2).is_some());
    }

    #[test]
    fn the_request_line_is_kept_for_the_record() {
        let phase = Phase::new(64);
        phase.read(b"\r\nGET /subjects?access_token=eyJ.a.b&x=1 HTTP/1.1\r\nHost: x");
        assert_eq!(
            phase.request_line(),
            Some(("GET".into(), "/subjects?access_token=REDACTED&x=1".into()))
        );
        let phase = Phase::new(8);
        phase.read(b"GET /a-very-long-target");
        assert_eq!(
            phase.request_line(),
            Some(("GET".into(), "/a-v".into())),
            "bounded"
        );
    }
}
