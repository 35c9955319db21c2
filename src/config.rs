//! Command line and environment: every flag of `grantd` is also a `GRANTD_*` variable.

use std::{net::SocketAddr, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::{server::ServerOptions, storage::PoolOptions};

/// The embedded default: a SQLite file in the working directory, created on first start.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://grantd.db?mode=rwc";

#[derive(Debug, Parser)]
#[command(name = "grantd", version, about = "gRPC service that stores and enforces permission grants")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Migrate the database and serve gRPC until SIGINT or SIGTERM.
    Serve(ServeArgs),
    /// Apply, revert or list schema migrations.
    Migrate {
        #[command(subcommand)]
        action: MigrateAction,
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum MigrateAction {
    /// Apply every pending migration.
    Up,
    /// Revert the latest migrations.
    Down {
        /// How many to revert.
        #[arg(long, default_value_t = 1)]
        steps: u32,
    },
    /// List migrations and whether each is applied.
    Status,
}

#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// `sqlite://path?mode=rwc` or `postgres://user@host:port/db`.
    #[arg(long, global = true, env = "GRANTD_DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,

    /// Most database connections this process opens.
    #[arg(long, global = true, env = "GRANTD_DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,

    /// How long a request waits for a database connection before UNAVAILABLE, in ms.
    #[arg(long, global = true, env = "GRANTD_DB_ACQUIRE_TIMEOUT_MS", default_value_t = 5_000)]
    pub db_acquire_timeout_ms: u64,
}

impl DatabaseArgs {
    pub fn pool_options(&self) -> PoolOptions {
        let acquire_timeout = Duration::from_millis(self.db_acquire_timeout_ms);
        PoolOptions { max_connections: self.db_max_connections, acquire_timeout, sqlite_busy_timeout: acquire_timeout }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to serve gRPC on.
    #[arg(long, env = "GRANTD_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub database: DatabaseArgs,

    /// Log line format; the level comes from RUST_LOG (default `info`).
    #[arg(long, env = "GRANTD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Largest request accepted, in bytes; larger ones are RESOURCE_EXHAUSTED.
    #[arg(long, env = "GRANTD_MAX_MESSAGE_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_message_bytes: usize,
}

impl ServeArgs {
    pub fn server_options(&self) -> ServerOptions {
        ServerOptions { max_message_bytes: self.max_message_bytes }
    }
}
