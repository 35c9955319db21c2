//! How database failures become domain errors: which are worth a retry, which mean the
//! database is away, and which are bugs.

use sea_orm::{DbErr, RuntimeErr};

use crate::domain::Error;

/// PostgreSQL serialization_failure, deadlock_detected and foreign_key_violation; SQLite
/// BUSY and LOCKED (with their extended codes) once the busy timeout ran out. Writes look
/// up what they reference in their own transaction, so a foreign-key violation means that
/// another transaction deleted it meanwhile (a permission, say, which writes read without
/// locking it): the next attempt sees it gone and answers so.
const CONFLICT_CODES: &[&str] = &["40001", "40P01", "23503", "5", "6", "261", "262", "517"];

/// PostgreSQL classes 08 (connection exception), 53 (insufficient resources) and 57P
/// (operator intervention, e.g. the server is shutting down).
fn is_unavailable_code(code: &str) -> bool {
    code.starts_with("08") || code.starts_with("53") || code.starts_with("57P")
}

impl From<DbErr> for Error {
    fn from(err: DbErr) -> Self {
        match &err {
            DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => Error::Unavailable(err.to_string()),
            DbErr::Exec(RuntimeErr::SqlxError(sqlx_err)) | DbErr::Query(RuntimeErr::SqlxError(sqlx_err)) => {
                classify_sqlx(sqlx_err, &err)
            }
            _ => Error::Internal(err.to_string()),
        }
    }
}

fn classify_sqlx(sqlx_err: &sqlx::Error, err: &DbErr) -> Error {
    match sqlx_err {
        sqlx::Error::Database(db_err) => match db_err.code() {
            Some(code) if CONFLICT_CODES.contains(&code.as_ref()) => Error::Conflict,
            Some(code) if is_unavailable_code(&code) => Error::Unavailable(err.to_string()),
            _ => Error::Internal(err.to_string()),
        },
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => Error::Unavailable(err.to_string()),
        _ => Error::Internal(err.to_string()),
    }
}

/// The connection, not the statement, failed: it broke, or the server ended the session
/// (PostgreSQL classes 08 and 57P, e.g. after a restart). Another connection may succeed.
pub(super) fn is_broken_connection(err: &DbErr) -> bool {
    let (DbErr::Query(RuntimeErr::SqlxError(sqlx_err)) | DbErr::Exec(RuntimeErr::SqlxError(sqlx_err))) = err else {
        return false;
    };
    match sqlx_err {
        sqlx::Error::Database(db_err) => {
            db_err.code().is_some_and(|code| code.starts_with("08") || code.starts_with("57P"))
        }
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) | sqlx::Error::WorkerCrashed => true,
        _ => false,
    }
}
