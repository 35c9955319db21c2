//! The timed part of a run: `--threads` OS threads, each a single-threaded tokio runtime
//! with its own connections and clients, as pgbench's `-j` splits its clients.
//!
//! One multi-threaded runtime for every client made the load generator itself costly:
//! its tasks and connections woke each other across threads (futex and eventfd wakeups,
//! context switches), CPU taken from grantd and PostgreSQL on the same two cores. A
//! thread that owns its connections wakes only itself.

use std::{
    sync::{Arc, atomic::AtomicU64},
    time::Instant,
};

use anyhow::Context;
use tokio::sync::{Barrier, oneshot};
use tonic_health::pb::health_client::HealthClient;

use crate::{
    Args, Authed, Bearer, Plan, Report, TaskResult, call, deadline_and_limit,
    pb::grant_service_client::GrantServiceClient, transport::H2Channel,
};

/// The clients of one connection.
#[derive(Clone)]
pub struct Clients {
    pub channel: H2Channel,
    pub grants: GrantServiceClient<Authed>,
    pub health: HealthClient<H2Channel>,
}

/// Opens one HTTP/2 connection to `addr`.
pub async fn connect(addr: &str, bearer: &Bearer) -> anyhow::Result<Clients> {
    let channel = H2Channel::connect(addr).await.with_context(|| format!("cannot connect to {addr}"))?;
    Ok(Clients {
        grants: GrantServiceClient::with_interceptor(channel.clone(), bearer.clone()),
        health: HealthClient::new(channel.clone()),
        channel,
    })
}

/// When the clients stop, and the count of requests issued that they share.
type Go = (Option<Instant>, u64, Arc<AtomicU64>);

/// Runs the scenario: every thread connects, then the clock starts for all at once.
pub async fn run(args: &Args, bearer: &Bearer, plan: Arc<Plan>) -> anyhow::Result<Report> {
    let threads = args.load_threads();
    let connected = Arc::new(Barrier::new(threads + 1));
    let mut starts = Vec::with_capacity(threads);
    let mut results = Vec::with_capacity(threads);
    for thread in 0..threads {
        let (go, started) = oneshot::channel::<Go>();
        let (done, result) = oneshot::channel();
        let (args, bearer, plan, connected) = (args.clone(), bearer.clone(), plan.clone(), connected.clone());
        std::thread::Builder::new().name(format!("load-{thread}")).spawn(move || {
            let outcome = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start a load thread's runtime")
                .and_then(|runtime| runtime.block_on(load(thread, threads, &args, &bearer, plan, &connected, started)));
            let _ = done.send(outcome);
        })?;
        starts.push(go);
        results.push(result);
    }
    connected.wait().await;
    let (deadline, limit, issued) = deadline_and_limit(args);
    let started = Instant::now();
    for go in starts {
        let _ = go.send((deadline, limit, issued.clone()));
    }
    let mut merged = Vec::with_capacity(args.clients);
    for result in results {
        merged.extend(result.await.context("a load thread panicked")??);
    }
    Ok(Report::merge(args.scenario, started.elapsed(), merged))
}

/// One thread's share: connections `thread`, `thread + threads`, ... and as many clients,
/// round-robin over them.
async fn load(
    thread: usize,
    threads: usize,
    args: &Args,
    bearer: &Bearer,
    plan: Arc<Plan>,
    connected: &Barrier,
    started: oneshot::Receiver<Go>,
) -> anyhow::Result<Vec<TaskResult>> {
    let mut connections = Vec::new();
    let mut failure = None;
    for _ in (thread..args.connections).step_by(threads) {
        match connect(&args.addr, bearer).await {
            Ok(clients) => connections.push(clients),
            Err(err) => failure = Some(err),
        }
    }
    // Every thread reaches the barrier, failed or not, so that none waits forever.
    connected.wait().await;
    if let Some(err) = failure {
        return Err(err);
    }
    let (deadline, limit, issued) = started.await.context("the run was called off")?;
    let tasks: Vec<_> = (thread..args.clients)
        .step_by(threads)
        .enumerate()
        .map(|(local, task)| {
            let mut clients = connections[local % connections.len()].clone();
            let (plan, issued, scenario) = (plan.clone(), issued.clone(), args.scenario);
            tokio::spawn(async move {
                let mut result = TaskResult::default();
                while deadline.is_none_or(|d| Instant::now() < d) {
                    let n = issued.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if n >= limit {
                        break;
                    }
                    let begin = Instant::now();
                    let outcome = call(&mut clients, &plan, scenario, task, n).await;
                    result.latencies.push(begin.elapsed());
                    if let Err(failure) = outcome {
                        *result.errors.entry(failure.label()).or_default() += 1;
                    }
                }
                result
            })
        })
        .collect();
    let mut results = Vec::with_capacity(tasks.len());
    for task in tasks {
        results.push(task.await.context("a client task panicked")?);
    }
    Ok(results)
}
