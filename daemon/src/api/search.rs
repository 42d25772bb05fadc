//! `POST /v1/search`: the outage search, centrally when an outage is declared and the link is up,
//! else over this facility's replica. The access log gets the candidates' person ids, never the
//! values searched for. Each candidate's qualification is the one valid on the query's
//! `service_date` (today when absent), and the answer says how far its best candidate can be
//! trusted (`confidence`, computed here for central answers too).

use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use chrono::{DateTime, Utc};
use onshi_fallback::{Confidence, Reason, SearchQuery};
use onshi_model::fields::Fields;
use onshi_model::{PersonId, Qualification};
use onshi_sync::wire::{HitReason, Request, Response as WireResponse};
use serde::Serialize;

use super::audit::Audit;
use super::{ApiError, Caller, parse_body, unavailable};
use crate::auth::SubjectId;
use crate::auth::audit::AuditAction;
use crate::gate::Gate;

/// One candidate, best first.
#[derive(Debug, Serialize)]
pub struct Candidate {
    pub person_id: PersonId,
    pub score: f32,
    /// Why they match, field by field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasons: Option<Vec<Reason>>,
    pub qualification: Qualification,
}

/// The search's answer.
#[derive(Debug, Serialize)]
pub struct SearchAnswer {
    pub source: &'static str,
    pub as_of: Option<DateTime<Utc>>,
    /// How far the best candidate can be trusted (`high|medium|low`).
    pub confidence: Confidence,
    pub candidates: Vec<Candidate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl SearchAnswer {
    fn people(&self) -> Vec<SubjectId> {
        self.candidates
            .iter()
            .map(|c| SubjectId::Person(c.person_id.clone()))
            .collect()
    }
}

pub(super) async fn post_search(
    State(gate): State<Gate>,
    State(audit): State<Audit>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let v = parse_body(&body)?;
    let f = Fields::root(&v)?;
    // Names are text: a number where a name belongs is the client's mistake.
    for name in ["name", "name_kana", "insurer_name", "address"] {
        f.opt_text(name)?;
    }
    let query = SearchQuery::from_json(&v)?;
    let today = chrono::Local::now().date_naive();
    let service_date = query.service_date.unwrap_or(today);
    onshi_model::plausible::check_service_date("service_date", service_date, today)?;
    // Born by the day of the care, and by today for a reservation ahead.
    onshi_model::plausible::check_birth_date(
        "birth_date",
        query.birth_date,
        service_date.min(today),
    )?;
    // The centre picks each candidate's qualification on the same day.
    let query = SearchQuery {
        service_date: Some(service_date),
        ..query
    };
    let outage = gate
        .journal
        .outage()
        .map_err(unavailable)?
        .filter(|o| o.active);
    let mut note = None;
    // With the link up the centre is asked whenever this facility is in an outage here or the
    // centre may have granted disaster mode (by facility or for its prefecture): the centre
    // decides, and says so when it has not granted it.
    if gate.link.state().is_up() {
        match gate
            .link
            .call(Request::Search(query.clone()), gate.deadline())
            .await
        {
            Ok(WireResponse::Search(hits)) => {
                let ranked: Vec<onshi_fallback::Candidate> = hits
                    .iter()
                    .map(|h| onshi_fallback::Candidate {
                        person_id: h.person_id.clone(),
                        score: h.score,
                        // A reason this build does not know (a newer centre's) is left out.
                        reasons: h.reasons.iter().filter_map(HitReason::reason).collect(),
                    })
                    .collect();
                let answer = SearchAnswer {
                    source: "online",
                    as_of: Some(Utc::now()),
                    confidence: onshi_fallback::confidence(&ranked),
                    candidates: hits
                        .into_iter()
                        .zip(ranked)
                        .map(|(h, r)| Candidate {
                            person_id: h.person_id,
                            score: h.score,
                            reasons: Some(r.reasons),
                            qualification: h.qualification,
                        })
                        .collect(),
                    note: None,
                };
                audit
                    .read(&caller, AuditAction::Search, answer.people())
                    .await?;
                return Ok(axum::Json(answer).into_response());
            }
            Ok(WireResponse::Error { code, .. }) if code == "no_outage_declared" => {
                note = Some(if outage.is_some() {
                    "central search not granted yet: the outage request is with the centre; searched this facility's replica".into()
                } else {
                    "no outage granted by the centre: searched this facility's replica (request disaster mode with POST /v1/outage)".into()
                })
            }
            Ok(WireResponse::Error { code, message }) => {
                note = Some(format!(
                    "central search refused ({code}: {message}); searched this facility's replica"
                ))
            }
            Ok(other) => {
                note = Some(format!(
                    "unexpected answer {other:?}; searched this facility's replica"
                ))
            }
            Err(e) => {
                note = Some(format!(
                    "central search unavailable ({e}); searched this facility's replica"
                ))
            }
        }
    }
    let mut candidates = Vec::new();
    let mut oldest: Option<chrono::DateTime<chrono::Utc>> = None;
    let found = gate
        .replica
        .search(&query, onshi_sync::registry::SEARCH_LIMIT);
    let confidence = onshi_fallback::confidence(&found);
    for c in found {
        let periods = gate.replica.periods_of(&c.person_id).map_err(unavailable)?;
        let Some(q) = onshi_sync::registry::best_period(periods, service_date) else {
            continue;
        };
        if let Some(t) = gate.replica.as_of(&c.person_id).map_err(unavailable)? {
            oldest = Some(oldest.map_or(t, |o| o.min(t)));
        }
        candidates.push(Candidate {
            person_id: c.person_id,
            score: c.score,
            reasons: Some(c.reasons),
            qualification: q,
        });
    }
    let answer = SearchAnswer {
        source: "replica",
        as_of: oldest,
        confidence,
        candidates,
        note,
    };
    // The people found, never what was searched for.
    audit
        .read(&caller, AuditAction::Search, answer.people())
        .await?;
    Ok(axum::Json(answer).into_response())
}
