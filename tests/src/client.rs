//! Runs the client scenarios in `tests/clients/` with a real Kafka client library: the three
//! Python ones through `scenario.py`, the Java client through `java/scenario.sh`. Both print
//! one JSON line on success and a `FAIL` line on failure.

use std::{process::Stdio, time::Duration};

use crate::stack::{cache_dir, kafka_libs, python_bin, repo_root};

/// The independent Python client implementations every scenario runs with.
pub const CLIENTS: [&str; 3] = ["confluent", "kafka-python", "aiokafka"];

/// The Java client (`kafka-clients`), the one most applications use.
pub const JAVA: &str = "java";

/// Every client implementation: [`CLIENTS`] and [`JAVA`].
pub const ALL_CLIENTS: [&str; 4] = ["confluent", "kafka-python", "aiokafka", JAVA];

/// No scenario may take longer than this, whatever the client does.
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(180);

/// Runs `scenario.py` and returns its JSON result; fails with the script's stderr.
pub async fn scenario(
    client: &str,
    bootstrap: &str,
    scenario: &str,
    extra: &[&str],
) -> anyhow::Result<serde_json::Value> {
    let mut cmd = if client == JAVA {
        // Compiles the program once per source and jar set, then runs the classes.
        let mut cmd = tokio::process::Command::new("bash");
        cmd.arg(repo_root().join("tests/clients/java/scenario.sh"))
            .env("KAFKA_LIBS", kafka_libs())
            .env(
                "KAFKA_GUARD_JAVA_CLASSES",
                cache_dir().join("java-scenario"),
            );
        cmd
    } else {
        let mut cmd = tokio::process::Command::new(python_bin());
        cmd.arg(repo_root().join("tests/clients/scenario.py"));
        cmd
    };
    cmd.args([
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
