//! `grantd import --from auth0`: the JSON array Auth0's Management API answers for
//! `GET /api/v2/users/{id}/permissions`, as grantd lines.
//!
//! Each entry's `permission_name` becomes a catalog permission (its `description`
//! kept) granted to the user on the resource `{type: "api", id:
//! resource_server_identifier}`: Auth0 scopes a permission to one API. The organization
//! and the membership are created when missing.

use serde::Deserialize;

use super::jsonl::{GrantLine, Line, MembershipLine, OrganizationLine, PermissionLine, ResourceLine};

/// The resource type an Auth0 API becomes.
pub const API_RESOURCE_TYPE: &str = "api";

/// One entry of Auth0's answer; fields grantd has no use for (`resource_server_name`,
/// `sources`) are read past.
#[derive(Debug, Deserialize)]
struct Auth0Permission {
    permission_name: String,
    #[serde(default)]
    description: String,
    resource_server_identifier: String,
}

/// The lines for `user_id`'s permissions in `organization_id`: the organization, the
/// membership, then a permission and a grant per entry. Errors name the entry.
pub fn lines(answer: &str, organization_id: &str, user_id: &str) -> anyhow::Result<Vec<Line>> {
    let entries: Vec<serde_json::Value> = serde_json::from_str(answer)
        .map_err(|err| anyhow::anyhow!("not the JSON array Auth0 answers for a user's permissions: {err}"))?;
    let mut lines = vec![
        Line::Organization(OrganizationLine {
            id: organization_id.to_owned(),
            display_name: String::new(),
            created_at: None,
        }),
        Line::Membership(MembershipLine {
            organization_id: organization_id.to_owned(),
            user_id: user_id.to_owned(),
            added_at: None,
            added_by: None,
        }),
    ];
    for (index, entry) in entries.into_iter().enumerate() {
        let entry: Auth0Permission =
            serde_json::from_value(entry).map_err(|err| anyhow::anyhow!("entry {index}: {err}"))?;
        lines.push(Line::Permission(PermissionLine {
            name: entry.permission_name.clone(),
            description: entry.description,
            created_at: None,
        }));
        lines.push(Line::Grant(GrantLine {
            organization_id: organization_id.to_owned(),
            user_id: user_id.to_owned(),
            permission: entry.permission_name,
            resource: Some(ResourceLine { kind: API_RESOURCE_TYPE.to_owned(), id: entry.resource_server_identifier }),
            granted_at: None,
            granted_by: None,
        }));
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth0_permissions_become_grants_on_their_api() {
        let answer = r#"[
          {"permission_name": "read:reports", "description": "Read reports",
           "resource_server_name": "Reports API", "resource_server_identifier": "https://reports.example.com/",
           "sources": [{"source_id": "", "source_name": "", "source_type": "DIRECT"}]}
        ]"#;
        let read = lines(answer, "acme", "auth0|alice").expect("an Auth0 answer");
        assert_eq!(read.len(), 4);
        assert_eq!(
            read[3],
            Line::Grant(GrantLine {
                organization_id: "acme".into(),
                user_id: "auth0|alice".into(),
                permission: "read:reports".into(),
                resource: Some(ResourceLine { kind: "api".into(), id: "https://reports.example.com/".into() }),
                granted_at: None,
                granted_by: None,
            })
        );
        assert!(
            lines(r#"[{"description": "no name"}]"#, "acme", "u").expect_err("no name").to_string().contains("entry 0")
        );
    }
}
