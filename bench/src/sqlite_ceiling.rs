//! The SQLite ceiling of `add`, what `bench/sql/add.sql` is for PostgreSQL: one add is one
//! transaction that inserts one grant row and one change row, with grantd's keys and
//! foreign keys and no revision counter. An add can do no less and still be grantd's add,
//! so what SQLite allows for it bounds what grantd can reach on the same machine.
//!
//! No grantd and none of its code: raw sqlx on a SQLite file whose tables are created here
//! ([`SCHEMA`], a copy of grantd's schema kept for the ceiling alone), opened as grantd
//! opens its own (WAL, `synchronous=NORMAL`, foreign keys enforced, checkpoints run beside
//! the writes instead of inside a commit). The organization, its members and the permission
//! are seeded once per file; `bench/run.sh` keeps one file for a whole run, so that the
//! ceiling's tables grow over the run as grantd's do.
//!
//! Every client writes through one connection, in turn: SQLite runs one write transaction
//! at a time anyway, and a connection in WAL mode keeps its page cache from one
//! transaction to the next only while no other connection commits, which is why grantd
//! too writes through one connection.
//!
//! Two ways to send the transaction:
//! - `statements`: one sqlx call per statement (BEGIN IMMEDIATE, the two inserts, COMMIT),
//!   each prepared once per connection, as a server sends them. Each call is a round trip
//!   to the thread sqlx runs the SQLite connection on.
//! - `one-call`: the same transaction as one multi-statement string, so one round trip
//!   (values inline, parsed every time): what SQLite allows once those round trips go.

use std::{
    path::Path,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use sqlx::{
    Connection, Executor, Row, SqliteConnection,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous},
};
use tokio::sync::{Mutex, oneshot};

use crate::{Args, RESOURCE_TYPE, Report, Scenario, TaskResult, deadline_and_limit};

const ORG: &str = "ceiling";
const PERMISSION: &str = "ceiling-p0";
const USERS: usize = 100;
/// grantd's code for a change that added a grant (`bench/sql/add.sql` writes the same).
const GRANT_ADDED: i64 = 1;

/// The ceiling's tables: grantd's keys, foreign keys and indexes for the rows an add
/// writes, with `changes` as grantd's write path numbers it after commit (an insertion id,
/// a revision given later, the id of the write), so that no counter is touched in the add.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS organizations (
    id TEXT NOT NULL PRIMARY KEY,
    display_name TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS memberships (
    organization_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    added_at TEXT NOT NULL,
    added_by TEXT NOT NULL,
    PRIMARY KEY (organization_id, user_id),
    FOREIGN KEY (organization_id) REFERENCES organizations (id)
);
CREATE TABLE IF NOT EXISTS permissions (
    id BLOB NOT NULL PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS grants (
    organization_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    resource_type TEXT NOT NULL,
    resource_id TEXT NOT NULL,
    permission_id BLOB NOT NULL,
    granted_at TEXT NOT NULL,
    granted_by TEXT NOT NULL,
    PRIMARY KEY (organization_id, user_id, resource_type, resource_id, permission_id),
    FOREIGN KEY (organization_id, user_id) REFERENCES memberships (organization_id, user_id),
    FOREIGN KEY (permission_id) REFERENCES permissions (id)
);
CREATE INDEX IF NOT EXISTS idx_grants_resource ON grants (organization_id, resource_type, resource_id);
CREATE INDEX IF NOT EXISTS idx_grants_permission ON grants (permission_id);
CREATE TABLE IF NOT EXISTS changes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    revision INTEGER NULL UNIQUE,
    write_id BLOB NOT NULL,
    kind INTEGER NOT NULL,
    actor TEXT NOT NULL,
    request_id TEXT NOT NULL,
    at TEXT NOT NULL,
    organization_id TEXT NULL,
    user_id TEXT NULL,
    permission_id BLOB NULL,
    resource_type TEXT NULL,
    resource_id TEXT NULL
);
CREATE INDEX IF NOT EXISTS idx_changes_organization ON changes (organization_id, revision);
CREATE INDEX IF NOT EXISTS idx_changes_write ON changes (write_id);
CREATE INDEX IF NOT EXISTS idx_changes_unsequenced ON changes (id) WHERE revision IS NULL;
";

const INSERT_GRANT: &str = "INSERT INTO grants \
    (organization_id, user_id, resource_type, resource_id, permission_id, granted_at, granted_by) \
    VALUES (?, ?, ?, ?, ?, ?, ?) \
    ON CONFLICT (organization_id, user_id, resource_type, resource_id, permission_id) DO NOTHING";
const INSERT_CHANGE: &str = "INSERT INTO changes \
    (write_id, kind, actor, request_id, at, organization_id, user_id, permission_id, resource_type, resource_id) \
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";

/// How often the WAL is checkpointed beside the writes, as grantd does it.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(250);

/// Runs the ceiling on `--ceiling-db`, or on a new file in the temporary directory that
/// is removed afterwards.
pub async fn run(args: &Args) -> anyhow::Result<Report> {
    let temporary = args.ceiling_db.is_none();
    let file = args
        .ceiling_db
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("grantd-ceiling-{}.db", uuid::Uuid::new_v4())));
    let report = measure(args, &file).await;
    if temporary {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
        }
    }
    report
}

async fn measure(args: &Args, file: &Path) -> anyhow::Result<Report> {
    let options = SqliteConnectOptions::new()
        .filename(file)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(5))
        // As grantd: no checkpoint inside the commit that crosses the WAL's threshold
        // (the task below runs them), and statement journals in memory.
        .pragma("wal_autocheckpoint", "0")
        .pragma("temp_store", "memory");
    // As grantd's writer connection: a page cache that holds what an add touches in a
    // grown file from one add to the next.
    let mut writer = SqliteConnection::connect_with(&options.clone().pragma("cache_size", "-8192"))
        .await
        .with_context(|| format!("opening the ceiling database {}", file.display()))?;
    // A file whose tables came from elsewhere (grantd's own, say) has a `changes` of its own.
    let columns: Vec<String> =
        sqlx::query_scalar("SELECT name FROM pragma_table_info('changes')").fetch_all(&mut writer).await?;
    if !columns.is_empty() && !columns.iter().any(|column| column == "write_id") {
        bail!("{} holds tables of another schema: give the ceiling a file of its own", file.display());
    }
    writer.execute(SCHEMA).await.context("creating the ceiling's tables")?;
    let (permission, seeded) = seed(&mut writer, args.existing_grants).await.context("seeding the ceiling database")?;
    if seeded {
        let grants = args.existing_grants;
        eprintln!("ceiling database {} seeded ({USERS} members, {grants} grants of its own)", file.display());
    } else {
        eprintln!("ceiling database {} (seeded by an earlier run)", file.display());
    }

    let (stop, stopped) = oneshot::channel();
    let checkpoints = tokio::spawn(checkpoint(SqliteConnection::connect_with(&options).await?, stopped));
    let writer = Arc::new(Mutex::new(writer));
    let one_call = args.scenario == Scenario::SqliteCeilingOneCall;
    // Resources new to this run: a kept file holds the resources of the runs before it,
    // and an add that finds its grant held inserts nothing.
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let (deadline, limit, issued) = deadline_and_limit(args);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(args.clients);
    for task in 0..args.clients {
        let (writer, issued, run) = (writer.clone(), issued.clone(), run.clone());
        tasks.push(tokio::spawn(async move {
            let mut result = TaskResult::default();
            while deadline.is_none_or(|d| Instant::now() < d) {
                let n = issued.fetch_add(1, Ordering::Relaxed);
                if n >= limit {
                    break;
                }
                let add = Add {
                    user: format!("ceiling-u{}", n as usize % USERS),
                    resource: format!("c{run}-{task}-n{n}"),
                    permission,
                    write_id: *uuid::Uuid::new_v4().as_bytes(),
                    request_id: uuid::Uuid::new_v4().to_string(),
                    at: chrono::Utc::now().to_rfc3339(),
                };
                let begin = Instant::now();
                let outcome = {
                    let mut connection = writer.lock().await;
                    if one_call {
                        add_in_one_call(&mut connection, &add).await
                    } else {
                        add_statement_by_statement(&mut connection, &add).await
                    }
                };
                result.latencies.push(begin.elapsed());
                if let Err(err) = outcome {
                    *result.errors.entry(format!("{err}")).or_default() += 1;
                }
            }
            result
        }));
    }
    let report = Report::collect(args.scenario, started, tasks).await;
    let _ = stop.send(());
    checkpoints.await.context("the checkpoint task panicked")??;
    // Every task has ended, so the writer is no longer shared.
    if let Some(writer) = Arc::into_inner(writer) {
        writer.into_inner().close().await?;
    }
    report
}

/// One add: the rows' values, made before the clock starts for it.
struct Add {
    user: String,
    resource: String,
    permission: [u8; 16],
    write_id: [u8; 16],
    request_id: String,
    at: String,
}

/// Moves the WAL into the database file every [`CHECKPOINT_INTERVAL`] on a connection of
/// its own until told to stop; a passive checkpoint waits for no writer.
async fn checkpoint(mut connection: SqliteConnection, mut stop: oneshot::Receiver<()>) -> anyhow::Result<()> {
    loop {
        tokio::select! {
            _ = &mut stop => break,
            () = tokio::time::sleep(CHECKPOINT_INTERVAL) => {
                connection.execute("PRAGMA wal_checkpoint(PASSIVE)").await?;
            }
        }
    }
    connection.close().await?;
    Ok(())
}

/// The organization, its members, one permission and `grants` grants, unless an earlier
/// run seeded them: the permission's id, and whether they were seeded now.
async fn seed(connection: &mut SqliteConnection, grants: usize) -> Result<([u8; 16], bool), sqlx::Error> {
    let now = chrono::Utc::now().to_rfc3339();
    let mut tx = connection.begin_with("BEGIN IMMEDIATE").await?;
    let seeded =
        sqlx::query("SELECT id FROM permissions WHERE name = ?").bind(PERMISSION).fetch_optional(&mut *tx).await?;
    if let Some(row) = seeded {
        let id: Vec<u8> = row.try_get("id")?;
        let id =
            id.try_into().map_err(|_| sqlx::Error::Decode("the ceiling's permission id is not 16 bytes".into()))?;
        return Ok((id, false));
    }
    let permission = *uuid::Uuid::new_v4().as_bytes();
    sqlx::query("INSERT INTO organizations (id, display_name, created_at) VALUES (?, 'ceiling', ?)")
        .bind(ORG)
        .bind(&now)
        .execute(&mut *tx)
        .await?;
    sqlx::query("INSERT INTO permissions (id, name, description, created_at) VALUES (?, ?, '', ?)")
        .bind(&permission[..])
        .bind(PERMISSION)
        .bind(&now)
        .execute(&mut *tx)
        .await?;
    for k in 0..USERS {
        sqlx::query("INSERT INTO memberships (organization_id, user_id, added_at, added_by) VALUES (?, ?, ?, ?)")
            .bind(ORG)
            .bind(format!("ceiling-u{k}"))
            .bind(&now)
            .bind(ORG)
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query(
        "WITH RECURSIVE k(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM k WHERE n + 1 < ?) \
         INSERT INTO grants (organization_id, user_id, resource_type, resource_id, permission_id, granted_at, granted_by) \
         SELECT ?, 'ceiling-u' || (n % ?), ?, 'seed-' || n, ?, ?, ? FROM k",
    )
    .bind(i64::try_from(grants).unwrap_or(i64::MAX))
    .bind(ORG)
    .bind(USERS as i64)
    .bind(RESOURCE_TYPE)
    .bind(&permission[..])
    .bind(&now)
    .bind(ORG)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok((permission, true))
}

/// The add, one sqlx call per statement.
async fn add_statement_by_statement(connection: &mut SqliteConnection, add: &Add) -> Result<(), sqlx::Error> {
    let mut tx = connection.begin_with("BEGIN IMMEDIATE").await?;
    sqlx::query(INSERT_GRANT)
        .bind(ORG)
        .bind(&add.user)
        .bind(RESOURCE_TYPE)
        .bind(&add.resource)
        .bind(&add.permission[..])
        .bind(&add.at)
        .bind(ORG)
        .execute(&mut *tx)
        .await?;
    sqlx::query(INSERT_CHANGE)
        .bind(&add.write_id[..])
        .bind(GRANT_ADDED)
        .bind(ORG)
        .bind(&add.request_id)
        .bind(&add.at)
        .bind(ORG)
        .bind(&add.user)
        .bind(&add.permission[..])
        .bind(RESOURCE_TYPE)
        .bind(&add.resource)
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

/// The same transaction as one string: one round trip to sqlx's connection thread. The
/// values are written inline: they are the tool's own, free of quotes.
async fn add_in_one_call(connection: &mut SqliteConnection, add: &Add) -> Result<(), sqlx::Error> {
    let Add { user, resource, permission, write_id, request_id, at } = add;
    let (permission, write_id) = (hex(permission), hex(write_id));
    let sql = format!(
        "BEGIN IMMEDIATE; \
         INSERT INTO grants (organization_id, user_id, resource_type, resource_id, permission_id, granted_at, granted_by) \
           VALUES ('{ORG}', '{user}', '{RESOURCE_TYPE}', '{resource}', X'{permission}', '{at}', '{ORG}') \
           ON CONFLICT (organization_id, user_id, resource_type, resource_id, permission_id) DO NOTHING; \
         INSERT INTO changes (write_id, kind, actor, request_id, at, organization_id, user_id, permission_id, resource_type, resource_id) \
           VALUES (X'{write_id}', {GRANT_ADDED}, '{ORG}', '{request_id}', '{at}', '{ORG}', '{user}', X'{permission}', \
             '{RESOURCE_TYPE}', '{resource}'); \
         COMMIT;"
    );
    if let Err(err) = connection.execute(sql.as_str()).await {
        let _ = connection.execute("ROLLBACK").await;
        return Err(err);
    }
    Ok(())
}

fn hex(bytes: &[u8; 16]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
