//! The consistency checker under fire: concurrent writers, administrators and delegates,
//! over real `grantd serve` processes while the processes and the database fail.
//!
//! * PostgreSQL: 3 processes over one database. A quarter into the run one process is
//!   killed (SIGKILL) in the middle of writes and started again on its address; past
//!   half, PostgreSQL itself restarts (`pg_ctlcluster ... restart -m fast`).
//! * SQLite: 1 process on a file, killed (SIGKILL) mid-run and started again.
//!
//! Half of the clients are administrators; the other half are delegates, users who hold
//! `edit_org_users` org-wide in the fixture's organizations (and, org-wide, every
//! permission they hand out, since a caller who is not an administrator may grant only
//! what it holds). Both send the colliding mix of tests/common/workload.rs; the
//! administrator alone seeds the organizations, the catalog and the delegates' rights.
//! After each write answered OK, the same caller reads it back from another process
//! (`at_least_revision` = the write's revision): CheckPermission, or every fourth time
//! ListUserPermissions.
//!
//! Calls that end with a transport error, UNAVAILABLE, CANCELLED or DEADLINE_EXCEEDED
//! have an unknown outcome: the checks accept either. After the run the test waits (at
//! most [`SETTLE`]) for the log to stop growing and the checks to pass, since a
//! statement that reached PostgreSQL before its process was killed may still commit, and
//! then fails on any violation of:
//!
//! * the invariants of tests/common/invariants.rs (revisions 1..N without gap or repeat,
//!   the log from revision 0, read through ListChanges in pages, replays to exactly the
//!   grants and memberships tables; no grant of a non-member; every OK answer matches its
//!   events; no failed call with a known outcome left any);
//! * no lost acknowledged write (`invariants::lost_writes`);
//! * every write readable at once elsewhere (`invariants::check_reads`);
//! * the API's own lists agree with the tables; only the failures a run under faults
//!   explains (unknown outcomes, NOT_A_MEMBER, a membership already gone), never
//!   PERMISSION_DENIED for a delegate;
//! * the faults hit writes in flight, and writes succeed again after the last one.
//!
//! Bounded like tests/stress.rs: a number of operations, clients and a time cap, small
//! by default, loopback only. Larger:
//!
//! ```sh
//! GRANTD_FIRE_OPS=5000 GRANTD_FIRE_CLIENTS=32 GRANTD_FIRE_TIME_CAP_SECS=600 \
//!   cargo test --release --all-features --test under_fire -- --nocapture
//! ```
//!
//! PostgreSQL comes from `GRANTD_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`); when it is unreachable the PostgreSQL
//! test fails under `CI=true` and is skipped elsewhere. It restarts that server with
//! `$GRANTD_TEST_POSTGRES_CTL restart -m fast`, by default `pg_ctlcluster
//! --skip-systemctl-redirect <newest version in /etc/postgresql> main`, and starts it
//! again when the test ends if it is down. Other test binaries never run at the same time
//! under `cargo test`, and this binary has one test per database, so nothing else uses
//! the server while it restarts (other users of the same server would notice).

mod common;
#[path = "common/invariants.rs"]
mod invariants;
#[path = "common/process.rs"]
mod process;
#[path = "common/workload.rs"]
mod workload;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use invariants::{CallRecord, Policy, ReadProbe, Snapshot};
use process::{Clients, Grantd, SecretFile, TestDatabase};
use rand::{SeedableRng, rngs::StdRng};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use workload::Settings;

const DEFAULT_OPS: usize = 600;
const DEFAULT_CLIENTS: usize = 12;
const DEFAULT_TIME_CAP_SECS: u64 = 100;
/// Distinct delegate users; client c acts as one when c is odd.
const DELEGATES: usize = 2;
/// How long the log may keep changing after the load, and the checks keep failing, before
/// the test judges: a write that reached PostgreSQL before its process was killed can
/// still commit.
const SETTLE: Duration = Duration::from_secs(15);
/// How long a process (or PostgreSQL) stays down before it is started again.
const DOWN: Duration = Duration::from_millis(300);

fn settings() -> Settings {
    Settings::from_env("GRANTD_FIRE", DEFAULT_OPS, DEFAULT_CLIENTS, DEFAULT_TIME_CAP_SECS, 2)
}

// ---------------------------------------------------------------------------------------
// PostgreSQL restarts

/// `$GRANTD_TEST_POSTGRES_CTL <action>` through `sh -c`; by default pg_ctlcluster on the
/// newest installed version's `main` cluster.
fn postgres_ctl(action: &str) -> std::process::Command {
    let ctl = std::env::var("GRANTD_TEST_POSTGRES_CTL").unwrap_or_else(|_| {
        "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql | sort -V | tail -n1) main".to_owned()
    });
    let mut command = std::process::Command::new("sh");
    command.args(["-c", &format!("{ctl} {action}")]);
    command
}

/// Restarts PostgreSQL (fast shutdown: sessions are ended, transactions in flight roll
/// back); answers when it accepts connections again.
fn restart_postgres() {
    let output = postgres_ctl("restart -m fast").output().expect("run the PostgreSQL restart command");
    assert!(
        output.status.success(),
        "restarting PostgreSQL failed ({}): {}{}\nset GRANTD_TEST_POSTGRES_CTL to a command that takes \
         `restart -m fast`, `status` and `start`",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// When dropped (the test ended, passed or not), starts PostgreSQL if it is not running,
/// so that a failure in the middle of a restart does not leave it down.
struct PostgresBackUp;

impl Drop for PostgresBackUp {
    fn drop(&mut self) {
        let running = postgres_ctl("status").output().is_ok_and(|o| o.status.success());
        if !running {
            eprintln!("PostgreSQL is down at the end of the test: starting it");
            match postgres_ctl("start").output() {
                Ok(output) if output.status.success() => eprintln!("PostgreSQL started"),
                other => eprintln!("starting PostgreSQL failed: {other:?}"),
            }
        }
    }
}

/// When the PostgreSQL server started, read on a new connection to `url`.
async fn postmaster_start_time(url: &str) -> String {
    use sea_orm::ConnectionTrait;
    let db = sea_orm::Database::connect(url).await.expect("connect to the maintenance database");
    let sql = "SELECT pg_postmaster_start_time()::text AS started";
    let row = db.query_one(sea_orm::Statement::from_string(db.get_database_backend(), sql)).await;
    let started = row.expect("pg_postmaster_start_time").expect("one row").try_get("", "started").expect("text");
    db.close().await.ok();
    started
}

// ---------------------------------------------------------------------------------------
// Faults

#[derive(Debug, Clone, Copy)]
enum Fault {
    /// SIGKILL the process of that index, then start it again on its address.
    Kill(usize),
    RestartPostgres,
}

/// A fault as it happened, in time since the run's epoch.
#[derive(Debug)]
struct Injected {
    fault: Fault,
    /// When the process was killed or the restart command began.
    began: Duration,
    /// When every process answered health SERVING again.
    ended: Duration,
    /// How many writes had been answered when it began.
    at_call: usize,
    /// How many were in flight to the processes it hit, just before it began.
    in_flight: usize,
}

/// How the load is going: writes answered, and writes in flight per process.
struct Progress {
    answered: AtomicUsize,
    in_flight: Vec<AtomicUsize>,
}

impl Progress {
    fn new(processes: usize) -> Self {
        Self { answered: AtomicUsize::new(0), in_flight: (0..processes).map(|_| AtomicUsize::new(0)).collect() }
    }

    /// Writes in flight to `process`, or to any when `None`.
    fn in_flight(&self, process: Option<usize>) -> usize {
        let count = |p: &AtomicUsize| p.load(Ordering::SeqCst);
        process.map_or_else(|| self.in_flight.iter().map(count).sum(), |p| count(&self.in_flight[p]))
    }
}

/// Injects `faults` in order, each once `progress` reaches its share of `ops` and at
/// least two writes it would hit are in flight (or a second has passed); answers the
/// processes (alive again) and what happened. `postgres` is the URL of the maintenance
/// database, whose server a PostgreSQL restart must have restarted.
async fn inject(
    postgres: Option<String>,
    mut servers: Vec<Grantd>,
    faults: Vec<(f64, Fault)>,
    progress: Arc<Progress>,
    ops: usize,
    epoch: Instant,
) -> (Vec<Grantd>, Vec<Injected>) {
    let mut injected = Vec::new();
    for (share, fault) in faults {
        let due = (ops as f64 * share) as usize;
        while progress.answered.load(Ordering::SeqCst) < due {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let target = match fault {
            Fault::Kill(index) => Some(index),
            Fault::RestartPostgres => None,
        };
        let waiting = Instant::now();
        while progress.in_flight(target) < 2 && waiting.elapsed() < Duration::from_secs(1) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let (at_call, in_flight) = (progress.answered.load(Ordering::SeqCst), progress.in_flight(target));
        let began = epoch.elapsed();
        match fault {
            Fault::Kill(index) => {
                let server = &mut servers[index];
                let pid = server.pid();
                server.kill();
                tokio::time::sleep(DOWN).await;
                server.respawn();
                server.wait_ready().await;
                println!(
                    "fire: killed {} (pid {pid}) at {began:?} after {at_call} calls; pid {} serving after {:?}",
                    server.label,
                    server.pid(),
                    epoch.elapsed() - began
                );
            }
            Fault::RestartPostgres => {
                let maintenance = postgres.as_deref().expect("a PostgreSQL database");
                let before = postmaster_start_time(maintenance).await;
                tokio::task::spawn_blocking(restart_postgres).await.expect("restart task");
                let restarted = epoch.elapsed() - began;
                let after = postmaster_start_time(maintenance).await;
                assert_ne!(before, after, "PostgreSQL did not restart: it was started at {before} before and after");
                for server in &servers {
                    let serving =
                        process::wait_health(server.addr, "", ServingStatus::Serving, Duration::from_secs(30)).await;
                    assert!(
                        serving.is_some(),
                        "grantd {} did not serve again after PostgreSQL restarted",
                        server.label
                    );
                }
                println!(
                    "fire: PostgreSQL restarted at {began:?} after {at_call} calls, in {restarted:?}; every process \
                     serving after {:?}",
                    epoch.elapsed() - began
                );
            }
        }
        injected.push(Injected { fault, began, ended: epoch.elapsed(), at_call, in_flight });
    }
    (servers, injected)
}

// ---------------------------------------------------------------------------------------
// The run

/// Aborts the task when dropped: a run cut off by the time cap must not leave a task
/// behind that owns processes.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Whose token a client carries.
fn caller(client: usize) -> Option<String> {
    (client % 2 == 1).then(|| format!("uf|delegate-{}", (client / 2) % DELEGATES))
}

/// The failures a run under faults explains.
fn explained(call: &CallRecord, policy: &Policy, large: bool) -> bool {
    match &call.outcome {
        Ok(_) => true,
        Err((code, _)) if policy.ambiguous.contains(code) => true,
        Err((Code::FailedPrecondition, _)) => call.rpc == "AddUserPermissions",
        Err((Code::NotFound, _)) => call.rpc == "RemoveUserFromOrganization",
        Err((Code::Aborted, _)) => large,
        Err(_) => false,
    }
}

async fn under_fire(database: TestDatabase, processes: usize, faults: Vec<(f64, Fault)>, label: &str) {
    let settings = settings();
    let policy = Policy::faults();
    println!(
        "fire {label}: {} ops from {} clients ({} delegates) over {processes} process(es), faults {faults:?}, cap \
         {:?}, GRANTD_FIRE_SEED={}",
        settings.ops,
        settings.clients,
        settings.clients / 2,
        settings.cap,
        settings.seed
    );
    let started = Instant::now();
    let secret = SecretFile::new();
    let pool = (if database.is_postgres() { "8" } else { "16" }).to_owned();
    let mut servers: Vec<Grantd> = (0..processes)
        .map(|i| Grantd::spawn(&format!("{label}-{i}"), &database.url, &secret, &["--db-max-connections", &pool]))
        .collect();
    for server in &mut servers {
        server.wait_ready().await;
    }
    let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.addr).collect();
    let channel = |index: usize| process::endpoint(addrs[index]).connect_lazy();

    // The administrator seeds; delegates get their rights in every organization.
    let admin = Clients::admin(channel(0));
    let mut fixture = workload::seed(&admin, "uf", 2, 6, 4).await;
    fixture.revoke_org_wide_of_all = false;
    let delegates: Vec<String> = (0..DELEGATES).map(|d| format!("uf|delegate-{d}")).collect();
    for delegate in &delegates {
        workload::delegate(&admin, &fixture, delegate).await;
    }
    println!("fire {label}: {processes} process(es) ready and seeded after {:?}", started.elapsed());

    let epoch = Instant::now();
    let progress = Arc::new(Progress::new(processes));
    let faults_done = Arc::new(AtomicBool::new(false));
    let run = async {
        // Aborted (its processes killed) if the run outlives the cap.
        let mut chaos = AbortOnDrop(tokio::spawn({
            let (progress, faults_done) = (progress.clone(), faults_done.clone());
            let postgres = database.postgres.clone().map(|(_, maintenance)| maintenance);
            async move {
                let outcome = inject(postgres, servers, faults, progress, settings.ops, epoch).await;
                faults_done.store(true, Ordering::SeqCst);
                outcome
            }
        }));
        let mut tasks = Vec::new();
        for client in 0..settings.clients {
            let ops = settings.ops / settings.clients + usize::from(client < settings.ops % settings.clients);
            // Once the faults are over, every client writes a few more times.
            let tail = (ops / 4).max(3);
            let who = caller(client);
            let connect = |index: usize| match &who {
                Some(subject) => Clients::user(channel(index), subject),
                None => Clients::admin(channel(index)),
            };
            // Writes and reads on connections of their own, one per process.
            let mut writers: Vec<Clients> = (0..processes).map(connect).collect();
            let mut readers: Vec<Clients> = (0..processes).map(connect).collect();
            let (fixture, progress, faults_done) = (fixture.clone(), progress.clone(), faults_done.clone());
            let role = if who.is_some() { "delegate" } else { "admin" };
            let policy = Policy::faults();
            let mut rng = StdRng::seed_from_u64(settings.seed.wrapping_add(client as u64));
            tasks.push(tokio::spawn(async move {
                let (mut calls, mut probes) = (Vec::new(), Vec::new());
                let (mut k, mut after_faults) = (0, 0);
                while k < ops || !faults_done.load(Ordering::SeqCst) || after_faults < tail {
                    after_faults += usize::from(faults_done.load(Ordering::SeqCst));
                    let process = (client + k) % processes;
                    let id = format!("uf-{role}-{client}-{k}");
                    progress.in_flight[process].fetch_add(1, Ordering::SeqCst);
                    let call = workload::random_op(&mut writers[process], &fixture, &mut rng, epoch, process, id).await;
                    progress.in_flight[process].fetch_sub(1, Ordering::SeqCst);
                    progress.answered.fetch_add(1, Ordering::SeqCst);
                    match &call.outcome {
                        Ok(_) => {
                            let read_id = format!("{}-read", call.request_id);
                            let list = k % 4 == 3;
                            let probe = workload::read_after(&mut readers, &call, &fixture, &mut rng, list, &read_id);
                            probes.extend(probe.await);
                        }
                        // The process or the database is down: back off as a client would.
                        Err((code, _)) if policy.ambiguous.contains(code) => {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        Err(_) => {}
                    }
                    calls.push(call);
                    k += 1;
                }
                (calls, probes)
            }));
        }
        let mut calls: Vec<CallRecord> = Vec::new();
        let mut probes: Vec<ReadProbe> = Vec::new();
        for task in tasks {
            let (c, p) = task.await.expect("client task");
            calls.extend(c);
            probes.extend(p);
        }
        let load = epoch.elapsed();
        let (servers, injected) = (&mut chaos.0).await.expect("fault injection");
        (servers, injected, calls, probes, load)
    };
    let (mut servers, injected, calls, probes, load) = tokio::time::timeout(settings.cap, run)
        .await
        .unwrap_or_else(|_| panic!("fire {label} did not finish within the {:?} cap", settings.cap));
    println!(
        "fire {label}: {} calls and {} reads in {load:?}; outcomes {:?}",
        calls.len(),
        probes.len(),
        invariants::outcome_counts(&calls)
    );
    let roles = |role: &str| {
        let mine: Vec<CallRecord> = calls.iter().filter(|c| c.request_id.contains(role)).cloned().collect();
        invariants::rpc_counts(&mine)
    };
    let (by_admins, by_delegates) = (roles("-admin-"), roles("-delegate-"));
    println!("fire {label}: administrators' calls {by_admins:#?}");
    println!("fire {label}: delegates' calls {by_delegates:#?}");
    let read_outcomes: BTreeMap<String, usize> = probes.iter().fold(BTreeMap::new(), |mut counts, probe| {
        let outcome = probe.outcome.as_ref().map_or_else(|(code, _)| format!("{code:?}"), |_| "OK".to_owned());
        *counts.entry(format!("{} {outcome}", probe.rpc)).or_insert(0) += 1;
        counts
    });
    println!("fire {label}: reads after writes {read_outcomes:?}");
    for server in &mut servers {
        assert!(server.try_exit().is_none(), "grantd {} exited during the run", server.label);
    }

    // The database settles: a statement sent before a SIGKILL may still commit. Judge
    // once the latest revision has stopped moving and the checks pass, or when SETTLE
    // is over.
    let db = database.connect().await;
    let settle = Instant::now();
    let (mut last, mut still_since) = (u64::MAX, Instant::now());
    while settle.elapsed() < SETTLE {
        let latest = latest_revision(&admin).await;
        if latest != last {
            (last, still_since) = (latest, Instant::now());
        } else if still_since.elapsed() >= Duration::from_secs(1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (snapshot, report, durability, reads) = loop {
        let snapshot = Snapshot::take(&admin, &db).await;
        let (report, mut violations) = invariants::evaluate(&snapshot, &calls, &policy);
        let (durability, lost) = invariants::lost_writes(&snapshot, &calls, &policy);
        let (reads, stale) = invariants::check_reads(&snapshot, &probes, &policy);
        violations.extend(lost);
        violations.extend(stale);
        if violations.is_empty() {
            break (snapshot, report, durability, reads);
        }
        if settle.elapsed() >= SETTLE {
            println!("fire {label}: still {} violations {SETTLE:?} after the load", violations.len());
            invariants::fail_on(&violations);
        }
        println!("fire {label}: {} violations at revision {}; waiting", violations.len(), snapshot.latest_revision);
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    println!("fire {label}: settled after {:?}", settle.elapsed());
    println!("fire {label}: {report:?}");
    println!("fire {label}: {durability:?}");
    println!("fire {label}: {reads:?}");

    // The API's own view of each (org, user) agrees with the tables.
    let everyone: Vec<&String> = fixture.users.iter().chain(&delegates).collect();
    for org in &fixture.orgs {
        let members: BTreeSet<_> = snapshot.members.iter().filter(|m| &m.0 == org).cloned().collect();
        assert_eq!(Snapshot::api_members(&admin, org).await, members, "ListOrganizationMembers of {org}");
        for user in &everyone {
            let grants: BTreeSet<_> =
                snapshot.grants.iter().filter(|g| &g.0 == org && &g.1 == *user).cloned().collect();
            assert_eq!(Snapshot::api_grants(&admin, org, user).await, grants, "ListUserPermissions of {org}/{user}");
        }
    }

    // Only the failures faults and collisions explain.
    let large = settings.ops > DEFAULT_OPS;
    let unexpected: Vec<&CallRecord> = calls.iter().filter(|c| !explained(c, &policy, large)).collect();
    assert!(
        unexpected.is_empty(),
        "fire {label}: {} calls failed unexpectedly, e.g. {:#?}",
        unexpected.len(),
        &unexpected[..unexpected.len().min(10)]
    );

    // The run proved something: delegates wrote, the faults hit writes in flight, and
    // writes succeeded after the last fault.
    let delegate_adds = by_delegates.get("AddUserPermissions OK").copied().unwrap_or(0);
    assert!(delegate_adds > 0, "fire {label}: no delegate's add succeeded: {by_delegates:?}");
    let unknown = |c: &CallRecord| matches!(&c.outcome, Err((code, _)) if policy.ambiguous.contains(code));
    for fault in &injected {
        // Writes in flight as the fault began (to the killed process), and writes that
        // overlapped the fault.
        let cut: Vec<&CallRecord> = calls
            .iter()
            .filter(|c| c.sent <= fault.began && c.answered >= fault.began)
            .filter(|c| match fault.fault {
                Fault::Kill(index) => c.process == index,
                Fault::RestartPostgres => true,
            })
            .collect();
        let during: Vec<&CallRecord> =
            calls.iter().filter(|c| c.answered >= fault.began && c.sent <= fault.ended).collect();
        println!(
            "fire {label}: {:?} at {:?} (after {} writes, {} in flight; over at {:?}): {} writes in flight as it \
             began ({} of them with an unknown outcome); {} writes overlapped it, {} with an unknown outcome",
            fault.fault,
            fault.began,
            fault.at_call,
            fault.in_flight,
            fault.ended,
            cut.len(),
            cut.iter().filter(|c| unknown(c)).count(),
            during.len(),
            during.iter().filter(|c| unknown(c)).count()
        );
        assert!(!cut.is_empty(), "fire {label}: no write was in flight at {:?}: the fault proved nothing", fault.fault);
        // Writes sent to a killed process while it is down fail. PostgreSQL's restart
        // may instead only delay writes: the server waits for a connection meanwhile.
        if let Fault::Kill(_) = fault.fault {
            assert!(
                during.iter().any(|c| unknown(c)),
                "fire {label}: no write failed with an unknown outcome during {:?}: the fault proved nothing",
                fault.fault
            );
        }
    }
    let last_fault = injected.iter().map(|f| f.ended).max().expect("faults were injected");
    let after = calls.iter().filter(|c| c.sent > last_fault && c.outcome.is_ok()).count();
    println!("fire {label}: {after} writes answered OK after the last fault");
    assert!(after > 0, "fire {label}: no write succeeded after the last fault");
    assert!(reads.checks > 0 && reads.lists > 0, "fire {label}: reads after writes were made: {reads:?}");
    if processes > 1 {
        assert_eq!(reads.elsewhere, reads.probes, "fire {label}: every read went to another process");
    }
    println!("fire {label}: done in {:?}", started.elapsed());
}

async fn latest_revision(admin: &Clients) -> u64 {
    let message = common::proto::ListChangesRequest { after_revision: 0, organization_id: String::new(), page_size: 1 };
    admin
        .audit
        .clone()
        .list_changes(process::request(message, "check-latest", Duration::from_secs(10)))
        .await
        .expect("ListChanges")
        .into_inner()
        .latest_revision
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_fire_postgres_three_processes() {
    let Some(database) = TestDatabase::postgres("t_consistency_under_fire_postgres").await else { return };
    let _back_up = PostgresBackUp;
    let faults = vec![(0.25, Fault::Kill(1)), (0.55, Fault::RestartPostgres)];
    under_fire(database, 3, faults, "pg").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_fire_sqlite_one_process() {
    under_fire(TestDatabase::sqlite(), 1, vec![(0.4, Fault::Kill(0))], "sqlite").await;
}
