use std::pin::Pin;

use tokio_stream::{Stream, StreamExt, wrappers::ReceiverStream};
use tonic::{Request, Response, Status};

use super::{context::RequestContext, convert, pb, validate::Violations};
use crate::service::Audit;

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
            let Some(organization_id) = v.optional_organization("organization_id", &organization_id) else {
                return Err(v.into_error());
            };
            let after = convert::revision_from_wire(after_revision);
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
            let organization_id = v.optional_organization("organization_id", &organization_id);
            let limit = v.page(raw_page_size, "").map(|page| page.size);
            let (Some(organization_id), Some(limit)) = (organization_id, limit) else { return Err(v.into_error()) };
            let after = convert::revision_from_wire(after_revision);
            let (changes, latest) = self.audit.list_changes(actor, after, organization_id.as_ref(), limit).await?;
            Ok(pb::ListChangesResponse {
                changes: changes.into_iter().map(Into::into).collect(),
                latest_revision: convert::revision(latest),
            })
        })
        .await
    }
}
