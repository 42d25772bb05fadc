//! Keys for personal data at rest (issue 18): the key-encryption key (KEK) that IT staff keep
//! outside the data directory, the data keys it wraps, and the sealing of stored values with them.
//!
//! Envelope encryption: each stored value is sealed with AES-256-GCM (ring) under a random 256-bit
//! *data key*; the data keys and the *blinding key* (HMAC-SHA-256, for lookups that need equality on
//! card numbers) are kept wrapped — sealed under the KEK — in a small file beside the store, the
//! *keyring* (`STORE.keyring`, JSON). The KEK comes from `--data-key FILE` or the systemd credential
//! `onshi-data-key`; it is never written into the data directory.
//!
//! Why AES-256-GCM: ring has it, the machines have AES-NI (a few hundred MB/s a core, far above what
//! the journal writes), and each value's 96-bit nonce is unique: 4 random bytes and a 64-bit
//! counter from a random start per process (`Nonces`; `key rotate --data` starts a new key). ChaCha20-Poly1305 would do as
//! well without AES-NI; the format names the algorithm by the key's id in the keyring, not by a
//! guess, so a later change is a new key id.
//!
//! A sealed value: `0xE5`, the data key's id (u32, big-endian), the nonce (12 bytes), the
//! ciphertext with its 16-byte tag. Associated data binds it to its tree, its key in that tree and
//! the data key's id: a value moved to another record or tree, or re-labelled with another key id,
//! does not open.
//!
//! Must never: write a key in plain text under the data directory, log a key, or accept a value that
//! does not authenticate.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use ring::{digest, hmac};
use serde::{Deserialize, Serialize};

/// Bytes of every key here.
pub const KEY_LEN: usize = 32;
/// The first byte of a sealed value.
pub const SEALED_TAG: u8 = 0xE5;
/// Header bytes of a sealed value before the ciphertext.
const HEADER: usize = 1 + 4 + NONCE_LEN;
/// Bytes a blinded key part takes (HMAC-SHA-256, truncated: 128 bits leave no collision in reach).
pub const BLIND_LEN: usize = 16;
/// The systemd credential that holds the KEK.
pub const CREDENTIAL: &str = "onshi-data-key";
/// The key file's name inside the data directory, when nothing else is possible.
pub const INSIDE_KEY: &str = "data.key";
/// The keyring's format.
const KEYRING_FORMAT: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path}: not a data key (expected 64 hexadecimal digits, or 32 bytes; make one with \
         `head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n'`)"
    )]
    BadKeyFile { path: PathBuf },
    #[error(
        "the data key {given} does not open {keyring} (it was sealed under {expected}); nothing was \
         changed. Give the key this data directory was made with (--data-key FILE or the \
         credential {CREDENTIAL})"
    )]
    WrongKey {
        keyring: PathBuf,
        given: String,
        expected: String,
    },
    #[error(
        "{keyring}: the data here is encrypted, and no data key was given: {hint}; nothing was \
         changed"
    )]
    MissingKey { keyring: PathBuf, hint: String },
    #[error("{path}: the keyring does not read: {reason}")]
    BadKeyring { path: PathBuf, reason: String },
    #[error("a sealed value does not open under data key {key_id}: {reason}")]
    Open { key_id: u32, reason: &'static str },
    #[error("the system random number generator failed")]
    Random,
    #[error(
        "the key is the systemd credential {CREDENTIAL}: give --new-key FILE, then encrypt it with \
         systemd-creds (packaging/README.md)"
    )]
    CredentialNeedsNewKey,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> VaultError + '_ {
    move |source| VaultError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn random_key() -> Result<[u8; KEY_LEN], VaultError> {
    let mut k = [0u8; KEY_LEN];
    SystemRandom::new()
        .fill(&mut k)
        .map_err(|_| VaultError::Random)?;
    Ok(k)
}

/// Writes `bytes` to `path` atomically and durably (temporary file, fsync, rename, fsync of the
/// directory), private to the service user.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), VaultError> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension(format!(
        "{}tmp",
        path.extension()
            .map(|e| format!("{}.", e.to_string_lossy()))
            .unwrap_or_default()
    ));
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io(&tmp))?;
        crate::modes::restrict_file(&tmp).map_err(io(&tmp))?;
        f.write_all(bytes).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io(path))?;
    fsync_dir(dir)
}

/// Makes a directory's entries (a rename, a new or removed file) durable.
pub fn fsync_dir(dir: &Path) -> Result<(), VaultError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

/// The key-encryption key. Its bytes never leave this type except to wrap and unwrap.
pub struct Kek {
    bytes: [u8; KEY_LEN],
}

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Kek({})", self.fingerprint())
    }
}

impl Kek {
    /// A new random key.
    pub fn generate() -> Result<Kek, VaultError> {
        Ok(Kek {
            bytes: random_key()?,
        })
    }

    /// A key file's bytes: 64 hexadecimal digits (surrounding white space ignored), or 32 raw bytes.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Kek, VaultError> {
        let bad = || VaultError::BadKeyFile {
            path: path.to_path_buf(),
        };
        if let Ok(text) = std::str::from_utf8(bytes) {
            let t = text.trim();
            if t.len() == 2 * KEY_LEN {
                let v = unhex(t).ok_or_else(bad)?;
                let mut k = [0u8; KEY_LEN];
                k.copy_from_slice(&v);
                return Ok(Kek { bytes: k });
            }
        }
        if bytes.len() == KEY_LEN {
            let mut k = [0u8; KEY_LEN];
            k.copy_from_slice(bytes);
            return Ok(Kek { bytes: k });
        }
        Err(bad())
    }

    /// Reads a key file.
    pub fn load(path: &Path) -> Result<Kek, VaultError> {
        let bytes = std::fs::read(path).map_err(io(path))?;
        Kek::parse(&bytes, path)
    }

    /// Writes this key to `path` (64 hex digits and a newline, 0600), atomically and durably.
    pub fn write(&self, path: &Path) -> Result<(), VaultError> {
        write_atomic(path, format!("{}\n", hex(&self.bytes)).as_bytes())
    }

    /// What names this key in messages and in the keyring: a hash of it, never the key.
    pub fn fingerprint(&self) -> String {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(b"onshi kek fingerprint v1\0");
        ctx.update(&self.bytes);
        format!("sha256:{}", &hex(ctx.finish().as_ref())[..16])
    }

    fn aead(&self) -> LessSafeKey {
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &self.bytes).expect("32-byte AES key"))
    }

    fn wrap(&self, label: &str, secret: &[u8]) -> Result<String, VaultError> {
        Ok(hex(&seal_with(
            &self.aead(),
            0,
            random_nonce()?,
            label.as_bytes(),
            secret,
        )?))
    }

    fn unwrap(&self, label: &str, wrapped: &str) -> Option<Vec<u8>> {
        let bytes = unhex(wrapped)?;
        open_with(&self.aead(), label.as_bytes(), &bytes).ok()
    }
}

/// Where the KEK comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `--data-key FILE` (created, 0600, when the data directory is new).
    File(PathBuf),
    /// The systemd credential `onshi-data-key` (read-only; `LoadCredentialEncrypted=`).
    Credential(PathBuf),
    /// Neither was given: a key file beside the data directory, on the same disk — the status
    /// page and `check-config` warn that it protects nothing against a stolen disk.
    Beside(PathBuf),
}

impl KeySource {
    /// `--data-key` if given, else the credential if systemd passed one, else the file beside
    /// `data` (named `DATA.key`).
    pub fn choose(flag: Option<&Path>, data: &Path) -> KeySource {
        if let Some(p) = flag {
            return KeySource::File(p.to_path_buf());
        }
        if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
            let p = Path::new(&dir).join(CREDENTIAL);
            if p.is_file() {
                return KeySource::Credential(p);
            }
        }
        let name = data
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "data".into());
        let parent = data.parent().unwrap_or(Path::new("."));
        let beside = parent.join(format!("{name}.key"));
        // Inside the data directory only where the service cannot write beside it (the package's
        // /var/lib/onshi under ProtectSystem=strict): the start must not fail for want of a key.
        let inside = data.join(INSIDE_KEY);
        let writable = |dir: &Path| rustix::fs::access(dir, rustix::fs::Access::WRITE_OK).is_ok();
        if !beside.exists() && (inside.exists() || (!writable(parent) && writable(data))) {
            return KeySource::Beside(inside);
        }
        KeySource::Beside(beside)
    }

    pub fn path(&self) -> &Path {
        match self {
            KeySource::File(p) | KeySource::Credential(p) | KeySource::Beside(p) => p,
        }
    }

    /// The warning to show while this source is in use, if any.
    pub fn warning(&self) -> Option<String> {
        match self {
            KeySource::Beside(p) => Some(format!(
                "the data key is in {} on the same disk as the data: encryption at rest protects \
                 nothing against a stolen disk; give --data-key on removable or separate storage, \
                 or the systemd credential {CREDENTIAL} (packaging/README.md)",
                p.display()
            )),
            _ => None,
        }
    }

    /// The key, when it exists. `None`: it does not (a credential always does).
    pub fn load(&self) -> Result<Option<Kek>, VaultError> {
        let p = self.path();
        match std::fs::metadata(p) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(p)(e)),
            Ok(_) => Kek::load(p).map(Some),
        }
    }

    /// The key, made (and written, 0600) when it does not exist yet — only for a new data
    /// directory or a plain one being converted. A credential is never made here.
    pub fn load_or_create(&self) -> Result<(Kek, bool), VaultError> {
        if let Some(k) = self.load()? {
            return Ok((k, false));
        }
        if let KeySource::Credential(p) = self {
            return Err(io(p)(std::io::ErrorKind::NotFound.into()));
        }
        let k = Kek::generate()?;
        k.write(self.path())?;
        Ok((k, true))
    }
}

fn random_nonce() -> Result<[u8; NONCE_LEN], VaultError> {
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| VaultError::Random)?;
    Ok(nonce)
}

/// The nonces a process seals values with: 4 random bytes and a 64-bit counter that starts at a
/// random value — unique within the process without a system call per value (a `getrandom` each
/// cost about 1 % of the edge's CPU at its maximum), and across processes sealing under the same
/// key only if both the prefix and the counter ranges meet (32 + 64 random bits).
struct Nonces {
    prefix: [u8; 4],
    next: std::sync::atomic::AtomicU64,
}

impl Nonces {
    fn new() -> Result<Nonces, VaultError> {
        let r = random_nonce()?;
        let mut start = [0u8; 8];
        start.copy_from_slice(&r[4..]);
        Ok(Nonces {
            prefix: [r[0], r[1], r[2], r[3]],
            next: u64::from_be_bytes(start).into(),
        })
    }

    fn take(&self) -> [u8; NONCE_LEN] {
        let n = self
            .next
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .to_be_bytes();
        let mut nonce = [0u8; NONCE_LEN];
        nonce[..4].copy_from_slice(&self.prefix);
        nonce[4..].copy_from_slice(&n);
        nonce
    }
}

fn seal_with(
    key: &LessSafeKey,
    id: u32,
    nonce: [u8; NONCE_LEN],
    aad: &[u8],
    plain: &[u8],
) -> Result<Vec<u8>, VaultError> {
    let mut out = Vec::with_capacity(HEADER + plain.len() + AES_256_GCM.tag_len());
    out.push(SEALED_TAG);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plain);
    let tag = key
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut out[HEADER..],
        )
        .map_err(|_| VaultError::Open {
            key_id: id,
            reason: "sealing failed",
        })?;
    out.extend_from_slice(tag.as_ref());
    Ok(out)
}

fn open_with(key: &LessSafeKey, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, VaultError> {
    let id = sealed_key_id(sealed).ok_or(VaultError::Open {
        key_id: 0,
        reason: "not a sealed value",
    })?;
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&sealed[5..HEADER]);
    let mut body = sealed[HEADER..].to_vec();
    let plain = key
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut body,
        )
        .map_err(|_| VaultError::Open {
            key_id: id,
            reason: "it does not authenticate (changed, moved, or sealed under another key)",
        })?;
    let n = plain.len();
    body.truncate(n);
    Ok(body)
}

/// The id of the data key a stored value was sealed with; `None` when it is not sealed.
pub fn sealed_key_id(stored: &[u8]) -> Option<u32> {
    if stored.len() < HEADER + AES_256_GCM.tag_len() || stored[0] != SEALED_TAG {
        return None;
    }
    Some(u32::from_be_bytes([
        stored[1], stored[2], stored[3], stored[4],
    ]))
}

/// The keyring as stored: every key wrapped under the KEK (or, during a KEK rotation, under each
/// of two KEKs: whichever the next start is given opens it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyringFile {
    format: u32,
    /// The data key new values are sealed with.
    current: u32,
    /// Data keys still in use while a `key rotate --data` re-seals (oldest first).
    #[serde(default)]
    retiring: Vec<u32>,
    /// Per KEK fingerprint: the wrapped keys.
    wraps: BTreeMap<String, Wraps>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Wraps {
    /// Data key id (decimal) → wrapped key.
    data: BTreeMap<u32, String>,
    blind: String,
}

impl KeyringFile {
    /// Reads `path`; `None` when there is none.
    pub fn read(path: &Path) -> Result<Option<KeyringFile>, VaultError> {
        let bytes = match std::fs::read(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            r => r.map_err(io(path))?,
        };
        let f: KeyringFile =
            serde_json::from_slice(&bytes).map_err(|e| VaultError::BadKeyring {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        if f.format != KEYRING_FORMAT {
            return Err(VaultError::BadKeyring {
                path: path.to_path_buf(),
                reason: format!("format {} (this onshi reads {KEYRING_FORMAT})", f.format),
            });
        }
        Ok(Some(f))
    }

    /// Writes it atomically and durably.
    pub fn write(&self, path: &Path) -> Result<(), VaultError> {
        let mut bytes = serde_json::to_vec_pretty(self).expect("a keyring serialises");
        bytes.push(b'\n');
        write_atomic(path, &bytes)
    }

    /// The KEKs (fingerprints) that open it.
    pub fn opened_by(&self) -> Vec<String> {
        self.wraps.keys().cloned().collect()
    }

    /// Unwraps the keys with `kek`; the wrong key is refused, naming both fingerprints.
    pub fn open(&self, kek: &Kek, path: &Path) -> Result<DataKeys, VaultError> {
        let fp = kek.fingerprint();
        let wrong = || VaultError::WrongKey {
            keyring: path.to_path_buf(),
            given: fp.clone(),
            expected: self.opened_by().join(" or "),
        };
        let wraps = self.wraps.get(&fp).ok_or_else(wrong)?;
        let bad = |what: &str| VaultError::BadKeyring {
            path: path.to_path_buf(),
            reason: format!("{what} does not unwrap under {fp} (the keyring was changed)"),
        };
        let blind = kek
            .unwrap("blind", &wraps.blind)
            .ok_or_else(|| bad("the blinding key"))?;
        let mut data = BTreeMap::new();
        for (id, w) in &wraps.data {
            let k = kek
                .unwrap(&format!("data:{id}"), w)
                .ok_or_else(|| bad("a data key"))?;
            data.insert(*id, k);
        }
        if !data.contains_key(&self.current) || self.retiring.iter().any(|r| !data.contains_key(r))
        {
            return Err(bad("a data key it names"));
        }
        DataKeys::from_parts(self.current, self.retiring.clone(), data, blind)
    }
}

struct Sealing {
    current: u32,
    retiring: Vec<u32>,
    raw: BTreeMap<u32, Vec<u8>>,
    aead: BTreeMap<u32, LessSafeKey>,
}

/// The unwrapped keys a store seals and opens with. Shared by every tree of a store.
pub struct DataKeys {
    sealing: RwLock<Sealing>,
    nonces: Nonces,
    blind_raw: Vec<u8>,
    blind: hmac::Key,
}

impl std::fmt::Debug for DataKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.sealing.read().unwrap_or_else(|p| p.into_inner());
        f.debug_struct("DataKeys")
            .field("current", &s.current)
            .field("retiring", &s.retiring)
            .finish_non_exhaustive()
    }
}

/// A data key rotation's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyState {
    pub current: u32,
    pub retiring: Vec<u32>,
}

impl DataKeys {
    fn from_parts(
        current: u32,
        retiring: Vec<u32>,
        raw: BTreeMap<u32, Vec<u8>>,
        blind: Vec<u8>,
    ) -> Result<DataKeys, VaultError> {
        let aead = raw
            .iter()
            .map(|(id, k)| {
                let key = UnboundKey::new(&AES_256_GCM, k).map_err(|_| VaultError::Open {
                    key_id: *id,
                    reason: "not an AES-256 key",
                })?;
                Ok((*id, LessSafeKey::new(key)))
            })
            .collect::<Result<_, VaultError>>()?;
        Ok(DataKeys {
            nonces: Nonces::new()?,
            sealing: RwLock::new(Sealing {
                current,
                retiring,
                raw,
                aead,
            }),
            blind: hmac::Key::new(hmac::HMAC_SHA256, &blind),
            blind_raw: blind,
        })
    }

    /// New keys for a new (or converted) store: data key 1 and a blinding key.
    pub fn generate() -> Result<DataKeys, VaultError> {
        let mut raw = BTreeMap::new();
        raw.insert(1, random_key()?.to_vec());
        DataKeys::from_parts(1, Vec::new(), raw, random_key()?.to_vec())
    }

    /// The keyring that holds these keys, wrapped under each of `keks`.
    pub fn wrap(&self, keks: &[&Kek]) -> Result<KeyringFile, VaultError> {
        let s = self.read();
        let mut wraps = BTreeMap::new();
        for kek in keks {
            let mut w = Wraps {
                blind: kek.wrap("blind", &self.blind_raw)?,
                ..Wraps::default()
            };
            for (id, k) in &s.raw {
                w.data.insert(*id, kek.wrap(&format!("data:{id}"), k)?);
            }
            wraps.insert(kek.fingerprint(), w);
        }
        Ok(KeyringFile {
            format: KEYRING_FORMAT,
            current: s.current,
            retiring: s.retiring.clone(),
            wraps,
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Sealing> {
        self.sealing.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Sealing> {
        self.sealing.write().unwrap_or_else(|p| p.into_inner())
    }

    pub fn state(&self) -> KeyState {
        let s = self.read();
        KeyState {
            current: s.current,
            retiring: s.retiring.clone(),
        }
    }

    /// Starts a data key rotation: a new key seals from now on; the current one joins those
    /// retiring (they still open what they sealed until [`DataKeys::retire`]). Write the keyring
    /// before sealing anything with the new key.
    pub fn rotate(&self) -> Result<u32, VaultError> {
        let fresh = random_key()?;
        let mut s = self.write();
        let id = s.raw.keys().max().copied().unwrap_or(0) + 1;
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &fresh).expect("32-byte key"));
        s.raw.insert(id, fresh.to_vec());
        s.aead.insert(id, key);
        let old = s.current;
        s.retiring.push(old);
        s.current = id;
        Ok(id)
    }

    /// Forgets the retiring keys: nothing sealed with them remains (the re-seal has run and is
    /// durable). Write the keyring afterwards.
    pub fn retire(&self) {
        let mut s = self.write();
        for id in std::mem::take(&mut s.retiring) {
            s.raw.remove(&id);
            s.aead.remove(&id);
        }
    }

    fn aad(tree: &str, key: &[u8], id: u32) -> Vec<u8> {
        let mut a = Vec::with_capacity(24 + tree.len() + key.len());
        a.extend_from_slice(b"onshi sealed v1\0");
        a.extend_from_slice(&(tree.len() as u32).to_be_bytes());
        a.extend_from_slice(tree.as_bytes());
        a.extend_from_slice(&id.to_be_bytes());
        a.extend_from_slice(key);
        a
    }

    /// Seals one value stored under `key` in `tree`, with the current data key.
    pub fn seal(&self, tree: &str, key: &[u8], plain: &[u8]) -> Result<Vec<u8>, VaultError> {
        let s = self.read();
        let k = s.aead.get(&s.current).expect("the current key is held");
        seal_with(
            k,
            s.current,
            self.nonces.take(),
            &Self::aad(tree, key, s.current),
            plain,
        )
    }

    /// Opens a value stored under `key` in `tree`.
    pub fn open(&self, tree: &str, key: &[u8], stored: &[u8]) -> Result<Vec<u8>, VaultError> {
        let id = sealed_key_id(stored).ok_or(VaultError::Open {
            key_id: 0,
            reason: "the value is not sealed (plain text in an encrypted store)",
        })?;
        let s = self.read();
        let k = s.aead.get(&id).ok_or(VaultError::Open {
            key_id: id,
            reason: "no such data key in the keyring",
        })?;
        open_with(k, &Self::aad(tree, key, id), stored)
    }

    /// Whether a stored value needs re-sealing (it was sealed with a key other than the current).
    pub fn is_stale(&self, stored: &[u8]) -> bool {
        sealed_key_id(stored).is_some_and(|id| id != self.read().current)
    }

    /// A keyed hash of a key part that must be found by equality (a card number): the same input
    /// gives the same bytes under this keyring, and nothing about the input without the key.
    pub fn blind(&self, domain: &str, part: &[u8]) -> [u8; BLIND_LEN] {
        let mut ctx = hmac::Context::with_key(&self.blind);
        ctx.update(domain.as_bytes());
        ctx.update(&[0]);
        ctx.update(part);
        let tag = ctx.sign();
        let mut out = [0u8; BLIND_LEN];
        out.copy_from_slice(&tag.as_ref()[..BLIND_LEN]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_only_under_its_tree_key_and_data_key() {
        let keys = DataKeys::generate().unwrap();
        let sealed = keys
            .seal("journal.checks", b"id-1", "山田 太郎".as_bytes())
            .unwrap();
        assert!(!sealed.windows(6).any(|w| w == "山田".as_bytes()));
        assert_eq!(
            keys.open("journal.checks", b"id-1", &sealed).unwrap(),
            "山田 太郎".as_bytes()
        );
        assert!(
            keys.open("journal.checks", b"id-2", &sealed).is_err(),
            "moved to another key"
        );
        assert!(
            keys.open("replica.periods", b"id-1", &sealed).is_err(),
            "moved to another tree"
        );
        let mut relabelled = sealed.clone();
        relabelled[4] ^= 1;
        assert!(keys.open("journal.checks", b"id-1", &relabelled).is_err());
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(keys.open("journal.checks", b"id-1", &flipped).is_err());
        assert!(keys.open("journal.checks", b"id-1", b"plain").is_err());
        let other = DataKeys::generate().unwrap();
        assert!(other.open("journal.checks", b"id-1", &sealed).is_err());
    }

    #[test]
    fn the_keyring_opens_with_its_kek_and_names_both_fingerprints_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.keyring");
        let kek = Kek::generate().unwrap();
        let keys = DataKeys::generate().unwrap();
        keys.wrap(&[&kek]).unwrap().write(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            !text.contains(&hex(&kek.bytes)),
            "the KEK is never in the keyring"
        );
        let file = KeyringFile::read(&path).unwrap().unwrap();
        let again = file.open(&kek, &path).unwrap();
        let sealed = keys.seal("t", b"k", b"v").unwrap();
        assert_eq!(again.open("t", b"k", &sealed).unwrap(), b"v");
        assert_eq!(again.blind("card", b"123"), keys.blind("card", b"123"));
        let wrong = Kek::generate().unwrap();
        let msg = file.open(&wrong, &path).unwrap_err().to_string();
        assert!(
            msg.contains(&wrong.fingerprint()) && msg.contains(&kek.fingerprint()),
            "{msg}"
        );
        // Two KEKs during a KEK rotation: either opens it.
        keys.wrap(&[&kek, &wrong]).unwrap().write(&path).unwrap();
        let file = KeyringFile::read(&path).unwrap().unwrap();
        assert!(file.open(&kek, &path).is_ok() && file.open(&wrong, &path).is_ok());
    }

    #[test]
    fn a_rotation_seals_with_the_new_key_and_opens_the_old_until_retired() {
        let keys = DataKeys::generate().unwrap();
        let old = keys.seal("t", b"k", b"v").unwrap();
        let id = keys.rotate().unwrap();
        assert_eq!(id, 2);
        assert!(keys.is_stale(&old));
        let new = keys.seal("t", b"k", b"v").unwrap();
        assert_eq!(sealed_key_id(&new), Some(2));
        assert!(!keys.is_stale(&new));
        assert_eq!(keys.open("t", b"k", &old).unwrap(), b"v");
        assert_eq!(
            keys.state(),
            KeyState {
                current: 2,
                retiring: vec![1]
            }
        );
        keys.retire();
        assert!(keys.open("t", b"k", &old).is_err());
        assert_eq!(keys.open("t", b"k", &new).unwrap(), b"v");
    }

    #[test]
    fn every_value_gets_a_nonce_of_its_own() {
        let keys = DataKeys::generate().unwrap();
        let nonces: std::collections::HashSet<Vec<u8>> = (0..1000)
            .map(|_| keys.seal("t", b"k", b"same").unwrap()[5..HEADER].to_vec())
            .collect();
        assert_eq!(nonces.len(), 1000);
        let other = DataKeys::generate().unwrap();
        assert_ne!(
            keys.seal("t", b"k", b"v").unwrap()[5..9],
            other.seal("t", b"k", b"v").unwrap()[5..9],
            "another keyring's process prefix (random: equal once in 2^32)"
        );
    }

    #[test]
    fn key_files_read_hex_or_raw_and_refuse_anything_else() {
        let p = Path::new("k");
        let k = Kek::generate().unwrap();
        let text = format!("  {}\n", hex(&k.bytes));
        assert_eq!(
            Kek::parse(text.as_bytes(), p).unwrap().fingerprint(),
            k.fingerprint()
        );
        assert_eq!(
            Kek::parse(&k.bytes, p).unwrap().fingerprint(),
            k.fingerprint()
        );
        assert!(Kek::parse(b"short", p).is_err());
        assert!(Kek::parse("z".repeat(64).as_bytes(), p).is_err());
    }

    #[test]
    fn without_a_flag_the_key_is_beside_the_data_or_where_one_was_made_before() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("edge");
        std::fs::create_dir(&data).unwrap();
        if std::env::var_os("CREDENTIALS_DIRECTORY").is_none() {
            assert_eq!(
                KeySource::choose(None, &data),
                KeySource::Beside(dir.path().join("edge.key"))
            );
            // A key made inside the data directory (its parent was read-only then) stays in use.
            std::fs::write(data.join(INSIDE_KEY), b"").unwrap();
            assert_eq!(
                KeySource::choose(None, &data),
                KeySource::Beside(data.join(INSIDE_KEY))
            );
        }
        let flag = dir.path().join("k");
        assert_eq!(
            KeySource::choose(Some(&flag), &data),
            KeySource::File(flag.clone())
        );
    }

    #[test]
    fn a_key_file_is_made_private_only_when_missing() {
        let dir = tempfile::tempdir().unwrap();
        let src = KeySource::File(dir.path().join("data.key"));
        let (k, made) = src.load_or_create().unwrap();
        assert!(made);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(src.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (again, made) = src.load_or_create().unwrap();
        assert!(!made);
        assert_eq!(again.fingerprint(), k.fingerprint());
    }
}
