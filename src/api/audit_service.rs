use std::pin::Pin;

use tokio_stream::{Stream, StreamExt, wrappers::ReceiverStream};
use tonic::{Request, Response, Status};

use super::{context::RequestContext, convert, pb, validate::Violations};
use crate::{
    domain::{OrganizationId, page::page_size},
    service::Audit,
};

pub struct AuditApi {
    audit: Audit,
}

impl AuditApi {
    pub fn new(audit: Audit) -> Self {
        Self { audit }
    }
}

#[tonic::async_trait]
impl pb::audit_service_server::AuditService for AuditApi {
    type WatchChangesStream = Pin<Box<dyn Stream<Item = Result<pb::WatchChangesResponse, Status>> + Send>>;

    async fn watch_changes(
        &self,
        request: Request<pb::WatchChangesRequest>,
    ) -> Result<Response<Self::WatchChangesStream>, Status> {
        let (ctx, request) = RequestContext::open("WatchChanges", request)?;
        let actor = ctx.actor.clone();
        ctx.reply(async {
            let pb::WatchChangesRequest { after_revision, organization_id } = request;
            let mut v = Violations::default();
            let organization_id = if organization_id.is_empty() {
                None
            } else {
                let Some(id) = v.parse("organization_id", &organization_id, OrganizationId::parse) else {
                    return Err(v.into_error());
                };
                Some(id)
            };
            let after = i64::try_from(after_revision).unwrap_or(i64::MAX);
            let changes = self.audit.watch(actor, after, organization_id).await?;
            let stream = ReceiverStream::new(changes).map(|change| match change {
                Ok(change) => Ok(pb::WatchChangesResponse { change: Some(change.into()) }),
                Err(err) => Err(Status::from(err)),
            });
            Ok(Box::pin(stream) as Self::WatchChangesStream)
        })
        .await
    }

    async fn list_changes(
        &self,
        request: Request<pb::ListChangesRequest>,
    ) -> Result<Response<pb::ListChangesResponse>, Status> {
        let (ctx, request) = RequestContext::open("ListChanges", request)?;
        let actor = ctx.actor.clone();
        ctx.reply(async {
            let pb::ListChangesRequest { after_revision, organization_id, page_size: raw_page_size } = request;
            let mut v = Violations::default();
            let organization_id = if organization_id.is_empty() {
                Some(None)
            } else {
                v.parse("organization_id", &organization_id, OrganizationId::parse).map(Some)
            };
            let limit = page_size(raw_page_size).map_err(|e| v.add(e.field, e.description)).ok();
            let (Some(organization_id), Some(limit)) = (organization_id, limit) else { return Err(v.into_error()) };
            let after = i64::try_from(after_revision).unwrap_or(i64::MAX);
            let (changes, latest) = self.audit.list_changes(actor, after, organization_id.as_ref(), limit).await?;
            Ok(pb::ListChangesResponse {
                changes: changes.into_iter().map(Into::into).collect(),
                latest_revision: convert::revision(latest),
            })
        })
        .await
    }
}
