//! The receipt computers' file interface (the OQS mailbox): request files dropped into `req/` are
//! checked through the same gate as the HTTP API, and answered by result files in `res/`; card
//! checks from the reader adapter are also written to `face/`. Layout of the mailbox folder:
//!
//! - `req/`: the receipt computer drops `OQSsiquc01req_*.xml`, `OQSmuquc01req_*.xml`,
//!   `OQSmuquc02req_*.xml` (UTF-8 or Shift_JIS). Other names (`*.tmp`, dot files) are left alone.
//! - `res/`: the result of `X`req`Y.xml` is `X`res`Y.xml`, written atomically. A check answered
//!   offline first gets an interim result (`SegmentOfResult` 2, with a code and message saying it is
//!   not confirmed); when the deferred check completes, the final result replaces that file. Both
//!   stay in the journal (`onshi-edge export`).
//! - `face/`: a result file for each card-reader check, written unasked (and replaced by the final
//!   one if the check was answered offline).
//! - `done/`: answered requests, moved out of `req/` (never deleted; a taken name gets `.1`, …).
//! - `err/`: files that are not valid requests, with `<name>.reason.txt`; a file named like a
//!   request also gets an error result (`SegmentOfResult` 9) in `res/`.
//!
//! Order of a request: read (only once complete: see `watch`), record the request file and its
//! result in the journal together with the check (one commit), write the result, move the request
//! to `done/`. A request file is keyed by its name and the SHA-256 of its bytes: found again (after
//! a crash before the move, or dropped again), it is answered from the journal, never checked
//! twice. This module never logs personal data above debug level: file names, codes and element
//! paths only, never the values in a file.
//!
//! The share is written by other machines: every file, name and link in it is hostile. This module
//! never follows a link found there, never logs a name or element path unescaped (`Untrusted`),
//! never keeps a file's bytes in the journal (only the parsed request, its hash and the results),
//! and never lets one file stop it: the bounds are in `limits`, a panic while handling a file
//! quarantines that file, and a file in hand whenever the edge died is quarantined after
//! `limits::MAX_ATTEMPTS`.

pub mod codes;
pub mod files;
mod in_hand;
pub mod limits;
pub mod store;
pub mod watch;
pub mod xml;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDateTime, Utc};
use onshi_model::{Source, Untrusted};
use onshi_sync::store::StoreError;
use onshi_sync::wire::{MAX_BATCH, Request, Response};
use tokio::sync::{Notify, Semaphore, mpsc, watch as tokio_watch};
use tokio::task::JoinSet;

use crate::config::MailboxTiming;
use crate::gate::{Gate, GateError};
use crate::journal::{CheckRecord, CheckState, FinalOutcome, JournalError};
use codes::{Coded, Segment};
use files::{DONE, ERR, REQ, RES};
use store::{BatchRecord, MailboxRecord, MailboxStore, RecordKind, ResultText};
use watch::{Decision, Finished, Noticed, Seen, Stat, Tracker};
use xml::{Echo, OqsRequest, ReadError, Rejection, RequestKind, ResultMeta, TextEncoding};

/// Request files processed at the same time (each waits for its check and the journal's commit).
pub const WORKERS: usize = 32;
/// How often open records (finals awaited, results unwritten) and open batches are looked at
/// even without a wake-up.
const RETRY_EVERY: Duration = Duration::from_secs(2);
/// How long one batch chunk may take at the reconciler.
const BATCH_TIMEOUT: Duration = Duration::from_secs(30);

/// What went wrong while handling a file (the file stays where it is and is tried again).
#[derive(Debug, thiserror::Error)]
pub enum MailboxError {
    #[error(transparent)]
    Gate(#[from] GateError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> MailboxError + '_ {
    move |source| MailboxError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Counters for status and metrics.
#[derive(Debug, Default)]
pub struct MailboxStats {
    pub answered: AtomicU64,
    pub rejected: AtomicU64,
    pub finals: AtomicU64,
    pub faces: AtomicU64,
    pub rescans: AtomicU64,
}

/// The running mailbox.
#[derive(Debug, Clone)]
pub struct Mailbox {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    gate: Gate,
    store: MailboxStore,
    /// Which request files are being handled (crash-loop guard).
    in_hand: in_hand::InHand,
    facility: String,
    timing: MailboxTiming,
    batch_wake: Notify,
    /// Result files of the same record are written one at a time (interim and final may race).
    stripes: Vec<tokio::sync::Mutex<()>>,
    /// Records a worker is creating or answering: the finalizer leaves their results to it.
    claimed: std::sync::Mutex<HashSet<String>>,
    stats: MailboxStats,
}

/// A claim on a record key, released when dropped.
struct Claim<'a> {
    inner: &'a Inner,
    key: String,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.inner
            .claimed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
    }
}

fn local(t: DateTime<Utc>) -> NaiveDateTime {
    t.with_timezone(&chrono::Local).naive_local()
}

fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A request file's record key: its name and the first 16 hex digits of its SHA-256.
pub fn request_key(name: &str, sha256: &str) -> String {
    format!("req:{name}:{}", &sha256[..16.min(sha256.len())])
}

/// The result text of a check as answered: online (done), or offline (an interim answer that says
/// so: from the replica with its age, or nothing known yet).
pub fn answer_text(
    check: &CheckRecord,
    echo: &Echo,
    encoding: TextEncoding,
    reference: &'static str,
) -> ResultText {
    let quals = check
        .outcome
        .as_ref()
        .map_or(&[][..], |o| o.qualifications.as_slice());
    let (segment, status, note) = match (check.state, check.source) {
        (_, Source::Online) => (Segment::Done, codes::STATUS_OK, None),
        (_, Source::Replica) => {
            let as_of = check
                .as_of
                .map(|t| format!("（{} 時点の記録）", local(t).format("%Y-%m-%d %H:%M")))
                .unwrap_or_default();
            (
                Segment::Processing,
                codes::STATUS_OK,
                Some((
                    codes::OFFLINE_REPLICA.code,
                    format!("{}{as_of}", codes::OFFLINE_REPLICA.message),
                )),
            )
        }
        (_, Source::Queued) => (
            Segment::Processing,
            codes::STATUS_ERROR,
            Some((
                codes::OFFLINE_QUEUED.code,
                codes::OFFLINE_QUEUED.message.to_string(),
            )),
        ),
    };
    let meta = ResultMeta {
        echo,
        processed_at: local(check.created_at),
        reference,
        encoding,
    };
    let text = xml::render_check(
        &meta,
        &xml::CheckView {
            segment,
            status,
            note,
            validity: check.validity,
            qualifications: quals,
            service_date: check.request.service_date,
        },
    );
    ResultText {
        at: check.created_at,
        segment: segment.code().to_string(),
        text,
    }
}

/// The final result of a check answered offline, once its online answer came.
pub fn final_text(
    check: &CheckRecord,
    fin: &FinalOutcome,
    echo: &Echo,
    encoding: TextEncoding,
    reference: &'static str,
) -> ResultText {
    let note: Coded = if fin.outcome.validity == check.validity {
        codes::FINAL_AFTER_OUTAGE
    } else {
        codes::FINAL_CHANGED
    };
    let meta = ResultMeta {
        echo,
        processed_at: local(fin.completed_at),
        reference,
        encoding,
    };
    let text = xml::render_check(
        &meta,
        &xml::CheckView {
            segment: Segment::Done,
            status: codes::STATUS_OK,
            note: Some((note.code, note.message.to_string())),
            validity: fin.outcome.validity,
            qualifications: &fin.outcome.qualifications,
            service_date: check.request.service_date,
        },
    );
    ResultText {
        at: fin.completed_at,
        segment: Segment::Done.code().to_string(),
        text,
    }
}

impl Mailbox {
    /// Creates the folders, starts watching `req/` and the tasks; the task ends after `stop`, once
    /// the files being processed are done.
    pub fn start(
        dir: PathBuf,
        timing: MailboxTiming,
        gate: Gate,
        store: MailboxStore,
        in_hand_dir: &Path,
        stop: tokio_watch::Receiver<bool>,
    ) -> anyhow::Result<(Mailbox, tokio::task::JoinHandle<()>)> {
        use anyhow::Context;
        use notify::Watcher;
        files::create_layout(&dir)
            .with_context(|| format!("creating the mailbox folders in {}", dir.display()))?;
        let in_hand = in_hand::InHand::open(in_hand_dir)
            .with_context(|| format!("creating {}", in_hand_dir.display()))?;
        let req = dir.join(REQ);
        let (tx, rx) = mpsc::unbounded_channel::<Noticed>();
        let req_for_watcher = req.clone();
        let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
            let n = match ev {
                Ok(ev) => watch::notice(&ev, &req_for_watcher),
                // An error (e.g. the kernel's queue overflowed): list the folder again.
                Err(_) => Noticed::Rescan,
            };
            if n != Noticed::Files(Vec::new()) {
                let _ = tx.send(n);
            }
        })
        .context("starting the mailbox watcher")?;
        watcher
            .watch(&req, notify::RecursiveMode::NonRecursive)
            .with_context(|| format!("watching {}", req.display()))?;
        let facility = gate.journal.facility().to_string();
        let mailbox = Mailbox {
            inner: Arc::new(Inner {
                dir,
                gate,
                store,
                in_hand,
                facility,
                timing,
                batch_wake: Notify::new(),
                stripes: (0..64).map(|_| tokio::sync::Mutex::new(())).collect(),
                claimed: std::sync::Mutex::default(),
                stats: MailboxStats::default(),
            }),
        };
        tracing::info!(dir = %mailbox.inner.dir.display(), settle_ms = timing.settle.as_millis() as u64, incomplete_ms = timing.incomplete_timeout.as_millis() as u64, "mailbox watching req/");
        let task = {
            let mb = mailbox.clone();
            tokio::spawn(async move {
                let finals = tokio::spawn(mb.clone().finalize_loop(stop.clone()));
                let batches = tokio::spawn(mb.clone().batch_loop(stop.clone()));
                mb.watch_loop(watcher, rx, stop).await;
                let _ = finals.await;
                let _ = batches.await;
            })
        };
        Ok((mailbox, task))
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    pub fn stats(&self) -> &MailboxStats {
        &self.inner.stats
    }

    pub fn store(&self) -> &MailboxStore {
        &self.inner.store
    }

    fn claim(&self, key: &str) -> Option<Claim<'_>> {
        let mut c = self.inner.claimed.lock().unwrap_or_else(|p| p.into_inner());
        c.insert(key.to_string()).then(|| Claim {
            inner: &self.inner,
            key: key.to_string(),
        })
    }

    fn is_claimed(&self, key: &str) -> bool {
        self.inner
            .claimed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(key)
    }

    fn stripe(&self, key: &str) -> &tokio::sync::Mutex<()> {
        let h = key
            .bytes()
            .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize));
        &self.inner.stripes[h % self.inner.stripes.len()]
    }

    // -----------------------------------------------------------------------------------------
    // Watching req/

    /// The size and mtime of whatever has the name (a link's own, never its target's): a link,
    /// FIFO or folder named like a request is handled like a file, and refused when opened.
    fn stat(&self, name: &str) -> Option<Stat> {
        let m = std::fs::symlink_metadata(self.inner.dir.join(REQ).join(name)).ok()?;
        Some(Stat {
            len: m.len(),
            modified: m.modified().ok(),
        })
    }

    fn rescan(&self, tracker: &mut Tracker) {
        self.inner.stats.rescans.fetch_add(1, Ordering::Relaxed);
        let req = self.inner.dir.join(REQ);
        let entries = match std::fs::read_dir(&req) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(dir = %req.display(), error = %e, "mailbox: cannot list req/");
                return;
            }
        };
        let now = Instant::now();
        // Every entry named like a request, whatever it is: the event path sees links, FIFOs and
        // folders too, and both refuse them the same way when they open them.
        for e in entries.flatten() {
            if let Some(name) = e.file_name().to_str()
                && watch::is_candidate(name)
            {
                tracker.seen(name, Seen::Found, now);
            }
        }
    }

    async fn watch_loop(
        self,
        _watcher: notify::RecommendedWatcher,
        mut events: mpsc::UnboundedReceiver<Noticed>,
        mut stop: tokio_watch::Receiver<bool>,
    ) {
        let timing = self.inner.timing;
        let mut tracker = Tracker::new(timing.settle, timing.incomplete_timeout);
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(String, Finished)>();
        let workers = Arc::new(Semaphore::new(WORKERS));
        let mut running = JoinSet::new();
        // At start the link is still connecting: give it up to the deadline, so files dropped while
        // the daemon was down are checked online rather than answered from the replica.
        let mut link = self.inner.gate.link.subscribe();
        let deadline = self.inner.gate.deadline();
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::timeout(deadline, link.wait_for(|s| s.is_up())) => {}
        }
        // Whatever was dropped while the daemon was down.
        self.rescan(&mut tracker);
        let mut rescan_every = tokio::time::interval(timing.rescan);
        rescan_every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        rescan_every.tick().await;
        loop {
            let next = tracker.next_due();
            tokio::select! {
                _ = stop.changed() => break,
                Some(n) = events.recv() => {
                    let now = Instant::now();
                    let mut rescan = false;
                    let mut apply = |n: Noticed| match n {
                        Noticed::Rescan => rescan = true,
                        Noticed::Files(fs) => {
                            for (name, how) in fs {
                                tracker.seen(&name, how, now);
                            }
                        }
                    };
                    apply(n);
                    // A burst arrives as many events: take them all before looking at files.
                    while let Ok(n) = events.try_recv() {
                        apply(n);
                    }
                    if rescan {
                        tracing::info!("mailbox: the watcher lost events (overflow or error); listing req/ again");
                        self.rescan(&mut tracker);
                    }
                }
                Some((name, how)) = done_rx.recv() => {
                    let now = Instant::now();
                    tracker.finished(&name, now, how);
                    while let Ok((name, how)) = done_rx.try_recv() {
                        tracker.finished(&name, now, how);
                    }
                }
                _ = async { match next { Some(t) => tokio::time::sleep_until(t.into()).await, None => std::future::pending().await } } => {}
                _ = rescan_every.tick() => self.rescan(&mut tracker),
                Some(_) = running.join_next(), if !running.is_empty() => {}
            }
            let now = Instant::now();
            for name in tracker.take_due(now) {
                let stat = self.stat(&name);
                if let Decision::Read { give_up } = tracker.observed(&name, now, stat) {
                    let mb = self.clone();
                    let workers = workers.clone();
                    let done = done_tx.clone();
                    let stop = stop.clone();
                    running.spawn(async move {
                        let how = match workers.acquire_owned().await {
                            Ok(_permit) if !*stop.borrow() => {
                                mb.handle_request_caught(&name, give_up).await
                            }
                            // Stopping: the file stays in req/ for the next start.
                            _ => Finished::Done,
                        };
                        let _ = done.send((name, how));
                    });
                }
            }
        }
        // Let the files being processed finish (each is bounded by the deadline and a commit).
        while running.join_next().await.is_some() {}
    }

    // -----------------------------------------------------------------------------------------
    // One request file

    /// Handles one file in its own task, so that a panic while handling it quarantines that file
    /// (to `err/` with the reason) and the rest keeps flowing.
    async fn handle_request_caught(&self, name: &str, give_up: bool) -> Finished {
        let task = {
            let mb = self.clone();
            let name = name.to_string();
            tokio::spawn(async move { mb.handle_request(&name, give_up).await })
        };
        match task.await {
            Ok(how) => how,
            Err(e) if e.is_panic() => {
                let why = xml::panic_message(e.into_panic().as_ref());
                tracing::error!(file = %Untrusted(name), panic = %Untrusted(&why), "mailbox: the edge failed while handling a request file; it is quarantined to err/");
                let reason = format!(
                    "the edge failed while handling this file ({why}); it is quarantined so it cannot stop the mailbox"
                );
                if let Err(e) = self.quarantine(name, reason).await {
                    tracing::error!(file = %Untrusted(name), error = %Untrusted(&e.to_string()), "mailbox: a file that failed could not be quarantined; it stays in req/");
                }
                Finished::Done
            }
            Err(_) => Finished::Done,
        }
    }

    async fn handle_request(&self, name: &str, give_up: bool) -> Finished {
        match self.process(name, give_up).await {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(file = %Untrusted(name), error = %Untrusted(&e.to_string()), "mailbox: request file not processed; it stays in req/ and is tried again");
                Finished::Done
            }
        }
    }

    /// A file refused before (or instead of) being parsed: its name, what it is, its size, a
    /// failure. Read again (bounded) only to key it by its hash when it is a regular file.
    async fn quarantine(&self, name: &str, message: String) -> Result<(), MailboxError> {
        let path = self.inner.dir.join(REQ).join(name);
        let max = limits::max_bytes(RequestKind::of_file_name(name));
        let hash = match files::open_request(&path) {
            Ok(files::Opened::File { file, len }) if len <= max => files::read_bounded(file, max)
                .ok()
                .flatten()
                .map(|b| sha256_hex(&b)),
            Ok(_) => None,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io(&path)(e)),
        };
        let key = match &hash {
            Some(h) => request_key(name, h),
            None => format!("req:{name}:refused"),
        };
        let r = Rejection {
            kind: xml::RejectKind::Format,
            field: String::new(),
            message,
            echo: Box::default(),
        };
        let _claim = self.claim(&key);
        self.reject(name, &key, hash.as_deref(), r).await?;
        let in_hand = &self.inner.in_hand;
        in_hand.end(&key).map_err(io(in_hand.dir()))?;
        Ok(())
    }

    async fn process(&self, name: &str, give_up: bool) -> Result<Finished, MailboxError> {
        // A name that cannot be answered (control characters, too long) is refused at once,
        // before anything is opened: never checked, never retried.
        if let Some(why) = limits::name_problem(name) {
            let key = format!("req:{name}:name");
            let _claim = self.claim(&key);
            let r = Rejection {
                kind: xml::RejectKind::Format,
                field: "file name".into(),
                message: why,
                echo: Box::default(),
            };
            self.reject(name, &key, None, r).await?;
            return Ok(Finished::Done);
        }
        let path = self.inner.dir.join(REQ).join(name);
        let kind = RequestKind::of_file_name(name);
        let max = limits::max_bytes(kind);
        // The one way a request is opened, whether an event or a listing found it: no link is
        // followed, a FIFO cannot block, and what was opened is checked, not what the name was.
        let (file, len) = match files::open_request(&path) {
            Ok(files::Opened::File { file, len }) => (file, len),
            Ok(files::Opened::NotRegular(what)) => {
                let key = format!("req:{name}:not-a-file");
                let _claim = self.claim(&key);
                let r = Rejection {
                    kind: xml::RejectKind::Format,
                    field: String::new(),
                    message: format!(
                        "{what}, not a regular file: request files are read only as regular files (a link is moved, never followed)"
                    ),
                    echo: Box::default(),
                };
                self.reject(name, &key, None, r).await?;
                return Ok(Finished::Done);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Finished::Done),
            Err(e) => return Err(io(&path)(e)),
        };
        let too_big = |len: u64| Rejection {
            kind: xml::RejectKind::Format,
            field: String::new(),
            message: format!(
                "the file has {len} bytes; a {} request may have at most {max}",
                kind.map_or("request", RequestKind::as_str)
            ),
            echo: Box::default(),
        };
        let bytes = if len > max {
            None
        } else {
            tokio::task::spawn_blocking(move || files::read_bounded(file, max))
                .await
                .map_err(|e| io(&path)(std::io::Error::other(e)))?
                .map_err(io(&path))?
        };
        let Some(bytes) = bytes else {
            // Refused unread: the journal keeps the name, the size and the reason, not the bytes.
            let key = format!("req:{name}:size-{len}");
            let _claim = self.claim(&key);
            self.reject(name, &key, None, too_big(len)).await?;
            return Ok(Finished::Done);
        };
        let hash = sha256_hex(&bytes);
        let key = request_key(name, &hash);
        let Some(_claim) = self.claim(&key) else {
            // Another worker has the same request (renamed twice?): it answers it.
            return Ok(Finished::Done);
        };
        // Counted (in_hand.rs) before the file is handled, cleared after: a file in hand each time the
        // edge died is quarantined after `MAX_ATTEMPTS`, never crash-looped.
        let in_hand = &self.inner.in_hand;
        let marks_io = |e: std::io::Error| io(in_hand.dir())(e);
        let attempt = in_hand.attempts(&key).saturating_add(1);
        if attempt > limits::MAX_ATTEMPTS {
            tracing::error!(file = %Untrusted(name), attempts = attempt - 1, "mailbox: the edge stopped every time it handled this request file; quarantined to err/");
            let r = Rejection {
                kind: xml::RejectKind::Format,
                field: String::new(),
                message: format!(
                    "the edge stopped {} times while handling this file; it is quarantined so it cannot stop the edge again",
                    attempt - 1
                ),
                echo: Box::default(),
            };
            self.reject(name, &key, Some(&hash), r).await?;
            in_hand.end(&key).map_err(marks_io)?;
            return Ok(Finished::Done);
        }
        in_hand.begin(&key, attempt).map_err(marks_io)?;
        tracing::info!(file = %Untrusted(name), bytes = bytes.len(), attempt, "mailbox: request file read");
        let result = self
            .handle_bytes(name, &key, &hash, kind, &bytes, give_up)
            .await;
        // Finished, or failed without stopping the edge (tried again later as a new attempt 1).
        in_hand.end(&key).map_err(marks_io)?;
        result
    }

    async fn handle_bytes(
        &self,
        name: &str,
        key: &str,
        hash: &str,
        kind: Option<RequestKind>,
        bytes: &[u8],
        give_up: bool,
    ) -> Result<Finished, MailboxError> {
        let key = key.to_string();
        let hash = hash.to_string();
        if let Some(rec) = self.inner.store.get(&key)? {
            if !self.torn(&rec) {
                self.again(name, rec).await?;
                return Ok(Finished::Done);
            }
            tracing::warn!(file = %Untrusted(name), check_id = ?rec.check_id, "mailbox: the recorded check of this request is not in the journal (the edge stopped between the two writes, before any answer); the request is checked again");
        }
        let Some(kind) = kind else {
            let r = Rejection {
                kind: xml::RejectKind::Format,
                field: "file name".into(),
                message: format!(
                    "{} is not a request file name ({}_*.xml, {}_*.xml or {}_*.xml)",
                    name.escape_debug(),
                    codes::SINGLE_PREFIX,
                    codes::BATCH_UPLOAD_PREFIX,
                    codes::BATCH_DOWNLOAD_PREFIX
                ),
                echo: Box::default(),
            };
            self.reject_read(name, &key, Some(&hash), bytes, r).await?;
            return Ok(Finished::Done);
        };
        let (decoded, request) = match xml::read_request_guarded(kind, bytes, &self.inner.facility)
        {
            Ok(r) => r,
            Err(ReadError::Incomplete(why)) if !give_up => {
                tracing::debug!(file = %Untrusted(name), why = %why, "mailbox: file not complete yet");
                return Ok(Finished::Incomplete);
            }
            Err(ReadError::Incomplete(why)) => {
                let r = Rejection {
                    kind: xml::RejectKind::Incomplete,
                    field: String::new(),
                    message: format!(
                        "the file stayed incomplete for {} s: {why}",
                        self.inner.timing.incomplete_timeout.as_secs()
                    ),
                    echo: Box::default(),
                };
                self.reject_read(name, &key, Some(&hash), bytes, r).await?;
                return Ok(Finished::Done);
            }
            Err(ReadError::Rejected(r)) => {
                self.reject_read(name, &key, Some(&hash), bytes, r).await?;
                return Ok(Finished::Done);
            }
        };
        if let Err(r) = request.check_plausible(chrono::Local::now().date_naive()) {
            self.reject_read(name, &key, Some(&hash), bytes, r).await?;
            return Ok(Finished::Done);
        }
        let base = MailboxRecord {
            key: key.clone(),
            kind: RecordKind::Single,
            file: name.to_string(),
            sha256: Some(hash),
            received_at: Utc::now(),
            encoding: decoded.encoding,
            request: None,
            legacy_text: None,
            echo: request.header().echo.clone(),
            check_id: None,
            reception_number: None,
            result_file: xml::result_file_name(name).map(|n| format!("{RES}/{n}")),
            results: Vec::new(),
            written: 0,
            awaiting_final: false,
            reason: None,
            moved_to: None,
        };
        match request {
            OqsRequest::Single { search, .. } => self.single(base, search).await?,
            OqsRequest::BatchUpload { header, searches } => {
                self.batch_upload(base, header.service_date, searches)
                    .await?
            }
            OqsRequest::BatchDownload {
                reception_number, ..
            } => self.batch_download(base, reception_number).await?,
        }
        self.write_result(&key, false).await?;
        self.move_out(&key, name, DONE)?;
        self.inner.stats.answered.fetch_add(1, Ordering::Relaxed);
        Ok(Finished::Done)
    }

    async fn single(
        &self,
        base: MailboxRecord,
        search: xml::SearchInfo,
    ) -> Result<(), MailboxError> {
        let store = &self.inner.store;
        let kept = store::KeptRequest::Single(search.clone());
        let check = self
            .inner
            .gate
            .check_with(search.request, |check| {
                let mut rec = base.clone();
                rec.request = Some(kept);
                rec.check_id = Some(check.check_id.clone());
                rec.results = vec![answer_text(
                    check,
                    &rec.echo,
                    rec.encoding,
                    codes::REFERENCE_INSURANCE_CARD,
                )];
                rec.awaiting_final = check.state == CheckState::Deferred;
                store.put(&rec).map_err(JournalError::from)
            })
            .await?;
        tracing::info!(file = %Untrusted(&base.file), check_id = %check.check_id, validity = check.validity.as_str(), source = ?check.source, "mailbox: check answered");
        Ok(())
    }

    async fn batch_upload(
        &self,
        mut rec: MailboxRecord,
        service_date: chrono::NaiveDate,
        searches: Vec<xml::SearchInfo>,
    ) -> Result<(), MailboxError> {
        let number = self.inner.gate.journal.next_id()?;
        let count = searches.len();
        let consented = searches
            .iter()
            .enumerate()
            .filter(|(_, s)| s.limit_consent)
            .map(|(i, _)| i as u32 + 1)
            .collect();
        rec.request = Some(store::KeptRequest::BatchUpload { consented });
        let batch = BatchRecord {
            reception_number: number.clone(),
            upload_key: rec.key.clone(),
            service_date,
            requests: searches.into_iter().map(|s| s.request).collect(),
            outcomes: None,
            created_at: rec.received_at,
            completed_at: None,
            attempts: 0,
            last_error: None,
        };
        let meta = ResultMeta {
            echo: &rec.echo,
            processed_at: local(rec.received_at),
            reference: codes::REFERENCE_INSURANCE_CARD,
            encoding: rec.encoding,
        };
        let text = xml::render_batch_accepted(&meta, &number, count);
        rec.kind = RecordKind::BatchUpload;
        rec.reception_number = Some(number.clone());
        rec.results = vec![ResultText {
            at: rec.received_at,
            segment: Segment::Done.code().to_string(),
            text,
        }];
        self.inner.store.put_batch(&batch)?;
        self.inner.store.put(&rec)?;
        self.inner.gate.journal.commit().await?;
        self.inner.batch_wake.notify_one();
        tracing::info!(file = %Untrusted(&rec.file), reception_number = %Untrusted(&number), checks = count, "mailbox: batch upload accepted");
        Ok(())
    }

    async fn batch_download(
        &self,
        mut rec: MailboxRecord,
        number: String,
    ) -> Result<(), MailboxError> {
        let meta = ResultMeta {
            echo: &rec.echo,
            processed_at: local(rec.received_at),
            reference: codes::REFERENCE_INSURANCE_CARD,
            encoding: rec.encoding,
        };
        let batch = self.inner.store.get_batch(&number)?;
        let (segment, text) = match &batch {
            None => (
                Segment::Failed,
                xml::render_error(
                    &meta,
                    codes::UNKNOWN_RECEPTION_NUMBER,
                    &format!("ReceptionNumber {number}"),
                ),
            ),
            Some(b) => match &b.outcomes {
                None => {
                    let note = if self.inner.gate.link.state().is_up() {
                        ""
                    } else {
                        "回線断のため照会できていません。回線復旧後に処理します。"
                    };
                    (
                        Segment::Processing,
                        xml::render_batch_processing(&meta, &number, note),
                    )
                }
                Some(outcomes) => {
                    let entries: Vec<_> = b
                        .requests
                        .iter()
                        .cloned()
                        .zip(outcomes.iter().cloned())
                        .collect();
                    (
                        Segment::Done,
                        xml::render_batch_results(&meta, &number, &entries),
                    )
                }
            },
        };
        rec.kind = RecordKind::BatchDownload;
        rec.reception_number = Some(number.clone());
        rec.request = Some(store::KeptRequest::BatchDownload {
            reception_number: number.clone(),
        });
        rec.results = vec![ResultText {
            at: rec.received_at,
            segment: segment.code().to_string(),
            text,
        }];
        self.inner.store.put(&rec)?;
        self.inner.gate.journal.commit().await?;
        tracing::info!(file = %Untrusted(&rec.file), reception_number = %Untrusted(&number), segment = segment.code(), "mailbox: batch download answered");
        Ok(())
    }

    /// A single check's record whose check is not in the journal. The record is written just
    /// before the check record and both are made durable by one commit; when the edge stops
    /// between the two writes after another request's commit took the first one to disk, the
    /// record remains without its check. No answer was given (answers follow the commit), so the
    /// request is checked again rather than answered from the record. A journal that cannot be
    /// read counts as not torn (the record is then used as before).
    fn torn(&self, rec: &MailboxRecord) -> bool {
        match (&rec.kind, rec.check_id.as_deref()) {
            (RecordKind::Single, Some(id)) => {
                matches!(self.inner.gate.journal.get(id), Ok(None))
            }
            _ => false,
        }
    }

    /// A request file whose record exists: found again after a crash before it was moved, or
    /// dropped again. It is answered from the journal; the check is never repeated.
    async fn again(&self, name: &str, rec: MailboxRecord) -> Result<(), MailboxError> {
        if rec.kind == RecordKind::Rejected {
            let reason = rec.reason.clone().unwrap_or_default();
            tracing::warn!(file = %Untrusted(name), "mailbox: a file already rejected came again; moved to err/ again");
            self.move_to_err(&rec.key, name, &format!("(again) {reason}"))?;
            return Ok(());
        }
        let repeated = rec.moved_to.is_some();
        if repeated {
            tracing::info!(file = %Untrusted(name), check_id = ?rec.check_id, "mailbox: the same request file came again; its recorded result is written again, the check is not repeated");
        }
        self.write_result(&rec.key, repeated).await?;
        self.move_out(&rec.key, name, DONE)?;
        Ok(())
    }

    /// Rejects a file that was read: its error result in the encoding it declared.
    async fn reject_read(
        &self,
        name: &str,
        key: &str,
        hash: Option<&str>,
        bytes: &[u8],
        r: Rejection,
    ) -> Result<(), MailboxError> {
        let encoding = xml::decode(bytes).map_or(TextEncoding::Utf8, |d| d.encoding);
        self.reject_as(name, key, hash, encoding, r).await
    }

    /// Rejects a file refused unread (or not parsed): its error result in UTF-8.
    async fn reject(
        &self,
        name: &str,
        key: &str,
        hash: Option<&str>,
        r: Rejection,
    ) -> Result<(), MailboxError> {
        self.reject_as(name, key, hash, TextEncoding::Utf8, r).await
    }

    /// Records a rejected file (its name, hash and reason, never its bytes), writes its error
    /// result if it is named like a request, and moves it to `err/` with its reason file.
    async fn reject_as(
        &self,
        name: &str,
        key: &str,
        hash: Option<&str>,
        encoding: TextEncoding,
        r: Rejection,
    ) -> Result<(), MailboxError> {
        let now = Utc::now();
        let result_file = xml::result_file_name(name).map(|n| format!("{RES}/{n}"));
        let coded = r.kind.coded();
        let reason = r.reason();
        let results = match &result_file {
            Some(_) => {
                let meta = ResultMeta {
                    echo: &r.echo,
                    processed_at: local(now),
                    reference: codes::REFERENCE_INSURANCE_CARD,
                    encoding,
                };
                vec![ResultText {
                    at: now,
                    segment: Segment::Failed.code().to_string(),
                    text: xml::render_error(&meta, coded, &reason),
                }]
            }
            None => Vec::new(),
        };
        let rec = MailboxRecord {
            key: key.to_string(),
            kind: RecordKind::Rejected,
            file: name.to_string(),
            sha256: hash.map(str::to_string),
            received_at: now,
            encoding,
            request: None,
            legacy_text: None,
            echo: (*r.echo).clone(),
            check_id: None,
            reception_number: None,
            result_file,
            results,
            written: 0,
            awaiting_final: false,
            reason: Some(format!("{}: {reason}", coded.code)),
            moved_to: None,
        };
        self.inner.store.put(&rec)?;
        self.inner.gate.journal.commit().await?;
        self.write_result(key, false).await?;
        self.move_to_err(key, name, &format!("{}: {reason}", coded.code))?;
        self.inner.stats.rejected.fetch_add(1, Ordering::Relaxed);
        // The element path and the code only: the message may quote the file's values.
        tracing::warn!(file = %Untrusted(name), code = coded.code, element = %Untrusted(&r.field), "mailbox: request file rejected; moved to err/ with its reason");
        Ok(())
    }

    fn move_out(&self, key: &str, name: &str, folder: &str) -> Result<String, MailboxError> {
        let from = self.inner.dir.join(REQ).join(name);
        let to_dir = self.inner.dir.join(folder);
        let got = match files::move_into(&from, &to_dir, name) {
            Ok(n) => n,
            // Gone already (moved by someone else): nothing to move.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(String::new()),
            Err(e) => return Err(io(&from)(e)),
        };
        let moved = format!("{folder}/{got}");
        self.inner
            .store
            .update(key, |r| r.moved_to = Some(moved.clone()))?;
        Ok(got)
    }

    fn move_to_err(&self, key: &str, name: &str, reason: &str) -> Result<(), MailboxError> {
        let err = self.inner.dir.join(ERR);
        let target = files::free_name(&err, name);
        let text = format!(
            "file: {}\nrejected at: {}\nreason: {reason}\nresult: {}\n",
            name.escape_debug(),
            Utc::now().to_rfc3339(),
            match xml::result_file_name(name) {
                Some(n) => format!("{RES}/{n} (an error result, SegmentOfResult 9)"),
                None => "none (the name is not a request file's)".into(),
            }
        );
        let reason_name = files::reason_file_name(&target);
        files::write_atomic(&err, &reason_name, text.as_bytes())
            .map_err(io(&err.join(&reason_name)))?;
        let from = self.inner.dir.join(REQ).join(name);
        match std::fs::rename(&from, err.join(&target)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io(&from)(e)),
        }
        let moved = format!("{ERR}/{target}");
        self.inner
            .store
            .update(key, |r| r.moved_to = Some(moved.clone()))?;
        Ok(())
    }

    /// Writes the record's latest result if it is not yet on disk (or `force`: again).
    async fn write_result(&self, key: &str, force: bool) -> Result<(), MailboxError> {
        let _g = self.stripe(key).lock().await;
        let Some(rec) = self.inner.store.get(key)? else {
            return Ok(());
        };
        let (Some(file), Some(last)) = (rec.result_file.as_deref(), rec.results.last()) else {
            return Ok(());
        };
        if rec.written >= rec.results.len() && !force {
            return Ok(());
        }
        let n = rec.results.len();
        let (folder, name) = file.split_once('/').unwrap_or((RES, file));
        let dir = self.inner.dir.join(folder);
        let bytes = xml::encode(&last.text, rec.encoding);
        let name = name.to_string();
        let path = dir.join(&name);
        tokio::task::spawn_blocking(move || files::write_atomic(&dir, &name, &bytes))
            .await
            .map_err(|e| io(&path)(std::io::Error::other(e)))?
            .map_err(io(&path))?;
        self.inner
            .store
            .update(key, |r| r.written = r.written.max(n))?;
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Card checks (face/)

    /// Records the face file of a card check; call inside [`Gate::check_with`] so it is durable
    /// with the check. Returns its key, for [`Mailbox::write_face`].
    pub fn put_face(&self, check: &CheckRecord) -> Result<String, JournalError> {
        let name = codes::face_file_name(local(check.created_at), &check.check_id);
        let key = format!("face:{name}");
        let echo = Echo {
            confirmation_date: check.request.service_date.format("%Y%m%d").to_string(),
            facility: self.inner.facility.clone(),
            arbitrary_id: String::new(),
        };
        let result = answer_text(check, &echo, TextEncoding::Utf8, codes::REFERENCE_CARD);
        let rec = MailboxRecord {
            key: key.clone(),
            kind: RecordKind::Face,
            file: name.clone(),
            sha256: None,
            received_at: check.created_at,
            encoding: TextEncoding::Utf8,
            request: None,
            legacy_text: None,
            echo,
            check_id: Some(check.check_id.clone()),
            reception_number: None,
            result_file: Some(format!("{}/{name}", files::FACE)),
            results: vec![result],
            written: 0,
            awaiting_final: check.state == CheckState::Deferred,
            reason: None,
            moved_to: None,
        };
        // Claimed until `write_face` (or `release`), so the finalizer leaves it alone meanwhile.
        self.inner
            .claimed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone());
        self.inner.store.put(&rec)?;
        Ok(key)
    }

    /// Gives up the claim of [`Mailbox::put_face`] when the check failed after it (the finalizer
    /// then writes the face file if the record is there).
    pub fn release(&self, key: &str) {
        self.inner
            .claimed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }

    /// Writes a face file recorded by [`Mailbox::put_face`] (after the check is durable). A failure
    /// is logged; the finalizer tries again.
    pub async fn write_face(&self, key: &str) {
        let r = self.write_result(key, false).await;
        self.release(key);
        match r {
            Ok(()) => {
                self.inner.stats.faces.fetch_add(1, Ordering::Relaxed);
                tracing::info!(file = %Untrusted(key.trim_start_matches("face:")), "mailbox: card check written to face/");
            }
            Err(e) => {
                tracing::error!(file = %Untrusted(key), error = %Untrusted(&e.to_string()), "mailbox: face file not written; tried again")
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Finals, and results not yet written

    async fn finalize_loop(self, mut stop: tokio_watch::Receiver<bool>) {
        loop {
            self.finish_open().await;
            tokio::select! {
                _ = stop.changed() => return,
                _ = self.inner.gate.checks_completed.notified() => {}
                _ = tokio::time::sleep(RETRY_EVERY) => {}
            }
        }
    }

    /// Final results of completed deferred checks, and results not yet on disk (after a crash or
    /// a failed write), are written.
    pub async fn finish_open(&self) {
        let keys = match self.inner.store.open_keys() {
            Ok(k) => k,
            Err(e) => {
                tracing::error!(error = %e, "mailbox: cannot read the open records");
                return;
            }
        };
        let mut finals = Vec::new();
        let mut unwritten = Vec::new();
        for key in keys {
            if self.is_claimed(&key) {
                continue;
            }
            let rec = match self.inner.store.get(&key) {
                Ok(Some(r)) => r,
                Ok(None) => continue,
                Err(e) => {
                    tracing::error!(key = %Untrusted(&key), error = %Untrusted(&e.to_string()), "mailbox: record unreadable");
                    continue;
                }
            };
            if self.torn(&rec) {
                // Its request file is still in req/: checked again when it is read.
                continue;
            }
            if rec.written < rec.results.len() {
                unwritten.push(key.clone());
            }
            if !rec.awaiting_final {
                continue;
            }
            let Some(check_id) = rec.check_id.as_deref() else {
                continue;
            };
            let check = match self.inner.gate.journal.get(check_id) {
                Ok(Some(c)) => c,
                _ => continue,
            };
            let Some(fin) = &check.final_outcome else {
                continue;
            };
            let reference = if rec.kind == RecordKind::Face {
                codes::REFERENCE_CARD
            } else {
                codes::REFERENCE_INSURANCE_CARD
            };
            let text = final_text(&check, fin, &rec.echo, rec.encoding, reference);
            let updated = self.inner.store.update(&key, |r| {
                if r.awaiting_final {
                    r.results.push(text);
                    r.awaiting_final = false;
                }
            });
            match updated {
                Ok(_) => finals.push((key.clone(), rec.file.clone(), check.check_id.clone())),
                Err(e) => {
                    tracing::error!(key = %Untrusted(&key), error = %Untrusted(&e.to_string()), "mailbox: final result not recorded")
                }
            }
        }
        if !finals.is_empty()
            && let Err(e) = self.inner.gate.journal.commit().await
        {
            tracing::error!(error = %e, "mailbox: final results not durable; not written");
            return;
        }
        for (key, file, check_id) in &finals {
            match self.write_result(key, false).await {
                Ok(()) => {
                    self.inner.stats.finals.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(file = %Untrusted(file), check_id = %check_id, "mailbox: final result written (the link returned)");
                }
                Err(e) => {
                    tracing::error!(file = %Untrusted(file), error = %Untrusted(&e.to_string()), "mailbox: final result not written; tried again")
                }
            }
        }
        for key in unwritten
            .iter()
            .filter(|k| !finals.iter().any(|f| &f.0 == *k))
        {
            if let Err(e) = self.write_result(key, false).await {
                tracing::error!(key = %Untrusted(key), error = %Untrusted(&e.to_string()), "mailbox: result not written; tried again");
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Batches

    async fn batch_loop(self, mut stop: tokio_watch::Receiver<bool>) {
        let mut link = self.inner.gate.link.subscribe();
        loop {
            if self.inner.gate.link.state().is_up() {
                self.run_batches().await;
            }
            tokio::select! {
                _ = stop.changed() => return,
                _ = self.inner.batch_wake.notified() => {}
                r = link.changed() => if r.is_err() { return },
                _ = tokio::time::sleep(RETRY_EVERY) => {}
            }
        }
    }

    /// Answers the open batch uploads through the reconciler's batch inquiry, oldest first; stops
    /// at the first failure (the link is probably down; the next pass tries again).
    pub async fn run_batches(&self) {
        let numbers = match self.inner.store.open_batches() {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(error = %e, "mailbox: cannot read the open batches");
                return;
            }
        };
        let gate = &self.inner.gate;
        for number in numbers {
            let Ok(Some(mut b)) = self.inner.store.get_batch(&number) else {
                continue;
            };
            let mut outcomes = Vec::with_capacity(b.requests.len());
            let mut failed = None;
            for chunk in b.requests.chunks(MAX_BATCH) {
                match gate
                    .link
                    .call(Request::Batch(chunk.to_vec()), BATCH_TIMEOUT)
                    .await
                {
                    Ok(Response::Batch(o)) if o.len() == chunk.len() => outcomes.extend(o),
                    Ok(Response::Error { code, message }) => {
                        failed = Some(format!("reconciler error {code}: {message}"));
                        break;
                    }
                    Ok(_) => {
                        failed =
                            Some("the reconciler answered the batch with something else".into());
                        break;
                    }
                    Err(e) => {
                        failed = Some(e.to_string());
                        break;
                    }
                }
            }
            b.attempts = b.attempts.saturating_add(1);
            if let Some(e) = failed {
                tracing::info!(reception_number = %Untrusted(&number), error = %e, "mailbox: batch inquiry not answered yet; tried again later");
                b.last_error = Some(e);
                if let Err(e) = self.inner.store.put_batch(&b) {
                    tracing::error!(error = %e, "mailbox: batch state not recorded");
                }
                return;
            }
            let now = Utc::now();
            for o in &outcomes {
                if let Err(e) = gate.replica.learn(&o.qualifications, now) {
                    tracing::error!(error = %e, "mailbox: replica not updated from a batch");
                }
            }
            b.outcomes = Some(outcomes);
            b.completed_at = Some(now);
            b.last_error = None;
            let stored = self.inner.store.put_batch(&b);
            match (stored, gate.journal.commit().await) {
                (Ok(()), Ok(())) => {
                    tracing::info!(reception_number = %Untrusted(&number), checks = b.requests.len(), "mailbox: batch inquiry answered; ready for download")
                }
                (Err(e), _) => tracing::error!(error = %e, "mailbox: batch answers not recorded"),
                (_, Err(e)) => tracing::error!(error = %e, "mailbox: batch answers not durable"),
            }
        }
    }
}
