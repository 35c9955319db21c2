//! Minting tokens with the HS256 secret, for `grantd token`: the quickstart needs no
//! identity provider.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{EncodingKey, Header, encode};

use super::{ADMIN_SCOPE, Claims, verify::OneOrMany};

#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub subject: String,
    pub admin: bool,
    pub ttl: Duration,
    pub organizations: Option<Vec<String>>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
}

pub fn mint(secret: &[u8], request: &TokenRequest) -> Result<String, jsonwebtoken::errors::Error> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let claims = Claims {
        sub: request.subject.clone(),
        exp: now + request.ttl.as_secs(),
        nbf: Some(now),
        iat: Some(now),
        iss: request.issuer.clone(),
        aud: request.audience.clone().map(OneOrMany::One),
        scope: request.admin.then(|| ADMIN_SCOPE.to_owned()),
        scp: None,
        orgs: request.organizations.clone(),
    };
    encode(&Header::default(), &claims, &EncodingKey::from_secret(secret))
}
