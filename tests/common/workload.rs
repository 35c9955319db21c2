//! The colliding write mix of the stress test (also the light load of the fault tests):
//! a small fixture of organizations, permissions and users, and random
//! AddUserPermissions / RemoveUserPermissions / RemoveResourcePermissions /
//! RemoveUserFromOrganization / AddUserToOrganization calls on it, each recorded as a
//! [`CallRecord`] with a unique `x-request-id`.
//!
//! Included with `#[path = "common/workload.rs"] mod workload;` next to `mod common;`,
//! `mod process;` and `mod invariants;`.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use grantd::api::pb;
use rand::{Rng, rngs::StdRng, seq::IndexedRandom};

use crate::{
    invariants::{CallRecord, Effect},
    process::{Clients, request},
};

/// The deadline of one call: far above any legitimate wait, so a hang shows as an error.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// What the writes collide on.
#[derive(Debug, Clone)]
pub struct Fixture {
    pub orgs: Vec<String>,
    pub users: Vec<String>,
    /// (id, name)
    pub permissions: Vec<(String, String)>,
    pub resources: Vec<(String, String)>,
}

/// Seeds `orgs` organizations, `permissions` permissions and `users` users who are
/// members of every organization; every call has a `seed-` request id.
pub async fn seed(clients: &Clients, tag: &str, orgs: usize, permissions: usize, users: usize) -> Fixture {
    let mut directory = clients.directory.clone();
    let orgs: Vec<String> = (0..orgs).map(|i| format!("{tag}-org-{i}")).collect();
    let users: Vec<String> = (0..users).map(|i| format!("{tag}|user-{i}")).collect();
    for org in &orgs {
        directory
            .create_organization(request(
                pb::CreateOrganizationRequest { id: org.clone(), display_name: format!("Org {org}") },
                &format!("seed-{org}"),
                CALL_TIMEOUT,
            ))
            .await
            .expect("seed organization");
    }
    let mut created = Vec::new();
    for i in 0..permissions {
        let name = format!("{tag}.p{i}");
        let permission = directory
            .create_permission(request(
                pb::CreatePermissionRequest { name: name.clone(), description: String::new() },
                &format!("seed-{name}"),
                CALL_TIMEOUT,
            ))
            .await
            .expect("seed permission")
            .into_inner()
            .permission
            .expect("permission");
        created.push((permission.id, name));
    }
    for org in &orgs {
        for user in &users {
            directory
                .add_user_to_organization(request(
                    pb::AddUserToOrganizationRequest { organization_id: org.clone(), user_id: user.clone() },
                    &format!("seed-{org}-{user}"),
                    CALL_TIMEOUT,
                ))
                .await
                .expect("seed member");
        }
    }
    let resources = vec![
        ("organization".to_owned(), String::new()),
        ("folder".to_owned(), "f1".to_owned()),
        ("folder".to_owned(), "f2".to_owned()),
        ("document".to_owned(), "d1".to_owned()),
    ];
    Fixture { orgs, users, permissions: created, resources }
}

impl Fixture {
    /// A resource of `org`: the request form (organization resources sometimes left
    /// out) and the stored form.
    fn resource(&self, rng: &mut StdRng, org: &str) -> (Option<pb::Resource>, (String, String)) {
        let (kind, id) = self.resources.choose(rng).expect("resources").clone();
        if kind == "organization" {
            let stored = (kind.clone(), org.to_owned());
            match rng.random_range(0..3) {
                0 => (None, stored),
                1 => (Some(pb::Resource { r#type: kind, id: String::new() }), stored),
                _ => (Some(pb::Resource { r#type: kind, id: org.to_owned() }), stored),
            }
        } else {
            (Some(pb::Resource { r#type: kind.clone(), id: id.clone() }), (kind, id))
        }
    }

    /// 1-3 permissions, some by id and some by name.
    fn permissions(&self, rng: &mut StdRng) -> (Vec<String>, Vec<String>) {
        let count = rng.random_range(1..=3);
        let mut ids = Vec::new();
        let mut names = Vec::new();
        for (id, name) in self.permissions.choose_multiple(rng, count) {
            if rng.random_bool(0.5) {
                ids.push(id.clone());
            } else {
                names.push(name.clone());
            }
        }
        (ids, names)
    }
}

/// Sends one random write and records it.
pub async fn random_op(
    clients: &mut Clients,
    fixture: &Fixture,
    rng: &mut StdRng,
    epoch: Instant,
    process: usize,
    request_id: String,
) -> CallRecord {
    let org = fixture.orgs.choose(rng).expect("orgs").clone();
    let user = fixture.users.choose(rng).expect("users").clone();
    let roll = rng.random_range(0..100);
    let sent = epoch.elapsed();
    let (rpc, outcome): (&'static str, Result<(u64, Effect), tonic::Status>) = if roll < 40 {
        let (resource, stored) = fixture.resource(rng, &org);
        let (permission_ids, permission_names) = fixture.permissions(rng);
        let message = pb::AddUserPermissionsRequest {
            organization_id: org.clone(),
            user_id: user.clone(),
            permission_ids,
            permission_names,
            resource,
        };
        let answer = clients.grants.add_user_permissions(request(message, &request_id, CALL_TIMEOUT)).await;
        (
            "AddUserPermissions",
            answer.map(|r| {
                let r = r.into_inner();
                (r.revision, Effect::PermissionsAdded { org, user, resource: stored, added: r.added })
            }),
        )
    } else if roll < 58 {
        let (resource, stored) = fixture.resource(rng, &org);
        let (permission_ids, permission_names) = fixture.permissions(rng);
        let message = pb::RemoveUserPermissionsRequest {
            organization_id: org.clone(),
            user_id: user.clone(),
            permission_ids,
            permission_names,
            resource,
        };
        let answer = clients.grants.remove_user_permissions(request(message, &request_id, CALL_TIMEOUT)).await;
        (
            "RemoveUserPermissions",
            answer.map(|r| {
                let r = r.into_inner();
                (r.revision, Effect::PermissionsRemoved { org, user, resource: stored, removed: r.removed })
            }),
        )
    } else if roll < 68 {
        let all_users = rng.random_bool(0.3);
        let count = rng.random_range(1..=2);
        let mut resources = Vec::new();
        for _ in 0..count {
            let org = fixture.orgs.choose(rng).expect("orgs").clone();
            let (_, (kind, id)) = fixture.resource(rng, &org);
            let organization_id = if kind == "organization" && rng.random_bool(0.5) { String::new() } else { org };
            resources.push(pb::OrganizationResource { r#type: kind, id, organization_id });
        }
        let message = pb::RemoveResourcePermissionsRequest {
            user_id: if all_users { String::new() } else { user },
            resources,
            all_users,
        };
        let answer = clients.grants.remove_resource_permissions(request(message, &request_id, CALL_TIMEOUT)).await;
        (
            "RemoveResourcePermissions",
            answer.map(|r| {
                let r = r.into_inner();
                let removed_count = r.results.iter().map(|x| x.removed_count).sum();
                (r.revision, Effect::ResourcePermissionsRemoved { removed_count })
            }),
        )
    } else if roll < 80 {
        let allow_missing = rng.random_bool(0.5);
        let message = pb::RemoveUserFromOrganizationRequest {
            organization_id: org.clone(),
            user_id: user.clone(),
            allow_missing,
        };
        let answer = clients.grants.remove_user_from_organization(request(message, &request_id, CALL_TIMEOUT)).await;
        (
            "RemoveUserFromOrganization",
            answer.map(|r| {
                let r = r.into_inner();
                (
                    r.revision,
                    Effect::UserRemoved { org, user, removed_grant_count: r.removed_grant_count, allow_missing },
                )
            }),
        )
    } else {
        let message = pb::AddUserToOrganizationRequest { organization_id: org.clone(), user_id: user.clone() };
        let answer = clients.directory.add_user_to_organization(request(message, &request_id, CALL_TIMEOUT)).await;
        (
            "AddUserToOrganization",
            answer.map(|r| {
                let r = r.into_inner();
                (r.revision, Effect::UserAdded { org, user, created: r.created })
            }),
        )
    };
    CallRecord {
        request_id,
        rpc,
        process,
        sent,
        answered: epoch.elapsed(),
        outcome: outcome.map_err(|status| (status.code(), status.message().to_owned())),
    }
}

/// Sends AddUserPermissions of `permission_ids` on `resource` (`(type, id)`; the
/// organization itself for `("organization", org)`) and records it.
#[allow(clippy::too_many_arguments)]
pub async fn add_permissions(
    clients: &mut Clients,
    org: &str,
    user: &str,
    permission_ids: Vec<String>,
    resource: (String, String),
    request_id: String,
    epoch: Instant,
    process: usize,
) -> CallRecord {
    let message = pb::AddUserPermissionsRequest {
        organization_id: org.to_owned(),
        user_id: user.to_owned(),
        permission_ids,
        permission_names: Vec::new(),
        resource: Some(pb::Resource { r#type: resource.0.clone(), id: resource.1.clone() }),
    };
    let sent = epoch.elapsed();
    let answer = clients.grants.add_user_permissions(request(message, &request_id, CALL_TIMEOUT)).await;
    CallRecord {
        request_id,
        rpc: "AddUserPermissions",
        process,
        sent,
        answered: epoch.elapsed(),
        outcome: answer
            .map(|r| {
                let r = r.into_inner();
                let effect =
                    Effect::PermissionsAdded { org: org.to_owned(), user: user.to_owned(), resource, added: r.added };
                (r.revision, effect)
            })
            .map_err(|status| (status.code(), status.message().to_owned())),
    }
}

/// CheckPermission of `permission_id` for `user` on `resource` (`(type, id)`) in `org`.
pub fn check_request(
    org: &str,
    user: &str,
    permission_id: &str,
    resource: (String, String),
) -> pb::CheckPermissionRequest {
    pb::CheckPermissionRequest {
        organization_id: org.to_owned(),
        user_id: user.to_owned(),
        permission: Some(pb::check_permission_request::Permission::PermissionId(permission_id.to_owned())),
        resource: Some(pb::Resource { r#type: resource.0, id: resource.1 }),
        at_least_revision: 0,
    }
}

/// Sends AddUserToOrganization and records it.
pub async fn add_member(
    clients: &mut Clients,
    org: &str,
    user: &str,
    request_id: String,
    timeout: Duration,
    epoch: Instant,
    process: usize,
) -> CallRecord {
    let message = pb::AddUserToOrganizationRequest { organization_id: org.to_owned(), user_id: user.to_owned() };
    let sent = epoch.elapsed();
    let answer = clients.directory.add_user_to_organization(request(message, &request_id, timeout)).await;
    CallRecord {
        request_id,
        rpc: "AddUserToOrganization",
        process,
        sent,
        answered: epoch.elapsed(),
        outcome: answer
            .map(|r| {
                let r = r.into_inner();
                (r.revision, Effect::UserAdded { org: org.to_owned(), user: user.to_owned(), created: r.created })
            })
            .map_err(|status| (status.code(), status.message().to_owned())),
    }
}
