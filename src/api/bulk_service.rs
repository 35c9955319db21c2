use std::pin::Pin;

use chrono::{DateTime, Utc};
use prost_types::Timestamp;
use tokio_stream::{Stream, StreamExt, wrappers::ReceiverStream};
use tonic::{Request, Response, Status, Streaming};

use super::{context::RequestContext, convert, pb, validate::Violations};
use crate::{
    domain::{
        Actor, Error, FieldViolation, OrganizationId, PermissionName, Result, UserId,
        bulk::{ImportRecord, MAX_IMPORT_BATCH, Positioned, Rejection},
        check_description, check_display_name,
    },
    service::{Bulk, ExportChunk, ExportItem, Rehearsal},
};

/// Rejections an import answers in full; the count covers them all.
const MAX_LISTED_REJECTIONS: usize = 1_000;

pub struct BulkApi {
    bulk: Bulk,
}

impl BulkApi {
    pub fn new(bulk: Bulk) -> Self {
        Self { bulk }
    }
}

#[tonic::async_trait]
impl pb::bulk_service_server::BulkService for BulkApi {
    type ExportGrantsStream = Pin<Box<dyn Stream<Item = Result<pb::ExportGrantsResponse, Status>> + Send>>;

    async fn export_grants(
        &self,
        request: Request<pb::ExportGrantsRequest>,
    ) -> Result<Response<Self::ExportGrantsStream>, Status> {
        let (ctx, request) = RequestContext::open("ExportGrants", request)?;
        let actor = ctx.actor.clone();
        ctx.reply(async {
            let pb::ExportGrantsRequest { organization_id, cursor } = request;
            let mut v = Violations::default();
            let Some(organization) = v.optional_organization("organization_id", &organization_id) else {
                return Err(v.into_error());
            };
            let chunks = self.bulk.export(actor, organization, &cursor).await?;
            let stream = ReceiverStream::new(chunks).map(|chunk| chunk.map(export_message).map_err(Status::from));
            Ok(Box::pin(stream) as Self::ExportGrantsStream)
        })
        .await
    }

    async fn import_grants(
        &self,
        request: Request<Streaming<pb::ImportGrantsRequest>>,
    ) -> Result<Response<pb::ImportGrantsResponse>, Status> {
        let (ctx, mut batches) = RequestContext::open("ImportGrants", request)?;
        let actor = ctx.actor.clone();
        ctx.reply(async move {
            self.bulk.authorize(&actor)?;
            let mut answer = pb::ImportGrantsResponse::default();
            let mut position = 0u64;
            // The first message decides; a dry run keeps one transaction for them all.
            let mut dry_run = None;
            let mut rehearsal = None;
            let patience = self.bulk.patience;
            while let Some(batch) = next_batch(&mut batches, patience).await? {
                let pb::ImportGrantsRequest { records, dry_run: this_dry_run } = batch;
                match dry_run {
                    None => {
                        dry_run = Some(this_dry_run);
                        if this_dry_run {
                            rehearsal = Some(self.bulk.rehearse(actor.clone()).await?);
                        }
                    }
                    Some(first) if first != this_dry_run => {
                        return Err(
                            FieldViolation::new("dry_run", "must be the same in every message of an import").into()
                        );
                    }
                    Some(_) => {}
                }
                if records.len() > MAX_IMPORT_BATCH {
                    return Err(FieldViolation::new(
                        "records",
                        format!("at most {MAX_IMPORT_BATCH} records per message, got {}", records.len()),
                    )
                    .into());
                }
                let size = records.len() as u64;
                let writer = match rehearsal.as_mut() {
                    Some(rehearsal) => Writer::Rehearsal(rehearsal),
                    None => Writer::Commit(&self.bulk, &actor),
                };
                import_batch(writer, records, position, &mut answer).await?;
                position += size;
            }
            if rehearsal.is_none() {
                self.bulk.imported(answer.added).await?;
            }
            if answer.revision == 0 {
                answer.revision = convert::revision(self.bulk.current_revision().await?);
            }
            Ok(answer)
        })
        .await
    }
}

/// The client's next batch, waited for at most `patience`. A stream that broke off or
/// stalled is no request we can finish; what it sent so far stays.
async fn next_batch(
    batches: &mut Streaming<pb::ImportGrantsRequest>,
    patience: std::time::Duration,
) -> Result<Option<pb::ImportGrantsRequest>> {
    match tokio::time::timeout(patience, batches.message()).await {
        Ok(Ok(batch)) => Ok(batch),
        Ok(Err(status)) => {
            Err(FieldViolation::new("records", format!("the request stream broke off: {}", status.message())).into())
        }
        Err(_) => Err(Error::TimedOut(format!(
            "no batch arrived for {} ms; the batches before were written, run the import again to finish",
            patience.as_millis()
        ))),
    }
}

/// Where a batch goes: committed through the write path, or into a dry run.
enum Writer<'a> {
    Commit(&'a Bulk, &'a Actor),
    Rehearsal(&'a mut Rehearsal),
}

/// Validates and writes one batch, adding what happened to `answer`. A batch with a bad
/// record writes nothing; its bad records are rejected and the others not written.
async fn import_batch(
    writer: Writer<'_>,
    records: Vec<pb::BulkRecord>,
    first: u64,
    answer: &mut pb::ImportGrantsResponse,
) -> Result<()> {
    let size = records.len() as u64;
    let mut valid = Vec::with_capacity(records.len());
    let mut rejections = Vec::new();
    for (position, record) in (first..).zip(records) {
        match import_record(record) {
            Ok(record) => valid.push(Positioned { position, record }),
            Err(FieldViolation { field, description }) => {
                rejections.push(Rejection { position, field, reason: description })
            }
        }
    }
    if rejections.is_empty() {
        let written = match writer {
            Writer::Commit(bulk, actor) => bulk.import_batch(actor.clone(), valid).await.map(|(c, r)| (c, Some(r))),
            Writer::Rehearsal(rehearsal) => rehearsal.batch(valid).await.map(|counts| (counts, None)),
        };
        match written {
            Ok((counts, revision)) => {
                answer.added += counts.added;
                answer.already_held += counts.already_held;
                if let Some(revision) = revision {
                    answer.revision = answer.revision.max(convert::revision(revision));
                }
                return Ok(());
            }
            Err(Error::Rejected(found)) => rejections = found,
            Err(err) => return Err(err),
        }
    }
    answer.rejected += rejections.len() as u64;
    answer.not_written += size - rejections.len() as u64;
    let room = MAX_LISTED_REJECTIONS.saturating_sub(answer.rejections.len());
    answer.rejections.extend(rejections.into_iter().take(room).map(|r| pb::ImportRejection {
        position: r.position,
        field: r.field,
        reason: r.reason,
    }));
    Ok(())
}

/// One record, validated; the violation names the field within the record.
fn import_record(record: pb::BulkRecord) -> Result<ImportRecord, FieldViolation> {
    use pb::bulk_record::Record;
    let mut v = Violations::default();
    let parsed = match record.record {
        None => {
            v.add("record", "set one of organization, permission, membership or grant");
            None
        }
        Some(Record::Organization(o)) => {
            let id = v.parse("organization.id", &o.id, OrganizationId::parse);
            v.text("organization.display_name", &o.display_name, check_display_name);
            let created_at = time(&mut v, "organization.created_at", o.created_at.as_ref());
            id.zip(created_at).map(|(id, created_at)| ImportRecord::Organization {
                id,
                display_name: o.display_name,
                created_at,
            })
        }
        Some(Record::Permission(p)) => {
            let name = v.parse("permission.name", &p.name, PermissionName::parse);
            v.text("permission.description", &p.description, check_description);
            let created_at = time(&mut v, "permission.created_at", p.created_at.as_ref());
            name.zip(created_at).map(|(name, created_at)| ImportRecord::Permission {
                name,
                description: p.description,
                created_at,
            })
        }
        Some(Record::Membership(m)) => {
            let organization_id = v.parse("membership.organization_id", &m.organization_id, OrganizationId::parse);
            let user_id = v.parse("membership.user_id", &m.user_id, UserId::parse);
            let added_at = time(&mut v, "membership.added_at", m.added_at.as_ref());
            let added_by = author(&mut v, "membership.added_by", &m.added_by);
            match (organization_id, user_id, added_at, added_by) {
                (Some(organization_id), Some(user_id), Some(added_at), Some(added_by)) => {
                    Some(ImportRecord::Membership { organization_id, user_id, added_at, added_by })
                }
                _ => None,
            }
        }
        Some(Record::Grant(g)) => {
            let organization_id = v.parse("grant.organization_id", &g.organization_id, OrganizationId::parse);
            let user_id = v.parse("grant.user_id", &g.user_id, UserId::parse);
            let permission_name = v.parse("grant.permission_name", &g.permission_name, PermissionName::parse);
            let resource = v.resource("grant.resource", g.resource.as_ref(), organization_id.as_ref());
            let granted_at = time(&mut v, "grant.granted_at", g.granted_at.as_ref());
            let granted_by = author(&mut v, "grant.granted_by", &g.granted_by);
            match (organization_id, user_id, permission_name, resource, granted_at, granted_by) {
                (
                    Some(organization_id),
                    Some(user_id),
                    Some(permission_name),
                    Some(resource),
                    Some(granted_at),
                    Some(granted_by),
                ) => Some(ImportRecord::Grant {
                    organization_id,
                    user_id,
                    permission_name,
                    resource,
                    granted_at,
                    granted_by,
                }),
                _ => None,
            }
        }
    };
    match (parsed, v.into_first()) {
        (Some(record), None) => Ok(record),
        (_, Some(violation)) => Err(violation),
        (None, None) => Err(FieldViolation::new("record", "could not be read")),
    }
}

/// An optional timestamp: `Some(None)` when absent, `None` when out of range.
fn time(v: &mut Violations, field: &str, at: Option<&Timestamp>) -> Option<Option<DateTime<Utc>>> {
    let Some(at) = at else { return Some(None) };
    match convert::time_from_wire(at) {
        Some(at) => Some(Some(at)),
        None => {
            v.add(field, "is not a valid timestamp");
            None
        }
    }
}

/// An optional author: `Some(None)` when empty, `None` when not a user id.
fn author(v: &mut Violations, field: &str, value: &str) -> Option<Option<UserId>> {
    if value.is_empty() { Some(None) } else { v.parse(field, value, UserId::parse).map(Some) }
}

fn export_message(chunk: ExportChunk) -> pb::ExportGrantsResponse {
    use pb::bulk_record::Record;
    let records = chunk
        .items
        .into_iter()
        .map(|item| pb::BulkRecord {
            record: Some(match item {
                ExportItem::Organization(o) => Record::Organization(o.into()),
                ExportItem::Permission(p) => Record::Permission(p.into()),
                ExportItem::Membership(m) => Record::Membership(m.into()),
                ExportItem::Grant(g) => Record::Grant(g.into()),
            }),
        })
        .collect();
    pb::ExportGrantsResponse { revision: convert::revision(chunk.revision), records, cursor: chunk.cursor }
}
