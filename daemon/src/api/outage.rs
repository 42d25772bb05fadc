//! This facility's outage: `POST /v1/outage` (admin) declares or ends it, here and at the centre;
//! `GET /v1/outage` shows it.

use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use chrono::{DateTime, Utc};
use onshi_model::fields::Fields;
use onshi_model::{ErrorCode, FieldError};
use onshi_sync::wire::{Request, Response as WireResponse};
use serde::Serialize;
use serde_json::Value;

use super::audit::Audit;
use super::{ApiError, Caller, parse_body, unavailable};
use crate::auth::audit::AuditAction;
use crate::gate::Gate;
use crate::journal::OutageState;

/// The outage as this edge knows it.
#[derive(Debug, Serialize)]
pub struct OutageAnswer {
    pub active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<Option<DateTime<Utc>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub central: Option<bool>,
    /// Whether the centre has granted central search (disaster mode) to this facility: a
    /// declaration is a request; the centre's operators grant it (`until` is the grant's end).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub granted: Option<bool>,
    /// Why the centre did not record it (declaring only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<Option<String>>,
}

impl OutageAnswer {
    fn of(o: &OutageState, note: Option<Option<String>>) -> OutageAnswer {
        OutageAnswer {
            active: o.active,
            reason: Some(o.reason.clone()),
            since: Some(o.since),
            until: Some(o.until),
            central: Some(o.central),
            granted: Some(o.active && o.until.is_some_and(|u| u > Utc::now())),
            note,
        }
    }
}

/// `POST /v1/outage` `{"active": true|false, "reason"}`: declares or ends this facility's outage,
/// locally (durable) and at the reconciler when the link is up.
pub(super) async fn post_outage(
    State(gate): State<Gate>,
    State(audit): State<Audit>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<axum::Json<OutageAnswer>, ApiError> {
    let v = parse_body(&body)?;
    let (active, reason) = declaration(&v)?;
    let (state, note) = ask_centre(&gate, active, reason)
        .await
        .map_err(unavailable)?;
    audit.note(&caller, AuditAction::OutageRequest, Vec::new())?;
    gate.journal.set_outage(&state).await.map_err(unavailable)?;
    tracing::warn!(
        active,
        central = state.central,
        "outage {}",
        if active { "declared" } else { "ended" }
    );
    Ok(axum::Json(OutageAnswer::of(&state, Some(note))))
}

/// `{"active", "reason"}` read and checked (the reason required to declare, one line of at most
/// [`MAX_OUTAGE_REASON_CHARS`]): shared with the admin page's form, refused for the same reasons.
pub(crate) fn declaration(v: &Value) -> Result<(bool, String), FieldError> {
    let f = Fields::root(v)?;
    f.deny_unknown(&["active", "reason"])?;
    let active = match v.get("active") {
        Some(Value::Bool(b)) => *b,
        None | Some(Value::Null) => {
            return Err(FieldError::new(
                "active",
                ErrorCode::MissingField,
                "active: is required (true declares an outage, false ends it)",
            ));
        }
        Some(_) => {
            return Err(FieldError::new(
                "active",
                ErrorCode::WrongType,
                "active: must be true or false",
            ));
        }
    };
    let reason =
        crate::provisional::opt_text(&f, "reason", MAX_OUTAGE_REASON_CHARS)?.unwrap_or_default();
    if active && reason.trim().is_empty() {
        return Err(FieldError::new(
            "reason",
            ErrorCode::MissingField,
            "reason: say why (e.g. \"card reader broken\"); it is logged centrally",
        ));
    }
    Ok((active, reason))
}

/// Declares (or ends) the outage at the reconciler when the link is up: the state to record here
/// and, when the centre did not record it, why. Nothing is written: the caller logs the request
/// and then records the state (`Journal::set_outage`). Shared with the admin page.
pub(crate) async fn ask_centre(
    gate: &Gate,
    active: bool,
    reason: String,
) -> Result<(OutageState, Option<String>), crate::journal::JournalError> {
    let previous = gate.journal.outage()?;
    let since = previous
        .as_ref()
        .filter(|o| o.active && active)
        .map_or_else(chrono::Utc::now, |o| o.since);
    let mut state = OutageState {
        active,
        reason: reason.clone(),
        since,
        central: false,
        until: None,
    };
    let mut note = None;
    match gate
        .link
        .call(Request::Outage { active, reason }, gate.deadline())
        .await
    {
        // The centre recorded the request; `granted` says whether central search is open to
        // this facility now (the centre's grant, until its end).
        Ok(WireResponse::Outage {
            active: granted,
            until,
            ..
        }) => {
            state.central = true;
            state.until = until.filter(|_| granted && active);
            if active && !granted {
                note = Some(
                    "the centre has the request; central search opens when the centre grants disaster mode".into(),
                );
            }
        }
        Ok(other) => note = Some(format!("the reconciler did not record it: {other:?}")),
        Err(e) => {
            note = Some(format!(
                "recorded here only; the reconciler is unreachable ({e}): declare again once the link is up"
            ))
        }
    }
    Ok((state, note))
}

pub(super) async fn get_outage(
    State(gate): State<Gate>,
) -> Result<axum::Json<OutageAnswer>, ApiError> {
    let o = gate.journal.outage().map_err(unavailable)?;
    Ok(axum::Json(match o {
        Some(o) => OutageAnswer::of(&o, None),
        None => OutageAnswer {
            active: false,
            reason: None,
            since: None,
            until: None,
            central: None,
            granted: Some(false),
            note: None,
        },
    }))
}

/// The longest outage reason taken (it is logged and sent to the centre).
pub const MAX_OUTAGE_REASON_CHARS: usize = 200;
