//! Who is calling: bearer tokens (JWT) become a [`Caller`] carried in the request's
//! extensions. What a caller may do is decided later, inside each use-case's transaction
//! (`service::access`), so that a right revoked mid-flight cannot be used once more.

mod cache;
mod keys;
mod token;
mod verify;

pub use keys::{KeyConfig, KeySet, default_secret_path, load_or_create_secret, secret_bytes};
pub use token::{TokenRequest, mint};
pub use verify::{AuthError, Claims, OneOrMany, Verifier};

use std::sync::Arc;

use tonic::{Request, Status, service::Interceptor};

/// The token scope that makes a caller an administrator.
pub const ADMIN_SCOPE: &str = "grants:admin";

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's `sub`: a user id.
    pub subject: String,
    /// The token carries the `grants:admin` scope.
    pub admin: bool,
    /// When the token names organizations (`orgs` claim), it acts in those only.
    pub organizations: Option<Vec<String>>,
    /// The last second (Unix time) at which the token is still accepted: its `exp` plus
    /// the leeway. `None` when authentication is off.
    pub valid_until: Option<u64>,
}

/// Authenticates every request of the services it wraps.
#[derive(Clone)]
pub enum Authenticator {
    /// Verifies `authorization: Bearer <JWT>`.
    Tokens(Arc<Verifier>),
    /// `--insecure-no-auth`: everyone is an anonymous administrator.
    Disabled,
}

impl Interceptor for Authenticator {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let caller = match self {
            Authenticator::Disabled => {
                Caller { subject: "anonymous".to_owned(), admin: true, organizations: None, valid_until: None }
            }
            Authenticator::Tokens(verifier) => {
                let header =
                    request.metadata().get("authorization").ok_or(AuthError::Missing).map_err(unauthenticated)?;
                let value = header.to_str().map_err(|_| unauthenticated(AuthError::Malformed))?;
                let token = value
                    .strip_prefix("Bearer ")
                    .or_else(|| value.strip_prefix("bearer "))
                    .ok_or(AuthError::NotBearer)
                    .map_err(unauthenticated)?;
                verifier.verify(token.trim()).map_err(unauthenticated)?
            }
        };
        request.extensions_mut().insert(caller);
        Ok(request)
    }
}

fn unauthenticated(err: AuthError) -> Status {
    Status::unauthenticated(err.to_string())
}
