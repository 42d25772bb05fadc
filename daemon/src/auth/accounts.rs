//! The accounts file, `DATA/accounts.json`: staff users (name, role, argon2id password hash,
//! enabled or not), programs' tokens (name, id, role, argon2id hash, revoked or not) and the
//! `history` of every change made to it (who, what, when).
//!
//! **Why a file of its own, not the edge's store:** `onshi-edge user …` and `token …` must work
//! whether the edge runs or not, and sled's lock belongs to the running edge. So the CLI never
//! opens sled: it writes this file, and the edge notices (below). For the same reason the CLI's
//! changes are recorded in this file's `history`, not in the access log (which lives in the store).
//!
//! **Writers** (the CLI; later the admin pages) are serialised by an advisory lock (`flock`) on
//! `DATA/accounts.lock`, read the file, change it, and replace it atomically: a temp file created
//! with O_EXCL|O_NOFOLLOW under a random name in the same folder, mode 0600 set with fchmod (so
//! whatever the umask), given the data folder's owner when that is not the writer (root running
//! the CLI for the `onshi` service), fsynced, renamed over the file, and the folder fsynced. A
//! reader sees the old file or the new one, never a mix.
//!
//! **The edge** reads it through [`Accounts`]: each authentication stats the path and compares
//! (device, inode, size, mtime, ctime) with what was loaded, and reloads when they differ. The
//! loaded file is held open, so its inode number cannot be reused by a later file while it is
//! compared against. A disabled user's or revoked token's next request is therefore refused,
//! deterministically, with no watcher to race. A file that cannot be read or parsed refuses
//! everyone (fail closed) until it is fixed; a missing file means no accounts yet.
//!
//! Nothing is ever removed from the file: users are disabled, tokens revoked, and a name once
//! used (by a user or a token: one namespace, so an access-log actor is never ambiguous) is never
//! given again. This module never sees a password or a token in clear: only their hashes.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::password::{HashError, random_bytes};
use super::role::Role;
use super::token::{TokenId, hex};

pub const ACCOUNTS_FILE: &str = "accounts.json";
pub const LOCK_FILE: &str = "accounts.lock";
/// The version tag of the file's format.
pub const ACCOUNTS_VERSION: u32 = 1;
/// The longest account name.
pub const MAX_NAME_LEN: usize = 64;

/// A user's or a token's name: 1–64 ASCII letters, digits, `.`, `_`, `-` or `@`, starting with a
/// letter or digit. The access log's `actor`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AccountName(String);

impl AccountName {
    pub fn parse(s: &str) -> Result<AccountName, AccountsError> {
        let bad = |reason: &str| AccountsError::BadName {
            name: s.chars().take(MAX_NAME_LEN + 1).collect(),
            reason: reason.to_string(),
        };
        if s.is_empty() {
            return Err(bad("a name is required"));
        }
        if s.len() > MAX_NAME_LEN {
            return Err(bad("a name has at most 64 characters"));
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'))
        {
            return Err(bad(
                "a name has ASCII letters, digits, '.', '_', '-' and '@' only",
            ));
        }
        if !s.as_bytes()[0].is_ascii_alphanumeric() {
            return Err(bad("a name starts with a letter or a digit"));
        }
        Ok(AccountName(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for AccountName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(&self.0)
    }
}

impl From<AccountName> for String {
    fn from(n: AccountName) -> String {
        n.0
    }
}

impl TryFrom<String> for AccountName {
    type Error = String;
    fn try_from(s: String) -> Result<AccountName, String> {
        AccountName::parse(&s).map_err(|e| e.to_string())
    }
}

/// A staff member who signs in with a password.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserRecord {
    pub name: AccountName,
    pub role: Role,
    /// argon2id PHC string.
    pub password_hash: String,
    pub disabled: bool,
    pub created_at: DateTime<Utc>,
    pub password_changed_at: DateTime<Utc>,
}

/// A program's bearer token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRecord {
    pub name: AccountName,
    pub id: TokenId,
    pub role: Role,
    /// argon2id PHC string of the whole token text.
    pub hash: String,
    pub created_at: DateTime<Utc>,
    #[serde(default)]
    pub revoked_at: Option<DateTime<Utc>>,
}

/// What a history entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountChange {
    UserAdd,
    UserDisable,
    UserPasswd,
    TokenAdd,
    TokenRevoke,
}

/// One change to the file: who made it, what, to which account, when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryEntry {
    pub at: DateTime<Utc>,
    /// Who: `cli uid 0 (sudo by alice)` from the command line; an actor's name from the pages.
    pub by: String,
    pub change: AccountChange,
    pub name: AccountName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
}

/// The file's content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountsFile {
    pub version: u32,
    #[serde(default)]
    pub users: Vec<UserRecord>,
    #[serde(default)]
    pub tokens: Vec<TokenRecord>,
    #[serde(default)]
    pub history: Vec<HistoryEntry>,
}

impl Default for AccountsFile {
    fn default() -> Self {
        AccountsFile {
            version: ACCOUNTS_VERSION,
            users: Vec::new(),
            tokens: Vec::new(),
            history: Vec::new(),
        }
    }
}

/// Why an accounts operation failed. Each message names the account, file or reason.
#[derive(Debug, thiserror::Error)]
pub enum AccountsError {
    #[error("name `{name}`: {reason}")]
    BadName { name: String, reason: String },
    #[error("a user or token named `{0}` already exists (names are never reused)")]
    NameTaken(String),
    #[error("unknown user `{0}`")]
    UnknownUser(String),
    #[error("unknown token `{0}`")]
    UnknownToken(String),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not a valid accounts file: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error(
        "{}: format version {found}; this onshi-edge reads version {ACCOUNTS_VERSION}",
        path.display()
    )]
    Version { path: PathBuf, found: u32 },
    #[error(
        "{} would belong to uid {writer}, but the data directory belongs to uid {owner} (the edge's user, who must read it): run this as that user (e.g. sudo -u onshi) or as root",
        path.display()
    )]
    Owner {
        path: PathBuf,
        writer: u32,
        owner: u32,
    },
    #[error(transparent)]
    Hash(#[from] HashError),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> AccountsError + '_ {
    move |source| AccountsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl AccountsFile {
    pub fn user(&self, name: &str) -> Option<&UserRecord> {
        self.users.iter().find(|u| u.name.as_str() == name)
    }

    pub fn token(&self, name: &str) -> Option<&TokenRecord> {
        self.tokens.iter().find(|t| t.name.as_str() == name)
    }

    pub fn token_by_id(&self, id: TokenId) -> Option<&TokenRecord> {
        self.tokens.iter().find(|t| t.id == id)
    }

    fn name_taken(&self, name: &AccountName) -> bool {
        self.users.iter().any(|u| &u.name == name) || self.tokens.iter().any(|t| &t.name == name)
    }

    fn record(
        &mut self,
        at: DateTime<Utc>,
        by: &str,
        change: AccountChange,
        name: &AccountName,
        role: Option<Role>,
    ) {
        self.history.push(HistoryEntry {
            at,
            by: by.to_string(),
            change,
            name: name.clone(),
            role,
        });
    }

    /// Adds a user; a name already used by a user or a token is refused.
    pub fn add_user(
        &mut self,
        name: AccountName,
        role: Role,
        password_hash: String,
        now: DateTime<Utc>,
        by: &str,
    ) -> Result<(), AccountsError> {
        if self.name_taken(&name) {
            return Err(AccountsError::NameTaken(name.0));
        }
        self.record(now, by, AccountChange::UserAdd, &name, Some(role));
        self.users.push(UserRecord {
            name,
            role,
            password_hash,
            disabled: false,
            created_at: now,
            password_changed_at: now,
        });
        Ok(())
    }

    /// Disables a user (never removed). `Ok(false)`: it was disabled already (nothing written).
    pub fn disable_user(
        &mut self,
        name: &str,
        now: DateTime<Utc>,
        by: &str,
    ) -> Result<bool, AccountsError> {
        let user = self
            .users
            .iter_mut()
            .find(|u| u.name.as_str() == name)
            .ok_or_else(|| AccountsError::UnknownUser(name.to_string()))?;
        if user.disabled {
            return Ok(false);
        }
        user.disabled = true;
        let n = user.name.clone();
        self.record(now, by, AccountChange::UserDisable, &n, None);
        Ok(true)
    }

    /// Replaces a user's password hash (a disabled user stays disabled). Every session signed in
    /// with the old password ends.
    pub fn set_password(
        &mut self,
        name: &str,
        password_hash: String,
        now: DateTime<Utc>,
        by: &str,
    ) -> Result<(), AccountsError> {
        let user = self
            .users
            .iter_mut()
            .find(|u| u.name.as_str() == name)
            .ok_or_else(|| AccountsError::UnknownUser(name.to_string()))?;
        user.password_hash = password_hash;
        user.password_changed_at = now;
        let n = user.name.clone();
        self.record(now, by, AccountChange::UserPasswd, &n, None);
        Ok(())
    }

    /// Adds a token; a name already used by a user or a token is refused.
    pub fn add_token(
        &mut self,
        name: AccountName,
        role: Role,
        id: TokenId,
        hash: String,
        now: DateTime<Utc>,
        by: &str,
    ) -> Result<(), AccountsError> {
        if self.name_taken(&name) {
            return Err(AccountsError::NameTaken(name.0));
        }
        self.record(now, by, AccountChange::TokenAdd, &name, Some(role));
        self.tokens.push(TokenRecord {
            name,
            id,
            role,
            hash,
            created_at: now,
            revoked_at: None,
        });
        Ok(())
    }

    /// Revokes a token (never removed). `Ok(false)`: it was revoked already.
    pub fn revoke_token(
        &mut self,
        name: &str,
        now: DateTime<Utc>,
        by: &str,
    ) -> Result<bool, AccountsError> {
        let token = self
            .tokens
            .iter_mut()
            .find(|t| t.name.as_str() == name)
            .ok_or_else(|| AccountsError::UnknownToken(name.to_string()))?;
        if token.revoked_at.is_some() {
            return Ok(false);
        }
        token.revoked_at = Some(now);
        let n = token.name.clone();
        self.record(now, by, AccountChange::TokenRevoke, &n, None);
        Ok(true)
    }

    fn decode(bytes: &[u8], path: &Path) -> Result<AccountsFile, AccountsError> {
        // The version first, so a newer file is refused as such rather than as "unknown field".
        #[derive(Deserialize)]
        struct Tag {
            version: u32,
        }
        let corrupt = |e: serde_json::Error| AccountsError::Corrupt {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        let tag: Tag = serde_json::from_slice(bytes).map_err(corrupt)?;
        if tag.version != ACCOUNTS_VERSION {
            return Err(AccountsError::Version {
                path: path.to_path_buf(),
                found: tag.version,
            });
        }
        serde_json::from_slice(bytes).map_err(corrupt)
    }
}

/// The accounts file of one data directory, for the commands that change it.
#[derive(Debug, Clone)]
pub struct AccountsDir {
    dir: PathBuf,
}

impl AccountsDir {
    pub fn new(data_dir: &Path) -> AccountsDir {
        AccountsDir {
            dir: data_dir.to_path_buf(),
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(ACCOUNTS_FILE)
    }

    /// The file as it is now (no lock needed: it is only ever replaced whole). Missing: empty.
    pub fn read(&self) -> Result<AccountsFile, AccountsError> {
        let path = self.path();
        match open_for_reading(&path) {
            Ok(mut f) => {
                let mut bytes = Vec::new();
                f.read_to_end(&mut bytes).map_err(io_err(&path))?;
                AccountsFile::decode(&bytes, &path)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(AccountsFile::default()),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// Under the lock: reads the file, applies `change`, and replaces the file atomically when
    /// `change` succeeded (nothing is written when it fails). The data directory is created if
    /// missing.
    pub fn update<T>(
        &self,
        change: impl FnOnce(&mut AccountsFile) -> Result<T, AccountsError>,
    ) -> Result<T, AccountsError> {
        std::fs::create_dir_all(&self.dir).map_err(io_err(&self.dir))?;
        let owner = std::fs::metadata(&self.dir).map_err(io_err(&self.dir))?;
        let lock_path = self.dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        // Mode 0600 whatever the umask (open's mode passes through it), and the folder's owner.
        if lock
            .metadata()
            .map_err(io_err(&lock_path))?
            .permissions()
            .mode()
            & 0o777
            != 0o600
        {
            lock.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(io_err(&lock_path))?;
        }
        give_to_owner(&lock, &lock_path, &owner)?;
        // Blocks until any other writer is done; released when `lock` is dropped (or the process
        // dies: flock locks do not outlive their holder).
        lock.lock().map_err(io_err(&lock_path))?;
        let mut file = self.read()?;
        let out = change(&mut file)?;
        let mut bytes = serde_json::to_vec_pretty(&file).map_err(|e| AccountsError::Corrupt {
            path: self.path(),
            reason: e.to_string(),
        })?;
        bytes.push(b'\n');
        write_atomically(&self.dir, ACCOUNTS_FILE, &bytes, &owner)?;
        drop(lock);
        Ok(out)
    }
}

fn open_for_reading(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// A file created by root for the service must belong to the service's user (the data folder's
/// owner), or the edge could not read it.
fn give_to_owner(file: &File, path: &Path, owner: &std::fs::Metadata) -> Result<(), AccountsError> {
    let meta = file.metadata().map_err(io_err(path))?;
    if meta.uid() == owner.uid() {
        return Ok(());
    }
    std::os::unix::fs::fchown(file, Some(owner.uid()), Some(owner.gid())).map_err(|_| {
        AccountsError::Owner {
            path: path.to_path_buf(),
            writer: meta.uid(),
            owner: owner.uid(),
        }
    })
}

/// Replaces `dir/name` with `bytes`: temp file (O_EXCL|O_NOFOLLOW, random name, 0600 whatever
/// the umask, the folder's owner), fsync, rename, fsync of the folder. The temp file is removed
/// if anything fails before the rename.
fn write_atomically(
    dir: &Path,
    name: &str,
    bytes: &[u8],
    owner: &std::fs::Metadata,
) -> Result<(), AccountsError> {
    let suffix: [u8; 8] = random_bytes()?;
    let tmp = dir.join(format!(".{name}.{}.tmp", hex(&suffix)));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        // open's mode passes through the umask; fchmod does not.
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(io_err(&tmp))?;
        give_to_owner(&f, &dir.join(name), owner)?;
        f.write_all(bytes).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, dir.join(name)).map_err(io_err(&tmp))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// What identifies one version of the file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileKey {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl FileKey {
    fn of(m: &std::fs::Metadata) -> FileKey {
        FileKey {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
            ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
        }
    }
}

/// One loaded version of the accounts file.
#[derive(Debug)]
pub struct Loaded {
    pub file: AccountsFile,
    /// Counts reloads: a caller keeping derived state (the token cache) compares it.
    pub generation: u64,
    key: Option<FileKey>,
    /// Held open so that the inode number in `key` cannot be given to another file meanwhile.
    _held: Option<File>,
}

/// The edge's view of the accounts file: reloaded when it changed, checked with one `stat` per
/// authentication (see the module doc).
#[derive(Debug)]
pub struct Accounts {
    path: PathBuf,
    loaded: Mutex<Arc<Loaded>>,
}

impl Accounts {
    pub fn new(data_dir: &Path) -> Accounts {
        Accounts {
            path: data_dir.join(ACCOUNTS_FILE),
            loaded: Mutex::new(Arc::new(Loaded {
                file: AccountsFile::default(),
                generation: 0,
                key: None,
                _held: None,
            })),
        }
    }

    /// The accounts file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file as it is now: the loaded copy if the file has not changed since, else a fresh
    /// load. An unreadable or invalid file is an error (the caller refuses everyone) and is tried
    /// again at the next call.
    pub fn current(&self) -> Result<Arc<Loaded>, AccountsError> {
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        let now_key = match std::fs::symlink_metadata(&self.path) {
            Ok(m) => Some(FileKey::of(&m)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err(&self.path)(e)),
        };
        if now_key == loaded.key {
            return Ok(loaded.clone());
        }
        let generation = loaded.generation + 1;
        let fresh = match now_key {
            None => Loaded {
                file: AccountsFile::default(),
                generation,
                key: None,
                _held: None,
            },
            Some(_) => {
                let mut f = open_for_reading(&self.path).map_err(io_err(&self.path))?;
                // The key of what is actually read (the path may have been replaced since the stat).
                let key = FileKey::of(&f.metadata().map_err(io_err(&self.path))?);
                let mut bytes = Vec::new();
                f.read_to_end(&mut bytes).map_err(io_err(&self.path))?;
                Loaded {
                    file: AccountsFile::decode(&bytes, &self.path)?,
                    generation,
                    key: Some(key),
                    _held: Some(f),
                }
            }
        };
        *loaded = Arc::new(fresh);
        Ok(loaded.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn name(s: &str) -> AccountName {
        AccountName::parse(s).unwrap()
    }

    #[test]
    fn names_are_short_ascii_words() {
        for ok in ["alice", "reader-1", "a.b_c@clinic", "9lives"] {
            assert!(AccountName::parse(ok).is_ok(), "{ok}");
        }
        for (bad, reason) in [
            ("", "a name is required"),
            ("-x", "starts with a letter or a digit"),
            ("山田", "ASCII letters"),
            ("a b", "ASCII letters"),
            (&"x".repeat(65), "at most 64"),
        ] {
            let e = AccountName::parse(bad).unwrap_err().to_string();
            assert!(e.contains(reason), "{bad}: {e}");
        }
    }

    #[test]
    fn names_are_never_reused_between_users_and_tokens() {
        let mut f = AccountsFile::default();
        let t0 = at("2026-04-01T09:00:00Z");
        f.add_user(name("alice"), Role::Admin, "h".into(), t0, "cli")
            .unwrap();
        let e = f
            .add_user(name("alice"), Role::Reception, "h".into(), t0, "cli")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "a user or token named `alice` already exists (names are never reused)"
        );
        let id = TokenId::parse("0011223344556677").unwrap();
        assert!(matches!(
            f.add_token(name("alice"), Role::Reception, id, "h".into(), t0, "cli"),
            Err(AccountsError::NameTaken(_))
        ));
        f.add_token(name("reader"), Role::Reception, id, "h".into(), t0, "cli")
            .unwrap();
        assert!(matches!(
            f.add_user(name("reader"), Role::Reception, "h".into(), t0, "cli"),
            Err(AccountsError::NameTaken(_))
        ));
        // Disabled and revoked names stay taken.
        f.disable_user("alice", t0, "cli").unwrap();
        f.revoke_token("reader", t0, "cli").unwrap();
        assert!(
            f.add_user(name("alice"), Role::Admin, "h".into(), t0, "cli")
                .is_err()
        );
        assert!(
            f.add_token(name("reader"), Role::Admin, id, "h".into(), t0, "cli")
                .is_err()
        );
    }

    #[test]
    fn every_change_is_in_the_history_and_nothing_is_removed() {
        let mut f = AccountsFile::default();
        let t0 = at("2026-04-01T09:00:00Z");
        let t1 = at("2026-04-01T10:00:00Z");
        f.add_user(name("alice"), Role::Reception, "h1".into(), t0, "cli uid 0")
            .unwrap();
        f.set_password("alice", "h2".into(), t1, "cli uid 0")
            .unwrap();
        assert!(f.disable_user("alice", t1, "cli uid 0").unwrap());
        assert!(
            !f.disable_user("alice", t1, "cli uid 0").unwrap(),
            "already disabled"
        );
        let id = TokenId::parse("0011223344556677").unwrap();
        f.add_token(
            name("bridge"),
            Role::Reception,
            id,
            "th".into(),
            t0,
            "cli uid 0",
        )
        .unwrap();
        assert!(f.revoke_token("bridge", t1, "cli uid 0").unwrap());
        assert!(!f.revoke_token("bridge", t1, "cli uid 0").unwrap());
        let u = f.user("alice").unwrap();
        assert!(u.disabled);
        assert_eq!(u.password_hash, "h2");
        assert_eq!((u.created_at, u.password_changed_at), (t0, t1));
        assert_eq!(f.token("bridge").unwrap().revoked_at, Some(t1));
        let changes: Vec<_> = f
            .history
            .iter()
            .map(|h| (h.change, h.name.as_str()))
            .collect();
        assert_eq!(
            changes,
            vec![
                (AccountChange::UserAdd, "alice"),
                (AccountChange::UserPasswd, "alice"),
                (AccountChange::UserDisable, "alice"),
                (AccountChange::TokenAdd, "bridge"),
                (AccountChange::TokenRevoke, "bridge"),
            ]
        );
        assert!(
            matches!(f.disable_user("bob", t0, "cli"), Err(AccountsError::UnknownUser(n)) if n == "bob")
        );
        assert!(
            matches!(f.revoke_token("bob", t0, "cli"), Err(AccountsError::UnknownToken(n)) if n == "bob")
        );
        assert!(matches!(
            f.set_password("bob", "h".into(), t0, "cli"),
            Err(AccountsError::UnknownUser(_))
        ));
    }

    #[test]
    fn update_writes_a_0600_file_atomically_and_a_failed_change_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let accounts = AccountsDir::new(&data);
        assert_eq!(accounts.read().unwrap(), AccountsFile::default());
        let t0 = at("2026-04-01T09:00:00Z");
        accounts
            .update(|f| f.add_user(name("alice"), Role::Admin, "h".into(), t0, "cli"))
            .unwrap();
        let meta = std::fs::metadata(accounts.path()).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let before = std::fs::read(accounts.path()).unwrap();
        let e = accounts
            .update(|f| f.add_user(name("alice"), Role::Admin, "h".into(), t0, "cli"))
            .unwrap_err();
        assert!(matches!(e, AccountsError::NameTaken(_)));
        assert_eq!(std::fs::read(accounts.path()).unwrap(), before);
        // No temp file is left behind.
        let mut names: Vec<_> = std::fs::read_dir(&data)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, vec![ACCOUNTS_FILE, LOCK_FILE]);
        assert_eq!(accounts.read().unwrap().users.len(), 1);
    }

    #[test]
    fn a_bad_or_newer_file_is_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let accounts = AccountsDir::new(dir.path());
        std::fs::write(accounts.path(), r#"{"version":2,"users":[]}"#).unwrap();
        let e = accounts.read().unwrap_err().to_string();
        assert!(
            e.ends_with("accounts.json: format version 2; this onshi-edge reads version 1"),
            "{e}"
        );
        std::fs::write(accounts.path(), r#"{"version":1,"users":[{"name":"x"}]}"#).unwrap();
        let e = accounts.read().unwrap_err().to_string();
        assert!(
            e.contains("not a valid accounts file: missing field `role`"),
            "{e}"
        );
        // And nothing is written over it.
        assert!(accounts.update(|_| Ok(())).is_err());
    }

    #[test]
    fn the_edge_sees_each_change_at_its_next_look_and_only_then_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let writer = AccountsDir::new(dir.path());
        let edge = Accounts::new(dir.path());
        let g0 = edge.current().unwrap();
        assert!(g0.file.users.is_empty());
        let t0 = at("2026-04-01T09:00:00Z");
        writer
            .update(|f| f.add_user(name("alice"), Role::Reception, "h".into(), t0, "cli"))
            .unwrap();
        let g1 = edge.current().unwrap();
        assert!(!g1.file.user("alice").unwrap().disabled);
        // Unchanged file: the same load, no re-read.
        let again = edge.current().unwrap();
        assert!(Arc::ptr_eq(&g1, &again));
        // Many changes in a row (same size each time: the inode, kept from reuse, tells them apart).
        for i in 0..20 {
            let hash = format!("h{}", i % 2);
            writer
                .update(|f| {
                    f.users[0].password_hash = hash.clone();
                    Ok(())
                })
                .unwrap();
            assert_eq!(
                edge.current().unwrap().file.users[0].password_hash,
                hash,
                "round {i}"
            );
        }
        // A broken file refuses; fixed, it is read again.
        std::fs::write(writer.path(), "{").unwrap();
        assert!(matches!(edge.current(), Err(AccountsError::Corrupt { .. })));
        writer.update(|_| Ok(())).unwrap_err();
        std::fs::write(writer.path(), r#"{"version":1}"#).unwrap();
        assert!(edge.current().unwrap().file.users.is_empty());
    }
}
