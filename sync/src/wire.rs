//! The messages between edge and reconciler, as they travel on the link: postcard bodies behind a
//! two-byte version tag. One RPC is one QUIC bidirectional stream: the client writes one request
//! frame and finishes its side; the server answers with one response frame and finishes.
//!
//! Never change the meaning of an existing variant: add variants at the end, and bump
//! [`WIRE_VERSION`] when an old peer could misread the new form.

use chrono::{DateTime, Utc};
use onshi_fallback::SearchQuery;
use onshi_model::{CheckOutcome, CheckRequest, PersonId, Qualification};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// The version this build speaks.
pub const WIRE_VERSION: u16 = 1;

/// The largest frame either side accepts (a batch answer of a few thousand people fits easily).
pub const MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;

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
    /// Central search mode (reader broken, link up): only for a facility in a declared outage.
    Search(SearchQuery),
    /// Declares (`active`) or ends an outage of the facility, with a reason for the log.
    Outage { active: bool, reason: String },
    /// Journal sync: the edge's pending [`SyncMessage`](crate::protocol::SyncMessage)s, each
    /// encoded with `SyncMessage::encode`. The facility is the connection's, never a message's.
    Sync(Vec<Vec<u8>>),
}

impl Request {
    /// How urgent the request is on a full line, edge to reconciler (its QUIC stream's priority:
    /// higher is sent first). A check, search or outage declaration has someone at reception
    /// waiting, so it goes before the bulk of a drain. Within the bulk, the message that sets
    /// the larger one moving goes first: a batch inquiry's request (card numbers and dates, which
    /// the reconciler answers with whole qualifications) before a sync request (whole journal
    /// records, answered with acknowledgements). See [`Request::answer_priority`] for the way
    /// back; the bytes of a drain by kind are in BENCHMARKS.md.
    pub fn priority(&self) -> i32 {
        match self {
            Request::Ping | Request::Check(_) | Request::Search(_) | Request::Outage { .. } => 2,
            Request::Batch(_) => 1,
            Request::Sync(_) => 0,
        }
    }

    /// The priority of the answer's stream, reconciler to edge: reception's RPCs first, then the
    /// sync answers (acknowledgements that let the edge send more, and settlements), then the
    /// batch inquiries' answers (the bulk of the line back).
    pub fn answer_priority(&self) -> i32 {
        match self {
            Request::Ping | Request::Check(_) | Request::Search(_) | Request::Outage { .. } => 2,
            Request::Sync(_) => 1,
            Request::Batch(_) => 0,
        }
    }
}

/// One candidate of a central search: the person, a score in 0..=1, and their qualification (the
/// one valid on the day, else the latest).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchHit {
    pub person_id: PersonId,
    pub score: f32,
    pub qualification: Qualification,
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
    /// Candidates, best first.
    Search(Vec<SearchHit>),
    /// The facility's outage as the reconciler now records it.
    Outage {
        active: bool,
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
    },
    /// The reconciler's pending sync messages for this facility, each `SyncMessage::encode`d.
    Sync(Vec<Vec<u8>>),
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
