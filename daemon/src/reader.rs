//! The card readers (a hospital has up to three): each reader bridge (the face-authentication
//! reader's driver) posts heartbeats and "card presented" events under its own id; a reader that
//! falls silent or reports a fault is down, which makes the mode `degraded` with a reason naming
//! it. [`ReaderTracker`] is the pure part (time passed in); the API and the monitor feed it.
//! Also here: how a card check's holder was verified and by which route it came
//! ([`CardVerification`]), which the journal keeps with the check.
//!
//! It must never let one reader's heartbeat or card clear another reader's fault, never forget a
//! configured reader because it has not spoken yet, and never hold personal data (a reader's id
//! and its own fault text only).

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use chrono::{DateTime, Utc};
use onshi_model::{CheckSubject, ErrorCode, FieldError, Validity};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::mode::ModeEvent;

/// The most readers tracked at once (configured and seen): a facility has a few; a client posting
/// made-up ids must not grow the edge's memory or the status page without bound.
pub const MAX_READERS: usize = 32;
/// The longest reader id.
pub const MAX_READER_ID: usize = 64;
/// A reader's own fault text is cut to this many characters (it goes into the log and status).
const MAX_FAULT_CHARS: usize = 200;

/// Checks a reader id (`field` names where it came from: `reader_id`, `readers`, `--reader`).
pub fn check_reader_id(field: &str, id: &str) -> Result<(), FieldError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_READER_ID
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            ErrorCode::InvalidFormat,
            format!(
                "{field}: '{}' is not a reader id (1 to {MAX_READER_ID} letters, digits, '-', '_' or '.')",
                id.chars().take(MAX_READER_ID + 1).collect::<String>()
            ),
        ))
    }
}

/// One reader as last heard.
#[derive(Debug, Clone)]
struct Reader {
    /// Named in the configuration (expected from the start), rather than only seen.
    configured: bool,
    /// When it was last heard (a heartbeat or a card), on the tracker's clock.
    last_heard_ms: Option<u64>,
    /// Why it is down, if it is.
    down: Option<String>,
}

/// A reader's state as the status shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReaderState {
    /// Heard within the timeout, no fault reported.
    Up,
    /// Silent past the timeout, or reporting a fault.
    Down,
    /// Configured but not heard yet, and the timeout since the start has not passed.
    Waiting,
}

/// One reader in `GET /v1/status` (`readers`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReaderStatus {
    pub id: String,
    pub state: ReaderState,
    /// Why it is down (or waiting); null when up.
    pub reason: Option<String>,
    /// Seconds since it was last heard; null if never.
    pub last_heard_s: Option<f64>,
    /// Named in the configuration (`readers`, `--reader`), rather than only seen.
    pub configured: bool,
}

/// The readers' health. Each reader has its own state; events name the reader they concern.
#[derive(Debug, Clone)]
pub struct ReaderTracker {
    timeout: Duration,
    /// When the tracker started: a configured reader is expected from then on.
    started_ms: u64,
    readers: BTreeMap<String, Reader>,
}

impl ReaderTracker {
    /// `configured`: the readers expected (ids already checked by the configuration).
    pub fn new(timeout: Duration, configured: &[String], now_ms: u64) -> Self {
        let readers = configured
            .iter()
            .map(|id| {
                (
                    id.clone(),
                    Reader {
                        configured: true,
                        last_heard_ms: None,
                        down: None,
                    },
                )
            })
            .collect();
        ReaderTracker {
            timeout,
            started_ms: now_ms,
            readers,
        }
    }

    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// A heartbeat from `reader_id`: `fault` is the reader's own report of a problem. Refused
    /// (naming `reader_id`) for a malformed id or a new reader past [`MAX_READERS`].
    pub fn heartbeat(
        &mut self,
        now_ms: u64,
        reader_id: &str,
        fault: Option<String>,
    ) -> Result<Option<ModeEvent>, FieldError> {
        check_reader_id("reader_id", reader_id)?;
        if !self.readers.contains_key(reader_id) && self.readers.len() >= MAX_READERS {
            return Err(FieldError::new(
                "reader_id",
                ErrorCode::OutOfRange,
                format!(
                    "reader_id: '{reader_id}' would be reader number {}; at most {MAX_READERS} are tracked (a restart forgets readers no longer configured)",
                    MAX_READERS + 1
                ),
            ));
        }
        let r = self.readers.entry(reader_id.to_string()).or_insert(Reader {
            configured: false,
            last_heard_ms: None,
            down: None,
        });
        r.last_heard_ms = Some(now_ms);
        Ok(match fault {
            Some(f) => {
                let f: String = f.chars().take(MAX_FAULT_CHARS).collect();
                set_down(reader_id, r, format!("reader {reader_id} reports: {f}"))
            }
            // Only this reader's own fault is cleared: the others keep theirs.
            None => r.down.take().map(|_| ModeEvent::ReaderUp {
                reader: reader_id.to_string(),
            }),
        })
    }

    /// Time passes: a reader silent for longer than the timeout is down (a configured reader
    /// never heard counts from the start).
    pub fn tick(&mut self, now_ms: u64) -> Vec<ModeEvent> {
        let timeout = self.timeout.as_millis() as u64;
        let mut events = Vec::new();
        for (id, r) in &mut self.readers {
            if r.down.is_some() {
                continue;
            }
            let since = r.last_heard_ms.unwrap_or(self.started_ms);
            let silent = now_ms.saturating_sub(since);
            if silent <= timeout {
                continue;
            }
            let reason = match r.last_heard_ms {
                Some(_) => format!("no heartbeat from reader {id} for {} s", silent / 1000),
                None => format!(
                    "no heartbeat from reader {id} since the start ({} s); it is configured",
                    silent / 1000
                ),
            };
            events.extend(set_down(id, r, reason));
        }
        events
    }

    /// Every reader, by id.
    pub fn snapshot(&self, now_ms: u64) -> Vec<ReaderStatus> {
        self.readers
            .iter()
            .map(|(id, r)| {
                let (state, reason) = match (&r.down, r.last_heard_ms) {
                    (Some(why), _) => (ReaderState::Down, Some(why.clone())),
                    (None, Some(_)) => (ReaderState::Up, None),
                    (None, None) => (ReaderState::Waiting, Some("no heartbeat yet".to_string())),
                };
                ReaderStatus {
                    id: id.clone(),
                    state,
                    reason,
                    last_heard_s: r
                        .last_heard_ms
                        .map(|t| now_ms.saturating_sub(t) as f64 / 1000.0),
                    configured: r.configured,
                }
            })
            .collect()
    }
}

fn set_down(id: &str, r: &mut Reader, reason: String) -> Option<ModeEvent> {
    if r.down.as_deref() == Some(reason.as_str()) {
        return None;
    }
    r.down = Some(reason.clone());
    Some(ModeEvent::ReaderDown {
        reader: id.to_string(),
        reason,
    })
}

/// The single `reader` of `GET /v1/status` from before several readers (kept for clients that
/// read it): the first reader down, else the one heard most recently, else `none`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReaderSummary {
    /// `none`, `up`, `down` or `waiting`.
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reader_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_heartbeat_s: Option<f64>,
}

impl ReaderSummary {
    pub fn of(readers: &[ReaderStatus]) -> Self {
        let pick = readers
            .iter()
            .find(|r| r.state == ReaderState::Down)
            .or_else(|| {
                readers
                    .iter()
                    .filter(|r| r.state == ReaderState::Up)
                    .min_by(|a, b| {
                        a.last_heard_s
                            .partial_cmp(&b.last_heard_s)
                            .unwrap_or(std::cmp::Ordering::Equal)
                    })
            })
            .or_else(|| readers.first());
        match pick {
            None => ReaderSummary {
                state: "none",
                reader_id: None,
                reason: None,
                last_heartbeat_s: None,
            },
            Some(r) => ReaderSummary {
                state: match r.state {
                    ReaderState::Up => "up",
                    ReaderState::Down => "down",
                    ReaderState::Waiting => "waiting",
                },
                reader_id: Some(r.id.clone()),
                reason: r.reason.clone(),
                last_heartbeat_s: r.last_heard_s,
            },
        }
    }
}

/// How many card checks at the readers the check page lists.
pub const RECENT_CARDS: usize = 5;

/// One card check at a reader, as the check page lists it: no name, no card number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardSeen {
    pub at: DateTime<Utc>,
    pub reader_id: String,
    pub verified: Verified,
    pub validity: Validity,
    pub check_id: String,
}

/// The last [`RECENT_CARDS`] card checks at the readers, newest last. In memory only: the
/// journal holds every check; this is what the counter glances at, not a record.
#[derive(Debug, Default)]
pub struct RecentCards {
    seen: VecDeque<CardSeen>,
}

impl RecentCards {
    pub fn note(&mut self, card: CardSeen) {
        if self.seen.len() == RECENT_CARDS {
            self.seen.pop_front();
        }
        self.seen.push_back(card);
    }

    /// Newest first.
    pub fn latest_first(&self) -> Vec<CardSeen> {
        self.seen.iter().rev().cloned().collect()
    }
}

/// How the card holder was verified before the card was checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verified {
    /// Face authentication at the reader.
    Face,
    /// The card's PIN.
    Pin,
}

impl Verified {
    pub fn as_str(self) -> &'static str {
        match self {
            Verified::Face => "face",
            Verified::Pin => "pin",
        }
    }

    /// `face` or `pin`, read from the JSON value of the field `verified`.
    pub fn from_json(v: Option<&Value>) -> Result<Verified, FieldError> {
        match v {
            None | Some(Value::Null) => Err(FieldError::new(
                "verified",
                ErrorCode::MissingField,
                "verified: is required for a card check: how the holder was verified (face or pin)",
            )),
            Some(Value::String(s)) => match s.as_str() {
                "face" => Ok(Verified::Face),
                "pin" => Ok(Verified::Pin),
                other => Err(FieldError::new(
                    "verified",
                    ErrorCode::OutOfRange,
                    format!(
                        "verified: '{}' is not face or pin; the holder must be verified before the card is checked",
                        other.chars().take(40).collect::<String>()
                    ),
                )),
            },
            Some(_) => Err(FieldError::new(
                "verified",
                ErrorCode::WrongType,
                "verified: must be the text face or pin",
            )),
        }
    }
}

/// The route a card check came by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Via {
    /// `POST /v1/checks` with `card_id` (a receipt computer's own reader).
    Api,
    /// `POST /v1/reader/card` from this reader.
    Reader(String),
}

impl From<Via> for String {
    fn from(v: Via) -> String {
        match v {
            Via::Api => "api".into(),
            Via::Reader(id) => format!("reader:{id}"),
        }
    }
}

impl TryFrom<String> for Via {
    type Error = String;

    fn try_from(s: String) -> Result<Via, String> {
        match s.strip_prefix("reader:") {
            Some(id) => Ok(Via::Reader(id.to_string())),
            None if s == "api" => Ok(Via::Api),
            None => Err(format!("'{s}' is not api or reader:ID")),
        }
    }
}

/// What the journal keeps of a card check: how the holder was verified, and the route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardVerification {
    pub verified: Verified,
    pub via: Via,
}

/// The verification a check needs: a card check must say how its holder was verified (`face` or
/// `pin`, field `verified`); an insurance-card check has none and must not carry one.
pub fn verification(
    subject: &CheckSubject,
    verified: Option<&Value>,
    via: Via,
) -> Result<Option<CardVerification>, FieldError> {
    match subject {
        CheckSubject::Card { .. } => Ok(Some(CardVerification {
            verified: Verified::from_json(verified)?,
            via,
        })),
        CheckSubject::InsuranceCard { .. } => match verified {
            None => Ok(None),
            Some(_) => Err(FieldError::new(
                "verified",
                ErrorCode::UnknownField,
                "verified: only a card_id check (a My Number card) carries how the holder was verified",
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn down(reader: &str, reason: &str) -> ModeEvent {
        ModeEvent::ReaderDown {
            reader: reader.into(),
            reason: reason.into(),
        }
    }

    fn up(reader: &str) -> ModeEvent {
        ModeEvent::ReaderUp {
            reader: reader.into(),
        }
    }

    #[test]
    fn the_recent_cards_are_the_last_few_newest_first() {
        let mut r = RecentCards::default();
        let card = |i: usize| CardSeen {
            at: DateTime::from_timestamp(1_700_000_000 + i as i64, 0).unwrap_or_default(),
            reader_id: format!("R{}", i % 2),
            verified: if i.is_multiple_of(2) {
                Verified::Face
            } else {
                Verified::Pin
            },
            validity: Validity::Valid,
            check_id: format!("c{i}"),
        };
        assert_eq!(r.latest_first(), vec![]);
        for i in 0..RECENT_CARDS + 2 {
            r.note(card(i));
        }
        let ids: Vec<String> = r.latest_first().into_iter().map(|c| c.check_id).collect();
        let want: Vec<String> = (2..RECENT_CARDS + 2)
            .rev()
            .map(|i| format!("c{i}"))
            .collect();
        assert_eq!(ids, want);
    }

    #[test]
    fn no_reader_is_not_a_fault_and_silence_or_a_fault_is() {
        let mut t = ReaderTracker::new(Duration::from_secs(10), &[], 0);
        assert_eq!(t.tick(60_000), vec![]);
        assert_eq!(t.snapshot(60_000), vec![]);
        assert_eq!(t.heartbeat(60_000, "R1", None), Ok(None));
        assert_eq!(t.tick(70_000), vec![]);
        assert_eq!(
            t.tick(70_001),
            vec![down("R1", "no heartbeat from reader R1 for 10 s")]
        );
        assert_eq!(t.tick(80_000), vec![], "reported once");
        assert_eq!(t.heartbeat(80_500, "R1", None), Ok(Some(up("R1"))));
        assert_eq!(
            t.heartbeat(81_000, "R1", Some("face camera error".into())),
            Ok(Some(down("R1", "reader R1 reports: face camera error")))
        );
        let s = t.snapshot(81_500);
        assert_eq!(
            (s[0].state, s[0].reason.as_deref(), s[0].last_heard_s),
            (
                ReaderState::Down,
                Some("reader R1 reports: face camera error"),
                Some(0.5)
            )
        );
        assert_eq!(t.heartbeat(82_000, "R1", None), Ok(Some(up("R1"))));
        assert_eq!(t.snapshot(82_000)[0].state, ReaderState::Up);
    }

    #[test]
    fn reader_a_down_and_b_healthy_names_a_and_b_never_clears_a() {
        let configured = ["A".to_string(), "B".to_string()];
        let mut t = ReaderTracker::new(Duration::from_secs(10), &configured, 0);
        // Both heard at the start; then only B keeps beating.
        assert_eq!(t.heartbeat(1_000, "A", None), Ok(None));
        assert_eq!(t.heartbeat(1_000, "B", None), Ok(None));
        let mut events = Vec::new();
        for s in 2..=20u64 {
            events.extend(t.heartbeat(s * 1_000, "B", None).unwrap());
            events.extend(t.tick(s * 1_000 + 500));
        }
        assert_eq!(
            events,
            vec![down("A", "no heartbeat from reader A for 10 s")]
        );
        // B's heartbeat and B's card (a heartbeat to the tracker) leave A down.
        assert_eq!(t.heartbeat(21_000, "B", None), Ok(None));
        let s = t.snapshot(21_000);
        assert_eq!(
            s.iter()
                .map(|r| (r.id.as_str(), r.state))
                .collect::<Vec<_>>(),
            vec![("A", ReaderState::Down), ("B", ReaderState::Up)]
        );
        // A fault of B is B's; its end clears B only.
        assert_eq!(
            t.heartbeat(22_000, "B", Some("PIN pad error".into())),
            Ok(Some(down("B", "reader B reports: PIN pad error")))
        );
        assert_eq!(t.heartbeat(23_000, "B", None), Ok(Some(up("B"))));
        assert_eq!(t.snapshot(23_000)[0].state, ReaderState::Down);
        // A itself comes back.
        assert_eq!(t.heartbeat(24_000, "A", None), Ok(Some(up("A"))));
        let summary = ReaderSummary::of(&t.snapshot(24_000));
        assert_eq!(summary.state, "up");
    }

    #[test]
    fn a_configured_reader_never_heard_is_down_after_the_timeout_and_a_seen_one_is_tracked() {
        let mut t = ReaderTracker::new(Duration::from_secs(10), &["R2".to_string()], 5_000);
        let s = t.snapshot(6_000);
        assert_eq!((s[0].state, s[0].configured), (ReaderState::Waiting, true));
        assert_eq!(ReaderSummary::of(&s).state, "waiting");
        assert_eq!(t.tick(15_000), vec![]);
        assert_eq!(
            t.tick(15_001),
            vec![down(
                "R2",
                "no heartbeat from reader R2 since the start (10 s); it is configured"
            )]
        );
        // A reader not configured but seen is tracked, and goes down when silent.
        assert_eq!(t.heartbeat(16_000, "R9", None), Ok(None));
        assert_eq!(
            t.tick(26_001),
            vec![down("R9", "no heartbeat from reader R9 for 10 s")]
        );
        let s = t.snapshot(26_001);
        assert_eq!(
            s.iter()
                .map(|r| (r.id.as_str(), r.configured))
                .collect::<Vec<_>>(),
            vec![("R2", true), ("R9", false)]
        );
    }

    #[test]
    fn reader_ids_are_checked_and_their_number_bounded() {
        let mut t = ReaderTracker::new(Duration::from_secs(10), &[], 0);
        let e = t.heartbeat(0, "R 1", None).unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.code),
            ("reader_id", ErrorCode::InvalidFormat)
        );
        assert!(t.heartbeat(0, "", None).is_err());
        for i in 0..MAX_READERS {
            t.heartbeat(0, &format!("R{i}"), None).unwrap();
        }
        let e = t.heartbeat(0, "one-too-many", None).unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.code),
            ("reader_id", ErrorCode::OutOfRange)
        );
        // A known reader still beats.
        assert_eq!(t.heartbeat(1, "R0", None), Ok(None));
    }

    #[test]
    fn a_card_check_needs_face_or_pin_and_an_insurance_card_check_has_none() {
        let card = CheckSubject::Card {
            card_id: onshi_model::CardId::parse("C0000001").unwrap(),
        };
        let e = verification(&card, None, Via::Api).unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.code),
            ("verified", ErrorCode::MissingField)
        );
        let e = verification(&card, Some(&Value::from("none")), Via::Api).unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.code),
            ("verified", ErrorCode::OutOfRange)
        );
        let e = verification(&card, Some(&Value::from(1)), Via::Api).unwrap_err();
        assert_eq!(e.code, ErrorCode::WrongType);
        let v = verification(&card, Some(&Value::from("pin")), Via::Reader("R1".into()))
            .unwrap()
            .unwrap();
        assert_eq!(v.verified, Verified::Pin);
        assert_eq!(
            serde_json::to_value(&v).unwrap(),
            serde_json::json!({"verified": "pin", "via": "reader:R1"})
        );
        let back: CardVerification =
            postcard::from_bytes(&postcard::to_allocvec(&v).unwrap()).unwrap();
        assert_eq!(back, v);
        let insurance = CheckSubject::InsuranceCard {
            card: onshi_model::InsuranceCardKey {
                insurer_number: onshi_model::InsurerNumber::parse("06130017").unwrap(),
                symbol: None,
                number: onshi_model::CardNumber::parse("4567").unwrap(),
                branch: None,
            },
            birth_date: chrono::NaiveDate::from_ymd_opt(1980, 4, 1).unwrap(),
        };
        assert_eq!(verification(&insurance, None, Via::Api), Ok(None));
        assert!(verification(&insurance, Some(&Value::from("face")), Via::Api).is_err());
    }
}
