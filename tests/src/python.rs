//! Runs the client scenarios in `tests/clients/` with a real Kafka client library.

use std::{process::Stdio, time::Duration};

use crate::stack::{python_bin, repo_root};

/// The independent client implementations every scenario runs with.
pub const CLIENTS: [&str; 3] = ["confluent", "kafka-python", "aiokafka"];

/// No scenario may take longer than this, whatever the client does.
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(180);

/// Runs `scenario.py` and returns its JSON result; fails with the script's stderr.
pub async fn scenario(
    client: &str,
    bootstrap: &str,
    scenario: &str,
    extra: &[&str],
) -> anyhow::Result<serde_json::Value> {
    let script = repo_root().join("tests/clients/scenario.py");
    let mut cmd = tokio::process::Command::new(python_bin());
    cmd.arg(script)
        .args([
            "--client",
            client,
            "--bootstrap",
            bootstrap,
            "--scenario",
            scenario,
        ])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let output = tokio::time::timeout(SCENARIO_TIMEOUT, cmd.output())
        .await
        .map_err(|_| {
            anyhow::anyhow!("{client} {scenario}: no result within {SCENARIO_TIMEOUT:?}")
        })??;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        anyhow::bail!(
            "{client} {scenario} failed ({}):\n{stderr}\n{stdout}",
            output.status
        );
    }
    let last = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'));
    let line = last.ok_or_else(|| {
        anyhow::anyhow!("{client} {scenario}: no JSON result in:\n{stdout}\n{stderr}")
    })?;
    Ok(serde_json::from_str(line)?)
}
