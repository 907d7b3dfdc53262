//! `dev-registry --listen HOST:PORT`: the in-memory Confluent-compatible registry.

use clap::Parser;

/// In-memory Confluent-compatible schema registry for tests and the demo (not for production).
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// Address to listen on.
    #[arg(long, env = "DEV_REGISTRY_LISTEN", default_value = "127.0.0.1:8081")]
    listen: String,
    /// Answer every request this many milliseconds late, to stand in for a remote registry in
    /// benchmarks.
    #[arg(long, env = "DEV_REGISTRY_DELAY_MS", default_value_t = 0)]
    delay_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let cli = Cli::parse();
    let listener = tokio::net::TcpListener::bind(&cli.listen).await?;
    tracing::info!(addr = %listener.local_addr()?, "dev-registry listening");
    dev_registry::run_with(
        listener,
        std::time::Duration::from_millis(cli.delay_ms),
        async {
            let _ = tokio::signal::ctrl_c().await;
        },
    )
    .await?;
    Ok(())
}
