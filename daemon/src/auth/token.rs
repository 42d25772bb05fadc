//! Bearer tokens for programs (receipt-computer software, scripts, the card-reader bridge).
//!
//! A token is `onshi_<id>_<secret>`: `id` is 8 random bytes in hex, the lookup key, shown by
//! `token list`; `secret` is 32 random bytes in hex. It is printed once, when made, and stored only
//! as an argon2id hash of the whole string (the issue asks for slow hashes). Verifying argon2id
//! costs tens of milliseconds, which per request would cost the edge its throughput, so a token
//! once verified is remembered in memory ([`TokenCache`]): keyed by its id, holding a SHA-256 of
//! the whole token string and the stored hash it was verified against. A later request with the
//! same id is accepted at the price of one SHA-256 only if that digest matches and the accounts
//! file still holds the same hash for an unrevoked token; a revoked token's entry is dropped, and
//! an entry whose stored hash changed is verified again. Nothing here reads the accounts file: the
//! caller passes the token's record as the file says now.
//!
//! Never log a token or its secret; [`NewToken`]'s `Debug` shows only the id.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::password::{HashError, hash_secret, random_bytes, verify_secret};

pub const TOKEN_PREFIX: &str = "onshi_";
const ID_BYTES: usize = 8;
const SECRET_BYTES: usize = 32;

/// A token's public id (16 lower-case hex digits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TokenId([u8; ID_BYTES]);

impl TokenId {
    pub fn parse(s: &str) -> Option<TokenId> {
        decode_hex::<ID_BYTES>(s).map(TokenId)
    }
}

impl fmt::Display for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&hex(&self.0))
    }
}

impl From<TokenId> for String {
    fn from(id: TokenId) -> String {
        id.to_string()
    }
}

impl TryFrom<String> for TokenId {
    type Error = String;
    fn try_from(s: String) -> Result<TokenId, String> {
        TokenId::parse(&s)
            .ok_or_else(|| format!("token id `{s}`: expected 16 lower-case hex digits"))
    }
}

/// A token just made: the text to show once, its id, and the hash to store.
pub struct NewToken {
    pub id: TokenId,
    /// `onshi_<id>_<secret>`: shown once, never stored.
    pub text: String,
    /// The argon2id PHC string of `text`.
    pub hash: String,
}

impl fmt::Debug for NewToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NewToken {{ id: {}, .. }}", self.id)
    }
}

impl NewToken {
    /// A fresh token from the system's random source, hashed (slow: tens of milliseconds).
    pub fn generate() -> Result<NewToken, HashError> {
        let id = TokenId(random_bytes::<ID_BYTES>()?);
        let secret = random_bytes::<SECRET_BYTES>()?;
        let text = format!("{TOKEN_PREFIX}{id}_{}", hex(&secret));
        let hash = hash_secret(text.as_bytes())?;
        Ok(NewToken { id, text, hash })
    }
}

/// The id of a presented token, if it has the shape of one (the secret is not checked here).
pub fn parse_presented(text: &str) -> Option<TokenId> {
    let rest = text.strip_prefix(TOKEN_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    decode_hex::<SECRET_BYTES>(secret)?;
    TokenId::parse(id)
}

/// What the accounts file says now about the token with a given id.
#[derive(Debug, Clone, Copy)]
pub struct TokenState<'a> {
    /// The stored argon2id hash.
    pub hash: &'a str,
    pub revoked: bool,
}

/// Verified tokens, so that the argon2id verification runs once per token (see the module doc).
#[derive(Debug, Default)]
pub struct TokenCache {
    verified: Mutex<HashMap<TokenId, Verified>>,
}

#[derive(Debug)]
struct Verified {
    /// The stored hash this token was verified against.
    hash: String,
    /// SHA-256 of the whole presented token.
    digest: [u8; 32],
}

/// The outcome of the fast path.
#[derive(Debug, PartialEq, Eq)]
#[must_use]
pub enum Lookup {
    /// Verified before against the same stored hash.
    Accepted,
    /// No such token, or revoked.
    Refused,
    /// Not (or no longer) in the cache: verify it ([`verify`], slow) then [`TokenCache::remember`].
    Verify,
}

impl TokenCache {
    /// The fast path: one SHA-256 and a map lookup. `state` is the token's record as the accounts
    /// file says now (`None`: no such id).
    pub fn lookup(&self, id: TokenId, presented: &str, state: Option<TokenState<'_>>) -> Lookup {
        let mut map = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        let Some(state) = state.filter(|s| !s.revoked) else {
            map.remove(&id);
            return Lookup::Refused;
        };
        match map.get(&id) {
            Some(v) if v.hash == state.hash => {
                if digests_equal(&v.digest, &sha256(presented)) {
                    Lookup::Accepted
                } else {
                    // A wrong secret for a known id: the slow check decides (and will refuse).
                    Lookup::Verify
                }
            }
            Some(_) => {
                // The stored hash changed since: forget what was verified against the old one.
                map.remove(&id);
                Lookup::Verify
            }
            None => Lookup::Verify,
        }
    }

    /// Records a successful [`verify`] of `presented` against `hash`.
    pub fn remember(&self, id: TokenId, presented: &str, hash: &str) {
        let mut map = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(
            id,
            Verified {
                hash: hash.to_string(),
                digest: sha256(presented),
            },
        );
    }

    /// Drops every entry whose id is not among `live` (tokens that exist and are not revoked): run
    /// when the accounts file was reloaded, so the cache never outgrows the file.
    pub fn retain(&self, live: impl Fn(&TokenId) -> bool) {
        let mut map = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|id, _| live(id));
    }

    pub fn len(&self) -> usize {
        self.verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The slow check: whether `presented` matches the stored argon2id `hash`.
pub fn verify(presented: &str, hash: &str) -> bool {
    verify_secret(presented.as_bytes(), hash)
}

fn sha256(text: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Compares without stopping at the first difference.
fn digests_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn decode_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_token_has_the_documented_shape_and_its_hash_verifies_it() {
        let t = NewToken::generate().unwrap();
        let (id, secret) = t
            .text
            .strip_prefix("onshi_")
            .unwrap()
            .split_once('_')
            .unwrap();
        assert_eq!(id, t.id.to_string());
        assert_eq!(id.len(), 16);
        assert_eq!(secret.len(), 64);
        assert_eq!(parse_presented(&t.text), Some(t.id));
        assert!(t.hash.starts_with("$argon2id$"));
        assert!(!t.hash.contains(secret));
        assert!(verify(&t.text, &t.hash));
        assert!(!verify(&t.text.replace(&secret[..4], "zzzz"), &t.hash));
        assert!(!format!("{t:?}").contains(secret));
    }

    #[test]
    fn malformed_tokens_have_no_id() {
        let t = NewToken::generate().unwrap();
        for bad in [
            "",
            "onshi_",
            "Bearer x",
            &t.text[..t.text.len() - 1],
            &t.text.replace("onshi_", "onsha_"),
            &t.text.to_uppercase(),
            &format!("{}0", t.text),
        ] {
            assert_eq!(parse_presented(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_cache_accepts_only_the_verified_token_while_the_file_still_holds_it() {
        let t = NewToken::generate().unwrap();
        let cache = TokenCache::default();
        let live = Some(TokenState {
            hash: &t.hash,
            revoked: false,
        });
        // First sight: verify (slow), then remember.
        assert_eq!(cache.lookup(t.id, &t.text, live), Lookup::Verify);
        assert!(verify(&t.text, &t.hash));
        cache.remember(t.id, &t.text, &t.hash);
        assert_eq!(cache.lookup(t.id, &t.text, live), Lookup::Accepted);
        // Same id, another secret: never accepted from the cache.
        let forged = format!("onshi_{}_{}", t.id, "0".repeat(64));
        assert_eq!(cache.lookup(t.id, &forged, live), Lookup::Verify);
        assert!(!verify(&forged, &t.hash));
        // Revoked: refused at once, and forgotten.
        let revoked = Some(TokenState {
            hash: &t.hash,
            revoked: true,
        });
        assert_eq!(cache.lookup(t.id, &t.text, revoked), Lookup::Refused);
        assert!(cache.is_empty());
        // Gone from the file: refused.
        assert_eq!(cache.lookup(t.id, &t.text, None), Lookup::Refused);
        // Stored hash replaced: verified again against the new one.
        cache.remember(t.id, &t.text, &t.hash);
        let other = NewToken::generate().unwrap();
        let replaced = Some(TokenState {
            hash: &other.hash,
            revoked: false,
        });
        assert_eq!(cache.lookup(t.id, &t.text, replaced), Lookup::Verify);
        assert!(cache.is_empty());
    }

    #[test]
    fn retain_keeps_only_live_tokens() {
        let a = NewToken::generate().unwrap();
        let b = NewToken::generate().unwrap();
        let cache = TokenCache::default();
        cache.remember(a.id, &a.text, &a.hash);
        cache.remember(b.id, &b.text, &b.hash);
        cache.retain(|id| *id == a.id);
        assert_eq!(cache.len(), 1);
        let live = Some(TokenState {
            hash: &a.hash,
            revoked: false,
        });
        assert_eq!(cache.lookup(a.id, &a.text, live), Lookup::Accepted);
    }
}
