//! `grantd-bench` against a real `grantd serve` on SQLite: each scenario run finishes,
//! prints a parsable JSON line, and makes exactly the requested number of calls without
//! errors; so do its SQLite ceilings, which write an add's rows with no server.
//! Nothing here looks at how long anything took.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::OnceLock,
    thread,
    time::Duration,
};

/// The workspace's `grantd`, in the target directory this test was built in: a test can
/// name only its own package's binaries (`CARGO_BIN_EXE_*`). This test runs as
/// `<target>/<profile>/deps/smoke-*`, and cargo puts `grantd` in `<target>/<profile>/`.
/// `cargo test --workspace` builds it; `cargo test -p grantd-bench` does not, so it is
/// built here when missing.
fn grantd_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let test = std::env::current_exe().expect("the test binary's path");
        let profile_dir = test.parent().and_then(Path::parent).expect("the test runs from <target>/<profile>/deps/");
        let binary = profile_dir.join(format!("grantd{}", std::env::consts::EXE_SUFFIX));
        if !binary.exists() {
            build_grantd(profile_dir);
            assert!(binary.exists(), "cargo built grantd, but not at {}", binary.display());
        }
        binary
    })
}

/// `cargo build -p grantd --bin grantd`, into the target directory and profile this test
/// was built with.
fn build_grantd(profile_dir: &Path) {
    let profile = match profile_dir.file_name().and_then(|name| name.to_str()) {
        Some("debug") => "dev",
        Some(name) => name,
        None => panic!("no profile directory in {}", profile_dir.display()),
    };
    let target_dir = profile_dir.parent().expect("<target>/<profile>/");
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "-p", "grantd", "--bin", "grantd", "--profile", profile])
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(target_dir)
        .status()
        .expect("run cargo build -p grantd");
    assert!(status.success(), "cargo build -p grantd --bin grantd failed with {status}");
}

/// Kills (SIGKILL) and reaps the server when the test ends, panicking or not.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `grantd` subcommand run in `dir`, with no GRANTD_* settings leaking in.
fn grantd(dir: &Path) -> Command {
    let mut command = Command::new(grantd_binary());
    command.current_dir(dir);
    for (key, _) in std::env::vars() {
        if key.starts_with("GRANTD_") {
            command.env_remove(key);
        }
    }
    command
}

fn stdout_of(output: &Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what} failed with {}:\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).expect("UTF-8 output")
}

#[test]
fn bench_scenarios_run_against_a_real_server() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = TcpListener::bind("127.0.0.1:0").expect("bind port 0").local_addr().expect("local addr").port();
    let addr = format!("127.0.0.1:{port}");
    let mut server = Server(
        grantd(dir.path())
            .args(["serve", "--listen", &addr])
            .env("RUST_LOG", "warn")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn grantd serve"),
    );

    // Poll health until SERVING; give up (without judging the time) after many tries.
    let mut healthy = false;
    for _ in 0..1_200 {
        if let Some(status) = server.0.try_wait().expect("try_wait") {
            panic!("grantd serve exited during start with {status}");
        }
        let health = grantd(dir.path()).args(["health", "--addr", &addr]).output().expect("run grantd health");
        if health.status.success() {
            healthy = true;
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    assert!(healthy, "grantd serve never answered health SERVING");

    let token = grantd(dir.path()).args(["token", "--subject", "bench", "--admin"]).output().expect("run grantd token");
    let token = stdout_of(&token, "grantd token").trim().to_owned();
    assert!(!token.is_empty(), "grantd token printed nothing");

    let runs: [(&[&str], usize); 3] = [(&["add"], 1), (&["check"], 1), (&["add-batch", "--batch", "1,10"], 2)];
    for (scenario, reports) in runs {
        let output = Command::new(env!("CARGO_BIN_EXE_grantd-bench"))
            .args(scenario)
            .args(["--addr", &addr, "--requests", "50", "--clients", "4", "--connections", "2"])
            .args(["--existing-grants", "200", "--users", "10"])
            .env_remove("GRANTD_TOKEN")
            .env("GRANTD_TOKEN", &token)
            .output()
            .expect("run grantd-bench");
        let what = format!("grantd-bench {}", scenario.join(" "));
        let stdout = stdout_of(&output, &what);
        let lines: Vec<serde_json::Value> = stdout
            .lines()
            .filter(|line| line.starts_with("{\"scenario\":"))
            .map(|line| serde_json::from_str(line).unwrap_or_else(|err| panic!("{what}: bad JSON {line:?}: {err}")))
            .collect();
        assert_eq!(lines.len(), reports, "{what}: expected {reports} JSON report line(s) in:\n{stdout}");
        for line in &lines {
            assert_eq!(line["scenario"], scenario[0], "{what}: {line}");
            assert_eq!(line["requests"], 50, "{what}: {line}");
            assert_eq!(line["errors"], 0, "{what}: {line}");
            assert!(line["latency_ms"]["p99"].is_number(), "{what}: {line}");
        }
        if reports == 2 {
            assert_eq!(lines[0]["batch"], 1, "{what}");
            assert_eq!(lines[1]["batch"], 10, "{what}");
        }
    }
}

#[test]
fn sqlite_ceilings_run_without_errors() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("ceiling.db");
    std::fs::create_dir(dir.path().join("tmp")).expect("tmp dir");
    for scenario in ["sqlite-ceiling", "sqlite-ceiling-one-call"] {
        let output = Command::new(env!("CARGO_BIN_EXE_grantd-bench"))
            .args([scenario, "--requests", "50", "--clients", "4", "--existing-grants", "200"])
            .arg("--ceiling-db")
            .arg(&file)
            .env_remove("GRANTD_TOKEN")
            .output()
            .expect("run grantd-bench");
        let stdout = stdout_of(&output, scenario);
        let line = stdout
            .lines()
            .find(|line| line.starts_with("{\"scenario\":"))
            .unwrap_or_else(|| panic!("{scenario}: no JSON report in:\n{stdout}"));
        let line: serde_json::Value = serde_json::from_str(line).expect("a JSON report");
        assert_eq!(line["scenario"], scenario, "{line}");
        assert_eq!(line["requests"], 50, "{line}");
        assert_eq!(line["errors"], 0, "{scenario}: every transaction commits: {line}");
        assert!(file.exists(), "{scenario} keeps the database file it was given");
    }
    // Without --ceiling-db it makes a file of its own and removes it.
    let output = Command::new(env!("CARGO_BIN_EXE_grantd-bench"))
        .args(["sqlite-ceiling", "--requests", "5", "--clients", "1", "--existing-grants", "10"])
        .env("TMPDIR", dir.path().join("tmp"))
        .output()
        .expect("run grantd-bench");
    stdout_of(&output, "sqlite-ceiling on a temporary file");
    let left: Vec<_> = std::fs::read_dir(dir.path().join("tmp")).expect("read tmp").collect();
    assert!(left.is_empty(), "the temporary ceiling database is removed: {left:?}");
}
