//! Storage behind a small trait, so that the engine (sled today) can be swapped without touching
//! logic; and durability: `sled::Db::flush` only reaches the OS (it uses `sync_file_range`), so
//! [`Store::sync`] follows it with an fsync of sled's files and directory. [`GroupCommit`] shares
//! one flush+fsync between every writer waiting at the same moment.
//!
//! A failed write or sync (a full disk, an IO error) leaves the store *failed*: sled 0.34 keeps the
//! first IO error of its log as a global error and refuses every later write until the database is
//! opened again, so it never heals by itself. While failed, every write and sync is refused at
//! once (nothing written in that window can be acknowledged), reads still work, and
//! [`Store::recover`] reopens sled from what is on disk (dropping what was written but never made
//! durable) and proves the disk writable with a probe write + sync. The group-commit task calls it
//! every [`RECOVER_EVERY`] while the store is failed, so the edge heals once space returns.
//! Every recovery starts a new *epoch*; a commit asked for writes made in an earlier epoch fails
//! (those writes were dropped by the reopen), see [`GroupCommit::commit_since`].
//!
//! Files and directories this module creates are private to the service user (0700 / 0600), set
//! explicitly so the umask does not decide (see [`crate::modes`]).
//!
//! Nothing here knows what the bytes mean; callers encode values with a version tag. Must never
//! report a commit as done unless everything written before it, in the same epoch, is on disk.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

/// How often a failed store tries to reopen itself.
pub const RECOVER_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage engine: {0}")]
    Engine(#[from] sled::Error),
    #[error("fsync of {path}: {source}")]
    Fsync {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("stored value under {key} does not decode: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("the commit task has stopped")]
    CommitterGone,
    /// The store failed earlier and has not been reopened yet: nothing can be written.
    #[error("the journal cannot write (since {since_s:.0} s): {cause}")]
    Unwritable { cause: String, since_s: f64 },
    /// The store was reopened after a failure since these writes were made: they were dropped.
    #[error("the journal was reopened after a write failure; this write was not recorded")]
    Reopened,
}

/// Entries of a prefix scan, in key order.
pub type Entries<'a> = Box<dyn Iterator<Item = Result<(Vec<u8>, Vec<u8>), StoreError>> + 'a>;

/// One ordered key space.
pub trait Tree: Send + Sync + std::fmt::Debug {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Inserts and returns the previous value.
    fn insert(&self, key: &[u8], value: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Inserts, when the previous value is not wanted: an encrypted tree then does not open it
    /// (the writes of every check go this way).
    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.insert(key, value).map(drop)
    }
    fn remove(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Every entry whose key starts with `prefix`, in key order.
    fn scan_prefix(&self, prefix: &[u8]) -> Entries<'_>;
    /// Sets `key` to `new` (removes it when `None`) only if its value is still `old` (absent when
    /// `None`); `Ok(false)` when it was not (someone wrote in between).
    fn compare_and_swap(
        &self,
        key: &[u8],
        old: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool, StoreError>;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whether the store can write, for status pages, metrics and the watchdog.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoreHealth {
    /// False from a failed write or sync until a reopen proved the disk writable again.
    pub writable: bool,
    /// The failure that made it unwritable (kept after recovery, for the record).
    pub last_error: Option<String>,
    /// How long it has been unwritable.
    pub unwritable_for: Option<Duration>,
    /// Failed writes and syncs since start.
    pub failures: u64,
    /// Reopens that brought it back.
    pub recoveries: u64,
}

/// A database of named trees that can be made durable.
pub trait Store: Send + Sync + std::fmt::Debug {
    fn tree(&self, name: &str) -> Result<Arc<dyn Tree>, StoreError>;
    /// Everything written so far is on disk when this returns (blocking).
    fn sync(&self) -> Result<(), StoreError>;
    /// Whether writes can succeed now.
    fn health(&self) -> StoreHealth {
        StoreHealth {
            writable: true,
            ..StoreHealth::default()
        }
    }
    /// A failed store reopens itself from disk and proves it can write (blocking). `Ok(true)`
    /// when it recovered, `Ok(false)` when it had not failed.
    fn recover(&self) -> Result<bool, StoreError> {
        Ok(false)
    }
    /// Bumped by every recovery: writes of an earlier epoch that were not synced are gone.
    fn epoch(&self) -> u64 {
        0
    }
    /// The names of the trees that hold anything (conversion, re-sealing, backups).
    fn tree_names(&self) -> Result<Vec<String>, StoreError>;
    /// What a key part that holds personal data (a card number) is stored as, so that it can be
    /// found by equality: the part itself in a plain store, a keyed hash in an encrypted one
    /// ([`crate::sealed::SealedStore`]). `domain` keeps the hashes of different kinds apart.
    fn blind(&self, domain: &str, part: &[u8]) -> Vec<u8> {
        let _ = domain;
        part.to_vec()
    }
}

/// sled, made durable by flush + fsync, reopened after a failure.
#[derive(Debug, Clone)]
pub struct SledStore {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    /// `None` only while a recovery swaps the database.
    db: Mutex<Option<sled::Db>>,
    synced: Mutex<Synced>,
    /// The handles given out, by name, so a recovery can swap each one's sled tree. Weak, so a
    /// dropped store releases sled (and its file lock).
    trees: Mutex<std::collections::HashMap<String, Weak<SledTree>>>,
    failure: Mutex<Option<Failure>>,
    /// Serialises recoveries.
    recovering: Mutex<()>,
    failures: AtomicU64,
    recoveries: AtomicU64,
    epoch: AtomicU64,
    last_error: Mutex<Option<String>>,
}

#[derive(Debug, Clone)]
struct Failure {
    cause: String,
    since: Instant,
}

/// What `sync` keeps between rounds: the data file held open (one fdatasync a round instead of
/// open + fsync + close of every file), and the blob files already made durable (sled writes a blob
/// once and never changes it, so each needs one fsync, and the directory one when it appears).
#[derive(Debug, Default)]
struct Synced {
    db_file: Option<File>,
    blobs: std::collections::HashSet<PathBuf>,
    dir_done: bool,
}

const PROBE_TREE: &str = "store.probe";

impl SledStore {
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        crate::modes::create_private_dir(dir).map_err(|source| StoreError::Fsync {
            path: dir.to_path_buf(),
            source,
        })?;
        let db = Self::open_db(dir)?;
        Ok(SledStore {
            shared: Arc::new(Shared {
                dir: dir.to_path_buf(),
                db: Mutex::new(Some(db)),
                synced: Mutex::default(),
                trees: Mutex::default(),
                failure: Mutex::new(None),
                recovering: Mutex::new(()),
                failures: AtomicU64::new(0),
                recoveries: AtomicU64::new(0),
                epoch: AtomicU64::new(0),
                last_error: Mutex::new(None),
            }),
        })
    }

    fn open_db(dir: &Path) -> Result<sled::Db, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .mode(sled::Mode::HighThroughput)
            .open()?;
        // sled creates its files with the umask's modes; they hold personal data.
        for name in ["db", "conf"] {
            crate::modes::restrict_file(&dir.join(name)).map_err(|source| StoreError::Fsync {
                path: dir.join(name),
                source,
            })?;
        }
        crate::modes::restrict_dir(&dir.join("blobs")).map_err(|source| StoreError::Fsync {
            path: dir.join("blobs"),
            source,
        })?;
        Ok(db)
    }

    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    fn fsync_path(path: &Path) -> Result<(), StoreError> {
        // fsync on any descriptor of a file flushes the file's pages and metadata; a read-only
        // descriptor is enough on Linux, and a directory needs one for its entries.
        let f = File::open(path).map_err(|source| StoreError::Fsync {
            path: path.to_path_buf(),
            source,
        })?;
        f.sync_all().map_err(|source| StoreError::Fsync {
            path: path.to_path_buf(),
            source,
        })
    }

    /// flush + fsync of sled's files, with no failure bookkeeping.
    fn sync_files(&self, db: &sled::Db) -> Result<(), StoreError> {
        db.flush()?;
        let dir = &self.shared.dir;
        let mut synced = lock(&self.shared.synced);
        // sled 0.34 keeps its data in `db` (an fdatasync of it is what makes the flush durable),
        // its config in `conf` (written once, at creation), and large values under `blobs/`.
        if synced.db_file.is_none() {
            let path = dir.join("db");
            let f = File::open(&path).map_err(|source| StoreError::Fsync { path, source })?;
            synced.db_file = Some(f);
        }
        if let Some(f) = &synced.db_file {
            f.sync_data().map_err(|source| StoreError::Fsync {
                path: dir.join("db"),
                source,
            })?;
        }
        let blobs = dir.join("blobs");
        let mut new_entries = !synced.dir_done;
        if let Ok(rd) = std::fs::read_dir(&blobs) {
            for p in rd.flatten().map(|e| e.path()) {
                if !synced.blobs.contains(&p) {
                    // A blob is created by sled with the umask's mode: made private once, here.
                    let _ = crate::modes::restrict_file(&p);
                    Self::fsync_path(&p)?;
                    synced.blobs.insert(p);
                    new_entries = true;
                }
            }
            if new_entries {
                Self::fsync_path(&blobs)?;
            }
        }
        if new_entries {
            let conf = dir.join("conf");
            if conf.exists() {
                Self::fsync_path(&conf)?;
            }
            Self::fsync_path(dir)?;
            synced.dir_done = true;
        }
        Ok(())
    }

    /// Reopens sled and proves it can write; the caller holds `recovering`.
    fn reopen(&self) -> Result<(), StoreError> {
        let handles: Vec<Arc<SledTree>> = lock(&self.shared.trees)
            .values()
            .filter_map(Weak::upgrade)
            .collect();
        // Every handle lets go of the old database (an operation in progress finishes first),
        // then the database itself: sled's file lock is released only when all are gone.
        for h in &handles {
            *h.tree.write().unwrap_or_else(|p| p.into_inner()) = None;
        }
        *lock(&self.shared.db) = None;
        *lock(&self.shared.synced) = Synced::default();
        let db = Self::open_db(&self.shared.dir)?;
        for h in &handles {
            let t = db.open_tree(&h.name)?;
            h.count.store(t.len(), Ordering::Relaxed);
            *h.tree.write().unwrap_or_else(|p| p.into_inner()) = Some(t);
        }
        // A probe: a write that must reach the disk, so a disk still full keeps the store failed.
        let probe = db.open_tree(PROBE_TREE)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        probe.insert(b"probe", &now.to_be_bytes())?;
        self.sync_files(&db)?;
        *lock(&self.shared.db) = Some(db);
        Ok(())
    }

    /// Writes and fsyncs 64 KiB beside sled's files, then removes it: can the disk take a write?
    fn space_probe(&self) -> Result<(), StoreError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.shared.dir.join("space-probe.tmp");
        let err = |source| StoreError::Fsync {
            path: path.clone(),
            source,
        };
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(crate::modes::PRIVATE_FILE)
            .open(&path)
            .and_then(|mut f| {
                f.write_all(&[0u8; 64 * 1024])?;
                f.sync_all()
            });
        let _ = std::fs::remove_file(&path);
        written.map_err(err)
    }

    /// Notes a failure of a write or a sync: the store stays failed until a recovery.
    fn failed(&self, e: StoreError) -> StoreError {
        if matches!(e, StoreError::Unwritable { .. }) {
            return e;
        }
        self.shared.note_failure(&e);
        e
    }
}

impl Shared {
    fn note_failure(&self, e: &StoreError) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let cause = e.to_string();
        *lock(&self.last_error) = Some(cause.clone());
        let mut f = lock(&self.failure);
        if f.is_none() {
            tracing::error!(error = %cause, dir = %self.dir.display(), "the journal cannot write; refusing writes until it can");
            *f = Some(Failure {
                cause,
                since: Instant::now(),
            });
        }
    }

    /// `Err(Unwritable)` while failed.
    fn check_writable(&self) -> Result<(), StoreError> {
        match &*lock(&self.failure) {
            None => Ok(()),
            Some(f) => Err(StoreError::Unwritable {
                cause: f.cause.clone(),
                since_s: f.since.elapsed().as_secs_f64(),
            }),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn reopening() -> StoreError {
    StoreError::Unwritable {
        cause: "the store is being reopened".into(),
        since_s: 0.0,
    }
}

/// A sled tree and its number of entries: sled's own `len` walks the whole tree, so the count is
/// taken once when the tree is first opened and then kept by every insert of a new key and every
/// remove of a present one (sled returns the previous value atomically, so it stays exact with
/// concurrent writers). The sled tree is swapped by a recovery (`None` while it runs).
#[derive(Debug)]
struct SledTree {
    name: String,
    store: SledStore,
    tree: RwLock<Option<sled::Tree>>,
    count: std::sync::atomic::AtomicUsize,
}

impl SledTree {
    fn with<R>(
        &self,
        write: bool,
        op: impl FnOnce(&sled::Tree) -> Result<R, sled::Error>,
    ) -> Result<R, StoreError> {
        if write {
            self.store.shared.check_writable()?;
        }
        let guard = self.tree.read().unwrap_or_else(|p| p.into_inner());
        let tree = guard.as_ref().ok_or_else(|| {
            self.store
                .shared
                .check_writable()
                .err()
                .unwrap_or_else(reopening)
        })?;
        op(tree).map_err(|e| {
            let e = StoreError::from(e);
            if write || matches!(e, StoreError::Engine(sled::Error::Io(_))) {
                self.store.failed(e)
            } else {
                e
            }
        })
    }
}

impl Tree for SledTree {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.with(false, |t| t.get(key))
            .map(|v| v.map(|v| v.to_vec()))
    }
    fn insert(&self, key: &[u8], value: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let old = self.with(true, |t| t.insert(key, value))?;
        if old.is_none() {
            self.count.fetch_add(1, Ordering::Relaxed);
        }
        Ok(old.map(|v| v.to_vec()))
    }
    fn remove(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let old = self.with(true, |t| t.remove(key))?;
        if old.is_some() {
            self.count.fetch_sub(1, Ordering::Relaxed);
        }
        Ok(old.map(|v| v.to_vec()))
    }
    fn scan_prefix(&self, prefix: &[u8]) -> Entries<'_> {
        // The iterator holds its own handle of the sled tree, not our lock: a recovery waits
        // for no scan (it retries if a scan still holds the old database).
        let tree = self.tree.read().unwrap_or_else(|p| p.into_inner()).clone();
        match tree {
            None => Box::new(std::iter::once(Err(reopening()))),
            Some(t) => Box::new(t.scan_prefix(prefix).map(|r| {
                r.map(|(k, v)| (k.to_vec(), v.to_vec()))
                    .map_err(StoreError::from)
            })),
        }
    }
    fn compare_and_swap(
        &self,
        key: &[u8],
        old: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool, StoreError> {
        let swapped = self.with(true, |t| {
            t.compare_and_swap(key, old, new).map(|r| r.is_ok())
        })?;
        if swapped {
            match (old.is_some(), new.is_some()) {
                (false, true) => {
                    self.count.fetch_add(1, Ordering::Relaxed);
                }
                (true, false) => {
                    self.count.fetch_sub(1, Ordering::Relaxed);
                }
                _ => {}
            }
        }
        Ok(swapped)
    }
    fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }
}

impl Store for SledStore {
    fn tree(&self, name: &str) -> Result<Arc<dyn Tree>, StoreError> {
        let mut trees = lock(&self.shared.trees);
        if let Some(t) = trees.get(name).and_then(Weak::upgrade) {
            return Ok(t);
        }
        let tree = {
            let db = lock(&self.shared.db);
            db.as_ref().ok_or_else(reopening)?.open_tree(name)?
        };
        let t = Arc::new(SledTree {
            name: name.to_string(),
            store: SledStore {
                shared: self.shared.clone(),
            },
            count: tree.len().into(),
            tree: RwLock::new(Some(tree)),
        });
        trees.insert(name.to_string(), Arc::downgrade(&t));
        Ok(t)
    }

    fn sync(&self) -> Result<(), StoreError> {
        self.shared.check_writable()?;
        let db = lock(&self.shared.db).clone().ok_or_else(reopening)?;
        self.sync_files(&db).map_err(|e| self.failed(e))
    }

    fn health(&self) -> StoreHealth {
        let f = lock(&self.shared.failure).clone();
        StoreHealth {
            writable: f.is_none(),
            last_error: lock(&self.shared.last_error).clone(),
            unwritable_for: f.map(|f| f.since.elapsed()),
            failures: self.shared.failures.load(Ordering::Relaxed),
            recoveries: self.shared.recoveries.load(Ordering::Relaxed),
        }
    }

    fn recover(&self) -> Result<bool, StoreError> {
        let _one = lock(&self.shared.recovering);
        if lock(&self.shared.failure).is_none() {
            return Ok(false);
        }
        // A cheap look first: while the disk is still full, tearing sled down would only fail
        // again (and sled logs an error for every tree handle it drops).
        if let Err(e) = self.space_probe() {
            *lock(&self.shared.last_error) = Some(e.to_string());
            return Err(e);
        }
        // The epoch moves before the reopen: a commit that races with it fails rather than
        // claiming writes the reopen is about to drop.
        self.shared.epoch.fetch_add(1, Ordering::SeqCst);
        match self.reopen() {
            Ok(()) => {
                let was = lock(&self.shared.failure).take();
                self.shared.recoveries.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    unwritable_s = was.map_or(0.0, |f| f.since.elapsed().as_secs_f64()),
                    "the journal can write again (reopened from disk)"
                );
                Ok(true)
            }
            Err(e) => {
                let mut f = lock(&self.shared.failure);
                if let Some(f) = f.as_mut() {
                    f.cause = e.to_string();
                }
                *lock(&self.shared.last_error) = Some(e.to_string());
                Err(e)
            }
        }
    }

    fn epoch(&self) -> u64 {
        self.shared.epoch.load(Ordering::SeqCst)
    }

    fn tree_names(&self) -> Result<Vec<String>, StoreError> {
        let db = lock(&self.shared.db).clone().ok_or_else(reopening)?;
        Ok(db
            .tree_names()
            .into_iter()
            .filter(|n| n.as_ref() != b"__sled__default" && n.as_ref() != PROBE_TREE.as_bytes())
            .map(|n| String::from_utf8_lossy(&n).into_owned())
            .collect())
    }
}

/// Shares one `Store::sync` between all writers waiting at the same moment: a writer that arrives
/// while a sync runs waits for the next one, which covers everyone who arrived meanwhile. Under load
/// this turns N fsyncs into about one per fsync latency, whatever N is. While the store is failed
/// the task tries [`Store::recover`] every [`RECOVER_EVERY`] (and before a round with waiters), so
/// the store heals without anyone asking.
#[derive(Debug, Clone)]
pub struct GroupCommit {
    tx: mpsc::UnboundedSender<Waiter>,
    stats: Arc<CommitStats>,
    store: Arc<dyn Store>,
}

/// A writer waiting for the disk, and the epoch its writes were made in.
type Waiter = (u64, oneshot::Sender<Result<(), String>>);

/// Counters for status and metrics.
#[derive(Debug, Default)]
pub struct CommitStats {
    pub syncs: AtomicU64,
    pub commits: AtomicU64,
    /// Commits answered with an error (the writer was told "not recorded").
    pub failures: AtomicU64,
}

impl GroupCommit {
    /// Starts the commit task on the current tokio runtime. `on_recovered` runs (on the blocking
    /// pool) after every recovery, before any commit of the new epoch is answered: the place to
    /// rebuild what was counted from writes the reopen dropped.
    pub fn start(store: Arc<dyn Store>) -> Self {
        Self::start_with(store, Arc::new(|| {}))
    }

    pub fn start_with(store: Arc<dyn Store>, on_recovered: Arc<dyn Fn() + Send + Sync>) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<Waiter>();
        let stats = Arc::new(CommitStats::default());
        let st = stats.clone();
        let task_store = store.clone();
        tokio::spawn(async move {
            let store = task_store;
            loop {
                let first = if store.health().writable {
                    match rx.recv().await {
                        Some(w) => Some(w),
                        None => return,
                    }
                } else {
                    tokio::select! {
                        w = rx.recv() => match w { Some(w) => Some(w), None => return },
                        _ = tokio::time::sleep(RECOVER_EVERY) => None,
                    }
                };
                let mut waiters: Vec<Waiter> = first.into_iter().collect();
                while let Ok(w) = rx.try_recv() {
                    waiters.push(w);
                }
                let s = store.clone();
                let hook = on_recovered.clone();
                let want_sync = !waiters.is_empty();
                let res = tokio::task::spawn_blocking(move || {
                    if !s.health().writable {
                        match s.recover() {
                            Ok(true) => hook(),
                            Ok(false) => {}
                            Err(e) => return Err(e.to_string()),
                        }
                    }
                    if want_sync {
                        s.sync().map_err(|e| e.to_string())
                    } else {
                        Ok(())
                    }
                })
                .await
                .map_err(|e| format!("sync task failed: {e}"))
                .and_then(|r| r);
                if !want_sync {
                    continue;
                }
                let epoch = store.epoch();
                st.syncs.fetch_add(1, Ordering::Relaxed);
                st.commits
                    .fetch_add(waiters.len() as u64, Ordering::Relaxed);
                for (since, w) in waiters {
                    // Writes of an earlier epoch were dropped by a reopen: not on disk.
                    let r = match &res {
                        Ok(()) if since != epoch => Err(StoreError::Reopened.to_string()),
                        r => r.clone(),
                    };
                    if r.is_err() {
                        st.failures.fetch_add(1, Ordering::Relaxed);
                    }
                    let _ = w.send(r);
                }
            }
        });
        GroupCommit { tx, stats, store }
    }

    /// Returns once everything this task wrote before calling is on disk. For writes made before
    /// an await, take [`GroupCommit::epoch`] before the first and use [`GroupCommit::commit_since`].
    pub async fn commit(&self) -> Result<(), StoreError> {
        self.commit_since(self.store.epoch()).await
    }

    /// As [`GroupCommit::commit`], failing with [`StoreError::Reopened`] if the store was reopened
    /// since `epoch` (writes made then may have been dropped).
    pub async fn commit_since(&self, epoch: u64) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send((epoch, tx))
            .map_err(|_| StoreError::CommitterGone)?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StoreError::Fsync {
                path: PathBuf::from("(group commit)"),
                source: std::io::Error::other(e),
            }),
            Err(_) => Err(StoreError::CommitterGone),
        }
    }

    /// The store's current epoch (see [`Store::epoch`]).
    pub fn epoch(&self) -> u64 {
        self.store.epoch()
    }

    pub fn stats(&self) -> &CommitStats {
        &self.stats
    }

    /// Whether the store can write now.
    pub fn health(&self) -> StoreHealth {
        self.store.health()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_commits_share_syncs_and_data_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let store = Arc::new(SledStore::open(dir.path()).unwrap());
            let tree = store.tree("t").unwrap();
            let gc = GroupCommit::start(store.clone());
            let mut tasks = Vec::new();
            for i in 0..200u32 {
                let tree = tree.clone();
                let gc = gc.clone();
                tasks.push(tokio::spawn(async move {
                    tree.insert(&i.to_be_bytes(), b"v").unwrap();
                    gc.commit().await.unwrap();
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
            assert_eq!(
                gc.stats()
                    .commits
                    .load(std::sync::atomic::Ordering::Relaxed),
                200
            );
        });
        // Dropping the runtime ends the commit task, which releases the database.
        drop(rt);
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(store.tree("t").unwrap().len(), 200);
    }

    #[test]
    fn len_is_kept_exact_through_overwrites_removes_concurrent_writers_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledStore::open(dir.path()).unwrap();
            let t = store.tree("t").unwrap();
            t.insert(b"a", b"1").unwrap();
            t.insert(b"a", b"2").unwrap();
            t.insert(b"b", b"1").unwrap();
            assert_eq!(t.len(), 2, "an overwrite is not a new entry");
            t.remove(b"b").unwrap();
            t.remove(b"b").unwrap();
            t.remove(b"missing").unwrap();
            assert_eq!(t.len(), 1, "removing what is not there changes nothing");
            // Eight threads writing and removing overlapping keys.
            std::thread::scope(|s| {
                for w in 0..8u32 {
                    let t = store.tree("t").unwrap();
                    s.spawn(move || {
                        for i in 0..500u32 {
                            let key = (i % 300).to_be_bytes();
                            if (i + w) % 3 == 0 {
                                t.remove(&key).unwrap();
                            } else {
                                t.insert(&key, &w.to_be_bytes()).unwrap();
                            }
                        }
                    });
                }
            });
            let walked = t.scan_prefix(&[]).count();
            assert_eq!(t.len(), walked);
            assert_eq!(store.tree("t").unwrap().len(), walked, "one count per tree");
            store.sync().unwrap();
        }
        let store = SledStore::open(dir.path()).unwrap();
        let t = store.tree("t").unwrap();
        assert_eq!(t.len(), t.scan_prefix(&[]).count());
    }

    /// A real tmpfs of `size`, mounted for one test (tests run as root); `None` with a message
    /// when mounting is not permitted here.
    struct Tmpfs {
        dir: tempfile::TempDir,
    }

    impl Tmpfs {
        fn mount(size: &str) -> Option<Tmpfs> {
            let dir = tempfile::tempdir().unwrap();
            let ok = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(dir.path())
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                eprintln!("SKIPPED: cannot mount a tmpfs here (needs root and mount permission)");
                return None;
            }
            Some(Tmpfs { dir })
        }
    }

    impl Drop for Tmpfs {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }

    /// Writes `path` until the file system is full.
    fn fill(path: &Path) {
        use std::io::Write;
        let mut f = File::create(path).unwrap();
        let chunk = vec![0x55u8; 64 * 1024];
        loop {
            if let Err(e) = f.write_all(&chunk).and_then(|()| f.sync_all()) {
                assert_eq!(e.raw_os_error(), Some(28), "fills up: {e}");
                break;
            }
        }
        // The last pages, smaller than a chunk.
        while f
            .write_all(&[0x55; 512])
            .and_then(|()| f.sync_all())
            .is_ok()
        {}
    }

    #[test]
    fn a_full_disk_fails_writes_until_space_returns_then_the_store_reopens_by_itself() {
        let Some(fs) = Tmpfs::mount("8m") else { return };
        let dir = fs.dir.path().join("store");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let store: Arc<dyn Store> = Arc::new(SledStore::open(&dir).unwrap());
            let tree = store.tree("t").unwrap();
            let gc = GroupCommit::start(store.clone());
            tree.insert(b"acknowledged", b"before").unwrap();
            gc.commit().await.unwrap();
            assert!(store.health().writable);

            fill(&fs.dir.path().join("filler"));
            // Writes that need new space fail: the first failure leaves the store failed.
            let mut failed = None;
            for i in 0..200u32 {
                let epoch = gc.epoch();
                let w = tree
                    .insert(&i.to_be_bytes(), &[7u8; 4096])
                    .map(|_| ())
                    .map_err(|e| e.to_string());
                let c = match w {
                    Ok(()) => gc.commit_since(epoch).await.map_err(|e| e.to_string()),
                    Err(e) => Err(e),
                };
                if let Err(e) = c {
                    failed = Some(e);
                    break;
                }
            }
            let failed = failed.expect("a write fails on a full disk");
            assert!(
                failed.contains("No space left") || failed.contains("cannot write"),
                "{failed}"
            );
            let h = store.health();
            assert!(!h.writable, "{h:?}");
            assert!(h.last_error.is_some() && h.failures >= 1, "{h:?}");
            // While failed every write is refused at once, naming the cause.
            let e = tree.insert(b"during", b"x").unwrap_err().to_string();
            assert!(e.contains("cannot write"), "{e}");
            let stale_epoch = gc.epoch();
            // The disk is still full: the task's reopen attempts keep failing (probe write).
            tokio::time::sleep(RECOVER_EVERY * 2).await;
            assert!(!store.health().writable, "still full: still failed");

            // Space returns: the commit task reopens the store by itself.
            std::fs::remove_file(fs.dir.path().join("filler")).unwrap();
            let deadline = Instant::now() + Duration::from_secs(30);
            while !store.health().writable {
                assert!(Instant::now() < deadline, "recovered: {:?}", store.health());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert_eq!(store.health().recoveries, 1);
            // What was acknowledged before is there; new writes work and are durable.
            assert_eq!(
                tree.get(b"acknowledged").unwrap().as_deref(),
                Some(&b"before"[..])
            );
            tree.insert(b"after", b"space returned").unwrap();
            gc.commit().await.unwrap();
            // A commit for writes of the epoch before the reopen is refused (they were dropped).
            let e = gc.commit_since(stale_epoch).await.unwrap_err().to_string();
            assert!(e.contains("reopened"), "{e}");
            // The count follows what is on disk after the reopen.
            assert_eq!(tree.len(), tree.scan_prefix(&[]).count());
        });
        drop(rt);
        let store = SledStore::open(&dir).unwrap();
        let t = store.tree("t").unwrap();
        assert_eq!(
            t.get(b"acknowledged").unwrap().as_deref(),
            Some(&b"before"[..])
        );
        assert_eq!(
            t.get(b"after").unwrap().as_deref(),
            Some(&b"space returned"[..])
        );
    }

    #[test]
    fn store_files_are_private_whatever_the_umask() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("data/journal");
        // sled and create_dir_all follow the umask (0755/0644 under the usual 022); the store
        // sets the modes itself. (The edge under umask 000 is tested as a process.)
        let store = SledStore::open(&dir).unwrap();
        store
            .tree("t")
            .unwrap()
            .insert(b"k", &[1u8; 100_000])
            .unwrap();
        store.sync().unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&t.path().join("data")), 0o700);
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("db")), 0o600);
        assert_eq!(mode(&dir.join("conf")), 0o600);
        assert_eq!(mode(&dir.join("blobs")), 0o700);
        for e in std::fs::read_dir(dir.join("blobs")).unwrap() {
            assert_eq!(mode(&e.unwrap().path()), 0o600);
        }
    }
}
