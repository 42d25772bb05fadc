//! Which request files are in hand, so that a file the edge died on is quarantined after a few
//! attempts instead of crash-looping the edge (issue #14 item 1). One small marker file per request
//! (named by the SHA-256 of its record key) in a private folder of the data directory, holding how
//! many times its handling began; removed once the handling ends either way.
//!
//! The markers are written without fsync on purpose: they must survive the *process* dying (a
//! stack overflow, an abort, the OOM killer), which the kernel's page cache does, and a marker lost
//! to a power cut costs one more attempt at most. An fsync per request file here cost the mailbox
//! about a millisecond per file (BENCHMARKS.md). It never holds what a request says.

use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The folder of markers: `DATA/mailbox-in-hand`.
#[derive(Debug, Clone)]
pub(crate) struct InHand {
    dir: PathBuf,
}

impl InHand {
    /// Opens (creates, mode 0700) the marker folder.
    pub(crate) fn open(dir: &Path) -> io::Result<InHand> {
        onshi_sync::modes::create_private_dir(dir)?;
        Ok(InHand {
            dir: dir.to_path_buf(),
        })
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(super::sha256_hex(key.as_bytes()))
    }

    /// How many times the handling of `key` began and did not end (0: never, or it ended).
    pub(crate) fn attempts(&self, key: &str) -> io::Result<u32> {
        let mut text = String::new();
        match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(self.path(key))
        {
            Ok(mut f) => {
                f.read_to_string(&mut text)?;
                // A torn or unreadable marker still says the handling began at least once.
                Ok(text
                    .lines()
                    .next()
                    .and_then(|l| l.trim().parse().ok())
                    .unwrap_or(1))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// The handling of `key` begins for the `n`th time: written through to the kernel before the
    /// file is read further.
    pub(crate) fn begin(&self, key: &str, n: u32) -> io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(onshi_sync::modes::PRIVATE_FILE)
            .custom_flags(libc::O_NOFOLLOW)
            .open(self.path(key))?;
        f.write_all(format!("{n}\n{key}\n").as_bytes())
    }

    /// The handling of `key` ended (answered, refused, or failed without stopping the edge).
    pub(crate) fn end(&self, key: &str) -> io::Result<()> {
        match std::fs::remove_file(self.path(key)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_begun_handling_counts_until_it_ends_and_survives_a_reopen() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("mailbox-in-hand");
        let marks = InHand::open(&dir).unwrap();
        let key = "req:OQSsiquc01req_a.xml:0123";
        assert_eq!(marks.attempts(key).unwrap(), 0);
        marks.begin(key, 1).unwrap();
        marks.begin(key, 2).unwrap();
        // What a restarted edge sees.
        let again = InHand::open(&dir).unwrap();
        assert_eq!(again.attempts(key).unwrap(), 2);
        assert_eq!(again.attempts("req:other.xml:4567").unwrap(), 0);
        again.end(key).unwrap();
        again.end(key).unwrap();
        assert_eq!(marks.attempts(key).unwrap(), 0);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }
}
