//! The real `grantd` binary is secure by default: `--insecure-no-auth` only on loopback,
//! a generated HS256 secret (mode 0600) beside an embedded SQLite database, tokens minted
//! by `grantd token` with that secret, and no start at all for PostgreSQL without a key.

mod common;
#[path = "common/process.rs"]
mod process;

use std::{
    fs::File,
    io::Read,
    net::SocketAddr,
    path::Path,
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use common::{Bearer, proto as pb};
use grantd::api::pb::directory_service_client::DirectoryServiceClient;
use process::KillOnDrop;
use tonic::{Code, service::interceptor::InterceptedService, transport::Channel};

const GRANTD: &str = env!("CARGO_BIN_EXE_grantd");

/// Every variable grantd reads, so that the environment of the test run cannot change
/// what is tested.
const GRANTD_VARS: &[&str] = &[
    "GRANTD_DATABASE_URL",
    "GRANTD_DB_MAX_CONNECTIONS",
    "GRANTD_DB_ACQUIRE_TIMEOUT_MS",
    "GRANTD_LISTEN",
    "GRANTD_LOG_FORMAT",
    "GRANTD_MAX_MESSAGE_BYTES",
    "GRANTD_REQUEST_TIMEOUT_MS",
    "GRANTD_MAX_CONCURRENT_STREAMS",
    "GRANTD_JWT_HS256_SECRET_FILE",
    "GRANTD_JWT_PUBLIC_KEY",
    "GRANTD_JWKS_FILE",
    "GRANTD_JWT_ISSUER",
    "GRANTD_JWT_AUDIENCE",
    "GRANTD_TLS_CERT",
    "GRANTD_TLS_KEY",
    "GRANTD_TLS_CLIENT_CA",
    "GRANTD_INSECURE_NO_AUTH",
    "GRANTD_DEV",
    "GRANTD_CONSOLE",
    "GRANTD_TOKEN",
];

#[test]
fn insecure_no_auth_refuses_a_non_loopback_address() {
    let dir = tempfile::tempdir().expect("temp dir");
    for listen in ["0.0.0.0:0", "[::]:0"] {
        let output = run_to_exit(grantd(dir.path()).args(["serve", "--listen", listen, "--insecure-no-auth"]));
        let text = all_output(&output);
        assert!(!output.status.success(), "{listen}: grantd should refuse to start: {text}");
        assert!(text.contains("loopback"), "{listen}: the message should mention loopback: {text}");
    }
    assert!(!dir.path().join("grantd.db").exists(), "it stopped before opening the database");
}

#[test]
fn serve_generates_a_private_secret_and_grantd_token_mints_tokens_it_accepts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("serve.log");
    let mut server = spawn_logged(grantd(dir.path()).args(["serve", "--listen", "127.0.0.1:0"]), &log);
    let addr = serving_address(&mut server, &log);

    let secret = dir.path().join("grantd.db.jwt-secret");
    assert!(secret.is_file(), "grantd serve creates {}", secret.display());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&secret).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the secret is readable by its owner only, not {mode:o}");
    }
    let secret_text = std::fs::read_to_string(&secret).expect("read secret");
    assert!(secret_text.trim().len() >= 32, "a secret of at least 32 bytes");
    let logged = std::fs::read_to_string(&log).expect("read log");
    assert!(logged.contains("grantd.db.jwt-secret"), "the log names the secret file: {logged}");
    assert!(!logged.contains(secret_text.trim()), "the log must not contain the secret itself");

    let admin = mint(dir.path(), &["--subject", "alice", "--admin"]);
    let user = mint(dir.path(), &["--subject", "bob"]);
    assert_eq!(admin.split('.').count(), 3, "a JWT: {admin}");

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let channel = Channel::from_shared(format!("http://{addr}")).expect("uri").connect().await.expect("connect");
        let client = |token: Option<&str>| {
            DirectoryServiceClient::new(InterceptedService::new(
                channel.clone(),
                token.map_or_else(Bearer::none, Bearer::new),
            ))
        };
        client(Some(&admin))
            .list_organizations(pb::ListOrganizationsRequest::default())
            .await
            .expect("the minted admin token is accepted");
        client(Some(&admin))
            .create_organization(pb::CreateOrganizationRequest { id: "acme".into(), display_name: String::new() })
            .await
            .expect("and may write");

        client(Some(&user))
            .list_permissions(pb::ListPermissionsRequest::default())
            .await
            .expect("bob is authenticated");
        let status = client(Some(&user))
            .list_organizations(pb::ListOrganizationsRequest::default())
            .await
            .expect_err("bob is no admin");
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");

        let status =
            client(None).list_organizations(pb::ListOrganizationsRequest::default()).await.expect_err("no token");
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        // A token minted with another secret (the test suite's) is refused.
        let status = client(Some(&common::token("alice", true)))
            .list_organizations(pb::ListOrganizationsRequest::default())
            .await
            .expect_err("foreign token");
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    });
    drop(server);

    // A restart keeps the secret, so tokens minted before it stay valid.
    let log = dir.path().join("serve-again.log");
    let mut server = spawn_logged(grantd(dir.path()).args(["serve", "--listen", "127.0.0.1:0"]), &log);
    let addr = serving_address(&mut server, &log);
    assert_eq!(std::fs::read_to_string(&secret).expect("read secret"), secret_text, "the secret is kept");
    runtime.block_on(async {
        let channel = Channel::from_shared(format!("http://{addr}")).expect("uri").connect().await.expect("connect");
        let organizations = DirectoryServiceClient::new(InterceptedService::new(channel, Bearer::new(&admin)))
            .list_organizations(pb::ListOrganizationsRequest::default())
            .await
            .expect("the token outlives the restart")
            .into_inner()
            .organizations;
        assert_eq!(organizations.len(), 1);
    });
}

#[test]
fn serve_on_postgres_without_a_key_refuses_to_start_before_connecting() {
    let dir = tempfile::tempdir().expect("temp dir");
    // TEST-NET-1: connecting would hang until the acquire timeout, so a quick exit shows
    // grantd gave up before trying.
    let started = Instant::now();
    let output = run_to_exit(grantd(dir.path()).args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--database-url",
        "postgres://grantd:secret@192.0.2.1:5432/grantd",
        "--db-acquire-timeout-ms",
        "20000",
    ]));
    let elapsed = started.elapsed();
    let text = all_output(&output);
    assert!(!output.status.success(), "grantd should refuse to start: {text}");
    assert!(text.contains("no token key configured"), "the message explains a key is needed: {text}");
    for flag in ["--jwt-hs256-secret-file", "--jwt-public-key", "--jwks-file"] {
        assert!(text.contains(flag), "the message names {flag}: {text}");
    }
    assert!(!text.contains("cannot open the database"), "it failed before connecting: {text}");
    assert!(elapsed < Duration::from_secs(10), "it failed before connecting, not after {elapsed:?}");
    assert!(std::fs::read_dir(dir.path()).expect("read dir").next().is_none(), "and created no file");
}

#[test]
fn grantd_token_needs_the_secret() {
    let dir = tempfile::tempdir().expect("temp dir");
    // No `grantd serve` has run here: no secret to mint with.
    let output = run_to_exit(grantd(dir.path()).args(["token", "--subject", "alice", "--admin"]));
    let text = all_output(&output);
    assert!(!output.status.success(), "{text}");
    assert!(text.contains("grantd.db.jwt-secret"), "names the missing secret: {text}");
    assert!(!String::from_utf8_lossy(&output.stdout).contains("eyJ"), "no token printed: {text}");

    // For PostgreSQL there is no default secret file.
    let output = run_to_exit(grantd(dir.path()).args([
        "token",
        "--subject",
        "alice",
        "--database-url",
        "postgres://grantd@127.0.0.1:5432/grantd",
    ]));
    let text = all_output(&output);
    assert!(!output.status.success(), "{text}");
    assert!(text.contains("--jwt-hs256-secret-file"), "{text}");

    // A secret shorter than 32 bytes is refused.
    let short = dir.path().join("short.secret");
    std::fs::write(&short, "too-short").expect("write");
    let output = run_to_exit(grantd(dir.path()).args([
        "token",
        "--subject",
        "alice",
        "--jwt-hs256-secret-file",
        short.to_str().expect("utf-8 path"),
    ]));
    assert!(!output.status.success(), "{}", all_output(&output));
}

/// `grantd token` signs with the key `serve` was given, through the same flags and
/// variables; a token signed otherwise is refused with the kinds of key the server holds.
#[test]
fn grantd_token_takes_the_key_flags_of_serve() {
    let dir = tempfile::tempdir().expect("temp dir");
    let secret = dir.path().join("grantd.secret");
    std::fs::write(&secret, "a-secret-of-more-than-thirty-two-bytes-for-this-test").expect("write secret");
    let secret = secret.to_str().expect("utf-8 path");
    let log = dir.path().join("serve.log");
    let mut server = spawn_logged(
        grantd(dir.path()).args(["serve", "--listen", "127.0.0.1:0"]).env("GRANTD_JWT_HS256_SECRET_FILE", secret),
        &log,
    );
    let addr = serving_address(&mut server, &log);
    assert!(!dir.path().join("grantd.db.jwt-secret").exists(), "a configured key, no generated one");

    let by_flag = mint(dir.path(), &["--subject", "root", "--admin", "--jwt-hs256-secret-file", secret]);
    let by_variable = {
        let output = run_to_exit(
            grantd(dir.path())
                .args(["token", "--subject", "root", "--admin"])
                .env("GRANTD_JWT_HS256_SECRET_FILE", secret),
        );
        assert!(output.status.success(), "{}", all_output(&output));
        String::from_utf8(output.stdout).expect("utf-8").trim().to_owned()
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let channel = Channel::from_shared(format!("http://{addr}")).expect("uri").connect().await.expect("connect");
        let list = |token: String| {
            let mut client = DirectoryServiceClient::new(InterceptedService::new(channel.clone(), Bearer::new(&token)));
            async move { client.list_organizations(pb::ListOrganizationsRequest::default()).await }
        };
        list(by_flag).await.expect("minted with --jwt-hs256-secret-file");
        list(by_variable).await.expect("minted with GRANTD_JWT_HS256_SECRET_FILE");
        let status = list(common::token("root", true)).await.expect_err("signed with another secret");
        assert_eq!(status.code(), Code::Unauthenticated);
        assert!(
            status.message().contains("does not verify with the keys this server holds: an HS256 secret"),
            "the refusal says which key the server expected: {status:?}"
        );
    });

    // Keys grantd cannot sign with are explained, not ignored.
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, r#"{"keys": []}"#).expect("write jwks");
    let output = run_to_exit(grantd(dir.path()).args(["token", "--subject", "root"]).env("GRANTD_JWKS_FILE", &jwks));
    let text = all_output(&output);
    assert!(!output.status.success(), "{text}");
    assert!(text.contains("signs with an HS256 secret"), "{text}");
}

/// Mistakes on the command line are one readable line, not a crash report, even for a
/// developer with RUST_BACKTRACE set; a token for no one is refused before it is minted.
#[test]
fn command_line_errors_are_plain_sentences() {
    let dir = tempfile::tempdir().expect("temp dir");
    let failures = [
        run_to_exit(
            grantd(dir.path())
                .args(["serve", "--database-url", "postgres://grantd@192.0.2.1:5432/grantd"])
                .env("RUST_BACKTRACE", "1"),
        ),
        run_to_exit(grantd(dir.path()).args(["token", "--subject", "alice"]).env("RUST_BACKTRACE", "full")),
    ];
    for output in &failures {
        let text = all_output(output);
        assert!(!output.status.success(), "{text}");
        let error =
            text.lines().find(|line| line.starts_with("error: ")).unwrap_or_else(|| panic!("no error line: {text}"));
        assert!(!error.contains('\\') && !error.contains("  "), "a stray backslash or run of spaces: {error:?}");
        for noise in ["backtrace", "Stack", "Caused by", "Error: "] {
            assert!(!text.contains(noise), "{noise:?} in {text}");
        }
    }

    for subject in ["", "two words"] {
        let output =
            run_to_exit(grantd(dir.path()).args(["token", "--subject", subject, "--jwt-hs256-secret-file", "x"]));
        let text = all_output(&output);
        assert!(!output.status.success(), "{subject:?}: {text}");
        assert!(text.contains("--subject") && text.contains("not a user id"), "{subject:?}: {text}");
        assert!(output.stdout.is_empty(), "no token printed for {subject:?}");
    }
}

/// `serve --dev`: nothing to configure and nothing kept; it says so, needs no token, and
/// stays on loopback.
#[test]
fn serve_dev_is_in_memory_without_auth_on_loopback_only() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("serve.log");
    let mut server = spawn_logged(grantd(dir.path()).args(["serve", "--dev", "--listen", "127.0.0.1:0"]), &log);
    let addr = serving_address(&mut server, &log);
    let logged = std::fs::read_to_string(&log).expect("read log");
    assert!(logged.contains("DEVELOPMENT MODE"), "a banner says what --dev means: {logged}");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let channel = Channel::from_shared(format!("http://{addr}")).expect("uri").connect().await.expect("connect");
        let mut anyone = DirectoryServiceClient::new(InterceptedService::new(channel, Bearer::none()));
        anyone
            .create_organization(pb::CreateOrganizationRequest { id: "acme".into(), display_name: String::new() })
            .await
            .expect("no token needed");
        let listed = anyone.list_organizations(pb::ListOrganizationsRequest::default()).await.expect("list");
        assert_eq!(listed.into_inner().organizations.len(), 1);
    });
    drop(server);
    let files: Vec<_> =
        std::fs::read_dir(dir.path()).expect("read dir").map(|e| e.expect("entry").file_name()).collect();
    assert_eq!(files, vec![std::ffi::OsString::from("serve.log")], "nothing kept on disk");

    let output = run_to_exit(grantd(dir.path()).args(["serve", "--dev", "--listen", "0.0.0.0:0"]));
    let text = all_output(&output);
    assert!(!output.status.success(), "{text}");
    assert!(text.contains("loopback"), "{text}");
}

/// The first start on a brand-new PostgreSQL database logs no warnings and none of
/// PostgreSQL's notices (migrations create their bookkeeping table `IF NOT EXISTS`).
#[test]
fn first_start_on_a_new_postgres_database_is_quiet() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let Some((url, _)) = runtime.block_on(common::create_postgres_database("grantd_cli_first_start")) else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let secret = dir.path().join("grantd.secret");
    std::fs::write(&secret, "a-secret-of-more-than-thirty-two-bytes-for-this-test").expect("write secret");
    let log = dir.path().join("serve.log");
    let mut server = spawn_logged(
        grantd(dir.path())
            .args(["serve", "--listen", "127.0.0.1:0", "--database-url", &url])
            .env("GRANTD_JWT_HS256_SECRET_FILE", &secret)
            .env_remove("RUST_LOG"),
        &log,
    );
    serving_address(&mut server, &log);
    drop(server);
    let logged = std::fs::read_to_string(&log).expect("read log");
    for noise in ["already exists", "WARN", "ERROR"] {
        assert!(!logged.contains(noise), "{noise:?} logged on a first start: {logged}");
    }
}

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// `grantd` in `dir`, with none of the GRANTD_* variables of the test's environment.
fn grantd(dir: &Path) -> Command {
    let mut command = Command::new(GRANTD);
    command.current_dir(dir).env("RUST_LOG", "info").env_remove("RUST_LOG_STYLE");
    for var in GRANTD_VARS {
        command.env_remove(var);
    }
    command
}

/// Runs a command expected to exit by itself; kills it after 30 s.
fn run_to_exit(command: &mut Command) -> Output {
    let mut child =
        KillOnDrop(command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if child.0.try_wait().expect("try_wait").is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "grantd did not exit within 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The child has exited; collect what it wrote.
    let read = |pipe: Option<&mut dyn Read>| {
        let mut buffer = Vec::new();
        if let Some(pipe) = pipe {
            pipe.read_to_end(&mut buffer).expect("read output");
        }
        buffer
    };
    let stdout = read(child.0.stdout.as_mut().map(|pipe| pipe as &mut dyn Read));
    let stderr = read(child.0.stderr.as_mut().map(|pipe| pipe as &mut dyn Read));
    let status = child.0.wait().expect("wait");
    Output { status, stdout, stderr }
}

fn all_output(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// Starts a long-running command writing stdout and stderr to `log`.
fn spawn_logged(command: &mut Command, log: &Path) -> KillOnDrop {
    let file = File::create(log).expect("log file");
    let child = command
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("clone log"))
        .stderr(file)
        .spawn()
        .expect("spawn grantd");
    KillOnDrop(child)
}

/// The address grantd logs once it serves. grantd binds port 0 itself: a port picked by
/// the test and released before grantd binds it can be taken meanwhile, and a connect
/// to a free local port can even connect to itself.
fn serving_address(server: &mut KillOnDrop, log: &Path) -> SocketAddr {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let address = text
            .lines()
            .find_map(|line| line.split_once(" serving address=")?.1.split_whitespace().next()?.parse().ok());
        if let Some(address) = address {
            return address;
        }
        if let Some(status) = server.0.try_wait().expect("try_wait") {
            panic!("grantd exited ({status}) before serving: {text}");
        }
        assert!(Instant::now() < deadline, "grantd (pid {}) is not serving after 60 s: {text}", server.0.id());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `grantd token` in `dir`: the printed token.
fn mint(dir: &Path, args: &[&str]) -> String {
    let output = run_to_exit(grantd(dir).arg("token").args(args));
    assert!(output.status.success(), "grantd token {args:?}: {}", all_output(&output));
    String::from_utf8(output.stdout).expect("utf-8").trim().to_owned()
}
