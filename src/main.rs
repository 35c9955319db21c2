use std::{fs, process::ExitCode, sync::Arc, time::Duration};

use anyhow::{Context, bail};
use clap::Parser;
use grantd::{
    auth::{self, Authenticator, TokenRequest, Verifier},
    cli,
    config::{Cli, Command, HealthArgs, LogFormat, MigrateAction, ServeArgs, TokenArgs},
    metrics,
    server::{self, ServerOptions, TlsOptions},
    storage::{self, PoolOptions},
    telemetry,
};
use tokio::{net::TcpListener, sync::watch};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

/// glibc's malloc was a large share of grantd's CPU time under load; mimalloc answers
/// more checks per second.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How often key files (secret, PEM, JWKS) are read again, for rotation.
const KEY_RELOAD_INTERVAL: Duration = Duration::from_secs(30);

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse().command).await {
        Ok(code) => code,
        Err(err) => {
            // The chain of causes on one line, never a backtrace (RUST_BACKTRACE is often
            // set on a Rust developer's machine, and an operator's mistake is no crash).
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve(args) => serve(*args).await?,
        Command::Token(args) => {
            let token = token(&args)?;
            println!("{}", if args.console { args.console_link(&token) } else { token });
        }
        Command::Export(args) => return cli::export::run(args).await,
        Command::Import(args) => return cli::import::run(args).await,
        Command::Health(args) => {
            if !health(&args).await? {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Migrate { action, database } => {
            let _telemetry = telemetry::init(LogFormat::Text);
            let db = storage::connect(&database.database_url, &database.pool_options())
                .await
                .context("cannot open the database")?;
            match action {
                MigrateAction::Up => storage::migrate_up(&db).await?,
                MigrateAction::Down { steps } => storage::migrate_down(&db, Some(steps)).await?,
                MigrateAction::Status => {
                    for (name, applied) in storage::migrate_status(&db).await? {
                        println!("{} {name}", if applied { "applied" } else { "pending" });
                    }
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn serve(mut args: ServeArgs) -> anyhow::Result<()> {
    let _telemetry = telemetry::init(args.log_format);
    if args.dev {
        args.apply_dev_mode();
        tracing::warn!(
            listen = %args.listen,
            "DEVELOPMENT MODE (--dev): data lives in memory and is gone when grantd stops; there is no \
             authentication, every caller is an administrator; loopback only. Call it with grpcurl -plaintext."
        );
    }
    let authenticator = authenticator(&args)?;
    let tls = match (&args.tls.tls_cert, &args.tls.tls_key) {
        (Some(cert), Some(key)) => Some(TlsOptions {
            cert: fs::read(cert).with_context(|| format!("cannot read {}", cert.display()))?,
            key: fs::read(key).with_context(|| format!("cannot read {}", key.display()))?,
            client_ca: match &args.tls.tls_client_ca {
                Some(ca) => Some(fs::read(ca).with_context(|| format!("cannot read {}", ca.display()))?),
                None => None,
            },
        }),
        _ => None,
    };
    let db = storage::connect(&args.database.database_url, &args.database.pool_options())
        .await
        .context("cannot open the database")?;
    storage::migrate_up(&db).await.context("cannot migrate the database")?;
    // A second `connect` to an in-memory SQLite URL would open a second, empty database;
    // the request pool's connections share one, so background work uses them.
    let background_db = if storage::is_in_memory(&args.database.database_url) {
        None
    } else {
        let background_pool = PoolOptions { max_connections: 2, ..args.database.pool_options() };
        let background = storage::connect(&args.database.database_url, &background_pool)
            .await
            .context("cannot open the database for background work")?;
        Some(background)
    };
    let listener = TcpListener::bind(args.listen).await.with_context(|| format!("cannot listen on {}", args.listen))?;
    let options = ServerOptions {
        max_message_bytes: args.max_message_bytes,
        request_timeout: Duration::from_millis(args.request_timeout_ms),
        max_concurrent_streams: args.max_concurrent_streams,
        connections: args.connection_limits(),
        max_in_flight: args.max_in_flight,
        queue_timeout: Duration::from_millis(args.queue_timeout_ms),
        watch_poll_interval: Duration::from_millis(args.watch_poll_ms.max(1)),
        watch_limits: args.watch_limits(),
        background_db,
        tls,
        console: args.console,
        ..ServerOptions::new(authenticator)
    };
    let grace = Duration::from_millis(args.shutdown_grace_ms);
    let (stopping_tx, stopping) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stopping_tx.send(true);
    });
    if let Some(address) = args.metrics_listen {
        let metrics_listener =
            TcpListener::bind(address).await.with_context(|| format!("cannot listen on {address} for metrics"))?;
        let stopped = stop_requested(stopping.clone());
        let db = db.clone();
        tokio::spawn(async move {
            if let Err(err) = metrics::serve(metrics_listener, db, stopped).await {
                tracing::error!(error = %err, "metrics listener failed");
            }
        });
    }
    let serving = server::serve(db, listener, options, stop_requested(stopping.clone()));
    let grace_over = async {
        stop_requested(stopping).await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        result = serving => result.map_err(|err| anyhow::anyhow!(err)),
        () = grace_over => {
            tracing::warn!(grace_ms = args.shutdown_grace_ms, "grace period over; exiting with requests still in flight");
            Ok(())
        }
    }
}

async fn stop_requested(mut stopping: watch::Receiver<bool>) {
    // An error means the sender is gone, which only happens once shutdown was sent.
    let _ = stopping.wait_for(|stop| *stop).await;
}

/// `grantd health`: exits 0 when the server reports SERVING, 1 otherwise.
async fn health(args: &HealthArgs) -> anyhow::Result<bool> {
    let channel = cli::connect(&args.connect, Some(Duration::from_millis(args.timeout_ms))).await?;
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest { service: args.service.clone() })
        .await
        .context("health check failed")?;
    let status = response.into_inner().status();
    println!("{}", status.as_str_name());
    Ok(status == ServingStatus::Serving)
}

/// Secure by default: tokens are always required unless --insecure-no-auth, and an
/// embedded database with no configured key gets a generated secret.
fn authenticator(args: &ServeArgs) -> anyhow::Result<Authenticator> {
    if args.insecure_no_auth {
        if !args.listen.ip().is_loopback() {
            bail!("--insecure-no-auth serves loopback addresses only, not {}", args.listen);
        }
        tracing::warn!("authentication is DISABLED (--insecure-no-auth): every caller is an anonymous administrator");
        return Ok(Authenticator::Disabled);
    }
    let mut keys = args.auth.key_config();
    if keys.is_empty() {
        let Some(path) = auth::default_secret_path(&args.database.database_url) else {
            bail!(
                "no token key configured: pass --jwt-hs256-secret-file, --jwt-public-key or --jwks-file \
                 (or --insecure-no-auth to experiment on loopback)"
            );
        };
        let created = auth::load_or_create_secret(&path).with_context(|| format!("cannot use {}", path.display()))?;
        tracing::info!(
            path = %path.display(),
            created,
            "tokens are verified with the HS256 secret in this file; mint one with `grantd token --subject <user> --admin`"
        );
        keys.hs256_secret_file = Some(path);
    }
    let verifier = Arc::new(
        Verifier::new(keys, args.auth.jwt_issuer.clone(), args.auth.jwt_audience.clone())
            .map_err(|err| anyhow::anyhow!(err))?,
    );
    let reloading = verifier.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(KEY_RELOAD_INTERVAL).await;
            if let Err(err) = reloading.reload() {
                tracing::warn!(error = %err, "cannot reload token keys; keeping the previous ones");
            }
        }
    });
    Ok(Authenticator::Tokens(verifier))
}

/// Signs with the HS256 secret that `serve`, given the same flags, verifies with: the
/// configured file, else the one generated beside the embedded database.
fn token(args: &TokenArgs) -> anyhow::Result<String> {
    let keys = args.auth.key_config();
    let path = match keys.hs256_secret_file {
        Some(path) => path,
        None if !keys.is_empty() => bail!(
            "grantd token signs with an HS256 secret (--jwt-hs256-secret-file); a server that verifies with \
             public keys or a JWKS accepts tokens from the issuer that holds their private keys"
        ),
        None => match auth::default_secret_path(&args.database_url) {
            Some(path) => path,
            None => bail!(
                "pass --jwt-hs256-secret-file (or GRANTD_JWT_HS256_SECRET_FILE), the secret the server verifies \
                 with: {} is not an embedded SQLite file with a generated secret beside it",
                args.database_url
            ),
        },
    };
    let secret = auth::secret_bytes(&path).with_context(|| {
        format!("cannot read the secret {} (start `grantd serve` once to create it)", path.display())
    })?;
    let request = TokenRequest {
        subject: args.subject.clone(),
        admin: args.admin,
        ttl: args.ttl,
        organizations: args.organization_scope.clone(),
        issuer: args.auth.jwt_issuer.clone(),
        audience: args.auth.jwt_audience.clone(),
    };
    Ok(auth::mint(&secret, &request)?)
}

/// Resolves on SIGINT or SIGTERM; the server then stops accepting and drains.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {}
        _ = terminate => {}
    }
    tracing::info!("shutdown requested; finishing in-flight requests");
}
