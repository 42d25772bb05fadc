//! The reconciler as a service on the link: it answers each facility's requests from the registry.
//! The facility is the one the link authorised from the client certificate; it never comes from
//! the request.
//!
//! A facility's box may be compromised: its online checks, batch inquiries (counted per person)
//! and outage declarations are rate-limited per facility ([`RateLimits`], token buckets on the
//! clock passed in), refused with the code `throttled` (the edge answers from its replica or
//! queues the check, as when the reconciler is slow), counted, and logged once per episode, not
//! per request. An outage reason is bounded ([`onshi_sync::wire::MAX_OUTAGE_REASON_CHARS`], no control
//! characters). Text a facility chose never reaches a log unescaped ([`Untrusted`]).

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::Utc;
use onshi_fallback::SearchQuery;

use onshi_model::{FacilityCode, Untrusted};
use tokio::task::JoinHandle;

use crate::metrics::{MetricsSource, ReconcilerMetrics, request_kind};
use crate::replication::Replication;
use crate::store::{CentralError, CentralStore, OutageRequest};
use onshi_sync::link::{
    Connections, KnownFacilities, LinkLimits, LinkServer, LinkSettings, Service,
};
use onshi_sync::registry::SEARCH_LIMIT;
use onshi_sync::wire::{HitReason, Request, Response, SearchHit, SearchHitV1, outage_reason_error};

/// How long the centre's grant of central search lasts unless `--days` says otherwise (disaster
/// mode is typically granted for a week, extendable by granting again).
pub const OUTAGE_DAYS: i64 = 7;

/// Central searches a facility may make: a bucket of this many, refilled at this rate per minute.
pub const SEARCH_BURST: f64 = 20.0;
pub const SEARCHES_PER_MINUTE: f64 = 60.0;

/// A token bucket, driven by the time passed in (seconds on any monotonic clock).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenBucket {
    tokens: f64,
    last_s: f64,
    burst: f64,
    per_s: f64,
}

impl TokenBucket {
    pub fn new(burst: f64, per_minute: f64, now_s: f64) -> Self {
        TokenBucket {
            tokens: burst,
            last_s: now_s,
            burst,
            per_s: per_minute / 60.0,
        }
    }

    /// Takes a token if there is one; else how many seconds until there is.
    pub fn take(&mut self, now_s: f64) -> Result<(), f64> {
        self.take_n(1.0, now_s)
    }

    /// Takes `n` tokens if there are that many; else how many seconds until there are (`n` more
    /// than the burst never passes: [`RateLimits::validate`] makes the largest request fit).
    pub fn take_n(&mut self, n: f64, now_s: f64) -> Result<(), f64> {
        self.tokens = (self.tokens + (now_s - self.last_s).max(0.0) * self.per_s).min(self.burst);
        self.last_s = now_s;
        if self.tokens >= n {
            self.tokens -= n;
            Ok(())
        } else {
            Err((n - self.tokens) / self.per_s)
        }
    }
}

/// One rate limit: a bucket of `burst`, refilled at `per_minute`. `per_minute = 0` turns it off.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Rate {
    pub burst: f64,
    pub per_minute: f64,
}

impl Rate {
    pub fn is_off(&self) -> bool {
        self.per_minute == 0.0
    }
}

/// What each facility may ask of the reconciler, per kind of request. The defaults are generous:
/// a hospital's morning rush (hundreds of checks in an hour, a few a second at the peak) and a
/// night batch or an outage's backlog (tens of thousands of people in batches of 500) are never
/// throttled, while enumerating the registry (2,000 card-id look-ups in half a second) is slowed
/// to [`RateLimits::checks`]' rate after its burst, and shows in the metrics and the log.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct RateLimits {
    /// Single checks (card-id and insurance-card look-ups).
    pub checks: Rate,
    /// People in batch inquiries (a batch takes one token per person, all or none).
    pub batch_people: Rate,
    /// Outage declarations (declaring or ending one): each is logged at the centre.
    pub outages: Rate,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            checks: Rate {
                burst: 1000.0,
                per_minute: 600.0,
            },
            batch_people: Rate {
                burst: 20_000.0,
                per_minute: 6_000.0,
            },
            outages: Rate {
                burst: 10.0,
                per_minute: 1.0,
            },
        }
    }
}

impl RateLimits {
    /// Checks the settings; the error names the setting.
    pub fn validate(&self) -> Result<(), String> {
        let rates = [
            ("check_burst", "checks_per_minute", self.checks, 1.0),
            (
                "batch_people_burst",
                "batch_people_per_minute",
                self.batch_people,
                onshi_sync::wire::MAX_BATCH as f64,
            ),
            ("outage_burst", "outages_per_minute", self.outages, 1.0),
        ];
        for (burst, rate, r, least) in rates {
            if !(r.per_minute.is_finite() && r.per_minute >= 0.0) {
                return Err(format!("{rate}: must be 0 (no limit) or more"));
            }
            let fits = r.burst.is_finite() && r.burst >= least;
            if !r.is_off() && !fits {
                return Err(format!(
                    "{burst}: must be at least {least} (a request of the largest size must fit)"
                ));
            }
        }
        Ok(())
    }
}

/// A facility's bucket for one kind of request, and the throttling episode it is in.
#[derive(Debug, Clone, PartialEq)]
pub struct Throttle {
    bucket: TokenBucket,
    /// Units refused since the episode began (0: not throttled).
    refused: u64,
}

/// What [`Throttle::take`] decided.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Throttled {
    /// Go ahead; `episode_ended` carries how many were refused if this ends an episode.
    Allowed { episode_ended: Option<u64> },
    /// Refused; `episode_began` is true for the first refusal of an episode.
    Refused {
        retry_after_s: f64,
        episode_began: bool,
    },
}

impl Throttle {
    pub fn new(rate: Rate, now_s: f64) -> Self {
        Throttle {
            bucket: TokenBucket::new(rate.burst, rate.per_minute, now_s),
            refused: 0,
        }
    }

    /// Takes `n` units (a check: 1; a batch: its people) at `now_s`.
    #[must_use]
    pub fn take(&mut self, n: u64, now_s: f64) -> Throttled {
        match self.bucket.take_n(n as f64, now_s) {
            Ok(()) => Throttled::Allowed {
                episode_ended: (self.refused > 0).then(|| std::mem::take(&mut self.refused)),
            },
            Err(wait) => {
                let episode_began = self.refused == 0;
                self.refused = self.refused.saturating_add(n.max(1));
                Throttled::Refused {
                    retry_after_s: wait,
                    episode_began,
                }
            }
        }
    }
}

/// What a [`Throttle`] limits, as logs and answers name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Limited {
    Checks,
    BatchPeople,
    Outages,
}

impl Limited {
    fn what(self) -> &'static str {
        match self {
            Limited::Checks => "online checks",
            Limited::BatchPeople => "people in batch inquiries",
            Limited::Outages => "outage declarations",
        }
    }
}

/// Answers link requests from the registry.
#[derive(Debug, Clone)]
pub struct Reconciler {
    store: Arc<dyn CentralStore>,
    limits: Arc<Mutex<HashMap<FacilityCode, TokenBucket>>>,
    rates: RateLimits,
    throttles: Arc<Mutex<HashMap<(FacilityCode, Limited), Throttle>>>,
    clock: Instant,
    replication: Arc<Replication>,
    metrics: Arc<ReconcilerMetrics>,
}

impl Reconciler {
    /// A reconciler on `store`. Nothing is read at start: central search reads the store's own
    /// index per query ([`crate::search`]).
    pub fn new(store: Arc<dyn CentralStore>) -> Result<Self, CentralError> {
        let metrics = Arc::new(ReconcilerMetrics::default());
        Ok(Reconciler {
            replication: Arc::new(Replication::new(store.clone(), metrics.clone())),
            metrics,
            store,
            limits: Arc::default(),
            rates: RateLimits::default(),
            throttles: Arc::default(),
            clock: Instant::now(),
        })
    }

    /// The follower of the registry's change feed that revisits settlements: started by
    /// [`start_with_options`]; tests may drive its passes themselves. It follows the feed from
    /// its position now (the start-up sweep covers what came before).
    pub fn follower(
        &self,
        settings: crate::revisit::RevisitSettings,
    ) -> Result<crate::revisit::Follower, CentralError> {
        Ok(crate::revisit::Follower::new(
            self.store.clone(),
            self.metrics.clone(),
            self.store.registry_cursor()?,
            settings,
        ))
    }

    /// With these rate limits instead of the defaults.
    pub fn with_rate_limits(mut self, rates: RateLimits) -> Self {
        self.rates = rates;
        self
    }

    /// Takes `n` units of `limited` for `facility`: `None` to go ahead, else the `throttled`
    /// answer. Logs once when an episode begins and once when it ends, never per request.
    fn throttle(&self, facility: &FacilityCode, limited: Limited, n: u64) -> Option<Response> {
        let rate = match limited {
            Limited::Checks => self.rates.checks,
            Limited::BatchPeople => self.rates.batch_people,
            Limited::Outages => self.rates.outages,
        };
        if rate.is_off() {
            return None;
        }
        let now_s = self.clock.elapsed().as_secs_f64();
        let decision = self
            .throttles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((facility.clone(), limited))
            .or_insert_with(|| Throttle::new(rate, now_s))
            .take(n, now_s);
        let what = limited.what();
        match decision {
            Throttled::Allowed { episode_ended } => {
                if let Some(refused) = episode_ended {
                    tracing::info!(%facility, refused, "{what} no longer throttled");
                }
                None
            }
            Throttled::Refused {
                retry_after_s,
                episode_began,
            } => {
                let counter = match limited {
                    Limited::Checks | Limited::BatchPeople => &self.metrics.checks_throttled,
                    Limited::Outages => &self.metrics.outages_throttled,
                };
                counter.add(&[facility.as_str()], n.max(1));
                if episode_began {
                    tracing::warn!(%facility, burst = rate.burst, per_minute = rate.per_minute, "{what} throttled: the facility is over its limit (one line per episode)");
                }
                Some(Response::error(
                    "throttled",
                    format!(
                        "too many {what} from this facility (at most {} at once, {} a minute); try again in {:.0} s",
                        rate.burst,
                        rate.per_minute,
                        retry_after_s.min(86_400.0).ceil()
                    ),
                ))
            }
        }
    }

    /// What it counts (requests, checks, sync, settlements).
    pub fn metrics(&self) -> &Arc<ReconcilerMetrics> {
        &self.metrics
    }

    /// A check or a batch item answered: counted by validity and facility.
    fn count_check(&self, facility: &FacilityCode, validity: onshi_model::Validity) {
        self.metrics.checks.inc(&[validity.as_str()]);
        self.metrics.facility_checks.inc(&[facility.as_str()]);
    }

    /// The journal sync of every facility.
    pub fn replication(&self) -> &Replication {
        &self.replication
    }

    /// The centre's grant covering `facility` now, if any.
    fn granted(
        &self,
        facility: &FacilityCode,
    ) -> Result<Option<crate::store::Grant>, CentralError> {
        let now = Utc::now();
        Ok(self
            .store
            .grants()?
            .into_iter()
            .filter(|g| g.active_at(now) && g.scope.covers(facility))
            .max_by_key(|g| g.until))
    }

    /// A facility's own outage declaration: a request the centre sees (`outage list`), not a
    /// grant. The answer says whether central search is granted, and until when.
    fn declare(&self, facility: &FacilityCode, active: bool, reason: String) -> Response {
        // Throttled first, so a stream of refused declarations cannot flood the log either.
        if let Some(throttled) = self.throttle(facility, Limited::Outages, 1) {
            return throttled;
        }
        if let Some(error) = outage_reason_error(&reason) {
            tracing::warn!(%facility, reason = %Untrusted(&reason), %error, "outage declaration refused");
            return Response::error("bad_reason", error);
        }
        let request = OutageRequest {
            facility: facility.clone(),
            at: Utc::now(),
            active,
            reason,
        };
        if let Err(e) = self.store.record_outage_request(&request) {
            return Response::error("store_unavailable", e.to_string());
        }
        if active {
            tracing::warn!(%facility, reason = %Untrusted(&request.reason), "outage requested: the centre decides on central search (onshi-reconciler outage grant)");
        } else {
            tracing::info!(%facility, reason = %Untrusted(&request.reason), "the facility says its outage is over");
        }
        match self.granted(facility) {
            Ok(Some(g)) => Response::Outage {
                active: true,
                since: Some(g.since),
                until: Some(g.until),
            },
            Ok(None) => Response::Outage {
                active: false,
                since: None,
                until: None,
            },
            Err(e) => Response::error("store_unavailable", e.to_string()),
        }
    }

    fn search(&self, facility: &FacilityCode, query: SearchQuery) -> Response {
        match self.granted(facility) {
            Ok(Some(_)) => {}
            Ok(None) => {
                tracing::info!(%facility, "central search refused: no outage granted by the centre");
                return Response::error(
                    "no_outage_declared",
                    "central search is only for a facility the centre has put in disaster mode: the outage request (POST /v1/outage) is with the centre, which grants it (onshi-reconciler outage grant)",
                );
            }
            Err(e) => return Response::error("store_unavailable", e.to_string()),
        }
        let now_s = self.clock.elapsed().as_secs_f64();
        let allowed = {
            let mut limits = self.limits.lock().unwrap_or_else(|p| p.into_inner());
            limits
                .entry(facility.clone())
                .or_insert_with(|| TokenBucket::new(SEARCH_BURST, SEARCHES_PER_MINUTE, now_s))
                .take(now_s)
        };
        if let Err(wait) = allowed {
            tracing::warn!(%facility, "central search rate-limited");
            return Response::error(
                "rate_limited",
                format!(
                    "too many central searches; try again in {:.0} s",
                    wait.ceil()
                ),
            );
        }
        let today = chrono::Local::now().date_naive();
        let day = query.service_date.unwrap_or(today);
        if let Err(e) = onshi_model::plausible::check_service_date("service_date", day, today) {
            tracing::info!(%facility, "central search refused: implausible service_date");
            return Response::error("bad_service_date", e.message);
        }
        let found = match crate::search::search(self.store.as_ref(), &query, SEARCH_LIMIT) {
            Ok(found) => found,
            Err(e) => {
                tracing::error!(%facility, error = %e, "central search: registry unavailable");
                return Response::error("registry_unavailable", e.to_string());
            }
        };
        let hits: Vec<SearchHit> = found
            .into_iter()
            .filter_map(|f| {
                let qualification = f.qualification_on(day)?;
                Some(SearchHit {
                    person_id: f.candidate.person_id,
                    score: f.candidate.score,
                    qualification,
                    reasons: f
                        .candidate
                        .reasons
                        .iter()
                        .filter_map(HitReason::of)
                        .collect(),
                })
            })
            .collect();
        // Every central lookup is logged (who searched, how many came back); never the keys.
        tracing::info!(%facility, candidates = hits.len(), "central search");
        Response::Search(hits)
    }
}

impl Service for Reconciler {
    fn call(&self, facility: &FacilityCode, req: Request) -> Response {
        let started = Instant::now();
        let kind = request_kind(&req);
        let response = self.answer(facility, req);
        self.metrics.answered(kind, started.elapsed());
        response
    }

    fn checks_inline(&self) -> bool {
        self.store.kind() == "embedded"
    }

    fn check_future(
        &self,
        facility: &FacilityCode,
        check: &onshi_model::CheckRequest,
    ) -> Option<std::pin::Pin<Box<dyn std::future::Future<Output = Response> + Send>>> {
        let started = Instant::now();
        // Only a store with a future of its own (PostgreSQL) is answered here; then the throttle,
        // as `call` would (the future is not polled when throttled).
        let answer = self.store.check_future(check.clone())?;
        if let Some(throttled) = self.throttle(facility, Limited::Checks, 1) {
            self.metrics.answered("check", started.elapsed());
            return Some(Box::pin(std::future::ready(throttled)));
        }
        let (this, facility) = (self.clone(), facility.clone());
        Some(Box::pin(async move {
            let response = match answer.await {
                Ok(outcome) => {
                    this.count_check(&facility, outcome.validity);
                    Response::Check(outcome)
                }
                Err(e) => {
                    tracing::error!(%facility, error = %e, "registry unavailable");
                    Response::error("registry_unavailable", e.to_string())
                }
            };
            this.metrics.answered("check", started.elapsed());
            response
        }))
    }
}

impl Reconciler {
    fn answer(&self, facility: &FacilityCode, req: Request) -> Response {
        match req {
            Request::Ping => Response::Pong,
            Request::Check(check) => match self.throttle(facility, Limited::Checks, 1) {
                Some(throttled) => throttled,
                None => self.check(facility, &check),
            },
            Request::Batch(checks) => {
                if checks.len() > onshi_sync::wire::MAX_BATCH {
                    return Response::error(
                        "batch_too_large",
                        format!(
                            "{} checks in one batch; send at most {}",
                            checks.len(),
                            onshi_sync::wire::MAX_BATCH
                        ),
                    );
                }
                if let Some(throttled) =
                    self.throttle(facility, Limited::BatchPeople, checks.len() as u64)
                {
                    return throttled;
                }
                self.batch(facility, &checks)
            }
            Request::Search(req) => self.search(facility, req),
            // A first-wave edge: the same search, answered in the form it reads.
            Request::SearchV1(req) => match self.search(facility, req.into()) {
                Response::Search(hits) => {
                    Response::SearchV1(hits.into_iter().map(SearchHitV1::from).collect())
                }
                other => other,
            },
            Request::Outage { active, reason } => self.declare(facility, active, reason),
            Request::Sync(frames) => self.replication.call(facility, frames),
        }
    }

    fn check(&self, facility: &FacilityCode, check: &onshi_model::CheckRequest) -> Response {
        match self.store.check(check) {
            Ok(outcome) => {
                self.count_check(facility, outcome.validity);
                tracing::debug!(%facility, validity = outcome.validity.as_str(), "check answered");
                Response::Check(outcome)
            }
            Err(e) => {
                tracing::error!(%facility, error = %e, "registry unavailable");
                Response::error("registry_unavailable", e.to_string())
            }
        }
    }

    fn batch(&self, facility: &FacilityCode, checks: &[onshi_model::CheckRequest]) -> Response {
        let mut out = Vec::with_capacity(checks.len());
        for check in checks {
            match self.store.check(check) {
                Ok(o) => {
                    self.count_check(facility, o.validity);
                    out.push(o)
                }
                Err(e) => {
                    tracing::error!(%facility, error = %e, "registry unavailable");
                    return Response::error("registry_unavailable", e.to_string());
                }
            }
        }
        tracing::info!(%facility, checks = out.len(), "batch inquiry answered");
        Response::Batch(out)
    }
}

/// A reconciler serving on the link.
#[derive(Debug)]
pub struct RunningReconciler {
    pub addr: SocketAddr,
    pub known: KnownFacilities,
    /// Which facilities are connected now.
    pub connections: Connections,
    pub metrics: Arc<ReconcilerMetrics>,
    /// Where `/metrics` is served, if it is.
    pub metrics_addr: Option<SocketAddr>,
    /// Ends once the link and the metrics endpoint have shut down.
    pub task: JoinHandle<()>,
}

/// Binds the link on `listen` with the server identity in `pki_dir`, accepting the facilities'
/// certificates the store records (those in `pki_dir` it does not know yet recorded first; see
/// [`crate::facilities`]), and serves until `shutdown` resolves.
pub fn start(
    store: Arc<dyn CentralStore>,
    pki_dir: &Path,
    listen: SocketAddr,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<RunningReconciler> {
    start_with_metrics(store, pki_dir, listen, None, shutdown)
}

/// As [`start`], also serving `GET /metrics` (Prometheus text) on `metrics` if given.
pub fn start_with_metrics(
    store: Arc<dyn CentralStore>,
    pki_dir: &Path,
    listen: SocketAddr,
    metrics: Option<SocketAddr>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<RunningReconciler> {
    let options = ServeOptions {
        metrics,
        ..ServeOptions::default()
    };
    start_with_options(store, pki_dir, listen, options, shutdown)
}

/// How `serve` runs beyond its data, PKI and address.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// Where to serve `GET /metrics`, if anywhere.
    pub metrics: Option<SocketAddr>,
    /// Each facility's rate limits.
    pub rates: RateLimits,
    /// What one facility's connections may make the link hold.
    pub link: LinkLimits,
    /// How settlements catch up with the registry (`--revisit-days`).
    pub revisit: crate::revisit::RevisitSettings,
}

/// As [`start`], with every option.
pub fn start_with_options(
    store: Arc<dyn CentralStore>,
    pki_dir: &Path,
    listen: SocketAddr,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<RunningReconciler> {
    use anyhow::Context;
    let ServeOptions {
        metrics,
        rates,
        link,
        revisit,
    } = options;
    rates.validate().map_err(anyhow::Error::msg)?;
    revisit.validate().map_err(anyhow::Error::msg)?;
    let identity = onshi_sync::pki::load_server(pki_dir)?;
    // The store decides which certificate each facility may use (the PKI directory's new
    // facilities recorded first); the follower keeps it current while serving.
    let (known, facilities_version) = crate::facilities::start(store.as_ref(), pki_dir)
        .context("reading the facilities from the store")?;
    let server = LinkServer::bind_with_limits(
        listen,
        &identity,
        known.clone(),
        &LinkSettings::reconciler(),
        link,
    )?;
    let addr = server.local_addr()?;
    let connections = server.connections().clone();
    tracing::info!(%addr, facilities = known.len(), store = store.kind(), "reconciler listening");
    let reconciler = Reconciler::new(store.clone())?.with_rate_limits(rates);
    let counters = reconciler.metrics().clone();
    let follower_store = store.clone();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    // The settlements the registry's changes revise.
    let revisits = crate::revisit::spawn(reconciler.follower(revisit)?, stopped(stop_rx.clone()));
    let (metrics_addr, metrics_task) = match metrics {
        Some(at) => {
            let source = MetricsSource {
                metrics: counters.clone(),
                connections: connections.clone(),
                known: known.clone(),
                store,
            };
            let (bound, task) = crate::metrics::serve(at, source, stopped(stop_rx.clone()))
                .with_context(|| format!("--metrics: cannot serve metrics on {at}"))?;
            tracing::info!(addr = %bound, "metrics on http://{bound}/metrics");
            (Some(bound), Some(task))
        }
        None => (None, None),
    };
    let facilities = crate::facilities::follow(
        follower_store,
        known.clone(),
        facilities_version,
        crate::facilities::FOLLOW_EVERY,
        stopped(stop_rx.clone()),
    );
    let service: Arc<dyn Service> = Arc::new(reconciler);
    let link = tokio::spawn(server.run(service, stopped(stop_rx)));
    let task = tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
        let _ = link.await;
        let _ = revisits.await;
        let _ = facilities.await;
        if let Some(t) = metrics_task {
            let _ = t.await;
        }
    });
    Ok(RunningReconciler {
        addr,
        known,
        connections,
        metrics: counters,
        metrics_addr,
        task,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `n` requests of `size` units, evenly over `seconds` from `start_s`; returns how many
    /// were refused.
    fn feed(t: &mut Throttle, n: u64, size: u64, start_s: f64, seconds: f64) -> u64 {
        (0..n)
            .filter(|i| {
                let now = start_s + seconds * (*i as f64) / (n as f64);
                matches!(t.take(size, now), Throttled::Refused { .. })
            })
            .count() as u64
    }

    #[test]
    fn enumeration_is_throttled_while_a_morning_rush_and_a_night_batch_are_not() {
        let limits = RateLimits::default();
        // 2,000 card-id look-ups in half a second: the burst passes, the rest is refused.
        let mut t = Throttle::new(limits.checks, 0.0);
        let refused = feed(&mut t, 2000, 1, 0.0, 0.5);
        assert!(refused >= 990, "{refused} of 2,000 refused");
        // A big hospital's morning: 300 checks in the first ten minutes, in bursts of 20 at the
        // stroke of each half minute, then 1,500 more over two hours: nothing refused.
        let mut t = Throttle::new(limits.checks, 0.0);
        for window in 0..15 {
            assert_eq!(feed(&mut t, 20, 1, window as f64 * 30.0, 0.1), 0);
        }
        assert_eq!(feed(&mut t, 1500, 1, 600.0, 7200.0), 0);
        // A night batch of 10,000 people in batches of 500 as fast as they go, then the backlog
        // of a long outage (another 20,000) an hour later: nothing refused.
        let mut t = Throttle::new(limits.batch_people, 0.0);
        assert_eq!(feed(&mut t, 20, 500, 0.0, 1.0), 0);
        assert_eq!(feed(&mut t, 40, 500, 3600.0, 10.0), 0);
        // Enumerating by batch inquiries is slowed to the rate once the burst is spent.
        let refused = feed(&mut t, 100, 500, 3700.0, 10.0);
        assert!(refused >= 50, "{refused} of 100 batches refused");
    }

    #[test]
    fn a_throttling_episode_is_reported_once_when_it_begins_and_once_when_it_ends() {
        let rate = Rate {
            burst: 2.0,
            per_minute: 60.0,
        };
        let mut t = Throttle::new(rate, 0.0);
        let allowed = Throttled::Allowed {
            episode_ended: None,
        };
        assert_eq!(t.take(1, 0.0), allowed);
        assert_eq!(t.take(1, 0.0), allowed);
        assert!(matches!(
            t.take(1, 0.0),
            Throttled::Refused {
                episode_began: true,
                ..
            }
        ));
        for _ in 0..5 {
            assert!(matches!(
                t.take(1, 0.1),
                Throttled::Refused {
                    episode_began: false,
                    ..
                }
            ));
        }
        // A second later a token is back: the episode ends with how many were refused.
        assert_eq!(
            t.take(1, 1.2),
            Throttled::Allowed {
                episode_ended: Some(6)
            }
        );
        assert_eq!(t.take(1, 2.3), allowed);
        // A request bigger than the burst never passes, however long it waits.
        assert!(matches!(t.take(3, 1000.0), Throttled::Refused { .. }));
    }

    #[test]
    fn rate_settings_are_checked_by_name() {
        assert_eq!(RateLimits::default().validate(), Ok(()));
        let mut r = RateLimits::default();
        r.batch_people.burst = 100.0;
        let e = r.validate().unwrap_err();
        assert!(
            e.starts_with("batch_people_burst: must be at least 500"),
            "{e}"
        );
        let mut r = RateLimits::default();
        r.checks.per_minute = -1.0;
        let e = r.validate().unwrap_err();
        assert!(e.starts_with("checks_per_minute:"), "{e}");
        // Off: the burst does not matter.
        let r = RateLimits {
            checks: Rate {
                burst: 0.0,
                per_minute: 0.0,
            },
            ..RateLimits::default()
        };
        assert_eq!(r.validate(), Ok(()));
    }

    #[test]
    fn an_outage_reason_is_one_line_of_at_most_200_characters() {
        assert_eq!(outage_reason_error("カードリーダー故障"), None);
        assert_eq!(outage_reason_error(&"停".repeat(200)), None);
        assert_eq!(
            outage_reason_error(&"停".repeat(201)).as_deref(),
            Some("reason: 201 characters; at most 200")
        );
        let forged = "lunch\n2026-12-05T00:00:00Z INFO outage ended facility=1341234567";
        assert_eq!(
            outage_reason_error(forged).as_deref(),
            Some("reason: control character at position 5; write the reason on one line")
        );
        assert!(outage_reason_error("a\u{1b}[2J").is_some());
        assert!(outage_reason_error("a\u{2028}b").is_some());
    }
}
