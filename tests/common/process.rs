//! Real `grantd serve` processes for the stress and fault tests: a guard that kills its
//! child on drop (and prints the end of the child's log when the test panicked), a
//! restart on the same address after a SIGKILL, fresh PostgreSQL databases, clients
//! acting as an administrator or as a user, per-call request ids, and health checks.
//!
//! Included with `#[path = "common/process.rs"] mod process;` next to `mod common;`.

#![allow(dead_code)]

use std::{
    fs::{self, OpenOptions},
    io::{Read, Seek, SeekFrom, Write as _},
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use crate::common::proto::{
    audit_service_client::AuditServiceClient, directory_service_client::DirectoryServiceClient,
    grant_service_client::GrantServiceClient,
};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement};
use tonic::{
    Request,
    service::interceptor::InterceptedService,
    transport::{Channel, Endpoint},
};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

use crate::common::{ADMIN, Authed, Bearer, TEST_SECRET, create_postgres_database, token};

/// How long a fresh process may take to migrate and answer health.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Kills and reaps the child when dropped, even when the test panics.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free loopback port: bind port 0, note the port, let it go.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind port 0").local_addr().expect("local addr").port()
}

/// The HS256 secret in a file of its own, for `--jwt-hs256-secret-file`.
pub struct SecretFile {
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

impl SecretFile {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("hs256.secret");
        fs::write(&path, TEST_SECRET).expect("write secret");
        Self { path, _dir: dir }
    }
}

/// A database for real processes: a fresh PostgreSQL database or a SQLite file.
pub struct TestDatabase {
    /// What `--database-url` gets.
    pub url: String,
    /// PostgreSQL: the database name, and a URL of the maintenance database (for
    /// pg_terminate_backend and ALTER DATABASE from outside the test database).
    pub postgres: Option<(String, String)>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDatabase {
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("grantd.db").display());
        Self { url, postgres: None, _dir: Some(dir) }
    }

    /// A fresh, empty PostgreSQL database called `name`; `None` (with a message) when
    /// PostgreSQL is unreachable outside CI. Under `CI=true` an unreachable server fails.
    pub async fn postgres(name: &str) -> Option<Self> {
        let (url, admin_url) = create_postgres_database(name).await?;
        Some(Self { url, postgres: Some((name.to_owned(), admin_url)), _dir: None })
    }

    pub fn is_postgres(&self) -> bool {
        self.postgres.is_some()
    }

    /// A connection of the test's own to the database (not the server's pool).
    pub async fn connect(&self) -> DatabaseConnection {
        Database::connect(&self.url).await.expect("connect to the test database")
    }

    /// A connection to the PostgreSQL maintenance database.
    pub async fn connect_admin(&self) -> DatabaseConnection {
        let (_, admin_url) = self.postgres.as_ref().expect("a PostgreSQL database");
        Database::connect(admin_url).await.expect("connect to the maintenance database")
    }

    pub fn postgres_name(&self) -> &str {
        &self.postgres.as_ref().expect("a PostgreSQL database").0
    }
}

/// One `grantd serve` child process. Dropping it kills the child (SIGKILL) and reaps it.
pub struct Grantd {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub log: PathBuf,
    pub label: String,
    exit: Option<ExitStatus>,
    /// What `serve` got after `--listen`, for [`Grantd::respawn`].
    args: Vec<std::ffi::OsString>,
    _log_dir: tempfile::TempDir,
}

impl Grantd {
    /// Spawns `grantd serve` on a free loopback port over `database_url`, without
    /// waiting for it (see [`Grantd::wait_ready`]).
    pub fn spawn(label: &str, database_url: &str, secret: &SecretFile, extra_args: &[&str]) -> Self {
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
        let log_dir = tempfile::tempdir().expect("temp dir");
        let log = log_dir.path().join(format!("{label}.log"));
        let mut args: Vec<std::ffi::OsString> =
            vec!["--database-url".into(), database_url.into(), "--jwt-hs256-secret-file".into(), (&secret.path).into()];
        args.extend(extra_args.iter().map(Into::into));
        let mut process = Self { child: None, addr, log, label: label.to_owned(), exit: None, args, _log_dir: log_dir };
        process.child = Some(process.command().spawn().expect("spawn grantd"));
        process
    }

    /// `grantd serve` on this process's address, its output appended to the log.
    fn command(&self) -> Command {
        let out = OpenOptions::new().create(true).append(true).open(&self.log).expect("log file");
        let err = out.try_clone().expect("log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_grantd"));
        command
            .arg("serve")
            .args(["--listen", &self.addr.to_string()])
            .args(&self.args)
            .env_remove("GRANTD_INSECURE_NO_AUTH")
            .env("RUST_LOG", std::env::var("GRANTD_TEST_CHILD_LOG").unwrap_or_else(|_| "warn".to_owned()))
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        command
    }

    /// Starts the process again, on the same address and with the same arguments, once
    /// it has exited (after [`Grantd::kill`], say), without waiting for it to be ready.
    /// Clients' channels to the address reconnect on their next call.
    pub fn respawn(&mut self) {
        assert!(self.try_exit().is_some(), "grantd {} must have exited before it is started again", self.label);
        let _ = writeln!(
            OpenOptions::new().append(true).open(&self.log).expect("log file"),
            "---- grantd {} started again ----",
            self.label
        );
        self.child = Some(self.command().spawn().expect("spawn grantd again"));
        self.exit = None;
    }

    /// Spawns and waits until health answers SERVING.
    pub async fn start(label: &str, database_url: &str, secret: &SecretFile, extra_args: &[&str]) -> Self {
        let mut process = Self::spawn(label, database_url, secret, extra_args);
        process.wait_ready().await;
        process
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("child").id()
    }

    /// Polls health until SERVING; panics (with the log) when the child exits or
    /// the start takes too long.
    pub async fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.try_exit() {
                panic!("grantd {} exited during start with {status}:\n{}", self.label, self.log_tail(4000));
            }
            if health(self.addr, "").await == Some(ServingStatus::Serving) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "grantd {} did not answer health within {START_TIMEOUT:?}:\n{}",
                self.label,
                self.log_tail(4000)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The exit status when the child has exited, without waiting.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none()
            && let Some(child) = self.child.as_mut()
        {
            self.exit = child.try_wait().expect("try_wait");
        }
        self.exit
    }

    /// SIGKILL (what `Child::kill` sends on unix), then reap.
    pub fn kill(&mut self) {
        if self.exit.is_none()
            && let Some(child) = self.child.as_mut()
        {
            let _ = child.kill();
            self.exit = child.wait().ok();
        }
    }

    /// SIGTERM through `kill -TERM <pid>`.
    pub fn terminate(&self) {
        let status = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status().expect("run kill");
        assert!(status.success(), "kill -TERM {} failed: {status}", self.pid());
    }

    /// Waits up to `limit` for the child to exit.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.try_exit() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The last `bytes` of the child's log.
    pub fn log_tail(&self, bytes: u64) -> String {
        log_tail(&self.log, bytes)
    }

    /// A new HTTP/2 connection to this process (made on first use).
    pub fn channel(&self) -> Channel {
        endpoint(self.addr).connect_lazy()
    }
}

impl Drop for Grantd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- log of grantd {} (pid {:?}) ----\n{}",
                self.label,
                self.child.as_ref().map(Child::id),
                self.log_tail(6000)
            );
        }
        self.kill();
    }
}

fn log_tail(path: &Path, bytes: u64) -> String {
    let Ok(mut file) = fs::File::open(path) else { return String::new() };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(bytes)));
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    text
}

pub fn endpoint(addr: SocketAddr) -> Endpoint {
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
}

/// Clients over one channel, all carrying one caller's token.
#[derive(Clone)]
pub struct Clients {
    pub grants: GrantServiceClient<Authed>,
    pub directory: DirectoryServiceClient<Authed>,
    pub audit: AuditServiceClient<Authed>,
}

impl Clients {
    /// Acting as the administrator ([`ADMIN`], with the admin scope).
    pub fn admin(channel: Channel) -> Self {
        Self::with_token(channel, &token(ADMIN, true))
    }

    /// Acting as `subject`, without the admin scope: the server decides from the
    /// subject's own grants what it may do.
    pub fn user(channel: Channel, subject: &str) -> Self {
        Self::with_token(channel, &token(subject, false))
    }

    fn with_token(channel: Channel, token: &str) -> Self {
        let authed = InterceptedService::new(channel, Bearer::new(token));
        Self {
            grants: GrantServiceClient::new(authed.clone())
                .max_encoding_message_size(64 * 1024 * 1024)
                .max_decoding_message_size(64 * 1024 * 1024),
            directory: DirectoryServiceClient::new(authed.clone()),
            audit: AuditServiceClient::new(authed).max_decoding_message_size(64 * 1024 * 1024),
        }
    }
}

/// A request carrying `x-request-id` and a deadline (so a hang shows up as an error
/// instead of a stuck test).
pub fn request<T>(message: T, request_id: &str, timeout: Duration) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("x-request-id", request_id.parse().expect("ASCII request id"));
    request.set_timeout(timeout);
    request
}

/// grpc.health.v1 Check of `service` ("" for the whole server); `None` when it cannot
/// be asked (no connection, error status) within two seconds.
pub async fn health(addr: SocketAddr, service: &str) -> Option<ServingStatus> {
    let check = async {
        let channel = endpoint(addr).connect_timeout(Duration::from_secs(1)).connect().await.ok()?;
        let mut client = HealthClient::new(channel);
        let mut request = Request::new(HealthCheckRequest { service: service.to_owned() });
        request.set_timeout(Duration::from_secs(2));
        let response = client.check(request).await.ok()?;
        ServingStatus::try_from(response.into_inner().status).ok()
    };
    tokio::time::timeout(Duration::from_secs(2), check).await.ok().flatten()
}

/// Polls health of `service` until it reports `want`; answers how long that took, or
/// `None` after `limit`.
pub async fn wait_health(addr: SocketAddr, service: &str, want: ServingStatus, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if health(addr, service).await == Some(want) {
            return Some(start.elapsed());
        }
        if start.elapsed() >= limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Executes one statement, panicking on error.
pub async fn exec(db: &DatabaseConnection, sql: &str) -> u64 {
    db.execute(Statement::from_string(db.get_database_backend(), sql.to_owned()))
        .await
        .unwrap_or_else(|err| panic!("{sql}: {err}"))
        .rows_affected()
}

/// How many backends of `database` wait on a lock (a request blocked on a row lock).
pub async fn lock_waiters(admin: &DatabaseConnection, database: &str) -> i64 {
    let sql =
        format!("SELECT COUNT(*) AS n FROM pg_stat_activity WHERE datname = '{database}' AND wait_event_type = 'Lock'");
    admin
        .query_one(Statement::from_string(admin.get_database_backend(), sql))
        .await
        .expect("pg_stat_activity")
        .expect("one row")
        .try_get::<i64>("", "n")
        .expect("count")
}

/// Waits until some backend of `database` waits on a lock.
pub async fn wait_for_lock_waiter(admin: &DatabaseConnection, database: &str, limit: Duration) {
    let start = Instant::now();
    while lock_waiters(admin, database).await == 0 {
        assert!(start.elapsed() < limit, "no request of {database} blocked on the held row lock within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Terminates every other backend connected to `database`; answers how many.
pub async fn terminate_backends(admin: &DatabaseConnection, database: &str) -> usize {
    let sql = format!(
        "SELECT pg_terminate_backend(pid) AS t FROM pg_stat_activity WHERE datname = '{database}' AND pid <> pg_backend_pid()"
    );
    admin
        .query_all(Statement::from_string(admin.get_database_backend(), sql))
        .await
        .expect("pg_terminate_backend")
        .len()
}
