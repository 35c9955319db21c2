//! The floor for `add` on PostgreSQL: what an AddUserPermissions costs through this
//! stack alone (tonic, tokio, sqlx), with none of grantd's own work.
//!
//! `floor-server` answers AddUserPermissions by binding the request's fields straight
//! into grantd's add statement (`storage::adds::POSTGRES_ADD`, the statement pgbench's
//! ceiling runs too) on one PostgreSQL connection, and answers from its row. It checks no
//! token, validates nothing and goes through no sea-orm, no pool, no admission, no
//! tracing, no metrics and no task of its own per write; every other RPC is
//! unimplemented. The `floor` scenario loads it with the requests `add` sends, on the
//! data pgbench's ceiling writes (bench/sql/seed.sql). At one client its adds/s over
//! pgbench's is what these crates allow on the machine before any of grantd's own work.
//! Like grantd's kept connections, it drops its plans every `storage::PLAN_LIFETIME`:
//! pgbench plans afresh on each run's new connections, and a plan made when the tables
//! were small scans them whole as they grow.

use anyhow::Context;
use std::time::Instant;

use grantd::{
    api::pb::{
        AddUserPermissionsRequest, AddUserPermissionsResponse, CheckPermissionRequest, CheckPermissionResponse,
        ListUserPermissionsRequest, ListUserPermissionsResponse, RemoveResourcePermissionsRequest,
        RemoveResourcePermissionsResponse, RemoveUserFromOrganizationRequest, RemoveUserFromOrganizationResponse,
        RemoveUserPermissionsRequest, RemoveUserPermissionsResponse,
        grant_service_server::{GrantService, GrantServiceServer},
    },
    domain::model::ChangeKind,
    storage::{PLAN_LIFETIME, adds::POSTGRES_ADD},
};
use sqlx::{ConnectOptions, Executor, PgConnection, Row, postgres::PgConnectOptions};
use tokio::{net::TcpListener, sync::Mutex};
use tonic::{Request, Response, Status, transport::server::TcpIncoming};
use uuid::Uuid;

/// The organization, members and permission bench/sql/seed.sql creates for the ceilings.
pub const ORGANIZATION: &str = "ceiling";
pub const PERMISSION: &str = "ceiling-p0";
pub fn members() -> Vec<String> {
    (0..100).map(|u| format!("ceiling-u{u}")).collect()
}

/// Serves the floor on `listen` until the process is stopped.
pub async fn serve(listen: &str, database_url: &str) -> anyhow::Result<()> {
    // As grantd's write connections: one generic plan per statement (storage::connect).
    let options: PgConnectOptions = database_url.parse().context("--floor-db is not a PostgreSQL URL")?;
    let connection = options.options([("plan_cache_mode", "force_generic_plan")]).connect().await?;
    let listener = TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
    eprintln!("floor-server on {}", listener.local_addr()?);
    tonic::transport::Server::builder()
        .add_service(GrantServiceServer::new(Floor { connection: Mutex::new((connection, Instant::now())) }))
        .serve_with_incoming(TcpIncoming::from(listener).with_nodelay(Some(true)))
        .await?;
    Ok(())
}

/// One connection, with when its plans were made: the floor is measured with one client,
/// whose calls never overlap.
struct Floor {
    connection: Mutex<(PgConnection, Instant)>,
}

fn failed(err: sqlx::Error) -> Status {
    Status::internal(err.to_string())
}

#[tonic::async_trait]
impl GrantService for Floor {
    async fn add_user_permissions(
        &self,
        request: Request<AddUserPermissionsRequest>,
    ) -> Result<Response<AddUserPermissionsResponse>, Status> {
        let AddUserPermissionsRequest { organization_id, user_id, permission_ids, permission_names, resource } =
            request.into_inner();
        let resource = resource.unwrap_or_default();
        let ids = permission_ids
            .iter()
            .map(|id| Uuid::parse_str(id))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| Status::invalid_argument("permission_ids: not UUIDs"))?;
        let mut guard = self.connection.lock().await;
        let (connection, planned) = &mut *guard;
        if planned.elapsed() >= PLAN_LIFETIME {
            connection.execute("DISCARD PLANS").await.map_err(failed)?;
            *planned = Instant::now();
        }
        let row = sqlx::query(POSTGRES_ADD)
            .bind(&organization_id)
            .bind(&user_id)
            .bind(&resource.r#type)
            .bind(&resource.id)
            .bind(&ids)
            .bind(&permission_names)
            .bind(chrono::Utc::now())
            .bind("bench")
            .bind(Uuid::new_v4().to_string())
            .bind(ChangeKind::GrantAdded.code())
            .fetch_one(&mut *connection)
            .await
            .map_err(failed)?;
        drop(guard);
        let wanted: Vec<Uuid> = row.try_get("wanted").map_err(failed)?;
        let added: Vec<Uuid> = row.try_get("added").map_err(failed)?;
        let revision: Option<i64> = row.try_get("revision").map_err(failed)?;
        let already_held = wanted.iter().filter(|id| !added.contains(id)).map(ToString::to_string).collect();
        Ok(Response::new(AddUserPermissionsResponse {
            added: added.iter().map(ToString::to_string).collect(),
            already_held,
            revision: revision.and_then(|r| u64::try_from(r).ok()).unwrap_or(0),
        }))
    }

    async fn remove_user_permissions(
        &self,
        _: Request<RemoveUserPermissionsRequest>,
    ) -> Result<Response<RemoveUserPermissionsResponse>, Status> {
        Err(unimplemented())
    }

    async fn remove_resource_permissions(
        &self,
        _: Request<RemoveResourcePermissionsRequest>,
    ) -> Result<Response<RemoveResourcePermissionsResponse>, Status> {
        Err(unimplemented())
    }

    async fn remove_user_from_organization(
        &self,
        _: Request<RemoveUserFromOrganizationRequest>,
    ) -> Result<Response<RemoveUserFromOrganizationResponse>, Status> {
        Err(unimplemented())
    }

    async fn list_user_permissions(
        &self,
        _: Request<ListUserPermissionsRequest>,
    ) -> Result<Response<ListUserPermissionsResponse>, Status> {
        Err(unimplemented())
    }

    async fn check_permission(
        &self,
        _: Request<CheckPermissionRequest>,
    ) -> Result<Response<CheckPermissionResponse>, Status> {
        Err(unimplemented())
    }
}

fn unimplemented() -> Status {
    Status::unimplemented("the floor server answers AddUserPermissions only")
}
