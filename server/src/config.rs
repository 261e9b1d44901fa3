//! Command line and environment: parsed once at start; a bad value stops the process there.

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "batchwatch", version, about = "Watch processing batches live in the browser")]
pub struct Cli {
    #[command(flatten)]
    pub config: Config,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Clone, Copy, Subcommand)]
pub enum Command {
    /// Serve the pages and the API (the default).
    Serve,
}

#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Where batches are stored: `sqlite://path` (created when missing) or `postgres://...`.
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://data/batchwatch.db")]
    pub database_url: String,

    /// The most database connections this process opens.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 8)]
    pub database_max_connections: u32,

    /// The runtime settings file (a `[package.metadata.leptos]` section); `LEPTOS_*`
    /// variables override it. Without the file, the variables alone are used.
    #[arg(long, env = "LEPTOS_CONFIG", default_value = "Leptos.toml")]
    pub leptos_config: String,
}
