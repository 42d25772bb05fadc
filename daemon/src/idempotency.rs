//! `Idempotency-Key` on the API's POSTs that create something: the key, the SHA-256 of the body
//! and what was created are written to the journal's store before the commit that makes the
//! record durable, so a retry after a lost answer (or a 503 whose record was in fact written)
//! finds the first record instead of making a second. The same key with another body is a
//! conflict. Keys are kept like the records they name: never deleted by a timer.
//!
//! It must never answer from an entry whose record is not in the journal (a crash between the two
//! writes of one commit): such a key is treated as new.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, StatusCode};
use onshi_sync::store::{Store, StoreError, Tree};
use serde::{Deserialize, Serialize};

use crate::api::ApiError;

/// The header, as the contract spells it.
pub const HEADER: &str = "idempotency-key";
/// The longest key taken (a UUID is 36 characters).
pub const MAX_KEY_LEN: usize = 255;

/// What a key created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Created {
    /// A check (`POST /v1/checks`).
    Check { check_id: String },
    /// A card check on the reader (`POST /v1/reader/card`), with its face file if one was written.
    CardCheck {
        check_id: String,
        face_file: Option<String>,
    },
    /// A provisional record (`POST /v1/provisional`).
    Provisional { record_id: String },
    /// A batch inquiry's answer (`POST /v1/batch`), as sent.
    Batch { answer: String },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Stored {
    V1 {
        body_sha256: [u8; 32],
        created: Created,
    },
}

/// A key as read from a request: the endpoint it is scoped to, the key, the body's hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    store_key: Vec<u8>,
    body_sha256: [u8; 32],
}

/// The stored keys and the keys of requests in flight.
#[derive(Debug, Clone)]
pub struct IdempotencyStore {
    tree: Arc<dyn Tree>,
    in_flight: Arc<Mutex<HashSet<Vec<u8>>>>,
}

/// A key held while its request runs; a second request with the same key meanwhile is refused.
#[derive(Debug)]
pub struct Claim {
    store: IdempotencyStore,
    key: Key,
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.store
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key.store_key);
    }
}

fn header_error(code: &str, status: StatusCode, message: impl Into<String>) -> ApiError {
    ApiError {
        status,
        code: code.to_string(),
        field: Some("Idempotency-Key".into()),
        message: message.into(),
    }
}

/// The request's key for `endpoint`, if it sent one: visible ASCII, 1 to 255 characters.
pub fn key_of(headers: &HeaderMap, endpoint: &str, body: &[u8]) -> Result<Option<Key>, ApiError> {
    let Some(v) = headers.get(HEADER) else {
        return Ok(None);
    };
    let k = v.as_bytes();
    if k.is_empty() || k.len() > MAX_KEY_LEN || !k.iter().all(|b| b.is_ascii_graphic()) {
        return Err(header_error(
            "invalid_format",
            StatusCode::BAD_REQUEST,
            format!("Idempotency-Key: 1 to {MAX_KEY_LEN} visible ASCII characters (e.g. a UUID)"),
        ));
    }
    let mut store_key = Vec::with_capacity(endpoint.len() + 1 + k.len());
    store_key.extend_from_slice(endpoint.as_bytes());
    store_key.push(0);
    store_key.extend_from_slice(k);
    let digest = ring::digest::digest(&ring::digest::SHA256, body);
    let mut body_sha256 = [0u8; 32];
    body_sha256.copy_from_slice(digest.as_ref());
    Ok(Some(Key {
        store_key,
        body_sha256,
    }))
}

/// What a key found.
#[derive(Debug)]
pub enum Lookup {
    /// New (or its record was lost with an unfinished commit): go on, holding the claim, and
    /// [`IdempotencyStore::put`] what is created before the commit.
    New(Claim),
    /// Created before, by the same body.
    Replay(Created),
}

impl IdempotencyStore {
    pub fn open(store: &dyn Store) -> Result<Self, StoreError> {
        Ok(IdempotencyStore {
            tree: store.tree("api.idempotency")?,
            in_flight: Arc::default(),
        })
    }

    /// Looks a key up and claims it if it is new. `exists` tells whether what an entry names is
    /// still in the journal. 409 if the key came with another body or is in flight.
    pub fn begin(
        &self,
        key: Key,
        exists: impl FnOnce(&Created) -> Result<bool, ApiError>,
    ) -> Result<Lookup, ApiError> {
        {
            let mut f = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
            if !f.insert(key.store_key.clone()) {
                return Err(header_error(
                    "idempotency_key_in_use",
                    StatusCode::CONFLICT,
                    "Idempotency-Key: a request with this key is still being answered; retry in a moment",
                ));
            }
        }
        // From here the claim releases the key on every return.
        let claim = Claim {
            store: self.clone(),
            key,
        };
        let stored = self
            .tree
            .get(&claim.key.store_key)
            .map_err(crate::api::unavailable)?;
        let Some(bytes) = stored else {
            return Ok(Lookup::New(claim));
        };
        let Stored::V1 {
            body_sha256,
            created,
        } = postcard::from_bytes::<Stored>(&bytes).map_err(crate::api::unavailable)?;
        if body_sha256 != claim.key.body_sha256 {
            return Err(header_error(
                "idempotency_key_reused",
                StatusCode::CONFLICT,
                "Idempotency-Key: this key was used with a different request body; use a new key for a new request",
            ));
        }
        if exists(&created)? {
            Ok(Lookup::Replay(created))
        } else {
            Ok(Lookup::New(claim))
        }
    }

    /// Records what the claimed key created; the caller's commit makes it durable with the record.
    pub fn put(&self, claim: &Claim, created: Created) -> Result<(), StoreError> {
        let bytes = postcard::to_allocvec(&Stored::V1 {
            body_sha256: claim.key.body_sha256,
            created,
        })
        .map_err(|e| StoreError::Corrupt {
            key: "idempotency".into(),
            reason: e.to_string(),
        })?;
        self.tree.put(&claim.key.store_key, &bytes)?;
        Ok(())
    }
}
