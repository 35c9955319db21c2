//! Command line and environment: every flag of `grantd` is also a `GRANTD_*` variable.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::{auth::KeyConfig, storage::PoolOptions};

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
    /// Mint a token signed with the HS256 secret (for the quickstart and tests).
    Token(TokenArgs),
    /// Ask a running server's grpc.health.v1 whether it serves; exit 0 if so, 1 if not
    /// (for Docker HEALTHCHECK and exec probes).
    Health(HealthArgs),
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

    /// Longest a request may run, in ms (a shorter client deadline wins).
    #[arg(long, env = "GRANTD_REQUEST_TIMEOUT_MS", default_value_t = 30_000)]
    pub request_timeout_ms: u64,

    /// Concurrent requests per connection (HTTP/2 streams).
    #[arg(long, env = "GRANTD_MAX_CONCURRENT_STREAMS", default_value_t = 256)]
    pub max_concurrent_streams: u32,

    /// Requests running at once; more wait for a turn (load shedding).
    #[arg(long, env = "GRANTD_MAX_IN_FLIGHT", default_value_t = 64)]
    pub max_in_flight: usize,

    /// How long a request waits for a turn before RESOURCE_EXHAUSTED, in ms.
    #[arg(long, env = "GRANTD_QUEUE_TIMEOUT_MS", default_value_t = 1_000)]
    pub queue_timeout_ms: u64,

    /// Serve Prometheus metrics at http://ADDRESS/metrics (off when absent).
    #[arg(long, env = "GRANTD_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// How often each process reads the change log while WatchChanges streams are open, in ms.
    #[arg(long, env = "GRANTD_WATCH_POLL_MS", default_value_t = 100)]
    pub watch_poll_ms: u64,

    /// After SIGTERM or SIGINT, how long in-flight requests may still run, in ms.
    #[arg(long, env = "GRANTD_SHUTDOWN_GRACE_MS", default_value_t = 10_000)]
    pub shutdown_grace_ms: u64,

    #[command(flatten)]
    pub auth: AuthArgs,

    #[command(flatten)]
    pub tls: TlsArgs,

    /// Serve without authentication: every caller is an anonymous administrator. Only
    /// on a loopback address; logs a warning at every start.
    #[arg(long, env = "GRANTD_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,
}

/// Where token verification keys come from. With none of them, an embedded SQLite
/// database gets a generated HS256 secret beside its file.
#[derive(Debug, Clone, Args)]
pub struct AuthArgs {
    /// File holding the HS256 secret (at least 32 bytes).
    #[arg(long, env = "GRANTD_JWT_HS256_SECRET_FILE")]
    pub jwt_hs256_secret_file: Option<PathBuf>,

    /// PEM public key files (RS256, ES256 or EdDSA), comma-separated in the env var.
    #[arg(long, env = "GRANTD_JWT_PUBLIC_KEY", value_delimiter = ',')]
    pub jwt_public_key: Vec<PathBuf>,

    /// JWKS file; keys are chosen by `kid` and the file is re-read every 30 s.
    #[arg(long, env = "GRANTD_JWKS_FILE")]
    pub jwks_file: Option<PathBuf>,

    /// Accept only tokens with this `iss`.
    #[arg(long, env = "GRANTD_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Accept only tokens with this `aud`.
    #[arg(long, env = "GRANTD_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
}

impl AuthArgs {
    pub fn key_config(&self) -> KeyConfig {
        KeyConfig {
            hs256_secret_file: self.jwt_hs256_secret_file.clone(),
            public_key_files: self.jwt_public_key.clone(),
            jwks_file: self.jwks_file.clone(),
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct TlsArgs {
    /// PEM certificate chain; with --tls-key, serve TLS.
    #[arg(long, env = "GRANTD_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, env = "GRANTD_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA bundle; clients must present a certificate it signed (mutual TLS).
    #[arg(long, env = "GRANTD_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct HealthArgs {
    /// The server's address.
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub addr: String,

    /// The service to ask about; the empty default means the whole server.
    #[arg(long, default_value = "")]
    pub service: String,

    /// Give up after this many ms.
    #[arg(long, default_value_t = 3_000)]
    pub timeout_ms: u64,

    /// Speak TLS, trusting this PEM CA bundle.
    #[arg(long)]
    pub tls_ca: Option<PathBuf>,

    /// The name to expect in the server's certificate (default: the host of --addr).
    #[arg(long, requires = "tls_ca")]
    pub tls_domain: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// The user id the token speaks for (`sub`).
    #[arg(long)]
    pub subject: String,

    /// Add the `grants:admin` scope.
    #[arg(long)]
    pub admin: bool,

    /// Lifetime, such as `90s`, `15m`, `1h` or `7d`.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub ttl: Duration,

    /// Organizations the token may act in (comma-separated); all when absent.
    #[arg(long, value_delimiter = ',')]
    pub organization_scope: Option<Vec<String>>,

    /// Where the secret is; by default the one `grantd serve` generated beside the
    /// SQLite database of --database-url.
    #[arg(long, env = "GRANTD_JWT_HS256_SECRET_FILE")]
    pub jwt_hs256_secret_file: Option<PathBuf>,

    #[arg(long, env = "GRANTD_DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,

    /// `iss` to put in the token.
    #[arg(long, env = "GRANTD_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// `aud` to put in the token.
    #[arg(long, env = "GRANTD_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
}

/// `90s`, `15m`, `1h`, `7d`, or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let (digits, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let value: u64 = digits.parse().map_err(|_| format!("{text:?} is not a duration such as 90s, 15m, 1h or 7d"))?;
    let seconds = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return Err(format!("unknown unit {unit:?} in {text:?}: use s, m, h or d")),
    };
    value.checked_mul(seconds).map(Duration::from_secs).ok_or_else(|| format!("{text:?} is too long"))
}
