//! Tokens that verified, remembered until they expire.
//!
//! Clients send the same bearer token on every call; verifying it each time (decoding,
//! the signature, parsing the claims) was a visible share of a check's CPU. A
//! token is remembered by its SHA-256 digest, so neither the token nor a timing
//! difference between similar tokens is kept or exposed, and every entry has the same
//! size. The set is bounded, forgotten whenever the keys are reloaded (every 30 s with
//! `serve`), and an entry is used only while its token would still pass the `exp` check.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{SystemTime, UNIX_EPOCH},
};

use sha2::{Digest, Sha256};

use super::Caller;

/// Distinct tokens remembered at once: far more than the services of one deployment
/// send, few enough to be a few hundred kilobytes.
const CAPACITY: usize = 4096;

#[derive(Default)]
pub struct VerifiedTokens {
    entries: Mutex<HashMap<[u8; 32], Verified>>,
}

struct Verified {
    caller: Caller,
    /// The last second (Unix time) at which the token still passes verification.
    valid_until: u64,
}

impl VerifiedTokens {
    pub fn get(&self, token: &str) -> Option<Caller> {
        let key = digest(token);
        let now = now();
        let entries = self.entries.lock().ok()?;
        entries.get(&key).filter(|verified| now <= verified.valid_until).map(|verified| verified.caller.clone())
    }

    pub fn remember(&self, token: &str, caller: &Caller) {
        let Some(valid_until) = caller.valid_until else { return };
        let key = digest(token);
        let now = now();
        let Ok(mut entries) = self.entries.lock() else { return };
        if entries.len() >= CAPACITY {
            entries.retain(|_, verified| now <= verified.valid_until);
        }
        if entries.len() >= CAPACITY {
            entries.clear();
        }
        entries.insert(key, Verified { caller: caller.clone(), valid_until });
    }

    pub fn forget_all(&self) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.clear();
        }
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_secs())
}
