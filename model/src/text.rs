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

/// Full-width katakana in the order of the half-width block U+FF71..=U+FF9D (ｱ … ﾝ).
const KATAKANA_ROW: &str =
    "アイウエオカキクケコサシスセソタチツテトナニヌネノハヒフヘホマミムメモヤユヨラリルレロワン";
/// Small katakana in the order of U+FF67..=U+FF6F (ｧ … ｯ).
const SMALL_KATAKANA: &str = "ァィゥェォャュョッ";
const VOICED: &str = "ガギグゲゴザジズゼゾダヂヅデドバビブベボ";
const VOICED_BASE: &str = "カキクケコサシスセソタチツテトハヒフヘホ";
const SEMI_VOICED: &str = "パピプペポ";
const SEMI_VOICED_BASE: &str = "ハヒフヘホ";

fn index_in(table: &str, c: char) -> Option<usize> {
    table.chars().position(|t| t == c)
}

fn half_of_row(c: char) -> Option<char> {
    index_in(KATAKANA_ROW, c).and_then(|i| char::from_u32(0xFF71 + i as u32))
}

/// Readings as the receipt computers' file interface writes them: katakana (and hiragana) in
/// half-width form (`ヤマダ　タロウ` → `ﾔﾏﾀﾞ ﾀﾛｳ`), voiced sounds as a base and a separate mark,
/// full-width ASCII and spaces folded to ASCII. Kanji and anything else are kept as they are.
pub fn to_halfwidth_kana(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in fold_width(s).chars() {
        // Hiragana → katakana first (ぁ..ゖ are katakana − 0x60).
        let c = match c {
            '\u{3041}'..='\u{3096}' => char::from_u32(c as u32 + 0x60).unwrap_or(c),
            _ => c,
        };
        if let Some(h) = half_of_row(c) {
            out.push(h);
        } else if let Some(i) = index_in(SMALL_KATAKANA, c) {
            out.push(char::from_u32(0xFF67 + i as u32).unwrap_or(c));
        } else if let Some(i) = index_in(VOICED, c) {
            let base = VOICED_BASE.chars().nth(i).and_then(half_of_row);
            out.extend(base);
            out.push('ﾞ');
        } else if let Some(i) = index_in(SEMI_VOICED, c) {
            let base = SEMI_VOICED_BASE.chars().nth(i).and_then(half_of_row);
            out.extend(base);
            out.push('ﾟ');
        } else {
            match c {
                'ヴ' => out.push_str("ｳﾞ"),
                'ヲ' => out.push('ｦ'),
                'ー' | '－' => out.push('ｰ'),
                '・' => out.push('･'),
                '。' => out.push('｡'),
                '、' => out.push('､'),
                '「' => out.push('｢'),
                '」' => out.push('｣'),
                '゛' | '\u{3099}' => out.push('ﾞ'),
                '゜' | '\u{309A}' => out.push('ﾟ'),
                // No half-width forms: the nearest sound.
                'ヮ' => out.push('ﾜ'),
                'ヰ' => out.push('ｲ'),
                'ヱ' => out.push('ｴ'),
                'ヵ' => out.push('ｶ'),
                'ヶ' => out.push('ｹ'),
                other => out.push(other),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_become_half_width() {
        assert_eq!(to_halfwidth_kana("ヤマダ　タロウ"), "ﾔﾏﾀﾞ ﾀﾛｳ");
        assert_eq!(to_halfwidth_kana("サトウ　ジュンペイ"), "ｻﾄｳ ｼﾞｭﾝﾍﾟｲ");
        assert_eq!(to_halfwidth_kana("ヴィーナス・ヲ"), "ｳﾞｨｰﾅｽ･ｦ");
        assert_eq!(to_halfwidth_kana("やまだ はなこ"), "ﾔﾏﾀﾞ ﾊﾅｺ");
        assert_eq!(to_halfwidth_kana("ﾔﾏﾀﾞ"), "ﾔﾏﾀﾞ", "already half-width");
        assert_eq!(to_halfwidth_kana("山田ＡＢ１"), "山田AB1");
        assert_eq!(to_halfwidth_kana("ガギグゲゴパピプペポン"), "ｶﾞｷﾞｸﾞｹﾞｺﾞﾊﾟﾋﾟﾌﾟﾍﾟﾎﾟﾝ");
    }
}
