//! The `batchwatch` binary: parse the configuration, then serve.

use clap::Parser;
use server::config::{Cli, Command};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .init();
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let options = server::leptos_options(&cli.config)?;
            let addr = options.site_addr;
            let state = server::state(cli.config, options).await?;
            let listener = TcpListener::bind(addr).await?;
            tracing::info!("batchwatch is listening on http://{}", listener.local_addr()?);
            println!("batchwatch is running at http://{}", listener.local_addr()?);
            server::start(listener, state, shutdown_signal()).await
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! { () = ctrl_c => {}, () = terminate => {} }
    tracing::info!("shutting down");
}
