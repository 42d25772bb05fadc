//! When a file in `req/` may be read: the sans-IO [`Tracker`] (fed with what notify saw, what a
//! stat says, and what reading found; time passed in), and the mapping of notify's events.
//!
//! Receipt computers either write a file in place or write it elsewhere and rename it in. A file
//! renamed in, or closed after writing (inotify's close-write), is read at once; any other sighting
//! (created, modified, found by a rescan) is read once its size and mtime have held still for the
//! settle time. Either way it is processed only if it parses as a complete XML document; a file
//! that stays incomplete, unchanged, past the incomplete timeout is given up (moved to `err/`).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

/// What notify (or a rescan) said about a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Created or written: it may still be being written.
    Changed,
    /// Closed after writing, or renamed into `req/`: complete as far as the writer is concerned.
    Closed,
    /// Found by a rescan (start-up, overflow, the periodic look).
    Found,
}

/// Size and mtime, the "has it held still" test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub len: u64,
    pub modified: Option<SystemTime>,
}

/// What to do with a file that is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// It is gone (processed, or taken away): forget it.
    Forget,
    /// It changed since the last look: look again after the settle time.
    Wait,
    /// Read and process it; `give_up`: if it is still incomplete, reject it.
    Read { give_up: bool },
}

/// How processing a file ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    /// Answered or moved to `err/`, or it disappeared.
    Done,
    /// Not a complete document yet.
    Incomplete,
}

#[derive(Debug, Clone)]
struct Entry {
    due: Option<Instant>,
    /// A close-write or rename was seen since the last read: no need to wait for it to settle.
    closed: bool,
    last: Option<Stat>,
    /// Since when it has been incomplete and unchanged.
    incomplete_since: Option<Instant>,
    /// A worker has it.
    busy: bool,
    /// Something was seen while a worker had it: look again afterwards.
    dirty: bool,
}

/// The files of `req/` being watched until they are complete.
#[derive(Debug)]
pub struct Tracker {
    settle: Duration,
    incomplete_timeout: Duration,
    files: HashMap<String, Entry>,
    /// When files are due, earliest first; an entry whose time is no longer its file's `due` is
    /// stale and skipped (a burst of 10,000 files must not cost a scan of all of them per event).
    queue: BinaryHeap<Reverse<(Instant, String)>>,
}

fn schedule(
    queue: &mut BinaryHeap<Reverse<(Instant, String)>>,
    name: &str,
    e: &mut Entry,
    at: Instant,
) {
    if e.due != Some(at) {
        e.due = Some(at);
        queue.push(Reverse((at, name.to_string())));
    }
}

impl Tracker {
    pub fn new(settle: Duration, incomplete_timeout: Duration) -> Self {
        Tracker {
            settle,
            incomplete_timeout,
            files: HashMap::new(),
            queue: BinaryHeap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    pub fn seen(&mut self, name: &str, how: Seen, now: Instant) {
        let settle = self.settle;
        let e = self.files.entry(name.to_string()).or_insert(Entry {
            due: None,
            closed: false,
            last: None,
            incomplete_since: None,
            busy: false,
            dirty: false,
        });
        if e.busy {
            e.dirty = true;
            e.closed |= how == Seen::Closed;
            return;
        }
        let q = &mut self.queue;
        match how {
            Seen::Closed => {
                e.closed = true;
                schedule(q, name, e, now);
            }
            Seen::Changed => schedule(q, name, e, now + settle),
            // A rescan does not delay what is already scheduled; a new file gets its first look now.
            Seen::Found => {
                if e.due.is_none() {
                    schedule(q, name, e, now);
                }
            }
        }
    }

    fn is_live(&self, at: Instant, name: &str) -> bool {
        self.files
            .get(name)
            .is_some_and(|e| !e.busy && e.due == Some(at))
    }

    /// When the next file is due.
    pub fn next_due(&mut self) -> Option<Instant> {
        while let Some(Reverse((at, name))) = self.queue.peek() {
            if self.is_live(*at, name) {
                return Some(*at);
            }
            self.queue.pop();
        }
        None
    }

    /// The files due at `now`, earliest first (ties in name order).
    pub fn take_due(&mut self, now: Instant) -> Vec<String> {
        let mut due = Vec::new();
        while let Some(Reverse((at, _))) = self.queue.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((at, name))) = self.queue.pop() else {
                break;
            };
            if self.is_live(at, &name) {
                if let Some(e) = self.files.get_mut(&name) {
                    e.due = None;
                }
                due.push(name);
            }
        }
        due
    }

    /// A due file was looked at: `stat` is `None` if it no longer exists.
    pub fn observed(&mut self, name: &str, now: Instant, stat: Option<Stat>) -> Decision {
        let Some(stat) = stat else {
            self.files.remove(name);
            return Decision::Forget;
        };
        let settle = self.settle;
        let timeout = self.incomplete_timeout;
        let Some(e) = self.files.get_mut(name) else {
            return Decision::Forget;
        };
        let changed = e.last != Some(stat);
        if changed {
            e.last = Some(stat);
            e.incomplete_since = None;
        }
        if changed && !e.closed {
            schedule(&mut self.queue, name, e, now + settle);
            return Decision::Wait;
        }
        e.closed = false;
        e.busy = true;
        let give_up = e
            .incomplete_since
            .is_some_and(|since| now.saturating_duration_since(since) >= timeout);
        Decision::Read { give_up }
    }

    /// A worker is done with the file.
    pub fn finished(&mut self, name: &str, now: Instant, how: Finished) {
        let settle = self.settle;
        let Some(e) = self.files.get_mut(name) else {
            return;
        };
        e.busy = false;
        let dirty = std::mem::take(&mut e.dirty);
        match how {
            Finished::Done => {
                if dirty {
                    // Something happened to the name meanwhile (a new file?): look again.
                    let closed = e.closed;
                    *e = Entry {
                        due: None,
                        closed,
                        last: None,
                        incomplete_since: None,
                        busy: false,
                        dirty: false,
                    };
                    schedule(&mut self.queue, name, e, now);
                } else {
                    self.files.remove(name);
                }
            }
            Finished::Incomplete => {
                e.incomplete_since.get_or_insert(now);
                // Look again after the settle time (sooner if written to meanwhile), so the
                // timeout is noticed even if nothing else happens.
                schedule(
                    &mut self.queue,
                    name,
                    e,
                    if dirty { now } else { now + settle },
                );
            }
        }
    }
}

/// Whether a name in `req/` is one the mailbox looks at: an `.xml` file (any case), not hidden.
/// Other names (a writer's `*.tmp`, `.partial`, dot files) are left alone, untouched.
pub fn is_candidate(name: &str) -> bool {
    !name.starts_with('.') && name.to_ascii_lowercase().ends_with(".xml")
}

/// What one notify event means for `req/`: a rescan, or files seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Noticed {
    Rescan,
    Files(Vec<(String, Seen)>),
}

/// Maps a notify event to what the tracker needs; paths outside `req` are ignored.
pub fn notice(event: &notify::Event, req: &Path) -> Noticed {
    use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind, RenameMode};
    if event.need_rescan() {
        return Noticed::Rescan;
    }
    let how = match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => Some(Seen::Closed),
        EventKind::Modify(ModifyKind::Name(RenameMode::To)) => Some(Seen::Closed),
        // Renamed inside `req/`: paths are [from, to]; the "to" side is complete.
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => {
            let to = event.paths.get(1);
            let files = to
                .and_then(|p| name_in(p, req))
                .map(|n| vec![(n, Seen::Closed)])
                .unwrap_or_default();
            return Noticed::Files(files);
        }
        EventKind::Modify(ModifyKind::Name(RenameMode::From)) | EventKind::Remove(_) => None,
        EventKind::Create(_) | EventKind::Modify(_) => Some(Seen::Changed),
        EventKind::Any | EventKind::Other => Some(Seen::Changed),
        EventKind::Access(_) => None,
    };
    let Some(how) = how else {
        return Noticed::Files(Vec::new());
    };
    Noticed::Files(
        event
            .paths
            .iter()
            .filter_map(|p| name_in(p, req))
            .map(|n| (n, how))
            .collect(),
    )
}

fn name_in(path: &Path, dir: &Path) -> Option<String> {
    if path.parent() != Some(dir) {
        return None;
    }
    let name = path.file_name()?.to_str()?.to_string();
    is_candidate(&name).then_some(name)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const SETTLE: Duration = Duration::from_millis(100);
    const TIMEOUT: Duration = Duration::from_millis(1000);

    fn stat(len: u64) -> Option<Stat> {
        Some(Stat {
            len,
            modified: None,
        })
    }

    #[test]
    fn a_file_renamed_in_is_read_at_once() {
        let t0 = Instant::now();
        let mut t = Tracker::new(SETTLE, TIMEOUT);
        t.seen("a.xml", Seen::Closed, t0);
        assert_eq!(t.take_due(t0), vec!["a.xml"]);
        assert_eq!(
            t.observed("a.xml", t0, stat(10)),
            Decision::Read { give_up: false }
        );
        assert_eq!(t.next_due(), None, "busy files are not due");
        t.finished("a.xml", t0, Finished::Done);
        assert!(t.is_empty());
    }

    #[test]
    fn a_file_written_in_place_waits_until_it_holds_still() {
        let t0 = Instant::now();
        let mut t = Tracker::new(SETTLE, TIMEOUT);
        t.seen("a.xml", Seen::Changed, t0);
        assert!(t.take_due(t0).is_empty());
        let t1 = t0 + SETTLE;
        assert_eq!(t.take_due(t1), vec!["a.xml"]);
        assert_eq!(t.observed("a.xml", t1, stat(5)), Decision::Wait);
        // Still growing: wait again.
        let t2 = t1 + SETTLE;
        assert_eq!(t.take_due(t2), vec!["a.xml"]);
        assert_eq!(t.observed("a.xml", t2, stat(9)), Decision::Wait);
        let t3 = t2 + SETTLE;
        assert_eq!(t.take_due(t3), vec!["a.xml"]);
        assert_eq!(
            t.observed("a.xml", t3, stat(9)),
            Decision::Read { give_up: false }
        );
    }

    #[test]
    fn an_incomplete_file_is_given_up_only_after_holding_still_past_the_timeout() {
        let t0 = Instant::now();
        let mut t = Tracker::new(SETTLE, TIMEOUT);
        t.seen("a.xml", Seen::Closed, t0);
        t.take_due(t0);
        assert_eq!(
            t.observed("a.xml", t0, stat(5)),
            Decision::Read { give_up: false }
        );
        t.finished("a.xml", t0, Finished::Incomplete);
        // Polled every settle time while it holds still, until the timeout.
        let now = loop {
            let now = t.next_due().unwrap();
            assert_eq!(t.take_due(now), vec!["a.xml"]);
            match t.observed("a.xml", now, stat(5)) {
                Decision::Read { give_up: true } => break now,
                Decision::Read { give_up: false } => t.finished("a.xml", now, Finished::Incomplete),
                other => panic!("{other:?}"),
            }
        };
        assert!(now - t0 >= TIMEOUT && now - t0 < TIMEOUT + 2 * SETTLE);
        // Growth restarts the clock.
        let mut t = Tracker::new(SETTLE, TIMEOUT);
        t.seen("b.xml", Seen::Closed, t0);
        t.take_due(t0);
        t.observed("b.xml", t0, stat(5));
        t.finished("b.xml", t0, Finished::Incomplete);
        let late = t0 + TIMEOUT;
        t.seen("b.xml", Seen::Closed, late);
        t.take_due(late);
        assert_eq!(
            t.observed("b.xml", late, stat(8)),
            Decision::Read { give_up: false }
        );
    }

    #[test]
    fn events_while_busy_bring_the_file_back_and_vanished_files_are_forgotten() {
        let t0 = Instant::now();
        let mut t = Tracker::new(SETTLE, TIMEOUT);
        t.seen("a.xml", Seen::Closed, t0);
        t.take_due(t0);
        t.observed("a.xml", t0, stat(5));
        t.seen("a.xml", Seen::Closed, t0);
        assert!(t.take_due(t0 + SETTLE).is_empty(), "not while busy");
        t.finished("a.xml", t0, Finished::Done);
        assert_eq!(t.take_due(t0), vec!["a.xml"]);
        assert_eq!(t.observed("a.xml", t0, None), Decision::Forget);
        assert!(t.is_empty());
        // A rescan does not postpone a file already scheduled.
        t.seen("b.xml", Seen::Changed, t0);
        t.seen("b.xml", Seen::Found, t0 + SETTLE / 2);
        assert_eq!(t.next_due(), Some(t0 + SETTLE));
    }

    #[test]
    fn candidates_and_events() {
        assert!(is_candidate("OQSsiquc01req_1.xml"));
        assert!(is_candidate("hello.XML"));
        assert!(!is_candidate(".OQSsiquc01req_1.xml"));
        assert!(!is_candidate("OQSsiquc01req_1.xml.tmp"));
        use notify::event::{
            AccessKind, AccessMode, CreateKind, EventKind, ModifyKind, RenameMode,
        };
        let req = Path::new("/m/req");
        let ev = |kind, paths: &[&str]| {
            let mut e = notify::Event::new(kind);
            for p in paths {
                e = e.add_path(p.into());
            }
            e
        };
        assert_eq!(
            notice(
                &ev(
                    EventKind::Modify(ModifyKind::Name(RenameMode::Both)),
                    &["/m/req/x.tmp", "/m/req/a.xml"]
                ),
                req
            ),
            Noticed::Files(vec![("a.xml".into(), Seen::Closed)])
        );
        assert_eq!(
            notice(
                &ev(
                    EventKind::Access(AccessKind::Close(AccessMode::Write)),
                    &["/m/req/a.xml"]
                ),
                req
            ),
            Noticed::Files(vec![("a.xml".into(), Seen::Closed)])
        );
        assert_eq!(
            notice(
                &ev(EventKind::Create(CreateKind::File), &["/m/req/done/a.xml"]),
                req
            ),
            Noticed::Files(vec![])
        );
        assert_eq!(
            notice(
                &notify::Event::new(EventKind::Other).set_flag(notify::event::Flag::Rescan),
                req
            ),
            Noticed::Rescan
        );
    }
}
