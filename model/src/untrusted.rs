//! Untrusted text on its way into a log line: file names from the mailbox share, a facility's outage
//! reason, anything a peer chose. `Untrusted` displays such a string escaped and bounded, so a
//! newline cannot forge a log line and a megabyte cannot flood the journal. It never changes what is
//! stored or answered: only how the text is shown in logs.

use std::fmt;

/// How many characters of an untrusted string a log line shows; the rest is summarised as
/// `…(+N chars)`.
pub const LOG_CHARS: usize = 120;

/// Displays `&str` for a log: control characters (newline, ESC, DEL, C1, and the Unicode line and
/// paragraph separators and bidi controls) are written as `\u{..}` escapes (`\n`, `\r`, `\t` as
/// those two characters), a backslash as `\\`, and at most [`LOG_CHARS`] characters are shown.
#[derive(Clone, Copy)]
pub struct Untrusted<'a>(pub &'a str);

impl Untrusted<'_> {
    fn needs_escape(c: char) -> bool {
        c.is_control()
            || matches!(
                c,
                '\u{2028}' | '\u{2029}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}'
                    | '\u{2066}'..='\u{2069}'
            )
    }
}

impl fmt::Display for Untrusted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (shown, c) in self.0.chars().enumerate() {
            if shown == LOG_CHARS {
                let rest = self.0.chars().count() - LOG_CHARS;
                return write!(f, "…(+{rest} chars)");
            }
            match c {
                '\\' => f.write_str("\\\\")?,
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                c if Self::needs_escape(c) => write!(f, "\\u{{{:x}}}", c as u32)?,
                c => fmt::Write::write_char(f, c)?,
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Untrusted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_never_reach_the_log_raw() {
        let forged = "lunch\n2026-12-05T00:00:00Z INFO facility=1311234575 outage ended\x1b[2J";
        let shown = Untrusted(forged).to_string();
        assert!(!shown.chars().any(char::is_control), "{shown}");
        assert!(shown.contains("lunch\\n2026"), "{shown}");
        assert!(shown.ends_with("\\u{1b}[2J"), "{shown}");
        assert_eq!(Untrusted("a\\n").to_string(), "a\\\\n");
        assert_eq!(
            Untrusted("\u{2028}\u{202e}").to_string(),
            "\\u{2028}\\u{202e}"
        );
    }

    #[test]
    fn long_text_is_bounded_and_says_how_much_was_left_out() {
        let long = "あ".repeat(LOG_CHARS + 1000);
        let shown = Untrusted(&long).to_string();
        assert!(shown.starts_with(&"あ".repeat(LOG_CHARS)));
        assert!(shown.ends_with("…(+1000 chars)"), "{shown}");
        assert_eq!(Untrusted("短い").to_string(), "短い");
    }
}
