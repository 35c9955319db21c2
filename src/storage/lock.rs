use sea_orm::{EntityTrait, QuerySelect, Select};

/// Row locks taken by reads inside write transactions. PostgreSQL honours them; on SQLite
/// a write transaction already holds the whole database, and sea-query omits them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lock {
    /// Others may read and share-lock, not change or delete (FOR SHARE).
    Share,
    /// Exclusive: concurrent writers of the row queue behind us (FOR UPDATE).
    Update,
}

pub(crate) fn apply<E: EntityTrait>(select: Select<E>, lock: Lock) -> Select<E> {
    match lock {
        Lock::Share => select.lock_shared(),
        Lock::Update => select.lock_exclusive(),
    }
}
