//! Every code and fixed message onshi writes into a result file, in one place.
//!
//! (unconfirmed) The official error-code list, the fields' maximum lengths and the suffix rules of
//! face files are not public (DOMAIN.md): the `ONSHI-…` codes below are onshi's own, chosen so a
//! receipt computer can tell them from the centre's, and can be changed here alone.

use std::fmt;

/// `SegmentOfResult` (header): the request as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Segment {
    /// 1: done.
    Done,
    /// 2: still processing; a final answer follows (or poll again).
    Processing,
    /// 9: failed; `ErrorCode` and `ErrorMessage` say why.
    Failed,
}

impl Segment {
    pub fn code(self) -> &'static str {
        match self {
            Segment::Done => "1",
            Segment::Processing => "2",
            Segment::Failed => "9",
        }
    }
}

/// `ProcessingResultStatus` (body, and each batch entry): 1 ok, 2 error.
pub const STATUS_OK: &str = "1";
pub const STATUS_ERROR: &str = "2";

/// `ReferenceClassification`: how the person was identified.
pub const REFERENCE_CARD: &str = "1";
pub const REFERENCE_INSURANCE_CARD: &str = "2";

/// `CharacterCodeIdentifier` of a result: 0 UTF-8 (as the examples), 1 Shift_JIS (unconfirmed).
pub const CHARSET_UTF8: &str = "0";
pub const CHARSET_SHIFT_JIS: &str = "1";

/// A code with its message for reception staff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Coded {
    pub code: &'static str,
    pub message: &'static str,
}

impl fmt::Display for Coded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code, self.message)
    }
}

/// Offline: the answer comes from this facility's replica; the final one replaces the file.
pub const OFFLINE_REPLICA: Coded = Coded {
    code: "ONSHI-W001",
    message: "回線断のため、この端末に記録された資格情報による暫定回答です（オンライン未確認）。回線復旧後に確定結果でこのファイルを置き換えます。",
};
/// Offline and the person is not known here: nothing confirmed yet.
pub const OFFLINE_QUEUED: Coded = Coded {
    code: "ONSHI-W002",
    message: "回線断のため資格を確認できていません（未確認）。回線復旧後に確定結果でこのファイルを置き換えます。",
};
/// A batch whose answers are not all in yet.
pub const BATCH_PROCESSING: Coded = Coded {
    code: "ONSHI-W003",
    message: "一括照会を処理中です。しばらくしてから再度取得してください。",
};
/// The final answer of a check first answered offline, the same as the interim one.
pub const FINAL_AFTER_OUTAGE: Coded = Coded {
    code: "ONSHI-I001",
    message: "回線断の間の暫定回答を、回線復旧後にオンラインで確定しました。",
};
/// The final answer differs from what reception was told while offline.
pub const FINAL_CHANGED: Coded = Coded {
    code: "ONSHI-I002",
    message: "回線復旧後の確定結果が回線断の間の暫定回答と異なります。確認してください。",
};
/// A file that is not a well-formed request (not XML, wrong or missing elements, a bad field).
pub const BAD_REQUEST: Coded = Coded {
    code: "ONSHI-E001",
    message: "要求ファイルの形式に誤りがあります。",
};
/// An encoding other than UTF-8 or Shift_JIS, or bytes that are not in the declared one.
pub const BAD_ENCODING: Coded = Coded {
    code: "ONSHI-E002",
    message: "要求ファイルの文字コードが不正です（UTF-8 または Shift_JIS）。",
};
/// A file that stayed incomplete (half-written) past the timeout.
pub const INCOMPLETE: Coded = Coded {
    code: "ONSHI-E003",
    message: "要求ファイルが書き込み途中のまま完了しませんでした。",
};
/// A request for another facility (MedicalInstitutionCode is not this edge's).
pub const OTHER_FACILITY: Coded = Coded {
    code: "ONSHI-E004",
    message: "医療機関コードがこの端末の設定と一致しません。",
};
/// A batch download for a reception number this edge never gave.
pub const UNKNOWN_RECEPTION_NUMBER: Coded = Coded {
    code: "ONSHI-E005",
    message: "受付番号が見つかりません。",
};

/// Request file name prefixes (the part before `_<free>.xml`), and their result prefixes.
pub const SINGLE_PREFIX: &str = "OQSsiquc01req";
pub const BATCH_UPLOAD_PREFIX: &str = "OQSmuquc01req";
pub const BATCH_DOWNLOAD_PREFIX: &str = "OQSmuquc02req";

/// The name of a face file (a card-reader check, written unasked): `OQSsiquc01res_` + the local
/// time (`YYYYMMDDhhmmss`) + `_` + the check's sequence number. (unconfirmed: the real suffix
/// rules are not public.)
pub fn face_file_name(local: chrono::NaiveDateTime, check_id: &str) -> String {
    let seq = check_id.rsplit('-').next().unwrap_or(check_id);
    format!("OQSsiquc01res_{}_{seq}.xml", local.format("%Y%m%d%H%M%S"))
}
