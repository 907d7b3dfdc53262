//! `registry-proxy`: parses the command line and runs the proxy until Ctrl-C or SIGTERM.

use std::process::ExitCode;

use clap::Parser;
use registry_proxy::{Cli, Config, Error};
use shared::telemetry::{LogFormat, init_logging};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> ExitCode {
    let format = std::env::var("REGISTRY_PROXY_LOG_FORMAT")
        .ok()
        .and_then(|f| f.parse().ok())
        .unwrap_or(LogFormat::Text);
    init_logging(format);
    match serve(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Every configuration and policy problem is in the message, one per line.
            eprintln!("registry-proxy: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(cli: Cli) -> Result<(), Error> {
    let config = Config::from_cli(cli)?;
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let shutdown = CancellationToken::new();
    let trigger = shutdown.clone();
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async {
                match term.as_mut() {
                    Some(t) => { t.recv().await; }
                    None => std::future::pending().await,
                }
            } => {}
        }
        trigger.cancel();
    });
    registry_proxy::run(config, listener, shutdown).await
}
