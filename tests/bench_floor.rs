//! `grantd-bench floor-server` and `floor` on PostgreSQL: the floor writes through
//! grantd's own add statement (each call one grant and its change event, as grantd's add
//! writes them) and reports a parsable JSON line. Nothing here looks at how long anything took.

mod common;
#[path = "common/process.rs"]
mod process;

use std::{
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use common::{Backend, TestServer};
use process::{KillOnDrop, free_port};
use sea_orm::ConnectionTrait;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_floor_writes_grantds_add_through_tonic_and_sqlx() {
    // A migrated database (grantd's own start migrates it) with the ceilings' data.
    let Some(server) = TestServer::start(Backend::Postgres, "bench_floor::writes").await else { return };
    server.db.execute_unprepared(include_str!("../bench/sql/seed.sql")).await.expect("bench/sql/seed.sql");
    // Nothing but the floor writes from here on.
    let grants_before = server.count_rows("grants").await;
    let events_before = server.count_rows("changes").await;

    let addr = format!("127.0.0.1:{}", free_port());
    let mut floor = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_grantd-bench"))
            .args(["floor-server", "--addr", &addr, "--floor-db", server.database_url()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn grantd-bench floor-server"),
    );
    let mut listening = false;
    for _ in 0..600 {
        if let Some(status) = floor.0.try_wait().expect("try_wait") {
            panic!("floor-server exited during start with {status}");
        }
        if std::net::TcpStream::connect(&addr).is_ok() {
            listening = true;
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    assert!(listening, "floor-server never listened on {addr}");

    let output = Command::new(env!("CARGO_BIN_EXE_grantd-bench"))
        .args(["floor", "--addr", &addr, "--requests", "50", "--clients", "1"])
        .env("GRANTD_TOKEN", "the floor checks no token")
        .output()
        .expect("run grantd-bench floor");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "grantd-bench floor failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line = stdout.lines().find(|line| line.starts_with("{\"scenario\":")).expect("a JSON report");
    let line: serde_json::Value = serde_json::from_str(line).expect("valid JSON");
    assert_eq!(line["scenario"], "floor", "{line}");
    assert_eq!(line["requests"], 50, "{line}");
    assert_eq!(line["errors"], 0, "{line}");

    let grants = server.count_rows("grants").await;
    let events = server.count_rows("changes").await;
    assert_eq!(grants - grants_before, 50, "each call grants one permission on a fresh resource");
    assert_eq!(events - events_before, 50, "and appends its change event");
}
