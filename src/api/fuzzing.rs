//! Entry points for fuzzing request validation (`fuzz/`, and the bounded run in
//! `tests/fuzz_validation.rs`): arbitrary bytes decoded as requests must be either
//! rejected with a status or turned into a command, never panic.

use prost::Message;

use super::{grant_service, pb};
use crate::domain::page::Page;

/// Decodes `data` as each request type with a standalone validator and validates it.
pub fn validate(data: &[u8]) {
    if let Ok(request) = pb::AddUserPermissionsRequest::decode(data) {
        let pb::AddUserPermissionsRequest { organization_id, user_id, permission_ids, permission_names, resource } =
            request;
        let _ = grant_service::change_command(
            &organization_id,
            &user_id,
            &permission_ids,
            &permission_names,
            resource.as_ref(),
        );
    }
    if let Ok(request) = pb::RemoveResourcePermissionsRequest::decode(data) {
        let _ = grant_service::remove_resources_command(request);
    }
    if let Ok(request) = pb::ListUserPermissionsRequest::decode(data)
        && let Ok(page) = Page::parse(request.page_size, &request.page_token)
    {
        let _ = page.after(&request.organization_id, 3);
    }
}
