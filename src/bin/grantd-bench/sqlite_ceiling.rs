//! The SQLite ceiling of `add`: what pgbench is for PostgreSQL. grantd's own statements
//! for an AddUserPermissions of one permission written alone, a group of one (the
//! list-taking ones are grantd's own constants; the rest copied from sqlx's statement
//! log of a running grantd), run straight through sqlx, N clients, each transaction
//! under one in-process writer lock as grantd takes it. grantd itself writes the adds
//! that arrive together in one such transaction, which this ceiling does not. The
//! database is opened by grantd's own code (same pragmas) and migrated; bench/run.sh
//! points it at the file of the grantd it measures (idle meanwhile), so both work on a
//! database of the same size, as pgbench and grantd share one PostgreSQL database. Its
//! members and permission are seeded once.
//!
//! Two ways to send them:
//! - `statements`: one sqlx call per statement, as grantd sends them. Each call is a
//!   round trip to the thread sqlx runs the SQLite connection on.
//! - `one-call`: the same transaction as one multi-statement string, so one round trip
//!   (values inline, nothing cached): what SQLite allows when the round trips go.

use std::{sync::Arc, time::Instant};

use anyhow::Context;
use futures::FutureExt;
use grantd::{
    domain::model::ChangeKind,
    storage::{
        self, PoolOptions, changes::SQLITE_APPEND, grants::SQLITE_INSERT, memberships::SQLITE_MEMBERS_AMONG,
        permissions::SQLITE_RESOLVE,
    },
};
use sea_orm::sqlx::{self, Connection, Executor, Row, SqliteConnection, SqlitePool};
use tokio::sync::Mutex;

use crate::{Args, Report, Scenario, TaskResult, deadline_and_limit};

const ORG: &str = "ceiling";
const PERMISSION: &str = "ceiling-p0";
const USERS: usize = 100;

const TOUCH: &str = r#"UPDATE "revision_counter" SET "value" = "value" WHERE "revision_counter"."id" = ?"#;
const BUMP: &str =
    r#"UPDATE "revision_counter" SET "value" = "value" + ? WHERE "revision_counter"."id" = ? RETURNING "value""#;

/// Runs the ceiling on `--ceiling-db`, or on a new file in the temporary directory that
/// is removed afterwards.
pub async fn run(args: &Args) -> anyhow::Result<Report> {
    let temporary = args.ceiling_db.is_none();
    let file = args
        .ceiling_db
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("grantd-ceiling-{}.db", uuid::Uuid::new_v4())));
    let url = format!("sqlite://{}?mode=rwc", file.display());
    // A connection per client: the writer lock, not the pool, is what they queue on.
    let pool_size = u32::try_from(args.clients).unwrap_or(u32::MAX).max(PoolOptions::default().max_connections);
    let options = PoolOptions { max_connections: pool_size, ..PoolOptions::default() };
    let db = storage::connect(&url, &options).await.context("opening the ceiling database")?;
    storage::migrate_up(&db).await.context("migrating the ceiling database")?;
    tokio::spawn(storage::checkpoint_sqlite_wal(db.clone(), std::time::Duration::from_millis(250)));
    let pool = db.get_sqlite_connection_pool().clone();
    seed(&pool, args.existing_grants).await.context("seeding the ceiling database")?;
    eprintln!(
        "ceiling database {} seeded ({USERS} members, {} grants of its own)",
        file.display(),
        args.existing_grants
    );

    // Every client's connection is open before the clock starts, as grantd's pool is.
    let mut connections = Vec::with_capacity(args.clients);
    for _ in 0..args.clients {
        connections.push(pool.acquire().await?);
    }
    let one_call = args.scenario == Scenario::SqliteCeilingOneCall;
    let (deadline, limit, issued) = deadline_and_limit(args);
    let writer = Arc::new(Mutex::new(()));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(args.clients);
    for (task, mut connection) in connections.into_iter().enumerate() {
        let (writer, issued) = (writer.clone(), issued.clone());
        tasks.push(tokio::spawn(async move {
            let mut result = TaskResult::default();
            while deadline.is_none_or(|d| Instant::now() < d) {
                let n = issued.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n >= limit {
                    break;
                }
                let user = format!("ceiling-u{}", n as usize % USERS);
                let resource = format!("c{task}-n{n}");
                let begin = Instant::now();
                let outcome = {
                    let _writer = writer.lock().await;
                    if one_call {
                        add_in_one_call(&mut connection, &user, &resource).boxed().await
                    } else {
                        add_statement_by_statement(&mut connection, &user, &resource).boxed().await
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
    drop(pool);
    db.close().await?;
    if temporary {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
        }
    }
    report
}

/// The organization, its members, one permission and `grants` grants; nothing when an
/// earlier run seeded them.
async fn seed(pool: &SqlitePool, grants: usize) -> Result<(), sqlx::Error> {
    let now = chrono::Utc::now();
    let mut tx = pool.begin().await?;
    let seeded = sqlx::query("SELECT 1 FROM organizations WHERE id = ?").bind(ORG).fetch_optional(&mut *tx).await?;
    if seeded.is_some() {
        return Ok(());
    }
    sqlx::query("INSERT INTO organizations (id, display_name, created_at) VALUES (?, 'ceiling', ?)")
        .bind(ORG)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    sqlx::query("INSERT INTO permissions (id, name, description, created_at) VALUES (?, ?, '', ?)")
        .bind(uuid::Uuid::new_v4())
        .bind(PERMISSION)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    for k in 0..USERS {
        sqlx::query("INSERT INTO memberships (organization_id, user_id, added_at, added_by) VALUES (?, ?, ?, ?)")
            .bind(ORG)
            .bind(format!("ceiling-u{k}"))
            .bind(now)
            .bind(ORG)
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query(
        "WITH RECURSIVE k(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM k WHERE n + 1 < ?) \
         INSERT INTO grants (organization_id, user_id, resource_type, resource_id, permission_id, granted_at, granted_by) \
         SELECT ?, 'ceiling-u' || (n % 100), 'bench_doc', 'seed-' || n, permissions.id, ?, ? \
         FROM k, permissions WHERE permissions.name = ?",
    )
    .bind(i64::try_from(grants).unwrap_or(i64::MAX))
    .bind(ORG)
    .bind(now)
    .bind(ORG)
    .bind(PERMISSION)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// grantd's statements for an add by an admin, one sqlx call each.
async fn add_statement_by_statement(
    connection: &mut SqliteConnection,
    user: &str,
    resource: &str,
) -> Result<(), sqlx::Error> {
    let now = chrono::Utc::now();
    let mut tx = connection.begin().await?;
    sqlx::query(TOUCH).bind(1i64).execute(&mut *tx).await?;
    sqlx::query(SQLITE_MEMBERS_AMONG).bind(format!(r#"[["{ORG}", "{user}"]]"#)).fetch_all(&mut *tx).await?;
    let permission: uuid::Uuid = sqlx::query(SQLITE_RESOLVE)
        .bind("[]")
        .bind(format!(r#"["{PERMISSION}"]"#))
        .fetch_one(&mut *tx)
        .await?
        .try_get("id")?;
    let listed = format!(r#"[["{ORG}", "{user}", "bench_doc", "{resource}", "{ORG}", ["{}"]]]"#, permission.simple());
    sqlx::query(SQLITE_INSERT).bind(now).bind(&listed).fetch_all(&mut *tx).await?;
    let revision: i64 = sqlx::query(BUMP).bind(1i64).bind(1i64).fetch_one(&mut *tx).await?.try_get("value")?;
    let event = format!(
        r#"[["{ORG}", "{resource}", 0, [[{}, "{ORG}", "{user}", "{}", "bench_doc", "{resource}"]]]]"#,
        ChangeKind::GrantAdded.code(),
        permission.simple()
    );
    sqlx::query(SQLITE_APPEND).bind(revision).bind(now).bind(event).execute(&mut *tx).await?;
    tx.commit().await
}

/// The same transaction as one string: one round trip to sqlx's connection thread.
/// Values are written inline (they are the tool's own, quote-free), and the looked-up
/// ones are subqueries, so no statement waits on an answer sent back to the caller.
async fn add_in_one_call(connection: &mut SqliteConnection, user: &str, resource: &str) -> Result<(), sqlx::Error> {
    let now = chrono::Utc::now().to_rfc3339();
    let kind = ChangeKind::GrantAdded.code();
    let sql = format!(
        "BEGIN; \
         UPDATE revision_counter SET value = value WHERE id = 1; \
         SELECT m.organization_id, m.user_id \
           FROM json_each('[[\"{ORG}\", \"{user}\"]]') AS listed CROSS JOIN memberships m \
           ON m.organization_id = listed.value ->> 0 AND m.user_id = listed.value ->> 1; \
         SELECT id, name, description, created_at FROM permissions \
           WHERE id IN (SELECT unhex(value) FROM json_each('[]')) \
           OR name IN (SELECT value FROM json_each('[\"{PERMISSION}\"]')); \
         INSERT INTO grants (organization_id, user_id, resource_type, resource_id, permission_id, granted_at, granted_by) \
           SELECT '{ORG}', '{user}', 'bench_doc', '{resource}', listed.id, '{now}', '{ORG}' \
           FROM (SELECT id FROM permissions WHERE name = '{PERMISSION}') AS listed WHERE true \
           ON CONFLICT (organization_id, user_id, resource_type, resource_id, permission_id) DO NOTHING RETURNING permission_id; \
         UPDATE revision_counter SET value = value + 1 WHERE id = 1 RETURNING value; \
         INSERT INTO changes (revision, kind, actor, request_id, at, organization_id, user_id, permission_id, resource_type, resource_id) \
           SELECT (SELECT value FROM revision_counter WHERE id = 1) + listed.key, {kind}, '{ORG}', '{resource}', '{now}', \
             '{ORG}', '{user}', (SELECT id FROM permissions WHERE name = '{PERMISSION}'), 'bench_doc', '{resource}' \
           FROM json_each('[0]') AS listed; \
         COMMIT;"
    );
    if let Err(err) = connection.execute(sql.as_str()).await {
        let _ = connection.execute("ROLLBACK").await;
        return Err(err);
    }
    Ok(())
}
