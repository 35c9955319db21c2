use sea_orm::{EntityTrait, QuerySelect, Select, sea_query::LockType};

/// Row locks taken by reads inside write transactions. PostgreSQL honours them; on SQLite
/// a write transaction already holds the whole database, and sea-query omits them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lock {
    /// Others may read and key-share-lock the row, but not delete it or lock it for
    /// update (FOR KEY SHARE: the lightest lock that holds off a deleter).
    KeyShare,
    /// Exclusive: concurrent writers of the row queue behind us (FOR UPDATE).
    Update,
}

pub(crate) fn apply<E: EntityTrait>(select: Select<E>, lock: Lock) -> Select<E> {
    match lock {
        Lock::KeyShare => select.lock(LockType::KeyShare),
        Lock::Update => select.lock_exclusive(),
    }
}
