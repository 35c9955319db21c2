//! Fault injection against real `grantd serve` processes:
//!
//! * pool exhaustion: with one pooled connection held by a request blocked on a row lock,
//!   another request answers UNAVAILABLE after the acquire timeout instead of hanging;
//! * PostgreSQL connections killed (pg_terminate_backend) under load, then the database
//!   made unreachable (ALLOW_CONNECTIONS false): UNAVAILABLE and health NOT_SERVING, and
//!   back to serving within seconds once it returns, same process;
//! * SIGKILL in the middle of 200-permission batches (PostgreSQL and SQLite): after a
//!   restart every batch is entirely there or entirely absent;
//! * SIGTERM: in-flight requests finish, new ones are refused, the process exits within
//!   `--shutdown-grace-ms`;
//! * PostgreSQL ending every session between checks, whose connections grantd keeps from
//!   one check to the next: the next checks still answer; and between writes, with a full
//!   pool of broken connections: the next write still commits.
//!
//! Each test ends with the invariants of tests/common/invariants.rs. PostgreSQL comes
//! from `GRANTD_TEST_POSTGRES_URL` (fails under `CI=true` when unreachable, skipped
//! elsewhere); the cluster itself is never stopped, only this test's database is made
//! unreachable.

mod common;
#[path = "common/invariants.rs"]
mod invariants;
#[path = "common/process.rs"]
mod process;
#[path = "common/workload.rs"]
mod workload;

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use common::hold_membership_lock;
use grantd::api::pb;
use invariants::{CallRecord, Policy, Snapshot};
use process::{Clients, Grantd, SecretFile, TestDatabase, exec, terminate_backends, wait_for_lock_waiter, wait_health};
use rand::{SeedableRng, rngs::StdRng};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbBackend, Statement};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

/// A generous cap: anything slower is a hang.
const HANG: Duration = Duration::from_secs(10);

fn code_of(call: &CallRecord) -> Option<Code> {
    call.outcome.as_ref().err().map(|(code, _)| *code)
}

/// Checks the invariants, reading through `server`.
async fn check(server: &Grantd, database: &TestDatabase, calls: &[CallRecord], policy: &Policy) -> invariants::Report {
    let clients = Clients::admin(server.channel());
    let db = database.connect().await;
    let snapshot = Snapshot::take(&clients, &db).await;
    db.close().await.ok();
    invariants::check(&snapshot, calls, policy)
}

// ---------------------------------------------------------------------------------------
// (a) pool exhaustion

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pool_exhausted_answers_unavailable_instead_of_hanging() {
    let Some(database) = TestDatabase::postgres("t_consistency_faults_pool").await else { return };
    let started = Instant::now();
    let secret = SecretFile::new();
    let server =
        Grantd::start("pool", &database.url, &secret, &["--db-max-connections", "1", "--db-acquire-timeout-ms", "500"])
            .await;
    let clients = Clients::admin(server.channel());
    let fixture = workload::seed(&clients, "pool", 1, 1, 1).await;
    let (org, user, permission) = (&fixture.orgs[0], &fixture.users[0], &fixture.permissions[0].0);
    let admin = database.connect_admin().await;
    let side = database.connect().await;
    let epoch = Instant::now();
    let mut calls = Vec::new();

    // The only pooled connection gets stuck behind our row lock.
    let lock = hold_membership_lock(&side, org, user).await;
    let blocked = tokio::spawn({
        let mut clients = Clients::admin(server.channel());
        let (org, user, permission) = (org.clone(), user.clone(), permission.clone());
        async move {
            let resource = ("organization".to_owned(), org.clone());
            workload::add_permissions(
                &mut clients,
                &org,
                &user,
                vec![permission],
                resource,
                "pool-blocked".into(),
                epoch,
                0,
            )
            .await
        }
    });
    wait_for_lock_waiter(&admin, database.postgres_name(), HANG).await;

    // Another request finds no connection: UNAVAILABLE after about the acquire timeout.
    let asked = Instant::now();
    let mut other = Clients::admin(server.channel());
    let starved = tokio::time::timeout(
        HANG,
        workload::add_member(&mut other, org, "pool|late", "pool-starved".into(), Duration::from_secs(30), epoch, 0),
    )
    .await
    .expect("a request with no free connection must answer, not hang");
    let waited = asked.elapsed();
    println!("pool: starved request answered {:?} after {waited:?}", code_of(&starved));
    assert_eq!(code_of(&starved), Some(Code::Unavailable), "starved request: {starved:?}");
    assert!(waited >= Duration::from_millis(400), "answered UNAVAILABLE before the acquire timeout: {waited:?}");
    calls.push(starved);
    // Observed, not asserted: whether health calls a busy (but reachable) database down.
    let flagged = wait_health(server.addr, "", ServingStatus::NotServing, Duration::from_secs(3)).await;
    println!("pool: health while the pool is exhausted: NOT_SERVING after {flagged:?} (None: stayed SERVING for 3 s)");

    // Release: the blocked request completes and the pool serves again.
    lock.rollback().await.expect("rollback");
    let first = tokio::time::timeout(HANG, blocked).await.expect("blocked request finishes").expect("task");
    match &first.outcome {
        Ok((_, invariants::Effect::PermissionsAdded { added, .. })) => assert_eq!(added, &vec![permission.clone()]),
        other => panic!("the blocked request should succeed once the lock is released: {other:?}"),
    }
    calls.push(first);
    let again =
        workload::add_member(&mut other, org, "pool|late", "pool-again".into(), Duration::from_secs(30), epoch, 0)
            .await;
    assert!(again.outcome.is_ok(), "after the lock is released: {again:?}");
    calls.push(again);

    let report = check(&server, &database, &calls, &Policy::strict()).await;
    println!("pool: {report:?}; took {:?}", started.elapsed());
}

/// With a pool of one connection, checks and writes (and the numbering of a write's
/// events after its commit) must not keep that connection for themselves: the
/// transactions and reads after them need it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pool_of_one_serves_checks_adds_and_transactions_in_turn() {
    let mut databases = vec![("sqlite", TestDatabase::sqlite())];
    if let Some(postgres) = TestDatabase::postgres("t_consistency_faults_pool_of_one").await {
        databases.push(("postgres", postgres));
    }
    for (backend, database) in databases {
        let secret = SecretFile::new();
        let flags = ["--db-max-connections", "1", "--db-acquire-timeout-ms", "2000"];
        let server = Grantd::start("pool-of-one", &database.url, &secret, &flags).await;
        let mut clients = Clients::admin(server.channel());
        let fixture = workload::seed(&clients, "one", 1, 1, 1).await;
        let (org, user, permission) = (&fixture.orgs[0], &fixture.users[0], &fixture.permissions[0].0);
        let epoch = Instant::now();
        let check = workload::check_request(org, user, permission, ("folder".into(), "f1".into()));
        for round in 0..3 {
            let allowed = clients.grants.check_permission(check.clone()).await;
            assert!(allowed.is_ok(), "{backend} round {round}: check: {allowed:?}");
            let resource = ("folder".to_owned(), "f1".to_owned());
            let added = workload::add_permissions(
                &mut clients,
                org,
                user,
                vec![permission.clone()],
                resource,
                format!("one-add-{round}"),
                epoch,
                0,
            )
            .await;
            assert!(added.outcome.is_ok(), "{backend} round {round}: add: {added:?}");
            let member = format!("one|late-{round}");
            let joined =
                workload::add_member(&mut clients, org, &member, format!("one-join-{round}"), HANG, epoch, 0).await;
            assert!(
                joined.outcome.is_ok(),
                "{backend} round {round}: a transaction after a check and an add: {joined:?}"
            );
            let listed = clients
                .directory
                .list_organization_members(pb::ListOrganizationMembersRequest {
                    organization_id: org.clone(),
                    ..Default::default()
                })
                .await;
            assert!(listed.is_ok(), "{backend} round {round}: list: {listed:?}");
        }
        let allowed = clients.grants.check_permission(check).await.expect("final check").into_inner();
        assert!(allowed.allowed, "{backend}: the grant added in the rounds must be seen");
    }
}

// ---------------------------------------------------------------------------------------
// (b) connections killed, database unreachable, database back

/// Sets ALLOW_CONNECTIONS back to true when dropped, even when the test panicked.
struct AllowConnections {
    admin_url: String,
    name: String,
}

impl Drop for AllowConnections {
    fn drop(&mut self) {
        let (url, name) = (self.admin_url.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async {
                if let Ok(db) = Database::connect(&url).await {
                    let sql = format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true");
                    let _ = db.execute(Statement::from_string(DbBackend::Postgres, sql)).await;
                }
            });
        })
        .join();
    }
}

/// Calls AddUserToOrganization until one answers `want` (or OK when `want` is None);
/// answers the calls made, the last one matching, or panics after `limit`.
async fn probe_until(
    clients: &mut Clients,
    org: &str,
    want: Option<Code>,
    limit: Duration,
    epoch: Instant,
    counter: &mut usize,
) -> Vec<CallRecord> {
    let start = Instant::now();
    let mut calls = Vec::new();
    loop {
        *counter += 1;
        let id = format!("probe-{counter}");
        let user = format!("kill|probe-{counter}");
        let call = tokio::time::timeout(HANG, workload::add_member(clients, org, &user, id, HANG, epoch, 0))
            .await
            .expect("a probe must answer, not hang");
        let code = code_of(&call);
        calls.push(call);
        if code == want {
            return calls;
        }
        assert!(start.elapsed() < limit, "no probe answered {want:?} within {limit:?}; last: {:?}", calls.last());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_connections_killed_and_database_unreachable() {
    let Some(database) = TestDatabase::postgres("t_consistency_faults_killed").await else { return };
    let started = Instant::now();
    let name = database.postgres_name().to_owned();
    let secret = SecretFile::new();
    let mut server = Grantd::start(
        "killed",
        &database.url,
        &secret,
        &["--db-max-connections", "4", "--db-acquire-timeout-ms", "2000"],
    )
    .await;
    let pid = server.pid();
    let admin = database.connect_admin().await;
    let _restore = AllowConnections { admin_url: database.postgres.clone().expect("postgres").1, name: name.clone() };
    let clients = Clients::admin(server.channel());
    let fixture = workload::seed(&clients, "kill", 2, 6, 4).await;
    let epoch = Instant::now();

    // Light load: 4 clients, one write every ~20 ms each, until stopped.
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for client in 0..4 {
        let (stop, fixture) = (stop.clone(), fixture.clone());
        let mut clients = Clients::admin(server.channel());
        load.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(rand::random());
            let mut records = Vec::new();
            let mut k = 0;
            while !stop.load(Ordering::SeqCst) {
                let id = format!("load-{client}-{k}");
                records.push(workload::random_op(&mut clients, &fixture, &mut rng, epoch, 0, id).await);
                k += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            records
        }));
    }

    // Kill every connection of the database a few times.
    for round in 0..3 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let killed = terminate_backends(&admin, &name).await;
        println!("killed: round {round} terminated {killed} backends");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The database becomes unreachable.
    exec(&admin, &format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false")).await;
    let killed = terminate_backends(&admin, &name).await;
    let outage = Instant::now();
    println!("killed: database closed, {killed} backends terminated");
    let mut probes = Clients::admin(server.channel());
    let mut counter = 0;
    let org = fixture.orgs[0].clone();
    let mut calls = probe_until(&mut probes, &org, Some(Code::Unavailable), HANG, epoch, &mut counter).await;
    println!("killed: first UNAVAILABLE after {:?}", outage.elapsed());
    for _ in 0..3 {
        let more = probe_until(&mut probes, &org, Some(Code::Unavailable), Duration::ZERO, epoch, &mut counter).await;
        calls.extend(more);
    }
    let not_serving = wait_health(server.addr, "", ServingStatus::NotServing, HANG).await;
    println!("killed: health NOT_SERVING after {not_serving:?} of polling");
    assert!(not_serving.is_some(), "health must report NOT_SERVING while the database is unreachable");

    // The database returns: serving again within seconds, same process.
    exec(&admin, &format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true")).await;
    let back = Instant::now();
    calls.extend(probe_until(&mut probes, &org, None, HANG, epoch, &mut counter).await);
    let serving_call = back.elapsed();
    let recovered_at = epoch.elapsed();
    let serving = wait_health(server.addr, "", ServingStatus::Serving, HANG).await;
    println!("killed: calls succeed {serving_call:?} after the database returned, health SERVING after {serving:?}");
    assert!(serving.is_some(), "health must report SERVING again once the database is back");
    assert!(server.try_exit().is_none() && server.pid() == pid, "the same process must serve again");

    // Let the load run on the recovered database, then stop it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::SeqCst);
    let mut load_calls = Vec::new();
    for task in load {
        load_calls
            .extend(tokio::time::timeout(Duration::from_secs(60), task).await.expect("load stops").expect("task"));
    }
    println!("killed: load outcomes {:?}", invariants::rpc_counts(&load_calls));
    let mut recovered = load_calls.iter().filter(|c| c.sent > recovered_at);
    assert!(recovered.any(|c| c.outcome.is_ok()), "the load should succeed again after recovery");
    calls.extend(load_calls);

    // Failures are UNAVAILABLE (or the workload's legitimate answers), never INTERNAL.
    let wrong: Vec<&CallRecord> = calls
        .iter()
        .filter(|c| match code_of(c) {
            None | Some(Code::Unavailable) => false,
            Some(Code::FailedPrecondition) => c.rpc != "AddUserPermissions",
            Some(Code::NotFound) => c.rpc != "RemoveUserFromOrganization",
            Some(_) => true,
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "{} calls failed with an unexpected code, e.g. {:#?}",
        wrong.len(),
        &wrong[..wrong.len().min(8)]
    );

    let report = check(&server, &database, &calls, &Policy::faults()).await;
    println!("killed: {report:?}; took {:?}", started.elapsed());
}

// ---------------------------------------------------------------------------------------
// (c) SIGKILL in the middle of batches

const BATCHES: usize = 20;
const BATCH_SIZE: usize = 200;

async fn sigkill_mid_batches(database: TestDatabase, label: &str) {
    let started = Instant::now();
    let secret = SecretFile::new();
    let mut server = Grantd::start(&format!("{label}-0"), &database.url, &secret, &[]).await;
    let fixture = workload::seed(&Clients::admin(server.channel()), "seed-kill", 1, BATCH_SIZE, BATCHES).await;
    let org = fixture.orgs[0].clone();
    let permission_ids: Vec<String> = fixture.permissions.iter().map(|p| p.0.clone()).collect();
    let epoch = Instant::now();
    let mut calls: Vec<CallRecord> = Vec::new();
    // (request id, user, resource id)
    let mut batches: Vec<(String, String, String)> = Vec::new();
    let mut interrupted = 0;

    // Round 0 kills as the first batch is answered, round 1 as the tenth is.
    for (round, answers) in [1, BATCHES / 2].into_iter().enumerate() {
        let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let mut tasks = Vec::new();
        let sent = Instant::now();
        for batch in 0..BATCHES {
            let id = format!("batch-{round}-{batch}");
            let user = fixture.users[batch].clone();
            let resource = format!("r{round}-b{batch}");
            batches.push((id.clone(), user.clone(), resource.clone()));
            let mut clients = Clients::admin(server.channel());
            let (org, permission_ids, done) = (org.clone(), permission_ids.clone(), done_tx.clone());
            tasks.push(tokio::spawn(async move {
                let resource = ("folder".to_owned(), resource);
                let call =
                    workload::add_permissions(&mut clients, &org, &user, permission_ids, resource, id, epoch, round)
                        .await;
                let _ = done.send(());
                call
            }));
        }
        for _ in 0..answers {
            tokio::time::timeout(HANG, done_rx.recv()).await.expect("batches are answered");
        }
        server.kill();
        let killed_after = sent.elapsed();
        let mut failed = 0;
        for task in tasks {
            let call =
                tokio::time::timeout(HANG, task).await.expect("a call ends once the process is killed").expect("task");
            failed += usize::from(call.outcome.is_err());
            calls.push(call);
        }
        interrupted += failed;
        println!(
            "{label}: round {round}: SIGKILL {killed_after:?} after sending, {failed}/{BATCHES} batches unanswered"
        );
        server = Grantd::start(&format!("{label}-{}", round + 1), &database.url, &secret, &[]).await;
    }

    // Every batch is all there or all absent; an answered one is all there.
    let clients = Clients::admin(server.channel());
    let db = database.connect().await;
    let snapshot = Snapshot::take(&clients, &db).await;
    let mut held: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for grant in &snapshot.grants {
        if grant.2 == "folder" {
            *held.entry((grant.1.as_str(), grant.3.as_str())).or_default() += 1;
        }
    }
    let mut events: BTreeMap<&str, usize> = BTreeMap::new();
    for change in &snapshot.changes {
        *events.entry(change.request_id.as_str()).or_default() += 1;
    }
    let (mut present, mut absent) = (0, 0);
    for ((id, user, resource), call) in batches.iter().zip(&calls) {
        assert_eq!(id, &call.request_id);
        let grants = held.get(&(user.as_str(), resource.as_str())).copied().unwrap_or(0);
        let logged = events.get(id.as_str()).copied().unwrap_or(0);
        assert!(grants == 0 || grants == BATCH_SIZE, "batch {id}: {grants} of {BATCH_SIZE} grants after SIGKILL");
        assert_eq!(logged, grants, "batch {id}: {grants} grants but {logged} change events");
        if call.outcome.is_ok() {
            assert_eq!(grants, BATCH_SIZE, "batch {id} was answered OK but is not all there");
        }
        if grants == 0 { absent += 1 } else { present += 1 }
    }
    println!("{label}: {present} batches present, {absent} absent, {interrupted} unanswered");
    assert!(interrupted > 0, "no batch was in flight when the process was killed: the test proved nothing");
    let report = invariants::check(&snapshot, &calls, &Policy::faults());
    println!("{label}: {report:?}; took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_mid_batches_postgres() {
    let Some(database) = TestDatabase::postgres("t_consistency_faults_sigkill").await else { return };
    sigkill_mid_batches(database, "sigkill-pg").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_mid_batches_sqlite() {
    sigkill_mid_batches(TestDatabase::sqlite(), "sigkill-sqlite").await;
}

// ---------------------------------------------------------------------------------------
// (d) SIGTERM

/// Starts grantd with `grace_ms`, seeds one member, locks their membership row and
/// leaves one AddUserPermissions blocked on it.
struct Draining {
    database: TestDatabase,
    secret: SecretFile,
    server: Grantd,
    lock: DatabaseTransaction,
    blocked: tokio::task::JoinHandle<CallRecord>,
    _side: DatabaseConnection,
}

async fn in_flight_then_sigterm(name: &str, grace_ms: &str) -> Option<Draining> {
    let database = TestDatabase::postgres(name).await?;
    let secret = SecretFile::new();
    let server = Grantd::start(name, &database.url, &secret, &["--shutdown-grace-ms", grace_ms]).await;
    let clients = Clients::admin(server.channel());
    let fixture = workload::seed(&clients, "term", 1, 1, 1).await;
    let (org, user, permission) = (fixture.orgs[0].clone(), fixture.users[0].clone(), fixture.permissions[0].0.clone());
    let side = database.connect().await;
    let lock = hold_membership_lock(&side, &org, &user).await;
    let epoch = Instant::now();
    let blocked = tokio::spawn({
        let mut clients = Clients::admin(server.channel());
        async move {
            let resource = ("organization".to_owned(), org.clone());
            workload::add_permissions(
                &mut clients,
                &org,
                &user,
                vec![permission],
                resource,
                "term-in-flight".into(),
                epoch,
                0,
            )
            .await
        }
    });
    let admin = database.connect_admin().await;
    wait_for_lock_waiter(&admin, database.postgres_name(), HANG).await;
    server.terminate();
    Some(Draining { database, secret, server, lock, blocked, _side: side })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_finishes_in_flight_requests_and_refuses_new_ones() {
    let Some(Draining { database, secret, mut server, lock, blocked, _side }) =
        in_flight_then_sigterm("t_consistency_faults_sigterm_drain", "10000").await
    else {
        return;
    };
    let started = Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(server.try_exit().is_none(), "grantd exited with a request in flight");

    // A new connection is refused, or cannot get a call through.
    let fresh = tokio::time::timeout(Duration::from_secs(5), async {
        match process::endpoint(server.addr).connect_timeout(Duration::from_secs(2)).connect().await {
            Err(err) => Err(format!("connect: {err}")),
            Ok(channel) => {
                let mut clients = Clients::admin(channel);
                let message = common::proto::ListPermissionsRequest { page_size: 1, page_token: String::new() };
                clients
                    .directory
                    .list_permissions(process::request(message, "term-new", Duration::from_secs(2)))
                    .await
                    .map(drop)
                    .map_err(|status| format!("{:?}: {}", status.code(), status.message()))
            }
        }
    })
    .await
    .unwrap_or_else(|_| Err("no answer".to_owned()));
    println!("sigterm: a new request after SIGTERM: {fresh:?}");
    assert!(fresh.is_err(), "a new request after SIGTERM must be refused");

    // The in-flight request completes once it can, then the process exits cleanly.
    lock.rollback().await.expect("rollback");
    let call = tokio::time::timeout(HANG, blocked).await.expect("in-flight request ends").expect("task");
    println!("sigterm: in-flight request answered {:?} after {:?}", call.outcome, started.elapsed());
    assert!(call.outcome.is_ok(), "the in-flight request must complete: {call:?}");
    let status = server.wait_exit(Duration::from_secs(5)).await;
    println!("sigterm: exited with {status:?} {:?} after SIGTERM", started.elapsed());
    assert!(status.is_some_and(|s| s.success()), "grantd must exit successfully once drained: {status:?}");

    let server = Grantd::start("sigterm-check", &database.url, &secret, &[]).await;
    let report = check(&server, &database, &[call], &Policy::strict()).await;
    println!("sigterm: {report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_exits_when_the_grace_period_ends() {
    let Some(Draining { database, secret, mut server, lock, blocked, _side }) =
        in_flight_then_sigterm("t_consistency_faults_sigterm_grace", "1000").await
    else {
        return;
    };
    let terminated = Instant::now();
    let status = server.wait_exit(Duration::from_secs(5)).await;
    let took = terminated.elapsed();
    println!("sigterm grace: exited with {status:?} {took:?} after SIGTERM (grace 1 s)");
    assert!(status.is_some(), "grantd must exit within the 1 s grace period (+ slack) with a request stuck");
    let call = tokio::time::timeout(HANG, blocked).await.expect("the stuck request ends").expect("task");
    println!("sigterm grace: the stuck request answered {:?}", call.outcome);
    assert!(call.outcome.is_err(), "the request cut off by the grace period cannot have answered OK: {call:?}");

    // The add is a transaction that had not committed when grantd exited: PostgreSQL
    // rolls it back with the connection, whoever it waited for. Its caller saw a
    // transport error, which leaves the outcome unknown; repeating the add is safe.
    lock.rollback().await.expect("rollback");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let server = Grantd::start("sigterm-grace-check", &database.url, &secret, &[]).await;
    let report = check(&server, &database, &[call], &Policy::faults()).await;
    println!("sigterm grace: {report:?}");
    assert_eq!((report.ambiguous, report.ambiguous_committed), (1, 0), "the cut-off add left nothing");
    assert_eq!(report.grants, 0, "no grant either");
}

// ---------------------------------------------------------------------------------------
// (e) Checks on connections the server has closed

/// A grantd with a pool of `pool` connections on a fresh PostgreSQL database, seeded with
/// one organization, one permission and `members` members, and a connection to end its
/// sessions with.
struct Sessions {
    database: TestDatabase,
    _secret: SecretFile,
    _server: Grantd,
    admin: DatabaseConnection,
    clients: Clients,
    fixture: workload::Fixture,
}

async fn sessions(tag: &str, pool: &str, members: usize) -> Option<Sessions> {
    let database = TestDatabase::postgres(&format!("t_consistency_faults_killed_{tag}")).await?;
    let secret = SecretFile::new();
    let server = Grantd::start(&format!("killed-{tag}"), &database.url, &secret, &["--db-max-connections", pool]).await;
    let admin = database.connect_admin().await;
    let clients = Clients::admin(server.channel());
    let fixture = workload::seed(&clients, tag, 1, 1, members).await;
    Some(Sessions { database, _secret: secret, _server: server, admin, clients, fixture })
}

impl Sessions {
    async fn end_all(&self) -> usize {
        terminate_backends(&self.admin, self.database.postgres_name()).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_answer_after_postgres_ended_every_session() {
    // Two connections for checks, two for the rest.
    let Some(sessions) = sessions("reads", "4", 1).await else { return };
    let (fixture, mut clients) = (&sessions.fixture, sessions.clients.clone());
    let (org, user, permission) = (&fixture.orgs[0], &fixture.users[0], &fixture.permissions[0].0);
    let resource = fixture.resources[1].clone();
    let added = workload::add_permissions(
        &mut clients,
        org,
        user,
        vec![permission.clone()],
        resource.clone(),
        "reads-add".into(),
        Instant::now(),
        0,
    )
    .await;
    assert!(added.outcome.is_ok(), "{added:?}");
    let check = workload::check_request(org, user, permission, resource);
    for round in 0..3 {
        // Concurrent checks, so that more than one connection is kept between checks.
        let answers = futures::future::join_all((0..4).map(|_| {
            let mut grants = clients.grants.clone();
            let check = check.clone();
            async move { grants.check_permission(check).await }
        }))
        .await;
        for answer in answers {
            let answer = answer.unwrap_or_else(|status| panic!("round {round}: check failed: {status:?}"));
            assert!(answer.into_inner().allowed, "round {round}: the grant must allow");
        }
        let killed = sessions.end_all().await;
        println!("killed reads: round {round} terminated {killed} backends");
        assert!(killed > 0, "grantd must have had connections to end");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_commits_after_postgres_ended_every_pooled_session() {
    let Some(sessions) = sessions("writes", "12", 12).await else { return };
    let (fixture, clients) = (&sessions.fixture, &sessions.clients);
    let (org, permission) = (&fixture.orgs[0], &fixture.permissions[0].0);
    let add = |user: usize, resource: String| {
        let mut clients = clients.clone();
        let (org, user, permission) = (org.clone(), fixture.users[user].clone(), permission.clone());
        async move {
            let id = format!("writes-{user}-{resource}");
            let resource = ("folder".to_owned(), resource);
            workload::add_permissions(&mut clients, &org, &user, vec![permission], resource, id, Instant::now(), 0)
                .await
        }
    };
    for round in 0..2 {
        // Concurrent writes leave many connections in the pool.
        let calls = futures::future::join_all((0..12).map(|user| add(user, format!("r{round}-many")))).await;
        assert!(calls.iter().all(|call| call.outcome.is_ok()), "round {round}: {calls:#?}");
        let killed = sessions.end_all().await;
        println!("killed writes: round {round} terminated {killed} backends");
        // One write now meets every broken connection before a new one.
        let call = add(0, format!("r{round}-one")).await;
        assert!(call.outcome.is_ok(), "round {round}: the write after the sessions ended failed: {call:?}");
    }
}
