//! `onshi-edge backup` and `onshi-edge restore` (issue 18 item 4): a consistent, encrypted
//! snapshot of an edge's data directory in one file, and a new data directory made from one.
//!
//! **Consistent:** the store's entries are copied under [`onshi_sync::sealed::SealedStore::pause_writes`], so the file
//! holds one moment of every tree — what a crash at that moment would have left on disk, with
//! nothing lost to the page cache, which the edge recovers from at start (a record written to one
//! tree and not yet to the next is completed by `backfill_sync`). Writes wait only while the raw
//! entries are copied into the file's page cache; the fsync comes after the pause ends, and the
//! pause is measured (`paused_ms` in the answer and the log).
//!
//! **Encrypted:** nothing is decrypted. The file holds the keyring exactly as on disk (the data
//! keys wrapped under the key-encryption key) and every value exactly as stored (sealed, bound to
//! its tree and key); the files of the data directory it includes are sealed under the current
//! data key. A backup is therefore useless without the key-encryption key — kept apart from it.
//!
//! **The file** (format 1): [`MAGIC`], then frames `tag (1 byte) | length (u32, big-endian) |
//! payload`: `H` the header (JSON [`BackupHeader`]), `K` the keyring as on disk, `F` a file of the
//! data directory (name length u16, name, its bytes sealed), `T` a tree (its name), `E` an entry of
//! the last `T` (key length u32, key, the value as stored), `Z` the end (JSON [`BackupEnd`]); then
//! the SHA-256 of everything before (32 bytes) and an HMAC-SHA-256 of the same under a key derived
//! from the keyring's blinding key (32 bytes). The SHA-256 finds damage and truncation without the
//! key; the HMAC finds a file changed by someone without the key. Written atomically (a temporary
//! file beside it, fsync, rename, fsync of the directory), 0600.
//!
//! Files of the data directory included ([`FILES`]): `accounts.json`, the staff accounts and the
//! programs' tokens (names, roles, password and token hashes — no patient data): without it nobody
//! can sign in to the restored edge. Not included: the key (never), `admin.sock` (a socket),
//! `accounts.lock` (an empty lock file), `mailbox-in-hand/` (counts of request files in hand: a
//! lost count costs one more attempt at most).
//!
//! Must never: decrypt a stored value, back up while a data key rotation is under way (the keyring
//! and the values would disagree on which key sealed what), restore into a directory that holds
//! edge data, or leave anything in the target directory before the whole file and its key are
//! proved.

use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use onshi_sync::sealed::Vault;
use onshi_sync::store::{SledStore, Store, StoreError};
use onshi_sync::vault::{DataKeys, KeySource, KeyringFile, VaultError, fsync_dir};
use ring::{digest, hmac};
use serde::{Deserialize, Serialize};

use crate::at_rest::{AtRest, store_dir};
use crate::auth::accounts::ACCOUNTS_FILE;

/// The first bytes of a backup file.
pub const MAGIC: &[u8; 16] = b"onshi-edge-bkup\n";
/// The format this onshi writes and reads.
pub const FORMAT: u16 = 1;
/// Files of the data directory a backup holds (see the module's documentation for why).
pub const FILES: &[&str] = &[ACCOUNTS_FILE];
/// The trailer: SHA-256, then the HMAC.
const TRAILER: u64 = 64;
/// The "tree" a file of the data directory is sealed under (it binds the name too).
const FILE_LABEL: &str = "backup.file";
/// The blinding domain the HMAC key is derived under.
const MAC_DOMAIN: &str = "onshi backup mac v1";
/// The largest header, keyring, file or end frame read (entries may be larger: sled's limit).
const SMALL_FRAME: u32 = 16 * 1024 * 1024;

/// The header: what the file is, nothing secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupHeader {
    pub format: u16,
    pub made_at: chrono::DateTime<chrono::Utc>,
    pub onshi_version: String,
    /// The data key new values were sealed with.
    pub data_key: u32,
    /// Fingerprints of the key-encryption keys that open the keyring.
    pub keks: Vec<String>,
}

/// The last frame: what came before, so a file cut at a frame boundary is found too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupEnd {
    pub trees: u64,
    pub entries: u64,
    pub files: Vec<String>,
}

/// What `backup` wrote (the answer of the command and of the admin socket).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupSummary {
    pub file: String,
    pub bytes: u64,
    pub trees: u64,
    pub entries: u64,
    pub files: Vec<String>,
    /// How long writes waited for the copy.
    pub paused_ms: u64,
    pub data_key: u32,
    pub keks: Vec<String>,
    /// SHA-256 of the file's contents before the trailer, as in the trailer.
    pub sha256: String,
}

/// What `restore` made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreSummary {
    pub data: String,
    pub made_at: chrono::DateTime<chrono::Utc>,
    pub trees: u64,
    pub entries: u64,
    pub files: Vec<String>,
    pub kek: String,
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{out}: cannot write the backup there: {source} (it is written by uid {uid}, with a \
         temporary file beside it)"
    )]
    Create {
        out: PathBuf,
        uid: u32,
        source: std::io::Error,
    },
    #[error(
        "a data key rotation is under way (data key {current}; still re-sealing what key(s) {retiring:?} \
         sealed): a backup now would hold values under a key about to be forgotten. Wait until \
         `onshi-edge key status` says no rotation is under way, then back up"
    )]
    Rotating { current: u32, retiring: Vec<u32> },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Key(#[from] VaultError),
}

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{dir} already holds edge data ({what}): restore only into a new or empty directory \
         (nothing was written)"
    )]
    HoldsData { dir: PathBuf, what: String },
    #[error(
        "{dir} is not empty (it holds {what}): restore into a new or empty directory (nothing was written)"
    )]
    NotEmpty { dir: PathBuf, what: String },
    #[error("{file}: not an onshi-edge backup ({reason}); nothing was written")]
    NotABackup { file: PathBuf, reason: String },
    #[error(
        "{file}: the backup is damaged ({reason}): it was truncated or changed after it was \
         written; nothing was written. Use another copy"
    )]
    Damaged { file: PathBuf, reason: String },
    #[error(
        "{file}: no data key to open the backup: {hint}; give --data-key FILE, the key the edge \
         was backed up with (nothing was written)"
    )]
    MissingKey { file: PathBuf, hint: String },
    #[error("{0}")]
    Key(#[from] VaultError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Everything written passes through both sums.
struct Summing<W> {
    inner: W,
    sha: digest::Context,
    mac: hmac::Context,
    bytes: u64,
}

impl<W: Write> Write for Summing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha.update(&buf[..n]);
        self.mac.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn frame(w: &mut impl Write, tag: u8, parts: &[&[u8]]) -> std::io::Result<()> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let len = u32::try_from(len).map_err(|_| std::io::Error::other("a frame over 4 GiB"))?;
    w.write_all(&[tag])?;
    w.write_all(&len.to_be_bytes())?;
    for p in parts {
        w.write_all(p)?;
    }
    Ok(())
}

fn mac_key(keys: &DataKeys) -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA256, &keys.blind(MAC_DOMAIN, b""))
}

/// The keyring's fields a backup looks at (the rest stays opaque bytes).
#[derive(Deserialize)]
struct KeyringPeek {
    current: u32,
    #[serde(default)]
    retiring: Vec<u32>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A temporary name beside `path`, unique in this process.
fn beside(path: &Path, what: &str) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(
        ".{name}.{what}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
}

fn refuse_rotation(vault: &Vault) -> Result<(), BackupError> {
    let s = vault.key_state();
    if s.retiring.is_empty() {
        return Ok(());
    }
    Err(BackupError::Rotating {
        current: s.current,
        retiring: s.retiring,
    })
}

/// Writes the backup of the open store `at_rest` (whose data directory is the store's parent)
/// to `out`. Used by the running edge (admin socket) and by the command on a stopped edge.
pub fn write(at_rest: &AtRest, out: &Path) -> Result<BackupSummary, BackupError> {
    let vault = at_rest.vault();
    let data = vault
        .paths()
        .store
        .parent()
        .unwrap_or(Path::new("."))
        .to_path_buf();
    refuse_rotation(vault)?;
    let tmp = beside(out, "tmp");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|source| BackupError::Create {
            out: out.to_path_buf(),
            uid: rustix::process::geteuid().as_raw(),
            source,
        })?;
    let written = write_into(vault, &data, file, &tmp);
    let (summary_without_file, file) = match written {
        Ok(w) => w,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    let finish = || -> Result<(), BackupError> {
        file.sync_all().map_err(|source| BackupError::Io {
            path: tmp.clone(),
            source,
        })?;
        drop(file);
        std::fs::rename(&tmp, out).map_err(|source| BackupError::Io {
            path: out.to_path_buf(),
            source,
        })?;
        fsync_dir(out.parent().unwrap_or(Path::new(".")))?;
        Ok(())
    };
    if let Err(e) = finish() {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    let summary = BackupSummary {
        file: out.display().to_string(),
        ..summary_without_file
    };
    tracing::info!(
        file = %summary.file,
        bytes = summary.bytes,
        entries = summary.entries,
        paused_ms = summary.paused_ms,
        "backup written"
    );
    Ok(summary)
}

/// The frames and the trailer into `file` (the temporary one), not yet synced.
fn write_into(
    vault: &Vault,
    data: &Path,
    file: std::fs::File,
    tmp: &Path,
) -> Result<(BackupSummary, std::fs::File), BackupError> {
    let store = vault.store();
    let io = |source| BackupError::Io {
        path: tmp.to_path_buf(),
        source,
    };
    let keys = store.keys().clone();
    // The files first, outside the pause: they are replaced atomically, so a read sees one whole.
    let mut files = Vec::new();
    for name in FILES {
        let path = data.join(name);
        match std::fs::read(&path) {
            Ok(bytes) => files.push((*name, keys.seal(FILE_LABEL, name.as_bytes(), &bytes)?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(BackupError::Io { path, source }),
        }
    }
    let mut w = Summing {
        inner: BufWriter::with_capacity(1 << 20, file),
        sha: digest::Context::new(&digest::SHA256),
        mac: hmac::Context::with_key(&mac_key(&keys)),
        bytes: 0,
    };
    w.write_all(MAGIC).map_err(io)?;
    let inner = store.inner();
    // Tree handles opened before the pause (opening one may count its entries).
    let mut trees = Vec::new();
    for name in inner.tree_names()? {
        trees.push((name.clone(), inner.tree(&name)?));
    }
    let (end, header, paused_ms) = {
        let _paused = store.pause_writes();
        let started = Instant::now();
        refuse_rotation(vault)?;
        let keyring = std::fs::read(&vault.paths().keyring).map_err(|source| BackupError::Io {
            path: vault.paths().keyring.clone(),
            source,
        })?;
        let peek: KeyringPeek =
            serde_json::from_slice(&keyring).map_err(|e| VaultError::BadKeyring {
                path: vault.paths().keyring.clone(),
                reason: e.to_string(),
            })?;
        if !peek.retiring.is_empty() {
            return Err(BackupError::Rotating {
                current: peek.current,
                retiring: peek.retiring,
            });
        }
        let file: KeyringFile =
            serde_json::from_slice(&keyring).map_err(|e| VaultError::BadKeyring {
                path: vault.paths().keyring.clone(),
                reason: e.to_string(),
            })?;
        let header = BackupHeader {
            format: FORMAT,
            made_at: chrono::Utc::now(),
            onshi_version: env!("CARGO_PKG_VERSION").to_string(),
            data_key: peek.current,
            keks: file.opened_by(),
        };
        let header_json = serde_json::to_vec(&header)
            .map_err(std::io::Error::other)
            .map_err(io)?;
        frame(&mut w, b'H', &[&header_json]).map_err(io)?;
        frame(&mut w, b'K', &[&keyring]).map_err(io)?;
        for (name, sealed) in &files {
            let n = name.as_bytes();
            frame(&mut w, b'F', &[&(n.len() as u16).to_be_bytes(), n, sealed]).map_err(io)?;
        }
        // A tree made since the handles were opened (the first mailbox record, say).
        for name in inner.tree_names()? {
            if !trees.iter().any(|(n, _)| *n == name) {
                trees.push((name.clone(), inner.tree(&name)?));
            }
        }
        let mut entries = 0u64;
        for (name, tree) in &trees {
            frame(&mut w, b'T', &[name.as_bytes()]).map_err(io)?;
            for kv in tree.scan_prefix(&[]) {
                let (k, v) = kv?;
                frame(&mut w, b'E', &[&(k.len() as u32).to_be_bytes(), &k, &v]).map_err(io)?;
                entries += 1;
            }
        }
        let end = BackupEnd {
            trees: trees.len() as u64,
            entries,
            files: files.iter().map(|(n, _)| n.to_string()).collect(),
        };
        (end, header, started.elapsed().as_millis() as u64)
    };
    let end_json = serde_json::to_vec(&end)
        .map_err(std::io::Error::other)
        .map_err(io)?;
    frame(&mut w, b'Z', &[&end_json]).map_err(io)?;
    let Summing {
        inner: mut buffered,
        sha,
        mac,
        bytes,
    } = w;
    let sha = sha.finish();
    let tag = mac.sign();
    buffered.write_all(sha.as_ref()).map_err(io)?;
    buffered.write_all(tag.as_ref()).map_err(io)?;
    let file = buffered.into_inner().map_err(|e| io(e.into_error()))?;
    Ok((
        BackupSummary {
            file: String::new(),
            bytes: bytes + TRAILER,
            trees: end.trees,
            entries: end.entries,
            files: end.files,
            paused_ms,
            data_key: header.data_key,
            keks: header.keks,
            sha256: hex(sha.as_ref()),
        },
        file,
    ))
}

/// Reads frames, feeding every byte read to the HMAC.
struct Frames<R> {
    /// Limited to the frames: what is left bounds a frame's length.
    inner: R,
    mac: hmac::Context,
    file: PathBuf,
}

impl Frames<std::io::Take<BufReader<std::fs::File>>> {
    fn exact(&mut self, buf: &mut [u8]) -> Result<(), RestoreError> {
        self.inner.read_exact(buf).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => self.damaged("it ends inside a frame"),
            _ => RestoreError::Io {
                path: self.file.clone(),
                source: e,
            },
        })?;
        self.mac.update(buf);
        Ok(())
    }

    fn damaged(&self, reason: &str) -> RestoreError {
        RestoreError::Damaged {
            file: self.file.clone(),
            reason: reason.to_string(),
        }
    }

    /// The next frame: its tag and payload; `None` at the end of the frames.
    fn next(&mut self, max: u32) -> Result<Option<(u8, Vec<u8>)>, RestoreError> {
        let mut head = [0u8; 5];
        match self.inner.read(&mut head[..1]) {
            Ok(0) => return Ok(None),
            Ok(_) => {}
            Err(source) => {
                return Err(RestoreError::Io {
                    path: self.file.clone(),
                    source,
                });
            }
        }
        self.mac.update(&head[..1]);
        self.exact(&mut head[1..])?;
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]);
        if len > max || u64::from(len) > self.inner.limit() {
            return Err(self.damaged("a frame longer than any onshi writes"));
        }
        let mut payload = vec![0u8; len as usize];
        self.exact(&mut payload)?;
        Ok(Some((head[0], payload)))
    }
}

/// `restore FILE --data DIR`: a new data directory from a backup, opened by the key from
/// `source`. Checked before anything is written: DIR (new or empty), the file (magic, format, its
/// SHA-256), the key (it opens the backup's keyring). The store is then rebuilt in a temporary
/// directory beside DIR, the HMAC checked, the result opened once as the edge would (and given a
/// new journal node id: ids made after the backup by the original edge are never made again),
/// and renamed into place.
pub fn restore(
    backup: &Path,
    data: &Path,
    source: &KeySource,
) -> Result<RestoreSummary, RestoreError> {
    let file_io = |source| RestoreError::Io {
        path: backup.to_path_buf(),
        source,
    };
    refuse_used(data)?;
    let parent = match data.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !parent.is_dir() {
        return Err(RestoreError::Io {
            path: parent,
            source: std::io::ErrorKind::NotFound.into(),
        });
    }
    let len = std::fs::metadata(backup).map_err(file_io)?.len();
    let frames_len = check_sum(backup, len)?;
    // The header and the keyring, then the key.
    let mut frames = open_frames(backup, frames_len, None)?;
    let header: BackupHeader = match frames.next(SMALL_FRAME)? {
        Some((b'H', h)) => serde_json::from_slice(&h)
            .map_err(|e| frames.damaged(&format!("its header does not read: {e}")))?,
        _ => return Err(frames.damaged("no header")),
    };
    if header.format != FORMAT {
        return Err(RestoreError::NotABackup {
            file: backup.to_path_buf(),
            reason: format!("format {} (this onshi reads {FORMAT})", header.format),
        });
    }
    let keyring_bytes = match frames.next(SMALL_FRAME)? {
        Some((b'K', k)) => k,
        _ => return Err(frames.damaged("no keyring")),
    };
    drop(frames);
    let keyring: KeyringFile =
        serde_json::from_slice(&keyring_bytes).map_err(|e| RestoreError::Damaged {
            file: backup.to_path_buf(),
            reason: format!("its keyring does not read: {e}"),
        })?;
    let Some(kek) = source.load()? else {
        return Err(RestoreError::MissingKey {
            file: backup.to_path_buf(),
            hint: format!("{} does not exist", source.path().display()),
        });
    };
    let keys = keyring.open(&kek, backup)?;
    // Proved: the file is whole and the key opens it. From here on only a temporary directory is
    // written, removed again on any failure.
    let tmp = beside(data, "restoring");
    let mut frames = open_frames(backup, frames_len, Some(&keys))?;
    let built = build(&mut frames, &keys, &tmp, &keyring_bytes, source);
    let (trees, entries, files) = match built {
        Ok(b) => b,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    let placed = (|| {
        // An empty directory is replaced by the rename; a non-empty one was refused above.
        std::fs::rename(&tmp, data).map_err(|source| RestoreError::Io {
            path: data.to_path_buf(),
            source,
        })?;
        fsync_dir(&parent).map_err(RestoreError::from)
    })();
    if let Err(e) = placed {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    Ok(RestoreSummary {
        data: data.display().to_string(),
        made_at: header.made_at,
        trees,
        entries,
        files,
        kek: kek.fingerprint(),
    })
}

/// DIR must be new or empty; what it holds is named.
fn refuse_used(data: &Path) -> Result<(), RestoreError> {
    let rd = match std::fs::read_dir(data) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(RestoreError::Io {
                path: data.to_path_buf(),
                source,
            });
        }
        Ok(rd) => rd,
    };
    let mut names: Vec<String> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let edge: Vec<&String> = names
        .iter()
        .filter(|n| {
            let journal = store_dir(Path::new(""));
            let journal = journal.to_string_lossy();
            n.as_str() == journal
                || n.starts_with(&format!("{journal}."))
                || FILES.contains(&n.as_str())
        })
        .collect();
    if !edge.is_empty() {
        return Err(RestoreError::HoldsData {
            dir: data.to_path_buf(),
            what: edge
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    if !names.is_empty() {
        let mut what = names.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
        if names.len() > 5 {
            what.push_str(", …");
        }
        return Err(RestoreError::NotEmpty {
            dir: data.to_path_buf(),
            what,
        });
    }
    Ok(())
}

/// Checks the magic and the SHA-256 of the whole; returns the length of what the trailer covers.
fn check_sum(backup: &Path, len: u64) -> Result<u64, RestoreError> {
    let file_io = |source| RestoreError::Io {
        path: backup.to_path_buf(),
        source,
    };
    let mut r = BufReader::with_capacity(1 << 20, std::fs::File::open(backup).map_err(file_io)?);
    let mut magic = [0u8; 16];
    let got = read_up_to(&mut r, &mut magic).map_err(file_io)?;
    if got < MAGIC.len() || &magic != MAGIC {
        return Err(RestoreError::NotABackup {
            file: backup.to_path_buf(),
            reason: "it does not begin as one".into(),
        });
    }
    let damaged = |reason: &str| RestoreError::Damaged {
        file: backup.to_path_buf(),
        reason: reason.to_string(),
    };
    if len < MAGIC.len() as u64 + TRAILER {
        return Err(damaged("shorter than the smallest backup"));
    }
    let covered = len - TRAILER;
    let mut sha = digest::Context::new(&digest::SHA256);
    sha.update(MAGIC);
    let mut left = covered - MAGIC.len() as u64;
    let mut buf = vec![0u8; 1 << 20];
    while left > 0 {
        let n = (left.min(buf.len() as u64)) as usize;
        r.read_exact(&mut buf[..n]).map_err(file_io)?;
        sha.update(&buf[..n]);
        left -= n as u64;
    }
    let mut stored = [0u8; 32];
    r.read_exact(&mut stored).map_err(file_io)?;
    if sha.finish().as_ref() != stored {
        return Err(damaged("its SHA-256 does not match"));
    }
    Ok(covered)
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..])? {
            0 => break,
            n => got += n,
        }
    }
    Ok(got)
}

/// The frames of `backup` (after its magic, up to its trailer); with `keys`, every byte from the
/// first is fed to the HMAC.
fn open_frames(
    backup: &Path,
    covered: u64,
    keys: Option<&DataKeys>,
) -> Result<Frames<std::io::Take<BufReader<std::fs::File>>>, RestoreError> {
    let file = std::fs::File::open(backup).map_err(|source| RestoreError::Io {
        path: backup.to_path_buf(),
        source,
    })?;
    let mut r = BufReader::with_capacity(1 << 20, file);
    let mut magic = [0u8; 16];
    r.read_exact(&mut magic)
        .map_err(|source| RestoreError::Io {
            path: backup.to_path_buf(),
            source,
        })?;
    // Without the keys (reading the header and keyring to find them) nothing is checked here:
    // the SHA-256 has been.
    let key = keys
        .map(mac_key)
        .unwrap_or_else(|| hmac::Key::new(hmac::HMAC_SHA256, &[0u8; 32]));
    let mut mac = hmac::Context::with_key(&key);
    mac.update(&magic);
    Ok(Frames {
        inner: r.take(covered - MAGIC.len() as u64),
        mac,
        file: backup.to_path_buf(),
    })
}

/// Writes the store and the files into `tmp`, checking the HMAC of the whole at the end.
fn build(
    frames: &mut Frames<std::io::Take<BufReader<std::fs::File>>>,
    keys: &DataKeys,
    tmp: &Path,
    keyring_bytes: &[u8],
    source: &KeySource,
) -> Result<(u64, u64, Vec<String>), RestoreError> {
    let tmp_io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RestoreError::Io { path, source }
    };
    onshi_sync::modes::create_private_dir(tmp).map_err(tmp_io(tmp))?;
    let store_path = store_dir(tmp);
    let sled = SledStore::open(&store_path)?;
    let mut tree: Option<std::sync::Arc<dyn onshi_sync::store::Tree>> = None;
    let (mut trees, mut entries) = (0u64, 0u64);
    let mut files = Vec::new();
    let mut end: Option<BackupEnd> = None;
    // An entry may be as long as sled allows; `next` still bounds it by what is left of the file.
    while let Some((tag, payload)) = frames.next(u32::MAX)? {
        if end.is_some() {
            return Err(frames.damaged("frames after its end"));
        }
        match tag {
            b'H' | b'K' => {}
            b'F' => {
                let (name, sealed) = split_file(&payload)
                    .ok_or_else(|| frames.damaged("a file frame does not read"))?;
                if !FILES.contains(&name.as_str()) {
                    return Err(frames.damaged(&format!("a file it has no place for: {name:?}")));
                }
                let bytes = keys
                    .open(FILE_LABEL, name.as_bytes(), sealed)
                    .map_err(|_| frames.damaged(&format!("{name} does not open")))?;
                let path = tmp.join(&name);
                write_private(&path, &bytes).map_err(tmp_io(&path))?;
                files.push(name);
            }
            b'T' => {
                let name = String::from_utf8(payload)
                    .map_err(|_| frames.damaged("a tree name is not UTF-8"))?;
                tree = Some(sled.tree(&name)?);
                trees += 1;
            }
            b'E' => {
                let t = tree
                    .as_ref()
                    .ok_or_else(|| frames.damaged("an entry before any tree"))?;
                let (k, v) = split_entry(&payload)
                    .ok_or_else(|| frames.damaged("an entry does not read"))?;
                t.insert(k, v)?;
                entries += 1;
            }
            b'Z' => {
                end = Some(
                    serde_json::from_slice(&payload)
                        .map_err(|_| frames.damaged("its end frame does not read"))?,
                );
            }
            other => return Err(frames.damaged(&format!("an unknown frame {other:#04x}"))),
        }
    }
    let Some(end) = end else {
        return Err(frames.damaged("it has no end frame"));
    };
    if end.trees != trees || end.entries != entries || end.files != files {
        return Err(frames.damaged("its end frame does not count what came before"));
    }
    // The HMAC: the file as the key's owner wrote it (the trailer: SHA-256, then the HMAC).
    let mac = std::mem::replace(
        &mut frames.mac,
        hmac::Context::with_key(&hmac::Key::new(hmac::HMAC_SHA256, &[0u8; 32])),
    );
    let mut trailer = [0u8; TRAILER as usize];
    frames
        .inner
        .get_mut()
        .read_exact(&mut trailer)
        .map_err(|source| RestoreError::Io {
            path: frames.file.clone(),
            source,
        })?;
    if mac.sign().as_ref() != &trailer[32..] {
        return Err(frames.damaged(
            "its HMAC does not match: changed by someone without the key, or made under another keyring",
        ));
    }
    sled.sync()?;
    drop(tree);
    drop(sled);
    let keyring_path = onshi_sync::sealed::VaultPaths::new(&store_path).keyring;
    onshi_sync::vault::write_atomic(&keyring_path, keyring_bytes)?;
    // Opened once as the edge will open it: the key, the keyring, the store.
    let (vault, _) = Vault::open(&store_path, source.clone(), &[]).map_err(|e| match e {
        onshi_sync::sealed::VaultOpenError::Key(k) => RestoreError::Key(k),
        onshi_sync::sealed::VaultOpenError::Store(s) => RestoreError::Store(s),
        other => RestoreError::Io {
            path: store_path.clone(),
            source: std::io::Error::other(other.to_string()),
        },
    })?;
    // Records made from here on get ids of a node of their own (see `renew_node_id`).
    crate::journal::renew_node_id(vault.store())?;
    drop(vault);
    fsync_dir(tmp)?;
    Ok((trees, entries, files))
}

fn split_file(payload: &[u8]) -> Option<(String, &[u8])> {
    let n = u16::from_be_bytes([*payload.first()?, *payload.get(1)?]) as usize;
    let name = std::str::from_utf8(payload.get(2..2 + n)?).ok()?;
    Some((name.to_string(), payload.get(2 + n..)?))
}

fn split_entry(payload: &[u8]) -> Option<(&[u8], &[u8])> {
    let n = u32::from_be_bytes(payload.get(..4)?.try_into().ok()?) as usize;
    Some((payload.get(4..4 + n)?, payload.get(4 + n..)?))
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    onshi_sync::modes::restrict_file(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use onshi_sync::sealed::SealedStore;
    use onshi_sync::vault::Kek;
    use std::collections::BTreeMap;

    type Raw = BTreeMap<String, Vec<(Vec<u8>, Vec<u8>)>>;

    /// Every tree's entries as stored (sealed).
    fn raw(store: &SealedStore) -> Raw {
        let inner = store.inner();
        let mut out = Raw::new();
        for name in inner.tree_names().unwrap() {
            let t = inner.tree(&name).unwrap();
            out.insert(name, t.scan_prefix(&[]).map(|kv| kv.unwrap()).collect());
        }
        out
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    /// An edge data directory with a few trees and an accounts file, its key in `dir/k`.
    fn edge_data(dir: &Path) -> (PathBuf, PathBuf) {
        let data = dir.join("data");
        let key = dir.join("k");
        let (a, _) = AtRest::open(&data, Some(&key)).unwrap();
        let store = a.store();
        let checks = store.tree("journal.checks").unwrap();
        for i in 0..50u32 {
            checks
                .insert(&i.to_be_bytes(), format!("ヤマダ タロウ {i}").as_bytes())
                .unwrap();
        }
        store
            .tree("audit")
            .unwrap()
            .insert(b"e1", b"entry")
            .unwrap();
        store
            .tree("journal.meta")
            .unwrap()
            .insert(b"node_id", &7u32.to_be_bytes())
            .unwrap();
        store.sync().unwrap();
        std::fs::write(data.join(ACCOUNTS_FILE), br#"{"users":["reception"]}"#).unwrap();
        (data, key)
    }

    fn leftovers(parent: &Path) -> Vec<String> {
        std::fs::read_dir(parent)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("restoring") || n.contains(".tmp-"))
            .collect()
    }

    #[test]
    fn a_backup_restores_every_tree_as_stored_and_the_accounts() {
        let dir = tempfile::tempdir().unwrap();
        let (data, key) = edge_data(dir.path());
        let out = dir.path().join("b.onshi");
        let (before, summary) = {
            let (a, _) = AtRest::open(&data, Some(&key)).unwrap();
            let s = write(&a, &out).unwrap();
            (raw(a.vault().store()), s)
        };
        assert_eq!(summary.entries, 52);
        assert_eq!(summary.files, vec![ACCOUNTS_FILE.to_string()]);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::metadata(&out).unwrap().len(), summary.bytes);
        let bytes = std::fs::read(&out).unwrap();
        assert!(
            !contains(&bytes, "ヤマダ".as_bytes()),
            "a value in plain text"
        );
        assert!(
            !contains(&bytes, b"reception"),
            "the accounts in plain text"
        );

        let restored = dir.path().join("restored");
        let s = restore(&out, &restored, &KeySource::File(key.clone())).unwrap();
        assert_eq!((s.entries, s.trees), (52, summary.trees));
        assert_eq!(
            std::fs::read(restored.join(ACCOUNTS_FILE)).unwrap(),
            br#"{"users":["reception"]}"#
        );
        let (a, _) = AtRest::open(&restored, Some(&key)).unwrap();
        let meta = a.store().tree("journal.meta").unwrap();
        let node = meta.get(b"node_id").unwrap().unwrap();
        assert_ne!(node, 7u32.to_be_bytes(), "a journal node of its own");
        let mut after = raw(a.vault().store());
        let mut before = before;
        for r in [&mut after, &mut before] {
            r.get_mut("journal.meta")
                .unwrap()
                .retain(|(k, _)| k != b"node_id");
        }
        assert_eq!(after, before, "every other entry, byte for byte");
        let v = a.store().tree("journal.checks").unwrap();
        assert_eq!(
            v.get(&7u32.to_be_bytes()).unwrap().unwrap(),
            "ヤマダ タロウ 7".as_bytes()
        );
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn a_damaged_backup_is_refused_and_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let (data, key) = edge_data(dir.path());
        let out = dir.path().join("b.onshi");
        {
            let (a, _) = AtRest::open(&data, Some(&key)).unwrap();
            write(&a, &out).unwrap();
        }
        let good = std::fs::read(&out).unwrap();
        let bad = dir.path().join("bad.onshi");
        let target = dir.path().join("target");
        let key = KeySource::File(key);
        let mut cases: Vec<(&str, Vec<u8>)> = vec![
            ("half", good[..good.len() / 2].to_vec()),
            ("no trailer", good[..good.len() - 64].to_vec()),
            ("one byte short", good[..good.len() - 1].to_vec()),
            ("empty", Vec::new()),
        ];
        for at in [20, good.len() / 2, good.len() - 70, good.len() - 1] {
            let mut b = good.clone();
            b[at] ^= 0x40;
            cases.push(("a flipped byte", b));
        }
        for (what, bytes) in cases {
            std::fs::write(&bad, &bytes).unwrap();
            let e = restore(&bad, &target, &key).unwrap_err().to_string();
            assert!(
                e.contains("damaged") || e.contains("not an onshi-edge backup"),
                "{what}: {e}"
            );
            assert!(e.contains("nothing was written"), "{what}: {e}");
            assert!(!target.exists(), "{what}");
            assert!(leftovers(dir.path()).is_empty(), "{what}");
        }
    }

    #[test]
    fn a_backup_changed_without_the_key_is_refused_by_its_hmac() {
        let dir = tempfile::tempdir().unwrap();
        let (data, key) = edge_data(dir.path());
        let out = dir.path().join("b.onshi");
        {
            let (a, _) = AtRest::open(&data, Some(&key)).unwrap();
            write(&a, &out).unwrap();
        }
        // The accounts file's frame dropped, the end frame and the SHA-256 made again to agree:
        // all that someone without the key can do. Only the HMAC tells.
        let good = std::fs::read(&out).unwrap();
        let body = &good[..good.len() - 64];
        let mut rebuilt = MAGIC.to_vec();
        let mut at = MAGIC.len();
        while at < body.len() {
            let len = u32::from_be_bytes(body[at + 1..at + 5].try_into().unwrap()) as usize;
            let f = &body[at..at + 5 + len];
            match f[0] {
                b'F' => {}
                b'Z' => {
                    let mut end: BackupEnd = serde_json::from_slice(&f[5..]).unwrap();
                    end.files.clear();
                    frame(&mut rebuilt, b'Z', &[&serde_json::to_vec(&end).unwrap()]).unwrap();
                }
                _ => rebuilt.extend_from_slice(f),
            }
            at += 5 + len;
        }
        let sha = digest::digest(&digest::SHA256, &rebuilt);
        rebuilt.extend_from_slice(sha.as_ref());
        rebuilt.extend_from_slice(&good[good.len() - 32..]);
        std::fs::write(&out, &rebuilt).unwrap();
        let target = dir.path().join("target");
        let e = restore(&out, &target, &KeySource::File(key))
            .unwrap_err()
            .to_string();
        assert!(e.contains("HMAC does not match"), "{e}");
        assert!(!target.exists());
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn a_wrong_key_or_a_used_directory_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let (data, key) = edge_data(dir.path());
        let out = dir.path().join("b.onshi");
        let right = Kek::load(&key).unwrap().fingerprint();
        {
            let (a, _) = AtRest::open(&data, Some(&key)).unwrap();
            write(&a, &out).unwrap();
        }
        let wrong = dir.path().join("wrong");
        Kek::generate().unwrap().write(&wrong).unwrap();
        let target = dir.path().join("target");
        std::fs::create_dir(&target).unwrap();
        let e = restore(&out, &target, &KeySource::File(wrong.clone()))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&Kek::load(&wrong).unwrap().fingerprint()) && e.contains(&right),
            "{e}"
        );
        assert_eq!(std::fs::read_dir(&target).unwrap().count(), 0);
        let e = restore(&out, &target, &KeySource::File(dir.path().join("none")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no data key"), "{e}");
        let e = restore(&out, &data, &KeySource::File(key.clone()))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("already holds edge data") && e.contains("journal"),
            "{e}"
        );
        std::fs::write(target.join("x"), b"").unwrap();
        let e = restore(&out, &target, &KeySource::File(key))
            .unwrap_err()
            .to_string();
        assert!(e.contains("is not empty (it holds x)"), "{e}");
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn no_backup_while_a_data_key_rotation_is_under_way() {
        let dir = tempfile::tempdir().unwrap();
        let (data, key) = edge_data(dir.path());
        let (a, _) = AtRest::open(&data, Some(&key)).unwrap();
        a.vault().start_data_rotation().unwrap();
        let out = dir.path().join("b.onshi");
        let e = write(&a, &out).unwrap_err().to_string();
        assert!(e.contains("a data key rotation is under way"), "{e}");
        assert!(!out.exists());
        assert!(leftovers(dir.path()).is_empty());
    }
}
