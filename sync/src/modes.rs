//! The file-mode policy of both daemons, in one place. What a daemon creates for itself (its data
//! directory, the store's files, keys it generates) is private to the service user: directories
//! 0700, files 0600, set explicitly after creation so the umask never decides. Group access
//! (0750/0640, group `onshi`) is granted only by the package and by `enroll` for what root owns and
//! the service reads; nothing is ever accessible to "other". The mailbox share is the exception:
//! its modes are the share's, set by IT staff for Samba, and the edge never changes them.
//!
//! Also the check of that policy that `check-config` prints. Must never loosen a mode.

use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

/// Directories a daemon creates for itself.
pub const PRIVATE_DIR: u32 = 0o700;
/// Files a daemon creates for itself.
pub const PRIVATE_FILE: u32 = 0o600;

/// Creates `dir` and any missing parent with mode 0700 (umask-independent), durably (each new
/// entry's parent fsynced). An existing directory keeps its mode: IT staff or the package may have
/// chosen 0750.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    for p in dir.ancestors() {
        if p.as_os_str().is_empty() || p.exists() {
            break;
        }
        missing.push(p.to_path_buf());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR)
        .create(dir)?;
    // The umask may have removed bits, never added them; set the exact mode on what we made.
    for p in &missing {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(PRIVATE_DIR))?;
    }
    // A new directory's entry is in its parent: until the parent is fsynced a power cut may take
    // the directory, and everything later made durable inside it, away (POSIX; the power-loss
    // test's file system shows it: tests/tests/power_loss.rs).
    for p in &missing {
        let parent = match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

/// Takes group and other access away from a file a daemon created (if it exists).
pub fn restrict_file(path: &Path) -> io::Result<()> {
    restrict(path, PRIVATE_FILE)
}

/// Takes group and other access away from a directory a daemon created (if it exists).
pub fn restrict_dir(path: &Path) -> io::Result<()> {
    restrict(path, PRIVATE_DIR)
}

fn restrict(path: &Path, mode: u32) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.permissions().mode() & 0o7777 != mode && !m.file_type().is_symlink() => {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        }
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// What `check-config` says about `path` (a private key or a data directory, `what` names it):
/// `Some(warning)` when any user of the machine may read it (its "other" bits are set).
pub fn exposure_warning(what: &str, path: &Path) -> Option<String> {
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o7777;
    (mode & 0o007 != 0).then(|| {
        let fix = if std::fs::metadata(path).is_ok_and(|m| m.is_dir()) {
            "0700 (or 0750 for the onshi group)"
        } else {
            "0600 (or 0640 for the onshi group)"
        };
        format!(
            "warning: {what} {} has mode {mode:04o}: every user of this machine can read it; chmod it to {fix}",
            path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_dirs_are_private_whatever_the_umask_and_exposure_is_reported() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("a/b/c");
        create_private_dir(&d).unwrap();
        for p in [t.path().join("a"), t.path().join("a/b"), d.clone()] {
            let m = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(m, 0o700, "{}", p.display());
        }
        assert_eq!(exposure_warning("data directory", &d), None);
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        let w = exposure_warning("data directory", &d).unwrap();
        assert!(w.contains("0755") && w.contains("data directory"), "{w}");
        let f = d.join("k.key");
        std::fs::write(&f, "x").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(
            exposure_warning("private key", &f)
                .unwrap()
                .contains("0644")
        );
        restrict_file(&f).unwrap();
        assert_eq!(exposure_warning("private key", &f), None);
    }
}
