//! Small text folds shared by the parsers: full-width ASCII to ASCII, trimming every kind of space.

/// Folds full-width ASCII (U+FF01..U+FF5E) to ASCII and the ideographic space to a space, so that
/// "１２３" typed on a Japanese keyboard reads as "123". Everything else is kept.
pub fn fold_width(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
            '\u{3000}' => ' ',
            _ => c,
        })
        .collect()
}

/// `fold_width` then trim spaces of every width at both ends.
pub fn fold_trim(s: &str) -> String {
    fold_width(s).trim().to_string()
}

/// Characters that mark an unreadable or masked position on a card, seen in real data. They are never
/// part of an identifier.
pub fn is_mask_char(c: char) -> bool {
    matches!(
        c,
        '●' | '○'
            | '◯'
            | '■'
            | '□'
            | '◆'
            | '◇'
            | '★'
            | '☆'
            | '※'
            | '?'
            | '？'
            | '*'
            | '＊'
            | '〓'
            | '×'
    )
}
