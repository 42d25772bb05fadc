//! `POST /v1/sync-now`: a journal sync round now (no personal data in or out).

use axum::body::Bytes;
use axum::extract::State;
use chrono::{DateTime, Utc};
use onshi_model::fields::Fields;
use serde::Serialize;

use super::{ApiError, parse_body};
use crate::gate::Gate;

/// The sync state after the round.
#[derive(Debug, Serialize)]
pub struct SyncNowAnswer {
    pub synced: bool,
    pub outgoing: usize,
    pub incoming: usize,
    pub last_sync: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub link: &'static str,
}

pub(super) async fn post_sync_now(
    State(gate): State<Gate>,
    body: Bytes,
) -> Result<axum::Json<SyncNowAnswer>, ApiError> {
    let timeout_ms = if body.is_empty() {
        10_000
    } else {
        let v = parse_body(&body)?;
        let f = Fields::root(&v)?;
        f.deny_unknown(&["timeout_ms"])?;
        f.opt_u64("timeout_ms", 0, 600_000)?.unwrap_or(10_000)
    };
    let s = gate
        .sync
        .sync_now(std::time::Duration::from_millis(timeout_ms))
        .await;
    Ok(axum::Json(SyncNowAnswer {
        synced: s.synced,
        outgoing: s.outgoing,
        incoming: s.incoming,
        last_sync: s.last_sync,
        last_error: s.last_error,
        link: gate.link.state().name(),
    }))
}
