//! The mailbox's file operations, on a share other machines write: treat every name and link in it
//! as hostile. A request is opened without following links and without blocking (a FIFO), and the
//! opened descriptor is checked to be a regular file ([`open_request`]); a result is written
//! atomically through a temporary file created exclusively, without following links, under an
//! unpredictable name in the same folder ([`write_atomic`]); a file is moved without ever
//! replacing another (a taken name gets `.1`, `.2`, … before its extension). Nothing here deletes
//! a file, and nothing here follows a link found in the share.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::limits::NAME_MAX;

/// The mailbox's folders.
pub const REQ: &str = "req";
pub const RES: &str = "res";
pub const FACE: &str = "face";
pub const ERR: &str = "err";
/// Answered requests are moved here (never deleted).
pub const DONE: &str = "done";

pub fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// What opening a request found.
#[derive(Debug)]
pub enum Opened {
    /// A regular file, opened (the descriptor checked, so nothing can swap it after the check).
    File { file: File, len: u64 },
    /// Something else named like a request: what it is (a symbolic link, a FIFO, a directory, …).
    NotRegular(&'static str),
}

/// Opens `path` for reading without following a link (`O_NOFOLLOW`) and without blocking on a FIFO
/// (`O_NONBLOCK`), then looks at what was opened (`fstat` of the descriptor, not of the name: no
/// check-then-open race). `NotFound` if it is gone.
pub fn open_request(path: &Path) -> std::io::Result<Opened> {
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path);
    let file = match opened {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Ok(Opened::NotRegular("a symbolic link"));
        }
        // A socket (or a device without a driver) cannot be opened.
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
            return Ok(Opened::NotRegular("a socket or a device"));
        }
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    let t = meta.file_type();
    let what = if t.is_file() {
        return Ok(Opened::File {
            file,
            len: meta.len(),
        });
    } else if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() || t.is_char_device() {
        "a device"
    } else {
        "not a regular file"
    };
    Ok(Opened::NotRegular(what))
}

/// Reads at most `max` bytes of `file`; `Ok(None)` if it holds more (it grew after the check).
pub fn read_bounded(file: File, max: u64) -> std::io::Result<Option<Vec<u8>>> {
    let mut bytes = Vec::new();
    file.take(max + 1).read_to_end(&mut bytes)?;
    Ok((bytes.len() as u64 <= max).then_some(bytes))
}

/// A temporary name nobody can guess: `.onshi-<16 random hex digits>.tmp` (its length does not
/// depend on the result's name, so a long name cannot make it too long).
fn temp_name() -> String {
    format!(".onshi-{:016x}.tmp", rand::random::<u64>())
}

/// Writes `bytes` to `dir/name` so that a reader sees either the old file or the whole new one: a
/// temporary file is created in `dir` exclusively and without following links
/// (`O_CREAT|O_EXCL|O_NOFOLLOW`, an unpredictable name: a link planted in the share is never
/// written through), written and fsynced, renamed over `dir/name` (a rename replaces a link at
/// `name`, never its target), and the folder fsynced.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let (tmp, mut f) = loop {
        let tmp = dir.join(temp_name());
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
        {
            Ok(f) => break (tmp, f),
            // Someone has that name (a guess, or a leftover): take another.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    };
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, dir.join(name))?;
    fsync_dir(dir)
}

/// Whether `dir/name` is taken by anything, a dangling link included (never followed).
fn taken(dir: &Path, name: &str) -> bool {
    std::fs::symlink_metadata(dir.join(name)).is_ok()
}

/// `stem` cut (at a character boundary) so that `stem + tail` fits in [`NAME_MAX`] bytes.
fn fit(stem: &str, tail: &str) -> String {
    let room = NAME_MAX.saturating_sub(tail.len());
    let mut cut = stem.len().min(room);
    while !stem.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{tail}", &stem[..cut])
}

/// `name` if free in `dir`, else `stem.N.ext` with the first free N (the stem shortened if that
/// would exceed [`NAME_MAX`]).
pub fn free_name(dir: &Path, name: &str) -> String {
    if !taken(dir, name) {
        return name.to_string();
    }
    let (stem, ext) = match name.rsplit_once('.') {
        Some((s, e)) if !s.is_empty() => (s, format!(".{e}")),
        _ => (name, String::new()),
    };
    (1u32..)
        .map(|n| fit(stem, &format!(".{n}{ext}")))
        .find(|n| !taken(dir, n))
        .unwrap_or_else(|| name.to_string())
}

/// The name of the reason file of `name` in `err/`: `<name>.reason.txt`, or, when that would exceed
/// [`NAME_MAX`], the name cut and marked with the first 8 hex digits of its SHA-256
/// (`<cut>~<hash>.reason.txt`); the reason text names the whole file either way.
pub fn reason_file_name(name: &str) -> String {
    let plain = format!("{name}.reason.txt");
    if plain.len() <= NAME_MAX {
        return plain;
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, name.as_bytes());
    let hash: String = digest.as_ref()[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    fit(name, &format!("~{hash}.reason.txt"))
}

/// Moves `from` into `to_dir` under a free name (only the mailbox writes there, one worker per
/// name, so "free" stays free until the rename; a link is moved as a link). Returns the name it got.
pub fn move_into(from: &Path, to_dir: &Path, name: &str) -> std::io::Result<String> {
    let target = free_name(to_dir, name);
    std::fs::rename(from, to_dir.join(&target))?;
    Ok(target)
}

/// Creates the mailbox's folders.
pub fn create_layout(root: &Path) -> std::io::Result<()> {
    for d in [REQ, RES, FACE, ERR, DONE] {
        std::fs::create_dir_all(root.join(d))?;
    }
    Ok(())
}

pub fn path(root: &Path, folder: &str, name: &str) -> PathBuf {
    root.join(folder).join(name)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn moves_never_replace_and_writes_are_whole() {
        let d = tempfile::tempdir().unwrap();
        create_layout(d.path()).unwrap();
        let req = d.path().join(REQ);
        let done = d.path().join(DONE);
        for i in 0..3 {
            std::fs::write(req.join("a.xml"), format!("{i}")).unwrap();
            move_into(&req.join("a.xml"), &done, "a.xml").unwrap();
        }
        let mut names: Vec<String> = std::fs::read_dir(&done)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["a.1.xml", "a.2.xml", "a.xml"]);
        assert_eq!(std::fs::read_to_string(done.join("a.2.xml")).unwrap(), "2");
        let res = d.path().join(RES);
        write_atomic(&res, "r.xml", b"one").unwrap();
        write_atomic(&res, "r.xml", b"two").unwrap();
        assert_eq!(std::fs::read(res.join("r.xml")).unwrap(), b"two");
        assert_eq!(
            std::fs::read_dir(&res).unwrap().count(),
            1,
            "no temporary left"
        );
    }

    #[test]
    fn long_names_get_names_that_fit_and_links_are_never_followed() {
        let d = tempfile::tempdir().unwrap();
        create_layout(d.path()).unwrap();
        let err = d.path().join(ERR);
        let long = format!("{}.xml", "あ".repeat(83)); // 253 bytes
        assert_eq!(long.len(), 253);
        let r = reason_file_name(&long);
        assert!(r.len() <= NAME_MAX && r.ends_with(".reason.txt"), "{r}");
        assert_ne!(reason_file_name(&format!("{long}x")), r, "distinct names");
        std::fs::write(err.join(&long), "").unwrap();
        let free = free_name(&err, &long);
        assert!(free.len() <= NAME_MAX && free.ends_with(".1.xml"), "{free}");
        // A dangling link counts as taken; opening a link, a FIFO or a folder finds what it is.
        let victim = d.path().join("victim");
        std::os::unix::fs::symlink(&victim, err.join("a.xml")).unwrap();
        assert_eq!(free_name(&err, "a.xml"), "a.1.xml");
        std::fs::write(&victim, "secret").unwrap();
        assert!(matches!(
            open_request(&err.join("a.xml")).unwrap(),
            Opened::NotRegular("a symbolic link")
        ));
        assert!(matches!(
            open_request(&err).unwrap(),
            Opened::NotRegular("a directory")
        ));
        write_atomic(&err, "a.xml", b"result").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"secret");
        assert_eq!(std::fs::read(err.join("a.xml")).unwrap(), b"result");
    }
}
