//! Every bound the mailbox puts on what the share may hand it, in one place. The share is written
//! by other machines: a file, a name or a nesting the mailbox did not bound is one a neighbour can
//! use to stop the edge or fill its disk. Nothing here does IO.

use super::xml::RequestKind;

/// The largest single-check request (`OQSsiquc01req`). A real one is under 1 KB (one header, one
/// `QualificationConfirmSearchInfo`); 64 KiB leaves room for comments and the unknown elements a
/// newer receipt computer may add.
pub const MAX_SINGLE_BYTES: u64 = 64 * 1024;
/// The largest batch upload (`OQSmuquc01req`): [`MAX_BATCH_ENTRIES`] people at up to about 600
/// bytes each (an indented entry with every element is about 550) is 12 MB.
pub const MAX_BATCH_UPLOAD_BYTES: u64 = 12 * 1024 * 1024;
/// The largest batch download (`OQSmuquc02req`): a header and a reception number.
pub const MAX_DOWNLOAD_BYTES: u64 = 64 * 1024;
/// The most people one batch upload may carry (as `POST /v1/batch`).
pub const MAX_BATCH_ENTRIES: usize = 20_000;
/// How deep elements may nest. A request is four levels deep
/// (`XmlMsg/MessageBody/QualificationConfirmSearchInfo/InsurerNumber`); a deeper file is refused
/// with the element path before the tree is built (60,000 levels once overflowed the stack).
pub const MAX_DEPTH: usize = 16;
/// The longest request file name, in bytes. Linux allows 255 per name; the reason file
/// `<name>.reason.txt` needs 11 more, and a name taken in `done/` or `err/` gets `.N` (room for
/// four digits is kept). A longer name goes to `err/` at once (its reason file's name shortened:
/// see `files::reason_file_name`).
pub const MAX_NAME_BYTES: usize = 240;
/// The most a file system allows in one name (`NAME_MAX`).
pub const NAME_MAX: usize = 255;
/// How many times the edge may start handling one request file (by name and SHA-256) without
/// finishing: a file in hand when the edge died this many times is quarantined to `err/` on the
/// next attempt, so no file can make the edge crash-loop.
pub const MAX_ATTEMPTS: u32 = 3;

/// The largest file of `kind` (any other name: the largest of the small kinds, read only to be
/// hashed and refused).
pub fn max_bytes(kind: Option<RequestKind>) -> u64 {
    match kind {
        Some(RequestKind::BatchUpload) => MAX_BATCH_UPLOAD_BYTES,
        Some(RequestKind::BatchDownload) => MAX_DOWNLOAD_BYTES,
        Some(RequestKind::Single) | None => MAX_SINGLE_BYTES,
    }
}

/// Why a request file's name is refused before it is opened: control characters (a newline or an
/// ESC in a name forges log lines and confuses the receipt computer's own listing) or too long.
pub fn name_problem(name: &str) -> Option<String> {
    if name.chars().any(char::is_control) {
        return Some(format!(
            "the file name contains control characters ({}); request names are printable",
            name.escape_debug()
        ));
    }
    if name.len() > MAX_NAME_BYTES {
        return Some(format!(
            "the file name is {} bytes long; at most {MAX_NAME_BYTES} (the result and reason files need the rest of the {NAME_MAX} the file system allows)",
            name.len()
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_control_characters_or_too_long_are_refused() {
        assert_eq!(name_problem("OQSsiquc01req_1.xml"), None);
        assert!(name_problem("OQSsiquc01req_\n1.xml").is_some());
        assert!(name_problem("OQSsiquc01req_\u{1b}[31m.xml").is_some());
        let long = format!("OQSsiquc01req_{}.xml", "x".repeat(MAX_NAME_BYTES));
        assert!(name_problem(&long).unwrap().contains("bytes long"));
        let fits = format!("OQSsiquc01req_{}.xml", "x".repeat(MAX_NAME_BYTES - 18));
        assert_eq!(fits.len(), MAX_NAME_BYTES);
        assert_eq!(name_problem(&fits), None);
    }
}
