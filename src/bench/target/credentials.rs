//! What requests to a server carry besides their body: HS256 tokens for a
//! server that checks them, and idempotency keys.

use crate::domain::ids::UserId;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Users whose token is kept once minted; past this, tokens are minted per request.
const TOKENS_KEPT_MAX: usize = 100_000;
/// How long minted tokens are valid: longer than any run.
const TOKEN_TTL_SECS: u64 = 7 * 24 * 3600;

/// HS256 tokens for a server started with `--auth-jwt-secret`: one per
/// user (`sub` = the user id), minted on first use, and an admin's.
pub struct Tokens {
    secret: Vec<u8>,
    pub(super) admin: String,
    users: Mutex<std::collections::HashMap<u64, Arc<str>>>,
}

impl Tokens {
    pub fn new(secret: &str) -> Result<Tokens, String> {
        let secret = secret.as_bytes().to_vec();
        let admin = crate::http::auth::mint_hs256(&secret, None, true, TOKEN_TTL_SECS)?;
        Ok(Tokens {
            secret,
            admin,
            users: Mutex::new(std::collections::HashMap::new()),
        })
    }

    pub(super) fn user(&self, id: UserId) -> Arc<str> {
        let mut kept = self.users.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(t) = kept.get(&id.0) {
            return t.clone();
        }
        let token: Arc<str> =
            crate::http::auth::mint_hs256(&self.secret, Some(id.0), false, TOKEN_TTL_SECS)
                .unwrap_or_default()
                .into();
        if kept.len() < TOKENS_KEPT_MAX {
            kept.insert(id.0, token.clone());
        }
        token
    }
}

/// New idempotency keys, unique within a run and across runs.
pub struct KeySource {
    prefix: String,
    next: AtomicU64,
}

impl KeySource {
    pub fn new() -> KeySource {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        KeySource {
            prefix: format!("bench-{nanos:x}"),
            next: AtomicU64::new(0),
        }
    }

    pub fn next(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n:x}", self.prefix)
    }
}

impl Default for KeySource {
    fn default() -> Self {
        KeySource::new()
    }
}
