use std::fmt;

/// Everything that can go wrong in grantd, small enough to pass around by value.
/// `api::status` maps it to a gRPC status; nothing else does.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("invalid argument: {}", join(.0))]
    InvalidArgument(Vec<FieldViolation>),

    #[error("{kind} not found: {}", .ids.join(", "))]
    NotFound { kind: &'static str, ids: Vec<String> },

    #[error("{kind} already exists: {id}")]
    AlreadyExists { kind: &'static str, id: String },

    /// `reason` is a stable UPPER_SNAKE code for machines, `message` is for people.
    #[error("{message}")]
    FailedPrecondition { reason: &'static str, subject: String, message: String },

    /// The caller lacks a right; the message says which, and where.
    #[error("{0}")]
    PermissionDenied(String),

    /// A WatchChanges stream ended early, for `reason`; the message names the revision
    /// to resume after.
    #[error("{message}")]
    WatchInterrupted { reason: Interruption, message: String },

    /// A limit of the server's was reached (open WatchChanges streams); the message says
    /// which.
    #[error("{0}")]
    Exhausted(String),

    /// An import batch held records that cannot be written; nothing of it was.
    #[error("{} records of the batch cannot be written", .0.len())]
    Rejected(Vec<super::bulk::Rejection>),

    /// An export cannot continue at its snapshot's revision: what it had left to send
    /// changed since. The message says to start again.
    #[error("{0}")]
    SnapshotChanged(String),

    /// A stream's other end kept us waiting longer than the server allows; the message
    /// says for what.
    #[error("{0}")]
    TimedOut(String),

    /// A serialization failure or deadlock; retried by the transaction loop.
    #[error("transaction conflict")]
    Conflict,

    /// Still conflicting after the transaction loop's retries.
    #[error("transaction aborted after {attempts} attempts")]
    Aborted { attempts: u32 },

    /// The database cannot be reached or gave no connection in time.
    #[error("database unavailable: {0}")]
    Unavailable(String),

    /// A bug of ours or a database answer we did not expect; the text is logged, never sent.
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a WatchChanges stream ended before the client left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interruption {
    /// The watcher did not keep up with the writers.
    FellBehind,
    /// The caller's token expired.
    TokenExpired,
    /// Nothing the client did: the server stops, lost its database, or the stream
    /// reached its longest lifetime.
    Unavailable,
}

/// One rejected field of a request: its protobuf path and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

impl FieldViolation {
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self { field: field.into(), description: description.into() }
    }
}

impl fmt::Display for FieldViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.description)
    }
}

impl From<FieldViolation> for Error {
    fn from(violation: FieldViolation) -> Self {
        Error::InvalidArgument(vec![violation])
    }
}

fn join(violations: &[FieldViolation]) -> String {
    violations.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}
