//! The audit log: one JSON record per request, whatever its outcome.
//!
//! Records are serialized on the request path and written by one background task, so a slow
//! disk delays the log, never the request. Every refusal carries a `reason` here, which the
//! client never sees.

use std::{
    path::PathBuf,
    time::{SystemTime, UNIX_EPOCH},
};

use serde::Serialize;
use tokio::{io::AsyncWriteExt, sync::mpsc};

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
    pub status: u16,
    /// `hit` when a schema-by-id response came from the cache.
    pub cache: Option<&'static str>,
    pub latency_us: u64,
}

/// Sends records to the writer task.
#[derive(Clone)]
pub struct Audit {
    tx: mpsc::UnboundedSender<Vec<u8>>,
}

impl Audit {
    /// Opens the sink and starts the writer; it exits once every `Audit` clone is dropped and
    /// the queue is drained.
    pub async fn start(sink: &AuditSink) -> std::io::Result<(Self, tokio::task::JoinHandle<()>)> {
        let out: Box<dyn tokio::io::AsyncWrite + Send + Unpin> = match sink {
            AuditSink::Stdout => Box::new(tokio::io::stdout()),
            AuditSink::File(path) => Box::new(
                tokio::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .await?,
            ),
        };
        // Buffered, and flushed once per drained batch: tokio's file writes each go through the
        // blocking pool, so one write per record would cost a thread hand-off per request.
        let mut out = tokio::io::BufWriter::with_capacity(256 * 1024, out);
        let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let writer = tokio::spawn(async move {
            while let Some(line) = rx.recv().await {
                let mut failed = out.write_all(&line).await.is_err();
                while let Ok(line) = rx.try_recv() {
                    failed |= out.write_all(&line).await.is_err();
                }
                failed |= out.flush().await.is_err();
                if failed {
                    tracing::error!("audit log write failed");
                }
            }
        });
        Ok((Self { tx }, writer))
    }

    pub fn write(&self, record: &AuditRecord) {
        match serde_json::to_vec(record) {
            Ok(mut line) => {
                line.push(b'\n');
                if self.tx.send(line).is_err() {
                    tracing::error!(request_id = %record.request_id, "audit writer has stopped; record lost");
                }
            }
            Err(e) => tracing::error!(error = %e, "audit record did not serialize"),
        }
    }
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

    #[tokio::test]
    async fn records_are_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let (audit, writer) = Audit::start(&AuditSink::File(path.clone())).await.unwrap();
        audit.write(&AuditRecord {
            request_id: "1".into(),
            decision: "permit",
            ..Default::default()
        });
        audit.write(&AuditRecord {
            request_id: "2".into(),
            decision: "deny",
            ..Default::default()
        });
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
}
