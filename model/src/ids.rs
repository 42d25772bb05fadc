//! Identifiers with validation: insurer number (with its Luhn check digit), card symbol, number and
//! branch, card class, facility code, My Number card id, person id, postal code.
//!
//! Every constructor takes what a person typed (full-width digits and surrounding spaces are
//! accepted) and either returns the canonical form or a [`ValueError`] that says what is wrong.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{ErrorCode, ValueError};
use crate::text::{fold_trim, is_mask_char};

/// The Luhn-style check digit of DOMAIN.md: over the digits before the check digit, starting from
/// the last one, multiply alternately by 2,1,2,1…; add up, counting a two-digit product as the sum of
/// its digits; check = (10 − sum mod 10) mod 10. `body` must be ASCII digits.
pub fn luhn_check_digit(body: &str) -> u8 {
    let sum: u32 = body
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b.wrapping_sub(b'0'));
            let p = if i % 2 == 0 { d * 2 } else { d };
            p / 10 + p % 10
        })
        .sum();
    ((10 - sum % 10) % 10) as u8
}

fn first_bad_char(s: &str, ok: impl Fn(char) -> bool) -> Option<(usize, char)> {
    s.chars()
        .enumerate()
        .find(|&(_, c)| !ok(c))
        .map(|(i, c)| (i + 1, c))
}

fn describe_bad(c: char) -> String {
    if is_mask_char(c) {
        format!(
            "'{c}' marks an unreadable position, not a digit: type the number as printed on the card"
        )
    } else if c.is_control() {
        format!("control character U+{:04X}", c as u32)
    } else {
        format!("'{c}'")
    }
}

macro_rules! string_newtype {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = ValueError;
            fn try_from(s: String) -> Result<Self, ValueError> {
                $name::parse(&s)
            }
        }

        impl std::str::FromStr for $name {
            type Err = ValueError;
            fn from_str(s: &str) -> Result<Self, ValueError> {
                $name::parse(s)
            }
        }
    };
}

string_newtype!(
    /// 保険者番号: 8 digits (法別 2 + prefecture 2 + insurer 3 + check 1), or 6 digits for municipal
    /// national health insurance (prefecture 2 + insurer 3 + check 1). Stored without padding.
    InsurerNumber
);

impl InsurerNumber {
    pub fn parse(input: &str) -> Result<Self, ValueError> {
        // The file interface right-aligns a 6-digit number in 8 characters with spaces: trimming
        // accepts that form too.
        let s = fold_trim(input);
        if s.is_empty() {
            return Err(ValueError::new(
                ErrorCode::MissingField,
                "is empty; an insurer number has 8 digits (6 for municipal national health insurance)",
            ));
        }
        if let Some((pos, c)) = first_bad_char(&s, |c| c.is_ascii_digit()) {
            return Err(ValueError::new(
                ErrorCode::InvalidCharacter,
                format!(
                    "character {pos} is {}; an insurer number has digits only",
                    describe_bad(c)
                ),
            ));
        }
        if s.len() != 8 && s.len() != 6 {
            return Err(ValueError::new(
                ErrorCode::InvalidLength,
                format!(
                    "has {} digits; an insurer number has 8 digits (6 for municipal national health insurance)",
                    s.len()
                ),
            ));
        }
        let (body, check) = s.split_at(s.len() - 1);
        let expected = luhn_check_digit(body);
        let given = check.as_bytes()[0] - b'0';
        if given != expected {
            return Err(ValueError::new(
                ErrorCode::InvalidCheckDigit,
                format!(
                    "check digit of {s} is {given} but the other digits give {expected}: a digit is probably mistyped"
                ),
            ));
        }
        Ok(InsurerNumber(s))
    }

    /// True for a 6-digit municipal national health insurance (市町村国保) number.
    pub fn is_municipal_nhi(&self) -> bool {
        self.0.len() == 6
    }

    /// 法別番号: the first two digits of an 8-digit number; `None` for municipal NHI.
    pub fn houbetsu(&self) -> Option<&str> {
        (self.0.len() == 8).then(|| &self.0[..2])
    }

    /// The prefecture code (01–47) the number carries.
    pub fn prefecture(&self) -> &str {
        if self.is_municipal_nhi() {
            &self.0[..2]
        } else {
            &self.0[2..4]
        }
    }

    /// The 8-character field of the receipt computers' file interface: a 6-digit number is
    /// right-aligned and padded with spaces.
    pub fn to_file_field(&self) -> String {
        format!("{:>8}", self.0)
    }
}

/// What a 法別番号 means (DOMAIN.md). `None` for a code this table does not know.
pub fn houbetsu_name(code: &str) -> Option<&'static str> {
    Some(match code {
        "01" => "協会けんぽ",
        "02" => "船員保険",
        "06" => "組合管掌健康保険",
        "07" => "自衛官等",
        "31" | "32" | "33" | "34" => "共済組合",
        "39" => "後期高齢者医療",
        "63" | "72" | "73" | "74" | "75" => "特例退職",
        "67" => "国民健康保険（退職者医療）",
        _ => return None,
    })
}

fn parse_card_text(input: &str, what: &str, max: usize) -> Result<String, ValueError> {
    let s = fold_trim(input);
    if s.is_empty() {
        return Err(ValueError::new(
            ErrorCode::MissingField,
            format!("is empty; give the {what} as printed on the card"),
        ));
    }
    let ok = |c: char| {
        !is_mask_char(c)
            && (c.is_alphanumeric() || matches!(c, '-' | '‐' | '－' | 'ー' | '・' | '.'))
    };
    if let Some((pos, c)) = first_bad_char(&s, ok) {
        return Err(ValueError::new(
            ErrorCode::InvalidCharacter,
            format!(
                "character {pos} is {}; a {what} has digits, letters, kanji or hyphens only",
                describe_bad(c)
            ),
        ));
    }
    let n = s.chars().count();
    if n > max {
        return Err(ValueError::new(
            ErrorCode::InvalidLength,
            format!("has {n} characters; a {what} has at most {max}"),
        ));
    }
    Ok(s)
}

/// Maximum lengths of card symbol and number. (unconfirmed: the official field lengths are not
/// public; these are generous and kept in one place.)
pub const MAX_SYMBOL_CHARS: usize = 38;
pub const MAX_NUMBER_CHARS: usize = 38;

string_newtype!(
    /// 記号: free text as printed on the card (digits, sometimes kanji or hyphens). Some cards
    /// (e.g. 75+) have none: use `Option<CardSymbol>`.
    CardSymbol
);

impl CardSymbol {
    pub fn parse(input: &str) -> Result<Self, ValueError> {
        parse_card_text(input, "card symbol", MAX_SYMBOL_CHARS).map(CardSymbol)
    }
}

string_newtype!(
    /// 番号: free text as printed on the card.
    CardNumber
);

impl CardNumber {
    pub fn parse(input: &str) -> Result<Self, ValueError> {
        parse_card_text(input, "card number", MAX_NUMBER_CHARS).map(CardNumber)
    }
}

string_newtype!(
    /// 枝番: two digits identifying the individual inside a household's number.
    Branch
);

impl Branch {
    pub fn parse(input: &str) -> Result<Self, ValueError> {
        let s = fold_trim(input);
        if let Some((pos, c)) = first_bad_char(&s, |c| c.is_ascii_digit()) {
            return Err(ValueError::new(
                ErrorCode::InvalidCharacter,
                format!(
                    "character {pos} is {}; a branch number has 2 digits",
                    describe_bad(c)
                ),
            ));
        }
        if s.len() != 2 {
            return Err(ValueError::new(
                ErrorCode::InvalidLength,
                format!(
                    "has {} digits; a branch number has 2 digits (e.g. 01), or leave it out",
                    s.len()
                ),
            ));
        }
        Ok(Branch(s))
    }
}

string_newtype!(
    /// 被保険者証区分 (card class), a 2-digit code such as `01`.
    CardClass
);

impl CardClass {
    pub fn parse(input: &str) -> Result<Self, ValueError> {
        let s = fold_trim(input);
        if s.len() != 2 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ValueError::new(
                ErrorCode::InvalidFormat,
                format!("'{s}' is not a 2-digit card class code such as 01"),
            ));
        }
        Ok(CardClass(s))
    }
}

string_newtype!(
    /// 医療機関コード: 10 digits, prefecture 2 + fee table 1 (1 medical, 3 dental, 4 pharmacy) +
    /// facility 7.
    FacilityCode
);

/// What the fee-table digit of a facility code says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeeTable {
    Medical,
    Dental,
    Pharmacy,
}

impl FacilityCode {
    pub fn parse(input: &str) -> Result<Self, ValueError> {
        let s = fold_trim(input);
        if let Some((pos, c)) = first_bad_char(&s, |c| c.is_ascii_digit()) {
            return Err(ValueError::new(
                ErrorCode::InvalidCharacter,
                format!(
                    "character {pos} is {}; a facility code has 10 digits",
                    describe_bad(c)
                ),
            ));
        }
        if s.len() != 10 {
            return Err(ValueError::new(
                ErrorCode::InvalidLength,
                format!("has {} digits; a facility code has 10 digits", s.len()),
            ));
        }
        if !matches!(s.as_bytes()[2], b'1' | b'3' | b'4') {
            return Err(ValueError::new(
                ErrorCode::OutOfRange,
                format!(
                    "fee-table digit (3rd) is {}; it must be 1 (medical), 3 (dental) or 4 (pharmacy)",
                    s.as_bytes()[2] as char
                ),
            ));
        }
        Ok(FacilityCode(s))
    }

    pub fn fee_table(&self) -> FeeTable {
        match self.0.as_bytes()[2] {
            b'3' => FeeTable::Dental,
            b'4' => FeeTable::Pharmacy,
            _ => FeeTable::Medical,
        }
    }
}

fn parse_token(input: &str, what: &str, max: usize) -> Result<String, ValueError> {
    let s = fold_trim(input);
    if s.is_empty() {
        return Err(ValueError::new(
            ErrorCode::MissingField,
            format!("is empty; a {what} is required"),
        ));
    }
    if let Some((pos, c)) = first_bad_char(&s, |c| c.is_ascii_graphic()) {
        return Err(ValueError::new(
            ErrorCode::InvalidCharacter,
            format!(
                "character {pos} is {}; a {what} has visible ASCII characters only",
                describe_bad(c)
            ),
        ));
    }
    if s.len() > max {
        return Err(ValueError::new(
            ErrorCode::InvalidLength,
            format!("has {} characters; a {what} has at most {max}", s.len()),
        ));
    }
    Ok(s)
}

string_newtype!(
    /// The My Number card's identity as the reader reports it (a stand-in for the card's
    /// certificate serial).
    CardId
);

impl CardId {
    pub fn parse(input: &str) -> Result<Self, ValueError> {
        parse_token(input, "card id", 64).map(CardId)
    }
}

string_newtype!(
    /// The registry's id of a person, stable across their qualification periods.
    PersonId
);

impl PersonId {
    pub fn parse(input: &str) -> Result<Self, ValueError> {
        parse_token(input, "person id", 64).map(PersonId)
    }
}

string_newtype!(
    /// 郵便番号 in the form `123-4567` (7 digits without the hyphen are accepted too).
    PostalCode
);

impl PostalCode {
    pub fn parse(input: &str) -> Result<Self, ValueError> {
        let s = fold_trim(input).replace(['ー', '−', '‐'], "-");
        let s = s.trim_start_matches('〒').trim();
        let digits: String = s.chars().filter(|c| *c != '-').collect();
        let shape_ok = (s.len() == 8
            && s.as_bytes()[3] == b'-'
            && s.chars().filter(|c| *c == '-').count() == 1)
            || s.len() == 7;
        if !shape_ok || digits.len() != 7 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ValueError::new(
                ErrorCode::InvalidFormat,
                format!("'{s}' is not a postal code of the form 123-4567"),
            ));
        }
        Ok(PostalCode(format!("{}-{}", &digits[..3], &digits[3..])))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_examples_have_valid_check_digits() {
        for n in ["33120015", "01130012", "39130018", "138057"] {
            assert!(InsurerNumber::parse(n).is_ok(), "{n}");
        }
    }

    #[test]
    fn mistyped_check_digit_is_rejected_with_the_expected_digit() {
        let e = InsurerNumber::parse("01130013").unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidCheckDigit);
        assert!(
            e.message.contains("is 3 but the other digits give 2"),
            "{}",
            e.message
        );
    }

    #[test]
    fn stray_black_circle_is_rejected_by_name() {
        let e = InsurerNumber::parse("0113●012").unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidCharacter);
        assert!(e.message.contains("character 5 is '●'"), "{}", e.message);
        let e = CardNumber::parse("45●7").unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidCharacter);
        assert!(e.message.contains("'●'"));
    }

    #[test]
    fn municipal_nhi_is_padded_with_spaces_on_the_file_interface() {
        let n = InsurerNumber::parse("  138057").unwrap();
        assert_eq!(n.as_str(), "138057");
        assert!(n.is_municipal_nhi());
        assert_eq!(n.to_file_field(), "  138057");
        assert_eq!(n.houbetsu(), None);
        assert_eq!(n.prefecture(), "13");
    }

    #[test]
    fn insurer_number_lengths_and_width() {
        assert_eq!(
            InsurerNumber::parse("0113001").unwrap_err().code,
            ErrorCode::InvalidLength
        );
        assert_eq!(
            InsurerNumber::parse("").unwrap_err().code,
            ErrorCode::MissingField
        );
        assert_eq!(
            InsurerNumber::parse("０１１３００１２").unwrap().as_str(),
            "01130012"
        );
        assert_eq!(
            InsurerNumber::parse("39130018").unwrap().houbetsu(),
            Some("39")
        );
        assert_eq!(houbetsu_name("39"), Some("後期高齢者医療"));
    }

    #[test]
    fn branch_symbol_number_rules() {
        assert_eq!(Branch::parse("01").unwrap().as_str(), "01");
        assert_eq!(
            Branch::parse("1").unwrap_err().code,
            ErrorCode::InvalidLength
        );
        assert_eq!(
            Branch::parse("0a").unwrap_err().code,
            ErrorCode::InvalidCharacter
        );
        assert_eq!(CardSymbol::parse("Ｓ１２-3").unwrap().as_str(), "S12-3");
        assert_eq!(CardSymbol::parse("東京１").unwrap().as_str(), "東京1");
        assert_eq!(
            CardNumber::parse(" ").unwrap_err().code,
            ErrorCode::MissingField
        );
        assert_eq!(
            CardNumber::parse(&"1".repeat(39)).unwrap_err().code,
            ErrorCode::InvalidLength
        );
        assert_eq!(
            CardClass::parse("1").unwrap_err().code,
            ErrorCode::InvalidFormat
        );
    }

    #[test]
    fn facility_code_rules() {
        assert_eq!(
            FacilityCode::parse("1341234567").unwrap().fee_table(),
            FeeTable::Pharmacy
        );
        assert_eq!(
            FacilityCode::parse("1311234567").unwrap().fee_table(),
            FeeTable::Medical
        );
        assert_eq!(
            FacilityCode::parse("1321234567").unwrap_err().code,
            ErrorCode::OutOfRange
        );
        assert_eq!(
            FacilityCode::parse("131123456").unwrap_err().code,
            ErrorCode::InvalidLength
        );
        assert_eq!(
            FacilityCode::parse("13112345x7").unwrap_err().code,
            ErrorCode::InvalidCharacter
        );
    }

    #[test]
    fn ids_and_postal_codes() {
        assert_eq!(PostalCode::parse("1008916").unwrap().as_str(), "100-8916");
        assert_eq!(
            PostalCode::parse("〒１００－８９１６").unwrap().as_str(),
            "100-8916"
        );
        assert_eq!(
            PostalCode::parse("100-891").unwrap_err().code,
            ErrorCode::InvalidFormat
        );
        assert_eq!(CardId::parse("").unwrap_err().code, ErrorCode::MissingField);
        assert_eq!(
            CardId::parse("ab cd").unwrap_err().code,
            ErrorCode::InvalidCharacter
        );
        assert_eq!(
            PersonId::parse(&"x".repeat(65)).unwrap_err().code,
            ErrorCode::InvalidLength
        );
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn appending_the_check_digit_always_validates(body in "[0-9]{7}|[0-9]{5}") {
                let n = format!("{body}{}", luhn_check_digit(&body));
                prop_assert!(InsurerNumber::parse(&n).is_ok());
            }

            #[test]
            fn any_single_digit_change_is_caught(body in "[0-9]{7}", pos in 0usize..8, delta in 1u8..10) {
                let n = format!("{body}{}", luhn_check_digit(&body));
                let mut b = n.into_bytes();
                b[pos] = b'0' + (b[pos] - b'0' + delta) % 10;
                let typo = String::from_utf8(b).unwrap();
                prop_assert_eq!(InsurerNumber::parse(&typo).unwrap_err().code, ErrorCode::InvalidCheckDigit);
            }

            #[test]
            fn file_field_round_trips(body in "[0-9]{7}|[0-9]{5}") {
                let n = InsurerNumber::parse(&format!("{body}{}", luhn_check_digit(&body))).unwrap();
                let field = n.to_file_field();
                prop_assert_eq!(field.len(), 8);
                prop_assert_eq!(InsurerNumber::parse(&field).unwrap(), n);
            }
        }
    }
}
