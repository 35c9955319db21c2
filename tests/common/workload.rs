//! The colliding write mix of the stress test (also the light load of the fault tests):
//! a small fixture of organizations, permissions and users, and random
//! AddUserPermissions / RemoveUserPermissions / RemoveResourcePermissions /
//! RemoveUserFromOrganization / AddUserToOrganization calls on it, each recorded as a
//! [`CallRecord`] with a unique `x-request-id`; delegates, users who may make those calls
//! without being administrators ([`delegate`]); and the read that follows a write
//! answered OK ([`read_after`], a [`ReadProbe`]).
//!
//! Included with `#[path = "common/workload.rs"] mod workload;` next to `mod common;`,
//! `mod process;` and `mod invariants;`.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use grantd::api::pb;
use rand::{Rng, rngs::StdRng, seq::IndexedRandom};

use crate::{
    invariants::{CallRecord, Effect, GrantKey, ReadProbe, Seen},
    process::{Clients, request},
};

/// The size of a run, from `{PREFIX}_OPS`, `{PREFIX}_CLIENTS`, `{PREFIX}_TIME_CAP_SECS` and
/// `{PREFIX}_SEED` where set (a random seed otherwise, printed by the caller).
pub struct Settings {
    pub ops: usize,
    pub clients: usize,
    pub cap: Duration,
    pub seed: u64,
}

impl Settings {
    pub fn from_env(prefix: &str, ops: usize, clients: usize, cap_secs: u64, min_clients: usize) -> Self {
        let number = |name: &str, default: u64| {
            let name = format!("{prefix}_{name}");
            std::env::var(&name)
                .ok()
                .map_or(default, |v| v.parse().unwrap_or_else(|_| panic!("{name}={v} is not a number")))
        };
        Settings {
            ops: number("OPS", ops as u64) as usize,
            clients: (number("CLIENTS", clients as u64) as usize).max(min_clients),
            cap: Duration::from_secs(number("TIME_CAP_SECS", cap_secs)),
            seed: std::env::var(format!("{prefix}_SEED")).ok().map_or_else(rand::random, |v| v.parse().expect("seed")),
        }
    }
}

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
    /// Whether RemoveResourcePermissions for all users may name an organization itself,
    /// which revokes every org-wide grant there, a delegate's rights included (see
    /// [`delegate`]).
    pub revoke_org_wide_of_all: bool,
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
    Fixture { orgs, users, permissions: created, resources, revoke_org_wide_of_all: true }
}

/// The catalog permission that lets a caller change an organization's users.
pub const EDIT_ORG_USERS: &str = "edit_org_users";

/// Makes `subject` (not one of the fixture's users, whom the workload removes) a delegate
/// in every organization of the fixture: a member holding `edit_org_users` (built into
/// the catalog) org-wide and, org-wide too, every permission of the fixture, since a
/// caller who is not an administrator may grant only permissions it holds itself there.
/// Every call has a `seed-` request id. Delegates keep their rights only while nothing
/// revokes org-wide grants of all users: clear [`Fixture::revoke_org_wide_of_all`].
pub async fn delegate(clients: &Clients, fixture: &Fixture, subject: &str) {
    let mut directory = clients.directory.clone();
    let mut grants = clients.grants.clone();
    let by_name = pb::get_permission_request::Permission::Name(EDIT_ORG_USERS.to_owned());
    let lookup = pb::GetPermissionRequest { permission: Some(by_name) };
    let edit = directory
        .get_permission(request(lookup, &format!("seed-get-edit-{subject}"), CALL_TIMEOUT))
        .await
        .expect("GetPermission edit_org_users, built in")
        .into_inner()
        .permission
        .expect("permission")
        .id;
    let mut held: Vec<String> = fixture.permissions.iter().map(|(id, _)| id.clone()).collect();
    held.push(edit);
    for org in &fixture.orgs {
        directory
            .add_user_to_organization(request(
                pb::AddUserToOrganizationRequest { organization_id: org.clone(), user_id: subject.to_owned() },
                &format!("seed-{org}-{subject}"),
                CALL_TIMEOUT,
            ))
            .await
            .expect("seed delegate membership");
        let added = grants
            .add_user_permissions(request(
                pb::AddUserPermissionsRequest {
                    organization_id: org.clone(),
                    user_id: subject.to_owned(),
                    permission_ids: held.clone(),
                    permission_names: Vec::new(),
                    resource: Some(pb::Resource { r#type: "organization".to_owned(), id: org.clone() }),
                },
                &format!("seed-rights-{org}-{subject}"),
                CALL_TIMEOUT,
            ))
            .await
            .expect("seed delegate rights")
            .into_inner();
        assert_eq!(added.added.len() + added.already_held.len(), held.len(), "delegate {subject} in {org}");
    }
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
            let (_, (kind, id)) = loop {
                let resource = fixture.resource(rng, &org);
                if !all_users || fixture.revoke_org_wide_of_all || resource.1.0 != "organization" {
                    break resource;
                }
            };
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

/// What a read right after `effect` should ask about: the first grant the write added or
/// removed, with what the write made of it, or else (nothing added or removed, a member
/// added or removed, resources revoked) any permission of the fixture on the write's
/// organization, user and resource (org-wide after member changes; anywhere after
/// RemoveResourcePermissions, whose answer names no user).
pub fn probe_target(effect: &Effect, fixture: &Fixture, rng: &mut StdRng) -> (GrantKey, Option<bool>) {
    let any = |rng: &mut StdRng| fixture.permissions.choose(rng).expect("permissions").0.clone();
    let key = |org: &str, user: &str, resource: &(String, String), permission: String| {
        (org.to_owned(), user.to_owned(), resource.0.clone(), resource.1.clone(), permission.to_lowercase())
    };
    match effect {
        Effect::PermissionsAdded { org, user, resource, added: changed }
        | Effect::PermissionsRemoved { org, user, resource, removed: changed } => {
            let held = matches!(effect, Effect::PermissionsAdded { .. });
            match changed.first() {
                Some(permission) => (key(org, user, resource, permission.clone()), Some(held)),
                None => (key(org, user, resource, any(rng)), None),
            }
        }
        Effect::UserAdded { org, user, .. } => (key(org, user, &("organization".into(), org.clone()), any(rng)), None),
        Effect::UserRemoved { org, user, .. } => {
            (key(org, user, &("organization".into(), org.clone()), any(rng)), Some(false))
        }
        Effect::ResourcePermissionsRemoved { .. } => {
            let org = fixture.orgs.choose(rng).expect("orgs").clone();
            let user = fixture.users.choose(rng).expect("users").clone();
            let (_, resource) = fixture.resource(rng, &org);
            (key(&org, &user, &resource, any(rng)), None)
        }
    }
}

/// Reads what `write` (answered OK) did, with `at_least_revision` = its revision: with
/// CheckPermission, or ListUserPermissions when `list`, on the process after the write's
/// (the write's own when there is only one); when that read fails with UNAVAILABLE or a
/// transport error (the process is down), once more on the next process that is not the
/// write's, if any.
pub async fn read_after(
    readers: &mut [Clients],
    write: &CallRecord,
    fixture: &Fixture,
    rng: &mut StdRng,
    list: bool,
    request_id: &str,
) -> Option<ReadProbe> {
    let Ok((revision, effect)) = &write.outcome else { return None };
    let (asked, fact) = probe_target(effect, fixture, rng);
    let count = readers.len();
    let mut processes: Vec<usize> = (1..count).map(|step| (write.process + step) % count).take(2).collect();
    if processes.is_empty() {
        processes.push(write.process);
    }
    let mut probe = None;
    for (attempt, process) in processes.into_iter().enumerate() {
        let id = format!("{request_id}-{attempt}");
        let outcome = read(&mut readers[process], &asked, *revision, list, &id).await;
        let down =
            matches!(&outcome, Err((code, _)) if matches!(code, tonic::Code::Unavailable | tonic::Code::Unknown));
        probe = Some(ReadProbe {
            after: write.request_id.clone(),
            rpc: if list { "ListUserPermissions" } else { "CheckPermission" },
            at_least: *revision,
            process,
            write_process: write.process,
            asked: asked.clone(),
            fact,
            outcome,
        });
        if !down {
            break;
        }
    }
    probe
}

async fn read(
    clients: &mut Clients,
    asked: &GrantKey,
    at_least_revision: u64,
    list: bool,
    request_id: &str,
) -> Result<Seen, (tonic::Code, String)> {
    let (org, user, kind, id, permission) = asked.clone();
    let failed = |status: tonic::Status| (status.code(), status.message().to_owned());
    if list {
        let message = pb::ListUserPermissionsRequest {
            organization_id: org,
            user_id: user,
            resource: None,
            page_size: 1000,
            page_token: String::new(),
            at_least_revision,
        };
        let page = clients.grants.list_user_permissions(request(message, request_id, CALL_TIMEOUT)).await;
        let page = page.map_err(failed)?.into_inner();
        assert!(page.next_page_token.is_empty(), "the fixture's grants of one user fit one page");
        let held = page.grants.iter().any(|grant| {
            let resource = grant.resource.clone().unwrap_or_default();
            (resource.r#type.as_str(), resource.id.as_str(), grant.permission_id.to_lowercase())
                == (kind.as_str(), id.as_str(), permission.clone())
        });
        return Ok(Seen::Listed { held });
    }
    let mut message = check_request(&org, &user, &permission, (kind, id));
    message.at_least_revision = at_least_revision;
    let answer = clients.grants.check_permission(request(message, request_id, CALL_TIMEOUT)).await;
    let answer = answer.map_err(failed)?.into_inner();
    Ok(Seen::Check { allowed: answer.allowed, revision: answer.revision })
}
