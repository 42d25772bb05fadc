//! Scans for personal data in plain text (issue 18): every file under a directory, and the forms a
//! registry line's personal fields could be stored in.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// Every regular file under `dir` (sockets and the like skipped), with its bytes, sorted by path.
pub fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file()
                && let Ok(bytes) = std::fs::read(e.path())
            {
                out.push((e.path(), bytes));
            }
        }
    }
    out.sort();
    out
}

pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

fn text(q: &Value, field: &str) -> String {
    q[field].as_str().unwrap_or_default().to_string()
}

/// What of a registry line must never be found in plain text: names and their parts, kana in
/// full-width, half-width and hiragana, the address, the birth date as written and in the file
/// interface's form, the card number alone and with the insurer's, the My Number card id — each in
/// UTF-8 and Shift_JIS, 6 bytes at least (sealed bytes do not hold that by chance).
pub fn personal(q: &Value) -> Vec<(String, Vec<u8>)> {
    let name = text(q, "name");
    let kana = text(q, "name_kana");
    let mut texts: Vec<(String, String)> = Vec::new();
    for (what, t) in [("name", &name), ("kana", &kana)] {
        texts.push((what.into(), t.clone()));
        for (i, part) in t.split([' ', '　']).enumerate() {
            texts.push((format!("{what} part {i}"), part.to_string()));
        }
    }
    texts.push(("kana, hiragana".into(), crate::to_hiragana(&kana)));
    texts.push((
        "kana, half-width".into(),
        onshi_model::text::to_halfwidth_kana(&kana),
    ));
    texts.push(("address".into(), text(q, "address")));
    let birth = text(q, "birth_date");
    texts.push(("birth date (file form)".into(), birth.replace('-', "")));
    texts.push(("birth date".into(), birth));
    texts.push(("card number".into(), text(q, "number")));
    texts.push((
        "insurer and card number".into(),
        format!("{}{}", text(q, "insurer_number"), text(q, "number")),
    ));
    texts.push(("insurer number".into(), text(q, "insurer_number")));
    texts.push(("My Number card id".into(), text(q, "card_id")));
    let mut out = Vec::new();
    for (what, t) in texts {
        let (sjis, _, _) = encoding_rs::SHIFT_JIS.encode(&t);
        let utf8 = t.as_bytes();
        if utf8.len() >= 6 {
            out.push((format!("{what} (UTF-8) {t:?}"), utf8.to_vec()));
        }
        if sjis.len() >= 6 && sjis.as_ref() != utf8 {
            out.push((format!("{what} (Shift_JIS) {t:?}"), sjis.into_owned()));
        }
    }
    out
}
