//! One proxied client connection.
//!
//! Two loops run concurrently on the connection's task:
//! - `requests` reads client frames, peeks their header, queues them in the in-flight queue
//!   (see [`crate::inflight`]) and forwards the original bytes upstream;
//! - `responses` pops the oldest in-flight request for each upstream frame, checks the
//!   correlation id, rewrites the response if its API carries addresses or versions, and
//!   writes it to the client.
//!
//! Invariants: every queued request gets exactly one response, responses keep request order,
//! and a frame nobody needs to change is forwarded as the bytes received. Protocol corruption
//! from either side ends the connection with one log line naming the cause; other connections
//! are unaffected. On shutdown the request loop stops reading, the response loop drains what is
//! in flight, then the connection closes.

use std::{
    net::SocketAddr,
    panic::AssertUnwindSafe,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::FutureExt;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, DescribeClusterResponse, DescribeConfigsResponse,
    FindCoordinatorResponse, MetadataResponse, ProduceResponse, ResponseHeader,
    SaslAuthenticateResponse, produce_response::TopicProduceResponse,
};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader, BufWriter, ReadHalf, WriteHalf},
    sync::mpsc,
};

use crate::{
    codec,
    error::{Error, Side, api_name},
    frame::{self, Frame},
    header,
    inflight::{Acks0, InFlight, MAX_IN_FLIGHT, Outstanding, Reply},
    limits::Reservation,
    rewrite,
    sasl::SaslState,
    server::{Server, Target},
    stage::{self, DecodeTable, LocalPartition, ProduceAction, data_quality::Producer},
    upstream::BoxStream,
    versions::{self, Advertised},
};

const IO_BUFFER: usize = 64 * 1024;
/// Enough of a request for its header and, in practice, a Produce request's `acks`; a request
/// whose `acks` lies further in is read whole.
const REQUEST_HEAD: usize = 512;
/// Enough of a response for its correlation id.
const RESPONSE_HEAD: usize = 4;

/// A request on its way upstream.
enum Request {
    /// Only its head has been read; the rest streams on as it arrives.
    Streamed(frame::Head),
    /// Read whole, because the proxy needed its body; holds its room in the buffer budget.
    Whole(Frame, Reservation),
}

/// Who a connection belongs to, for its log lines.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub id: u64,
    pub peer: SocketAddr,
    pub target: Target,
}

/// Proxies one client connection until either side closes, logging why it ended.
/// `principal` is the client certificate's, when the client authenticated with mutual TLS.
pub async fn serve(
    server: Arc<Server>,
    client: BoxStream,
    info: ConnInfo,
    principal: Option<String>,
) {
    server.metrics.connections_active.inc();
    if let Some(principal) = &principal {
        tracing::info!(conn = info.id, peer = %info.peer, principal, mechanism = "TLS", "client authenticated");
    }
    // A bug that panics while serving one connection ends that connection only: the panic is
    // caught here, logged and counted, and the gauges stay true.
    let serving = AssertUnwindSafe(proxy(&server, client, info, principal)).catch_unwind();
    let result = tokio::select! {
        r = serving => r.unwrap_or_else(|panic| Err(Error::Panic(panic_message(&panic)))),
        () = server.force.cancelled() => {
            tracing::warn!(conn = info.id, peer = %info.peer, "closing connection: shutdown drain deadline passed");
            Ok(())
        }
    };
    server.metrics.connections_active.dec();
    match result {
        Ok(()) => tracing::debug!(conn = info.id, peer = %info.peer, "connection closed"),
        Err(e) if e.is_disconnect() => {
            tracing::debug!(conn = info.id, peer = %info.peer, reason = %e, "connection closed")
        }
        Err(e) => {
            let (side, cause) = blame(&e);
            server
                .metrics
                .connection_errors
                .with_label_values(&[side, cause])
                .inc();
            tracing::warn!(conn = info.id, peer = %info.peer, target = ?info.target, blame = side, cause, error = %e, "closing connection");
        }
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".to_owned())
}

/// Who caused a connection to end (`client`, `broker` or `proxy`), and how, for the log line
/// and the `connection_errors_total` labels.
fn blame(e: &Error) -> (&'static str, &'static str) {
    let side = |side: &Side| match side {
        Side::Client => "client",
        Side::Upstream => "broker",
    };
    match e {
        Error::FrameTooLarge { side: s, .. } | Error::NegativeLength { side: s, .. } => {
            (side(s), "frame_size")
        }
        Error::OverBudget { side: s, .. } => (side(s), "buffer_budget"),
        Error::Truncated { side: s, .. }
        | Error::ShortFrame { side: s, .. }
        | Error::Malformed { side: s, .. } => (side(s), "malformed"),
        Error::Timeout { side: s, .. } => (side(s), "timeout"),
        Error::Io { side: s, .. } => (side(s), "io"),
        Error::UnadvertisedVersion { .. } => ("client", "unadvertised_version"),
        Error::DuplicateCorrelation { .. } => ("client", "duplicate_correlation_id"),
        Error::ClientTls(_) => ("client", "tls"),
        Error::Idle(_) => ("client", "idle"),
        // A broker that closes on a request for an API it does not know is refusing the
        // client's request, not failing.
        Error::UpstreamDropped { api_key, .. } if ApiKey::try_from(*api_key).is_err() => {
            ("client", "unknown_api")
        }
        Error::UpstreamClosed | Error::UpstreamDropped { .. } => ("broker", "closed"),
        Error::CorrelationMismatch { .. } | Error::Unsolicited => ("broker", "protocol"),
        Error::UpstreamConnect { .. } => ("broker", "connect"),
        Error::UnknownNode(_) => ("proxy", "no_route"),
        Error::PortMapping { .. } => ("proxy", "port_mapping"),
        Error::Config(_) | Error::Shared(_) => ("proxy", "internal"),
        Error::Panic(_) => ("proxy", "panic"),
    }
}

async fn proxy(
    server: &Arc<Server>,
    client: BoxStream,
    info: ConnInfo,
    principal: Option<String>,
) -> Result<(), Error> {
    let limits = &server.config.limits;
    let (client_read, client_write) = tokio::io::split(client);
    let mut client_read = BufReader::with_capacity(IO_BUFFER, client_read);
    // The broker connection is opened for a client that has said something, not for every
    // socket: idle or half-open connections cost the cluster nothing.
    let first = within(
        limits.first_request_timeout,
        Side::Client,
        "sent no request",
        async { client_read.fill_buf().await.map(|b| b.is_empty()) },
    )
    .await?
    .map_err(Error::io(Side::Client))?;
    if first {
        return Ok(());
    }
    let upstream = match info.target {
        Target::Bootstrap => {
            server
                .connector
                .connect_any(&server.config.upstreams)
                .await?
        }
        Target::Node(node) => {
            let addr = server
                .routes
                .upstream_of(node)
                .ok_or(Error::UnknownNode(node))?;
            server.connector.connect(&addr).await?
        }
    };
    let (upstream_read, upstream_write) = tokio::io::split(upstream);
    let (tx, rx) = mpsc::channel(MAX_IN_FLIGHT);
    // A SASL exchange on a mutual-TLS connection replaces the certificate's principal, as in Kafka.
    let sasl = Mutex::new(SaslState::authenticated_as(principal));
    let outstanding = Outstanding::default();
    let advertised = Advertised::default();
    let conn = Conn {
        server,
        info,
        sasl: &sasl,
        outstanding: &outstanding,
        advertised: &advertised,
    };
    tokio::try_join!(
        conn.requests(
            client_read,
            BufWriter::with_capacity(IO_BUFFER, upstream_write),
            tx,
        ),
        conn.responses(
            BufReader::with_capacity(IO_BUFFER, upstream_read),
            BufWriter::with_capacity(IO_BUFFER, client_write),
            rx,
        ),
    )?;
    Ok(())
}

/// Runs `work`, failing with a [`Error::Timeout`] that blames `side` if it takes longer than
/// `limit`.
async fn within<T>(
    limit: Duration,
    side: Side,
    what: &str,
    work: impl Future<Output = T>,
) -> Result<T, Error> {
    tokio::time::timeout(limit, work)
        .await
        .map_err(|_| Error::Timeout {
            side,
            what: what.to_owned(),
            after: limit,
        })
}

struct Conn<'a> {
    server: &'a Arc<Server>,
    info: ConnInfo,
    sasl: &'a Mutex<SaslState>,
    outstanding: &'a Outstanding,
    advertised: &'a Advertised,
}

impl Conn<'_> {
    fn sasl(&self) -> std::sync::MutexGuard<'_, SaslState> {
        self.sasl.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn requests(
        &self,
        mut client: BufReader<ReadHalf<BoxStream>>,
        mut upstream: BufWriter<WriteHalf<BoxStream>>,
        queue: mpsc::Sender<InFlight>,
    ) -> Result<(), Error> {
        let max = self.server.config.max_frame_bytes;
        let limits = &self.server.config.limits;
        let mut scratch = Vec::new();
        // Set by a SaslHandshake, cleared once the broker confirms a principal.
        let mut auth_deadline: Option<Instant> = None;
        loop {
            if auth_deadline.is_some() && self.sasl().principal.is_some() {
                auth_deadline = None;
            }
            // Wait for the next frame to start (cancel-safe) so shutdown never cuts one in half.
            let idle_at = Instant::now() + limits.idle_timeout;
            let wake = auth_deadline.map_or(idle_at, |a| a.min(idle_at));
            tokio::select! {
                biased;
                () = self.server.shutdown.cancelled() => return Ok(()),
                ready = client.fill_buf() => {
                    if ready.map_err(Error::io(Side::Client))?.is_empty() {
                        return Ok(());
                    }
                }
                () = tokio::time::sleep_until(wake.into()) => {
                    if auth_deadline.is_some_and(|a| a <= Instant::now()) {
                        return Err(Error::Timeout {
                            side: Side::Client,
                            what: "did not finish authenticating".into(),
                            after: limits.auth_timeout,
                        });
                    }
                    if wake == idle_at && self.outstanding.is_empty() {
                        return Err(Error::Idle(limits.idle_timeout));
                    }
                    continue;
                }
            }
            let mut head = within(
                limits.frame_timeout,
                Side::Client,
                "did not finish a request header",
                frame::read_head(&mut client, max, Side::Client, REQUEST_HEAD),
            )
            .await??
            .ok_or(Error::Truncated {
                side: Side::Client,
                got: 0,
                expected: 4,
            })?;
            self.server
                .metrics
                .bytes_from_clients
                .inc_by(head.wire_len() as u64);
            let meta = header::peek_request(head.payload())?;
            self.server.metrics.request(meta.api_key);
            if !self.outstanding.insert(meta.correlation_id) {
                return Err(Error::DuplicateCorrelation {
                    correlation_id: meta.correlation_id,
                });
            }
            let key = ApiKey::try_from(meta.api_key).ok();
            let version = meta.api_version;

            if let Some(key) = key.filter(|k| stage::version_checked(*k)) {
                let supported = versions::supported(key);
                let ok = supported.is_some_and(|r| r.min <= version && version <= r.max);
                if !ok && key == ApiKey::ApiVersions && version > 0 {
                    // Answered here; the request itself goes nowhere.
                    within(
                        limits.frame_timeout,
                        Side::Client,
                        "did not finish a request",
                        head.forward(
                            &mut client,
                            &mut tokio::io::sink(),
                            Side::Client,
                            &mut scratch,
                        ),
                    )
                    .await??;
                    let local = unsupported_api_versions(meta.correlation_id)?;
                    queue
                        .send(self.in_flight(meta, Reply::Local(local)))
                        .await
                        .map_err(|_| Error::UpstreamClosed)?;
                    continue;
                }
                if !ok {
                    return Err(Error::UnadvertisedVersion {
                        api: key,
                        version,
                        supported: supported.map_or("none".into(), |r| r.to_string()),
                    });
                }
            }
            if let (Some(api), Err(range)) = (key, self.advertised.check(meta.api_key, version)) {
                return Err(Error::UnadvertisedVersion {
                    api,
                    version,
                    supported: range.map_or("none".into(), |r| r.to_string()),
                });
            }

            let sasl = matches!(key, Some(ApiKey::SaslHandshake | ApiKey::SaslAuthenticate));
            if sasl && head.wire_len() - 4 > limits.max_sasl_frame_bytes {
                // Unauthenticated bytes: capped as Kafka caps them, before they are read.
                return Err(Error::FrameTooLarge {
                    side: Side::Client,
                    len: (head.wire_len() - 4) as i64,
                    max: limits.max_sasl_frame_bytes,
                });
            }
            let mut reply = Reply::Upstream;
            let mut acks0 = false;
            if key == Some(ApiKey::Produce) {
                let mut acks = header::produce_acks(head.payload(), version);
                if acks.is_err() && !head.is_complete() {
                    // A long client or transactional id pushed `acks` past the first read; it
                    // lies within the two length-prefixed strings' largest size.
                    within(
                        limits.frame_timeout,
                        Side::Client,
                        "did not finish a request header",
                        head.read_more(&mut client, header::PRODUCE_ACKS_HORIZON),
                    )
                    .await??;
                    acks = header::produce_acks(head.payload(), version);
                }
                if acks? == 0 {
                    reply = Reply::NoneExpected;
                    acks0 = true;
                }
            }
            let policy = self.server.policy.as_ref().map(|p| p.current());
            let table = DecodeTable {
                produce: policy.as_ref().is_some_and(|p| !p.topics.is_empty()),
                fetch: self.server.data_quality.is_some()
                    && policy.as_ref().is_some_and(|p| p.topics.protects_fields()),
            };
            if key == Some(ApiKey::Fetch)
                && table.fetch
                && let Some(policy) = &policy
            {
                reply = Reply::Reveal(policy.clone());
            }
            let request = if sasl {
                let (frame, held) = self.read_whole(head, &mut client).await?;
                let mut state = self.sasl();
                if key == Some(ApiKey::SaslHandshake) {
                    state.on_handshake(frame.payload(), version)?;
                    auth_deadline.get_or_insert(Instant::now() + limits.auth_timeout);
                } else {
                    state.on_authenticate_request(frame.payload(), version)?;
                }
                Request::Whole(frame, held)
            } else if key == Some(ApiKey::Produce) && table.request_whole(key) {
                let (frame, held) = self.read_whole(head, &mut client).await?;
                match self.check_produce(&frame, version, policy.clone()).await? {
                    ProduceAction::Forward => Request::Whole(frame, held),
                    ProduceAction::ForwardChanged { request, local } => {
                        if !acks0 {
                            reply = Reply::Merge(local);
                        }
                        Request::Whole(request, held)
                    }
                    ProduceAction::Respond(local) => {
                        let reply = if acks0 {
                            Reply::NoneExpected
                        } else {
                            Reply::Local(produce_response(meta.correlation_id, version, local)?)
                        };
                        if queue.send(self.in_flight(meta, reply)).await.is_err() {
                            return Ok(());
                        }
                        continue;
                    }
                }
            } else {
                Request::Streamed(head)
            };
            // The response loop has ended (it logs why); stop reading quietly.
            if queue.send(self.in_flight(meta, reply)).await.is_err() {
                return Ok(());
            }
            match request {
                Request::Streamed(head) => {
                    within(
                        limits.frame_timeout,
                        Side::Client,
                        "did not finish a request",
                        head.forward(&mut client, &mut upstream, Side::Upstream, &mut scratch),
                    )
                    .await??
                }
                Request::Whole(frame, _held) => upstream
                    .write_all(frame.wire())
                    .await
                    .map_err(Error::io(Side::Upstream))?,
            }
            upstream.flush().await.map_err(Error::io(Side::Upstream))?;
        }
    }

    /// Runs a Produce request through the data-quality stage. The check runs as a task of its
    /// own: if this connection dies while dead letters are being written, the write and the
    /// sequence bookkeeping that goes with it still finish together, so the producer's retry
    /// on a new connection is recognised as one.
    async fn check_produce(
        &self,
        frame: &Frame,
        version: i16,
        policy: Option<Arc<shared::policy::PolicySet>>,
    ) -> Result<ProduceAction, Error> {
        let Some(policy) = policy else {
            return Ok(ProduceAction::Forward);
        };
        if self.server.data_quality.is_none() {
            return Ok(ProduceAction::Forward);
        }
        let principal = self
            .sasl()
            .principal
            .as_deref()
            .map(shared::principal::Principal::from_kafka);
        let server = self.server.clone();
        let frame = frame.clone();
        let conn = self.info.id;
        tokio::spawn(async move {
            let Some(stage) = server.data_quality.as_ref() else {
                return Ok(ProduceAction::Forward);
            };
            let producer = Producer {
                principal: principal.as_ref(),
                conn,
            };
            stage
                .on_produce(
                    &frame,
                    version,
                    &policy.topics,
                    &producer,
                    &server.metrics,
                    &server.budget,
                )
                .await
        })
        .await
        .map_err(|e| Error::Panic(format!("record check: {e}")))?
    }

    /// Reads the rest of a client request whose head has been read, once the buffer budget
    /// has room for all of it.
    async fn read_whole(
        &self,
        head: frame::Head,
        client: &mut BufReader<ReadHalf<BoxStream>>,
    ) -> Result<(Frame, Reservation), Error> {
        let held = self.hold(&head, Side::Client).await?;
        let frame = within(
            self.server.config.limits.frame_timeout,
            Side::Client,
            "did not finish a request",
            head.complete(client),
        )
        .await??;
        Ok((frame, held))
    }

    /// Room in the buffer budget for the whole of `head`'s frame.
    async fn hold(&self, head: &frame::Head, side: Side) -> Result<Reservation, Error> {
        self.server.budget.reserve(head.wire_len(), side).await
    }

    fn in_flight(&self, meta: header::RequestMeta, reply: Reply) -> InFlight {
        InFlight {
            api_key: meta.api_key,
            api_version: meta.api_version,
            correlation_id: meta.correlation_id,
            sent_at: Instant::now(),
            reply,
        }
    }

    async fn responses(
        &self,
        mut upstream: BufReader<ReadHalf<BoxStream>>,
        mut client: BufWriter<WriteHalf<BoxStream>>,
        mut queue: mpsc::Receiver<InFlight>,
    ) -> Result<(), Error> {
        let limits = &self.server.config.limits;
        let mut unanswered_acks0 = Acks0::default();
        let mut scratch = Vec::new();
        loop {
            let pending = tokio::select! {
                next = queue.recv() => match next {
                    Some(p) => p,
                    None => return Ok(()),
                },
                ready = upstream.fill_buf() => {
                    let closed = ready.map_err(Error::io(Side::Upstream))?.is_empty();
                    match queue.try_recv() {
                        Ok(p) => p,
                        Err(_) if closed => return Err(Error::UpstreamClosed),
                        Err(_) => {
                            let head = self.read_upstream(&mut upstream, None).await?;
                            let got = header::peek_response_correlation(head.payload())?;
                            if unanswered_acks0.take(got, self.outstanding) {
                                self.discard(head, &mut upstream, &mut scratch).await?;
                                continue;
                            }
                            return Err(Error::Unsolicited);
                        }
                    }
                }
            };
            match pending.reply {
                Reply::Local(frame) => client
                    .write_all(frame.wire())
                    .await
                    .map_err(Error::io(Side::Client))?,
                Reply::NoneExpected => {
                    unanswered_acks0.push(pending.correlation_id, self.outstanding);
                    continue;
                }
                Reply::Upstream | Reply::Merge(_) | Reply::Reveal(_) => loop {
                    // A broker that stops answering gets the connection closed, not waited on
                    // forever: the client sees a disconnect and retries, and nothing leaks.
                    let limit = limits.answer_within(pending.api_key);
                    let head = tokio::time::timeout_at(
                        (pending.sent_at + limit).into(),
                        self.read_upstream(&mut upstream, Some((&pending, &queue))),
                    )
                    .await
                    .map_err(|_| Error::Timeout {
                        side: Side::Upstream,
                        what: format!(
                            "did not answer {} v{} (correlation id {})",
                            api_name(pending.api_key),
                            pending.api_version,
                            pending.correlation_id
                        ),
                        after: limit,
                    })??;
                    let got = header::peek_response_correlation(head.payload())?;
                    if got == pending.correlation_id {
                        // Kafka answers in order: earlier acks=0 requests will get nothing.
                        unanswered_acks0.clear(self.outstanding);
                        let metrics = &self.server.metrics;
                        metrics.upstream_latency(
                            pending.api_key,
                            pending.sent_at.elapsed().as_secs_f64(),
                        );
                        let merge = match &pending.reply {
                            Reply::Merge(local) => Some(local),
                            _ => None,
                        };
                        let reveal = match &pending.reply {
                            Reply::Reveal(policy) => Some(policy),
                            _ => None,
                        };
                        if merge.is_some()
                            || reveal.is_some()
                            || stage::response_whole(pending.api_key)
                        {
                            let _held = self.hold(&head, Side::Upstream).await?;
                            let frame = within(
                                limits.frame_timeout,
                                Side::Upstream,
                                "did not finish a response",
                                head.complete(&mut upstream),
                            )
                            .await??;
                            let out = match (merge, reveal) {
                                (Some(local), _) => {
                                    merge_produce(&frame, pending.api_version, local)?
                                }
                                (None, Some(policy)) => {
                                    self.reveal(&frame, pending.api_version, policy).await?
                                }
                                (None, None) => self.process_response(frame, &pending)?,
                            };
                            client
                                .write_all(out.wire())
                                .await
                                .map_err(Error::io(Side::Client))?;
                        } else {
                            within(
                                limits.frame_timeout,
                                Side::Upstream,
                                "did not finish a response",
                                head.forward(
                                    &mut upstream,
                                    &mut client,
                                    Side::Client,
                                    &mut scratch,
                                ),
                            )
                            .await??;
                        }
                        break;
                    }
                    if !unanswered_acks0.take(got, self.outstanding) {
                        return Err(Error::CorrelationMismatch {
                            expected: pending.correlation_id,
                            got,
                        });
                    }
                    self.discard(head, &mut upstream, &mut scratch).await?;
                },
            }
            client.flush().await.map_err(Error::io(Side::Client))?;
            self.outstanding.remove([pending.correlation_id]);
        }
    }

    /// Reads and drops the rest of a response nobody will receive (a broker's answer to an
    /// `acks=0` produce).
    async fn discard(
        &self,
        head: frame::Head,
        upstream: &mut BufReader<ReadHalf<BoxStream>>,
        scratch: &mut Vec<u8>,
    ) -> Result<(), Error> {
        within(
            self.server.config.limits.frame_timeout,
            Side::Upstream,
            "did not finish a response",
            head.forward(upstream, &mut tokio::io::sink(), Side::Client, scratch),
        )
        .await?
    }

    /// Reads the start of the next upstream frame, enough for its correlation id; end of
    /// stream with `waiting` requests is an error.
    async fn read_upstream(
        &self,
        upstream: &mut BufReader<ReadHalf<BoxStream>>,
        waiting: Option<(&InFlight, &mpsc::Receiver<InFlight>)>,
    ) -> Result<frame::Head, Error> {
        let max = self.server.config.max_frame_bytes;
        let head = frame::read_head(upstream, max, Side::Upstream, RESPONSE_HEAD).await?;
        let head = match (head, waiting) {
            (Some(head), _) => head,
            (None, Some((oldest, queue))) => {
                return Err(Error::UpstreamDropped {
                    in_flight: 1 + queue.len(),
                    api_key: oldest.api_key,
                    api_version: oldest.api_version,
                });
            }
            (None, None) => return Err(Error::UpstreamClosed),
        };
        self.server
            .metrics
            .bytes_from_upstream
            .inc_by(head.wire_len() as u64);
        Ok(head)
    }

    /// Reveals or masks the protected fields of a Fetch response for this connection's
    /// principal. Runs as a task of its own, like the produce check, so the CPU and KMS work
    /// is not tied to this connection's future.
    async fn reveal(
        &self,
        frame: &Frame,
        version: i16,
        policy: &Arc<shared::policy::PolicySet>,
    ) -> Result<Frame, Error> {
        let reader = self
            .sasl()
            .principal
            .as_deref()
            .map(shared::principal::Principal::from_kafka);
        let server = self.server.clone();
        let frame = frame.clone();
        let policy = policy.clone();
        tokio::spawn(async move {
            let Some(stage) = server.data_quality.as_ref() else {
                return Ok(frame);
            };
            stage::reveal::on_fetch_response(
                &frame,
                version,
                &policy.topics,
                reader.as_ref(),
                stage,
                &server.topic_ids,
                &server.metrics,
            )
            .await
        })
        .await
        .map_err(|e| Error::Panic(format!("fetch reveal: {e}")))?
    }

    /// Rewrites or watches the responses the decode table reads whole; every other frame is
    /// returned as received.
    fn process_response(&self, frame: Frame, p: &InFlight) -> Result<Frame, Error> {
        let Ok(key) = ApiKey::try_from(p.api_key) else {
            return Ok(frame);
        };
        let version = p.api_version;
        let book = self.server;
        match key {
            ApiKey::ApiVersions => {
                // A broker that refuses the version answers in v0 layout with an error code and
                // only its ApiVersions range; the client retries, so pass it on unchanged.
                let error_code = frame
                    .payload()
                    .get(4..6)
                    .map(|b| i16::from_be_bytes([b[0], b[1]]));
                if error_code != Some(0) {
                    return Ok(frame);
                }
                codec::transcode::<ApiVersionsResponse>(&frame, key, version, |r| {
                    versions::narrow(r);
                    self.advertised.learn(r);
                    Ok(())
                })
            }
            ApiKey::Metadata => codec::transcode::<MetadataResponse>(&frame, key, version, |r| {
                book.topic_ids.learn(r);
                rewrite::metadata(r, book)
            }),
            ApiKey::FindCoordinator => {
                codec::transcode::<FindCoordinatorResponse>(&frame, key, version, |r| {
                    rewrite::find_coordinator(r, version, book)
                })
            }
            ApiKey::DescribeCluster => {
                codec::transcode::<DescribeClusterResponse>(&frame, key, version, |r| {
                    rewrite::describe_cluster(r, book)
                })
            }
            ApiKey::DescribeConfigs => {
                codec::transcode::<DescribeConfigsResponse>(&frame, key, version, |r| {
                    rewrite::describe_configs(r)
                })
            }
            ApiKey::SaslAuthenticate => {
                let response: SaslAuthenticateResponse =
                    codec::decode_response(&frame, key, version)?;
                let mut sasl = self.sasl();
                if let Some(principal) = sasl.on_authenticate_response(&response).map(str::to_owned)
                {
                    tracing::info!(
                        conn = self.info.id,
                        peer = %self.info.peer,
                        principal,
                        mechanism = sasl.mechanism.as_deref().unwrap_or("?"),
                        "client authenticated"
                    );
                }
                Ok(frame)
            }
            _ => Ok(frame),
        }
    }
}

/// The v0 `UNSUPPORTED_VERSION` reply to an ApiVersions request newer than this build decodes.
fn unsupported_api_versions(correlation_id: i32) -> Result<Frame, Error> {
    let mut header = ResponseHeader::default();
    header.correlation_id = correlation_id;
    codec::encode_response(
        &header,
        &versions::unsupported_version_reply(),
        ApiKey::ApiVersions,
        0,
        64,
    )
}

/// The proxy's own answer to a Produce request whose every partition it answered.
fn produce_response(
    correlation_id: i32,
    version: i16,
    local: Vec<LocalPartition>,
) -> Result<Frame, Error> {
    let mut header = ResponseHeader::default();
    header.correlation_id = correlation_id;
    let mut response = ProduceResponse::default();
    add_partitions(&mut response, local);
    codec::encode_response(&header, &response, ApiKey::Produce, version, 256)
}

/// Adds the partitions the proxy answered to the broker's answer for the rest.
fn merge_produce(frame: &Frame, version: i16, local: &[LocalPartition]) -> Result<Frame, Error> {
    codec::transcode::<ProduceResponse>(frame, ApiKey::Produce, version, |r| {
        add_partitions(r, local.to_vec());
        Ok(())
    })
}

fn add_partitions(response: &mut ProduceResponse, local: Vec<LocalPartition>) {
    for part in local {
        match response.responses.iter_mut().find(|t| t.name == part.topic) {
            Some(topic) => topic.partition_responses.push(part.response),
            None => {
                let mut topic = TopicProduceResponse::default();
                topic.name = part.topic;
                topic.partition_responses.push(part.response);
                response.responses.push(topic);
            }
        }
    }
}
