//! The access log as the API writes and shows it: [`Audit`] appends an entry for every read or
//! write of personal data (who, role, what, which ids, when, from where) so that it becomes
//! durable in the journal's group commit, before the answer; `GET /v1/audit` (admin) lists them.
//!
//! Only ids go in (checks, records, people, accounts), never a searched name, kana, birth date,
//! card number or address: the entry type has no field that could hold one.

use axum::Extension;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use chrono::{DateTime, NaiveDate, Utc};
use onshi_model::{PersonId, Qualification};
use onshi_sync::crdt::RecordId;
use serde::Deserialize;

use super::{ApiError, Caller, unavailable};
use crate::auth::AccountName;
use crate::auth::audit::{AuditAction, AuditEntry, AuditLog, AuditPage, AuditQuery, SubjectId};
use crate::journal::Journal;

/// The access log and the journal whose group commit makes its entries durable.
#[derive(Debug, Clone)]
pub struct Audit {
    log: AuditLog,
    journal: Journal,
}

impl Audit {
    /// `log` must live in the same store as `journal` (one group commit for both).
    pub fn new(log: AuditLog, journal: Journal) -> Audit {
        Audit { log, journal }
    }

    pub fn log(&self) -> &AuditLog {
        &self.log
    }

    /// Appends an entry without waiting for the disk: for a handler whose own write's commit
    /// follows (that commit makes both durable before the answer).
    pub fn note(
        &self,
        caller: &Caller,
        action: AuditAction,
        subject: Vec<SubjectId>,
    ) -> Result<(), ApiError> {
        let entry = AuditEntry {
            at: Utc::now(),
            actor: caller.actor.name.clone(),
            role: caller.actor.role,
            action,
            subject,
            from: caller.from,
        };
        self.log
            .append_uncommitted(&entry)
            .map(|_| ())
            .map_err(unavailable)
    }

    /// Appends an entry and waits until it is on disk: for a read (nothing else to commit).
    pub async fn read(
        &self,
        caller: &Caller,
        action: AuditAction,
        subject: Vec<SubjectId>,
    ) -> Result<(), ApiError> {
        self.note(caller, action, subject)?;
        self.journal.commit().await.map_err(unavailable)
    }
}

/// A check's id as a subject (ids the journal made always parse; anything else is left out).
pub fn check_id(id: &str) -> Option<SubjectId> {
    RecordId::parse(id).ok().map(SubjectId::Check)
}

/// A provisional record's or a queue item's id as a subject.
pub fn record_id(id: &str) -> Option<SubjectId> {
    RecordId::parse(id).ok().map(SubjectId::Record)
}

/// The people of an answer, once each.
pub fn people<'a>(qualifications: impl IntoIterator<Item = &'a Qualification>) -> Vec<SubjectId> {
    let mut out: Vec<PersonId> = Vec::new();
    for q in qualifications {
        if !out.contains(&q.person_id) {
            out.push(q.person_id.clone());
        }
    }
    out.into_iter().map(SubjectId::Person).collect()
}

/// `GET /v1/audit`'s query: `since` (RFC 3339 or a date), `actor`, `limit` (default 10000).
#[derive(Debug, Deserialize)]
pub struct AuditParams {
    since: Option<String>,
    actor: Option<String>,
    limit: Option<usize>,
}

/// The most entries one `GET /v1/audit` lists unless `limit` says otherwise.
const DEFAULT_LIMIT: usize = 10_000;

fn bad_param(field: &str, message: String) -> ApiError {
    ApiError {
        status: StatusCode::BAD_REQUEST,
        code: "invalid_format".into(),
        field: Some(field.into()),
        message: format!("{field}: {message}"),
    }
}

/// `since` as given: an RFC 3339 time, or a date (its start, UTC).
pub fn parse_since(text: &str) -> Result<DateTime<Utc>, ApiError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or_else(|| {
            bad_param(
                "since",
                format!("'{text}' is not a time (2026-04-01T09:00:00Z) or a date (2026-04-01)"),
            )
        })
}

/// `GET /v1/audit` (admin): `{"entries":[{"at","actor","role","action","subject","from"}],"more"}`,
/// oldest first. Reading the log is itself logged.
pub async fn get_audit(
    State(audit): State<Audit>,
    Extension(caller): Extension<Caller>,
    params: Result<Query<AuditParams>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<AuditPage>, ApiError> {
    let Query(p) = params.map_err(|e| bad_param("query", e.body_text()))?;
    let query = AuditQuery {
        since: p.since.as_deref().map(parse_since).transpose()?,
        actor: p
            .actor
            .as_deref()
            .map(|a| AccountName::parse(a).map_err(|e| bad_param("actor", e.to_string())))
            .transpose()?,
        limit: p.limit.unwrap_or(DEFAULT_LIMIT),
    };
    let log = audit.log.clone();
    let page = tokio::task::spawn_blocking(move || log.list(&query))
        .await
        .map_err(unavailable)?
        .map_err(unavailable)?;
    audit
        .read(&caller, AuditAction::AuditRead, Vec::new())
        .await?;
    Ok(axum::Json(page))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_a_time_or_a_date_and_names_itself_otherwise() {
        assert_eq!(
            parse_since("2026-04-01").unwrap(),
            "2026-04-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        assert_eq!(
            parse_since("2026-04-01T09:00:00+09:00").unwrap(),
            "2026-04-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        let e = parse_since("yesterday").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("since"));
        assert!(e.message.starts_with("since: "), "{}", e.message);
    }
}
