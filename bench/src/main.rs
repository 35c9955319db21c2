//! `grantd-bench`: a load generator for a running grantd.
//!
//! It seeds its own data under a fresh organization id (excluded from the timing), then
//! runs one scenario with N concurrent tasks spread round-robin over M HTTP/2
//! connections, and reports requests, errors by gRPC code, requests/s and latency
//! percentiles as a table and as one JSON line. The `sqlite-ceiling` scenarios run no
//! grantd: they measure what SQLite, through sqlx, allows for the least an add must write.

mod duration;
mod load;
mod sqlite_ceiling;
mod transport;

/// grantd's gRPC clients, generated from `../proto` by build.rs.
mod pb {
    tonic::include_proto!("grants.v1");
}

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{Arc, atomic::AtomicU64},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use futures::{StreamExt, TryStreamExt, stream};
use pb::{
    AddUserPermissionsRequest, AddUserToOrganizationRequest, CheckPermissionRequest, CreateOrganizationRequest,
    CreatePermissionRequest, ListUserPermissionsRequest, RemoveUserFromOrganizationRequest,
    RemoveUserPermissionsRequest, Resource, check_permission_request::Permission,
    directory_service_client::DirectoryServiceClient, grant_service_client::GrantServiceClient,
};
use tonic::{
    Request, Status,
    metadata::{Ascii, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
};
use tonic_health::pb::HealthCheckRequest;

use crate::{load::Clients, transport::H2Channel};

/// The load generator must not be the bottleneck: mimalloc, as grantd itself.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The resource type of every grant the tool makes.
const RESOURCE_TYPE: &str = "bench_doc";
/// The largest permission list one request may carry.
const MAX_LIST: usize = 1_000;

#[derive(Parser, Debug, Clone)]
#[command(name = "grantd-bench", about = "Load generator for a running grantd")]
struct Args {
    /// What to run.
    #[arg(value_enum)]
    scenario: Scenario,
    /// The grantd to load (plain HTTP/2).
    #[arg(long, default_value = "127.0.0.1:50051")]
    addr: String,
    /// An admin bearer token (`grantd token --subject bench --admin`); every scenario but
    /// the ceilings needs one.
    #[arg(long, env = "GRANTD_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// HTTP/2 connections to open.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Concurrent tasks, spread round-robin over the connections.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Threads generating the load, each with its own share of the connections and
    /// clients and nothing shared between them while they run (as pgbench's `-j`).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Run for this long (90s, 5m, ...). Default 10s unless --requests is given.
    #[arg(long, value_parser = duration::parse)]
    duration: Option<Duration>,
    /// Stop after this many requests in total (per batch size for add-batch).
    #[arg(long)]
    requests: Option<u64>,
    /// add-batch: permissions per request, each size run in turn.
    #[arg(long, value_delimiter = ',', default_value = "1,10,100,1000")]
    batch: Vec<usize>,
    /// remove-user: grants each removed user holds.
    #[arg(long, default_value_t = 10)]
    grants: usize,
    /// Grants seeded before the run (check, list, remove and mixed read or remove them).
    #[arg(long, default_value_t = 10_000)]
    existing_grants: usize,
    /// Members of the benchmark organization that hold the grants.
    #[arg(long, default_value_t = 100)]
    users: usize,
    /// remove-user: users to seed when running for a --duration (with --requests, that many).
    #[arg(long, default_value_t = 2_000)]
    seed_users: usize,
    /// sqlite-ceiling: the SQLite file to run on, its tables created and seeded if need
    /// be, and kept (default: a new file in the temporary directory, removed afterwards).
    /// A file of its own: it refuses one holding another schema, grantd's for instance.
    #[arg(long)]
    ceiling_db: Option<PathBuf>,
    /// Measure a caller that is not an administrator: this user's token
    /// (`grantd token --subject bench-delegate`). Seeding (with --token) makes the user a
    /// member holding `edit_org_users` and the whole catalog org-wide, so that it may
    /// grant; the measured calls carry this token, and the scenario's name gets
    /// `-delegate` appended.
    #[arg(long, env = "GRANTD_DELEGATE_TOKEN", hide_env_values = true)]
    delegate_token: Option<String>,
    /// The subject of --delegate-token.
    #[arg(long, default_value = "bench-delegate")]
    delegate: String,
}

impl Args {
    /// The threads a run uses: no more than there are connections or clients to share.
    fn load_threads(&self) -> usize {
        self.threads.min(self.connections).min(self.clients)
    }
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    /// AddUserPermissions of one permission on a fresh (user, resource).
    Add,
    /// AddUserPermissions of --batch permissions on a fresh (user, resource).
    AddBatch,
    /// CheckPermission (by name) of seeded grants.
    Check,
    /// ListUserPermissions (page_size 100) of seeded users.
    List,
    /// RemoveUserPermissions of one seeded grant per call.
    Remove,
    /// RemoveUserFromOrganization of a seeded user holding --grants grants.
    RemoveUser,
    /// 90% check, 10% add.
    Mixed,
    /// grpc.health.v1.Health/Check: no token, no database. The floor of what one gRPC
    /// round trip through tonic costs on this machine, to set the other figures against.
    Health,
    /// No grantd: one add as one transaction inserting a grant row and a change row, with
    /// grantd's keys and foreign keys and no revision counter, straight through sqlx on a
    /// SQLite file, one call per statement (the ceiling for `add` on SQLite).
    SqliteCeiling,
    /// As sqlite-ceiling, with the whole transaction in one call (one round trip to
    /// sqlx's connection thread instead of one per statement).
    SqliteCeilingOneCall,
}

impl Scenario {
    fn is_ceiling(self) -> bool {
        matches!(self, Scenario::SqliteCeiling | Scenario::SqliteCeilingOneCall)
    }

    fn name(self) -> &'static str {
        match self {
            Scenario::Add => "add",
            Scenario::AddBatch => "add-batch",
            Scenario::Check => "check",
            Scenario::List => "list",
            Scenario::Remove => "remove",
            Scenario::RemoveUser => "remove-user",
            Scenario::Mixed => "mixed",
            Scenario::Health => "health",
            Scenario::SqliteCeiling => "sqlite-ceiling",
            Scenario::SqliteCeilingOneCall => "sqlite-ceiling-one-call",
        }
    }
}

/// Sends `authorization: Bearer <token>` with every call.
#[derive(Clone)]
struct Bearer(MetadataValue<Ascii>);

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request.metadata_mut().insert("authorization", self.0.clone());
        Ok(request)
    }
}

type Authed = InterceptedService<H2Channel, Bearer>;

/// One seeded AddUserPermissions call: a user holding `permissions` (indices into the
/// catalog, from 0) on one resource.
#[derive(Clone, Debug)]
struct Seeded {
    user: String,
    resource: String,
    permissions: usize,
}

/// What every task shares.
#[derive(Clone)]
struct Plan {
    org: String,
    catalog: Vec<String>,
    users: Vec<String>,
    seeded: Vec<Seeded>,
    /// remove: every seeded (grant index into `seeded`, permission index).
    singles: Vec<(usize, usize)>,
    /// remove-user: the users to remove, in order.
    doomed: Vec<String>,
    /// Permissions per add: the batch being measured for add-batch, 1 for every other add.
    batch: usize,
    /// add and add-batch: the prefix of the resources they grant on, new to the
    /// (organization, user) pairs they use.
    fresh: String,
}

#[derive(Default)]
struct TaskResult {
    latencies: Vec<Duration>,
    errors: BTreeMap<String, u64>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.connections == 0 || args.clients == 0 || args.threads == 0 {
        bail!("--connections, --clients and --threads must be at least 1");
    }
    if args.scenario == Scenario::AddBatch && args.batch.iter().any(|&b| b == 0 || b > MAX_LIST) {
        bail!("--batch sizes must be 1-{MAX_LIST}");
    }
    if args.scenario.is_ceiling() {
        sqlite_ceiling::run(&args).await?.print(&args, 1);
        return Ok(());
    }
    let token = args.token.as_deref().context("a token is needed: --token or GRANTD_TOKEN")?;
    let bearer = Bearer(format!("Bearer {}", token.trim()).parse().context("the token is not ASCII")?);
    // Seeding has a connection of its own, closed when seeding ends: the runs below open
    // --connections of theirs, and only those are open while they run.
    let Clients { channel, grants, .. } = load::connect(&args.addr, &bearer).await?;
    let directory = DirectoryServiceClient::with_interceptor(channel, bearer.clone());

    let started = Instant::now();
    let plan = seed(&args, directory, grants).await.context("seeding failed")?;
    eprintln!(
        "seeded org {} ({} permissions, {} users, {} grants) in {:.1}s",
        plan.org,
        plan.catalog.len(),
        plan.users.len() + plan.doomed.len(),
        plan.seeded.iter().map(|s| s.permissions).sum::<usize>() + plan.doomed.len() * args.grants,
        started.elapsed().as_secs_f64()
    );

    let measured = match &args.delegate_token {
        Some(token) => Bearer(format!("Bearer {}", token.trim()).parse().context("the delegate token is not ASCII")?),
        None => bearer,
    };
    let batches = if args.scenario == Scenario::AddBatch { args.batch.clone() } else { vec![1] };
    for batch in batches {
        let plan = Arc::new(Plan { batch, fresh: format!("b{batch}"), ..plan.clone() });
        let report = load::run(&args, &measured, plan).await?;
        report.print(&args, batch);
    }
    Ok(())
}

/// Creates the organization, the catalog, the members and the existing grants.
async fn seed(
    args: &Args,
    mut directory: DirectoryServiceClient<Authed>,
    grants: GrantServiceClient<Authed>,
) -> anyhow::Result<Plan> {
    let prefix = format!("bench-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let org = prefix.clone();
    directory
        .create_organization(CreateOrganizationRequest { id: org.clone(), display_name: "grantd-bench".into() })
        .await?;
    let catalog_size = match args.scenario {
        Scenario::AddBatch => args.batch.iter().copied().max().unwrap_or(1).max(100),
        Scenario::RemoveUser => args.grants.clamp(1, MAX_LIST).max(100),
        _ => 100,
    };
    let catalog: Vec<String> = (0..catalog_size).map(|i| format!("{prefix}:p{i:04}")).collect();
    let parallel = args.clients.clamp(1, 16);
    stream::iter(catalog.iter().cloned())
        .map(|name| {
            let mut directory = directory.clone();
            async move { directory.create_permission(CreatePermissionRequest { name, description: String::new() }).await }
        })
        .buffer_unordered(parallel)
        .try_collect::<Vec<_>>()
        .await?;

    let users: Vec<String> = (0..args.users.max(1)).map(|i| format!("{prefix}-u{i:05}")).collect();
    let doomed: Vec<String> = if args.scenario == Scenario::RemoveUser {
        let count = args.requests.map(|r| r as usize).unwrap_or(args.seed_users);
        (0..count).map(|i| format!("{prefix}-x{i:06}")).collect()
    } else {
        Vec::new()
    };
    stream::iter(users.iter().chain(doomed.iter()).cloned())
        .map(|user_id| {
            let mut directory = directory.clone();
            let organization_id = org.clone();
            async move {
                directory.add_user_to_organization(AddUserToOrganizationRequest { organization_id, user_id }).await
            }
        })
        .buffer_unordered(parallel)
        .try_collect::<Vec<_>>()
        .await?;

    if args.delegate_token.is_some() {
        delegate_rights(args, &mut directory, grants.clone(), &org, &catalog).await?;
    }

    // Existing grants, in calls of up to the whole catalog each.
    let mut wanted = match args.scenario {
        Scenario::Check | Scenario::List | Scenario::Mixed => args.existing_grants.max(1),
        Scenario::Remove => args.existing_grants.max(args.requests.unwrap_or(0) as usize).max(1),
        Scenario::Health => 0,
        _ => args.existing_grants,
    };
    let mut seeded = Vec::new();
    let per_call = catalog.len().min(MAX_LIST);
    let mut k = 0usize;
    while wanted > 0 {
        let permissions = wanted.min(per_call);
        seeded.push(Seeded { user: users[k % users.len()].clone(), resource: format!("seed-{k}"), permissions });
        wanted -= permissions;
        k += 1;
    }
    // remove-user: each doomed user holds --grants grants.
    let mut doomed_calls = Vec::new();
    for user in &doomed {
        let mut left = args.grants;
        let mut r = 0;
        while left > 0 {
            let permissions = left.min(per_call);
            doomed_calls.push(Seeded { user: user.clone(), resource: format!("doomed-{r}"), permissions });
            left -= permissions;
            r += 1;
        }
    }
    stream::iter(seeded.iter().chain(doomed_calls.iter()).cloned())
        .map(|s| {
            let mut grants = grants.clone();
            let request = AddUserPermissionsRequest {
                organization_id: org.clone(),
                user_id: s.user,
                permission_ids: Vec::new(),
                permission_names: catalog[..s.permissions].to_vec(),
                resource: Some(Resource { r#type: RESOURCE_TYPE.into(), id: s.resource }),
            };
            async move { grants.add_user_permissions(request).await }
        })
        .buffer_unordered(parallel)
        .try_collect::<Vec<_>>()
        .await?;

    let singles = if args.scenario == Scenario::Remove {
        seeded.iter().enumerate().flat_map(|(i, s)| (0..s.permissions).map(move |p| (i, p))).collect()
    } else {
        Vec::new()
    };
    Ok(Plan { org, catalog, users, seeded, singles, doomed, batch: 1, fresh: String::new() })
}

/// Makes --delegate a member of `org` holding `edit_org_users` and every permission of
/// `catalog` org-wide: what a caller that is not an administrator needs to grant them.
async fn delegate_rights(
    args: &Args,
    directory: &mut DirectoryServiceClient<Authed>,
    mut grants: GrantServiceClient<Authed>,
    org: &str,
    catalog: &[String],
) -> anyhow::Result<()> {
    // Built into every catalog.
    const EDIT: &str = "edit_org_users";
    directory
        .add_user_to_organization(AddUserToOrganizationRequest {
            organization_id: org.to_owned(),
            user_id: args.delegate.clone(),
        })
        .await?;
    let rights = std::iter::once(EDIT.to_owned()).chain(catalog.iter().cloned()).collect::<Vec<_>>();
    for names in rights.chunks(MAX_LIST) {
        grants
            .add_user_permissions(AddUserPermissionsRequest {
                organization_id: org.to_owned(),
                user_id: args.delegate.clone(),
                permission_ids: Vec::new(),
                permission_names: names.to_vec(),
                resource: None,
            })
            .await?;
    }
    Ok(())
}

struct Report {
    scenario: Scenario,
    elapsed: Duration,
    latencies: Vec<Duration>,
    errors: BTreeMap<String, u64>,
}

/// When the clients stop: a deadline (10 s unless --duration or --requests is given),
/// a request count, and the counter of requests issued so far that they share.
fn deadline_and_limit(args: &Args) -> (Option<Instant>, u64, Arc<AtomicU64>) {
    let duration = match (args.duration, args.requests) {
        (None, None) => Some(Duration::from_secs(10)),
        (d, _) => d,
    };
    (duration.map(|d| Instant::now() + d), args.requests.unwrap_or(u64::MAX), Arc::new(AtomicU64::new(0)))
}

fn resource(id: String) -> Option<Resource> {
    Some(Resource { r#type: RESOURCE_TYPE.into(), id })
}

/// Why a call did not do what the scenario expects.
enum Failure {
    Status(Status),
    /// A check of a seeded grant answered not-allowed.
    UnexpectedDenial,
}

impl From<Status> for Failure {
    fn from(status: Status) -> Self {
        Failure::Status(status)
    }
}

impl Failure {
    /// How the report counts it: the gRPC code's name, or `UnexpectedDenial`.
    fn label(&self) -> String {
        match self {
            Failure::Status(status) => format!("{:?}", status.code()),
            Failure::UnexpectedDenial => "UnexpectedDenial".to_owned(),
        }
    }
}

/// One request of the scenario; `n` is the global request number.
async fn call(clients: &mut Clients, plan: &Plan, scenario: Scenario, task: usize, n: u64) -> Result<(), Failure> {
    let scenario = match scenario {
        Scenario::Mixed if rand::random_range(0..10) == 0 => Scenario::Add,
        Scenario::Mixed => Scenario::Check,
        other => other,
    };
    let client = &mut clients.grants;
    match scenario {
        Scenario::Add | Scenario::AddBatch => {
            let user = &plan.users[n as usize % plan.users.len()];
            client
                .add_user_permissions(AddUserPermissionsRequest {
                    organization_id: plan.org.clone(),
                    user_id: user.clone(),
                    permission_ids: Vec::new(),
                    permission_names: plan.catalog[..plan.batch].to_vec(),
                    resource: resource(format!("{}-t{task}-n{n}", plan.fresh)),
                })
                .await?;
        }
        Scenario::Check => {
            let s = &plan.seeded[rand::random_range(0..plan.seeded.len())];
            let permission = &plan.catalog[rand::random_range(0..s.permissions)];
            let answer = client
                .check_permission(CheckPermissionRequest {
                    organization_id: plan.org.clone(),
                    user_id: s.user.clone(),
                    permission: Some(Permission::PermissionName(permission.clone())),
                    resource: resource(s.resource.clone()),
                    at_least_revision: 0,
                })
                .await?;
            if !answer.get_ref().allowed {
                return Err(Failure::UnexpectedDenial);
            }
        }
        Scenario::List => {
            let user = &plan.users[rand::random_range(0..plan.users.len())];
            client
                .list_user_permissions(ListUserPermissionsRequest {
                    organization_id: plan.org.clone(),
                    user_id: user.clone(),
                    resource: None,
                    page_size: 100,
                    page_token: String::new(),
                    at_least_revision: 0,
                })
                .await?;
        }
        Scenario::Remove => {
            // Past the seeded grants (a long --duration) it wraps and removes nothing.
            let (i, p) = plan.singles[n as usize % plan.singles.len()];
            let s = &plan.seeded[i];
            client
                .remove_user_permissions(RemoveUserPermissionsRequest {
                    organization_id: plan.org.clone(),
                    user_id: s.user.clone(),
                    permission_ids: Vec::new(),
                    permission_names: vec![plan.catalog[p].clone()],
                    resource: resource(s.resource.clone()),
                })
                .await?;
        }
        Scenario::RemoveUser => {
            let user = &plan.doomed[n as usize % plan.doomed.len()];
            client
                .remove_user_from_organization(RemoveUserFromOrganizationRequest {
                    organization_id: plan.org.clone(),
                    user_id: user.clone(),
                    allow_missing: true,
                })
                .await?;
        }
        Scenario::Health => {
            clients.health.check(HealthCheckRequest { service: String::new() }).await?;
        }
        Scenario::Mixed => unreachable!("mixed picks check or add above"),
        Scenario::SqliteCeiling | Scenario::SqliteCeilingOneCall => unreachable!("the ceilings call no grantd"),
    }
    Ok(())
}

impl Report {
    /// Waits for every client task and merges what they measured.
    async fn collect(
        scenario: Scenario,
        started: Instant,
        tasks: Vec<tokio::task::JoinHandle<TaskResult>>,
    ) -> anyhow::Result<Report> {
        let mut results = Vec::with_capacity(tasks.len());
        for task in tasks {
            results.push(task.await.context("a client task panicked")?);
        }
        Ok(Report::merge(scenario, started.elapsed(), results))
    }

    fn merge(scenario: Scenario, elapsed: Duration, results: Vec<TaskResult>) -> Report {
        let mut latencies = Vec::new();
        let mut errors = BTreeMap::new();
        for result in results {
            latencies.extend(result.latencies);
            for (code, count) in result.errors {
                *errors.entry(code).or_default() += count;
            }
        }
        latencies.sort_unstable();
        Report { scenario, elapsed, latencies, errors }
    }

    fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((p / 100.0) * self.latencies.len() as f64).ceil() as usize;
        self.latencies[rank.clamp(1, self.latencies.len()) - 1]
    }

    fn print(&self, args: &Args, batch: usize) {
        let requests = self.latencies.len() as u64;
        let errors: u64 = self.errors.values().sum();
        let rps = requests as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON);
        let ms = |d: Duration| (d.as_secs_f64() * 1_000_000.0).round() / 1_000.0;
        let (p50, p90, p99) = (self.percentile(50.0), self.percentile(90.0), self.percentile(99.0));
        let max = self.latencies.last().copied().unwrap_or_default();
        let scenario = match args.delegate_token {
            Some(_) => format!("{}-delegate", self.scenario.name()),
            None => self.scenario.name().to_owned(),
        };
        let scenario = scenario.as_str();
        let label = if self.scenario == Scenario::AddBatch {
            format!("{scenario} (batch {batch})")
        } else {
            scenario.to_owned()
        };
        // The ceilings call no grantd: no load threads, whatever --threads says.
        let threads = (!self.scenario.is_ceiling()).then(|| args.load_threads());
        println!("scenario     {label}");
        match threads {
            Some(threads) => println!("connections  {}  clients {}  threads {threads}", args.connections, args.clients),
            None => println!("connections  {}  clients {}", args.connections, args.clients),
        }
        println!("requests     {requests}  errors {errors}  elapsed {:.3}s", self.elapsed.as_secs_f64());
        for (code, count) in &self.errors {
            println!("  error      {code}: {count}");
        }
        println!("requests/s   {rps:.1}");
        println!("latency ms   p50 {:.3}  p90 {:.3}  p99 {:.3}  max {:.3}", ms(p50), ms(p90), ms(p99), ms(max));
        let line = JsonLine {
            scenario,
            batch: (self.scenario == Scenario::AddBatch).then_some(batch),
            connections: args.connections,
            clients: args.clients,
            threads,
            requests,
            errors,
            errors_by_code: &self.errors,
            elapsed_s: self.elapsed.as_secs_f64(),
            requests_per_s: (rps * 10.0).round() / 10.0,
            latency_ms: Latency { p50: ms(p50), p90: ms(p90), p99: ms(p99), max: ms(max) },
        };
        let line = serde_json::to_string(&line).expect("a report serializes");
        println!("{line}");
    }
}

/// The machine-readable report: one line, `scenario` first.
#[derive(serde::Serialize)]
struct JsonLine<'a> {
    scenario: &'a str,
    batch: Option<usize>,
    connections: usize,
    clients: usize,
    threads: Option<usize>,
    requests: u64,
    errors: u64,
    errors_by_code: &'a BTreeMap<String, u64>,
    elapsed_s: f64,
    requests_per_s: f64,
    latency_ms: Latency,
}

#[derive(serde::Serialize)]
struct Latency {
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
}
