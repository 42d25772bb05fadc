//! Signed-in browser sessions, in memory: a restart of the edge signs everyone out (they sign in
//! again; nothing else is lost), and nothing about a session is ever written to disk.
//!
//! A session is a random 32-byte id (the cookie's value; only its SHA-256 is kept as the key), a
//! per-session CSRF token (every POST of the page carries it), the user's name, and when it was
//! created and last used. It is valid only while it has been used within the idle time (default 30
//! minutes), its user exists and is enabled, and the user's password is the one signed in with.
//! Time is passed in (`now`), so expiry is tested on a fake clock. This module never sees a
//! password.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::accounts::{AccountName, AccountsFile};
use super::password::{HashError, random_bytes};
use super::role::Role;
use super::token::hex;

/// The default idle time after which a session ends.
pub const DEFAULT_IDLE: Duration = Duration::from_secs(30 * 60);
/// The most sessions kept; signing in beyond it ends the least recently used one.
pub const DEFAULT_MAX_SESSIONS: usize = 10_000;

/// How sessions behave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionSettings {
    pub idle: Duration,
    pub max_sessions: usize,
}

impl Default for SessionSettings {
    fn default() -> Self {
        SessionSettings {
            idle: DEFAULT_IDLE,
            max_sessions: DEFAULT_MAX_SESSIONS,
        }
    }
}

/// What the browser gets when signing in: the cookie's value and the CSRF token for the forms.
/// `Debug` shows neither.
#[derive(Clone, PartialEq, Eq)]
pub struct NewSession {
    pub cookie: String,
    pub csrf: String,
}

impl std::fmt::Debug for NewSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NewSession(…)")
    }
}

/// A valid session, as a request sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionView {
    pub user: AccountName,
    /// The user's role as the accounts file says now.
    pub role: Role,
    pub csrf: String,
}

/// Why a session is not (or no longer) valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionEnded {
    #[error("not signed in")]
    Unknown,
    #[error("the session expired after {} minutes without use; sign in again", .0.as_secs() / 60)]
    Idle(Duration),
    #[error("the account was disabled or removed; the session ended")]
    AccountGone,
    #[error("the password was changed; sign in again")]
    PasswordChanged,
}

#[derive(Debug)]
struct Session {
    user: AccountName,
    csrf: String,
    /// The password hash signed in with: any change of password ends the session.
    password_hash: String,
    created: Instant,
    last_seen: Instant,
}

/// The sessions of one edge.
#[derive(Debug, Default)]
pub struct Sessions {
    settings: SessionSettings,
    by_digest: HashMap<[u8; 32], Session>,
}

impl Sessions {
    pub fn new(settings: SessionSettings) -> Sessions {
        Sessions {
            settings,
            by_digest: HashMap::new(),
        }
    }

    pub fn settings(&self) -> SessionSettings {
        self.settings
    }

    /// A new session for `user`, who has just proved `password_hash`'s password. Expired sessions
    /// are dropped first; at the cap, the least recently used one ends.
    pub fn create(
        &mut self,
        user: AccountName,
        password_hash: &str,
        now: Instant,
    ) -> Result<NewSession, HashError> {
        let cookie = hex(&random_bytes::<32>()?);
        let csrf = hex(&random_bytes::<32>()?);
        let idle = self.settings.idle;
        self.by_digest
            .retain(|_, s| now.saturating_duration_since(s.last_seen) <= idle);
        while self.by_digest.len() >= self.settings.max_sessions.max(1) {
            let Some(oldest) = self
                .by_digest
                .iter()
                .min_by_key(|(_, s)| s.last_seen)
                .map(|(k, _)| *k)
            else {
                break;
            };
            self.by_digest.remove(&oldest);
        }
        self.by_digest.insert(
            digest(&cookie),
            Session {
                user,
                csrf: csrf.clone(),
                password_hash: password_hash.to_string(),
                created: now,
                last_seen: now,
            },
        );
        Ok(NewSession { cookie, csrf })
    }

    /// The session of `cookie` if it is still valid against the accounts file as it is now; its
    /// idle time starts again. An invalid session is ended.
    pub fn lookup(
        &mut self,
        cookie: &str,
        accounts: &AccountsFile,
        now: Instant,
    ) -> Result<SessionView, SessionEnded> {
        self.check(cookie, accounts, now, true)
    }

    /// As [`Sessions::lookup`], but the idle time goes on: for what a page asks by itself (the
    /// banner's refresh), which is not a person at work and must not keep a session alive.
    pub fn peek(
        &mut self,
        cookie: &str,
        accounts: &AccountsFile,
        now: Instant,
    ) -> Result<SessionView, SessionEnded> {
        self.check(cookie, accounts, now, false)
    }

    fn check(
        &mut self,
        cookie: &str,
        accounts: &AccountsFile,
        now: Instant,
        touch: bool,
    ) -> Result<SessionView, SessionEnded> {
        let key = digest(cookie);
        let session = self.by_digest.get_mut(&key).ok_or(SessionEnded::Unknown)?;
        let verdict = if now.saturating_duration_since(session.last_seen) > self.settings.idle {
            Err(SessionEnded::Idle(self.settings.idle))
        } else {
            match accounts.user(session.user.as_str()) {
                None => Err(SessionEnded::AccountGone),
                Some(u) if u.disabled => Err(SessionEnded::AccountGone),
                Some(u) if u.password_hash != session.password_hash => {
                    Err(SessionEnded::PasswordChanged)
                }
                Some(u) => Ok(u.role),
            }
        };
        match verdict {
            Ok(role) => {
                if touch {
                    session.last_seen = now;
                }
                Ok(SessionView {
                    user: session.user.clone(),
                    role,
                    csrf: session.csrf.clone(),
                })
            }
            Err(e) => {
                self.by_digest.remove(&key);
                Err(e)
            }
        }
    }

    /// Ends a session (sign out). Whether there was one.
    pub fn end(&mut self, cookie: &str) -> bool {
        self.by_digest.remove(&digest(cookie)).is_some()
    }

    /// How long the session has existed, if it does (for the page's "signed in since").
    pub fn age(&self, cookie: &str, now: Instant) -> Option<Duration> {
        self.by_digest
            .get(&digest(cookie))
            .map(|s| now.saturating_duration_since(s.created))
    }

    pub fn len(&self) -> usize {
        self.by_digest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }
}

/// Whether a form's CSRF token is the session's (compared without stopping early).
#[must_use]
pub fn csrf_matches(session: &SessionView, presented: &str) -> bool {
    let (a, b) = (session.csrf.as_bytes(), presented.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

fn digest(cookie: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, cookie.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::accounts::AccountsFile;

    fn accounts() -> AccountsFile {
        let mut f = AccountsFile::default();
        let t0 = "2026-04-01T09:00:00Z".parse().unwrap();
        for (n, role) in [("alice", Role::Reception), ("root", Role::Admin)] {
            f.add_user(
                AccountName::parse(n).unwrap(),
                role,
                format!("hash-{n}"),
                t0,
                "test",
            )
            .unwrap();
        }
        f
    }

    fn alice() -> AccountName {
        AccountName::parse("alice").unwrap()
    }

    #[test]
    fn a_page_asking_by_itself_does_not_keep_a_session_alive() {
        let f = accounts();
        let t0 = Instant::now();
        let mut s = Sessions::new(SessionSettings {
            idle: Duration::from_secs(30 * 60),
            max_sessions: 100,
        });
        let new = s.create(alice(), "hash-alice", t0).unwrap();
        // The banner refreshes every second for 29 minutes: the session is valid throughout…
        for k in 1..=29 {
            let at = t0 + Duration::from_secs(k * 60);
            assert!(s.peek(&new.cookie, &f, at).is_ok(), "minute {k}");
        }
        // …but nobody used it: 30 minutes and a second after sign-in it has ended.
        let late = t0 + Duration::from_secs(30 * 60 + 1);
        assert_eq!(
            s.peek(&new.cookie, &f, late),
            Err(SessionEnded::Idle(Duration::from_secs(1800)))
        );
    }

    #[test]
    fn a_session_lives_while_used_within_the_idle_time() {
        let f = accounts();
        let t0 = Instant::now();
        let mut s = Sessions::new(SessionSettings {
            idle: Duration::from_secs(30 * 60),
            max_sessions: 100,
        });
        let new = s.create(alice(), "hash-alice", t0).unwrap();
        assert_eq!(new.cookie.len(), 64);
        assert_ne!(new.cookie, new.csrf);
        // Used every 29 minutes for two hours: still valid.
        for k in 1..=4 {
            let v = s
                .lookup(&new.cookie, &f, t0 + Duration::from_secs(k * 29 * 60))
                .unwrap();
            assert_eq!((v.user.as_str(), v.role), ("alice", Role::Reception));
            assert!(csrf_matches(&v, &new.csrf));
            assert!(!csrf_matches(&v, ""));
            assert!(!csrf_matches(&v, &new.cookie));
        }
        // Then 30 minutes and one second of silence: ended, and stays ended.
        let late = t0 + Duration::from_secs(4 * 29 * 60 + 30 * 60 + 1);
        assert_eq!(
            s.lookup(&new.cookie, &f, late),
            Err(SessionEnded::Idle(Duration::from_secs(1800)))
        );
        assert_eq!(
            SessionEnded::Idle(Duration::from_secs(1800)).to_string(),
            "the session expired after 30 minutes without use; sign in again"
        );
        assert_eq!(s.lookup(&new.cookie, &f, late), Err(SessionEnded::Unknown));
    }

    #[test]
    fn disabling_the_user_or_changing_the_password_ends_the_session_at_once() {
        let mut f = accounts();
        let t0 = Instant::now();
        let mut s = Sessions::default();
        let a = s.create(alice(), "hash-alice", t0).unwrap();
        let b = s.create(alice(), "hash-alice", t0).unwrap();
        assert!(s.lookup(&a.cookie, &f, t0).is_ok());
        let now = "2026-04-01T10:00:00Z".parse().unwrap();
        f.set_password("alice", "hash-alice-2".into(), now, "test")
            .unwrap();
        assert_eq!(
            s.lookup(&a.cookie, &f, t0),
            Err(SessionEnded::PasswordChanged)
        );
        let c = s.create(alice(), "hash-alice-2", t0).unwrap();
        assert!(s.lookup(&c.cookie, &f, t0).is_ok());
        f.disable_user("alice", now, "test").unwrap();
        assert_eq!(s.lookup(&c.cookie, &f, t0), Err(SessionEnded::AccountGone));
        // `b` (old password, and now disabled): ended too.
        assert_eq!(s.lookup(&b.cookie, &f, t0), Err(SessionEnded::AccountGone));
        assert!(s.is_empty());
    }

    #[test]
    fn the_role_is_the_one_the_file_says_now() {
        let mut f = accounts();
        let t0 = Instant::now();
        let mut s = Sessions::default();
        let a = s.create(alice(), "hash-alice", t0).unwrap();
        f.users[0].role = Role::Clinician;
        assert_eq!(s.lookup(&a.cookie, &f, t0).unwrap().role, Role::Clinician);
    }

    #[test]
    fn sign_out_ends_only_that_session_and_unknown_cookies_are_refused() {
        let f = accounts();
        let t0 = Instant::now();
        let mut s = Sessions::default();
        let a = s.create(alice(), "hash-alice", t0).unwrap();
        let r = s
            .create(AccountName::parse("root").unwrap(), "hash-root", t0)
            .unwrap();
        assert!(s.end(&a.cookie));
        assert!(!s.end(&a.cookie));
        assert_eq!(s.lookup(&a.cookie, &f, t0), Err(SessionEnded::Unknown));
        assert_eq!(s.lookup("", &f, t0), Err(SessionEnded::Unknown));
        assert_eq!(s.lookup(&r.cookie, &f, t0).unwrap().role, Role::Admin);
    }

    #[test]
    fn memory_is_bounded_expired_first_then_least_recently_used() {
        let f = accounts();
        let t0 = Instant::now();
        let mut s = Sessions::new(SessionSettings {
            idle: Duration::from_secs(60),
            max_sessions: 3,
        });
        let old = s.create(alice(), "hash-alice", t0).unwrap();
        let a = s
            .create(alice(), "hash-alice", t0 + Duration::from_secs(10))
            .unwrap();
        let b = s
            .create(alice(), "hash-alice", t0 + Duration::from_secs(20))
            .unwrap();
        // `old` used recently: `a` is now the least recently used.
        s.lookup(&old.cookie, &f, t0 + Duration::from_secs(30))
            .unwrap();
        let c = s
            .create(alice(), "hash-alice", t0 + Duration::from_secs(40))
            .unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(
            s.lookup(&a.cookie, &f, t0 + Duration::from_secs(41)),
            Err(SessionEnded::Unknown)
        );
        for live in [&old, &b, &c] {
            assert!(
                s.lookup(&live.cookie, &f, t0 + Duration::from_secs(41))
                    .is_ok()
            );
        }
        // Long after, a new sign-in first drops the expired ones.
        let _d = s
            .create(alice(), "hash-alice", t0 + Duration::from_secs(500))
            .unwrap();
        assert_eq!(s.len(), 1);
    }
}
