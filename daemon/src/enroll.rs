//! `onshi-edge enroll`: places the facility's certificate, key and the deployment's CA (as the
//! centre handed them over) into the edge's PKI directory, after checking them: the key belongs to
//! the certificate, the certificate chains to the CA and names a facility (the one configured, if
//! any). Files get safe modes (key 0640, certificates 0644, the directory 0750), group `onshi` when
//! that group exists, and `facility` and `pki` are written into the configuration file if one is
//! given.
//!
//! Must never: install a file that failed a check; replace a different certificate, key or CA
//! already in place without `--replace`; leave a half-written file (each is written to a temporary
//! name, fsynced, then renamed).

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use onshi_model::FacilityCode;
use onshi_sync::pki::{self, FacilityFiles};

use crate::config::EdgeSettings;

/// What to enrol.
#[derive(Debug, Clone)]
pub struct EnrollRequest {
    /// The edge's PKI directory (created if missing).
    pub pki: PathBuf,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The facility the certificate must name (else the configuration's, else any).
    pub facility: Option<FacilityCode>,
    /// The edge's configuration file: `facility` and `pki` are set in it.
    pub config: Option<PathBuf>,
    /// The group that may read the key (the service's group).
    pub group: String,
    /// Replace different files already in place (a renewed certificate).
    pub replace: bool,
}

/// What was done.
#[derive(Debug)]
pub struct EnrollReport {
    pub files: FacilityFiles,
    /// Each installed file and whether it was new, replaced or unchanged.
    pub installed: Vec<(PathBuf, &'static str)>,
    /// The group given read access, if it exists.
    pub group: Option<u32>,
    /// Lines for IT staff (a missing group, a changed configuration).
    pub notes: Vec<String>,
}

/// Why enrolment stopped (nothing is half-installed).
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error("{0}")]
    Files(#[from] pki::PkiError),
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error(
        "{path} already exists with other contents; re-run with --replace to install the new file (e.g. a renewed certificate)"
    )]
    Exists { path: PathBuf },
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> EnrollError + '_ {
    move |e| EnrollError::File {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// The gid of `group` from /etc/group, if it exists.
pub fn group_id(group: &str) -> Option<u32> {
    let text = std::fs::read_to_string("/etc/group").ok()?;
    text.lines().find_map(|l| {
        let mut parts = l.split(':');
        (parts.next()? == group)
            .then(|| parts.nth(1)?.parse().ok())
            .flatten()
    })
}

/// Checks the files, installs them, and updates the configuration.
pub fn enroll(req: &EnrollRequest) -> Result<EnrollReport, EnrollError> {
    let mut notes = Vec::new();
    let configured = match &req.config {
        Some(path) => EdgeSettings::from_file(path)
            .map_err(|e| EnrollError::File {
                path: path.clone(),
                reason: e.message,
            })?
            .facility
            .map(|f| {
                FacilityCode::parse(&f).map_err(|e| EnrollError::File {
                    path: path.clone(),
                    reason: format!("facility: {}", e.message),
                })
            })
            .transpose()?,
        None => None,
    };
    // A facility given on the command line is the one wanted; the configured one (often the
    // example's placeholder) is then overwritten, and said so.
    let expected = req.facility.clone();
    let files = pki::verify_facility_files(&req.ca, &req.cert, &req.key, expected.as_ref())?;
    if expected.is_none()
        && let Some(c) = &configured
        && c != &files.facility
    {
        notes.push(format!(
            "the configuration named facility {c}; it now names {} (the certificate's)",
            files.facility
        ));
    }

    let gid = group_id(&req.group);
    if gid.is_none() {
        notes.push(format!(
            "group {} does not exist (install the onshi package first): the key is readable by its owner only",
            req.group
        ));
    }
    std::fs::create_dir_all(&req.pki).map_err(io_err(&req.pki))?;
    set_mode(&req.pki, 0o750, gid, &mut notes)?;

    let targets = [
        (req.ca.clone(), req.pki.join(pki::CA_CERT_FILE), 0o644),
        (
            req.cert.clone(),
            req.pki.join(pki::facility_cert_file(&files.facility)),
            0o644,
        ),
        (
            req.key.clone(),
            req.pki.join(pki::facility_key_file(&files.facility)),
            0o640,
        ),
    ];
    // Every target is checked before anything is written, so a refusal changes nothing.
    let mut contents = Vec::new();
    for (from, to, _) in &targets {
        let bytes = std::fs::read(from).map_err(io_err(from))?;
        if let Ok(existing) = std::fs::read(to)
            && existing != bytes
            && !req.replace
        {
            return Err(EnrollError::Exists { path: to.clone() });
        }
        contents.push(bytes);
    }
    let mut installed = Vec::new();
    for ((_, to, mode), bytes) in targets.iter().zip(contents) {
        let state = match std::fs::read(to) {
            Ok(existing) if existing == bytes => "unchanged",
            Ok(_) => "replaced",
            Err(_) => "new",
        };
        if state != "unchanged" {
            write_atomic(to, &bytes, *mode)?;
        }
        set_mode(to, *mode, gid, &mut notes)?;
        installed.push((to.clone(), state));
    }

    if let Some(path) = &req.config {
        let pki_dir = std::path::absolute(&req.pki).unwrap_or_else(|_| req.pki.clone());
        set_config(path, &files.facility, &pki_dir)?;
    }
    Ok(EnrollReport {
        files,
        installed,
        group: gid,
        notes,
    })
}

/// Mode `mode`, and group `gid` if given (a failed chown, e.g. not root, becomes a note).
fn set_mode(
    path: &Path,
    mode: u32,
    gid: Option<u32>,
    notes: &mut Vec<String>,
) -> Result<(), EnrollError> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io_err(path))?;
    if let Some(gid) = gid
        && let Err(e) = std::os::unix::fs::chown(path, None, Some(gid))
    {
        notes.push(format!(
            "{}: cannot give it to group {gid}: {e} (run enroll as root)",
            path.display()
        ));
    }
    Ok(())
}

/// Writes `bytes` to a temporary file beside `path` with `mode`, fsyncs it, renames it over `path`.
fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), EnrollError> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("enroll-tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    f.write_all(bytes).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))?;
    if let Some(dir) = path.parent()
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Sets `facility` and `pki` in the TOML file, keeping every other line (and comment) as it is:
/// an existing `key = …` line is replaced, else the key is added at the end.
fn set_config(path: &Path, facility: &FacilityCode, pki_dir: &Path) -> Result<(), EnrollError> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    let text = set_key(&text, "facility", &format!("\"{facility}\""));
    let pki_value = toml::Value::String(pki_dir.display().to_string()).to_string();
    let text = set_key(&text, "pki", &pki_value);
    // What is written must still be a valid configuration file.
    toml::from_str::<EdgeSettings>(&text).map_err(|e| EnrollError::File {
        path: path.to_path_buf(),
        reason: format!("would not parse after the change: {e}"),
    })?;
    let mode = std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0o640);
    let meta = std::fs::metadata(path).map_err(io_err(path))?;
    write_atomic(path, text.as_bytes(), mode)?;
    // Keep the file's group (root:onshi as the package installs it).
    let _ = std::os::unix::fs::chown(
        path,
        Some(std::os::unix::fs::MetadataExt::uid(&meta)),
        Some(std::os::unix::fs::MetadataExt::gid(&meta)),
    );
    Ok(())
}

/// `text` with the top-level `key = value` line set (before any `[table]`).
pub fn set_key(text: &str, key: &str, value: &str) -> String {
    let mut out = Vec::new();
    let mut done = false;
    for line in text.lines() {
        let trimmed = line.trim_start();
        let is_key = trimmed
            .strip_prefix(key)
            .is_some_and(|rest| rest.trim_start().starts_with('='));
        if !done && is_key {
            out.push(format!("{key} = {value}"));
            done = true;
        } else {
            out.push(line.to_string());
        }
    }
    if !done {
        out.push(format!("{key} = {value}"));
    }
    out.join("\n") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_key_replaces_the_line_and_keeps_comments() {
        let text = "# the code\nfacility = \"1311234567\"\n# facility_old = 1\ndata = \"/d\"\n";
        let out = set_key(text, "facility", "\"1341234567\"");
        assert_eq!(
            out,
            "# the code\nfacility = \"1341234567\"\n# facility_old = 1\ndata = \"/d\"\n"
        );
        let out = set_key("data = \"/d\"", "pki", "\"/etc/onshi/pki\"");
        assert_eq!(out, "data = \"/d\"\npki = \"/etc/onshi/pki\"\n");
    }

    #[test]
    fn group_lookup_reads_etc_group() {
        assert_eq!(group_id("root"), Some(0));
        assert_eq!(group_id("no-such-group-onshi-test"), None);
    }
}
