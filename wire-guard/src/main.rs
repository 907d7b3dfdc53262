use clap::Parser;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use wire_guard::cli::Args;

/// mimalloc rather than the system allocator: the record path allocates and frees buffers of
/// every size per batch, and glibc's malloc turns the large ones into fresh pages (page faults)
/// on every request. Built without transparent huge pages (see the workspace manifest), so
/// resident memory follows what connections and batches hold.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    shared::telemetry::init_logging(args.log_format);
    let resolved = match args.resolve() {
        Ok(r) => r,
        Err(errors) => {
            for e in &errors {
                eprintln!("wire-guard: {e}");
            }
            std::process::exit(2);
        }
    };
    let listener = TcpListener::bind(resolved.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", resolved.listen))?;
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    wire_guard::run(resolved.config, listener, shutdown).await?;
    Ok(())
}

async fn stop_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
    tracing::info!("signal received");
    shutdown.cancel();
}
