//! Command line and environment: every flag of `grantd` is also a `GRANTD_*` variable.

use std::{
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::{
    auth::KeyConfig, connections::ConnectionLimits, domain::UserId, service::WatchLimits, storage::PoolOptions,
};

/// The embedded default: a SQLite file in the working directory, created on first start.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://grantd.db?mode=rwc";

/// `--dev`'s database: in memory, shared by the process's connections.
pub const DEV_DATABASE_URL: &str = "sqlite::memory:";

#[derive(Debug, Parser)]
#[command(name = "grantd", version, about = "gRPC service that stores and enforces permission grants")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Migrate the database and serve gRPC until SIGINT or SIGTERM.
    Serve(Box<ServeArgs>),
    /// Mint a token signed with the HS256 secret (for the quickstart and tests).
    Token(TokenArgs),
    /// Ask a running server's grpc.health.v1 whether it serves; exit 0 if so, 1 if not
    /// (for Docker HEALTHCHECK and exec probes).
    Health(HealthArgs),
    /// Write organizations, the catalog, memberships and grants to standard output as JSON
    /// lines, one snapshot of a running server (an administrator's token).
    Export(ExportArgs),
    /// Import JSON lines (or an Auth0 permissions answer) into a running server in
    /// batches; running it again after a failure finishes it without duplicates.
    Import(ImportArgs),
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

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
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

    /// Connections served at once (at most three quarters of the file limit); more are
    /// closed as they arrive.
    #[arg(long, env = "GRANTD_MAX_CONNECTIONS", default_value_t = ConnectionLimits::default().max_connections)]
    pub max_connections: usize,

    /// Longest from accepting a connection to its first request (TLS and HTTP/2
    /// handshakes included), in ms.
    #[arg(long, env = "GRANTD_HANDSHAKE_TIMEOUT_MS", default_value_t = millis(ConnectionLimits::default().handshake_timeout))]
    pub handshake_timeout_ms: u64,

    /// Longest a connection stays open with no request in flight, in ms.
    #[arg(long, env = "GRANTD_IDLE_TIMEOUT_MS", default_value_t = millis(ConnectionLimits::default().idle_timeout))]
    pub idle_timeout_ms: u64,

    /// How often an HTTP/2 PING checks that a connection's peer is alive, in ms.
    #[arg(long, env = "GRANTD_KEEPALIVE_INTERVAL_MS", default_value_t = millis(ConnectionLimits::default().keepalive_interval))]
    pub keepalive_interval_ms: u64,

    /// How long the answer to that PING may take before the connection is dropped, in ms.
    #[arg(long, env = "GRANTD_KEEPALIVE_TIMEOUT_MS", default_value_t = millis(ConnectionLimits::default().keepalive_timeout))]
    pub keepalive_timeout_ms: u64,

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

    /// Open WatchChanges streams per caller (token subject) in this process.
    #[arg(long, env = "GRANTD_WATCH_MAX_PER_CALLER", default_value_t = WatchLimits::default().per_caller)]
    pub watch_max_per_caller: usize,

    /// Open WatchChanges streams in this process.
    #[arg(long, env = "GRANTD_WATCH_MAX_STREAMS", default_value_t = WatchLimits::default().per_process)]
    pub watch_max_streams: usize,

    /// Longest a WatchChanges stream lives before it ends with UNAVAILABLE (resumable), in ms.
    #[arg(long, env = "GRANTD_WATCH_MAX_LIFETIME_MS", default_value_t = millis(WatchLimits::default().max_lifetime))]
    pub watch_max_lifetime_ms: u64,

    /// Longest a WatchChanges stream goes without reading its caller's right again, in ms.
    #[arg(long, env = "GRANTD_WATCH_REAUTHORIZE_MS", default_value_t = millis(WatchLimits::default().reauthorize_every))]
    pub watch_reauthorize_ms: u64,

    /// Longest a watcher's full buffer waits for the client to take a change, in ms.
    #[arg(long, env = "GRANTD_WATCH_STALL_TIMEOUT_MS", default_value_t = millis(WatchLimits::default().stall_timeout))]
    pub watch_stall_timeout_ms: u64,

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

    /// Try grantd in a minute: an in-memory SQLite database (gone when the process stops)
    /// and no authentication, on a loopback address only. Never for data you keep.
    #[arg(long, env = "GRANTD_DEV")]
    pub dev: bool,

    /// Serve the web console at /console/ (and gRPC-web over HTTP/1.1 for it); `false`
    /// leaves gRPC over HTTP/2 only.
    #[arg(long, env = "GRANTD_CONSOLE", default_value_t = true, action = clap::ArgAction::Set)]
    pub console: bool,
}

impl ServeArgs {
    /// What `--dev` stands for; the loopback rule is `--insecure-no-auth`'s own.
    pub fn apply_dev_mode(&mut self) {
        self.database.database_url = DEV_DATABASE_URL.to_owned();
        self.insecure_no_auth = true;
    }

    pub fn connection_limits(&self) -> ConnectionLimits {
        ConnectionLimits {
            max_connections: self.max_connections,
            handshake_timeout: Duration::from_millis(self.handshake_timeout_ms),
            idle_timeout: Duration::from_millis(self.idle_timeout_ms),
            keepalive_interval: Duration::from_millis(self.keepalive_interval_ms.max(1)),
            keepalive_timeout: Duration::from_millis(self.keepalive_timeout_ms),
        }
    }

    pub fn watch_limits(&self) -> WatchLimits {
        WatchLimits {
            per_caller: self.watch_max_per_caller,
            per_process: self.watch_max_streams,
            max_lifetime: Duration::from_millis(self.watch_max_lifetime_ms),
            reauthorize_every: Duration::from_millis(self.watch_reauthorize_ms.max(1)),
            stall_timeout: Duration::from_millis(self.watch_stall_timeout_ms),
        }
    }
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

/// How a client command reaches a running grantd.
#[derive(Debug, Clone, Args)]
pub struct ConnectArgs {
    /// The server's address.
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub addr: String,

    /// Speak TLS, trusting this PEM CA bundle.
    #[arg(long)]
    pub tls_ca: Option<PathBuf>,

    /// The name to expect in the server's certificate (default: the host of --addr).
    #[arg(long, requires = "tls_ca")]
    pub tls_domain: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct HealthArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,

    /// The service to ask about; the empty default means the whole server.
    #[arg(long, default_value = "")]
    pub service: String,

    /// Give up after this many ms.
    #[arg(long, default_value_t = 3_000)]
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,

    /// An administrator's token (`grantd token --subject ... --admin`).
    #[arg(long, env = "GRANTD_TOKEN", hide_env_values = true)]
    pub token: String,

    /// Only this organization, its memberships and its grants (and the whole catalog).
    #[arg(long)]
    pub organization: Option<String>,
}

/// What `grantd import` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ImportFormat {
    /// grantd's JSON lines, as `grantd export` writes them.
    Jsonl,
    /// The JSON array Auth0's Management API answers for a user's permissions
    /// (`GET /api/v2/users/{id}/permissions`); needs --organization and --user.
    Auth0,
}

#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,

    /// An administrator's token (`grantd token --subject ... --admin`).
    #[arg(long, env = "GRANTD_TOKEN", hide_env_values = true)]
    pub token: String,

    /// The file to import; `-` reads standard input.
    pub file: PathBuf,

    /// Check everything and write nothing: the server runs the import and rolls it back.
    #[arg(long)]
    pub dry_run: bool,

    /// The file's format.
    #[arg(long = "from", value_enum, default_value_t = ImportFormat::Jsonl)]
    pub format: ImportFormat,

    /// With --from auth0: the organization the user's permissions are granted in.
    #[arg(long, required_if_eq("format", "auth0"))]
    pub organization: Option<String>,

    /// With --from auth0: the user the permissions belong to (Auth0's user id).
    #[arg(long, required_if_eq("format", "auth0"))]
    pub user: Option<String>,

    /// Records per batch; each batch is one transaction.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub batch_size: u32,
}

#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// The user id the token speaks for (`sub`).
    #[arg(long, value_parser = parse_subject)]
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

    /// Without key flags, the secret `grantd serve` generated beside this SQLite database.
    #[arg(long, env = "GRANTD_DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,

    /// The same key flags and variables as `serve`: the token is signed with the HS256
    /// secret a server given them verifies with (and carries its issuer and audience).
    #[command(flatten)]
    pub auth: AuthArgs,

    /// Print a link that opens the web console signed in with the token (in the URL
    /// fragment, which browsers never send to a server) instead of the bare token.
    #[arg(long)]
    pub console: bool,

    /// The address `serve` listens on, for the console link.
    #[arg(long, env = "GRANTD_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
}

impl TokenArgs {
    /// The console's address on the server `serve --listen` starts: an unspecified
    /// address (0.0.0.0, ::) is reached on loopback from this machine.
    pub fn console_link(&self, token: &str) -> String {
        let mut address = self.listen;
        if address.ip().is_unspecified() {
            address.set_ip(if address.is_ipv4() { Ipv4Addr::LOCALHOST.into() } else { Ipv6Addr::LOCALHOST.into() });
        }
        format!("http://{address}/console/#token={token}")
    }
}

/// A token's `sub` is a user id: one the server would refuse is refused before minting.
fn parse_subject(text: &str) -> Result<String, String> {
    UserId::parse(text).map(|id| id.as_str().to_owned()).map_err(|err| format!("not a user id: {}", err.0))
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
