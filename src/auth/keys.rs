//! Verification keys: an HS256 secret, PEM public keys (RS256, ES256 or EdDSA, told
//! apart by the key itself) and JWKS files whose keys are chosen by `kid`. Files are
//! read again by [`KeySet::load`], which the server calls periodically, so keys can be
//! rotated by replacing files.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use jsonwebtoken::{
    Algorithm, DecodingKey,
    jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm},
};

use super::AuthError;

/// Where keys come from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyConfig {
    pub hs256_secret_file: Option<PathBuf>,
    pub public_key_files: Vec<PathBuf>,
    pub jwks_file: Option<PathBuf>,
}

impl KeyConfig {
    pub fn is_empty(&self) -> bool {
        self.hs256_secret_file.is_none() && self.public_key_files.is_empty() && self.jwks_file.is_none()
    }
}

pub struct VerifyKey {
    pub kid: Option<String>,
    pub algorithm: Algorithm,
    pub decoding: DecodingKey,
}

/// The keys tokens may be signed with.
pub struct KeySet {
    keys: Vec<VerifyKey>,
}

impl KeySet {
    pub fn load(config: &KeyConfig) -> Result<Self, String> {
        let mut keys = Vec::new();
        if let Some(path) = &config.hs256_secret_file {
            let secret = read_secret(path).map_err(|err| format!("cannot read {}: {err}", path.display()))?;
            keys.push(VerifyKey {
                kid: None,
                algorithm: Algorithm::HS256,
                decoding: DecodingKey::from_secret(&secret),
            });
        }
        for path in &config.public_key_files {
            let pem = fs::read(path).map_err(|err| format!("cannot read {}: {err}", path.display()))?;
            keys.push(public_key_from_pem(&pem).ok_or_else(|| {
                format!("{} holds no RSA, EC P-256 or Ed25519 public key in PEM form", path.display())
            })?);
        }
        if let Some(path) = &config.jwks_file {
            let text = fs::read_to_string(path).map_err(|err| format!("cannot read {}: {err}", path.display()))?;
            let set: JwkSet =
                serde_json::from_str(&text).map_err(|err| format!("{} is not a JWKS: {err}", path.display()))?;
            for jwk in &set.keys {
                let algorithm = jwk_algorithm(jwk).ok_or_else(|| {
                    format!("{}: key {:?} has no usable algorithm", path.display(), jwk.common.key_id)
                })?;
                let decoding = DecodingKey::from_jwk(jwk).map_err(|err| format!("{}: {err}", path.display()))?;
                keys.push(VerifyKey { kid: jwk.common.key_id.clone(), algorithm, decoding });
            }
        }
        if keys.is_empty() {
            return Err("no verification key configured".into());
        }
        Ok(Self { keys })
    }

    /// The keys held, by kind and id, never their material: "an HS256 secret, an RS256
    /// public key, kid "k1" (ES256)". Told to a caller whose token does not verify, so
    /// that a token signed with the wrong key says which one the server expected.
    pub fn describe(&self) -> String {
        const LISTED: usize = 5;
        let mut described: Vec<String> = self
            .keys
            .iter()
            .take(LISTED)
            .map(|key| match (&key.kid, key.algorithm) {
                (Some(kid), algorithm) => format!("kid {:?} ({algorithm:?})", truncated(kid)),
                (None, Algorithm::HS256) => "an HS256 secret".to_owned(),
                (None, algorithm) => format!("an {algorithm:?} public key"),
            })
            .collect();
        if self.keys.len() > LISTED {
            described.push(format!("{} more", self.keys.len() - LISTED));
        }
        described.join(", ")
    }

    /// The keys that may have signed a token with this header: the one named by `kid`,
    /// or every key of the token's algorithm when it names none.
    pub fn candidates(&self, kid: Option<&str>, algorithm: Algorithm) -> Result<Vec<&VerifyKey>, AuthError> {
        let matching: Vec<&VerifyKey> = match kid {
            Some(kid) => {
                let key = self
                    .keys
                    .iter()
                    .find(|key| key.kid.as_deref() == Some(kid))
                    .ok_or_else(|| AuthError::UnknownKey(self.describe()))?;
                vec![key]
            }
            None => self.keys.iter().collect(),
        };
        let matching: Vec<&VerifyKey> = matching.into_iter().filter(|key| key.algorithm == algorithm).collect();
        if matching.is_empty() {
            return Err(AuthError::Algorithm(format!("{algorithm:?}")));
        }
        Ok(matching)
    }
}

/// A key id as told to callers: ids come from the operator's JWKS, but a message stays short.
fn truncated(kid: &str) -> &str {
    kid.char_indices().nth(64).map_or(kid, |(end, _)| &kid[..end])
}

fn public_key_from_pem(pem: &[u8]) -> Option<VerifyKey> {
    let key = |algorithm, decoding| VerifyKey { kid: None, algorithm, decoding };
    DecodingKey::from_rsa_pem(pem)
        .map(|k| key(Algorithm::RS256, k))
        .or_else(|_| DecodingKey::from_ec_pem(pem).map(|k| key(Algorithm::ES256, k)))
        .or_else(|_| DecodingKey::from_ed_pem(pem).map(|k| key(Algorithm::EdDSA, k)))
        .ok()
}

fn jwk_algorithm(jwk: &jsonwebtoken::jwk::Jwk) -> Option<Algorithm> {
    if let Some(alg) = jwk.common.key_algorithm {
        return match alg {
            KeyAlgorithm::RS256 => Some(Algorithm::RS256),
            KeyAlgorithm::RS384 => Some(Algorithm::RS384),
            KeyAlgorithm::RS512 => Some(Algorithm::RS512),
            KeyAlgorithm::PS256 => Some(Algorithm::PS256),
            KeyAlgorithm::ES256 => Some(Algorithm::ES256),
            KeyAlgorithm::ES384 => Some(Algorithm::ES384),
            KeyAlgorithm::EdDSA => Some(Algorithm::EdDSA),
            _ => None,
        };
    }
    match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Some(Algorithm::RS256),
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => Some(Algorithm::ES256),
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P384 => Some(Algorithm::ES384),
        AlgorithmParameters::OctetKeyPair(_) => Some(Algorithm::EdDSA),
        _ => None,
    }
}

fn read_secret(path: &Path) -> io::Result<Vec<u8>> {
    let secret = fs::read(path)?;
    let trimmed = secret.trim_ascii().to_vec();
    if trimmed.len() < 32 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "an HS256 secret must be at least 32 bytes"));
    }
    Ok(trimmed)
}

/// Where the generated secret of an embedded SQLite database lives: beside the file. An
/// in-memory database has no file, and a secret that outlived its data would keep its
/// tokens valid for the next one.
pub fn default_secret_path(database_url: &str) -> Option<PathBuf> {
    if crate::storage::is_in_memory(database_url) {
        return None;
    }
    let path = database_url.strip_prefix("sqlite://").or_else(|| database_url.strip_prefix("sqlite:"))?;
    let path = path.split('?').next().unwrap_or(path);
    if path.is_empty() {
        return None;
    }
    Some(PathBuf::from(format!("{path}.jwt-secret")))
}

/// Reads the secret at `path`, first creating it (32 random bytes, hex, mode 0600) when
/// it does not exist. Answers whether it was created.
pub fn load_or_create_secret(path: &Path) -> io::Result<bool> {
    use rand::RngCore;
    use std::io::Write;

    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(mut file) => {
            let mut bytes = [0u8; 32];
            rand::rng().fill_bytes(&mut bytes);
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            file.write_all(hex.as_bytes())?;
            file.sync_all()?;
            Ok(true)
        }
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => read_secret(path).map(|_| false),
        Err(err) => Err(err),
    }
}

/// The secret bytes of an HS256 secret file, for minting tokens.
pub fn secret_bytes(path: &Path) -> io::Result<Vec<u8>> {
    read_secret(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_sqlite_file_gets_a_secret_beside_it() {
        let beside = |url| default_secret_path(url).map(|path| path.display().to_string());
        assert_eq!(beside("sqlite://grantd.db?mode=rwc").as_deref(), Some("grantd.db.jwt-secret"));
        assert_eq!(beside("sqlite:/var/lib/grantd/grantd.db").as_deref(), Some("/var/lib/grantd/grantd.db.jwt-secret"));
        assert_eq!(beside("sqlite::memory:"), None);
        assert_eq!(beside("sqlite://grants?mode=memory"), None);
        assert_eq!(beside("sqlite://"), None);
        assert_eq!(beside("postgres://postgres@127.0.0.1/grantd"), None);
    }
}
