//! Who may use the edge: staff accounts and roles, programs' bearer tokens, browser sessions, the
//! sign-in throttle, and the access log. This is the core the HTTP middleware and the page build
//! on; it holds no routes.
//!
//! - [`role`]: `reception ⊆ clinician ⊆ admin`, and the 403's [`Forbidden`].
//! - [`accounts`]: `DATA/accounts.json` (users, tokens, history of changes), written atomically
//!   under a lock by the CLI whether the edge runs or not, and re-read by the edge when it changed
//!   (one `stat` per authentication), so a disabled user or revoked token is refused at its next
//!   request.
//! - [`password`]: the policy and argon2id; [`token`]: `onshi_<id>_<secret>`, stored as argon2id,
//!   verified once then remembered by SHA-256 in memory.
//! - [`session`]: in-memory sessions with CSRF tokens and idle expiry; [`throttle`]: slowing
//!   failed sign-ins per user and per address.
//! - [`audit`]: the access log in the edge's store (ids only, never searched values).
//!
//! [`Authenticator`] ties accounts, tokens, sessions and the throttle together for the middleware.
//! Nothing here logs a password, a token, a session cookie or a CSRF token, at any level.

pub mod accounts;
pub mod audit;
pub mod password;
pub mod role;
pub mod session;
pub mod throttle;
pub mod token;

use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

pub use accounts::{AccountName, Accounts, AccountsDir, AccountsError, AccountsFile};
pub use audit::{AuditAction, AuditEntry, AuditLog, AuditQuery, SubjectId};
pub use password::Password;
pub use role::{Forbidden, Role};
pub use session::{NewSession, SessionEnded, SessionSettings, Sessions};
pub use throttle::{Throttle, ThrottleSettings, Verdict};
pub use token::{NewToken, TokenCache};

/// Whether a request comes from a signed-in person or a program's token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    User,
    Token,
}

/// Who is asking: the access log's actor and role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Actor {
    pub name: AccountName,
    pub kind: ActorKind,
    pub role: Role,
}

impl Actor {
    /// `Ok` when the actor's role includes `needed`; else 403 naming `needed`.
    pub fn require(&self, needed: Role) -> Result<(), AuthError> {
        self.role.require(needed).map_err(AuthError::Forbidden)
    }
}

/// Why a request is refused: 401 `unauthenticated`, 403 `forbidden`, or 503 when the accounts file
/// cannot be read (then nobody is let in).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("sign in, or give a token in the Authorization header (Bearer onshi_…)")]
    Missing,
    #[error("the token is not valid or was revoked")]
    BadToken,
    #[error("{0}")]
    Session(SessionEnded),
    #[error(transparent)]
    Forbidden(Forbidden),
    #[error("the accounts file cannot be read, so nobody is let in until it is fixed: {0}")]
    Unavailable(String),
}

impl AuthError {
    /// The HTTP status of the refusal.
    pub fn http_status(&self) -> u16 {
        match self {
            AuthError::Missing | AuthError::BadToken | AuthError::Session(_) => 401,
            AuthError::Forbidden(_) => 403,
            AuthError::Unavailable(_) => 503,
        }
    }

    /// The JSON error envelope's `code`.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Missing | AuthError::BadToken | AuthError::Session(_) => "unauthenticated",
            AuthError::Forbidden(_) => "forbidden",
            AuthError::Unavailable(_) => "accounts_unavailable",
        }
    }
}

/// Why a sign-in failed: 429 with `Retry-After`, 401, or 503.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignInError {
    #[error("too many failed sign-ins; try again in {} s", retry_after_secs(*.0))]
    Throttled(Duration),
    /// The same answer for an unknown user, a disabled one and a wrong password.
    #[error("unknown user or wrong password")]
    BadCredentials,
    #[error("the accounts file cannot be read, so nobody can sign in until it is fixed: {0}")]
    Unavailable(String),
}

impl SignInError {
    pub fn http_status(&self) -> u16 {
        match self {
            SignInError::Throttled(_) => 429,
            SignInError::BadCredentials => 401,
            SignInError::Unavailable(_) => 503,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            SignInError::Throttled(_) => "throttled",
            SignInError::BadCredentials => "unauthenticated",
            SignInError::Unavailable(_) => "accounts_unavailable",
        }
    }

    /// The `Retry-After` header's seconds, for a throttled sign-in.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            SignInError::Throttled(d) => Some(retry_after_secs(*d)),
            _ => None,
        }
    }
}

/// Whole seconds, rounded up (a client that waits this long is let in).
fn retry_after_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// How sessions and the throttle behave.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuthSettings {
    pub session: SessionSettings,
    pub throttle: ThrottleSettings,
}

/// Authentication for the middleware: tokens, sessions and sign-in, over the accounts file as it
/// is at each call. Cheap to clone (shared).
#[derive(Debug, Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    accounts: Accounts,
    tokens: TokenCache,
    /// The accounts generation the token cache was last pruned at.
    pruned_at: AtomicU64,
    sessions: Mutex<Sessions>,
    throttle: Mutex<Throttle>,
}

/// The fast path's outcome for a token.
enum TokenStep {
    Done(Actor),
    /// Verify `presented` against `hash` (slow), then the actor is `actor`.
    Verify {
        id: token::TokenId,
        hash: String,
        actor: Actor,
    },
}

impl Authenticator {
    pub fn new(data_dir: &Path, settings: AuthSettings) -> Authenticator {
        Authenticator {
            inner: Arc::new(Inner {
                accounts: Accounts::new(data_dir),
                tokens: TokenCache::default(),
                pruned_at: AtomicU64::new(0),
                sessions: Mutex::new(Sessions::new(settings.session)),
                throttle: Mutex::new(Throttle::new(settings.throttle)),
            }),
        }
    }

    /// The accounts file as it is now (one stat; reloaded when changed, and then the token cache
    /// is pruned to the tokens that are still live).
    fn accounts(&self) -> Result<Arc<accounts::Loaded>, String> {
        let loaded = self.inner.accounts.current().map_err(|e| {
            tracing::warn!(error = %e, "accounts file unreadable: refusing every sign-in and token");
            e.to_string()
        })?;
        if self
            .inner
            .pruned_at
            .swap(loaded.generation, Ordering::Relaxed)
            != loaded.generation
        {
            self.inner.tokens.retain(|id| {
                loaded
                    .file
                    .token_by_id(*id)
                    .is_some_and(|t| t.revoked_at.is_none())
            });
        }
        Ok(loaded)
    }

    fn token_step(&self, presented: &str) -> Result<TokenStep, AuthError> {
        let id = token::parse_presented(presented).ok_or(AuthError::BadToken)?;
        let loaded = self.accounts().map_err(AuthError::Unavailable)?;
        let record = loaded.file.token_by_id(id);
        let state = record.map(|t| token::TokenState {
            hash: &t.hash,
            revoked: t.revoked_at.is_some(),
        });
        let lookup = self.inner.tokens.lookup(id, presented, state);
        let (token::Lookup::Accepted | token::Lookup::Verify, Some(t)) = (&lookup, record) else {
            return Err(AuthError::BadToken);
        };
        let actor = Actor {
            name: t.name.clone(),
            kind: ActorKind::Token,
            role: t.role,
        };
        Ok(match lookup {
            token::Lookup::Accepted => TokenStep::Done(actor),
            _ => TokenStep::Verify {
                id,
                hash: t.hash.clone(),
                actor,
            },
        })
    }

    /// The actor of a bearer token (the header's value after `Bearer `). A token seen for the
    /// first time (or since the file changed its hash) is verified with argon2id on the blocking
    /// pool; after that, one SHA-256.
    pub async fn authenticate_token(&self, presented: &str) -> Result<Actor, AuthError> {
        match self.token_step(presented)? {
            TokenStep::Done(actor) => Ok(actor),
            TokenStep::Verify { id, hash, actor } => {
                let text = presented.to_string();
                let this = self.clone();
                tokio::task::spawn_blocking(move || {
                    this.finish_verify(id, &text, &hash)?;
                    Ok(actor)
                })
                .await
                .map_err(|e| AuthError::Unavailable(format!("verification task failed: {e}")))?
            }
        }
    }

    /// [`Self::authenticate_token`] for a caller already off the runtime (blocks for the argon2id
    /// verification when needed).
    pub fn authenticate_token_blocking(&self, presented: &str) -> Result<Actor, AuthError> {
        match self.token_step(presented)? {
            TokenStep::Done(actor) => Ok(actor),
            TokenStep::Verify { id, hash, actor } => {
                self.finish_verify(id, presented, &hash)?;
                Ok(actor)
            }
        }
    }

    fn finish_verify(
        &self,
        id: token::TokenId,
        presented: &str,
        hash: &str,
    ) -> Result<(), AuthError> {
        if token::verify(presented, hash) {
            self.inner.tokens.remember(id, presented, hash);
            Ok(())
        } else {
            Err(AuthError::BadToken)
        }
    }

    /// The actor and CSRF token of a session cookie, checked against the accounts file as it is
    /// now (a disabled user's session ends here, at its next request).
    pub fn session(&self, cookie: &str, now: Instant) -> Result<(Actor, String), AuthError> {
        self.session_view(cookie, now, true)
    }

    /// As [`Authenticator::session`], without starting the idle time again: for requests a page
    /// makes by itself (the banner's refresh), so an open page does not keep a session alive.
    pub fn session_quiet(&self, cookie: &str, now: Instant) -> Result<(Actor, String), AuthError> {
        self.session_view(cookie, now, false)
    }

    fn session_view(
        &self,
        cookie: &str,
        now: Instant,
        touch: bool,
    ) -> Result<(Actor, String), AuthError> {
        let loaded = self.accounts().map_err(AuthError::Unavailable)?;
        let mut sessions = self
            .inner
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let view = if touch {
            sessions.lookup(cookie, &loaded.file, now)
        } else {
            sessions.peek(cookie, &loaded.file, now)
        }
        .map_err(AuthError::Session)?;
        Ok((
            Actor {
                name: view.user,
                kind: ActorKind::User,
                role: view.role,
            },
            view.csrf,
        ))
    }

    /// Signs `user` in with `password` from `from`: throttled per user and per address, verified
    /// with argon2id on the blocking pool. The attempt counts as a failure *before* the
    /// verification (and is cleared by a success), so parallel guesses cannot slip past the
    /// throttle together.
    pub async fn sign_in(
        &self,
        user: &str,
        password: String,
        from: IpAddr,
        now: Instant,
    ) -> Result<NewSession, SignInError> {
        {
            let mut throttle = self
                .inner
                .throttle
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if let Verdict::Wait(d) = throttle.check(user, from, now) {
                return Err(SignInError::Throttled(d));
            }
            throttle.failed(user, from, now);
        }
        let loaded = self.accounts().map_err(SignInError::Unavailable)?;
        let record = loaded.file.user(user).cloned();
        let verified = tokio::task::spawn_blocking(move || match &record {
            Some(r) => password::verify_password(&password, &r.password_hash) && !r.disabled,
            None => {
                password::verify_nothing(&password);
                false
            }
        })
        .await
        .map_err(|e| SignInError::Unavailable(format!("verification task failed: {e}")))?;
        let Some(record) = loaded.file.user(user).filter(|_| verified) else {
            return Err(SignInError::BadCredentials);
        };
        self.inner
            .throttle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .succeeded(user, from);
        self.inner
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .create(record.name.clone(), &record.password_hash, now)
            .map_err(|e| SignInError::Unavailable(e.to_string()))
    }

    /// Signs out: the session ends. Whether there was one.
    pub fn sign_out(&self, cookie: &str) -> bool {
        self.inner
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .end(cookie)
    }

    /// The accounts file's folder, for changes made from the admin pages (under the CLI's lock).
    pub fn accounts_dir(&self) -> AccountsDir {
        let file = self.inner.accounts.path();
        AccountsDir::new(file.parent().unwrap_or(file))
    }

    /// The session idle time (for the cookie's attributes and the page).
    pub fn session_settings(&self) -> SessionSettings {
        self.inner
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .settings()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    const HERE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn setup() -> (tempfile::TempDir, AccountsDir, Authenticator) {
        let dir = tempfile::tempdir().unwrap();
        let writer = AccountsDir::new(dir.path());
        let auth = Authenticator::new(dir.path(), AuthSettings::default());
        (dir, writer, auth)
    }

    fn add_user(writer: &AccountsDir, name: &str, role: Role, password: &str) {
        let hash = password::hash_password(&Password::new(password.into()).unwrap()).unwrap();
        writer
            .update(|f| {
                f.add_user(
                    AccountName::parse(name).unwrap(),
                    role,
                    hash,
                    Utc::now(),
                    "test",
                )
            })
            .unwrap();
    }

    fn add_token(writer: &AccountsDir, name: &str, role: Role) -> String {
        let t = NewToken::generate().unwrap();
        writer
            .update(|f| {
                f.add_token(
                    AccountName::parse(name).unwrap(),
                    role,
                    t.id,
                    t.hash.clone(),
                    Utc::now(),
                    "test",
                )
            })
            .unwrap();
        t.text
    }

    #[tokio::test]
    async fn a_token_authenticates_until_revoked_and_then_at_once_no_more() {
        let (_dir, writer, auth) = setup();
        let text = add_token(&writer, "bridge", Role::Reception);
        let actor = auth.authenticate_token(&text).await.unwrap();
        assert_eq!(
            actor,
            Actor {
                name: AccountName::parse("bridge").unwrap(),
                kind: ActorKind::Token,
                role: Role::Reception
            }
        );
        // Cached now; still the same answer.
        assert_eq!(auth.authenticate_token(&text).await.unwrap(), actor);
        assert_eq!(auth.inner.tokens.len(), 1);
        assert_eq!(
            actor.require(Role::Admin),
            Err(AuthError::Forbidden(Forbidden {
                needed: Role::Admin
            }))
        );
        writer
            .update(|f| f.revoke_token("bridge", Utc::now(), "test"))
            .unwrap();
        let refused = auth.authenticate_token(&text).await.unwrap_err();
        assert_eq!(refused, AuthError::BadToken);
        assert_eq!(
            (refused.http_status(), refused.code()),
            (401, "unauthenticated")
        );
        assert!(
            auth.inner.tokens.is_empty(),
            "the revoked token's cache entry is dropped"
        );
    }

    #[tokio::test]
    async fn a_wrong_secret_a_malformed_token_and_an_unknown_id_are_refused() {
        let (_dir, writer, auth) = setup();
        let text = add_token(&writer, "bridge", Role::Admin);
        auth.authenticate_token(&text).await.unwrap();
        let (head, _) = text.rsplit_once('_').unwrap();
        let forged = format!("{head}_{}", "0".repeat(64));
        assert_eq!(
            auth.authenticate_token(&forged).await,
            Err(AuthError::BadToken)
        );
        assert_eq!(auth.authenticate_token("").await, Err(AuthError::BadToken));
        assert_eq!(
            auth.authenticate_token(&text[1..]).await,
            Err(AuthError::BadToken)
        );
        let other = NewToken::generate().unwrap();
        assert_eq!(
            auth.authenticate_token(&other.text).await,
            Err(AuthError::BadToken)
        );
        assert_eq!(
            auth.authenticate_token_blocking(&text).unwrap().role,
            Role::Admin
        );
    }

    #[tokio::test]
    async fn sign_in_gives_a_session_that_a_disabled_user_loses_at_the_next_request() {
        let (_dir, writer, auth) = setup();
        add_user(&writer, "alice", Role::Reception, "correct horse battery");
        let t0 = Instant::now();
        let s = auth
            .sign_in("alice", "correct horse battery".into(), HERE, t0)
            .await
            .unwrap();
        let (actor, csrf) = auth.session(&s.cookie, t0).unwrap();
        assert_eq!(
            (actor.name.as_str(), actor.kind, actor.role),
            ("alice", ActorKind::User, Role::Reception)
        );
        assert_eq!(csrf, s.csrf);
        writer
            .update(|f| f.disable_user("alice", Utc::now(), "test"))
            .unwrap();
        let e = auth.session(&s.cookie, t0).unwrap_err();
        assert_eq!(e, AuthError::Session(SessionEnded::AccountGone));
        assert_eq!(e.http_status(), 401);
        // And a disabled user cannot sign in again.
        assert_eq!(
            auth.sign_in("alice", "correct horse battery".into(), HERE, t0)
                .await,
            Err(SignInError::BadCredentials)
        );
    }

    #[tokio::test]
    async fn a_password_change_ends_sessions_and_sign_out_ends_one() {
        let (_dir, writer, auth) = setup();
        add_user(&writer, "alice", Role::Admin, "correct horse battery");
        let t0 = Instant::now();
        let a = auth
            .sign_in("alice", "correct horse battery".into(), HERE, t0)
            .await
            .unwrap();
        let b = auth
            .sign_in("alice", "correct horse battery".into(), HERE, t0)
            .await
            .unwrap();
        assert!(auth.sign_out(&a.cookie));
        assert_eq!(
            auth.session(&a.cookie, t0),
            Err(AuthError::Session(SessionEnded::Unknown))
        );
        assert!(auth.session(&b.cookie, t0).is_ok());
        let hash =
            password::hash_password(&Password::new("another long one".into()).unwrap()).unwrap();
        writer
            .update(|f| f.set_password("alice", hash, Utc::now(), "test"))
            .unwrap();
        assert_eq!(
            auth.session(&b.cookie, t0),
            Err(AuthError::Session(SessionEnded::PasswordChanged))
        );
        assert!(
            auth.sign_in("alice", "another long one".into(), HERE, t0)
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn repeated_bad_passwords_are_slowed_and_unknown_users_look_the_same() {
        let (_dir, writer, auth) = setup();
        add_user(&writer, "alice", Role::Reception, "correct horse battery");
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(
                auth.sign_in("alice", "wrong password!".into(), HERE, t0)
                    .await,
                Err(SignInError::BadCredentials)
            );
        }
        // Even the right password waits its turn now.
        let e = auth
            .sign_in("alice", "correct horse battery".into(), HERE, t0)
            .await
            .unwrap_err();
        assert_eq!(e, SignInError::Throttled(Duration::from_secs(1)));
        assert_eq!(
            (e.http_status(), e.code(), e.retry_after()),
            (429, "throttled", Some(1))
        );
        assert_eq!(e.to_string(), "too many failed sign-ins; try again in 1 s");
        let later = t0 + Duration::from_secs(1);
        assert!(
            auth.sign_in("alice", "correct horse battery".into(), HERE, later)
                .await
                .is_ok()
        );
        assert_eq!(
            auth.sign_in(
                "nobody",
                "whatever it is".into(),
                "10.0.0.1".parse().unwrap(),
                later
            )
            .await,
            Err(SignInError::BadCredentials)
        );
    }

    #[tokio::test]
    async fn an_unreadable_accounts_file_lets_nobody_in() {
        let (dir, writer, auth) = setup();
        let text = add_token(&writer, "bridge", Role::Reception);
        auth.authenticate_token(&text).await.unwrap();
        std::fs::write(dir.path().join(accounts::ACCOUNTS_FILE), "not json").unwrap();
        let e = auth.authenticate_token(&text).await.unwrap_err();
        assert!(matches!(e, AuthError::Unavailable(_)), "{e:?}");
        assert_eq!((e.http_status(), e.code()), (503, "accounts_unavailable"));
        assert!(matches!(
            auth.sign_in("x", "whatever it is".into(), HERE, Instant::now())
                .await,
            Err(SignInError::Unavailable(_))
        ));
        assert_eq!(
            auth.session("nothing", Instant::now()).unwrap_err().code(),
            "accounts_unavailable"
        );
    }
}
