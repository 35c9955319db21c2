//! The consistency checker shared by tests/stress.rs and tests/faults.rs.
//!
//! Tests record every write they send ([`CallRecord`]: request id, when it was sent and
//! answered, and what the answer said). Afterwards [`Snapshot::take`] reads the whole
//! change log through `ListChanges` (pages of 1,000) and the grants, memberships and
//! revision counter directly from the tables, and [`check`] asserts:
//!
//! * revisions are exactly 1..=latest (no gap, no duplicate), equal to the counter row
//!   and to `latest_revision`, and the events of one request are consecutive;
//! * replaying the log from revision 0 never adds a grant twice, never removes one that
//!   is not there, never grants a non-member, never removes a member who still holds
//!   grants, and ends with exactly the grants and memberships in the tables;
//! * every current grant belongs to a current member;
//! * every write answered OK is explained by its events (matched by request id): a write
//!   that changed something has events whose last revision is the answered one and which
//!   are exactly what the answer reports; a write that changed nothing has no event and
//!   answered a revision that existed;
//! * revisions follow real time: a write sent after another one was answered has a
//!   revision at least as high (strictly higher when it changed something);
//! * a failed write left no event (unless its failure is ambiguous, like a transport
//!   error while the process was killed: then it is counted, not judged);
//! * no event carries a request id the test did not send (seeding uses `seed-` ids).
//!
//! Included with `#[path = "common/invariants.rs"] mod invariants;` next to `mod common;`.

#![allow(dead_code)]

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt::Write as _,
    time::Duration,
};

use grantd::api::pb::{self, ChangeKind};
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use tonic::Code;

use crate::process::{Clients, request};

/// (organization, user, resource type, resource id, permission id).
pub type GrantKey = (String, String, String, String, String);
/// (organization, user).
pub type MemberKey = (String, String);

/// What an OK answer reported.
#[derive(Debug, Clone)]
pub enum Effect {
    PermissionsAdded { org: String, user: String, resource: (String, String), added: Vec<String> },
    PermissionsRemoved { org: String, user: String, resource: (String, String), removed: Vec<String> },
    ResourcePermissionsRemoved { removed_count: u64 },
    UserRemoved { org: String, user: String, removed_grant_count: u64, allow_missing: bool },
    UserAdded { org: String, user: String, created: bool },
}

impl Effect {
    /// Whether the answer says the write changed something.
    fn changed(&self) -> Option<bool> {
        match self {
            Effect::PermissionsAdded { added, .. } => Some(!added.is_empty()),
            Effect::PermissionsRemoved { removed, .. } => Some(!removed.is_empty()),
            Effect::ResourcePermissionsRemoved { removed_count } => Some(*removed_count > 0),
            // With allow_missing and no grants the answer cannot tell.
            Effect::UserRemoved { removed_grant_count, allow_missing, .. } => {
                (*removed_grant_count > 0 || !*allow_missing).then_some(true)
            }
            Effect::UserAdded { created, .. } => Some(*created),
        }
    }
}

/// One write the test sent.
#[derive(Debug, Clone)]
pub struct CallRecord {
    pub request_id: String,
    pub rpc: &'static str,
    /// Which process (index) it was sent to.
    pub process: usize,
    /// Since the run's epoch: just before sending, just after the answer.
    pub sent: Duration,
    pub answered: Duration,
    pub outcome: Result<(u64, Effect), (Code, String)>,
}

/// "OK", or the name of the call's error code ("FailedPrecondition", ...).
fn outcome_label(call: &CallRecord) -> String {
    match &call.outcome {
        Ok(_) => "OK".to_owned(),
        Err((code, _)) => format!("{code:?}"),
    }
}

/// Counts per outcome ("OK", "FailedPrecondition", ...).
pub fn outcome_counts(calls: &[CallRecord]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for call in calls {
        *counts.entry(outcome_label(call)).or_insert(0) += 1;
    }
    counts
}

/// Counts per rpc and outcome ("AddUserPermissions OK", ...).
pub fn rpc_counts(calls: &[CallRecord]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for call in calls {
        *counts.entry(format!("{} {}", call.rpc, outcome_label(call))).or_insert(0) += 1;
    }
    counts
}

/// The database's state after a run.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub changes: Vec<pb::Change>,
    pub latest_revision: u64,
    pub counter: i64,
    pub change_rows: i64,
    pub grants: BTreeSet<GrantKey>,
    pub members: BTreeSet<MemberKey>,
}

impl Snapshot {
    /// Reads the change log through the API and the tables through `db`.
    pub async fn take(clients: &Clients, db: &DatabaseConnection) -> Self {
        let mut audit = clients.audit.clone();
        let mut changes: Vec<pb::Change> = Vec::new();
        let mut after = 0;
        let latest_revision = loop {
            let page = audit
                .list_changes(request(
                    pb::ListChangesRequest { after_revision: after, organization_id: String::new(), page_size: 1000 },
                    &format!("check-list-{after}"),
                    Duration::from_secs(30),
                ))
                .await
                .expect("ListChanges")
                .into_inner();
            let done = page.changes.is_empty();
            if let Some(last) = page.changes.last() {
                assert!(last.revision > after, "ListChanges after {after} answered revision {}", last.revision);
                after = last.revision;
            }
            changes.extend(page.changes);
            if done {
                break page.latest_revision;
            }
        };

        let backend = db.get_database_backend();
        let rows = |sql: &str| db.query_all(Statement::from_string(backend, sql.to_owned()));
        let grants = rows("SELECT organization_id, user_id, resource_type, resource_id, permission_id FROM grants")
            .await
            .expect("read grants")
            .into_iter()
            .map(|row| {
                let permission: uuid::Uuid = row.try_get("", "permission_id").expect("permission_id");
                (
                    row.try_get("", "organization_id").expect("organization_id"),
                    row.try_get("", "user_id").expect("user_id"),
                    row.try_get("", "resource_type").expect("resource_type"),
                    row.try_get("", "resource_id").expect("resource_id"),
                    permission.to_string(),
                )
            })
            .collect();
        let members = rows("SELECT organization_id, user_id FROM memberships")
            .await
            .expect("read memberships")
            .into_iter()
            .map(|row| {
                (
                    row.try_get("", "organization_id").expect("organization_id"),
                    row.try_get("", "user_id").expect("user"),
                )
            })
            .collect();
        let counter = rows("SELECT value FROM revision_counter WHERE id = 1").await.expect("read counter")[0]
            .try_get::<i64>("", "value")
            .expect("counter value");
        let change_rows = rows("SELECT COUNT(*) AS n FROM changes").await.expect("count changes")[0]
            .try_get::<i64>("", "n")
            .expect("count");
        Self { changes, latest_revision, counter, change_rows, grants, members }
    }

    /// Grants of (org, user) read through ListUserPermissions, as a cross-check of the API.
    pub async fn api_grants(clients: &Clients, org: &str, user: &str) -> BTreeSet<GrantKey> {
        let mut grants = clients.grants.clone();
        let mut token = String::new();
        let mut out = BTreeSet::new();
        loop {
            let page = grants
                .list_user_permissions(request(
                    pb::ListUserPermissionsRequest {
                        organization_id: org.to_owned(),
                        user_id: user.to_owned(),
                        resource: None,
                        page_size: 1000,
                        page_token: token.clone(),
                        at_least_revision: 0,
                    },
                    "check-list-grants",
                    Duration::from_secs(30),
                ))
                .await
                .expect("ListUserPermissions")
                .into_inner();
            for grant in page.grants {
                let resource = grant.resource.unwrap_or_default();
                out.insert((grant.organization_id, grant.user_id, resource.r#type, resource.id, grant.permission_id));
            }
            if page.next_page_token.is_empty() {
                return out;
            }
            token = page.next_page_token;
        }
    }

    /// Members of `org` read through ListOrganizationMembers.
    pub async fn api_members(clients: &Clients, org: &str) -> BTreeSet<MemberKey> {
        let mut directory = clients.directory.clone();
        let mut token = String::new();
        let mut out = BTreeSet::new();
        loop {
            let page = directory
                .list_organization_members(request(
                    pb::ListOrganizationMembersRequest {
                        organization_id: org.to_owned(),
                        page_size: 1000,
                        page_token: token.clone(),
                        at_least_revision: 0,
                    },
                    "check-list-members",
                    Duration::from_secs(30),
                ))
                .await
                .expect("ListOrganizationMembers")
                .into_inner();
            out.extend(page.members.into_iter().map(|m| (m.organization_id, m.user_id)));
            if page.next_page_token.is_empty() {
                return out;
            }
            token = page.next_page_token;
        }
    }
}

/// Which failures leave the outcome unknown (the write may or may not have committed).
pub struct Policy {
    pub ambiguous: Vec<Code>,
}

impl Policy {
    /// Every failure must have left nothing.
    pub fn strict() -> Self {
        Self { ambiguous: Vec::new() }
    }

    /// Transport failures and UNAVAILABLE may have committed (a connection lost at commit,
    /// a process killed after committing but before answering).
    pub fn faults() -> Self {
        Self { ambiguous: vec![Code::Unavailable, Code::Unknown, Code::Cancelled, Code::DeadlineExceeded] }
    }
}

/// What the checker saw.
#[derive(Debug, Default)]
pub struct Report {
    pub events: usize,
    pub latest_revision: u64,
    pub grants: usize,
    pub members: usize,
    pub ok_changed: usize,
    pub ok_unchanged: usize,
    pub failed: usize,
    /// Failed calls with an ambiguous code, and how many of them did commit.
    pub ambiguous: usize,
    pub ambiguous_committed: usize,
}

fn kind(change: &pb::Change) -> ChangeKind {
    ChangeKind::try_from(change.kind).unwrap_or(ChangeKind::Unspecified)
}

fn grant_key(change: &pb::Change) -> GrantKey {
    let resource = change.resource.clone().unwrap_or_default();
    (
        change.organization_id.clone(),
        change.user_id.clone(),
        resource.r#type,
        resource.id,
        change.permission_id.to_lowercase(),
    )
}

/// Checks every invariant; panics listing (up to 40) violations.
pub fn check(snapshot: &Snapshot, calls: &[CallRecord], policy: &Policy) -> Report {
    let mut violations: Vec<String> = Vec::new();
    let mut report = Report {
        events: snapshot.changes.len(),
        latest_revision: snapshot.latest_revision,
        grants: snapshot.grants.len(),
        members: snapshot.members.len(),
        ..Report::default()
    };

    // Revisions: 1..=latest, equal to the counter, the table and latest_revision.
    for (index, change) in snapshot.changes.iter().enumerate() {
        let want = index as u64 + 1;
        if change.revision != want {
            violations
                .push(format!("change #{index} has revision {} (want {want}: gap or duplicate)", change.revision));
            break;
        }
    }
    let last = snapshot.changes.last().map_or(0, |c| c.revision);
    if last != snapshot.latest_revision || snapshot.counter != last as i64 || snapshot.change_rows != last as i64 {
        violations.push(format!(
            "last change revision {last}, ListChanges latest_revision {}, revision_counter {}, rows in changes {}",
            snapshot.latest_revision, snapshot.counter, snapshot.change_rows
        ));
    }

    // Replay from revision 0.
    let mut grants: BTreeSet<GrantKey> = BTreeSet::new();
    let mut members: BTreeSet<MemberKey> = BTreeSet::new();
    for change in &snapshot.changes {
        let rev = change.revision;
        match kind(change) {
            ChangeKind::GrantAdded => {
                let key = grant_key(change);
                if !members.contains(&(key.0.clone(), key.1.clone())) {
                    violations.push(format!("revision {rev}: GRANT_ADDED {key:?} for a non-member"));
                }
                if !grants.insert(key.clone()) {
                    violations.push(format!("revision {rev}: GRANT_ADDED {key:?} already held"));
                }
            }
            ChangeKind::GrantRemoved => {
                let key = grant_key(change);
                if !grants.remove(&key) {
                    violations.push(format!("revision {rev}: GRANT_REMOVED {key:?} not held"));
                }
            }
            ChangeKind::MemberAdded => {
                if !members.insert((change.organization_id.clone(), change.user_id.clone())) {
                    violations.push(format!(
                        "revision {rev}: MEMBER_ADDED {}/{} already a member",
                        change.organization_id, change.user_id
                    ));
                }
            }
            ChangeKind::MemberRemoved => {
                let member = (change.organization_id.clone(), change.user_id.clone());
                if !members.remove(&member) {
                    violations.push(format!("revision {rev}: MEMBER_REMOVED {member:?} not a member"));
                }
                let left = grants.iter().filter(|g| g.0 == member.0 && g.1 == member.1).count();
                if left > 0 {
                    violations.push(format!("revision {rev}: MEMBER_REMOVED {member:?} while {left} grants remain"));
                }
            }
            ChangeKind::OrganizationDeleted => {
                let org = &change.organization_id;
                if members.iter().any(|m| &m.0 == org) || grants.iter().any(|g| &g.0 == org) {
                    violations.push(format!("revision {rev}: ORGANIZATION_DELETED {org} with members or grants left"));
                }
            }
            ChangeKind::PermissionDeleted => {
                let permission = change.permission_id.to_lowercase();
                if grants.iter().any(|g| g.4 == permission) {
                    violations.push(format!("revision {rev}: PERMISSION_DELETED {permission} still granted"));
                }
            }
            ChangeKind::OrganizationCreated | ChangeKind::PermissionCreated => {}
            ChangeKind::Unspecified => violations.push(format!("revision {rev}: unknown kind {}", change.kind)),
        }
    }
    diff("grants", &grants, &snapshot.grants, &mut violations);
    diff("memberships", &members, &snapshot.members, &mut violations);
    for grant in &snapshot.grants {
        if !snapshot.members.contains(&(grant.0.clone(), grant.1.clone())) {
            violations.push(format!("grant {grant:?} of a non-member"));
        }
    }

    // Events by request id; each request's revisions consecutive.
    let mut by_request: HashMap<&str, Vec<&pb::Change>> = HashMap::new();
    for change in &snapshot.changes {
        by_request.entry(change.request_id.as_str()).or_default().push(change);
    }
    for (id, events) in &by_request {
        let (first, last) = (events[0].revision, events[events.len() - 1].revision);
        if last - first + 1 != events.len() as u64 {
            violations.push(format!("request {id}: {} events spread over revisions {first}..={last}", events.len()));
        }
    }
    let sent: BTreeSet<&str> = calls.iter().map(|c| c.request_id.as_str()).collect();
    if sent.len() != calls.len() {
        violations.push("the test sent a request id twice".to_owned());
    }
    for id in by_request.keys() {
        if !sent.contains(id) && !id.starts_with("seed-") {
            violations.push(format!("events with request id {id}, which the test never sent"));
        }
    }

    // Every answer against its events.
    let no_events = Vec::new();
    for call in calls {
        let events = by_request.get(call.request_id.as_str()).unwrap_or(&no_events);
        let id = &call.request_id;
        match &call.outcome {
            Err((code, message)) => {
                report.failed += 1;
                if policy.ambiguous.contains(code) {
                    report.ambiguous += 1;
                    if !events.is_empty() {
                        report.ambiguous_committed += 1;
                    }
                } else if !events.is_empty() {
                    violations.push(format!(
                        "{} {id} failed with {code:?} ({message}) but left {} events",
                        call.rpc,
                        events.len()
                    ));
                }
            }
            Ok((revision, effect)) => {
                if *revision > snapshot.latest_revision {
                    violations.push(format!("{} {id} answered revision {revision} > latest", call.rpc));
                }
                if events.is_empty() {
                    report.ok_unchanged += 1;
                    if effect.changed() == Some(true) {
                        violations
                            .push(format!("{} {id} answered {effect:?} at {revision} but has no events", call.rpc));
                    }
                    continue;
                }
                report.ok_changed += 1;
                let max = events.iter().map(|e| e.revision).max().unwrap_or(0);
                if max != *revision {
                    violations.push(format!("{} {id} answered revision {revision}, its events end at {max}", call.rpc));
                }
                if effect.changed() == Some(false) {
                    violations.push(format!("{} {id} answered {effect:?} but has {} events", call.rpc, events.len()));
                }
                if let Some(problem) = explain(effect, events) {
                    violations.push(format!("{} {id}: {problem}", call.rpc));
                }
            }
        }
    }

    // Real-time order: a write sent after another was answered has a revision at least
    // as high, strictly higher when it changed something.
    let mut ok: Vec<(Duration, Duration, u64, bool, &str)> = calls
        .iter()
        .filter_map(|c| match &c.outcome {
            Ok((revision, _)) => Some((
                c.sent,
                c.answered,
                *revision,
                by_request.contains_key(c.request_id.as_str()),
                c.request_id.as_str(),
            )),
            Err(_) => None,
        })
        .collect();
    ok.sort_by_key(|c| c.1);
    let mut prefix_max: Vec<(u64, &str)> = Vec::with_capacity(ok.len());
    for call in &ok {
        let best = prefix_max.last().copied().unwrap_or((0, ""));
        prefix_max.push(if call.2 >= best.0 { (call.2, call.4) } else { best });
    }
    for call in &ok {
        let before = ok.partition_point(|other| other.1 < call.0);
        if before == 0 {
            continue;
        }
        let (max, by) = prefix_max[before - 1];
        if call.2 < max || (call.3 && call.2 == max && by != call.4) {
            violations.push(format!(
                "{} (changed: {}) answered revision {} although {by} was answered at revision {max} before it was sent",
                call.4, call.3, call.2
            ));
        }
    }

    if !violations.is_empty() {
        let mut text = format!("{} invariant violations:\n", violations.len());
        for violation in violations.iter().take(40) {
            let _ = writeln!(text, "  {violation}");
        }
        panic!("{text}");
    }
    report
}

/// Whether a changed write's events are exactly what its answer reported.
fn explain(effect: &Effect, events: &[&pb::Change]) -> Option<String> {
    let kinds: Vec<ChangeKind> = events.iter().map(|e| kind(e)).collect();
    match effect {
        Effect::PermissionsAdded { org, user, resource, added }
        | Effect::PermissionsRemoved { org, user, resource, removed: added } => {
            let want_kind = if matches!(effect, Effect::PermissionsAdded { .. }) {
                ChangeKind::GrantAdded
            } else {
                ChangeKind::GrantRemoved
            };
            let got: BTreeSet<GrantKey> = events.iter().map(|e| grant_key(e)).collect();
            let want: BTreeSet<GrantKey> = added
                .iter()
                .map(|p| (org.clone(), user.clone(), resource.0.clone(), resource.1.clone(), p.to_lowercase()))
                .collect();
            (kinds.iter().any(|k| *k != want_kind) || got != want || events.len() != added.len()).then(|| {
                format!(
                    "answered {effect:?}, events {:?}",
                    events.iter().map(|e| (kind(e), grant_key(e))).collect::<Vec<_>>()
                )
            })
        }
        Effect::ResourcePermissionsRemoved { removed_count } => (kinds.iter().any(|k| *k != ChangeKind::GrantRemoved)
            || events.len() as u64 != *removed_count)
            .then(|| format!("answered {removed_count} removed, events {kinds:?}")),
        Effect::UserRemoved { org, user, removed_grant_count, .. } => {
            let grants_removed = events
                .iter()
                .filter(|e| kind(e) == ChangeKind::GrantRemoved && &e.organization_id == org && &e.user_id == user)
                .count() as u64;
            let last_is_member = events.last().is_some_and(|e| {
                kind(e) == ChangeKind::MemberRemoved && &e.organization_id == org && &e.user_id == user
            });
            (grants_removed != *removed_grant_count
                || !last_is_member
                || events.len() as u64 != removed_grant_count + 1)
                .then(|| format!("answered {removed_grant_count} grants removed, events {kinds:?}"))
        }
        Effect::UserAdded { org, user, .. } => {
            let ok = events.len() == 1
                && kinds[0] == ChangeKind::MemberAdded
                && &events[0].organization_id == org
                && &events[0].user_id == user;
            (!ok).then(|| format!("answered created, events {kinds:?}"))
        }
    }
}

fn diff<T: Ord + std::fmt::Debug>(
    what: &str,
    replayed: &BTreeSet<T>,
    table: &BTreeSet<T>,
    violations: &mut Vec<String>,
) {
    for missing in table.difference(replayed).take(10) {
        violations.push(format!("{what}: {missing:?} is in the table but the change log does not explain it"));
    }
    for extra in replayed.difference(table).take(10) {
        violations.push(format!("{what}: {extra:?} follows from the change log but is not in the table"));
    }
}
