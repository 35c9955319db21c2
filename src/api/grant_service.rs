use std::collections::HashSet;

use tonic::{Request, Response, Status};

use super::{context::RequestContext, convert, pb, validate::Violations};
use crate::{
    domain::{
        Error, MAX_BATCH, OrganizationId, UserId,
        commands::{
            ChangeUserPermissions, CheckPermission, ListUserPermissions, RemoveResourcePermissions,
            RemoveUserFromOrganization,
        },
    },
    service::Grants,
};

pub struct GrantApi {
    grants: Grants,
}

impl GrantApi {
    pub fn new(grants: Grants) -> Self {
        Self { grants }
    }
}

pub(super) fn change_command(
    organization_id: &str,
    user_id: &str,
    permission_ids: &[String],
    permission_names: &[String],
    resource: Option<&pb::Resource>,
) -> Result<ChangeUserPermissions, Error> {
    let mut v = Violations::default();
    let organization_id = v.parse("organization_id", organization_id, OrganizationId::parse);
    let user_id = v.parse("user_id", user_id, UserId::parse);
    let permissions = v.permission_refs(permission_ids, permission_names);
    let resource = v.resource("resource", resource, organization_id.as_ref());
    let (Some(organization_id), Some(user_id), Some(permissions), Some(resource)) =
        (organization_id, user_id, permissions, resource)
    else {
        return Err(v.into_error());
    };
    v.finish()?;
    Ok(ChangeUserPermissions { organization_id, user_id, permissions, resource })
}

pub(super) fn remove_resources_command(
    request: pb::RemoveResourcePermissionsRequest,
) -> Result<RemoveResourcePermissions, Error> {
    let pb::RemoveResourcePermissionsRequest { user_id, resources, all_users } = request;
    let mut v = Violations::default();
    let user_id = match (all_users, user_id.is_empty()) {
        (true, true) => None,
        (true, false) => {
            v.add("user_id", "must be empty when all_users is set");
            None
        }
        (false, _) => v.parse("user_id", &user_id, UserId::parse),
    };
    if resources.is_empty() {
        v.add("resources", "name at least one resource");
    }
    let mut parsed = Vec::with_capacity(resources.len().min(MAX_BATCH));
    let mut seen = HashSet::new();
    for (i, pb::OrganizationResource { r#type, id, organization_id }) in resources.iter().enumerate() {
        let field = format!("resources[{i}]");
        let organization = if r#type == crate::domain::ResourceType::ORGANIZATION && organization_id.is_empty() {
            v.parse(&format!("{field}.id"), id, OrganizationId::parse)
        } else if organization_id.is_empty() {
            v.add(format!("{field}.organization_id"), "required for a resource that is not an organization");
            None
        } else {
            v.parse(&format!("{field}.organization_id"), organization_id, OrganizationId::parse)
        };
        let Some(organization) = organization else { continue };
        if let Some(resource) = v.resource_in(&field, r#type, id, Some(&organization))
            && seen.insert((organization.clone(), resource.clone()))
        {
            parsed.push((organization, resource));
        }
    }
    if parsed.len() > MAX_BATCH {
        v.add("resources", format!("at most {MAX_BATCH} distinct resources per request, got {}", parsed.len()));
    }
    v.finish()?;
    Ok(RemoveResourcePermissions { user_id, resources: parsed })
}

#[tonic::async_trait]
impl pb::grant_service_server::GrantService for GrantApi {
    async fn add_user_permissions(
        &self,
        request: Request<pb::AddUserPermissionsRequest>,
    ) -> Result<Response<pb::AddUserPermissionsResponse>, Status> {
        let (ctx, request) = RequestContext::open("AddUserPermissions", request)?;
        let actor = ctx.actor.clone();
        ctx.reply(async {
            let pb::AddUserPermissionsRequest { organization_id, user_id, permission_ids, permission_names, resource } =
                request;
            let command =
                change_command(&organization_id, &user_id, &permission_ids, &permission_names, resource.as_ref())?;
            let outcome = self.grants.add_user_permissions(actor, command).await?;
            Ok(pb::AddUserPermissionsResponse {
                added: outcome.added.iter().map(ToString::to_string).collect(),
                already_held: outcome.already_held.iter().map(ToString::to_string).collect(),
                revision: convert::revision(outcome.revision),
            })
        })
        .await
    }

    async fn remove_user_permissions(
        &self,
        request: Request<pb::RemoveUserPermissionsRequest>,
    ) -> Result<Response<pb::RemoveUserPermissionsResponse>, Status> {
        let (ctx, request) = RequestContext::open("RemoveUserPermissions", request)?;
        let actor = ctx.actor.clone();
        ctx.reply(async {
            let pb::RemoveUserPermissionsRequest {
                organization_id,
                user_id,
                permission_ids,
                permission_names,
                resource,
            } = request;
            let command =
                change_command(&organization_id, &user_id, &permission_ids, &permission_names, resource.as_ref())?;
            let outcome = self.grants.remove_user_permissions(actor, command).await?;
            Ok(pb::RemoveUserPermissionsResponse {
                removed: outcome.removed.iter().map(ToString::to_string).collect(),
                not_held: outcome.not_held.iter().map(ToString::to_string).collect(),
                revision: convert::revision(outcome.revision),
            })
        })
        .await
    }

    async fn remove_resource_permissions(
        &self,
        request: Request<pb::RemoveResourcePermissionsRequest>,
    ) -> Result<Response<pb::RemoveResourcePermissionsResponse>, Status> {
        let (ctx, request) = RequestContext::open("RemoveResourcePermissions", request)?;
        let actor = ctx.actor.clone();
        ctx.reply(async {
            let command = remove_resources_command(request)?;
            let outcome = self.grants.remove_resource_permissions(actor, command).await?;
            Ok(pb::RemoveResourcePermissionsResponse {
                results: outcome
                    .removed
                    .into_iter()
                    .map(|((organization, resource), removed_count)| pb::ResourceRemoval {
                        resource: Some(pb::OrganizationResource {
                            r#type: resource.kind.as_str().to_owned(),
                            id: resource.id.into_string(),
                            organization_id: organization.into_string(),
                        }),
                        removed_count,
                    })
                    .collect(),
                revision: convert::revision(outcome.revision),
            })
        })
        .await
    }

    async fn remove_user_from_organization(
        &self,
        request: Request<pb::RemoveUserFromOrganizationRequest>,
    ) -> Result<Response<pb::RemoveUserFromOrganizationResponse>, Status> {
        let (ctx, request) = RequestContext::open("RemoveUserFromOrganization", request)?;
        let actor = ctx.actor.clone();
        ctx.reply(async {
            let pb::RemoveUserFromOrganizationRequest { organization_id, user_id, allow_missing } = request;
            let mut v = Violations::default();
            let organization_id = v.parse("organization_id", &organization_id, OrganizationId::parse);
            let user_id = v.parse("user_id", &user_id, UserId::parse);
            let (Some(organization_id), Some(user_id)) = (organization_id, user_id) else {
                return Err(v.into_error());
            };
            let command = RemoveUserFromOrganization { organization_id, user_id, allow_missing };
            let outcome = self.grants.remove_user_from_organization(actor, command).await?;
            Ok(pb::RemoveUserFromOrganizationResponse {
                removed_grant_count: outcome.removed_grant_count,
                revision: convert::revision(outcome.revision),
            })
        })
        .await
    }

    async fn list_user_permissions(
        &self,
        request: Request<pb::ListUserPermissionsRequest>,
    ) -> Result<Response<pb::ListUserPermissionsResponse>, Status> {
        let (ctx, request) = RequestContext::open("ListUserPermissions", request)?;
        let actor = ctx.actor.clone();
        ctx.reply(async {
            let pb::ListUserPermissionsRequest {
                organization_id,
                user_id,
                resource,
                page_size,
                page_token,
                at_least_revision,
            } = request;
            let mut v = Violations::default();
            let organization_id = v.parse("organization_id", &organization_id, OrganizationId::parse);
            let user_id = v.parse("user_id", &user_id, UserId::parse);
            let page = v.page(page_size, &page_token);
            let filter = match &resource {
                None => Some(None),
                Some(pb::Resource { r#type, id }) if id.is_empty() => {
                    v.parse("resource.type", r#type, crate::domain::ResourceType::parse).map(|kind| Some((kind, None)))
                }
                Some(resource) => {
                    v.resource("resource", Some(resource), organization_id.as_ref()).map(|r| Some((r.kind, Some(r.id))))
                }
            };
            let (Some(organization_id), Some(user_id), Some(page), Some(filter)) =
                (organization_id, user_id, page, filter)
            else {
                return Err(v.into_error());
            };
            let command = ListUserPermissions { organization_id, user_id, filter, page, at_least_revision };
            let page = self.grants.list_user_permissions(actor, command).await?;
            Ok(pb::ListUserPermissionsResponse {
                grants: page.items.into_iter().map(Into::into).collect(),
                next_page_token: page.next_page_token,
            })
        })
        .await
    }

    async fn check_permission(
        &self,
        request: Request<pb::CheckPermissionRequest>,
    ) -> Result<Response<pb::CheckPermissionResponse>, Status> {
        use pb::check_permission_request::Permission;
        let (ctx, request) = RequestContext::open("CheckPermission", request)?;
        let actor = ctx.actor.clone();
        ctx.reply(async {
            let pb::CheckPermissionRequest { organization_id, user_id, permission, resource, at_least_revision } =
                request;
            let mut v = Violations::default();
            let organization_id = v.parse("organization_id", &organization_id, OrganizationId::parse);
            let user_id = v.parse("user_id", &user_id, UserId::parse);
            let (id, name) = match &permission {
                Some(Permission::PermissionId(id)) => (Some(id.as_str()), None),
                Some(Permission::PermissionName(name)) => (None, Some(name.as_str())),
                None => (None, None),
            };
            let permission = v.permission_ref("permission_id", "permission_name", id, name);
            let resource = v.resource("resource", resource.as_ref(), organization_id.as_ref());
            let (Some(organization_id), Some(user_id), Some(permission), Some(resource)) =
                (organization_id, user_id, permission, resource)
            else {
                return Err(v.into_error());
            };
            let command = CheckPermission { organization_id, user_id, permission, resource, at_least_revision };
            let outcome = self.grants.check_permission(actor, command).await?;
            Ok(pb::CheckPermissionResponse {
                allowed: outcome.matched.is_some(),
                matched: outcome.matched.map(Into::into),
                revision: convert::revision(outcome.revision),
            })
        })
        .await
    }
}
