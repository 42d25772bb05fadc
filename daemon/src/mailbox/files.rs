//! The mailbox's file operations: a result written atomically (a hidden temporary file, fsync,
//! rename, fsync of the folder), and a file moved without ever replacing another (a taken name
//! gets `.1`, `.2`, … before its extension). Nothing here deletes a file.

use std::io::Write;
use std::path::{Path, PathBuf};

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

/// Writes `bytes` to `dir/name` so that a reader sees either the old file or the whole new one:
/// `dir/.name.tmp` is written and fsynced, renamed over `dir/name`, and the folder fsynced.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(name))?;
    fsync_dir(dir)
}

/// `name` if free in `dir`, else `stem.N.ext` with the first free N.
pub fn free_name(dir: &Path, name: &str) -> String {
    if !dir.join(name).exists() {
        return name.to_string();
    }
    let (stem, ext) = match name.rsplit_once('.') {
        Some((s, e)) if !s.is_empty() => (s, format!(".{e}")),
        _ => (name, String::new()),
    };
    (1u32..)
        .map(|n| format!("{stem}.{n}{ext}"))
        .find(|n| !dir.join(n).exists())
        .unwrap_or_else(|| name.to_string())
}

/// Moves `from` into `to_dir` under a free name (only the mailbox writes there, one worker per
/// name, so "free" stays free until the rename). Returns the name it got.
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
}
