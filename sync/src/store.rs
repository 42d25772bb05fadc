//! Storage behind a small trait, so that the engine (sled today) can be swapped without touching
//! logic; and durability: `sled::Db::flush` only reaches the OS (it uses `sync_file_range`), so
//! [`Durable::sync`] follows it with an fsync of sled's files and directory. [`GroupCommit`] shares
//! one flush+fsync between every writer waiting at the same moment.
//!
//! Nothing here knows what the bytes mean; callers encode values with a version tag.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

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
}

/// Entries of a prefix scan, in key order.
pub type Entries<'a> = Box<dyn Iterator<Item = Result<(Vec<u8>, Vec<u8>), StoreError>> + 'a>;

/// One ordered key space.
pub trait Tree: Send + Sync + std::fmt::Debug {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Inserts and returns the previous value.
    fn insert(&self, key: &[u8], value: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    fn remove(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Every entry whose key starts with `prefix`, in key order.
    fn scan_prefix(&self, prefix: &[u8]) -> Entries<'_>;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A database of named trees that can be made durable.
pub trait Store: Send + Sync + std::fmt::Debug {
    fn tree(&self, name: &str) -> Result<Arc<dyn Tree>, StoreError>;
    /// Everything written so far is on disk when this returns (blocking).
    fn sync(&self) -> Result<(), StoreError>;
}

/// sled, made durable by flush + fsync.
#[derive(Debug, Clone)]
pub struct SledStore {
    db: sled::Db,
    dir: PathBuf,
    synced: Arc<std::sync::Mutex<Synced>>,
    /// One handle per tree name, so each tree's entry count is kept in one place.
    trees: Arc<std::sync::Mutex<std::collections::HashMap<String, Arc<SledTree>>>>,
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

impl SledStore {
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Fsync {
            path: dir.to_path_buf(),
            source,
        })?;
        let db = sled::Config::new()
            .path(dir)
            .mode(sled::Mode::HighThroughput)
            .open()?;
        Ok(SledStore {
            db,
            dir: dir.to_path_buf(),
            synced: Arc::default(),
            trees: Arc::default(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
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
}

/// A sled tree and its number of entries: sled's own `len` walks the whole tree, so the count is
/// taken once when the tree is first opened and then kept by every insert of a new key and every
/// remove of a present one (sled returns the previous value atomically, so it stays exact with
/// concurrent writers).
#[derive(Debug)]
struct SledTree {
    tree: sled::Tree,
    count: std::sync::atomic::AtomicUsize,
}

impl Tree for SledTree {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.tree.get(key)?.map(|v| v.to_vec()))
    }
    fn insert(&self, key: &[u8], value: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let old = self.tree.insert(key, value)?;
        if old.is_none() {
            self.count
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(old.map(|v| v.to_vec()))
    }
    fn remove(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let old = self.tree.remove(key)?;
        if old.is_some() {
            self.count
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(old.map(|v| v.to_vec()))
    }
    fn scan_prefix(&self, prefix: &[u8]) -> Entries<'_> {
        Box::new(self.tree.scan_prefix(prefix).map(|r| {
            r.map(|(k, v)| (k.to_vec(), v.to_vec()))
                .map_err(StoreError::from)
        }))
    }
    fn len(&self) -> usize {
        self.count.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Store for SledStore {
    fn tree(&self, name: &str) -> Result<Arc<dyn Tree>, StoreError> {
        let mut trees = self.trees.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = trees.get(name) {
            return Ok(t.clone());
        }
        let tree = self.db.open_tree(name)?;
        let t = Arc::new(SledTree {
            count: tree.len().into(),
            tree,
        });
        trees.insert(name.to_string(), t.clone());
        Ok(t)
    }

    fn sync(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        let mut synced = self.synced.lock().unwrap_or_else(|p| p.into_inner());
        // sled 0.34 keeps its data in `db` (an fdatasync of it is what makes the flush durable),
        // its config in `conf` (written once, at creation), and large values under `blobs/`.
        if synced.db_file.is_none() {
            let path = self.dir.join("db");
            let f = File::open(&path).map_err(|source| StoreError::Fsync { path, source })?;
            synced.db_file = Some(f);
        }
        if let Some(f) = &synced.db_file {
            f.sync_data().map_err(|source| StoreError::Fsync {
                path: self.dir.join("db"),
                source,
            })?;
        }
        let blobs = self.dir.join("blobs");
        let mut new_entries = !synced.dir_done;
        if let Ok(rd) = std::fs::read_dir(&blobs) {
            for p in rd.flatten().map(|e| e.path()) {
                if !synced.blobs.contains(&p) {
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
            let conf = self.dir.join("conf");
            if conf.exists() {
                Self::fsync_path(&conf)?;
            }
            Self::fsync_path(&self.dir)?;
            synced.dir_done = true;
        }
        Ok(())
    }
}

/// Shares one `Store::sync` between all writers waiting at the same moment: a writer that arrives
/// while a sync runs waits for the next one, which covers everyone who arrived meanwhile. Under load
/// this turns N fsyncs into about one per fsync latency, whatever N is.
#[derive(Debug, Clone)]
pub struct GroupCommit {
    tx: mpsc::UnboundedSender<oneshot::Sender<Result<(), String>>>,
    stats: Arc<CommitStats>,
}

/// Counters for status and metrics.
#[derive(Debug, Default)]
pub struct CommitStats {
    pub syncs: std::sync::atomic::AtomicU64,
    pub commits: std::sync::atomic::AtomicU64,
}

impl GroupCommit {
    /// Starts the commit task on the current tokio runtime.
    pub fn start(store: Arc<dyn Store>) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<oneshot::Sender<Result<(), String>>>();
        let stats = Arc::new(CommitStats::default());
        let st = stats.clone();
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut waiters = vec![first];
                while let Ok(w) = rx.try_recv() {
                    waiters.push(w);
                }
                let s = store.clone();
                let res = tokio::task::spawn_blocking(move || s.sync())
                    .await
                    .map_err(|e| format!("sync task failed: {e}"))
                    .and_then(|r| r.map_err(|e| e.to_string()));
                st.syncs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                st.commits
                    .fetch_add(waiters.len() as u64, std::sync::atomic::Ordering::Relaxed);
                for w in waiters {
                    let _ = w.send(res.clone());
                }
            }
        });
        GroupCommit { tx, stats }
    }

    /// Returns once everything this task wrote before calling is on disk.
    pub async fn commit(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(tx).map_err(|_| StoreError::CommitterGone)?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StoreError::Fsync {
                path: PathBuf::from("(group commit)"),
                source: std::io::Error::other(e),
            }),
            Err(_) => Err(StoreError::CommitterGone),
        }
    }

    pub fn stats(&self) -> &CommitStats {
        &self.stats
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
}
