//! Moving grants in and out in bulk. ImportGrants writes each batch as one transaction
//! through the write path every other write takes; ExportGrants reads one snapshot page
//! by page, and a cursor continues it at the same revision.

use std::{
    collections::{HashMap, HashSet},
    hash::Hash,
    time::Duration,
};

use tokio::sync::mpsc;
use uuid::Uuid;

use super::{Writes, access, resolve};
use crate::{
    domain::{
        self, Actor, Error, OrganizationId, Result, Revision, UserId,
        bulk::{ImportCounts, ImportRecord, Positioned, Rejection},
        model::{ChangeKind, Grant, Membership, Organization, Permission},
        page,
    },
    storage::{
        self, DatabaseConnection, DatabaseTransaction, TransactionTrait,
        changes::{Author, ExportPlace, NewChange},
        grants::{GrantKey, NewGrant},
        tx::TxFuture,
    },
};

/// Records an import adds before their tables' statistics are gathered again.
const ANALYZE_AFTER: u64 = 10_000;

/// Records per ExportGrants message.
const EXPORT_PAGE: u64 = 1_000;
/// Messages an export reads ahead of its client; the rest waits in the database.
const EXPORT_READ_AHEAD: usize = 2;

/// Imports and exports.
#[derive(Debug, Clone)]
pub struct Bulk {
    db: DatabaseConnection,
    writes: Writes,
    /// The longest an export waits for its client to take a message, and an import for
    /// its client's next batch: neither holds a connection (or a dry run's transaction)
    /// for a client that stopped.
    pub patience: Duration,
}

/// One record of an export.
#[derive(Debug, Clone)]
pub enum ExportItem {
    Organization(Organization),
    Permission(Permission),
    Membership(Membership),
    Grant(Grant),
}

/// One message of an export: its records, the snapshot's revision, and where to continue.
#[derive(Debug, Clone)]
pub struct ExportChunk {
    pub revision: Revision,
    pub items: Vec<ExportItem>,
    pub cursor: String,
}

impl Bulk {
    /// Exports read on `db`; imports write through `writes`.
    pub fn new(db: DatabaseConnection, writes: Writes, patience: Duration) -> Self {
        Self { db, writes, patience }
    }

    /// Whether `actor` may import: an administrator whose token reaches every organization.
    pub fn authorize(&self, actor: &Actor) -> Result<()> {
        access::require_admin(actor, "ImportGrants")
    }

    /// After an import wrote much: the planner's statistics of what it filled, so that
    /// reads of the loaded tables (an export first) use their indexes.
    pub async fn imported(&self, added: u64) -> Result<()> {
        if added >= ANALYZE_AFTER {
            storage::analyze_loaded_tables(self.writes.writer.connection()).await?;
        }
        Ok(())
    }

    /// The latest committed revision.
    pub async fn current_revision(&self) -> Result<Revision> {
        storage::numbering::current_revision(&self.db).await
    }

    /// One import batch as one write transaction. [`Error::Rejected`] when a record
    /// cannot be written: then nothing of the batch is.
    pub async fn import_batch(
        &self,
        actor: Actor,
        records: Vec<Positioned<ImportRecord>>,
    ) -> Result<(ImportCounts, Revision)> {
        self.writes.run(actor, records, import_body).await
    }

    /// A dry run: one write transaction for all its batches, so that a batch sees what
    /// the ones before it would have written, rolled back when the rehearsal is dropped.
    /// On SQLite other writes wait until it ends.
    pub async fn rehearse(&self, actor: Actor) -> Result<Rehearsal> {
        self.authorize(&actor)?;
        let tx = storage::writes::begin_write(&self.writes.writer).await?;
        Ok(Rehearsal { tx, author: Author::new(actor, Uuid::new_v4()) })
    }

    /// Streams the export of `organization` (everything when `None`) from `cursor` (the
    /// beginning when empty). Authorization, the cursor and the organization are checked
    /// before the stream starts.
    pub async fn export(
        &self,
        actor: Actor,
        organization: Option<OrganizationId>,
        cursor: &str,
    ) -> Result<mpsc::Receiver<Result<ExportChunk>>> {
        access::require_admin(&actor, "ExportGrants")?;
        let scope = format!("export\n{}", organization.as_ref().map_or("", OrganizationId::as_str));
        let start = if cursor.is_empty() { None } else { Some(Cursor::open(&scope, cursor)?) };
        if let Some(organization) = &organization {
            resolve::organization(&self.db, organization).await?;
        }
        let (sender, receiver) = mpsc::channel(EXPORT_READ_AHEAD);
        let (db, patience) = (self.db.clone(), self.patience);
        tokio::spawn(async move {
            if let Err(err) = export_into(&db, organization, start, &scope, &sender, patience).await {
                let _ = sender.send_timeout(Err(err), patience).await;
            }
        });
        Ok(receiver)
    }
}

/// The write transaction of a dry run (see [`Bulk::rehearse`]).
pub struct Rehearsal {
    tx: DatabaseTransaction,
    author: Author,
}

impl Rehearsal {
    /// One batch, as [`Bulk::import_batch`] writes it, in a savepoint: a rejected batch
    /// leaves nothing behind for the next one to see.
    pub async fn batch(&mut self, records: Vec<Positioned<ImportRecord>>) -> Result<ImportCounts> {
        let savepoint = self.tx.begin().await?;
        match write_batch(&savepoint, self.author.clone(), records).await {
            Ok(counts) => {
                savepoint.commit().await?;
                Ok(counts)
            }
            Err(err) => {
                savepoint.rollback().await?;
                Err(err)
            }
        }
    }
}

fn import_body(
    tx: &DatabaseTransaction,
    author: Author,
    records: Vec<Positioned<ImportRecord>>,
) -> TxFuture<'_, ImportCounts> {
    Box::pin(write_batch(tx, author, records))
}

/// A grant record once its ids are plain strings; its permission is still a name.
struct NamedGrant {
    organization_id: String,
    user_id: String,
    permission_name: String,
    resource_type: String,
    resource_id: String,
    granted_at: chrono::DateTime<chrono::Utc>,
    granted_by: String,
}

/// A batch's records by kind, each with its position; what a record leaves out is the
/// import's own (now, the importer).
#[derive(Default)]
struct Batch {
    organizations: Vec<(u64, Organization)>,
    permissions: Vec<(u64, Permission)>,
    memberships: Vec<(u64, Membership)>,
    grants: Vec<(u64, NamedGrant)>,
}

impl Batch {
    fn sort(records: Vec<Positioned<ImportRecord>>, now: chrono::DateTime<chrono::Utc>, importer: &str) -> Self {
        let author = |given: Option<UserId>| given.map_or_else(|| importer.to_owned(), UserId::into_string);
        let mut batch = Batch::default();
        for Positioned { position, record } in records {
            match record {
                ImportRecord::Organization { id, display_name, created_at } => batch.organizations.push((
                    position,
                    Organization { id: id.into_string(), display_name, created_at: created_at.unwrap_or(now) },
                )),
                ImportRecord::Permission { name, description, created_at } => batch.permissions.push((
                    position,
                    Permission {
                        // Time-ordered, as CreatePermission mints them.
                        id: Uuid::now_v7(),
                        name: name.to_string(),
                        description,
                        created_at: created_at.unwrap_or(now),
                        built_in: false,
                    },
                )),
                ImportRecord::Membership { organization_id, user_id, added_at, added_by } => batch.memberships.push((
                    position,
                    Membership {
                        organization_id: organization_id.into_string(),
                        user_id: user_id.into_string(),
                        added_at: added_at.unwrap_or(now),
                        added_by: author(added_by),
                    },
                )),
                ImportRecord::Grant { organization_id, user_id, permission_name, resource, granted_at, granted_by } => {
                    batch.grants.push((
                        position,
                        NamedGrant {
                            organization_id: organization_id.into_string(),
                            user_id: user_id.into_string(),
                            permission_name: permission_name.to_string(),
                            resource_type: resource.kind.as_str().to_owned(),
                            resource_id: resource.id.as_str().to_owned(),
                            granted_at: granted_at.unwrap_or(now),
                            granted_by: author(granted_by),
                        },
                    ))
                }
            }
        }
        batch
    }
}

/// Counts each record as added when it is the first with a key the insert created, and
/// as already held otherwise; answers the created keys, each once.
fn tally<K: Hash + Eq + Clone>(
    counts: &mut ImportCounts,
    keys: impl IntoIterator<Item = K>,
    created: &HashSet<K>,
) -> Vec<K> {
    let mut added = Vec::new();
    let mut seen = HashSet::new();
    for key in keys {
        if created.contains(&key) && seen.insert(key.clone()) {
            counts.added += 1;
            added.push(key);
        } else {
            counts.already_held += 1;
        }
    }
    added
}

fn rows<T: Clone>(positioned: &[(u64, T)]) -> Vec<T> {
    positioned.iter().map(|(_, row)| row.clone()).collect()
}

/// Writes organizations, then permissions, then memberships, then grants, so that a
/// record may need one earlier in its batch; an event for everything created.
async fn write_batch(
    tx: &DatabaseTransaction,
    author: Author,
    records: Vec<Positioned<ImportRecord>>,
) -> Result<ImportCounts> {
    access::require_admin(&author.actor, "ImportGrants")?;
    let now = domain::now();
    let batch = Batch::sort(records, now, &author.actor.subject);
    let mut counts = ImportCounts::default();
    let mut events = Vec::new();

    let created = storage::organizations::insert_all(tx, &rows(&batch.organizations)).await?;
    for id in tally(&mut counts, batch.organizations.iter().map(|(_, o)| o.id.clone()), &created) {
        events.push(NewChange::organization(ChangeKind::OrganizationCreated, &id));
    }
    let created = storage::permissions::insert_all(tx, &rows(&batch.permissions)).await?;
    for id in tally(&mut counts, batch.permissions.iter().map(|(_, p)| p.id), &created) {
        events.push(NewChange::permission(ChangeKind::PermissionCreated, id));
    }

    let mut rejections = Vec::new();
    let named: Vec<&str> = batch
        .memberships
        .iter()
        .map(|(_, m)| m.organization_id.as_str())
        .chain(batch.grants.iter().map(|(_, g)| g.organization_id.as_str()))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let missing: HashSet<String> = storage::organizations::missing(tx, &named).await?.into_iter().collect();
    let no_organization = |position: u64, kind: &str, organization: &str| Rejection {
        position,
        field: format!("{kind}.organization_id"),
        reason: format!("there is no organization {organization}; import it first or earlier in the same batch"),
    };

    let (memberships, orphans): (Vec<_>, Vec<_>) =
        batch.memberships.into_iter().partition(|(_, m)| !missing.contains(&m.organization_id));
    rejections.extend(orphans.iter().map(|(position, m)| no_organization(*position, "membership", &m.organization_id)));
    let created = storage::memberships::insert_all(tx, &rows(&memberships)).await?;
    let pairs = memberships.iter().map(|(_, m)| (m.organization_id.clone(), m.user_id.clone()));
    for (organization, user) in tally(&mut counts, pairs, &created) {
        events.push(NewChange::member(ChangeKind::MemberAdded, &organization, &user));
    }

    let names: Vec<&str> =
        batch.grants.iter().map(|(_, g)| g.permission_name.as_str()).collect::<HashSet<_>>().into_iter().collect();
    let catalog: HashMap<String, Uuid> =
        storage::permissions::resolve(tx, &[], &names).await?.into_iter().map(|p| (p.name, p.id)).collect();
    let pairs: Vec<(String, String)> = batch
        .grants
        .iter()
        .map(|(_, g)| (g.organization_id.clone(), g.user_id.clone()))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let members = storage::memberships::existing(tx, &pairs).await?;
    let mut grants = Vec::with_capacity(batch.grants.len());
    for (position, g) in batch.grants {
        if missing.contains(&g.organization_id) {
            rejections.push(no_organization(position, "grant", &g.organization_id));
            continue;
        }
        let Some(permission_id) = catalog.get(&g.permission_name) else {
            rejections.push(Rejection {
                position,
                field: "grant.permission_name".into(),
                reason: format!(
                    "there is no permission {} in the catalog; import it first or earlier in the same batch",
                    g.permission_name
                ),
            });
            continue;
        };
        if !members.contains(&(g.organization_id.clone(), g.user_id.clone())) {
            rejections.push(Rejection {
                position,
                field: "grant.user_id".into(),
                reason: format!(
                    "{} is not a member of organization {}; import the membership first or earlier in the same batch",
                    g.user_id, g.organization_id
                ),
            });
            continue;
        }
        let key = GrantKey {
            organization_id: g.organization_id,
            user_id: g.user_id,
            resource_type: g.resource_type,
            resource_id: g.resource_id,
            permission_id: *permission_id,
        };
        grants.push(NewGrant { key, granted_at: g.granted_at, granted_by: g.granted_by });
    }
    if !rejections.is_empty() {
        rejections.sort_by_key(|rejection| rejection.position);
        return Err(Error::Rejected(rejections));
    }
    // Before the grants' own, so that the log adds a grant's member and permission first.
    storage::changes::append(tx, &author, now, events).await?;
    let created = storage::additions::insert(tx, &grants, &author, now).await?;
    tally(&mut counts, grants.iter().map(|g| g.key.clone()), &created);
    Ok(counts)
}

/// Where an export stands: the section it is in and the last key it sent there.
#[derive(Debug, Clone)]
enum Place {
    Organizations(Option<String>),
    Permissions(Option<String>),
    Memberships(Option<(String, String)>),
    Grants(Option<GrantKey>),
    Done,
}

/// A position in one export: its snapshot's revision and its place.
#[derive(Debug, Clone)]
struct Cursor {
    revision: Revision,
    place: Place,
}

impl Cursor {
    const PARTS: usize = 7;

    fn seal(&self, scope: &str) -> String {
        let (section, key): (&str, Vec<String>) = match &self.place {
            Place::Organizations(after) => ("organizations", after.iter().cloned().collect()),
            Place::Permissions(after) => ("permissions", after.iter().cloned().collect()),
            Place::Memberships(after) => {
                ("memberships", after.iter().flat_map(|(o, u)| [o.clone(), u.clone()]).collect())
            }
            Place::Grants(after) => (
                "grants",
                after
                    .iter()
                    .flat_map(|k| {
                        [
                            k.organization_id.clone(),
                            k.user_id.clone(),
                            k.resource_type.clone(),
                            k.resource_id.clone(),
                            k.permission_id.to_string(),
                        ]
                    })
                    .collect(),
            ),
            Place::Done => ("done", Vec::new()),
        };
        let mut parts = vec![self.revision.to_string(), section.to_owned(), key.len().to_string()];
        parts.extend(key);
        parts.resize(Self::PARTS + 1, String::new());
        page::seal(scope, &parts)
    }

    fn open(scope: &str, token: &str) -> Result<Self> {
        let parts = page::open("cursor", scope, token, Self::PARTS + 1)?;
        let invalid = || Error::from(domain::FieldViolation::new("cursor", "is not a cursor of this export"));
        let revision: Revision = parts[0].parse().map_err(|_| invalid())?;
        let len: usize = parts[2].parse().map_err(|_| invalid())?;
        let key = parts.get(3..3 + len).ok_or_else(invalid)?;
        let place = match (parts[1].as_str(), key) {
            ("organizations", []) => Place::Organizations(None),
            ("organizations", [id]) => Place::Organizations(Some(id.clone())),
            ("permissions", []) => Place::Permissions(None),
            ("permissions", [name]) => Place::Permissions(Some(name.clone())),
            ("memberships", []) => Place::Memberships(None),
            ("memberships", [o, u]) => Place::Memberships(Some((o.clone(), u.clone()))),
            ("grants", []) => Place::Grants(None),
            ("grants", [o, u, t, i, p]) => Place::Grants(Some(GrantKey {
                organization_id: o.clone(),
                user_id: u.clone(),
                resource_type: t.clone(),
                resource_id: i.clone(),
                permission_id: Uuid::parse_str(p).map_err(|_| invalid())?,
            })),
            ("done", []) => Place::Done,
            _ => return Err(invalid()),
        };
        Ok(Cursor { revision, place })
    }
}

/// What a resumed export has left, as the change log is asked about it; nothing once done.
fn remaining(place: &Place) -> Option<ExportPlace<'_>> {
    Some(match place {
        Place::Organizations(_) | Place::Permissions(_) => ExportPlace::Beginning,
        Place::Memberships(after) => {
            ExportPlace::Memberships { after: after.as_ref().map(|(o, u)| (o.as_str(), u.as_str())) }
        }
        Place::Grants(after) => ExportPlace::Grants { after: after.as_ref() },
        Place::Done => return None,
    })
}

/// Reads the export in one snapshot, a page per message, until its end or until the
/// client is gone.
async fn export_into(
    db: &DatabaseConnection,
    organization: Option<OrganizationId>,
    start: Option<Cursor>,
    scope: &str,
    sender: &mpsc::Sender<Result<ExportChunk>>,
    patience: Duration,
) -> Result<()> {
    let tx = storage::tx::snapshot(db).await?;
    let current = storage::numbering::current_revision(&tx).await?;
    let organization = organization.as_ref().map(OrganizationId::as_str);
    let mut cursor = match start {
        None => Cursor { revision: current, place: Place::Organizations(None) },
        Some(cursor) => {
            let moved_on = match remaining(&cursor.place) {
                Some(left) if cursor.revision != current => {
                    storage::changes::touched_since(&tx, cursor.revision, organization, left).await?
                }
                _ => false,
            };
            if moved_on {
                return Err(Error::SnapshotChanged(format!(
                    "what this export had left to send changed after revision {}, its snapshot; export again from \
                     the start",
                    cursor.revision
                )));
            }
            cursor
        }
    };
    let mut sent_any = false;
    loop {
        let (items, next) = read_page(&tx, organization, &cursor.place).await?;
        cursor.place = next;
        let done = matches!(cursor.place, Place::Done);
        // Every export states its revision, even one with nothing in it.
        if !items.is_empty() || (done && !sent_any) {
            let chunk = ExportChunk { revision: cursor.revision, items, cursor: cursor.seal(scope) };
            // A client that stopped reading is left to resume from its last cursor.
            if sender.send_timeout(Ok(chunk), patience).await.is_err() {
                return Ok(());
            }
            sent_any = true;
        }
        if done {
            return Ok(());
        }
    }
}

/// The page at `place` and the place after it: the same section after the page's last
/// key while pages come full, else the next section.
async fn read_page(
    tx: &DatabaseTransaction,
    organization: Option<&str>,
    place: &Place,
) -> Result<(Vec<ExportItem>, Place)> {
    let full = |n: usize| n as u64 >= EXPORT_PAGE;
    Ok(match place {
        Place::Organizations(after) => {
            let found = match organization {
                Some(id) if after.is_none() => storage::organizations::find(tx, id).await?.into_iter().collect(),
                Some(_) => Vec::new(),
                None => storage::organizations::list(tx, after.as_deref(), EXPORT_PAGE).await?,
            };
            let next = match found.last() {
                Some(last) if full(found.len()) => Place::Organizations(Some(last.id.clone())),
                _ => Place::Permissions(None),
            };
            (found.into_iter().map(ExportItem::Organization).collect(), next)
        }
        Place::Permissions(after) => {
            let found = storage::permissions::list(tx, after.as_deref(), EXPORT_PAGE).await?;
            let next = match found.last() {
                Some(last) if full(found.len()) => Place::Permissions(Some(last.name.clone())),
                _ => Place::Memberships(None),
            };
            (found.into_iter().map(ExportItem::Permission).collect(), next)
        }
        Place::Memberships(after) => {
            let after = after.as_ref().map(|(o, u)| (o.as_str(), u.as_str()));
            let found = storage::memberships::page(tx, organization, after, EXPORT_PAGE).await?;
            let next = match found.last() {
                Some(last) if full(found.len()) => {
                    Place::Memberships(Some((last.organization_id.clone(), last.user_id.clone())))
                }
                _ => Place::Grants(None),
            };
            (found.into_iter().map(ExportItem::Membership).collect(), next)
        }
        Place::Grants(after) => {
            let found = storage::grants::page(tx, organization, after.as_ref(), EXPORT_PAGE).await?;
            let next = match found.last() {
                Some(last) if full(found.len()) => Place::Grants(Some(GrantKey {
                    organization_id: last.organization_id.clone(),
                    user_id: last.user_id.clone(),
                    resource_type: last.resource_type.clone(),
                    resource_id: last.resource_id.clone(),
                    permission_id: last.permission_id,
                })),
                _ => Place::Done,
            };
            (found.into_iter().map(ExportItem::Grant).collect(), next)
        }
        Place::Done => (Vec::new(), Place::Done),
    })
}
