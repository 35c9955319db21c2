//! Test support: a real grantd server on an ephemeral port over a fresh database, and
//! the macro that runs one test body against SQLite and against PostgreSQL.
//!
//! PostgreSQL comes from `GRANTD_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`); each test gets a database of its own.
//! When it is unreachable a PostgreSQL test fails under `CI=true` and is skipped (with a
//! message) elsewhere.

#![allow(dead_code)]

pub mod wire;

use std::{
    hash::{BuildHasher, BuildHasherDefault, DefaultHasher},
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use grantd::{
    api::pb::{
        self, audit_service_client::AuditServiceClient, bulk_service_client::BulkServiceClient,
        directory_service_client::DirectoryServiceClient, grant_service_client::GrantServiceClient,
    },
    auth::{self, Authenticator, KeyConfig, TokenRequest, Verifier},
    server::{self, ServerOptions},
    storage::{self, ConnectionTrait, DatabaseConnection, PoolOptions},
};
use sea_orm::{Database, DatabaseTransaction, DbBackend, Statement, TransactionTrait};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tonic::{
    Request, Status,
    metadata::{Ascii, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::Channel,
};

pub use grantd::api::pb as proto;

const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The HS256 secret every test server verifies tokens with.
pub const TEST_SECRET: &[u8] = b"grantd-tests-only-secret-0123456789abcdef";

/// The subject of the admin token the default clients carry.
pub const ADMIN: &str = "test-admin";

/// Sends `authorization: Bearer <token>` with every call.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Bearer {
    pub fn new(token: &str) -> Self {
        Self(Some(format!("Bearer {token}").parse().expect("ASCII token")))
    }

    /// Sends no authorization at all.
    pub fn none() -> Self {
        Self(None)
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

pub type Authed = InterceptedService<Channel, Bearer>;

/// A token for `subject` signed with the test secret, valid for an hour.
pub fn token(subject: &str, admin: bool) -> String {
    mint(TokenRequest {
        subject: subject.to_owned(),
        admin,
        ttl: std::time::Duration::from_secs(3600),
        organizations: None,
        issuer: None,
        audience: None,
    })
}

pub fn mint(request: TokenRequest) -> String {
    auth::mint(TEST_SECRET, &request).expect("mint token")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Defines `mod sqlite` and `mod postgres`, each with one `#[tokio::test]` per listed
/// `async fn name(server: TestServer)` of the calling file.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let server = $crate::common::TestServer::start(
                        $crate::common::Backend::Sqlite,
                        concat!(module_path!(), "::", stringify!($name)),
                    )
                    .await;
                    if let Some(server) = server {
                        super::$name(server).await;
                    }
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let server = $crate::common::TestServer::start(
                        $crate::common::Backend::Postgres,
                        concat!(module_path!(), "::", stringify!($name)),
                    )
                    .await;
                    if let Some(server) = server {
                        super::$name(server).await;
                    }
                }
            )*
        }
    };
}

/// A running grantd and clients for it.
pub struct TestServer {
    pub backend: Backend,
    pub addr: SocketAddr,
    pub channel: Channel,
    /// The server's own connection pool, for assertions that read tables directly.
    pub db: DatabaseConnection,
    /// A digest of the text of each statement the server has sent so far, in order.
    statements: Arc<Mutex<Vec<u64>>>,
    /// Where the server reads its HS256 secret.
    pub secret_file: std::path::PathBuf,
    database_url: String,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<()>>,
    _dir: Option<tempfile::TempDir>,
    _secret_dir: tempfile::TempDir,
}

impl TestServer {
    /// Starts a server over a fresh database; `None` when PostgreSQL is unreachable
    /// outside CI.
    pub async fn start(backend: Backend, test_name: &str) -> Option<Self> {
        let (database_url, dir) = match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}?mode=rwc", dir.path().join("grantd.db").display());
                (url, Some(dir))
            }
            Backend::Postgres => (fresh_postgres_database(test_name).await?, None),
        };
        Some(Self::start_on(backend, database_url, dir).await)
    }

    async fn start_on(backend: Backend, database_url: String, dir: Option<tempfile::TempDir>) -> Self {
        Self::start_with(backend, database_url, dir, |_| {}).await
    }

    /// Another server over the same database, as a second replica would be; `tune`
    /// adjusts its options.
    pub async fn replica(&self, tune: impl FnOnce(&mut ServerOptions)) -> Self {
        Self::start_with(self.backend, self.database_url.clone(), None, tune).await
    }

    async fn start_with(
        backend: Backend,
        database_url: String,
        dir: Option<tempfile::TempDir>,
        tune: impl FnOnce(&mut ServerOptions),
    ) -> Self {
        let db = storage::connect(&database_url, &PoolOptions::default()).await.expect("connect");
        storage::migrate_up(&db).await.expect("migrate");
        let statements = Arc::new(Mutex::new(Vec::new()));
        let log = statements.clone();

        let secret_dir = tempfile::tempdir().expect("temp dir");
        let secret_file = secret_dir.path().join("hs256.secret");
        std::fs::write(&secret_file, TEST_SECRET).expect("write secret");
        let keys = KeyConfig { hs256_secret_file: Some(secret_file.clone()), ..KeyConfig::default() };
        let verifier = Verifier::new(keys, None, None).expect("verifier");
        let mut options = ServerOptions::new(Authenticator::Tokens(Arc::new(verifier)));
        options.watch_poll_interval = std::time::Duration::from_millis(20);
        options.statement_log = Some(Arc::new(move |sql: &str| {
            let digest = BuildHasherDefault::<DefaultHasher>::default().hash_one(sql);
            log.lock().expect("statement log").push(digest);
        }));
        // Tests fire bursts at a debug build on a shared machine; only the load-shedding
        // test is about being refused, and it sets its own limits.
        options.queue_timeout = std::time::Duration::from_secs(30);
        // Background statements must not count as the server's work for a request.
        let background = storage::connect(&database_url, &PoolOptions::default()).await.expect("connect");
        options.background_db = Some(background);
        tune(&mut options);

        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (shutdown, shutdown_rx) = oneshot::channel::<()>();
        let server_db = db.clone();
        let handle = tokio::spawn(async move {
            server::serve(server_db, listener, options, async {
                let _ = shutdown_rx.await;
            })
            .await
            .expect("server");
        });
        let channel = Channel::from_shared(format!("http://{addr}")).expect("uri").connect().await.expect("connect");
        Self {
            backend,
            addr,
            channel,
            db,
            statements,
            secret_file,
            database_url,
            shutdown: Some(shutdown),
            handle: Some(handle),
            _dir: dir,
            _secret_dir: secret_dir,
        }
    }

    /// The channel with an admin token on every call.
    pub fn admin_channel(&self) -> Authed {
        self.channel_as(Bearer::new(&token(ADMIN, true)))
    }

    pub fn channel_as(&self, bearer: Bearer) -> Authed {
        InterceptedService::new(self.channel.clone(), bearer)
    }

    /// Clients acting as an administrator.
    pub fn grants(&self) -> GrantServiceClient<Authed> {
        GrantServiceClient::new(self.admin_channel()).max_encoding_message_size(64 * 1024 * 1024)
    }

    pub fn directory(&self) -> DirectoryServiceClient<Authed> {
        DirectoryServiceClient::new(self.admin_channel())
    }

    pub fn audit(&self) -> AuditServiceClient<Authed> {
        AuditServiceClient::new(self.admin_channel())
    }

    pub fn bulk(&self) -> BulkServiceClient<Authed> {
        BulkServiceClient::new(self.admin_channel()).max_encoding_message_size(64 * 1024 * 1024)
    }

    /// A BulkService client whose calls carry `token`.
    pub fn bulk_with(&self, token: &str) -> BulkServiceClient<Authed> {
        BulkServiceClient::new(self.channel_as(Bearer::new(token)))
    }

    /// Clients acting as `subject` (not an admin).
    pub fn grants_as(&self, subject: &str) -> GrantServiceClient<Authed> {
        GrantServiceClient::new(self.channel_as(Bearer::new(&token(subject, false))))
    }

    pub fn directory_as(&self, subject: &str) -> DirectoryServiceClient<Authed> {
        DirectoryServiceClient::new(self.channel_as(Bearer::new(&token(subject, false))))
    }

    pub fn audit_as(&self, subject: &str) -> AuditServiceClient<Authed> {
        AuditServiceClient::new(self.channel_as(Bearer::new(&token(subject, false))))
    }

    pub fn database_url(&self) -> &str {
        &self.database_url
    }

    pub fn statement_count(&self) -> usize {
        self.statements.lock().expect("statement log").len()
    }

    /// Digests of the texts of the statements sent since the count was `start`, in order:
    /// equal digests, equal texts.
    pub fn statement_texts_since(&self, start: usize) -> Vec<u64> {
        self.statements.lock().expect("statement log")[start..].to_vec()
    }

    /// Rows in a table, read directly.
    pub async fn count_rows(&self, table: &str) -> i64 {
        let backend = self.db.get_database_backend();
        let row = self
            .db
            .query_one(Statement::from_string(backend, format!("SELECT COUNT(*) AS n FROM {table}")))
            .await
            .expect("count query")
            .expect("one row");
        row.try_get::<i64>("", "n").expect("count")
    }

    /// Up to 1,000 changes after `revision`, as ListChanges answers them.
    pub async fn list_changes(&self, revision: u64) -> Vec<pb::Change> {
        self.audit()
            .list_changes(pb::ListChangesRequest {
                after_revision: revision,
                organization_id: String::new(),
                page_size: 1000,
            })
            .await
            .expect("list changes")
            .into_inner()
            .changes
    }

    /// The latest committed revision, as ListChanges reports it.
    pub async fn latest_revision(&self) -> u64 {
        self.audit()
            .list_changes(pb::ListChangesRequest { after_revision: 0, organization_id: String::new(), page_size: 1 })
            .await
            .expect("list changes")
            .into_inner()
            .latest_revision
    }

    /// Stops the server (draining in-flight requests) and starts a new one on the same
    /// database, as a restart would.
    pub async fn restart(mut self) -> Self {
        self.stop().await;
        let dir = self._dir.take();
        Self::start_on(self.backend, self.database_url.clone(), dir).await
    }

    async fn stop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(handle) = self.handle.take() {
            let _ = handle.await;
        }
        self.db.clone().close().await.ok();
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

/// Creates an empty database named after the test and answers its URL.
async fn fresh_postgres_database(test_name: &str) -> Option<String> {
    create_postgres_database(&database_name(test_name)).await.map(|(url, _)| url)
}

/// Creates (or recreates) the empty database `name` and answers its URL and the URL of
/// the maintenance database; `None` (with a message) when PostgreSQL is unreachable
/// outside CI. Under `CI=true` an unreachable server fails the test.
pub async fn create_postgres_database(name: &str) -> Option<(String, String)> {
    let admin_url = std::env::var("GRANTD_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned());
    let admin = match Database::connect(&admin_url).await {
        Ok(admin) => admin,
        Err(err) if std::env::var("CI").is_ok_and(|ci| ci == "true") => {
            panic!("PostgreSQL at {admin_url} is unreachable under CI=true: {err}")
        }
        Err(err) => {
            eprintln!("skipping PostgreSQL test {name}: {admin_url} is unreachable ({err})");
            return None;
        }
    };
    let backend = admin.get_database_backend();
    for sql in [format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"), format!("CREATE DATABASE {name}")] {
        admin.execute(Statement::from_string(backend, sql)).await.expect("create test database");
    }
    admin.close().await.ok();
    let (base, _) = admin_url.rsplit_once('/').expect("database URL has a path");
    Some((format!("{base}/{name}"), admin_url))
}

/// `[a-z0-9_]`, at most 63 bytes, unique per test path.
fn database_name(test_name: &str) -> String {
    let cleaned: String =
        test_name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).collect();
    let hash = cleaned.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    let tail: String = cleaned.chars().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect();
    format!("t_{hash:016x}_{}", tail.trim_start_matches('_'))
}

/// What an attack or a rejected request must leave unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    pub revision: u64,
    pub organizations: i64,
    pub memberships: i64,
    pub grants: i64,
    pub permissions: i64,
}

pub async fn snapshot(server: &TestServer) -> Snapshot {
    Snapshot {
        revision: server.latest_revision().await,
        organizations: server.count_rows("organizations").await,
        memberships: server.count_rows("memberships").await,
        grants: server.count_rows("grants").await,
        permissions: server.count_rows("permissions").await,
    }
}

/// Shorthand for the messages most tests build.
/// Every grant of the user in the organization, reading page after page.
pub async fn list_grants(
    server: &TestServer,
    organization_id: &str,
    user_id: &str,
    filter: Option<pb::Resource>,
) -> Vec<pb::Grant> {
    let mut grants = server.grants();
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = grants
            .list_user_permissions(pb::ListUserPermissionsRequest {
                organization_id: organization_id.into(),
                user_id: user_id.into(),
                resource: filter.clone(),
                page_size: 1000,
                page_token,
                at_least_revision: 0,
            })
            .await
            .expect("list user permissions")
            .into_inner();
        all.extend(page.grants);
        if page.next_page_token.is_empty() {
            return all;
        }
        page_token = page.next_page_token;
    }
}

/// Each of the user's grants as one line, permission ids left out (each installation
/// mints its own), in a stable order: `name type/id seconds.nanos granted_by`.
pub async fn grant_lines(server: &TestServer, organization_id: &str, user_id: &str) -> Vec<String> {
    let mut lines: Vec<String> = list_grants(server, organization_id, user_id, None)
        .await
        .into_iter()
        .map(|g| {
            let r = g.resource.expect("a grant has a resource");
            let at = g.granted_at.expect("a grant has a time");
            format!("{} {}/{} {}.{:09} {}", g.permission_name, r.r#type, r.id, at.seconds, at.nanos, g.granted_by)
        })
        .collect();
    lines.sort();
    lines
}

/// The organization's members' user ids, in ListOrganizationMembers' order.
pub async fn member_ids(server: &TestServer, organization_id: &str) -> Vec<String> {
    let request = pb::ListOrganizationMembersRequest { organization_id: organization_id.into(), ..Default::default() };
    let members = server.directory().list_organization_members(request).await.expect("members").into_inner().members;
    members.into_iter().map(|m| m.user_id).collect()
}

pub fn resource(kind: &str, id: &str) -> Option<pb::Resource> {
    Some(pb::Resource { r#type: kind.to_owned(), id: id.to_owned() })
}

/// Creates an organization, asserting success.
pub async fn create_org(server: &TestServer, id: &str) {
    server
        .directory()
        .create_organization(pb::CreateOrganizationRequest { id: id.to_owned(), display_name: format!("Org {id}") })
        .await
        .expect("create organization");
}

/// Creates a permission and answers its id.
pub async fn create_permission(server: &TestServer, name: &str) -> String {
    server
        .directory()
        .create_permission(pb::CreatePermissionRequest { name: name.to_owned(), description: String::new() })
        .await
        .expect("create permission")
        .into_inner()
        .permission
        .expect("permission")
        .id
}

/// The rights built into every catalog (`edit_org_users`, `view_org_users`).
pub const BUILT_IN_PERMISSIONS: i64 = 2;

/// The id of a catalog permission, by name (a built-in one, say).
pub async fn permission_id(server: &TestServer, name: &str) -> String {
    let by_name = pb::get_permission_request::Permission::Name(name.to_owned());
    server
        .directory()
        .get_permission(pb::GetPermissionRequest { permission: Some(by_name) })
        .await
        .expect("get permission")
        .into_inner()
        .permission
        .expect("permission")
        .id
}

/// Adds a member, asserting success.
pub async fn add_member(server: &TestServer, organization_id: &str, user_id: &str) {
    server
        .directory()
        .add_user_to_organization(pb::AddUserToOrganizationRequest {
            organization_id: organization_id.to_owned(),
            user_id: user_id.to_owned(),
        })
        .await
        .expect("add member");
}

/// The field names of a google.rpc.BadRequest in a status.
pub fn bad_request_fields(status: &tonic::Status) -> Vec<String> {
    use tonic_types::StatusExt;
    status
        .get_details_bad_request()
        .map(|bad| bad.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

/// Locks the membership row of (org, user) on PostgreSQL from a connection of the test's
/// own, as a concurrent writer would; the lock lasts until the transaction ends. (SQLite's
/// whole-database write lock cannot be held by a second connection of these tests.)
pub async fn hold_membership_lock(db: &DatabaseConnection, org: &str, user: &str) -> DatabaseTransaction {
    let tx = db.begin().await.expect("begin");
    let rows = tx
        .query_all(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT user_id FROM memberships WHERE organization_id = $1 AND user_id = $2 FOR UPDATE",
            [org.into(), user.into()],
        ))
        .await
        .expect("lock the membership row");
    assert_eq!(rows.len(), 1, "membership {org}/{user} to lock");
    tx
}
