use anyhow::Context;
use clap::Parser;
use grantd::{
    config::{Cli, Command, LogFormat, MigrateAction, ServeArgs},
    server, storage,
};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Serve(args) => serve(args).await,
        Command::Migrate { action, database } => {
            init_tracing(LogFormat::Text);
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
            Ok(())
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    init_tracing(args.log_format);
    let db = storage::connect(&args.database.database_url, &args.database.pool_options())
        .await
        .context("cannot open the database")?;
    storage::migrate_up(&db).await.context("cannot migrate the database")?;
    let listener = TcpListener::bind(args.listen).await.with_context(|| format!("cannot listen on {}", args.listen))?;
    server::serve(db, listener, args.server_options(), shutdown_signal()).await.map_err(|err| anyhow::anyhow!(err))
}

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
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
