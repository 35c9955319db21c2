//! The one mapping from [`Error`] to a gRPC status, with google.rpc error details a
//! client can act on. Messages name fields and ids the caller sent, never SQL or
//! database text.

use tonic::{Code, Status};
use tonic_types::{ErrorDetail, ErrorDetails, ResourceInfo, StatusExt};

use crate::domain::{Error, Interruption};

/// Statuses travel in HTTP/2 headers, which peers cap at a few KiB (16 KiB in hyper):
/// a NOT_FOUND for hundreds of ids would reset the connection instead of arriving.
/// At 128 bytes an id, this many fit with room to spare.
const MAX_LISTED_IDS: usize = 20;

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        match err {
            Error::InvalidArgument(violations) => {
                let mut details = ErrorDetails::new();
                for violation in &violations {
                    details.add_bad_request_violation(&violation.field, &violation.description);
                }
                Status::with_error_details(
                    Code::InvalidArgument,
                    Error::InvalidArgument(violations).to_string(),
                    details,
                )
            }
            Error::NotFound { kind, ids } => {
                let shown = ids.len().min(MAX_LISTED_IDS);
                let mut message = format!("{kind} not found: {}", ids[..shown].join(", "));
                if ids.len() > shown {
                    message.push_str(&format!(" and {} more", ids.len() - shown));
                }
                let details = ids
                    .into_iter()
                    .take(shown)
                    .map(|id| ErrorDetail::ResourceInfo(ResourceInfo::new(kind, id, "", "does not exist")));
                Status::with_error_details_vec(Code::NotFound, message, details)
            }
            Error::AlreadyExists { kind, id } => {
                let message = format!("{kind} already exists: {id}");
                Status::with_error_details(
                    Code::AlreadyExists,
                    message,
                    ErrorDetails::with_resource_info(kind, id, "", "already exists"),
                )
            }
            Error::FailedPrecondition { reason, subject, message } => {
                let mut details = ErrorDetails::new();
                details.add_precondition_failure_violation(reason, subject, &message);
                Status::with_error_details(Code::FailedPrecondition, message, details)
            }
            Error::PermissionDenied(message) => Status::permission_denied(message),
            Error::Rejected(rejections) => {
                let message = Error::Rejected(rejections.clone()).to_string();
                let mut details = ErrorDetails::new();
                for rejection in rejections.iter().take(MAX_LISTED_IDS) {
                    details.add_bad_request_violation(
                        format!("records[{}].{}", rejection.position, rejection.field),
                        &rejection.reason,
                    );
                }
                Status::with_error_details(Code::InvalidArgument, message, details)
            }
            Error::SnapshotChanged(message) => Status::aborted(message),
            Error::TimedOut(message) => Status::deadline_exceeded(message),
            Error::WatchInterrupted { reason: Interruption::FellBehind, message } => Status::aborted(message),
            Error::WatchInterrupted { reason: Interruption::TokenExpired, message } => Status::unauthenticated(message),
            Error::WatchInterrupted { reason: Interruption::Unavailable, message } => Status::unavailable(message),
            Error::Exhausted(message) => Status::resource_exhausted(message),
            Error::Conflict | Error::Aborted { .. } => {
                Status::aborted("the transaction kept conflicting with concurrent writes; retry the request")
            }
            Error::Unavailable(_) => Status::unavailable("the database is unavailable; retry the request"),
            Error::Internal(_) => {
                Status::internal("internal error; the server log has the details under this request id")
            }
        }
    }
}
