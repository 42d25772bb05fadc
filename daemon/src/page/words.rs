//! What the page says, in Japanese: a check's answer and what to do next, a settlement as an
//! action for the counter, yen and durations. Pure functions (tested in memory), so the wording of
//! each case is reviewed in one place.
//!
//! It must never change a value: the page shows the API's values (validity, kind, yen) beside the
//! words, and the browser tests read those values, not the sentences.

use chrono::{DateTime, Local, Utc};
use onshi_model::record::{Settlement, SettlementKind};
use onshi_model::{Source, Validity};

/// The validity in words (the file interface's wording).
pub(crate) fn validity(v: Validity) -> &'static str {
    match v {
        Validity::Valid => "有効",
        Validity::Invalid => "無効（資格喪失）",
        Validity::InvalidNewerExists => "無効（新しい資格あり）",
        Validity::NotFound => "該当資格なし",
        Validity::Multiple => "複数該当",
        Validity::ValidUnregistered => "有効（未登録）",
        Validity::Pending => "確認待ち",
    }
}

/// Where the answer came from.
pub(crate) fn source(s: Source) -> &'static str {
    match s {
        Source::Online => "オンライン資格確認（今）",
        Source::Replica => "この施設の控え（過去に確認した情報）",
        Source::Queued => "未確認（回線の復旧後に確認します）",
    }
}

/// What reception does next, for an answer of `validity` from `source`.
pub(crate) fn next_step(validity: Validity, source: Source) -> &'static str {
    match (validity, source) {
        (Validity::Valid | Validity::ValidUnregistered, Source::Online) => {
            "表示の負担割合で受付してください。"
        }
        (Validity::Valid | Validity::ValidUnregistered, _) => {
            "控えの情報で有効です。表示の負担割合で受付し、回線の復旧後に作業リストで最終結果を確認してください。"
        }
        (Validity::InvalidNewerExists, _) => {
            "新しい資格があります。新しい保険証（または資格確認書）の提示を求め、その番号で照会し直してください。"
        }
        (Validity::Invalid, _) => {
            "資格を喪失しています。現在の保険証を確認してください。確認できなければ申立書を記録し、通常の負担割合を徴収してください。"
        }
        (Validity::NotFound, _) => {
            "番号と生年月日をもう一度確認して照会してください。それでも見つからなければ申立書を記録してください。"
        }
        (Validity::Multiple, _) => "複数の資格が該当しました。氏名・住所で本人を確認してください。",
        (Validity::Pending, _) => {
            "オフラインで確認できません。通常の負担割合（3割）を徴収し、申立書を記録してください。回線の復旧後に自動で確認されます。"
        }
    }
}

/// ¥1,234
pub(crate) fn yen(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    out.push('¥');
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A duration in words: 「45秒」「3分」「2時間5分」「1日3時間」.
pub(crate) fn duration(secs: u64) -> String {
    let (d, h, m, s) = (
        secs / 86_400,
        secs % 86_400 / 3600,
        secs % 3600 / 60,
        secs % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{s}秒"),
        (0, 0, m) => format!("{m}分"),
        (0, h, m) => format!("{h}時間{m}分"),
        (d, h, _) => format!("{d}日{h}時間"),
    }
}

/// A time as reception reads it (local time).
pub(crate) fn at(t: DateTime<Utc>) -> String {
    t.with_timezone(&Local)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// A settlement as the action at the counter.
pub(crate) fn settlement(s: &Settlement) -> String {
    let insurer = s.qualification.as_ref().map_or_else(
        || "（不明）".to_string(),
        |q| format!("{}（{}）", q.insurer_name, q.insurer_number),
    );
    match s.kind {
        SettlementKind::Confirmed => "徴収額どおりで確定しました。対応は不要です。".into(),
        SettlementKind::Refund => {
            format!("{} を返金してください。", yen(s.yen.unwrap_or_default()))
        }
        SettlementKind::Charge => format!(
            "{} を追加で徴収してください。",
            yen(s.yen.unwrap_or_default())
        ),
        SettlementKind::InsurerChanged => {
            format!("請求先を {insurer} に変更してください。")
        }
        SettlementKind::InsurerUnknown => format!(
            "保険者不詳として {} に請求してください。",
            s.payer.as_deref().unwrap_or("（支払者未定）")
        ),
        SettlementKind::Ambiguous => format!(
            "本人の候補が{}名います。候補から本人を選んでください。",
            s.candidates.len()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yen_has_thousands_separators() {
        assert_eq!(yen(0), "¥0");
        assert_eq!(yen(990), "¥990");
        assert_eq!(yen(1000), "¥1,000");
        assert_eq!(yen(1_234_567), "¥1,234,567");
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(45), "45秒");
        assert_eq!(duration(180), "3分");
        assert_eq!(duration(2 * 3600 + 5 * 60 + 9), "2時間5分");
        assert_eq!(duration(86_400 + 3 * 3600), "1日3時間");
    }

    #[test]
    fn each_case_says_what_to_do_next() {
        assert!(next_step(Validity::InvalidNewerExists, Source::Online).contains("新しい保険証"));
        assert!(next_step(Validity::Pending, Source::Queued).contains("申立書"));
        assert!(next_step(Validity::Valid, Source::Replica).contains("作業リスト"));
    }

    #[test]
    fn settlements_name_the_amount_or_the_payer() {
        let s = Settlement {
            kind: SettlementKind::Refund,
            settled_at: Utc::now(),
            qualification: None,
            correct_share_percent: Some(10),
            due_yen: Some(500),
            yen: Some(1000),
            payer: None,
            candidates: Vec::new(),
            explanation: String::new(),
        };
        assert_eq!(settlement(&s), "¥1,000 を返金してください。");
        let unknown = Settlement {
            kind: SettlementKind::InsurerUnknown,
            payer: Some("協会けんぽ".into()),
            ..s
        };
        assert!(settlement(&unknown).contains("協会けんぽ"));
    }
}
