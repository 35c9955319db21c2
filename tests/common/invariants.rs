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
//! [`evaluate`] answers the violations instead of panicking, for a caller that waits for
//! a database to settle (after a SIGKILL) before it judges. Two further checks, of tests
//! that inject faults (tests/under_fire.rs):
//!
//! * [`lost_writes`]: what every write answered OK did (grants added and removed,
//!   members added and removed) holds in the final tables, unless a later event of the
//!   log, written by a call that was answered OK or whose outcome is unknown, undid it;
//! * [`check_reads`]: a read sent right after a write was answered, to another process,
//!   with `at_least_revision` = the write's revision ([`ReadProbe`]) answered (no
//!   REVISION_AHEAD), at a revision no lower; a CheckPermission answer equals what the
//!   log replayed up to the revision it reports says, and a ListUserPermissions answer
//!   shows the write unless a later event undid it.
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
    let (report, violations) = evaluate(snapshot, calls, policy);
    fail_on(&violations);
    report
}

/// Panics listing (up to 40) violations, if there are any.
pub fn fail_on(violations: &[String]) {
    if !violations.is_empty() {
        let mut text = format!("{} invariant violations:\n", violations.len());
        for violation in violations.iter().take(40) {
            let _ = writeln!(text, "  {violation}");
        }
        panic!("{text}");
    }
}

/// The checks of [`check`], answering the violations instead of panicking.
pub fn evaluate(snapshot: &Snapshot, calls: &[CallRecord], policy: &Policy) -> (Report, Vec<String>) {
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

    (report, violations)
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

/// What a write answered OK established about one grant or membership: held, or not.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Fact {
    Grant(GrantKey, bool),
    Member(MemberKey, bool),
}

impl Effect {
    /// What holds once the write is done. RemoveResourcePermissions answers counts only,
    /// so it establishes nothing checkable here.
    fn facts(&self) -> Vec<Fact> {
        let grant = |org: &str, user: &str, resource: &(String, String), permission: &str| {
            (org.to_owned(), user.to_owned(), resource.0.clone(), resource.1.clone(), permission.to_lowercase())
        };
        match self {
            Effect::PermissionsAdded { org, user, resource, added } => {
                added.iter().map(|p| Fact::Grant(grant(org, user, resource, p), true)).collect()
            }
            Effect::PermissionsRemoved { org, user, resource, removed } => {
                removed.iter().map(|p| Fact::Grant(grant(org, user, resource, p), false)).collect()
            }
            Effect::UserAdded { org, user, .. } => vec![Fact::Member((org.clone(), user.clone()), true)],
            Effect::UserRemoved { org, user, .. } => vec![Fact::Member((org.clone(), user.clone()), false)],
            Effect::ResourcePermissionsRemoved { .. } => Vec::new(),
        }
    }
}

/// Per grant and per membership, the log's events on it: (revision, held after it,
/// request id), in revision order.
struct History<'a> {
    grants: HashMap<GrantKey, Vec<(u64, bool, &'a str)>>,
    members: HashMap<MemberKey, Vec<(u64, bool, &'a str)>>,
}

impl<'a> History<'a> {
    fn of(changes: &'a [pb::Change]) -> Self {
        let mut history = History { grants: HashMap::new(), members: HashMap::new() };
        for change in changes {
            let id = change.request_id.as_str();
            let member = || (change.organization_id.clone(), change.user_id.clone());
            match kind(change) {
                ChangeKind::GrantAdded | ChangeKind::GrantRemoved => {
                    let held = kind(change) == ChangeKind::GrantAdded;
                    history.grants.entry(grant_key(change)).or_default().push((change.revision, held, id));
                }
                ChangeKind::MemberAdded | ChangeKind::MemberRemoved => {
                    let held = kind(change) == ChangeKind::MemberAdded;
                    history.members.entry(member()).or_default().push((change.revision, held, id));
                }
                _ => {}
            }
        }
        history
    }

    /// The first event after `revision` that made `fact` false, written by a request
    /// `may_undo` accepts.
    fn undone_after(&self, fact: &Fact, revision: u64, may_undo: impl Fn(&str) -> bool) -> Option<(u64, &'a str)> {
        let (events, held) = match fact {
            Fact::Grant(key, held) => (self.grants.get(key), *held),
            Fact::Member(key, held) => (self.members.get(key), *held),
        };
        events?.iter().find(|(rev, now, id)| *rev > revision && *now != held && may_undo(id)).map(|e| (e.0, e.2))
    }
}

/// What [`lost_writes`] saw.
#[derive(Debug, Default)]
pub struct Durability {
    /// Grants and memberships that writes answered OK added or removed.
    pub facts: usize,
    /// Of those, how many the final tables still show as the write left them.
    pub as_written: usize,
    /// And how many a later event undid (a later add, removal, member removal...).
    pub undone_later: usize,
}

/// Zero lost acknowledged writes: every grant a write answered OK added is in the final
/// grants table, every grant it removed is not, every member it added is in the
/// memberships table and every member it removed is not, unless a later event of the log
/// undid it, written by a request the test sent and was answered OK or whose outcome is
/// unknown under `policy` (or by the seeding).
pub fn lost_writes(snapshot: &Snapshot, calls: &[CallRecord], policy: &Policy) -> (Durability, Vec<String>) {
    let history = History::of(&snapshot.changes);
    let may_undo: HashMap<&str, bool> = calls
        .iter()
        .map(|c| {
            let counts = match &c.outcome {
                Ok(_) => true,
                Err((code, _)) => policy.ambiguous.contains(code),
            };
            (c.request_id.as_str(), counts)
        })
        .collect();
    let may_undo = |id: &str| id.starts_with("seed-") || may_undo.get(id).copied().unwrap_or(false);
    let mut durability = Durability::default();
    let mut violations = Vec::new();
    for call in calls {
        let Ok((revision, effect)) = &call.outcome else { continue };
        for fact in effect.facts() {
            durability.facts += 1;
            let (now, wanted) = match &fact {
                Fact::Grant(key, held) => (snapshot.grants.contains(key), *held),
                Fact::Member(key, held) => (snapshot.members.contains(key), *held),
            };
            if now == wanted {
                durability.as_written += 1;
            } else if history.undone_after(&fact, *revision, may_undo).is_some() {
                durability.undone_later += 1;
            } else {
                violations.push(format!(
                    "lost acknowledged write: {} {} answered OK at revision {revision}, leaving {fact:?}, but the \
                     final table says the opposite and no later event of an acknowledged or unknown call undid it",
                    call.rpc, call.request_id
                ));
            }
        }
    }
    (durability, violations)
}

/// What a read right after a write saw.
#[derive(Debug, Clone)]
pub enum Seen {
    /// CheckPermission: allowed or not, at the revision the answer reports.
    Check { allowed: bool, revision: u64 },
    /// ListUserPermissions of (org, user): whether the grant asked about was listed.
    Listed { held: bool },
}

/// A read sent as soon as a write was answered OK, to another process than the write's
/// when there is one, with `at_least_revision` = the revision the write answered.
#[derive(Debug, Clone)]
pub struct ReadProbe {
    /// The request id of the write.
    pub after: String,
    /// "CheckPermission" or "ListUserPermissions".
    pub rpc: &'static str,
    /// The write's revision, sent as `at_least_revision`.
    pub at_least: u64,
    /// The process the read went to, and the write's.
    pub process: usize,
    pub write_process: usize,
    /// The grant asked about (CheckPermission: on that resource or org-wide).
    pub asked: GrantKey,
    /// What the write established about `asked`: held, not held, or nothing.
    pub fact: Option<bool>,
    pub outcome: Result<Seen, (Code, String)>,
}

/// What [`check_reads`] saw.
#[derive(Debug, Default)]
pub struct ReadReport {
    pub probes: usize,
    pub checks: usize,
    pub lists: usize,
    /// Reads on another process than their write's.
    pub elsewhere: usize,
    /// Reads that failed with an ambiguous code (their process was down).
    pub unknown: usize,
    /// Reads of a grant the write had just added or removed that showed it so, and those
    /// that did not because a later write had undone it.
    pub showed_the_write: usize,
    pub undone_before_the_read: usize,
    /// Highest (answered revision - the write's revision) of a CheckPermission.
    pub max_revisions_ahead: u64,
}

/// Every write answered OK is readable at once, elsewhere: each [`ReadProbe`] answered
/// OK (never FAILED_PRECONDITION / REVISION_AHEAD; ambiguous codes, a process down, are
/// counted), CheckPermission at a revision at least the write's and equal to what the
/// log replayed up to that revision or a later one says (so it shows the write unless a
/// later event undid it), ListUserPermissions showing the write unless a later
/// event undid it.
pub fn check_reads(snapshot: &Snapshot, probes: &[ReadProbe], policy: &Policy) -> (ReadReport, Vec<String>) {
    let history = History::of(&snapshot.changes);
    let mut report = ReadReport { probes: probes.len(), ..ReadReport::default() };
    let mut violations = Vec::new();
    let mut checks: Vec<(u64, bool, &ReadProbe)> = Vec::new();
    for probe in probes {
        let what = format!(
            "{} of {:?} on process {} after {} (process {}) answered revision {}",
            probe.rpc, probe.asked, probe.process, probe.after, probe.write_process, probe.at_least
        );
        report.elsewhere += usize::from(probe.process != probe.write_process);
        match &probe.outcome {
            Err((code, _)) if policy.ambiguous.contains(code) => report.unknown += 1,
            Err((code, message)) => {
                violations.push(format!("{what}: failed with {code:?} ({message})"));
            }
            Ok(Seen::Check { allowed, revision }) => {
                report.checks += 1;
                if *revision < probe.at_least || *revision > snapshot.latest_revision {
                    violations
                        .push(format!("{what}: answered at revision {revision} (latest {})", snapshot.latest_revision));
                    continue;
                }
                checks.push((*revision, *allowed, probe));
            }
            Ok(Seen::Listed { held }) => {
                report.lists += 1;
                let Some(fact) = probe.fact else { continue };
                if *held == fact {
                    report.showed_the_write += 1;
                } else if history
                    .undone_after(&Fact::Grant(probe.asked.clone(), fact), probe.at_least, |_| true)
                    .is_some()
                {
                    report.undone_before_the_read += 1;
                } else {
                    violations.push(format!(
                        "{what}: listed the grant as held={held}, which the write had made {fact}, and no later \
                         event changed it"
                    ));
                }
            }
        }
    }

    // CheckPermission reads the latest committed grants and the latest revision given in
    // one snapshot; writes that committed but wait to be numbered are in the grants and
    // not yet in the revision. So an answer at revision R reflects the log replayed to R
    // or to a later revision (writes of one user's grants are numbered in the order they
    // committed: they take that user's membership lock).
    let held_at = |key: &GrantKey, at: u64| {
        history
            .grants
            .get(key)
            .and_then(|events| events.iter().rev().find(|(rev, _, _)| *rev <= at))
            .is_some_and(|(_, held, _)| *held)
    };
    for (revision, allowed, probe) in checks {
        let (org, user, _, _, permission) = &probe.asked;
        let org_wide = (org.clone(), user.clone(), "organization".to_owned(), org.clone(), permission.clone());
        let allowed_at = |at: u64| held_at(&probe.asked, at) || held_at(&org_wide, at);
        let later: Vec<u64> = [&probe.asked, &org_wide]
            .iter()
            .filter_map(|key| history.grants.get(*key))
            .flatten()
            .map(|(rev, _, _)| *rev)
            .filter(|rev| *rev > revision)
            .collect();
        let seen_at = std::iter::once(revision).chain(later.iter().copied()).find(|at| allowed_at(*at) == allowed);
        match seen_at {
            None => violations.push(format!(
                "CheckPermission of {:?} on process {} after {} (process {}, revision {}) answered allowed={allowed} \
                 at revision {revision}, but the log replayed to {revision} or any later revision says otherwise \
                 (later events on it: {later:?})",
                probe.asked, probe.process, probe.after, probe.write_process, probe.at_least
            )),
            Some(at) => {
                report.max_revisions_ahead = report.max_revisions_ahead.max(at - probe.at_least);
                if let Some(fact) = probe.fact {
                    if held_at(&probe.asked, at) == fact {
                        report.showed_the_write += 1;
                    } else {
                        report.undone_before_the_read += 1;
                    }
                }
            }
        }
    }
    (report, violations)
}
