use tonic::{Request, Response, Status};

use super::{context::RequestContext, convert, pb, validate::Violations};
use crate::{
    domain::{OrganizationId, PermissionName, UserId, check_description, check_display_name},
    service::Directory,
};

pub struct DirectoryApi {
    directory: Directory,
}

impl DirectoryApi {
    pub fn new(directory: Directory) -> Self {
        Self { directory }
    }
}

#[tonic::async_trait]
impl pb::directory_service_server::DirectoryService for DirectoryApi {
    async fn create_organization(
        &self,
        request: Request<pb::CreateOrganizationRequest>,
    ) -> Result<Response<pb::CreateOrganizationResponse>, Status> {
        let (ctx, request) = RequestContext::open("CreateOrganization", request)?;
        let actor = ctx.actor.clone();
        ctx.reply(async {
            let pb::CreateOrganizationRequest { id, display_name } = request;
            let mut v = Violations::default();
            let id = v.parse("id", &id, OrganizationId::parse);
            v.text("display_name", &display_name, check_display_name);
            let Some(id) = id else { return Err(v.into_error()) };
            v.finish()?;
            let (organization, revision) = self.directory.create_organization(actor, id, display_name).await?;
            Ok(pb::CreateOrganizationResponse {
                organization: Some(organization.into()),
                revision: convert::revision(revision),
            })
        })
        .await
    }

    async fn get_organization(
        &self,
        request: Request<pb::GetOrganizationRequest>,
    ) -> Result<Response<pb::GetOrganizationResponse>, Status> {
        let (ctx, request) = RequestContext::open("GetOrganization", request)?;
        let actor = ctx.actor.clone();
        ctx.reply(async {
            let pb::GetOrganizationRequest { id } = request;
            let mut v = Violations::default();
            let Some(id) = v.parse("id", &id, OrganizationId::parse) else { return Err(v.into_error()) };
            let organization = self.directory.get_organization(actor, &id).await?;
            Ok(pb::GetOrganizationResponse { organization: Some(organization.into()) })
        })
        .await
    }

    async fn list_organizations(
        &self,
        request: Request<pb::ListOrganizationsRequest>,
    ) -> Result<Response<pb::ListOrganizationsResponse>, Status> {
        let (ctx, request) = RequestContext::open("ListOrganizations", request)?;
        let actor = ctx.actor.clone();
        ctx.reply(async {
            let pb::ListOrganizationsRequest { page_size, page_token } = request;
            let mut v = Violations::default();
            let Some(page) = v.page(page_size, &page_token) else { return Err(v.into_error()) };
            let page = self.directory.list_organizations(actor, page).await?;
            Ok(pb::ListOrganizationsResponse {
                organizations: page.items.into_iter().map(Into::into).collect(),
                next_page_token: page.next_page_token,
            })
        })
        .await
    }

    async fn delete_organization(
        &self,
        request: Request<pb::DeleteOrganizationRequest>,
    ) -> Result<Response<pb::DeleteOrganizationResponse>, Status> {
        let (ctx, request) = RequestContext::open("DeleteOrganization", request)?;
        let actor = ctx.actor.clone();
        ctx.reply(async {
            let pb::DeleteOrganizationRequest { id, allow_missing } = request;
            let mut v = Violations::default();
            let Some(id) = v.parse("id", &id, OrganizationId::parse) else { return Err(v.into_error()) };
            let outcome = self.directory.delete_organization(actor, id, allow_missing).await?;
            Ok(pb::DeleteOrganizationResponse {
                removed_member_count: outcome.removed_member_count,
                removed_grant_count: outcome.removed_grant_count,
                revision: convert::revision(outcome.revision),
            })
        })
        .await
    }

    async fn add_user_to_organization(
        &self,
        request: Request<pb::AddUserToOrganizationRequest>,
    ) -> Result<Response<pb::AddUserToOrganizationResponse>, Status> {
        let (ctx, request) = RequestContext::open("AddUserToOrganization", request)?;
        let actor = ctx.actor.clone();
        ctx.reply(async {
            let pb::AddUserToOrganizationRequest { organization_id, user_id } = request;
            let mut v = Violations::default();
            let organization_id = v.parse("organization_id", &organization_id, OrganizationId::parse);
            let user_id = v.parse("user_id", &user_id, UserId::parse);
            let (Some(organization_id), Some(user_id)) = (organization_id, user_id) else {
                return Err(v.into_error());
            };
            let outcome = self.directory.add_user_to_organization(actor, organization_id, user_id).await?;
            Ok(pb::AddUserToOrganizationResponse {
                created: outcome.created,
                membership: Some(outcome.membership.into()),
                revision: convert::revision(outcome.revision),
            })
        })
        .await
    }

    async fn list_organization_members(
        &self,
        request: Request<pb::ListOrganizationMembersRequest>,
    ) -> Result<Response<pb::ListOrganizationMembersResponse>, Status> {
        let (ctx, request) = RequestContext::open("ListOrganizationMembers", request)?;
        let actor = ctx.actor.clone();
        ctx.reply(async {
            let pb::ListOrganizationMembersRequest { organization_id, page_size, page_token, at_least_revision } =
                request;
            let mut v = Violations::default();
            let organization_id = v.parse("organization_id", &organization_id, OrganizationId::parse);
            let page = v.page(page_size, &page_token);
            let (Some(organization_id), Some(page)) = (organization_id, page) else { return Err(v.into_error()) };
            let page =
                self.directory.list_organization_members(actor, &organization_id, page, at_least_revision).await?;
            Ok(pb::ListOrganizationMembersResponse {
                members: page.items.into_iter().map(Into::into).collect(),
                next_page_token: page.next_page_token,
            })
        })
        .await
    }

    async fn list_user_organizations(
        &self,
        request: Request<pb::ListUserOrganizationsRequest>,
    ) -> Result<Response<pb::ListUserOrganizationsResponse>, Status> {
        let (ctx, request) = RequestContext::open("ListUserOrganizations", request)?;
        let actor = ctx.actor.clone();
        ctx.reply(async {
            let pb::ListUserOrganizationsRequest { user_id, page_size, page_token, at_least_revision } = request;
            let mut v = Violations::default();
            let user_id = v.parse("user_id", &user_id, UserId::parse);
            let page = v.page(page_size, &page_token);
            let (Some(user_id), Some(page)) = (user_id, page) else { return Err(v.into_error()) };
            let page = self.directory.list_user_organizations(actor, &user_id, page, at_least_revision).await?;
            Ok(pb::ListUserOrganizationsResponse {
                memberships: page.items.into_iter().map(Into::into).collect(),
                next_page_token: page.next_page_token,
            })
        })
        .await
    }

    async fn create_permission(
        &self,
        request: Request<pb::CreatePermissionRequest>,
    ) -> Result<Response<pb::CreatePermissionResponse>, Status> {
        let (ctx, request) = RequestContext::open("CreatePermission", request)?;
        let actor = ctx.actor.clone();
        ctx.reply(async {
            let pb::CreatePermissionRequest { name, description } = request;
            let mut v = Violations::default();
            let name = v.parse("name", &name, PermissionName::parse);
            v.text("description", &description, check_description);
            let Some(name) = name else { return Err(v.into_error()) };
            v.finish()?;
            let (permission, revision) = self.directory.create_permission(actor, name, description).await?;
            Ok(pb::CreatePermissionResponse {
                permission: Some(permission.into()),
                revision: convert::revision(revision),
            })
        })
        .await
    }

    async fn get_permission(
        &self,
        request: Request<pb::GetPermissionRequest>,
    ) -> Result<Response<pb::GetPermissionResponse>, Status> {
        use pb::get_permission_request::Permission;
        let (ctx, request) = RequestContext::open("GetPermission", request)?;
        ctx.reply(async {
            let pb::GetPermissionRequest { permission } = request;
            let (id, name) = match &permission {
                Some(Permission::Id(id)) => (Some(id.as_str()), None),
                Some(Permission::Name(name)) => (None, Some(name.as_str())),
                None => (None, None),
            };
            let mut v = Violations::default();
            let Some(permission) = v.permission_ref("id", "name", id, name) else { return Err(v.into_error()) };
            let permission = self.directory.get_permission(&permission).await?;
            Ok(pb::GetPermissionResponse { permission: Some(permission.into()) })
        })
        .await
    }

    async fn list_permissions(
        &self,
        request: Request<pb::ListPermissionsRequest>,
    ) -> Result<Response<pb::ListPermissionsResponse>, Status> {
        let (ctx, request) = RequestContext::open("ListPermissions", request)?;
        ctx.reply(async {
            let pb::ListPermissionsRequest { page_size, page_token } = request;
            let mut v = Violations::default();
            let Some(page) = v.page(page_size, &page_token) else { return Err(v.into_error()) };
            let page = self.directory.list_permissions(page).await?;
            Ok(pb::ListPermissionsResponse {
                permissions: page.items.into_iter().map(Into::into).collect(),
                next_page_token: page.next_page_token,
            })
        })
        .await
    }

    async fn delete_permission(
        &self,
        request: Request<pb::DeletePermissionRequest>,
    ) -> Result<Response<pb::DeletePermissionResponse>, Status> {
        let (ctx, request) = RequestContext::open("DeletePermission", request)?;
        let actor = ctx.actor.clone();
        ctx.reply(async {
            let pb::DeletePermissionRequest { id, force, allow_missing } = request;
            let mut v = Violations::default();
            let Some(id) = v.uuid("id", &id) else { return Err(v.into_error()) };
            let outcome = self.directory.delete_permission(actor, id, force, allow_missing).await?;
            Ok(pb::DeletePermissionResponse {
                revoked_grant_count: outcome.revoked_grant_count,
                revision: convert::revision(outcome.revision),
            })
        })
        .await
    }
}
