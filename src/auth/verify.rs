//! JWT verification: signature, `exp`, `nbf`, and (when configured) `iss` and `aud`.
//!
//! Each configured key has exactly one algorithm and only that algorithm is accepted
//! with it, which shuts out `alg: none` and HS/RS confusion (an RSA public key used as
//! an HMAC secret).

use jsonwebtoken::{Validation, decode, decode_header, errors::ErrorKind};
use serde::{Deserialize, Serialize};

use std::sync::RwLock;

use super::{ADMIN_SCOPE, Caller, KeyConfig, KeySet, cache::VerifiedTokens, keys::VerifyKey};
use crate::domain::UserId;

/// What a token is rejected for; the text goes to the client, so it names the problem,
/// never a key, and never what the token itself says (an attacker sizes that).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing authorization metadata: send `authorization: Bearer <token>`")]
    Missing,
    #[error("authorization metadata is not `Bearer <token>`")]
    NotBearer,
    #[error("malformed token")]
    Malformed,
    #[error("token algorithm {0} is not accepted by this server")]
    Algorithm(String),
    #[error("token names a key id (kid) this server does not know; it holds {0}")]
    UnknownKey(String),
    #[error("token signature does not verify with the keys this server holds: {0}")]
    Signature(String),
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet (nbf)")]
    NotYetValid,
    #[error("token issuer is not accepted")]
    Issuer,
    #[error("token audience is not accepted")]
    Audience,
    #[error("token claims are invalid: {0}")]
    Claims(String),
}

/// A claim that issuers send either as one string or as an array (RFC 7519 allows both
/// for `aud`; identity providers do both for `scp`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    /// The values; a single string is split on spaces, as OAuth 2.0 scopes are.
    fn words(&self) -> Vec<&str> {
        match self {
            OneOrMany::One(text) => text.split(' ').filter(|w| !w.is_empty()).collect(),
            OneOrMany::Many(items) => items.iter().map(String::as_str).collect(),
        }
    }
}

/// The claims grantd reads. `sub` and `exp` default to empty so that a token missing
/// them is reported as such by the required-claims check, not as malformed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Claims {
    #[serde(default)]
    pub sub: String,
    #[serde(default)]
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<OneOrMany>,
    /// Space-separated scopes (OAuth 2.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Scopes as an array or a space-separated string (Azure AD, Okta).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scp: Option<OneOrMany>,
    /// Organizations the token may act in; all when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orgs: Option<Vec<String>>,
}

impl Claims {
    fn is_admin(&self) -> bool {
        let in_scope = self.scope.as_deref().is_some_and(|s| s.split(' ').any(|s| s == ADMIN_SCOPE));
        let in_scp = self.scp.as_ref().is_some_and(|s| s.words().contains(&ADMIN_SCOPE));
        in_scope || in_scp
    }
}

/// Seconds of clock skew tolerated on `exp` and `nbf`.
const LEEWAY: u64 = 30;

/// Verifies tokens against a [`KeySet`] and the configured issuer and audience.
/// The keys are replaced in place by [`Verifier::reload`], so files can be rotated
/// while the server runs.
pub struct Verifier {
    config: KeyConfig,
    keys: RwLock<KeySet>,
    issuer: Option<String>,
    audience: Option<String>,
    verified: VerifiedTokens,
}

impl Verifier {
    pub fn new(config: KeyConfig, issuer: Option<String>, audience: Option<String>) -> Result<Self, String> {
        let keys = RwLock::new(KeySet::load(&config)?);
        Ok(Self { config, keys, issuer, audience, verified: VerifiedTokens::default() })
    }

    /// Reads the key files again; on failure the keys in use stay.
    pub fn reload(&self) -> Result<(), String> {
        let keys = KeySet::load(&self.config)?;
        *self.keys.write().map_err(|_| "key set lock poisoned".to_owned())? = keys;
        // A token signed with a key that is gone must not pass from memory.
        self.verified.forget_all();
        Ok(())
    }

    pub fn verify(&self, token: &str) -> Result<Caller, AuthError> {
        if let Some(caller) = self.verified.get(token) {
            return Ok(caller);
        }
        let header = decode_header(token).map_err(|_| AuthError::Malformed)?;
        let keys = self.keys.read().map_err(|_| AuthError::Malformed)?;
        for key in keys.candidates(header.kid.as_deref(), header.alg)? {
            match self.verify_with(token, key) {
                Err(AuthError::Signature(_)) => {}
                Ok(caller) => {
                    self.verified.remember(token, &caller);
                    return Ok(caller);
                }
                Err(other) => return Err(other),
            }
        }
        Err(AuthError::Signature(keys.describe()))
    }

    fn verify_with(&self, token: &str, key: &VerifyKey) -> Result<Caller, AuthError> {
        let mut validation = Validation::new(key.algorithm);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY;
        match &self.issuer {
            Some(issuer) => {
                validation.set_issuer(&[issuer]);
                validation.required_spec_claims.insert("iss".into());
            }
            None => validation.iss = None,
        }
        match &self.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                validation.required_spec_claims.insert("aud".into());
            }
            None => validation.validate_aud = false,
        }
        let claims = decode::<Claims>(token, &key.decoding, &validation).map_err(|err| match err.kind() {
            ErrorKind::InvalidSignature => AuthError::Signature(String::new()),
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::ImmatureSignature => AuthError::NotYetValid,
            ErrorKind::InvalidIssuer => AuthError::Issuer,
            ErrorKind::InvalidAudience => AuthError::Audience,
            ErrorKind::InvalidAlgorithm => AuthError::Algorithm(format!("{:?}", key.algorithm)),
            ErrorKind::MissingRequiredClaim(claim) => AuthError::Claims(format!("missing {claim}")),
            ErrorKind::InvalidClaimFormat(claim) => AuthError::Claims(format!("malformed {claim}")),
            _ => AuthError::Malformed,
        })?;
        let claims = claims.claims;
        if UserId::parse(&claims.sub).is_err() {
            return Err(AuthError::Claims("sub is not a valid user id".into()));
        }
        Ok(Caller {
            admin: claims.is_admin(),
            subject: claims.sub,
            organizations: claims.orgs,
            valid_until: Some(claims.exp.saturating_add(LEEWAY)),
        })
    }
}
