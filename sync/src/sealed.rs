//! An encrypted store (issue 18): [`SealedStore`] wraps any [`Store`] and seals every value it
//! writes with the data keys of [`crate::vault`], opening them again on read; [`Vault`] is how a
//! daemon opens its store directory with a key-encryption key — a new directory, an encrypted one,
//! or a plain one from an earlier version converted on the way — and rotates keys.
//!
//! The files beside a store directory `S` (the edge's `DATA/journal`, the embedded centre's
//! `DATA/registry`): `S.keyring` (the wrapped keys), and only while a conversion runs `S.sealing/`
//! (the encrypted copy being made) and `S.plain-old/` (the plain store, removed once replaced). The
//! keyring's appearance is the conversion's commit point, so a SIGKILL anywhere leaves either the
//! plain store (the copy is made again) or the encrypted one (the swap is finished).
//!
//! Keys stay as the callers write them: a caller whose key holds personal data (the registry's card
//! numbers) asks [`Store::blind`] for a keyed hash of that part. Must never: write a value
//! unsealed, open a wrong key's store, or remove the plain store before its encrypted copy is
//! durable and committed.
//!
//! **Test hook** `ONSHI_CRASH_AT`: the process SIGKILLs itself at a named point, so a process test
//! can kill a conversion or a re-seal exactly where it means to (a timed kill would land anywhere,
//! or after the work is done). Points: `convert.copied` (the plain store's encrypted copy is
//! durable, the keyring not yet written), `convert.committed` (the keyring written, the copy not yet
//! swapped in), `convert.swapped` (the copy renamed into place, the plain store not yet removed),
//! `reseal:N` (after the N-th value re-sealed by a data key rotation). Unset — as in production —
//! it is never acted on; an unknown value is ignored with a warning.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use serde::{Deserialize, Serialize};

use crate::registry::Registry;
use crate::store::{Entries, SledStore, Store, StoreError, StoreHealth, Tree};
use crate::vault::{DataKeys, Kek, KeySource, KeyState, KeyringFile, VaultError, fsync_dir};

/// Where `ONSHI_CRASH_AT` stops the process (see the module doc: a test hook).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CrashAt {
    ConvertCopied,
    ConvertCommitted,
    ConvertSwapped,
    /// After this many values re-sealed.
    Reseal(u64),
}

const CRASH_ENV: &str = "ONSHI_CRASH_AT";

impl CrashAt {
    fn parse(s: &str) -> Option<CrashAt> {
        Some(match s.trim() {
            "convert.copied" => CrashAt::ConvertCopied,
            "convert.committed" => CrashAt::ConvertCommitted,
            "convert.swapped" => CrashAt::ConvertSwapped,
            other => CrashAt::Reseal(other.strip_prefix("reseal:")?.parse().ok()?),
        })
    }

    /// The point named by the environment, if any.
    fn from_env() -> Option<CrashAt> {
        let v = std::env::var(CRASH_ENV).ok()?;
        let at = CrashAt::parse(&v);
        if at.is_none() {
            tracing::warn!(value = %v, "{CRASH_ENV} names no crash point; ignored");
        }
        at
    }
}

/// SIGKILLs this process when `ONSHI_CRASH_AT` names `here` (a test hook; see the module doc).
fn crash_point(here: CrashAt) {
    if CrashAt::from_env() == Some(here) {
        die(here);
    }
}

fn die(here: CrashAt) {
    use rustix::process::{Signal, getpid, kill_process};
    tracing::warn!("{CRASH_ENV}: killing this process at {here:?}");
    // SIGKILL cannot be caught: nothing after this line runs, as with a power cut's process view.
    let _ = kill_process(getpid(), Signal::KILL);
    // kill(2) on ourselves delivers before it returns; should it not, abort rather than go on.
    std::process::abort();
}

/// A store whose values are sealed.
#[derive(Debug, Clone)]
pub struct SealedStore {
    inner: Arc<dyn Store>,
    keys: Arc<DataKeys>,
    /// Every write through this store holds it shared; [`SealedStore::pause_writes`] holds it
    /// alone, so a backup sees one moment of every tree.
    writes: Arc<RwLock<()>>,
}

impl SealedStore {
    pub fn new(inner: Arc<dyn Store>, keys: Arc<DataKeys>) -> SealedStore {
        SealedStore {
            inner,
            keys,
            writes: Arc::default(),
        }
    }

    /// Holds every write through this store (they wait) until the guard is dropped: a consistent
    /// moment for a backup. Reads go on.
    pub fn pause_writes(&self) -> RwLockWriteGuard<'_, ()> {
        self.writes.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The store underneath: values as stored (sealed), for backups and re-sealing.
    pub fn inner(&self) -> &Arc<dyn Store> {
        &self.inner
    }

    pub fn keys(&self) -> &Arc<DataKeys> {
        &self.keys
    }
}

fn corrupt(tree: &str, key: &[u8], e: VaultError) -> StoreError {
    StoreError::Corrupt {
        key: format!("{tree}/{} bytes", key.len()),
        reason: e.to_string(),
    }
}

#[derive(Debug)]
struct SealedTree {
    name: String,
    inner: Arc<dyn Tree>,
    keys: Arc<DataKeys>,
    writes: Arc<RwLock<()>>,
}

impl SealedTree {
    fn writing(&self) -> RwLockReadGuard<'_, ()> {
        self.writes.read().unwrap_or_else(|p| p.into_inner())
    }
    fn seal(&self, key: &[u8], plain: &[u8]) -> Result<Vec<u8>, StoreError> {
        self.keys
            .seal(&self.name, key, plain)
            .map_err(|e| corrupt(&self.name, key, e))
    }
    fn open(&self, key: &[u8], stored: &[u8]) -> Result<Vec<u8>, StoreError> {
        self.keys
            .open(&self.name, key, stored)
            .map_err(|e| corrupt(&self.name, key, e))
    }
    fn open_opt(&self, key: &[u8], v: Option<Vec<u8>>) -> Result<Option<Vec<u8>>, StoreError> {
        v.map(|v| self.open(key, &v)).transpose()
    }
}

impl Tree for SealedTree {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let v = self.inner.get(key)?;
        self.open_opt(key, v)
    }
    fn insert(&self, key: &[u8], value: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let sealed = self.seal(key, value)?;
        let _w = self.writing();
        let old = self.inner.insert(key, &sealed)?;
        // The previous value is opened for the caller; one that no longer opens is not a reason
        // to fail a write that has been made.
        Ok(old.and_then(|v| self.open(key, &v).ok()))
    }
    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        let sealed = self.seal(key, value)?;
        let _w = self.writing();
        self.inner.put(key, &sealed)
    }
    fn remove(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let _w = self.writing();
        let old = self.inner.remove(key)?;
        Ok(old.and_then(|v| self.open(key, &v).ok()))
    }
    fn scan_prefix(&self, prefix: &[u8]) -> Entries<'_> {
        Box::new(self.inner.scan_prefix(prefix).map(move |kv| {
            let (k, v) = kv?;
            let plain = self.open(&k, &v)?;
            Ok((k, plain))
        }))
    }
    fn compare_and_swap(
        &self,
        key: &[u8],
        old: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool, StoreError> {
        // Sealing is randomised: compare the plain values, then swap the stored bytes seen.
        let _w = self.writing();
        let stored = self.inner.get(key)?;
        let plain = self.open_opt(key, stored.clone())?;
        if plain.as_deref() != old {
            return Ok(false);
        }
        let new = new.map(|n| self.seal(key, n)).transpose()?;
        self.inner
            .compare_and_swap(key, stored.as_deref(), new.as_deref())
    }
    fn len(&self) -> usize {
        self.inner.len()
    }
}

impl Store for SealedStore {
    fn tree(&self, name: &str) -> Result<Arc<dyn Tree>, StoreError> {
        Ok(Arc::new(SealedTree {
            name: name.to_string(),
            inner: self.inner.tree(name)?,
            keys: self.keys.clone(),
            writes: self.writes.clone(),
        }))
    }
    fn sync(&self) -> Result<(), StoreError> {
        self.inner.sync()
    }
    fn health(&self) -> StoreHealth {
        self.inner.health()
    }
    fn recover(&self) -> Result<bool, StoreError> {
        self.inner.recover()
    }
    fn epoch(&self) -> u64 {
        self.inner.epoch()
    }
    fn tree_names(&self) -> Result<Vec<String>, StoreError> {
        self.inner.tree_names()
    }
    fn blind(&self, domain: &str, part: &[u8]) -> Vec<u8> {
        self.keys.blind(domain, part).to_vec()
    }
}

/// Why a store could not be opened with its key.
#[derive(Debug, thiserror::Error)]
pub enum VaultOpenError {
    #[error(transparent)]
    Key(#[from] VaultError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("converting the plain store {dir}: {source}")]
    Convert { dir: PathBuf, source: StoreError },
}

/// What opening found and did, for the log and the status page.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// A new key file was made (a new data directory).
    pub key_created: bool,
    /// A plain store from an earlier version was converted: entries copied.
    pub converted: Option<u64>,
    /// A data key rotation is unfinished (re-sealing must resume).
    pub resealing: bool,
    /// Wraps under other KEKs were dropped: a KEK rotation was completed by this start.
    pub dropped_old_keks: usize,
}

/// The files beside a store directory.
#[derive(Debug, Clone)]
pub struct VaultPaths {
    pub store: PathBuf,
    pub keyring: PathBuf,
    sealing: PathBuf,
    plain_old: PathBuf,
}

impl VaultPaths {
    pub fn new(store: &Path) -> VaultPaths {
        let with = |suffix: &str| {
            let mut s = store.as_os_str().to_os_string();
            s.push(suffix);
            PathBuf::from(s)
        };
        VaultPaths {
            store: store.to_path_buf(),
            keyring: with(".keyring"),
            sealing: with(".sealing"),
            plain_old: with(".plain-old"),
        }
    }

    fn parent(&self) -> &Path {
        self.store.parent().unwrap_or(Path::new("."))
    }
}

/// An open encrypted store with the key that opened it: what `key rotate` needs.
#[derive(Debug)]
pub struct Vault {
    paths: VaultPaths,
    kek: std::sync::Mutex<Kek>,
    store: SealedStore,
    sled: SledStore,
    source: KeySource,
}

/// A re-seal's progress.
#[derive(Debug, Default)]
pub struct ResealProgress {
    pub done: AtomicU64,
    pub total: AtomicU64,
}

/// Where the key-encryption key comes from, as a status shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyKind {
    File,
    Credential,
    Beside,
}

/// A data key rotation under way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rotation {
    pub to_key: u32,
    pub done: u64,
    pub total: u64,
}

/// A store's keys as `key status` (and the edge's `GET /v1/status`, `at_rest`) shows them:
/// nothing secret (a key's fingerprint, never it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AtRestStatus {
    pub encrypted: bool,
    pub key: KeyKind,
    pub key_path: String,
    /// SHA-256-based fingerprint of the key-encryption key.
    pub kek: String,
    /// The data key new values are sealed with.
    pub data_key: u32,
    pub rotation: Option<Rotation>,
    pub warning: Option<String>,
}

/// What `key rotate` did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RotatedKek {
    pub old: String,
    pub new: String,
    pub written_to: String,
}

impl Vault {
    /// Opens (creating or converting) the store in `store_dir` with the key from `source`.
    /// Trees named in `rebuilt` are not copied by a conversion: their owner rebuilds them (an
    /// index whose keys would otherwise stay in plain text).
    ///
    /// Checked before anything is written: a keyring that the key does not open, or no key for an
    /// existing keyring, is refused and the directory left as it was.
    pub fn open(
        store_dir: &Path,
        source: KeySource,
        rebuilt: &[&str],
    ) -> Result<(Vault, OpenReport), VaultOpenError> {
        let paths = VaultPaths::new(store_dir);
        let mut report = OpenReport::default();
        crate::modes::create_private_dir(paths.parent()).map_err(|source| VaultError::Io {
            path: paths.parent().to_path_buf(),
            source,
        })?;
        let kek = match KeyringFile::read(&paths.keyring)? {
            Some(file) => {
                let Some(kek) = source.load()? else {
                    return Err(VaultError::MissingKey {
                        keyring: paths.keyring.clone(),
                        hint: format!("{} does not exist", source.path().display()),
                    }
                    .into());
                };
                // The key is proved before anything on disk changes.
                let keys = file.open(&kek, &paths.keyring)?;
                finish_swap(&paths)?;
                if file.opened_by().len() > 1 {
                    report.dropped_old_keks = file.opened_by().len() - 1;
                    keys.wrap(&[&kek])?.write(&paths.keyring)?;
                }
                report.resealing = !keys.state().retiring.is_empty();
                return Ok((Vault::opened(paths, kek, Arc::new(keys), source)?, report));
            }
            None => {
                // Leftovers of a conversion killed before its commit: our own partial copy.
                for leftover in [&paths.sealing] {
                    if leftover.exists() {
                        std::fs::remove_dir_all(leftover).map_err(|source| VaultError::Io {
                            path: leftover.clone(),
                            source,
                        })?;
                    }
                }
                let (kek, created) = source.load_or_create()?;
                report.key_created = created;
                kek
            }
        };
        let keys = Arc::new(DataKeys::generate()?);
        let plain = paths.store.join("db").is_file();
        if plain {
            let copied = convert(&paths, &keys, rebuilt)?;
            report.converted = Some(copied);
            crash_point(CrashAt::ConvertCopied);
        }
        // The commit point: from here the directory is encrypted.
        keys.wrap(&[&kek])?.write(&paths.keyring)?;
        if plain {
            crash_point(CrashAt::ConvertCommitted);
        }
        finish_swap(&paths)?;
        Ok((Vault::opened(paths, kek, keys, source)?, report))
    }

    /// The store itself, opened once its keys are known and the directory is settled.
    fn opened(
        paths: VaultPaths,
        kek: Kek,
        keys: Arc<DataKeys>,
        source: KeySource,
    ) -> Result<Vault, VaultOpenError> {
        let sled = SledStore::open(&paths.store)?;
        let store = SealedStore::new(Arc::new(sled.clone()), keys);
        Ok(Vault {
            paths,
            kek: std::sync::Mutex::new(kek),
            store,
            sled,
            source,
        })
    }

    /// The encrypted store.
    pub fn store(&self) -> &SealedStore {
        &self.store
    }

    /// The sled store underneath (its directory, its sealed bytes).
    pub fn sled(&self) -> &SledStore {
        &self.sled
    }

    pub fn paths(&self) -> &VaultPaths {
        &self.paths
    }

    pub fn source(&self) -> &KeySource {
        &self.source
    }

    /// The KEK's fingerprint (never the key).
    pub fn kek_fingerprint(&self) -> String {
        self.kek
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .fingerprint()
    }

    pub fn key_state(&self) -> KeyState {
        self.store.keys.state()
    }

    /// `key rotate`: the data keys re-wrapped under `new` — instantly, no record touched. The
    /// keyring is first written under both keys, then `write_new` puts the new key where the next
    /// start reads it (the key file), then the keyring is written under the new key alone. Killed
    /// between any two steps, the next start opens with whichever key it is given and finishes.
    pub fn rotate_kek(
        &self,
        new: Kek,
        write_new: impl FnOnce(&Kek) -> Result<(), VaultError>,
    ) -> Result<(), VaultError> {
        let mut kek = self.kek.lock().unwrap_or_else(|p| p.into_inner());
        let keys = self.store.keys();
        keys.wrap(&[&kek, &new])?.write(&self.paths.keyring)?;
        write_new(&new)?;
        keys.wrap(&[&new])?.write(&self.paths.keyring)?;
        *kek = new;
        Ok(())
    }

    /// `key rotate`: a new key-encryption key ([`Vault::rotate_kek`]), written to `new_key` —
    /// required when the key is a systemd credential (its encrypted file is made with
    /// `systemd-creds encrypt`) — or in place of the current key file.
    pub fn rotate_kek_to(&self, new_key: Option<&Path>) -> Result<RotatedKek, VaultError> {
        let target = match (new_key, &self.source) {
            (Some(p), _) => p.to_path_buf(),
            (None, KeySource::Credential(_)) => return Err(VaultError::CredentialNeedsNewKey),
            (None, s) => s.path().to_path_buf(),
        };
        let old = self.kek_fingerprint();
        self.rotate_kek(Kek::generate()?, |k| k.write(&target))?;
        Ok(RotatedKek {
            old,
            new: self.kek_fingerprint(),
            written_to: target.display().to_string(),
        })
    }

    /// The keys' status; `progress`: the re-seal under way, if this process runs one.
    pub fn status(&self, progress: Option<&ResealProgress>) -> AtRestStatus {
        let state = self.key_state();
        AtRestStatus {
            encrypted: true,
            key: match &self.source {
                KeySource::File(_) => KeyKind::File,
                KeySource::Credential(_) => KeyKind::Credential,
                KeySource::Beside(_) => KeyKind::Beside,
            },
            key_path: self.source.path().display().to_string(),
            kek: self.kek_fingerprint(),
            data_key: state.current,
            rotation: (!state.retiring.is_empty()).then(|| Rotation {
                to_key: state.current,
                done: progress.map_or(0, |p| p.done.load(Ordering::Relaxed)),
                total: progress.map_or(0, |p| p.total.load(Ordering::Relaxed)),
            }),
            warning: self.source.warning(),
        }
    }

    /// `key rotate --data`, its first step: a new data key seals from now on, recorded in the
    /// keyring before anything is sealed with it. Then run [`Vault::reseal`].
    pub fn start_data_rotation(&self) -> Result<u32, VaultError> {
        let kek = self.kek.lock().unwrap_or_else(|p| p.into_inner());
        let id = self.store.keys().rotate()?;
        self.store
            .keys()
            .wrap(&[&kek])?
            .write(&self.paths.keyring)?;
        Ok(id)
    }

    /// Re-seals every value sealed with a retiring key, then (once that is durable) forgets those
    /// keys. Safe beside writers (compare-and-swap per value) and after a SIGKILL (the keyring
    /// still lists the retiring keys; running it again continues). Returns the values re-sealed.
    pub fn reseal(&self, progress: &ResealProgress) -> Result<u64, VaultOpenError> {
        let keys = self.store.keys().clone();
        if keys.state().retiring.is_empty() {
            return Ok(0);
        }
        let inner = self.store.inner();
        let names = inner.tree_names()?;
        let mut total = 0u64;
        let mut trees = Vec::new();
        for n in &names {
            let t = inner.tree(n)?;
            total += t.len() as u64;
            trees.push((n.clone(), t));
        }
        progress.total.store(total, Ordering::Relaxed);
        progress.done.store(0, Ordering::Relaxed);
        let crash_after = match CrashAt::from_env() {
            Some(CrashAt::Reseal(n)) => Some(n),
            _ => None,
        };
        let mut resealed = 0u64;
        for (name, tree) in &trees {
            for kv in tree.scan_prefix(&[]) {
                let (k, mut v) = kv?;
                while keys.is_stale(&v) {
                    let plain = keys.open(name, &k, &v).map_err(|e| corrupt(name, &k, e))?;
                    let fresh = keys
                        .seal(name, &k, &plain)
                        .map_err(|e| corrupt(name, &k, e))?;
                    let swapped = {
                        let _w = self.store.writes.read().unwrap_or_else(|p| p.into_inner());
                        tree.compare_and_swap(&k, Some(&v), Some(&fresh))?
                    };
                    if swapped {
                        resealed += 1;
                        if crash_after == Some(resealed) {
                            die(CrashAt::Reseal(resealed));
                        }
                        break;
                    }
                    // Written meanwhile (with the current key) or removed: look again.
                    match tree.get(&k)? {
                        Some(now) => v = now,
                        None => break,
                    }
                }
                progress.done.fetch_add(1, Ordering::Relaxed);
            }
        }
        inner.sync()?;
        let kek = self.kek.lock().unwrap_or_else(|p| p.into_inner());
        keys.retire();
        keys.wrap(&[&kek])?.write(&self.paths.keyring)?;
        Ok(resealed)
    }
}

/// `check-config`: whether `source` opens the store in `store_dir`, without opening the store (a
/// running daemon may hold it) and without changing anything. Says what the next start finds.
pub fn check_key(store_dir: &Path, source: &KeySource) -> Result<String, VaultError> {
    let keyring = VaultPaths::new(store_dir).keyring;
    let kek = source.load()?;
    let Some(file) = KeyringFile::read(&keyring)? else {
        let key = match &kek {
            Some(k) => format!("data key {} ({})", source.path().display(), k.fingerprint()),
            None => format!(
                "data key {}, made at the first start",
                source.path().display()
            ),
        };
        return Ok(if store_dir.join("db").is_file() {
            format!("plain text from an earlier version: encrypted at the next start, {key}")
        } else {
            format!("new, encrypted: {key}")
        });
    };
    let Some(kek) = kek else {
        return Err(VaultError::MissingKey {
            keyring,
            hint: format!("{} does not exist", source.path().display()),
        });
    };
    file.open(&kek, &keyring)?;
    Ok(format!(
        "encrypted: data key {} ({})",
        source.path().display(),
        kek.fingerprint()
    ))
}

/// After the commit: the encrypted copy replaces the plain store, and the plain store is removed.
fn finish_swap(paths: &VaultPaths) -> Result<(), VaultError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| VaultError::Io { path, source }
    };
    if paths.sealing.exists() {
        if paths.store.exists() {
            std::fs::rename(&paths.store, &paths.plain_old).map_err(io(&paths.store))?;
        }
        std::fs::rename(&paths.sealing, &paths.store).map_err(io(&paths.sealing))?;
        fsync_dir(paths.parent())?;
        crash_point(CrashAt::ConvertSwapped);
    }
    if paths.plain_old.exists() {
        std::fs::remove_dir_all(&paths.plain_old).map_err(io(&paths.plain_old))?;
        fsync_dir(paths.parent())?;
        tracing::warn!(
            store = %paths.store.display(),
            "the plain-text store was converted to an encrypted one and removed"
        );
    }
    Ok(())
}

/// Copies the plain store into `S.sealing/`, sealed; registry-shaped trees are re-put so that
/// their card-number keys are blinded. Durable when it returns.
fn convert(
    paths: &VaultPaths,
    keys: &Arc<DataKeys>,
    rebuilt: &[&str],
) -> Result<u64, VaultOpenError> {
    let wrap = |source| VaultOpenError::Convert {
        dir: paths.store.clone(),
        source,
    };
    let plain: Arc<dyn Store> = Arc::new(SledStore::open(&paths.store).map_err(wrap)?);
    let dst_sled = SledStore::open(&paths.sealing).map_err(wrap)?;
    let dst: Arc<dyn Store> = Arc::new(SealedStore::new(Arc::new(dst_sled), keys.clone()));
    let names = plain.tree_names().map_err(wrap)?;
    let registries: Vec<&str> = names
        .iter()
        .filter_map(|n| n.strip_suffix(".periods"))
        .collect();
    let mut copied = 0u64;
    for prefix in &registries {
        let from = Registry::open_named(plain.clone(), prefix).map_err(|e| wrap(e.into()))?;
        let to = Registry::open_named(dst.clone(), prefix).map_err(|e| wrap(e.into()))?;
        for q in from.all_periods() {
            let q = q.map_err(|e| wrap(e.into()))?;
            to.put(&q).map_err(|e| wrap(e.into()))?;
            copied += 1;
        }
    }
    for name in &names {
        let registry_tree = registries.iter().any(|p| {
            [".periods", ".by_person", ".by_card_id"]
                .iter()
                .any(|s| *name == format!("{p}{s}"))
        });
        if registry_tree || rebuilt.contains(&name.as_str()) {
            continue;
        }
        let from = plain.tree(name).map_err(wrap)?;
        let to = dst.tree(name).map_err(wrap)?;
        for kv in from.scan_prefix(&[]) {
            let (k, v) = kv.map_err(wrap)?;
            to.insert(&k, &v).map_err(wrap)?;
            copied += 1;
        }
    }
    dst.sync().map_err(wrap)?;
    tracing::info!(
        store = %paths.store.display(),
        entries = copied,
        "plain-text store copied into an encrypted one"
    );
    Ok(copied)
}

impl From<crate::registry::RegistryError> for StoreError {
    fn from(e: crate::registry::RegistryError) -> StoreError {
        match e {
            crate::registry::RegistryError::Store(s) => s,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    out.push((p.clone(), std::fs::read(&p).unwrap()));
                }
            }
        }
        out.sort();
        out
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn crash_points_are_named_as_documented() {
        assert_eq!(
            CrashAt::parse("convert.copied"),
            Some(CrashAt::ConvertCopied)
        );
        assert_eq!(
            CrashAt::parse("convert.committed"),
            Some(CrashAt::ConvertCommitted)
        );
        assert_eq!(
            CrashAt::parse(" convert.swapped\n"),
            Some(CrashAt::ConvertSwapped)
        );
        assert_eq!(CrashAt::parse("reseal:250"), Some(CrashAt::Reseal(250)));
        for nothing in ["", "reseal:", "reseal:x", "convert", "CONVERT.COPIED"] {
            assert_eq!(CrashAt::parse(nothing), None, "{nothing:?}");
        }
    }

    #[test]
    fn values_are_sealed_on_disk_and_read_back_plain() {
        let dir = tempfile::tempdir().unwrap();
        let key = KeySource::File(dir.path().join("k"));
        let store_dir = dir.path().join("data").join("journal");
        {
            let (v, report) = Vault::open(&store_dir, key.clone(), &[]).unwrap();
            assert!(report.key_created);
            let t = v.store().tree("journal.checks").unwrap();
            t.insert(b"c1", "ヤマダ タロウ 19800102".as_bytes())
                .unwrap();
            assert!(t.compare_and_swap(b"c2", None, Some(b"x")).unwrap());
            assert!(!t.compare_and_swap(b"c2", None, Some(b"y")).unwrap());
            assert!(t.compare_and_swap(b"c2", Some(b"x"), Some(b"y")).unwrap());
            v.store().sync().unwrap();
        }
        for (p, bytes) in files_under(&dir.path().join("data")) {
            assert!(
                !contains(&bytes, "ヤマダ".as_bytes()),
                "plain text in {}",
                p.display()
            );
        }
        let (v, report) = Vault::open(&store_dir, key, &[]).unwrap();
        assert_eq!(report, OpenReport::default());
        let t = v.store().tree("journal.checks").unwrap();
        assert_eq!(
            t.get(b"c1").unwrap().unwrap(),
            "ヤマダ タロウ 19800102".as_bytes()
        );
        assert_eq!(t.get(b"c2").unwrap().unwrap(), b"y");
    }

    #[test]
    fn a_wrong_or_missing_key_is_refused_and_nothing_changes() {
        let dir = tempfile::tempdir().unwrap();
        let store_dir = dir.path().join("journal");
        {
            let (v, _) =
                Vault::open(&store_dir, KeySource::File(dir.path().join("k")), &[]).unwrap();
            v.store().tree("t").unwrap().insert(b"a", b"b").unwrap();
            v.store().sync().unwrap();
        }
        let before = files_under(dir.path());
        let wrong = dir.path().join("wrong");
        Kek::generate().unwrap().write(&wrong).unwrap();
        let before_with_wrong = files_under(dir.path());
        let e = Vault::open(&store_dir, KeySource::File(wrong), &[]).unwrap_err();
        assert!(e.to_string().contains("does not open"), "{e}");
        assert_eq!(files_under(dir.path()), before_with_wrong);
        std::fs::remove_file(dir.path().join("wrong")).unwrap();
        let e = Vault::open(&store_dir, KeySource::File(dir.path().join("nope")), &[]).unwrap_err();
        assert!(e.to_string().contains("no data key was given"), "{e}");
        assert_eq!(files_under(dir.path()), before);
    }

    #[test]
    fn a_plain_store_is_converted_with_its_registry_keys_blinded() {
        let dir = tempfile::tempdir().unwrap();
        let store_dir = dir.path().join("journal");
        let periods = crate::synth::generate(&crate::synth::SynthParams {
            people: 50,
            seed: 7,
            today: chrono::NaiveDate::from_ymd_opt(2025, 6, 15).unwrap(),
        });
        let card = periods
            .iter()
            .map(|q| q.number.as_str().to_string())
            .find(|n| n.len() >= 8)
            .expect("a long card number");
        {
            let plain: Arc<dyn Store> = Arc::new(SledStore::open(&store_dir).unwrap());
            let reg = Registry::open_named(plain.clone(), "replica").unwrap();
            for q in &periods {
                reg.put(q).unwrap();
            }
            plain
                .tree("journal.meta")
                .unwrap()
                .insert(b"m", "佐藤".as_bytes())
                .unwrap();
            plain.sync().unwrap();
        }
        let (v, report) =
            Vault::open(&store_dir, KeySource::File(dir.path().join("k")), &[]).unwrap();
        assert_eq!(report.converted, Some(periods.len() as u64 + 1));
        let store: Arc<dyn Store> = Arc::new(v.store().clone());
        let reg = Registry::open_named(store.clone(), "replica").unwrap();
        let key = onshi_model::InsuranceCardKey::of(&periods[0]);
        assert!(reg.periods_by_card(&key).unwrap().contains(&periods[0]));
        assert_eq!(reg.period_count(), periods.len());
        drop((reg, store, v));
        for (p, bytes) in files_under(dir.path()) {
            if p.extension().is_some_and(|e| e == "keyring") || p.ends_with("k") {
                continue;
            }
            assert!(
                !contains(&bytes, card.as_bytes()),
                "card number in {}",
                p.display()
            );
            assert!(
                !contains(&bytes, "佐藤".as_bytes()),
                "plain text in {}",
                p.display()
            );
            assert!(
                !contains(&bytes, periods[0].name_kana.as_bytes()),
                "kana in {}",
                p.display()
            );
        }
        assert!(!dir.path().join("journal.plain-old").exists());
        assert!(!dir.path().join("journal.sealing").exists());
    }

    #[test]
    fn a_data_rotation_reseals_everything_and_forgets_the_old_key() {
        let dir = tempfile::tempdir().unwrap();
        let store_dir = dir.path().join("journal");
        let key = KeySource::File(dir.path().join("k"));
        let (v, _) = Vault::open(&store_dir, key.clone(), &[]).unwrap();
        let t = v.store().tree("t").unwrap();
        for i in 0..100u32 {
            t.insert(&i.to_be_bytes(), format!("value {i}").as_bytes())
                .unwrap();
        }
        assert_eq!(v.start_data_rotation().unwrap(), 2);
        let progress = ResealProgress::default();
        assert_eq!(v.reseal(&progress).unwrap(), 100);
        assert_eq!(progress.done.load(Ordering::Relaxed), 100);
        assert_eq!(
            v.key_state(),
            KeyState {
                current: 2,
                retiring: vec![]
            }
        );
        drop((t, v));
        let (v, report) = Vault::open(&store_dir, key, &[]).unwrap();
        assert!(!report.resealing);
        let t = v.store().tree("t").unwrap();
        assert_eq!(t.get(&7u32.to_be_bytes()).unwrap().unwrap(), b"value 7");
    }

    #[test]
    fn a_kek_rotation_opens_with_the_new_key_only() {
        let dir = tempfile::tempdir().unwrap();
        let store_dir = dir.path().join("journal");
        let kpath = dir.path().join("k");
        let old = {
            let (v, _) = Vault::open(&store_dir, KeySource::File(kpath.clone()), &[]).unwrap();
            v.store().tree("t").unwrap().insert(b"a", b"b").unwrap();
            let old = v.kek_fingerprint();
            v.rotate_kek(Kek::generate().unwrap(), |k| k.write(&kpath))
                .unwrap();
            assert_ne!(v.kek_fingerprint(), old);
            old
        };
        let (v, _) = Vault::open(&store_dir, KeySource::File(kpath), &[]).unwrap();
        assert_eq!(
            v.store().tree("t").unwrap().get(b"a").unwrap().unwrap(),
            b"b"
        );
        let file = KeyringFile::read(&v.paths().keyring).unwrap().unwrap();
        assert!(!file.opened_by().contains(&old));
    }
}
