//! What the reconciler counts, its `/metrics` page (Prometheus text) on an optional HTTP address
//! (`--metrics`, off by default), and its systemd STATUS line. Counters start at zero with the
//! process, as Prometheus counters do.
//!
//! Labels carry request kinds, validities, settlement kinds and facility codes: never anything
//! about a person.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use crate::store::CentralStore;
use onshi_sync::link::{Connections, KnownFacilities};
use onshi_sync::metrics::{Exposition, Histogram, LabelledCounter, labels};
use onshi_sync::wire::Request;

/// The request kinds, as the `kind` label spells them.
pub const REQUEST_KINDS: [&str; 6] = ["ping", "check", "batch", "search", "outage", "sync"];

/// The `kind` label of a request.
pub fn request_kind(req: &Request) -> &'static str {
    req.kind().name()
}

/// The reconciler's counters, shared by the service and the replication.
#[derive(Debug)]
pub struct ReconcilerMetrics {
    /// Requests answered, by kind.
    pub requests: LabelledCounter,
    /// Time to answer, one histogram per kind in [`REQUEST_KINDS`] order.
    latency: Vec<Histogram>,
    /// Checks answered (single and in batches), by validity.
    pub checks: LabelledCounter,
    /// Checks answered (single and in batches), by facility.
    pub facility_checks: LabelledCounter,
    /// Sync requests answered (one per edge round).
    pub sync_rounds: AtomicU64,
    /// Journal records merged and made durable from the edges' `Persist`.
    pub records_persisted: AtomicU64,
    /// Settlements written and made durable, by kind.
    pub settlements: LabelledCounter,
    /// Records set aside with a reason.
    pub quarantined: AtomicU64,
    /// Checks refused by the facility's rate limit (a batch counts its people), by facility.
    pub checks_throttled: LabelledCounter,
    /// Outage declarations refused by the facility's rate limit, by facility.
    pub outages_throttled: LabelledCounter,
    /// Settlements revised after a registry change (durable), by the new kind.
    pub revisions: LabelledCounter,
    /// Settlements settled again after a registry change, whether or not the verdict changed.
    pub revisits: AtomicU64,
    /// The registry change feed's position the search index and the revisits have caught up
    /// with (`crate::revisit`).
    pub registry_followed: AtomicU64,
}

impl Default for ReconcilerMetrics {
    fn default() -> Self {
        ReconcilerMetrics {
            requests: LabelledCounter::default(),
            latency: REQUEST_KINDS.iter().map(|_| Histogram::latency()).collect(),
            checks: LabelledCounter::default(),
            facility_checks: LabelledCounter::default(),
            sync_rounds: AtomicU64::new(0),
            records_persisted: AtomicU64::new(0),
            settlements: LabelledCounter::default(),
            quarantined: AtomicU64::new(0),
            checks_throttled: LabelledCounter::default(),
            outages_throttled: LabelledCounter::default(),
            revisions: LabelledCounter::default(),
            revisits: AtomicU64::new(0),
            registry_followed: AtomicU64::new(0),
        }
    }
}

impl ReconcilerMetrics {
    /// One request of `kind` answered after `took`.
    pub fn answered(&self, kind: &'static str, took: Duration) {
        self.requests.inc(&[kind]);
        if let Some(i) = REQUEST_KINDS.iter().position(|k| *k == kind) {
            self.latency[i].observe(took);
        }
    }

    /// Settlements made since start (every kind).
    pub fn settled(&self) -> u64 {
        self.settlements.snapshot().iter().map(|(_, n)| n).sum()
    }

    /// The systemd STATUS line: `serving · 3 facilities connected · 1,204 settled`.
    pub fn status_line(&self, connections: &Connections) -> String {
        let n = connections.facilities();
        format!(
            "serving · {n} {} connected · {} sync rounds · {} settled",
            if n == 1 { "facility" } else { "facilities" },
            thousands(self.sync_rounds.load(Ordering::Relaxed)),
            thousands(self.settled())
        )
    }

    /// The `/metrics` page.
    pub fn render(
        &self,
        connections: &Connections,
        known: &KnownFacilities,
        store: &dyn CentralStore,
    ) -> String {
        let mut e = Exposition::new();
        e.labelled_counter(
            "onshi_reconciler_requests_total",
            "Requests from the edges answered, by kind.",
            &["kind"],
            &self.requests,
        );
        let series: Vec<([(&str, &str); 1], &Histogram)> = REQUEST_KINDS
            .iter()
            .zip(&self.latency)
            .map(|(k, h)| ([("kind", *k)], h))
            .collect();
        let series: Vec<(&[(&str, &str)], &Histogram)> =
            series.iter().map(|(l, h)| (&l[..], *h)).collect();
        e.histogram(
            "onshi_reconciler_request_duration_seconds",
            "Time to answer a request, by kind.",
            &series,
        );
        e.labelled_counter(
            "onshi_reconciler_checks_total",
            "Checks answered (single and in batches), by validity.",
            &["validity"],
            &self.checks,
        );
        e.labelled_counter(
            "onshi_reconciler_facility_checks_total",
            "Checks answered (single and in batches), by facility.",
            &["facility"],
            &self.facility_checks,
        );
        e.counter(
            "onshi_reconciler_sync_rounds_total",
            "Journal sync requests answered.",
            &[(String::new(), self.sync_rounds.load(Ordering::Relaxed))],
        );
        e.counter(
            "onshi_reconciler_records_persisted_total",
            "Journal records from the edges merged and made durable.",
            &[(
                String::new(),
                self.records_persisted.load(Ordering::Relaxed),
            )],
        );
        e.labelled_counter(
            "onshi_reconciler_settlements_total",
            "Provisional records settled (durable), by kind.",
            &["kind"],
            &self.settlements,
        );
        e.counter(
            "onshi_reconciler_quarantined_total",
            "Journal records set aside with a reason.",
            &[(String::new(), self.quarantined.load(Ordering::Relaxed))],
        );
        e.labelled_counter(
            "onshi_reconciler_checks_throttled_total",
            "Checks refused by the facility's rate limit (a batch inquiry counts its people), by facility.",
            &["facility"],
            &self.checks_throttled,
        );
        e.labelled_counter(
            "onshi_reconciler_outages_throttled_total",
            "Outage declarations refused by the facility's rate limit, by facility.",
            &["facility"],
            &self.outages_throttled,
        );
        e.labelled_counter(
            "onshi_reconciler_settlement_revisions_total",
            "Settlements revised after a registry change (durable, sent back to the edge), by the new kind.",
            &["kind"],
            &self.revisions,
        );
        e.counter(
            "onshi_reconciler_revisits_total",
            "Settlements settled again after a registry change, whether or not the verdict changed.",
            &[(String::new(), self.revisits.load(Ordering::Relaxed))],
        );
        e.gauge1(
            "onshi_reconciler_registry_changes_followed",
            "Position in the registry's change feed the central search index and the revisits have caught up with.",
            self.registry_followed.load(Ordering::Relaxed) as f64,
        );
        e.labelled_counter(
            "onshi_reconciler_link_limited_total",
            "Link limits broken (request too large or unfinished: the connection was closed; too many connections: the oldest was closed), by facility and reason.",
            &["facility", "reason"],
            connections.limits_broken(),
        );
        e.labelled_counter(
            "onshi_reconciler_link_refused_total",
            "Facility certificates not accepted (a new connection refused, or a live one closed), by facility and reason (unknown_facility, certificate_revoked, certificate_replaced).",
            &["facility", "reason"],
            connections.certificates_refused(),
        );
        e.gauge1(
            "onshi_reconciler_connected_facilities",
            "Facilities with an open, authorised connection.",
            connections.facilities() as f64,
        );
        e.counter(
            "onshi_reconciler_connections_total",
            "Connections, by outcome of the handshake and authorisation.",
            &[
                (labels(&[("outcome", "accepted")]), connections.accepted()),
                (
                    labels(&[("outcome", "refused")]),
                    connections.refused_total(),
                ),
            ],
        );
        e.gauge1(
            "onshi_reconciler_known_facilities",
            "Facilities with an accepted certificate (known to the store and not revoked).",
            known.len() as f64,
        );
        e.gauge1(
            "onshi_reconciler_registry_periods",
            "Qualification periods in the registry.",
            store.period_count().unwrap_or(0) as f64,
        );
        e.finish()
    }
}

/// `1204` → `1,204`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// What the `/metrics` handler reads.
#[derive(Debug, Clone)]
pub struct MetricsSource {
    pub metrics: Arc<ReconcilerMetrics>,
    pub connections: Connections,
    pub known: KnownFacilities,
    pub store: Arc<dyn CentralStore>,
}

async fn get_metrics(State(src): State<Arc<MetricsSource>>) -> impl IntoResponse {
    // The store's calls block (PostgreSQL is across the network).
    let text = tokio::task::spawn_blocking(move || {
        src.metrics
            .render(&src.connections, &src.known, src.store.as_ref())
    })
    .await
    .unwrap_or_default();
    (
        [(header::CONTENT_TYPE, onshi_sync::metrics::CONTENT_TYPE)],
        text,
    )
}

/// Binds `addr` (must be called inside a tokio runtime) and serves `GET /metrics` until
/// `shutdown`; returns the bound address and the task.
pub fn serve(
    addr: SocketAddr,
    source: MetricsSource,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let bound = listener.local_addr()?;
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(get_metrics))
        .with_state(Arc::new(source));
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %e, "metrics endpoint failed");
        }
    });
    Ok((bound, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1204), "1,204");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn status_line_counts_settlements_and_facilities() {
        let m = ReconcilerMetrics::default();
        m.settlements.add(&["confirmed"], 1200);
        m.settlements.add(&["refund"], 4);
        m.sync_rounds.store(12, Ordering::Relaxed);
        let c = Connections::default();
        let f = onshi_model::FacilityCode::parse("1311234567").unwrap();
        let _open = c.opened(&f);
        let _again = c.opened(&f);
        assert_eq!(
            m.status_line(&c),
            "serving · 1 facility connected · 12 sync rounds · 1,204 settled"
        );
    }
}
