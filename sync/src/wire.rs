//! The messages between edge and reconciler, as they travel on the link: postcard bodies behind a
//! two-byte version tag. One RPC is one QUIC bidirectional stream: the client writes one request
//! frame and finishes its side; the server answers with one response frame and finishes.
//!
//! Never change the meaning of an existing variant: add variants at the end, and bump
//! [`WIRE_VERSION`] when an old peer could misread the new form. (Central search's form changed
//! in the second wave: the first wave's pair stays where it was as [`Request::SearchV1`] /
//! [`Response::SearchV1`], today's is appended as [`Request::Search`] / [`Response::Search`].)

use chrono::{DateTime, Utc};
use onshi_fallback::SearchQuery;
use onshi_model::{CheckOutcome, CheckRequest, PersonId, Qualification};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// The version this build speaks.
pub const WIRE_VERSION: u16 = 1;

/// The largest frame either side accepts (a batch answer of a few thousand people fits easily).
pub const MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;

/// The bytes at the start of a request frame that say what it is: the version tag and postcard's
/// variant index of [`Request`] (one byte while there are fewer than 128 kinds).
pub const REQUEST_HEAD_BYTES: usize = 3;

/// The kinds of [`Request`], in the order of its variants (postcard's variant index), so the
/// reconciler knows a request's kind, and so its size limit, from its first three bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    Ping,
    Check,
    Batch,
    Search,
    Outage,
    Sync,
}

impl RequestKind {
    /// Every kind, by variant index: central search twice, in its first-wave form
    /// ([`Request::SearchV1`], index 3) and today's ([`Request::Search`], appended).
    pub const ALL: [RequestKind; 7] = [
        RequestKind::Ping,
        RequestKind::Check,
        RequestKind::Batch,
        RequestKind::Search,
        RequestKind::Outage,
        RequestKind::Sync,
        RequestKind::Search,
    ];

    /// As logs and the `kind` label of metrics spell it.
    pub fn name(self) -> &'static str {
        match self {
            RequestKind::Ping => "ping",
            RequestKind::Check => "check",
            RequestKind::Batch => "batch",
            RequestKind::Search => "search",
            RequestKind::Outage => "outage",
            RequestKind::Sync => "sync",
        }
    }

    /// The largest request frame of this kind the reconciler reads (version tag included). Each
    /// is many times the largest an honest edge sends (a check is under 200 bytes, a batch of
    /// [`MAX_BATCH`] under 100 KB, an outage reason at most 200 characters); only a journal sync,
    /// whose `Hello` summarises a whole journal, may approach [`MAX_FRAME_BYTES`].
    pub fn max_frame_bytes(self) -> usize {
        match self {
            RequestKind::Ping => 64,
            RequestKind::Check => 4 * 1024,
            RequestKind::Batch => 1024 * 1024,
            RequestKind::Search => 16 * 1024,
            RequestKind::Outage => 8 * 1024,
            RequestKind::Sync => MAX_FRAME_BYTES,
        }
    }
}

impl std::fmt::Display for RequestKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The kind of the request whose frame starts with `head` ([`REQUEST_HEAD_BYTES`]), read before
/// the rest of the frame.
pub fn request_kind(head: &[u8; REQUEST_HEAD_BYTES]) -> Result<RequestKind, DecodeError> {
    let got = u16::from_be_bytes([head[0], head[1]]);
    if got != WIRE_VERSION {
        return Err(DecodeError::UnsupportedVersion { got });
    }
    RequestKind::ALL
        .get(usize::from(head[2]))
        .copied()
        .ok_or(DecodeError::UnknownKind(head[2]))
}

/// Edge → reconciler.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Liveness and round-trip measurement.
    Ping,
    /// One eligibility check.
    Check(CheckRequest),
    /// A batch inquiry (一括照会), e.g. tomorrow's reservations: answered in order, one outcome per
    /// check. The edge sends a long list as several batches of at most [`MAX_BATCH`].
    Batch(Vec<CheckRequest>),
    /// Central search as a first-wave edge asks for it (no service date), answered with
    /// [`Response::SearchV1`]. Kept where it was so such an edge is still understood.
    SearchV1(SearchQueryV1),
    /// Declares (`active`) or ends an outage of the facility, with a reason for the log.
    Outage { active: bool, reason: String },
    /// Journal sync: the edge's pending [`SyncMessage`](crate::protocol::SyncMessage)s, each
    /// encoded with `SyncMessage::encode`. The facility is the connection's, never a message's.
    Sync(Vec<Vec<u8>>),
    /// Central search mode (reader broken, link up): only for a facility in a declared outage.
    /// Answered with [`Response::Search`]. A first-wave reconciler refuses it as an unknown
    /// kind (it never misreads it).
    Search(SearchQuery),
}

/// A central search query as the first wave sent it: [`SearchQuery`] without `service_date`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchQueryV1 {
    pub name: Option<String>,
    pub name_kana: Option<String>,
    pub birth_date: chrono::NaiveDate,
    pub sex: onshi_model::Sex,
    pub insurer_name: Option<String>,
    pub address: Option<String>,
}

impl From<SearchQueryV1> for SearchQuery {
    /// The qualification shown is today's, as the first wave showed it.
    fn from(q: SearchQueryV1) -> SearchQuery {
        SearchQuery {
            name: q.name,
            name_kana: q.name_kana,
            birth_date: q.birth_date,
            sex: q.sex,
            insurer_name: q.insurer_name,
            address: q.address,
            service_date: None,
        }
    }
}

/// A central search candidate as the first wave received it: [`SearchHit`] without `reasons`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchHitV1 {
    pub person_id: PersonId,
    pub score: f32,
    pub qualification: Qualification,
}

impl From<SearchHit> for SearchHitV1 {
    fn from(h: SearchHit) -> SearchHitV1 {
        SearchHitV1 {
            person_id: h.person_id,
            score: h.score,
            qualification: h.qualification,
        }
    }
}

impl Request {
    /// The request's kind (its metrics label and size limit).
    pub fn kind(&self) -> RequestKind {
        match self {
            Request::Ping => RequestKind::Ping,
            Request::Check(_) => RequestKind::Check,
            Request::Batch(_) => RequestKind::Batch,
            Request::Search(_) | Request::SearchV1(_) => RequestKind::Search,
            Request::Outage { .. } => RequestKind::Outage,
            Request::Sync(_) => RequestKind::Sync,
        }
    }

    /// How urgent the request is on a full line, edge to reconciler (its QUIC stream's priority:
    /// higher is sent first). A check, search or outage declaration has someone at reception
    /// waiting, so it goes before the bulk of a drain. Within the bulk, the message that sets
    /// the larger one moving goes first: a batch inquiry's request (card numbers and dates, which
    /// the reconciler answers with whole qualifications) before a sync request (whole journal
    /// records, answered with acknowledgements). See [`Request::answer_priority`] for the way
    /// back; the bytes of a drain by kind are in BENCHMARKS.md.
    pub fn priority(&self) -> i32 {
        match self {
            Request::Ping
            | Request::Check(_)
            | Request::Search(_)
            | Request::SearchV1(_)
            | Request::Outage { .. } => 2,
            Request::Batch(_) => 1,
            Request::Sync(_) => 0,
        }
    }

    /// The priority of the answer's stream, reconciler to edge: reception's RPCs first, then the
    /// sync answers (acknowledgements that let the edge send more, and settlements), then the
    /// batch inquiries' answers (the bulk of the line back).
    pub fn answer_priority(&self) -> i32 {
        match self {
            Request::Ping
            | Request::Check(_)
            | Request::Search(_)
            | Request::SearchV1(_)
            | Request::Outage { .. } => 2,
            Request::Sync(_) => 1,
            Request::Batch(_) => 0,
        }
    }
}

/// One candidate of a central search: the person, a score in 0..=1, their qualification (the
/// one valid on the query's service date, else the latest), and why they rank there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchHit {
    pub person_id: PersonId,
    pub score: f32,
    pub qualification: Qualification,
    /// The ranking's reasons, one per field, as the replica search gives them.
    pub reasons: Vec<HitReason>,
}

/// One of a candidate's reasons (`onshi_fallback::Reason`) as it travels on the link.
///
/// Why not `Reason` itself: it is serialised for JSON as an adjacently tagged enum
/// (`{"field":"family_name","match":"exact"}`), which postcard cannot read back (serde asks the
/// format for field names, which postcard does not carry: `WontImplement`, tested below), and its
/// match values grow with the fallback crate. So the field and the JSON of its match travel as
/// text, and the edge reads them back as the replica search's `reasons` ([`HitReason::reason`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HitReason {
    /// The JSON's `field` (`family_name`, `given_name`, `birth_date`, `sex`, …).
    pub field: String,
    /// The JSON text of its `match` (`"exact"`, `"typo"`, …).
    pub matched: String,
}

impl HitReason {
    /// A reason as the fallback crate ranks it.
    pub fn of(reason: &onshi_fallback::Reason) -> Option<Self> {
        Self::from_json(&serde_json::to_value(reason).ok()?)
    }

    /// From the JSON form `{"field","match"}`.
    pub fn from_json(v: &serde_json::Value) -> Option<Self> {
        Some(HitReason {
            field: v.get("field")?.as_str()?.to_string(),
            matched: v.get("match").map_or("null".into(), |m| m.to_string()),
        })
    }

    /// The reason as the fallback crate has it; `None` for one this build does not know (a newer
    /// reconciler's).
    pub fn reason(&self) -> Option<onshi_fallback::Reason> {
        serde_json::from_value(self.to_json()).ok()
    }

    /// Back to the JSON form `{"field","match"}` (what `POST /v1/search` answers).
    pub fn to_json(&self) -> serde_json::Value {
        let matched = serde_json::from_str(&self.matched)
            .unwrap_or_else(|_| serde_json::Value::String(self.matched.clone()));
        serde_json::json!({ "field": self.field, "match": matched })
    }
}

/// The most checks one `Request::Batch` carries.
pub const MAX_BATCH: usize = 500;

/// Reconciler → edge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Response {
    Pong,
    Check(CheckOutcome),
    /// The request was refused or failed; `code` is stable, `message` is for people.
    Error {
        code: String,
        message: String,
    },
    /// One outcome per check of a `Request::Batch`, in the same order.
    Batch(Vec<CheckOutcome>),
    /// Candidates, best first, for a [`Request::SearchV1`] (the first wave's form).
    SearchV1(Vec<SearchHitV1>),
    /// The facility's outage as the reconciler now records it.
    Outage {
        active: bool,
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
    },
    /// The reconciler's pending sync messages for this facility, each `SyncMessage::encode`d.
    Sync(Vec<Vec<u8>>),
    /// Candidates, best first, with their reasons, for a [`Request::Search`].
    Search(Vec<SearchHit>),
}

impl Response {
    pub fn error(code: &str, message: impl Into<String>) -> Self {
        Response::Error {
            code: code.to_string(),
            message: message.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("frame is {0} bytes; too short to carry a version tag")]
    TooShort(usize),
    #[error("unsupported wire version {got}; this build speaks version {WIRE_VERSION}")]
    UnsupportedVersion { got: u16 },
    #[error("frame of wire version {WIRE_VERSION} does not decode: {0}")]
    Body(#[from] postcard::Error),
    #[error("request kind {0} is not known to this build (wire version {WIRE_VERSION})")]
    UnknownKind(u8),
}

/// `version (u16, big endian) ‖ postcard(body)`.
pub fn encode<T: Serialize>(body: &T) -> Vec<u8> {
    encode_with_version(WIRE_VERSION, body)
}

/// As [`encode`], with any version tag (tests use it to play an incompatible peer).
pub fn encode_with_version<T: Serialize>(version: u16, body: &T) -> Vec<u8> {
    let mut out = version.to_be_bytes().to_vec();
    // Serialising our own plain data types into a Vec cannot fail.
    out.extend(postcard::to_allocvec(body).unwrap_or_default());
    out
}

pub fn decode<T: DeserializeOwned>(frame: &[u8]) -> Result<T, DecodeError> {
    if frame.len() < 2 {
        return Err(DecodeError::TooShort(frame.len()));
    }
    let got = u16::from_be_bytes([frame[0], frame[1]]);
    if got != WIRE_VERSION {
        return Err(DecodeError::UnsupportedVersion { got });
    }
    Ok(postcard::from_bytes(&frame[2..])?)
}

/// The error code of a sync request that arrives without a session (e.g. after a restart of the
/// reconciler): the edge must start over with a `Hello`.
pub const NO_SESSION: &str = "sync_no_session";

/// The longest outage reason accepted, in characters.
pub const MAX_OUTAGE_REASON_CHARS: usize = 200;

/// Why an outage reason is refused, if it is: too long, or a control character (a newline could
/// forge a line in a log that shows it).
pub fn outage_reason_error(reason: &str) -> Option<String> {
    let chars = reason.chars().count();
    if chars > MAX_OUTAGE_REASON_CHARS {
        return Some(format!(
            "reason: {chars} characters; at most {MAX_OUTAGE_REASON_CHARS}"
        ));
    }
    reason
        .chars()
        .position(|c| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}'))
        .map(|at| {
            format!("reason: control character at position {at}; write the reason on one line")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_someone_waits_for_goes_before_the_bulk_of_a_drain() {
        let check = CheckRequest {
            subject: onshi_model::CheckSubject::Card {
                card_id: onshi_model::CardId::parse("card-1").unwrap(),
            },
            service_date: chrono::NaiveDate::from_ymd_opt(2026, 11, 23).unwrap(),
        };
        let bulk = [
            Request::Sync(Vec::new()),
            Request::Batch(vec![check.clone()]),
        ];
        let waited_for = [
            Request::Ping,
            Request::Check(check),
            Request::Outage {
                active: true,
                reason: "reader broken".into(),
            },
        ];
        for w in &waited_for {
            for b in &bulk {
                assert!(w.priority() > b.priority(), "{w:?} before {b:?}");
                assert!(
                    w.answer_priority() > b.answer_priority(),
                    "{w:?}'s answer before {b:?}'s"
                );
            }
        }
        let (sync, batch) = (&bulk[0], &bulk[1]);
        assert!(
            batch.priority() > sync.priority(),
            "to the reconciler: the small batch inquiry before the journal's records"
        );
        assert!(
            sync.answer_priority() > batch.answer_priority(),
            "back to the edge: acknowledgements and settlements before the batch answers"
        );
    }

    fn every_kind() -> Vec<Request> {
        let check = CheckRequest {
            subject: onshi_model::CheckSubject::Card {
                card_id: onshi_model::CardId::parse("card-1").unwrap(),
            },
            service_date: chrono::NaiveDate::from_ymd_opt(2026, 11, 23).unwrap(),
        };
        let v1 = SearchQueryV1 {
            name: Some("山田".into()),
            name_kana: None,
            birth_date: chrono::NaiveDate::from_ymd_opt(1980, 4, 1).unwrap(),
            sex: onshi_model::Sex::Male,
            insurer_name: None,
            address: None,
        };
        vec![
            Request::Ping,
            Request::Check(check.clone()),
            Request::Batch(vec![check]),
            Request::SearchV1(v1.clone()),
            Request::Outage {
                active: true,
                reason: "停電".into(),
            },
            Request::Sync(vec![vec![1, 2, 3]]),
            Request::Search(v1.into()),
        ]
    }

    /// The first wave's forms, as its binaries encoded them (its enums up to `Sync`, its search
    /// query and hit without the fields added since).
    mod first_wave {
        use serde::{Deserialize, Serialize};

        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        pub struct SearchQuery {
            pub name: Option<String>,
            pub name_kana: Option<String>,
            pub birth_date: chrono::NaiveDate,
            pub sex: onshi_model::Sex,
            pub insurer_name: Option<String>,
            pub address: Option<String>,
        }

        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        pub enum Request {
            Ping,
            Check(onshi_model::CheckRequest),
            Batch(Vec<onshi_model::CheckRequest>),
            Search(SearchQuery),
            Outage { active: bool, reason: String },
            Sync(Vec<Vec<u8>>),
        }

        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        pub struct SearchHit {
            pub person_id: onshi_model::PersonId,
            pub score: f32,
            pub qualification: onshi_model::Qualification,
        }

        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        pub enum Response {
            Pong,
            Check(onshi_model::CheckOutcome),
            Error {
                code: String,
                message: String,
            },
            Batch(Vec<onshi_model::CheckOutcome>),
            Search(Vec<SearchHit>),
            Outage {
                active: bool,
                since: Option<chrono::DateTime<chrono::Utc>>,
                until: Option<chrono::DateTime<chrono::Utc>>,
            },
            Sync(Vec<Vec<u8>>),
        }
    }

    #[test]
    fn a_first_wave_edge_is_understood_and_answered_in_its_form_and_never_misreads_todays() {
        let birth_date = chrono::NaiveDate::from_ymd_opt(1980, 4, 1).unwrap();
        let old = first_wave::Request::Search(first_wave::SearchQuery {
            name: Some("山田 太郎".into()),
            name_kana: Some("ヤマダ タロウ".into()),
            birth_date,
            sex: onshi_model::Sex::Male,
            insurer_name: None,
            address: Some("東京都".into()),
        });
        // Its search request reads as `SearchV1`, today's query without a service date.
        let Request::SearchV1(q) = decode::<Request>(&encode(&old)).unwrap() else {
            panic!("a first-wave search")
        };
        let q = SearchQuery::from(q);
        assert_eq!(
            (q.name.as_deref(), q.birth_date, q.service_date),
            (Some("山田 太郎"), birth_date, None)
        );
        // The answer it gets back is one it reads.
        let qualification = crate::synth::generate(&crate::synth::SynthParams {
            people: 1,
            seed: 2,
            today: chrono::NaiveDate::from_ymd_opt(2026, 11, 23).unwrap(),
        })
        .remove(0);
        let hit = SearchHit {
            person_id: qualification.person_id.clone(),
            score: 0.9,
            qualification: qualification.clone(),
            reasons: vec![
                HitReason::of(&onshi_fallback::Reason::Sex(
                    onshi_fallback::index::SexMatch::Same,
                ))
                .unwrap(),
            ],
        };
        let answer = Response::SearchV1(vec![hit.clone().into(), hit.clone().into()]);
        let first_wave::Response::Search(back) =
            decode::<first_wave::Response>(&encode(&answer)).unwrap()
        else {
            panic!("a first-wave search answer")
        };
        assert_eq!(back.len(), 2);
        assert_eq!(back[1].qualification, qualification);
        // Today's search is a kind the first wave does not know: refused by kind, not misread.
        let today = encode(&Request::Search(q));
        assert_eq!(
            usize::from(today[2]),
            first_wave_kinds(),
            "appended after the first wave's"
        );
        assert!(decode::<first_wave::Request>(&today).is_err());
        // And today's answer is never taken for the first wave's.
        assert!(decode::<first_wave::Response>(&encode(&Response::Search(vec![hit]))).is_err());
    }

    /// How many request kinds the first wave had (`Ping` … `Sync`).
    fn first_wave_kinds() -> usize {
        6
    }

    #[test]
    fn a_requests_kind_is_known_from_its_first_three_bytes() {
        for (req, kind) in every_kind().iter().zip(RequestKind::ALL) {
            let frame = encode(req);
            let head: [u8; REQUEST_HEAD_BYTES] = frame[..REQUEST_HEAD_BYTES].try_into().unwrap();
            assert_eq!(request_kind(&head).unwrap(), kind, "{req:?}");
            assert_eq!(req.kind(), kind, "one spelling of each kind");
        }
        assert!(matches!(
            request_kind(&[0, 1, 7]),
            Err(DecodeError::UnknownKind(7))
        ));
        assert!(matches!(
            request_kind(&[0, 7, 0]),
            Err(DecodeError::UnsupportedVersion { got: 7 })
        ));
    }

    #[test]
    fn the_largest_honest_requests_fit_their_kinds_limits() {
        // The longest card id and insurance card the model accepts, in four-byte characters
        // where text is free.
        let check = CheckRequest {
            subject: onshi_model::CheckSubject::Card {
                card_id: onshi_model::CardId::parse(&"C".repeat(64)).unwrap(),
            },
            service_date: chrono::NaiveDate::from_ymd_opt(2026, 11, 23).unwrap(),
        };
        let batch = Request::Batch(vec![check.clone(); MAX_BATCH]);
        assert!(encode(&batch).len() * 4 < RequestKind::Batch.max_frame_bytes());
        assert!(encode(&Request::Check(check)).len() * 4 < RequestKind::Check.max_frame_bytes());
        let outage = Request::Outage {
            active: true,
            reason: "𠮷".repeat(MAX_OUTAGE_REASON_CHARS),
        };
        assert!(encode(&outage).len() * 4 < RequestKind::Outage.max_frame_bytes());
        assert!(encode(&Request::Ping).len() <= RequestKind::Ping.max_frame_bytes());
    }

    #[test]
    fn a_search_hits_reasons_round_trip_and_read_back_as_the_replicas_json() {
        use onshi_fallback::Reason;
        use onshi_fallback::index::{BirthMatch, NameMatch, Partial, SexMatch};
        let reasons = [
            Reason::FamilyName(NameMatch::Exact),
            Reason::FamilyName(NameMatch::Differs),
            Reason::GivenName(NameMatch::Variant),
            Reason::BirthDate(BirthMatch::Era),
            Reason::Sex(SexMatch::Unknown),
            Reason::InsurerName(Partial::Partial),
            Reason::Address(Partial::No),
        ];
        let hit = SearchHit {
            person_id: PersonId::parse("P0000001").unwrap(),
            score: 0.875,
            qualification: crate::synth::generate(&crate::synth::SynthParams {
                people: 1,
                seed: 1,
                today: chrono::NaiveDate::from_ymd_opt(2026, 11, 23).unwrap(),
            })
            .remove(0),
            reasons: reasons.iter().map(|r| HitReason::of(r).unwrap()).collect(),
        };
        let frame = encode(&Response::Search(vec![hit.clone(), hit.clone()]));
        let Response::Search(back) = decode::<Response>(&frame).unwrap() else {
            panic!("a search answer")
        };
        assert_eq!(back, vec![hit.clone(), hit]);
        for (r, w) in reasons.iter().zip(&back[0].reasons) {
            assert_eq!(w.to_json(), serde_json::to_value(r).unwrap(), "{r:?}");
            assert_eq!(w.reason(), Some(*r));
        }
        assert_eq!(
            back[0].reasons[1].to_json(),
            serde_json::json!({"field": "family_name", "match": "differs"})
        );
    }

    /// Why [`HitReason`] exists: postcard cannot read an adjacently tagged enum back.
    #[test]
    fn postcard_cannot_read_an_adjacently_tagged_enum() {
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case", tag = "field", content = "match")]
        enum Tagged {
            Name(u8),
        }
        let bytes = postcard::to_allocvec(&Tagged::Name(1)).unwrap();
        assert!(postcard::from_bytes::<Tagged>(&bytes).is_err());
    }

    #[test]
    fn round_trip_and_version_refusal() {
        let f = encode(&Request::Ping);
        assert_eq!(decode::<Request>(&f).unwrap(), Request::Ping);
        let f = encode_with_version(7, &Request::Ping);
        let e = decode::<Request>(&f).unwrap_err();
        assert_eq!(
            e.to_string(),
            "unsupported wire version 7; this build speaks version 1"
        );
        assert!(matches!(
            decode::<Request>(&[1]),
            Err(DecodeError::TooShort(1))
        ));
        assert!(matches!(
            decode::<Request>(&[0, 1, 200]),
            Err(DecodeError::Body(_))
        ));
    }
}
