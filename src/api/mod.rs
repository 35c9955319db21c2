//! The gRPC edge: one file per service. Each handler opens a [`RequestContext`],
//! validates and converts the protobuf request into a domain command, calls the service
//! layer, and converts the answer back. Protobuf types live only here.

mod audit_service;
mod bulk_service;
mod context;
pub(crate) mod convert;
mod directory_service;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod grant_service;
mod status;
mod validate;

pub use audit_service::AuditApi;
pub use bulk_service::BulkApi;
pub use context::{REQUEST_ID, request_id};
pub use directory_service::DirectoryApi;
pub use grant_service::GrantApi;

/// The generated protobuf types and tonic stubs of `proto/grants/v1`.
pub mod pb {
    tonic::include_proto!("grants.v1");

    /// For server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("grants_v1_descriptor");
}
