//! A file system that forgets what was not made durable when "the power is cut", in the spirit of
//! LazyFS: a FUSE file system (the `fuser` crate, in a thread of the test process) serving a
//! backing directory through an in-memory page cache. The power-loss test runs an edge's data
//! directory on it (`tests/tests/power_loss.rs`).
//!
//! What it models (and what it does not):
//! - **File data**: every `write` lands in the file's dirty pages (4 KiB) in memory, never in the
//!   durable copy; `fsync` or `fdatasync` of that file moves its dirty pages and its size into the
//!   durable copy. A truncation is a change of size like any other (lost on a cut unless the file is
//!   fsynced after it). `sync_file_range`, `flush` (close) and `release` make nothing durable: FUSE
//!   sends no request for the first, and the others are not durability calls.
//! - **Directory entries** ([`Metadata::Posix`], the default): a create, mkdir, rename or unlink
//!   changes the directory's entries in memory; only an `fsync` of that directory makes its
//!   entries as they are now durable (POSIX's rule, and what `fsync(2)` warns about). Stricter than
//!   ext4 in its default mode, where the fsync of any file commits the journal and with it every
//!   entry changed before it: that is [`Metadata::Journaled`] (file data still only by its own
//!   fsync). A rename between two directories is durable in each one when that one is fsynced
//!   (so a cut between the two fsyncs may leave the file under both names, or under neither).
//! - **Attributes** (mode, owner, times) are taken as durable at once; hard and symbolic links,
//!   special files and extended attributes are refused (the daemons use none of them).
//!
//! A cut ([`Lazy::cut`], or armed with [`Lazy::arm_cut`] to happen at the Nth changing operation):
//! from then on every operation fails with `EIO` (so nothing can be acknowledged after it on the
//! strength of a later fsync); [`Lazy::unmount`] then writes the durable state, and only it, into
//! the backing directory, which a new mount serves again: what survived. An unmount without a cut
//! is a clean shutdown (`sync; umount`): everything is written.
//!
//! It must never write to the backing directory while mounted (the durable state lives in memory
//! until the unmount), and it holds every file in memory: it is for test data directories of a
//! few tens of megabytes, not for anything large.

use std::collections::{BTreeMap, VecDeque};
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use fuser::{
    BackgroundSession, Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, LockOwner, MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request,
    TimeOrNow, WriteFlags,
};

/// The page of the modelled page cache.
const PAGE: u64 = 4096;
/// How long the kernel may cache attributes and entries: every change goes through us, so the
/// kernel's copy is never stale for longer than our answer to the change.
const TTL: Duration = Duration::from_secs(1);
/// How many recent operations the log keeps (written out with each cut, as evidence).
const OP_LOG: usize = 400;

/// When a directory's entries become durable (see the module's documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metadata {
    /// Only an fsync of the directory itself.
    Posix,
    /// Any fsync (of a file or a directory) commits every directory's entries, as ext4's journal
    /// commit does (without `fast_commit`).
    Journaled,
}

/// What a cut dropped, and what the file system saw before it.
#[derive(Debug, Clone, Default)]
pub struct CutReport {
    /// Files with writes not yet fsynced, and the bytes of their dirty pages.
    pub dirty_files: usize,
    pub dirty_bytes: u64,
    /// Directories whose entries differ from their durable ones (creates, renames, unlinks lost).
    pub dirty_dirs: usize,
    /// Every changing operation counted so far (writes, truncations, entry changes, fsyncs).
    pub ops: u64,
    pub fsyncs: u64,
    /// The last operations before the cut, oldest first (`op path …`), for the evidence.
    pub recent: Vec<String>,
}

#[derive(Debug)]
struct FileData {
    /// What an fsync made durable.
    durable: Vec<u8>,
    /// The durable bytes still part of the file as it is now (a truncation below them hides the
    /// rest; an fsync sets it to the size again). Never more than `size`.
    valid: u64,
    dirty: BTreeMap<u64, Vec<u8>>,
    size: u64,
}

impl FileData {
    fn new(durable: Vec<u8>) -> FileData {
        let size = durable.len() as u64;
        FileData {
            durable,
            valid: size,
            dirty: BTreeMap::new(),
            size,
        }
    }

    /// Page `p` as the durable copy has it (bytes past `valid` read as zero).
    fn clean_page(&self, p: u64) -> Vec<u8> {
        let mut page = vec![0u8; PAGE as usize];
        let start = p * PAGE;
        let end = (start + PAGE)
            .min(self.valid)
            .min(self.durable.len() as u64);
        if end > start {
            page[..(end - start) as usize]
                .copy_from_slice(&self.durable[start as usize..end as usize]);
        }
        page
    }

    fn read(&self, offset: u64, len: u64) -> Vec<u8> {
        let end = (offset + len).min(self.size);
        let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
        let mut at = offset;
        while at < end {
            let p = at / PAGE;
            let in_page = (at % PAGE) as usize;
            let take = ((PAGE - at % PAGE).min(end - at)) as usize;
            match self.dirty.get(&p) {
                Some(page) => out.extend_from_slice(&page[in_page..in_page + take]),
                None => out.extend_from_slice(&self.clean_page(p)[in_page..in_page + take]),
            }
            at += take as u64;
        }
        out
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let mut at = offset;
        let mut rest = data;
        while !rest.is_empty() {
            let p = at / PAGE;
            let in_page = (at % PAGE) as usize;
            let take = (PAGE as usize - in_page).min(rest.len());
            if !self.dirty.contains_key(&p) {
                let page = self.clean_page(p);
                self.dirty.insert(p, page);
            }
            if let Some(page) = self.dirty.get_mut(&p) {
                page[in_page..in_page + take].copy_from_slice(&rest[..take]);
            }
            rest = &rest[take..];
            at += take as u64;
        }
        self.size = self.size.max(offset + data.len() as u64);
    }

    fn truncate(&mut self, size: u64) {
        if size < self.size {
            let first_gone = size.div_ceil(PAGE);
            self.dirty.retain(|&p, _| p < first_gone);
            // The page the new end falls in reads as zero past it (and stays so if it grows again).
            if !size.is_multiple_of(PAGE) {
                let p = size / PAGE;
                if !self.dirty.contains_key(&p) {
                    let page = self.clean_page(p);
                    self.dirty.insert(p, page);
                }
                if let Some(page) = self.dirty.get_mut(&p) {
                    page[(size % PAGE) as usize..].fill(0);
                }
            }
            self.valid = self.valid.min(size);
        }
        self.size = size;
    }

    fn fsync(&mut self) {
        self.durable.truncate(self.valid as usize);
        self.durable.resize(self.size as usize, 0);
        for (p, page) in std::mem::take(&mut self.dirty) {
            let start = p * PAGE;
            if start >= self.size {
                continue;
            }
            let end = (start + PAGE).min(self.size);
            self.durable[start as usize..end as usize]
                .copy_from_slice(&page[..(end - start) as usize]);
        }
        self.valid = self.size;
    }

    fn is_dirty(&self) -> bool {
        !self.dirty.is_empty() || self.valid != self.size || self.durable.len() as u64 != self.size
    }

    /// The file as it is now (what a clean unmount writes).
    fn current(&self) -> Vec<u8> {
        self.read(0, self.size)
    }
}

#[derive(Debug)]
struct DirData {
    entries: BTreeMap<OsString, u64>,
    durable: BTreeMap<OsString, u64>,
    parent: u64,
}

#[derive(Debug)]
enum Kind {
    File(FileData),
    Dir(DirData),
}

#[derive(Debug)]
struct Node {
    kind: Kind,
    perm: u16,
    uid: u32,
    gid: u32,
    nlink: u32,
    atime: SystemTime,
    mtime: SystemTime,
    ctime: SystemTime,
}

impl Node {
    fn new(kind: Kind, perm: u16, uid: u32, gid: u32) -> Node {
        let now = SystemTime::now();
        Node {
            kind,
            perm,
            uid,
            gid,
            nlink: 1,
            atime: now,
            mtime: now,
            ctime: now,
        }
    }

    fn attr(&self, ino: u64) -> FileAttr {
        let (size, kind, nlink) = match &self.kind {
            Kind::File(f) => (f.size, FileType::RegularFile, self.nlink),
            Kind::Dir(d) => (d.entries.len() as u64, FileType::Directory, 2),
        };
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: self.atime,
            mtime: self.mtime,
            ctime: self.ctime,
            crtime: self.ctime,
            kind,
            perm: self.perm,
            nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: PAGE as u32,
            flags: 0,
        }
    }
}

#[derive(Debug)]
struct State {
    nodes: BTreeMap<u64, Node>,
    next_ino: u64,
    metadata: Metadata,
    cut: bool,
    /// Cut at this changing operation (it fails, as every one after it).
    cut_at: Option<u64>,
    ops: u64,
    fsyncs: u64,
    log: VecDeque<String>,
    report: Option<CutReport>,
}

const ROOT: u64 = 1;

impl State {
    fn load(backing: &Path, metadata: Metadata) -> io::Result<State> {
        let mut s = State {
            nodes: BTreeMap::new(),
            next_ino: ROOT + 1,
            metadata,
            cut: false,
            cut_at: None,
            ops: 0,
            fsyncs: 0,
            log: VecDeque::new(),
            report: None,
        };
        s.load_dir(backing, ROOT, ROOT)?;
        Ok(s)
    }

    fn load_dir(&mut self, path: &Path, ino: u64, parent: u64) -> io::Result<()> {
        let meta = std::fs::metadata(path)?;
        let mut entries = BTreeMap::new();
        let mut children = Vec::new();
        for e in std::fs::read_dir(path)? {
            let e = e?;
            let t = e.file_type()?;
            if !t.is_file() && !t.is_dir() {
                continue;
            }
            let child = self.next_ino;
            self.next_ino += 1;
            entries.insert(e.file_name(), child);
            children.push((e.path(), child, t.is_dir()));
        }
        let dir = DirData {
            durable: entries.clone(),
            entries,
            parent,
        };
        self.nodes.insert(
            ino,
            Node::new(
                Kind::Dir(dir),
                (meta.mode() & 0o7777) as u16,
                meta.uid(),
                meta.gid(),
            ),
        );
        for (p, child, is_dir) in children {
            if is_dir {
                self.load_dir(&p, child, ino)?;
            } else {
                let m = std::fs::metadata(&p)?;
                let data = std::fs::read(&p)?;
                self.nodes.insert(
                    child,
                    Node::new(
                        Kind::File(FileData::new(data)),
                        (m.mode() & 0o7777) as u16,
                        m.uid(),
                        m.gid(),
                    ),
                );
            }
        }
        Ok(())
    }

    fn note(&mut self, what: String) {
        if self.log.len() == OP_LOG {
            self.log.pop_front();
        }
        self.log.push_back(what);
    }

    /// A path for the log (the first name found for `ino` in the entries as they are now).
    fn path_of(&self, ino: u64) -> String {
        if ino == ROOT {
            return "/".into();
        }
        let mut names = Vec::new();
        let mut at = ino;
        for _ in 0..64 {
            let found = self.nodes.iter().find_map(|(&d, n)| match &n.kind {
                Kind::Dir(dd) => dd
                    .entries
                    .iter()
                    .find(|(_, c)| **c == at)
                    .map(|(name, _)| (d, name.to_string_lossy().into_owned())),
                Kind::File(_) => None,
            });
            match found {
                Some((d, name)) => {
                    names.push(name);
                    if d == ROOT {
                        break;
                    }
                    at = d;
                }
                None => {
                    names.push(format!("<unlinked #{ino}>"));
                    break;
                }
            }
        }
        names.reverse();
        format!("/{}", names.join("/"))
    }

    /// The path of `name` in the directory `parent`, for the log.
    fn child_path(&self, parent: u64, name: &OsStr) -> String {
        let dir = self.path_of(parent);
        format!("{}/{}", dir.trim_end_matches('/'), name.to_string_lossy())
    }

    /// Counts a changing operation; `Err(EIO)` once the power is cut (or is cut by this one).
    fn change(&mut self, what: impl FnOnce(&State) -> String) -> Result<(), Errno> {
        if self.cut {
            return Err(Errno::EIO);
        }
        self.ops += 1;
        if self.cut_at.is_some_and(|at| self.ops >= at) {
            let what = what(self);
            self.note(format!("{what}  <- power cut here (EIO)"));
            self.do_cut();
            return Err(Errno::EIO);
        }
        let what = what(self);
        self.note(what);
        Ok(())
    }

    fn alive(&self) -> Result<(), Errno> {
        if self.cut { Err(Errno::EIO) } else { Ok(()) }
    }

    fn do_cut(&mut self) {
        if self.cut {
            return;
        }
        let mut r = CutReport {
            ops: self.ops,
            fsyncs: self.fsyncs,
            recent: self.log.iter().cloned().collect(),
            ..CutReport::default()
        };
        for n in self.nodes.values() {
            match &n.kind {
                Kind::File(f) if f.is_dirty() => {
                    r.dirty_files += 1;
                    r.dirty_bytes += f.dirty.len() as u64 * PAGE;
                }
                Kind::Dir(d) if d.entries != d.durable => r.dirty_dirs += 1,
                _ => {}
            }
        }
        self.report = Some(r);
        self.cut = true;
    }

    fn dir(&self, ino: u64) -> Result<&DirData, Errno> {
        match self.nodes.get(&ino).map(|n| &n.kind) {
            Some(Kind::Dir(d)) => Ok(d),
            Some(Kind::File(_)) => Err(Errno::ENOTDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn dir_mut(&mut self, ino: u64) -> Result<&mut DirData, Errno> {
        match self.nodes.get_mut(&ino).map(|n| &mut n.kind) {
            Some(Kind::Dir(d)) => Ok(d),
            Some(Kind::File(_)) => Err(Errno::ENOTDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn file_mut(&mut self, ino: u64) -> Result<&mut FileData, Errno> {
        match self.nodes.get_mut(&ino).map(|n| &mut n.kind) {
            Some(Kind::File(f)) => Ok(f),
            Some(Kind::Dir(_)) => Err(Errno::EISDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn attr(&self, ino: u64) -> Result<FileAttr, Errno> {
        self.nodes
            .get(&ino)
            .map(|n| n.attr(ino))
            .ok_or(Errno::ENOENT)
    }

    fn touch(&mut self, ino: u64) {
        if let Some(n) = self.nodes.get_mut(&ino) {
            let now = SystemTime::now();
            n.mtime = now;
            n.ctime = now;
        }
    }

    /// Makes directory entries durable after an fsync of `ino` (a file or a directory).
    fn commit_entries(&mut self, ino: u64) {
        let all = self.metadata == Metadata::Journaled;
        for (&d, n) in self.nodes.iter_mut() {
            if let Kind::Dir(dd) = &mut n.kind
                && (all || d == ino)
            {
                dd.durable = dd.entries.clone();
            }
        }
    }

    fn new_node(&mut self, parent: u64, name: &OsStr, node: Node) -> Result<FileAttr, Errno> {
        if self.dir(parent)?.entries.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.nodes.insert(ino, node);
        self.dir_mut(parent)?.entries.insert(name.to_owned(), ino);
        self.touch(parent);
        self.attr(ino)
    }

    /// Writes the durable tree (or, for a clean unmount, the tree as it is) into `dir`, emptied
    /// first.
    fn write_out(&self, dir: &Path, durable: bool) -> io::Result<()> {
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            if e.file_type()?.is_dir() {
                std::fs::remove_dir_all(e.path())?;
            } else {
                std::fs::remove_file(e.path())?;
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        self.write_dir(dir, ROOT, durable, &mut seen)
    }

    fn write_dir(
        &self,
        path: &Path,
        ino: u64,
        durable: bool,
        seen: &mut std::collections::BTreeSet<u64>,
    ) -> io::Result<()> {
        let Some(Node {
            kind: Kind::Dir(d), ..
        }) = self.nodes.get(&ino)
        else {
            return Ok(());
        };
        let entries = if durable { &d.durable } else { &d.entries };
        for (name, &child) in entries {
            let Some(n) = self.nodes.get(&child) else {
                continue;
            };
            let p = path.join(name);
            match &n.kind {
                Kind::Dir(_) => {
                    // A directory renamed between two directories may be durable under both.
                    if !seen.insert(child) {
                        continue;
                    }
                    std::fs::create_dir(&p)?;
                    self.write_dir(&p, child, durable, seen)?;
                }
                Kind::File(f) => {
                    if durable {
                        std::fs::write(&p, &f.durable)?;
                    } else {
                        std::fs::write(&p, f.current())?;
                    }
                }
            }
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(u32::from(n.perm)))?;
            std::os::unix::fs::chown(&p, Some(n.uid), Some(n.gid))?;
        }
        Ok(())
    }
}

/// The FUSE side: every request under the one lock.
struct LazyFs {
    state: Arc<Mutex<State>>,
}

impl LazyFs {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Filesystem for LazyFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let s = self.lock();
        let r = s.alive().and_then(|()| {
            let ino = *s.dir(parent.0)?.entries.get(name).ok_or(Errno::ENOENT)?;
            s.attr(ino)
        });
        match r {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let s = self.lock();
        match s.alive().and_then(|()| s.attr(ino.0)) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut s = self.lock();
        let r = (|| {
            s.alive()?;
            if let Some(size) = size {
                s.change(|s| format!("truncate {} to {size}", s.path_of(ino.0)))?;
                s.file_mut(ino.0)?.truncate(size);
                s.touch(ino.0);
            }
            let n = s.nodes.get_mut(&ino.0).ok_or(Errno::ENOENT)?;
            let at = |t: TimeOrNow| match t {
                TimeOrNow::SpecificTime(t) => t,
                TimeOrNow::Now => SystemTime::now(),
            };
            if let Some(m) = mode {
                n.perm = (m & 0o7777) as u16;
            }
            if let Some(u) = uid {
                n.uid = u;
            }
            if let Some(g) = gid {
                n.gid = g;
            }
            if let Some(t) = atime {
                n.atime = at(t);
            }
            if let Some(t) = mtime {
                n.mtime = at(t);
            }
            n.ctime = SystemTime::now();
            s.attr(ino.0)
        })();
        match r {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        if mode & libc::S_IFMT != libc::S_IFREG {
            reply.error(Errno::EPERM);
            return;
        }
        let mut s = self.lock();
        let r = s
            .change(|s| format!("create {}", s.child_path(parent.0, name)))
            .and_then(|()| {
                let node = Node::new(
                    Kind::File(FileData::new(Vec::new())),
                    (mode & !umask & 0o7777) as u16,
                    req.uid(),
                    req.gid(),
                );
                s.new_node(parent.0, name, node)
            });
        match r {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let mut s = self.lock();
        let r = s
            .change(|s| format!("mkdir {}", s.child_path(parent.0, name)))
            .and_then(|()| {
                let dir = DirData {
                    entries: BTreeMap::new(),
                    durable: BTreeMap::new(),
                    parent: parent.0,
                };
                let node = Node::new(
                    Kind::Dir(dir),
                    (mode & !umask & 0o7777) as u16,
                    req.uid(),
                    req.gid(),
                );
                s.new_node(parent.0, name, node)
            });
        match r {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut s = self.lock();
        let r = (|| {
            s.change(|s| format!("unlink {}", s.child_path(parent.0, name)))?;
            let ino = *s.dir(parent.0)?.entries.get(name).ok_or(Errno::ENOENT)?;
            if matches!(s.nodes.get(&ino).map(|n| &n.kind), Some(Kind::Dir(_))) {
                return Err(Errno::EISDIR);
            }
            s.dir_mut(parent.0)?.entries.remove(name);
            if let Some(n) = s.nodes.get_mut(&ino) {
                n.nlink = n.nlink.saturating_sub(1);
            }
            s.touch(parent.0);
            Ok(())
        })();
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut s = self.lock();
        let r = (|| {
            s.change(|s| format!("rmdir {}", s.child_path(parent.0, name)))?;
            let ino = *s.dir(parent.0)?.entries.get(name).ok_or(Errno::ENOENT)?;
            if !s.dir(ino)?.entries.is_empty() {
                return Err(Errno::ENOTEMPTY);
            }
            s.dir_mut(parent.0)?.entries.remove(name);
            s.touch(parent.0);
            Ok(())
        })();
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mut s = self.lock();
        let r = (|| {
            s.change(|s| {
                format!(
                    "rename {} -> {}",
                    s.child_path(parent.0, name),
                    s.child_path(newparent.0, newname)
                )
            })?;
            if flags.contains(RenameFlags::RENAME_EXCHANGE)
                || flags.contains(RenameFlags::RENAME_WHITEOUT)
            {
                return Err(Errno::EINVAL);
            }
            let ino = *s.dir(parent.0)?.entries.get(name).ok_or(Errno::ENOENT)?;
            let is_dir = matches!(s.nodes.get(&ino).map(|n| &n.kind), Some(Kind::Dir(_)));
            if let Some(&old) = s.dir(newparent.0)?.entries.get(newname) {
                if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                    return Err(Errno::EEXIST);
                }
                match s.nodes.get(&old).map(|n| &n.kind) {
                    Some(Kind::Dir(_)) if !is_dir => return Err(Errno::EISDIR),
                    Some(Kind::Dir(d)) if !d.entries.is_empty() => return Err(Errno::ENOTEMPTY),
                    Some(Kind::File(_)) if is_dir => return Err(Errno::ENOTDIR),
                    _ => {}
                }
                if let Some(n) = s.nodes.get_mut(&old) {
                    n.nlink = n.nlink.saturating_sub(1);
                }
            }
            s.dir_mut(parent.0)?.entries.remove(name);
            s.dir_mut(newparent.0)?
                .entries
                .insert(newname.to_owned(), ino);
            if is_dir && let Ok(d) = s.dir_mut(ino) {
                d.parent = newparent.0;
            }
            s.touch(parent.0);
            s.touch(newparent.0);
            Ok(())
        })();
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let s = self.lock();
        match s.alive().and_then(|()| s.attr(ino.0)) {
            Ok(_) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let mut s = self.lock();
        let r = s
            .alive()
            .and_then(|()| Ok(s.file_mut(ino.0)?.read(offset, u64::from(size))));
        match r {
            Ok(d) => reply.data(&d),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut s = self.lock();
        let r = (|| {
            s.change(|s| format!("write {} @{offset} +{}", s.path_of(ino.0), data.len()))?;
            s.file_mut(ino.0)?.write(offset, data);
            s.touch(ino.0);
            Ok(data.len() as u32)
        })();
        match r {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        match self.lock().alive() {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let mut s = self.lock();
        let r = (|| {
            let call = if datasync { "fdatasync" } else { "fsync" };
            s.change(|s| format!("{call} {}", s.path_of(ino.0)))?;
            s.file_mut(ino.0)?.fsync();
            s.fsyncs += 1;
            s.commit_entries(ino.0);
            Ok(())
        })();
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let s = self.lock();
        match s.alive().and_then(|()| s.dir(ino.0).map(|_| ())) {
            Ok(()) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let s = self.lock();
        let r = s.alive().and_then(|()| {
            let d = s.dir(ino.0)?;
            let mut all = vec![
                (ino.0, FileType::Directory, OsString::from(".")),
                (d.parent, FileType::Directory, OsString::from("..")),
            ];
            for (name, &child) in &d.entries {
                let kind = match s.nodes.get(&child).map(|n| &n.kind) {
                    Some(Kind::Dir(_)) => FileType::Directory,
                    _ => FileType::RegularFile,
                };
                all.push((child, kind, name.clone()));
            }
            Ok(all)
        });
        match r {
            Ok(all) => {
                for (i, (child, kind, name)) in all.into_iter().enumerate().skip(offset as usize) {
                    if reply.add(INodeNo(child), i as u64 + 1, kind, &name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let mut s = self.lock();
        let r = (|| {
            s.change(|s| format!("fsync dir {}", s.path_of(ino.0)))?;
            s.dir(ino.0)?;
            s.fsyncs += 1;
            s.commit_entries(ino.0);
            Ok(())
        })();
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.lock().alive() {
            // 64 GiB, nearly all free: the daemons' space probes pass.
            Ok(()) => reply.statfs(1 << 24, 1 << 24, 1 << 24, 1 << 20, 1 << 20, 4096, 255, 4096),
            Err(e) => reply.error(e),
        }
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        match self.lock().alive() {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let mut s = self.lock();
        let r = (|| {
            s.change(|s| format!("create {}", s.child_path(parent.0, name)))?;
            if let Some(&ino) = s.dir(parent.0)?.entries.get(name) {
                if flags & libc::O_EXCL != 0 {
                    return Err(Errno::EEXIST);
                }
                if flags & libc::O_TRUNC != 0 {
                    s.file_mut(ino)?.truncate(0);
                }
                return s.attr(ino);
            }
            let node = Node::new(
                Kind::File(FileData::new(Vec::new())),
                (mode & !umask & 0o7777) as u16,
                req.uid(),
                req.gid(),
            );
            s.new_node(parent.0, name, node)
        })();
        match r {
            Ok(a) => reply.created(&TTL, &a, Generation(0), FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }
}

/// A mounted [`LazyFs`]: cut the power, unmount, mount again.
pub struct Lazy {
    session: Option<BackgroundSession>,
    state: Arc<Mutex<State>>,
    backing: PathBuf,
    mountpoint: PathBuf,
}

impl std::fmt::Debug for Lazy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lazy")
            .field("backing", &self.backing)
            .field("mountpoint", &self.mountpoint)
            .finish_non_exhaustive()
    }
}

impl Lazy {
    /// Serves `backing` (its files read into memory now) at `mountpoint` (both directories).
    pub fn mount(backing: &Path, mountpoint: &Path, metadata: Metadata) -> io::Result<Lazy> {
        std::fs::create_dir_all(backing)?;
        std::fs::create_dir_all(mountpoint)?;
        let state = Arc::new(Mutex::new(State::load(backing, metadata)?));
        let fs = LazyFs {
            state: state.clone(),
        };
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName("onshi-lazyfs".into()),
            MountOption::Subtype("lazyfs".into()),
        ];
        let session = fuser::spawn_mount(fs, mountpoint, &config)?;
        Ok(Lazy {
            session: Some(session),
            state,
            backing: backing.to_path_buf(),
            mountpoint: mountpoint.to_path_buf(),
        })
    }

    /// Whether FUSE can be mounted here (the device, and the right to mount).
    pub fn available() -> Result<(), String> {
        if !Path::new("/dev/fuse").exists() {
            return Err("/dev/fuse does not exist".into());
        }
        let probe = tempfile::Builder::new()
            .prefix("onshi-lazyfs-probe-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let lazy = Lazy::mount(
            &probe.path().join("b"),
            &probe.path().join("m"),
            Metadata::Posix,
        )
        .map_err(|e| format!("cannot mount a FUSE file system: {e}"))?;
        lazy.unmount().map_err(|e| e.to_string())
    }

    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    pub fn backing(&self) -> &Path {
        &self.backing
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Cuts the power now: every unsynced change is dropped, every later operation fails.
    pub fn cut(&self) -> CutReport {
        let mut s = self.lock();
        s.do_cut();
        s.report.clone().unwrap_or_default()
    }

    /// Cuts the power at the `n`th changing operation from now (that operation fails).
    pub fn arm_cut(&self, n: u64) {
        let mut s = self.lock();
        s.cut_at = Some(s.ops + n.max(1));
    }

    /// The cut's report, once the power is cut.
    pub fn cut_report(&self) -> Option<CutReport> {
        self.lock().report.clone()
    }

    /// Changing operations so far.
    pub fn ops(&self) -> u64 {
        self.lock().ops
    }

    /// Unmounts (every process using the mount must be gone), then writes into the backing
    /// directory what survives: after a cut, the durable state; else everything (a clean
    /// shutdown).
    pub fn unmount(mut self) -> io::Result<()> {
        self.unmount_inner()
    }

    fn unmount_inner(&mut self) -> io::Result<()> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        if let Err(e) = session.umount_and_join() {
            // Busy (a process still holds a file) or already gone: detach it.
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.mountpoint)
                .status();
            return Err(e);
        }
        let s = self.lock();
        s.write_out(&self.backing, s.cut)
    }
}

impl Drop for Lazy {
    fn drop(&mut self) {
        if self.session.is_some() {
            // A failing test: cut (nothing more is made durable), and detach.
            self.lock().do_cut();
            let _ = self.unmount_inner();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn fresh() -> FileData {
        FileData::new(b"0123456789".to_vec())
    }

    #[test]
    fn pages_read_back_what_was_written_and_fsync_makes_it_durable() {
        let mut f = fresh();
        f.write(8, b"abcdef");
        assert_eq!(f.read(0, 100), b"01234567abcdef");
        assert_eq!(f.durable, b"0123456789");
        f.fsync();
        assert_eq!(f.durable, b"01234567abcdef");
        assert!(!f.is_dirty());
    }

    #[test]
    fn a_truncation_hides_durable_bytes_until_fsynced_and_zeroes_what_grows_back() {
        let mut f = fresh();
        f.truncate(4);
        f.truncate(8);
        assert_eq!(f.read(0, 100), b"0123\0\0\0\0");
        assert_eq!(f.durable, b"0123456789", "not durable before an fsync");
        f.write(PAGE * 2, b"x");
        assert_eq!(f.read(0, 4), b"0123");
        assert_eq!(f.read(8, PAGE * 2 - 8), vec![0u8; (PAGE * 2 - 8) as usize]);
        f.fsync();
        assert_eq!(f.durable.len() as u64, PAGE * 2 + 1);
        assert_eq!(&f.durable[..8], b"0123\0\0\0\0");
    }

    fn sandbox(name: &str) -> Option<(tempfile::TempDir, PathBuf, PathBuf)> {
        if let Err(why) = Lazy::available() {
            eprintln!("SKIPPED {name}: {why}");
            return None;
        }
        let t = tempfile::Builder::new()
            .prefix(&format!("onshi-lazyfs-{name}-"))
            .tempdir()
            .ok()?;
        let (b, m) = (t.path().join("backing"), t.path().join("mnt"));
        Some((t, b, m))
    }

    fn fsync_dir(p: &Path) {
        std::fs::File::open(p).unwrap().sync_all().unwrap();
    }

    #[test]
    fn a_cut_forgets_unsynced_writes_and_keeps_fsynced_ones() {
        let Some((_t, b, m)) = sandbox("data") else {
            return;
        };
        let fs = Lazy::mount(&b, &m, Metadata::Posix).unwrap();
        let mut kept = std::fs::File::create(m.join("kept")).unwrap();
        kept.write_all(b"durable").unwrap();
        kept.sync_all().unwrap();
        let mut lost = std::fs::File::create(m.join("lost")).unwrap();
        lost.write_all(b"gone").unwrap();
        fsync_dir(&m);
        kept.write_all(b" and more").unwrap();
        lost.write_all(b" too").unwrap();
        assert_eq!(std::fs::read(m.join("kept")).unwrap(), b"durable and more");
        let report = fs.cut();
        assert_eq!(report.dirty_files, 2, "{report:?}");
        // After the cut everything fails, as on a dead disk.
        let err = kept.sync_all().unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
        drop((kept, lost));
        fs.unmount().unwrap();

        let fs = Lazy::mount(&b, &m, Metadata::Posix).unwrap();
        assert_eq!(std::fs::read(m.join("kept")).unwrap(), b"durable");
        assert_eq!(
            std::fs::read(m.join("lost")).unwrap(),
            b"",
            "created and its entry fsynced, its data never"
        );
        fs.unmount().unwrap();
    }

    #[test]
    fn entries_need_an_fsync_of_their_directory_under_posix_and_any_fsync_when_journaled() {
        let Some((_t, b, m)) = sandbox("entries") else {
            return;
        };
        let fs = Lazy::mount(&b, &m, Metadata::Posix).unwrap();
        std::fs::create_dir(m.join("d")).unwrap();
        fsync_dir(&m);
        std::fs::write(m.join("d/old"), b"v1").unwrap();
        std::fs::File::open(m.join("d/old"))
            .unwrap()
            .sync_all()
            .unwrap();
        fsync_dir(&m.join("d"));
        // The classic atomic replace, without the directory's fsync: the rename is lost.
        std::fs::write(m.join("d/new.tmp"), b"v2").unwrap();
        std::fs::File::open(m.join("d/new.tmp"))
            .unwrap()
            .sync_all()
            .unwrap();
        std::fs::rename(m.join("d/new.tmp"), m.join("d/old")).unwrap();
        std::fs::write(m.join("unsynced-entry"), b"x").unwrap();
        std::fs::File::open(m.join("unsynced-entry"))
            .unwrap()
            .sync_all()
            .unwrap();
        let report = fs.cut();
        assert_eq!(report.dirty_dirs, 2, "{report:?}");
        fs.unmount().unwrap();
        let fs = Lazy::mount(&b, &m, Metadata::Posix).unwrap();
        assert_eq!(std::fs::read(m.join("d/old")).unwrap(), b"v1");
        assert!(!m.join("d/new.tmp").exists());
        assert!(
            !m.join("unsynced-entry").exists(),
            "fsynced data, entry not"
        );

        // With the directory's fsync the rename survives.
        std::fs::write(m.join("d/new.tmp"), b"v2").unwrap();
        std::fs::File::open(m.join("d/new.tmp"))
            .unwrap()
            .sync_all()
            .unwrap();
        std::fs::rename(m.join("d/new.tmp"), m.join("d/old")).unwrap();
        fsync_dir(&m.join("d"));
        fs.cut();
        fs.unmount().unwrap();
        let fs = Lazy::mount(&b, &m, Metadata::Journaled).unwrap();
        assert_eq!(std::fs::read(m.join("d/old")).unwrap(), b"v2");

        // Journaled: a file's fsync commits every entry changed before it, as ext4 does.
        std::fs::write(m.join("d/other"), b"o").unwrap();
        std::fs::write(m.join("f"), b"f").unwrap();
        std::fs::File::open(m.join("f"))
            .unwrap()
            .sync_all()
            .unwrap();
        fs.cut();
        fs.unmount().unwrap();
        let fs = Lazy::mount(&b, &m, Metadata::Posix).unwrap();
        assert_eq!(std::fs::read(m.join("f")).unwrap(), b"f");
        assert_eq!(
            std::fs::read(m.join("d/other")).unwrap(),
            b"",
            "its entry committed by the other fsync, its data never fsynced"
        );
        fs.unmount().unwrap();
    }

    #[test]
    fn an_armed_cut_fails_that_operation_and_a_clean_unmount_keeps_everything() {
        let Some((_t, b, m)) = sandbox("armed") else {
            return;
        };
        let fs = Lazy::mount(&b, &m, Metadata::Posix).unwrap();
        std::fs::write(m.join("a"), b"all of it").unwrap();
        fs.unmount().unwrap();
        let fs = Lazy::mount(&b, &m, Metadata::Posix).unwrap();
        assert_eq!(std::fs::read(m.join("a")).unwrap(), b"all of it");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(m.join("a"))
            .unwrap();
        fs.arm_cut(2);
        f.write_all(b"!").unwrap();
        let err = f.sync_data().unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EIO));
        assert!(fs.cut_report().is_some_and(|r| r.dirty_files == 1));
        drop(f);
        fs.unmount().unwrap();
        let fs = Lazy::mount(&b, &m, Metadata::Posix).unwrap();
        assert_eq!(std::fs::read(m.join("a")).unwrap(), b"all of it");
        fs.unmount().unwrap();
    }
}
