//! Which request files are in hand, so that a file the edge died on is quarantined after a few
//! attempts instead of crash-looping the edge (issue #14 item 1).
//!
//! One small file, `DATA/mailbox-in-hand/slots`, of fixed-size slots: a slot holds how many times
//! the handling of one request (named by the SHA-256 of its record key) began; it is written when
//! the handling begins and zeroed when it ends either way. At start the slots still set are the
//! requests that were in hand when the edge died.
//!
//! Written in place and without fsync on purpose: the count must survive the *process* dying (a
//! stack overflow, an abort, the OOM killer), which the kernel's page cache does, and a count lost to
//! a power cut costs one more attempt at most. An fsync (a journal commit) per request file cost the
//! mailbox about a millisecond per file, and a marker file created and removed per request cost its
//! burst throughput in file-system metadata (BENCHMARKS.md); rewriting a slot costs neither. It
//! never holds what a request says.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Bytes per slot: `count` (decimal), a space, 64 hex digits, a newline, zero padding.
const SLOT: usize = 96;

#[derive(Debug, Default)]
struct Slots {
    /// Key hash → (slot, count) of requests in hand when the edge last died.
    carried: HashMap<String, (u64, u32)>,
    /// Key hash → slot of requests in hand now.
    in_use: HashMap<String, u64>,
    free: Vec<u64>,
    len: u64,
}

/// The in-hand slots of the mailbox.
#[derive(Debug)]
pub(crate) struct InHand {
    dir: PathBuf,
    file: File,
    slots: Mutex<Slots>,
}

fn parse(slot: &[u8]) -> Option<(String, u32)> {
    let text = std::str::from_utf8(slot).ok()?;
    let line = text.split('\n').next()?;
    let (count, hash) = line.split_once(' ')?;
    let count = count.parse().ok()?;
    (hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| (hash.to_string(), count))
}

impl InHand {
    /// Opens (creates: folder 0700, file 0600) the slots and reads what the last run left in hand.
    pub(crate) fn open(dir: &Path) -> io::Result<InHand> {
        onshi_sync::modes::create_private_dir(dir)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(onshi_sync::modes::PRIVATE_FILE)
            .custom_flags(libc::O_NOFOLLOW)
            .open(dir.join("slots"))?;
        let bytes = std::fs::read(dir.join("slots"))?;
        let mut slots = Slots::default();
        for (i, chunk) in bytes.chunks(SLOT).enumerate() {
            let i = i as u64;
            match parse(chunk) {
                Some((hash, count)) => {
                    slots.carried.insert(hash, (i, count));
                }
                None => slots.free.push(i),
            }
            slots.len = i + 1;
        }
        slots.free.reverse();
        Ok(InHand {
            dir: dir.to_path_buf(),
            file,
            slots: Mutex::new(slots),
        })
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn hash(key: &str) -> String {
        super::sha256_hex(key.as_bytes())
    }

    fn write_slot(&self, slot: u64, text: &str) -> io::Result<()> {
        let mut buf = [0u8; SLOT];
        buf[..text.len()].copy_from_slice(text.as_bytes());
        self.file.write_all_at(&buf, slot * SLOT as u64)
    }

    /// How many times the handling of `key` began in earlier runs and did not end.
    pub(crate) fn attempts(&self, key: &str) -> u32 {
        self.lock()
            .carried
            .get(&Self::hash(key))
            .map_or(0, |&(_, n)| n)
    }

    /// The handling of `key` begins for the `n`th time: written through to the kernel before the
    /// file is read further.
    pub(crate) fn begin(&self, key: &str, n: u32) -> io::Result<()> {
        let hash = Self::hash(key);
        let slot = {
            let mut s = self.lock();
            let slot = match s.carried.remove(&hash) {
                Some((slot, _)) => slot,
                None => match s.free.pop() {
                    Some(slot) => slot,
                    None => {
                        s.len += 1;
                        s.len - 1
                    }
                },
            };
            s.in_use.insert(hash.clone(), slot);
            slot
        };
        self.write_slot(slot, &format!("{n} {hash}\n"))
    }

    /// The handling of `key` ended (answered, refused, or failed without stopping the edge).
    pub(crate) fn end(&self, key: &str) -> io::Result<()> {
        let hash = Self::hash(key);
        let slot = {
            let mut s = self.lock();
            let slot = s
                .in_use
                .remove(&hash)
                .or_else(|| s.carried.remove(&hash).map(|(slot, _)| slot));
            if let Some(slot) = slot {
                s.free.push(slot);
            }
            slot
        };
        match slot {
            Some(slot) => self.write_slot(slot, ""),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_begun_handling_counts_across_restarts_until_it_ends() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("mailbox-in-hand");
        let key = "req:OQSsiquc01req_a.xml:0123";
        let other = "req:OQSsiquc01req_b.xml:4567";
        let marks = InHand::open(&dir).unwrap();
        assert_eq!(marks.attempts(key), 0);
        marks.begin(key, 1).unwrap();
        marks.begin(other, 1).unwrap();
        marks.end(other).unwrap();
        drop(marks); // the edge dies with `key` in hand
        let again = InHand::open(&dir).unwrap();
        assert_eq!(again.attempts(key), 1);
        assert_eq!(again.attempts(other), 0);
        again.begin(key, 2).unwrap();
        drop(again); // and dies again
        let third = InHand::open(&dir).unwrap();
        assert_eq!(third.attempts(key), 2);
        // Handled at last (or quarantined): nothing is carried into the next run.
        third.end(key).unwrap();
        drop(third);
        let fourth = InHand::open(&dir).unwrap();
        assert_eq!(fourth.attempts(key), 0);
        // Slots are reused: the file does not grow with every request.
        for i in 0..100 {
            let k = format!("req:f{i}.xml:00");
            fourth.begin(&k, 1).unwrap();
            fourth.end(&k).unwrap();
        }
        let len = std::fs::metadata(dir.join("slots")).unwrap().len();
        assert!(len <= 2 * SLOT as u64, "{len}");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let mode = std::fs::metadata(dir.join("slots"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn torn_or_foreign_slots_are_free() {
        assert_eq!(parse(b"2 zz\n"), None);
        assert_eq!(parse(&[0u8; SLOT]), None);
        let h = "a".repeat(64);
        assert_eq!(parse(format!("3 {h}\n").as_bytes()), Some((h, 3)));
    }
}
