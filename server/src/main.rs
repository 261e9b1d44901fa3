//! The `batchwatch` binary: parse the configuration, then serve (with workers inside) or run
//! workers alone.

use std::{sync::Arc, time::Duration};

use batchwatch_core::{Role, account::Ended, now};
use clap::Parser;
use server::{
    access::accounts::{Accounts, Secret, TokenInfo},
    config::{Cli, Command, Config, UserAction},
    redis_conn::RedisTarget,
    store::Store,
    worker::{self, Demo, Processor},
};
use tokio::{net::TcpListener, sync::watch};
use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")));
    if cli.config.log_format == "json" {
        logs.json().with_current_span(true).with_span_list(false).init();
    } else {
        logs.init();
    }
    let mut runtime = match cli.config.server_threads {
        1 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            if n > 1 {
                builder.worker_threads(n);
            }
            builder
        }
    };
    runtime.enable_all().build()?.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = cli.config;
    let (stop, stopped) = watch::channel(false);
    match cli.command.unwrap_or(Command::Serve) {
        Command::User { action } => user(&config, action).await?,
        Command::Serve => {
            let options = server::leptos_options(&config)?;
            let addr = options.site_addr;
            let state = server::state(config.clone(), options).await?;
            tokio::spawn(server::metrics::upkeep());
            let workers = tokio::spawn(worker::run(
                state.batches.clone(),
                processor(&config),
                (&config).into(),
                stopped,
            ));
            let listener = TcpListener::bind(addr).await?;
            let url = format!("http://{}", listener.local_addr()?);
            tracing::info!(%url, workers = config.workers, "batchwatch is listening");
            println!("batchwatch is running at {url}");
            if config.demo_sign_in {
                demo_sign_in(&state.accounts, &url).await?;
            }
            let hub = state.batches.hub().clone();
            server::start(listener, state, async move {
                shutdown_signal().await;
                // Open streams would hold the server up: end them, and their pages reconnect.
                hub.close_all();
            })
            .await?;
            let _ = stop.send(true);
            let _ = tokio::time::timeout(config.shutdown(), workers).await;
        }
        Command::Worker => {
            let batches = server::Backends::connect(&config).await?.batches(&config);
            tracing::info!(workers = config.workers, "batchwatch workers started");
            let workers = tokio::spawn(worker::run(batches, processor(&config), (&config).into(), stopped));
            shutdown_signal().await;
            let _ = stop.send(true);
            let _ = tokio::time::timeout(config.shutdown(), workers).await;
        }
    }
    Ok(())
}

/// `batchwatch user ...`: accounts, straight on the database.
async fn user(config: &Config, action: UserAction) -> anyhow::Result<()> {
    let accounts = Store::connect(&config.database_url, 1).await?.accounts();
    let now = now();
    match action {
        UserAction::Create { name, worker } => {
            let role = if worker { Role::Worker } else { Role::User };
            let (info, secret) = accounts.create_user(&name, role, now).await?;
            print_secret(&info, &secret);
        }
        UserAction::Token { name } => {
            let (info, secret) = accounts.create_token(&name, now).await?;
            print_secret(&info, &secret);
        }
        UserAction::List => {
            println!("{:<36}  {:<20}  {:<6}  state", "token id", "user", "role");
            for t in accounts.list_tokens().await? {
                let state = if t.revoked_at.is_some() { "revoked" } else { "active" };
                println!("{:<36}  {:<20}  {:<6}  {state}", t.id, t.user, t.role);
            }
        }
        UserAction::Revoke { token_id } => {
            accounts.revoke(&token_id, now).await?;
            announce_revoked(config, &token_id).await;
            println!("revoked {token_id}");
        }
    }
    Ok(())
}

/// Tells every server that a token was revoked, so its open streams end at once. Best effort:
/// without Redis (or with it away) they end at their next keep-alive, which asks again.
async fn announce_revoked(config: &Config, token_id: &str) {
    if config.redis_url.starts_with("memory://") {
        return;
    }
    let ended = Ended::Token(token_id.to_owned());
    let published = async {
        let conn = RedisTarget::parse(&config.redis_url)
            .map_err(|e| e.to_string())?
            .connect()
            .map_err(|e| e.to_string())?;
        server::live::hub::announce(&conn, &config.redis_prefix, &ended).await.map_err(|e| e.to_string())
    };
    let failure = match tokio::time::timeout(Duration::from_secs(2), published).await {
        Ok(Ok(())) => return,
        Ok(Err(error)) => error,
        Err(_) => "no answer in 2 s".to_owned(),
    };
    eprintln!("Open streams of this token end at their next keep-alive (Redis: {failure}).");
}

/// `DEMO_SIGN_IN`: a first run has no user, so make one and print a link that signs in. The
/// token rides in the link's fragment, which browsers never send to a server; the sign-in
/// page reads it from there and asks the person to confirm the account it names.
async fn demo_sign_in(accounts: &Accounts, url: &str) -> anyhow::Result<()> {
    if accounts.user_count().await? > 0 {
        println!("Sign in at {url}/login with a token (`batchwatch user token <name>` prints a new one).");
        return Ok(());
    }
    let (info, secret) = accounts.create_user("demo", Role::User, now()).await?;
    println!("Created the user {:?}. Open this link to sign in: {url}/login#token={}", info.user, secret.0);
    Ok(())
}

fn print_secret(info: &TokenInfo, secret: &Secret) {
    println!("user:     {} ({})", info.user, info.role);
    println!("token id: {}", info.id);
    println!("token:    {}", secret.0);
    eprintln!("Keep the token now: it is not stored and cannot be shown again.");
}

fn processor(config: &Config) -> Arc<dyn Processor> {
    Arc::new(Demo {
        delay: Duration::from_millis(config.item_delay_ms),
        failure_rate: config.demo_failure_rate,
    })
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
