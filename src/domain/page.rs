//! Opaque page tokens.
//!
//! A token carries the sort key of the last row served and a checksum over that key and
//! the request's filters, so a token edited by hand, truncated, or replayed against a
//! different list is rejected. The checksum is not a secret: a forged token can only
//! start a list the caller may read anyway at another position.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};

use super::FieldViolation;

pub const DEFAULT_PAGE_SIZE: u64 = 100;
pub const MAX_PAGE_SIZE: u64 = 1_000;

/// `page_size` as AIP-158 reads it: 0 means the default, larger than the maximum means
/// the maximum, negative is an error.
fn page_size(raw: i32) -> Result<u64, FieldViolation> {
    match raw {
        0 => Ok(DEFAULT_PAGE_SIZE),
        n if n < 0 => Err(FieldViolation::new("page_size", "must not be negative")),
        n => Ok(u64::try_from(n).map_or(MAX_PAGE_SIZE, |n| n.min(MAX_PAGE_SIZE))),
    }
}

/// A list request's position: how many rows to serve, and the token of the page before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub size: u64,
    pub token: String,
}

impl Page {
    /// Reads `page_size` and keeps `page_token` for [`Page::after`].
    pub fn parse(page_size_raw: i32, token: &str) -> Result<Self, FieldViolation> {
        Ok(Page { size: page_size(page_size_raw)?, token: token.to_owned() })
    }

    /// The sort key to continue after, checked against `scope` (the list and its
    /// filters); `key_len` is the number of sort-key columns.
    pub fn after(&self, scope: &str, key_len: usize) -> Result<Option<Vec<String>>, FieldViolation> {
        if self.token.is_empty() { Ok(None) } else { open("page_token", scope, &self.token, key_len).map(Some) }
    }

    /// The token for the page after `rows`, or an empty string when this was the last page.
    pub fn next_token<T>(&self, rows: &[T], scope: &str, key: impl Fn(&T) -> Vec<String>) -> String {
        match rows.last() {
            Some(last) if rows.len() as u64 >= self.size => seal(scope, &key(last)),
            _ => String::new(),
        }
    }
}

fn checksum(scope: &str, key: &[String]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(scope.as_bytes());
    for part in key {
        hasher.update([0]);
        hasher.update(part.as_bytes());
    }
    hasher.finalize()[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// An opaque token carrying `key`, bound to `scope` (page tokens, export cursors).
pub fn seal(scope: &str, key: &[String]) -> String {
    let mut payload = key.join("\n");
    payload.push('\n');
    payload.push_str(&checksum(scope, key));
    URL_SAFE_NO_PAD.encode(payload)
}

/// The key of a token [`seal`] made for `scope`; `field` names the token in the rejection.
pub fn open(field: &str, scope: &str, token: &str, key_len: usize) -> Result<Vec<String>, FieldViolation> {
    let invalid = || FieldViolation::new(field, "is not a token this list issued for this request");
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    let payload = String::from_utf8(bytes).map_err(|_| invalid())?;
    let mut parts: Vec<String> = payload.split('\n').map(str::to_owned).collect();
    let sum = parts.pop().ok_or_else(invalid)?;
    if parts.len() != key_len || checksum(scope, &parts) != sum {
        return Err(invalid());
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_round_trips_only_within_its_scope() {
        let first = Page { size: 1, token: String::new() };
        let token = first.next_token(&["k1"], "scope-a", |k| vec![k.to_string(), "x".into()]);
        let next = Page::parse(1, &token).expect("page size 1 is valid");
        assert_eq!(next.after("scope-a", 2), Ok(Some(vec!["k1".to_string(), "x".to_string()])));
        assert!(next.after("scope-b", 2).is_err());
        let tampered = Page { size: 1, token: format!("A{token}") };
        assert!(tampered.after("scope-a", 2).is_err());
    }

    #[test]
    fn page_size_defaults_clamps_and_rejects_negative() {
        assert_eq!(page_size(0), Ok(DEFAULT_PAGE_SIZE));
        assert_eq!(page_size(5000), Ok(MAX_PAGE_SIZE));
        assert!(page_size(-1).is_err());
    }
}
