//! `staticpod-webhook`: wiring only; see the library for the webhook itself.

use clap::Parser;
use staticpod_webhook::{Config, start};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = Config::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if config.log_format == "json" {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    match start(&config).await {
        Ok(running) => {
            tracing::info!(addr = %running.addr, admin = %running.admin_addr, "serving admission webhooks");
            shutdown_signal().await;
            tracing::info!("shutting down");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("staticpod-webhook: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// SIGTERM (what the kubelet sends) or Ctrl-C.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
