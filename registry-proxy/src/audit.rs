//! The audit log: one JSON record per request, whatever its outcome.
//!
//! Records are serialized on the request path and written by one blocking writer thread
//! through a bounded queue. A request reserves its record's place in the queue before it is
//! served ([`Audit::admit`]), so a request is only ever served once its record is sure to be
//! queued, and a stalled sink holds at most `audit_queue_records` records in memory.
//!
//! When records cannot be written — a write fails (disk full, file system gone) or the queue
//! is full (the sink stalls) — the configured [`OnAuditFailure`] decides: `refuse` (default)
//! answers every request 503 and marks the proxy not ready until a write succeeds again;
//! `serve` keeps serving and drops the records that find the queue full. Both count in
//! `registry_proxy_audit_failures_total{reason}`. A failed write is retried from the first
//! byte not written, so a record is never lost or torn by a transient failure; records still
//! queued when the process stops with the sink failing are lost, and logged as such.
//!
//! Every refusal carries a `reason` here, which the client never sees.

use std::{
    io::Write,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};
use tokio::sync::{
    mpsc::{self, OwnedPermit, error::TrySendError},
    oneshot,
};

use crate::{health::Health, metrics::Metrics};

/// Records are written in batches of up to this many bytes: one system call per batch.
const BATCH_BYTES: usize = 256 * 1024;
/// Spacing of retries of a failed write: from the first to the last, doubling.
const RETRY_FIRST: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(1);

/// Where records go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditSink {
    Stdout,
    File(PathBuf),
}

impl std::str::FromStr for AuditSink {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "" => Err("empty audit sink: use stdout or a file path".into()),
            "stdout" | "-" => Ok(Self::Stdout),
            path => Ok(Self::File(PathBuf::from(path))),
        }
    }
}

impl<'de> serde::Deserialize<'de> for AuditSink {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// What the proxy does while records cannot be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OnAuditFailure {
    /// Fail closed: answer 503 and report not ready. An unaudited request is not served.
    #[default]
    Refuse,
    /// Fail open: serve, and count the records lost.
    Serve,
}

/// Why a request cannot be audited, and so (with [`OnAuditFailure::Refuse`]) is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuditUnavailable {
    /// The last write to the sink failed; it is being retried.
    #[error("audit sink is failing")]
    SinkFailing,
    /// Every place in the queue is taken: the sink is slower than the requests, or stalled.
    #[error("audit queue is full")]
    QueueFull,
}

/// One request's record.
#[derive(Debug, Clone, Serialize, Default)]
pub struct AuditRecord {
    /// RFC 3339, UTC, millisecond precision.
    pub time: String,
    pub request_id: String,
    /// `user:NAME` once authenticated.
    pub principal: Option<String>,
    pub groups: Vec<String>,
    pub client_id: Option<String>,
    pub client_addr: String,
    pub method: String,
    /// The canonical path and query, or the raw target when it could not be canonicalized.
    pub path: String,
    /// The endpoint-map template that matched.
    pub endpoint: Option<&'static str>,
    /// Canonical, namespace-qualified subjects the decision concerned.
    pub subjects: Vec<String>,
    pub operation: Option<&'static str>,
    /// `permit`, `deny`, `unauthenticated`, `refused` (malformed), `error`, `aborted`
    /// (client went away), or `audit_only_deny` (audit mode let a denied request through).
    pub decision: &'static str,
    /// The rule that permitted the request.
    pub rule_id: Option<String>,
    /// Why the request was refused or failed.
    pub reason: Option<String>,
    pub upstream_status: Option<u16>,
    /// The status the client got; 0 when the connection closed without a response.
    pub status: u16,
    /// `hit` when a schema-by-id response came from the cache.
    pub cache: Option<&'static str>,
    pub latency_us: u64,
}

/// A request's reserved place in the queue. Empty when the request is served without one
/// ([`OnAuditFailure::Serve`] with the queue full); its record then goes in if there is room.
pub struct Slot(Option<OwnedPermit<Vec<u8>>>);

/// What the request path and the writer share about the sink's state.
struct Shared {
    on_failure: OnAuditFailure,
    /// Read on every request; written under `status`.
    writable: AtomicBool,
    status: Mutex<Status>,
    health: Arc<Health>,
    metrics: Metrics,
}

#[derive(Default)]
struct Status {
    failing: bool,
    full: bool,
}

impl Shared {
    fn update(&self, change: impl FnOnce(&mut Status)) {
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        change(&mut status);
        let writable = !status.failing && !status.full;
        if self.writable.swap(writable, Ordering::AcqRel) != writable {
            if writable {
                tracing::info!("audit records are being written again");
            }
            // Serving without an audit log is the operator's choice; it does not make the
            // proxy unready.
            if self.on_failure == OnAuditFailure::Refuse {
                self.health.set_audit_writable(writable);
            }
        }
    }

    fn failure(&self, reason: &str) {
        self.metrics
            .audit_failures
            .with_label_values(&[reason])
            .inc();
    }
}

/// Sends records to the writer.
#[derive(Clone)]
pub struct Audit {
    tx: mpsc::Sender<Vec<u8>>,
    shared: Arc<Shared>,
}

impl Audit {
    /// Opens the sink and starts the writer; it exits once every `Audit` clone is dropped and
    /// the queue is drained (or, with the sink failing, abandoned), and then completes the
    /// returned receiver.
    pub async fn start(
        sink: &AuditSink,
        on_failure: OnAuditFailure,
        capacity: usize,
        health: Arc<Health>,
        metrics: Metrics,
    ) -> std::io::Result<(Self, oneshot::Receiver<()>)> {
        let out: Box<dyn Write + Send> = match sink {
            AuditSink::Stdout => Box::new(std::io::stdout()),
            AuditSink::File(path) => {
                let path = path.clone();
                // Opening can block (a FIFO without a reader, a hung network mount).
                Box::new(
                    tokio::task::spawn_blocking(move || {
                        std::fs::OpenOptions::new()
                            .create(true)
                            .append(true)
                            .open(path)
                    })
                    .await
                    .map_err(std::io::Error::other)??,
                )
            }
        };
        Self::with_writer(out, on_failure, capacity, health, metrics)
    }

    /// [`Audit::start`] with an already open sink.
    pub fn with_writer(
        out: Box<dyn Write + Send>,
        on_failure: OnAuditFailure,
        capacity: usize,
        health: Arc<Health>,
        metrics: Metrics,
    ) -> std::io::Result<(Self, oneshot::Receiver<()>)> {
        let (tx, rx) = mpsc::channel::<Vec<u8>>(capacity.max(1));
        let shared = Arc::new(Shared {
            on_failure,
            writable: AtomicBool::new(true),
            status: Mutex::new(Status::default()),
            health,
            metrics,
        });
        // A thread of its own: writes to a full disk or a stalled pipe block, and the byte
        // count a blocking write returns is what lets a failed batch resume exactly. Not a
        // runtime blocking task: a write stuck forever must not keep the process from exiting.
        let (done, finished) = oneshot::channel();
        let writer_shared = shared.clone();
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || {
                write_loop(rx, out, &writer_shared);
                let _ = done.send(());
            })?;
        Ok((Self { tx, shared }, finished))
    }

    /// Reserves the record's place for a request about to be served; `Err` when it must be
    /// refused instead ([`OnAuditFailure::Refuse`] and records cannot be written).
    pub fn admit(&self) -> Result<Slot, AuditUnavailable> {
        let refuse = self.shared.on_failure == OnAuditFailure::Refuse;
        match self.tx.clone().try_reserve_owned() {
            Ok(permit) => {
                if refuse && !self.shared.writable.load(Ordering::Acquire) {
                    return Err(AuditUnavailable::SinkFailing);
                }
                Ok(Slot(Some(permit)))
            }
            Err(TrySendError::Full(_)) => {
                self.shared.update(|s| s.full = true);
                if refuse {
                    Err(AuditUnavailable::QueueFull)
                } else {
                    Ok(Slot(None))
                }
            }
            // The writer is gone only while the process stops.
            Err(TrySendError::Closed(_)) if refuse => Err(AuditUnavailable::SinkFailing),
            Err(TrySendError::Closed(_)) => Ok(Slot(None)),
        }
    }

    /// Queues `record` in its reserved place.
    pub fn write(&self, slot: Slot, record: &AuditRecord) {
        let Some(line) = serialize(record) else {
            return;
        };
        match slot.0 {
            Some(permit) => {
                permit.send(line);
            }
            None => self.send(line, &record.request_id),
        }
    }

    /// Queues `record` if there is room: for requests refused before they were admitted
    /// (the HTTP layer's refusals, refusals because records cannot be written).
    pub fn write_unreserved(&self, record: &AuditRecord) {
        if let Some(line) = serialize(record) {
            self.send(line, &record.request_id);
        }
    }

    fn send(&self, line: Vec<u8>, request_id: &str) {
        match self.tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.shared.update(|s| s.full = true);
                self.shared.failure("queue_full");
                tracing::error!(%request_id, "audit queue full; record lost");
            }
            Err(TrySendError::Closed(_)) => {
                tracing::error!(%request_id, "audit writer has stopped; record lost");
            }
        }
    }
}

fn serialize(record: &AuditRecord) -> Option<Vec<u8>> {
    match serde_json::to_vec(record) {
        Ok(mut line) => {
            line.push(b'\n');
            Some(line)
        }
        Err(e) => {
            tracing::error!(error = %e, "audit record did not serialize");
            None
        }
    }
}

/// The writer: drains the queue in batches, and retries a failed batch from its first
/// unwritten byte until it succeeds or the proxy stops.
fn write_loop(mut rx: mpsc::Receiver<Vec<u8>>, mut out: Box<dyn Write + Send>, shared: &Shared) {
    let mut batch = Vec::with_capacity(BATCH_BYTES);
    while let Some(line) = rx.blocking_recv() {
        batch.clear();
        batch.extend_from_slice(&line);
        let mut records = 1usize;
        while batch.len() < BATCH_BYTES {
            match rx.try_recv() {
                Ok(line) => {
                    batch.extend_from_slice(&line);
                    records += 1;
                }
                Err(_) => break,
            }
        }
        let mut written = 0;
        let mut delay = RETRY_FIRST;
        loop {
            match write_from(&mut out, &batch, &mut written) {
                Ok(()) => {
                    shared.update(|s| {
                        s.failing = false;
                        // A batch went out, so the queue has room again.
                        s.full = false;
                    });
                    break;
                }
                Err(e) => {
                    shared.failure("write_error");
                    if !shared.writable.load(Ordering::Acquire) && delay > RETRY_FIRST {
                        tracing::debug!(error = %e, "audit write failed again");
                    } else {
                        tracing::error!(error = %e, "audit write failed; retrying");
                    }
                    shared.update(|s| s.failing = true);
                    if rx.is_closed() {
                        tracing::error!(
                            records = records + rx.len(),
                            "stopping with the audit sink failing; records lost"
                        );
                        return;
                    }
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(RETRY_MAX);
                }
            }
        }
    }
}

/// Writes `batch[*written..]` and flushes, advancing `written` past every byte the sink took.
fn write_from(out: &mut dyn Write, batch: &[u8], written: &mut usize) -> std::io::Result<()> {
    while *written < batch.len() {
        match out.write(&batch[*written..]) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => *written += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    out.flush()
}

/// Now, as RFC 3339 UTC with milliseconds.
pub fn rfc3339_now() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil-from-days, after Howard Hinnant's date algorithms.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        now.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339() {
        let t = rfc3339_now();
        assert_eq!(t.len(), 24, "{t}");
        assert!(
            t.starts_with("20") && t.ends_with('Z') && &t[10..11] == "T",
            "{t}"
        );
    }

    fn record(id: &str) -> AuditRecord {
        AuditRecord {
            request_id: id.into(),
            decision: "permit",
            ..Default::default()
        }
    }

    fn failures(metrics: &Metrics, reason: &str) -> u64 {
        metrics.audit_failures.with_label_values(&[reason]).get()
    }

    #[tokio::test]
    async fn records_are_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let (audit, writer) = Audit::start(
            &AuditSink::File(path.clone()),
            OnAuditFailure::Refuse,
            16,
            Arc::new(Health::default()),
            Metrics::new(),
        )
        .await
        .unwrap();
        audit.write(audit.admit().unwrap(), &record("1"));
        let mut denied = record("2");
        denied.decision = "deny";
        audit.write_unreserved(&denied);
        drop(audit);
        writer.await.unwrap();
        let text = std::fs::read_to_string(path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1]["decision"], "deny");
    }

    /// A sink that fails (after taking part of the bytes) until told to recover.
    #[derive(Clone, Default)]
    struct Flaky {
        failing: Arc<AtomicBool>,
        taken: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for Flaky {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let mut taken = self.taken.lock().unwrap();
            if self.failing.load(Ordering::Acquire) {
                // A short write, then ENOSPC: the next call must resume after these bytes.
                if buf.len() > 3 {
                    taken.extend_from_slice(&buf[..3]);
                    return Ok(3);
                }
                return Err(std::io::Error::from_raw_os_error(28));
            }
            taken.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    async fn until(what: &str, mut done: impl FnMut() -> bool) {
        for _ in 0..500 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("timed out waiting until {what}");
    }

    #[tokio::test]
    async fn a_failing_sink_refuses_until_a_write_succeeds_and_loses_nothing() {
        let sink = Flaky::default();
        sink.failing.store(true, Ordering::Release);
        let health = Arc::new(Health::default());
        health.set_serving(true);
        let metrics = Metrics::new();
        let (audit, writer) = Audit::with_writer(
            Box::new(sink.clone()),
            OnAuditFailure::Refuse,
            64,
            health.clone(),
            metrics.clone(),
        )
        .unwrap();
        assert!(health.is_ready());
        audit.write(audit.admit().unwrap(), &record("before-failure"));
        until("the failure is noticed", || !health.is_ready()).await;
        assert_eq!(audit.admit().err(), Some(AuditUnavailable::SinkFailing));
        assert!(failures(&metrics, "write_error") >= 1);
        audit.write_unreserved(&record("refused-while-failing"));

        sink.failing.store(false, Ordering::Release);
        until("a retry succeeds", || health.is_ready()).await;
        assert!(audit.admit().is_ok(), "serving again");
        drop(audit);
        writer.await.unwrap();
        let text = String::from_utf8(sink.taken.lock().unwrap().clone()).unwrap();
        let ids: Vec<String> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["request_id"].to_string()
            })
            .collect();
        assert_eq!(
            ids,
            [r#""before-failure""#, r#""refused-while-failing""#],
            "retried from the first unwritten byte: nothing lost, nothing torn or doubled"
        );
    }

    /// A sink whose writes block until released, like a pipe nobody reads. It says when a
    /// write has begun, so a test knows the writer holds exactly one batch.
    struct Stalled {
        release: std::sync::mpsc::Receiver<()>,
        entered: std::sync::mpsc::Sender<()>,
    }

    impl Write for Stalled {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let _ = self.entered.send(());
            let _ = self.release.recv();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_stalled_sink_holds_at_most_the_queue_then_refuses_or_drops() {
        for on_failure in [OnAuditFailure::Refuse, OnAuditFailure::Serve] {
            let (release, stalled) = std::sync::mpsc::channel();
            let (entered_tx, entered) = std::sync::mpsc::channel();
            let health = Arc::new(Health::default());
            health.set_serving(true);
            let metrics = Metrics::new();
            let (audit, writer) = Audit::with_writer(
                Box::new(Stalled {
                    release: stalled,
                    entered: entered_tx,
                }),
                on_failure,
                8,
                health.clone(),
                metrics.clone(),
            )
            .unwrap();
            // The writer takes one record and blocks on it; eight more fill the queue.
            let first = audit.admit().expect("an empty queue admits");
            audit.write(first, &record("first"));
            entered.recv().expect("the writer reaches the sink");
            let mut admitted = 1;
            for i in 1..100 {
                match audit.admit() {
                    Ok(slot) => {
                        admitted += 1;
                        audit.write(slot, &record(&i.to_string()));
                    }
                    Err(e) => {
                        assert_eq!(e, AuditUnavailable::QueueFull);
                        break;
                    }
                }
            }
            match on_failure {
                OnAuditFailure::Refuse => {
                    assert_eq!(admitted, 9, "one record in the sink, eight queued");
                    assert!(!health.is_ready(), "a full queue is not ready");
                }
                OnAuditFailure::Serve => {
                    assert_eq!(admitted, 100);
                    assert!(
                        failures(&metrics, "queue_full") >= 90,
                        "records beyond the queue are dropped and counted"
                    );
                    assert!(health.is_ready(), "serve mode stays ready");
                }
            }
            assert_eq!(audit.tx.capacity(), 0, "the queue is at its bound");
            drop(audit);
            drop(release);
            writer.await.unwrap();
        }
    }
}
