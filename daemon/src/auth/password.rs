//! Staff passwords: the policy (at least [`MIN_PASSWORD_CHARS`] characters, one line), reading one
//! from standard input, and argon2id hashing and verification (the `argon2` crate's default
//! parameters, which are OWASP's: 19 MiB, 2 passes, 1 lane; a PHC string `$argon2id$v=19$…`).
//!
//! Hashing and verifying take tens of milliseconds of CPU on purpose: callers on the async
//! runtime run them on the blocking pool (`spawn_blocking`). A password is never logged, never
//! printed, never stored except as its hash; [`Password`]'s `Debug` shows nothing of it.

use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use ring::rand::{SecureRandom, SystemRandom};

/// The shortest password accepted, in characters (not bytes: a Japanese password counts each
/// character once). Ten: NIST SP 800-63B asks for at least 8, and staff type it on a shared PC.
pub const MIN_PASSWORD_CHARS: usize = 10;
/// The longest, in bytes: argon2 takes any length, but nobody types more, and a bound keeps a
/// pasted file from being hashed.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// A password that meets the policy. Its `Debug` is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(…)")
    }
}

/// Why a password is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    #[error("the password is empty (give it on standard input, one line)")]
    Empty,
    #[error("the password has {chars} characters; it needs at least {MIN_PASSWORD_CHARS}")]
    TooShort { chars: usize },
    #[error("the password is longer than {MAX_PASSWORD_BYTES} bytes")]
    TooLong,
    #[error("standard input has more than one line; give the password alone on one line")]
    SeveralLines,
    #[error("the password is not valid UTF-8")]
    NotUtf8,
}

impl Password {
    /// Checks the policy.
    pub fn new(text: String) -> Result<Password, PasswordError> {
        if text.is_empty() {
            return Err(PasswordError::Empty);
        }
        if text.len() > MAX_PASSWORD_BYTES {
            return Err(PasswordError::TooLong);
        }
        if text.contains(['\n', '\r']) {
            return Err(PasswordError::SeveralLines);
        }
        let chars = text.chars().count();
        if chars < MIN_PASSWORD_CHARS {
            return Err(PasswordError::TooShort { chars });
        }
        Ok(Password(text))
    }

    /// What `--password-stdin` read: one line; its trailing newline (`\n` or `\r\n`) is not part
    /// of the password; anything after it other than nothing is refused rather than cut off.
    pub fn from_stdin(bytes: &[u8]) -> Result<Password, PasswordError> {
        let text = std::str::from_utf8(bytes).map_err(|_| PasswordError::NotUtf8)?;
        let line = text.strip_suffix('\n').unwrap_or(text);
        let line = line.strip_suffix('\r').unwrap_or(line);
        Password::new(line.to_string())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// A hash could not be made (the system's random source failed, or argon2 refused).
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot hash: {0}")]
pub struct HashError(pub String);

/// `N` bytes from the operating system's random source (salts, token ids and secrets, session ids).
pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N], HashError> {
    let mut bytes = [0u8; N];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| HashError("the system's random source failed".into()))?;
    Ok(bytes)
}

/// The argon2id PHC string of `secret` with a fresh random salt (slow: run it off the runtime).
pub(crate) fn hash_secret(secret: &[u8]) -> Result<String, HashError> {
    let salt: [u8; 16] = random_bytes()?;
    Argon2::default()
        .hash_password_with_salt(secret, &salt)
        .map(|h| h.to_string())
        .map_err(|e| HashError(e.to_string()))
}

/// Whether `secret` matches the PHC string `phc` (slow: run it off the runtime). A malformed PHC
/// string matches nothing.
pub(crate) fn verify_secret(secret: &[u8], phc: &str) -> bool {
    Argon2::default().verify_password(secret, phc).is_ok()
}

/// The argon2id PHC string of a password (slow).
pub fn hash_password(password: &Password) -> Result<String, HashError> {
    hash_secret(password.0.as_bytes())
}

/// Whether `password` matches the stored hash (slow).
pub fn verify_password(password: &str, phc: &str) -> bool {
    verify_secret(password.as_bytes(), phc)
}

/// Spends the time of one verification without a stored hash, so that signing in as an unknown
/// user takes as long as a wrong password for a known one (no telling which names exist).
pub fn verify_nothing(password: &str) {
    static DUMMY: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    if let Some(phc) = DUMMY.get_or_init(|| hash_secret(b"onshi: no such user").ok()) {
        let _ = verify_password(password, phc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_input_gives_one_line_without_its_newline() {
        let p = Password::from_stdin(b"correct horse\n").unwrap();
        assert_eq!(p.expose(), "correct horse");
        let p = Password::from_stdin(b"correct horse\r\n").unwrap();
        assert_eq!(p.expose(), "correct horse");
        // Spaces inside and at the ends are part of the password.
        let p = Password::from_stdin(b" correct horse ").unwrap();
        assert_eq!(p.expose(), " correct horse ");
        // Characters, not bytes: ten kana are long enough.
        assert!(Password::from_stdin("あいうえおかきくけこ\n".as_bytes()).is_ok());
    }

    #[test]
    fn empty_short_multi_line_and_binary_passwords_are_refused_with_the_reason() {
        assert_eq!(Password::from_stdin(b""), Err(PasswordError::Empty));
        assert_eq!(Password::from_stdin(b"\n"), Err(PasswordError::Empty));
        assert_eq!(
            Password::from_stdin(b"short\n"),
            Err(PasswordError::TooShort { chars: 5 })
        );
        assert_eq!(
            PasswordError::TooShort { chars: 5 }.to_string(),
            "the password has 5 characters; it needs at least 10"
        );
        assert_eq!(
            Password::from_stdin(b"first line long enough\nsecond\n"),
            Err(PasswordError::SeveralLines)
        );
        assert_eq!(
            Password::from_stdin(b"\xff\xfe long enough"),
            Err(PasswordError::NotUtf8)
        );
        assert_eq!(
            Password::new("x".repeat(MAX_PASSWORD_BYTES + 1)),
            Err(PasswordError::TooLong)
        );
    }

    #[test]
    fn a_hash_is_argon2id_salted_and_verifies_only_its_password() {
        let p = Password::new("correct horse battery".into()).unwrap();
        let h1 = hash_password(&p).unwrap();
        let h2 = hash_password(&p).unwrap();
        assert!(h1.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h1}");
        assert_ne!(h1, h2, "each hash has its own salt");
        assert!(!h1.contains("correct horse"));
        assert!(verify_password("correct horse battery", &h1));
        assert!(verify_password("correct horse battery", &h2));
        assert!(!verify_password("correct horse batterY", &h1));
        assert!(!verify_password("correct horse battery", "not a hash"));
    }

    #[test]
    fn a_password_never_shows_in_debug_output() {
        let p = Password::new("correct horse battery".into()).unwrap();
        assert_eq!(format!("{p:?}"), "Password(…)");
    }
}
