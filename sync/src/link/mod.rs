//! The link between an edge and the reconciler: one QUIC connection per edge, mutual TLS 1.3 on
//! rustls' ring provider, ALPN `onshi/1`. Each RPC is one bidirectional stream carrying one
//! [`wire`](crate::wire) frame each way.
//!
//! - [`tls`]: the rustls configurations (who trusts whom) and the peer-identity rule.
//! - [`server`]: [`LinkServer`], which authorises each connection by the facility code in the
//!   peer's certificate and that certificate's fingerprint ([`KnownFacilities`],
//!   [`authorise_certificate`]), closes it when the certificate stops being accepted, and hands
//!   requests to a [`Service`].
//! - [`client`]: [`LinkClient`], which keeps one connection up, reconnecting with [`Backoff`], and
//!   reports [`LinkState`] changes as events.
//! - [`backoff`]: the reconnect schedule, a pure function of its state and a random source.
//!
//! This module must never authorise a peer because its connection succeeded (only a CA-verified
//! certificate naming a facility, whose fingerprint is the one [`KnownFacilities`] accepts for
//! it, counts), never keep serving a connection whose certificate is no longer accepted, never
//! decide what a request means (that is the [`Service`]'s job), and never hang a caller past its timeout.

pub mod backoff;
pub mod client;
pub mod server;
pub mod tls;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use onshi_model::FacilityCode;

use crate::pki::Fingerprint;
pub use backoff::Backoff;

/// Socket buffers asked for on the link's UDP socket. The kernel's default (about 200 KiB) drops
/// datagrams under a burst of small requests, and every drop costs a QUIC loss-recovery delay; the
/// kernel caps the request at `net.core.rmem_max`/`wmem_max`.
pub const UDP_BUFFER_BYTES: usize = 4 * 1024 * 1024;

/// A UDP socket for a QUIC endpoint, bound to `addr`, with larger buffers.
pub(crate) fn udp_socket(addr: std::net::SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    // Best effort: a smaller buffer only costs throughput under bursts.
    let _ = socket.set_recv_buffer_size(UDP_BUFFER_BYTES);
    let _ = socket.set_send_buffer_size(UDP_BUFFER_BYTES);
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// A quinn endpoint on [`udp_socket`].
pub(crate) fn endpoint(
    addr: std::net::SocketAddr,
    server: Option<quinn::ServerConfig>,
) -> std::io::Result<quinn::Endpoint> {
    let runtime = quinn::default_runtime()
        .ok_or_else(|| std::io::Error::other("no async runtime for QUIC"))?;
    quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        server,
        udp_socket(addr)?,
        runtime,
    )
}
pub use client::{LinkClient, LinkError, LinkPhase, LinkState};
pub use server::{LinkServer, Service};

/// The application protocol name both sides offer in the TLS handshake.
pub const ALPN: &[u8] = b"onshi/1";

/// How often an idle connection sends a keep-alive (so a dead line is noticed quickly).
pub const KEEP_ALIVE: Duration = Duration::from_secs(1);
/// How long without hearing from the peer before a connection counts as lost.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a fresh connection's first ping may take before the client gives up on it.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// With several reconciler instances: how long nothing at all may arrive on a connection before
/// the client gives it up for the next instance. Two keep-alive intervals: the edge sends one
/// every second and the reconciler acknowledges it at once, so a live instance is never this quiet (a line losing 4 %
/// of its datagrams loses all four of two seconds about once in a million); QUIC's idle timer may
/// run up to a keep-alive past [`IDLE_TIMEOUT`] after the last datagram (it restarts on our first
/// send after it), which alone would leave the 5 s a facility may be without its answers too thin.
pub const SILENCE_LIMIT: Duration = Duration::from_secs(2);

/// Application close code: the server refused this peer (the reason string says why).
pub const CLOSE_REFUSED: u32 = 0x10;
/// Application close code: an orderly shutdown of either side.
pub const CLOSE_SHUTDOWN: u32 = 0;
/// Application close code: the reconciler closed a connection that broke a limit of
/// [`LinkLimits`] (an oversize or unfinished request, one connection too many); the reason says
/// which.
pub const CLOSE_LIMIT: u32 = 0x11;

/// What one facility may make the reconciler hold, so an enrolled but compromised facility box
/// cannot exhaust its memory or its tasks; [`LinkLimits::default`] is what production uses. Each
/// request kind's size is bounded by [`RequestKind::max_frame_bytes`](crate::wire::RequestKind),
/// read from its first three bytes before the rest.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkLimits {
    /// Request streams a connection may have open at once (QUIC flow control: the peer cannot
    /// open more, nothing is refused). An edge has up to 16 sync RPCs, 16 batch inquiries, the
    /// mailbox's 32 workers' checks and a few pings out at once: QUIC's usual 100 leaves room.
    pub streams_per_connection: u32,
    /// Request bytes one connection may have read and not yet answered, all its streams together;
    /// a stream waits for room (within its deadline). At least the largest frame.
    pub request_bytes_per_connection: usize,
    /// Bytes a connection's peer may send ahead of what the reconciler has read (QUIC's
    /// connection-level flow control), so unread data is bounded too.
    pub receive_window: u32,
    /// Connections of one facility at once: a further one closes the oldest, so an edge that
    /// restarted after a crash (its old connection not yet timed out) is never locked out.
    pub connections_per_facility: usize,
    /// How long a request stream may take from its first byte to its end; past it the request
    /// is refused and the connection closed.
    pub request_read_timeout: Duration,
}

impl Default for LinkLimits {
    fn default() -> Self {
        LinkLimits {
            streams_per_connection: 100,
            request_bytes_per_connection: crate::wire::MAX_FRAME_BYTES + 1024 * 1024,
            receive_window: 8 * 1024 * 1024,
            connections_per_facility: 2,
            // The edge gives up an RPC after at most 30 s (a batch inquiry) and its connection
            // after the 3 s idle timeout: a request unfinished for longer is nobody's.
            request_read_timeout: Duration::from_secs(30),
        }
    }
}

/// How often the reconciler itself sends keep-alives: never, in effect (longer than the idle
/// timeout). Each edge sends one a second and the reconciler's acknowledgement of it is what the
/// edge hears, so the line is watched from both ends at half the packets: an idle facility costs
/// the centre one datagram in and one out a second, not two of each (BENCHMARKS.md, idle
/// facilities). An edge that stops sending is dropped at the idle timeout as before.
pub const RECONCILER_KEEP_ALIVE: Duration = Duration::from_secs(3600);

/// Timing of the link; [`LinkSettings::default`] is what production uses.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkSettings {
    pub keep_alive: Duration,
    pub idle_timeout: Duration,
    /// Client only: the deadline of the ping that proves a new connection is authorised.
    pub probe_timeout: Duration,
    /// Client only: the reconnect schedule.
    pub backoff: Backoff,
    /// Client only, with more than one reconciler address: a connection silent this long is given
    /// up for the next address ([`SILENCE_LIMIT`]). Not used with one address.
    pub silence_limit: Duration,
}

impl LinkSettings {
    /// The reconciler's side: no keep-alives of its own ([`RECONCILER_KEEP_ALIVE`]).
    pub fn reconciler() -> Self {
        LinkSettings {
            keep_alive: RECONCILER_KEEP_ALIVE,
            ..LinkSettings::default()
        }
    }
}

impl Default for LinkSettings {
    fn default() -> Self {
        LinkSettings {
            keep_alive: KEEP_ALIVE,
            idle_timeout: IDLE_TIMEOUT,
            probe_timeout: PROBE_TIMEOUT,
            backoff: Backoff::default(),
            silence_limit: SILENCE_LIMIT,
        }
    }
}

/// Why a link endpoint could not be set up (configuration and binding, before any peer).
#[derive(Debug, thiserror::Error)]
pub enum LinkSetupError {
    #[error("the CA certificate is not usable as a trust anchor: {0}")]
    BadCa(rustls::Error),
    #[error("cannot build the client-certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("TLS configuration is not usable for QUIC: {0}")]
    Quic(#[from] quinn::crypto::rustls::NoInitialCipherSuite),
    #[error("idle timeout {0:?} is too large for QUIC")]
    IdleTimeout(Duration),
    #[error("no reconciler address given")]
    NoServer,
    #[error("cannot bind the link's UDP socket on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// The RTT a connection assumes before it has measured one when nothing is known of the line
/// (QUIC's default, RFC 9002 §6.2.2). An unanswered handshake datagram is sent again after about
/// three initial RTTs, then after twice as long each time.
pub const DEFAULT_INITIAL_RTT: Duration = Duration::from_millis(333);
/// The least initial RTT an edge's connection attempt assumes. Below the line's real RTT, QUIC
/// would resend before any answer could come and double its wait each time: with 10 ms (after a
/// connection over loopback) handshakes over a 100 ms line stalled for seconds (BENCHMARKS.md).
pub const MIN_INITIAL_RTT: Duration = Duration::from_millis(100);
/// The reconciler's initial RTT for every new connection (it knows nothing of a line before the
/// handshake): a lost datagram of its first flight is sent again after ≈ 0.3 s instead of QUIC's
/// default 1 s. Facility lines are mostly faster; on a slower one (a satellite link) the first
/// flight may go twice, within QUIC's anti-amplification limit.
pub const SERVER_INITIAL_RTT: Duration = Duration::from_millis(100);

/// The initial RTT of an edge's connection attempt: the RTT of the last connection over the line
/// (RFC 9002 §6.2.2 allows a resumed connection to start from it) within
/// [`MIN_INITIAL_RTT`]..=[`DEFAULT_INITIAL_RTT`]; without one, QUIC's default. After an outage on
/// a 100 ms line the attempt's Initial goes out again after 0.3 s and 0.9 s instead of 1 s, so a
/// returned line is found sooner.
pub fn initial_rtt(last: Option<Duration>) -> Duration {
    last.map_or(DEFAULT_INITIAL_RTT, |rtt| {
        rtt.clamp(MIN_INITIAL_RTT, DEFAULT_INITIAL_RTT)
    })
}

/// How long a connection attempt's handshake may take: twelve initial RTTs ([`initial_rtt`]:
/// room for three sends of the Initial and the answer to the last), at least [`MIN_HANDSHAKE`]
/// and at most the idle timeout (where QUIC itself gives up); without an earlier connection, the
/// idle timeout. QUIC waits ever longer between sends, so an attempt into a line that is still
/// down falls silent; giving it up and starting the next one (after the backoff) finds a returned
/// line sooner.
pub fn handshake_timeout(last_rtt: Option<Duration>, idle_timeout: Duration) -> Duration {
    let cap = idle_timeout.max(MIN_HANDSHAKE);
    last_rtt.map_or(cap, |rtt| {
        (initial_rtt(Some(rtt)) * 12).clamp(MIN_HANDSHAKE, cap)
    })
}

/// The least time a handshake is given: a lost datagram of the reconciler's first flight is sent
/// again after three [`SERVER_INITIAL_RTT`]s, and its answer must still arrive.
pub const MIN_HANDSHAKE: Duration = Duration::from_millis(1200);

/// QUIC transport parameters from the settings (shared by both sides), with the RTT assumed
/// before the first measurement.
fn transport_config(
    settings: &LinkSettings,
    initial_rtt: Duration,
) -> Result<quinn::TransportConfig, LinkSetupError> {
    let mut transport = quinn::TransportConfig::default();
    transport.initial_rtt(initial_rtt);
    transport.keep_alive_interval(Some(settings.keep_alive));
    let idle = quinn::IdleTimeout::try_from(settings.idle_timeout)
        .map_err(|_| LinkSetupError::IdleTimeout(settings.idle_timeout))?;
    transport.max_idle_timeout(Some(idle));
    // BBR, not the loss-based default (CUBIC): on a rural line with random loss, a loss-based
    // controller halves its window at every lost datagram and a 2 % loss at 100 ms RTT caps it
    // near 1 Mbit/s whatever the line's rate (Mathis et al.). BBR paces at the measured
    // bottleneck rate, so a drain after an outage uses the line it has.
    transport.congestion_controller_factory(Arc::new(quinn::congestion::BbrConfig::default()));
    Ok(transport)
}

/// What the reconciler accepts as one facility's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// Any certificate the CA issued for the code: the old set-of-codes form
    /// ([`KnownFacilities::new`]), for tests and benchmarks.
    AnyCertificate,
    /// Only the certificate with this fingerprint (the centre's record; a re-issued certificate
    /// replaces it).
    Certificate(Fingerprint),
    /// None: the centre revoked the facility's certificate (kept so a refusal says why).
    Revoked,
}

/// Why a facility's certificate is not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The facility is not known to the reconciler.
    UnknownFacility,
    /// The facility's certificate was revoked.
    CertificateRevoked,
    /// The centre issued the facility a newer certificate; this one is no longer accepted.
    CertificateReplaced,
}

impl Refusal {
    /// The `reason` label of `onshi_reconciler_link_refused_total`.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::UnknownFacility => "unknown_facility",
            Refusal::CertificateRevoked => "certificate_revoked",
            Refusal::CertificateReplaced => "certificate_replaced",
        }
    }

    /// The reason logged and sent to the peer; `connected`: said to a connection already
    /// authorised (it was accepted until now).
    pub fn reason(self, facility: &FacilityCode, connected: bool) -> String {
        match (self, connected) {
            (Refusal::UnknownFacility, false) => {
                format!("facility {facility} is not known to the reconciler")
            }
            (Refusal::UnknownFacility, true) => {
                format!("facility {facility} is no longer known to the reconciler")
            }
            (Refusal::CertificateRevoked, _) => {
                format!("facility {facility}: certificate revoked by the centre")
            }
            (Refusal::CertificateReplaced, _) => format!(
                "facility {facility}: certificate replaced (the centre issued a newer one; this one is no longer accepted)"
            ),
        }
    }
}

/// The authorisation decision for a CA-verified client certificate naming a facility: what the
/// reconciler accepts for that facility (`None`: nothing known) against the fingerprint of the
/// certificate presented.
pub fn authorise_certificate(
    accepted: Option<&Accepted>,
    presented: &Fingerprint,
) -> Result<(), Refusal> {
    match accepted {
        None => Err(Refusal::UnknownFacility),
        Some(Accepted::AnyCertificate) => Ok(()),
        Some(Accepted::Certificate(fp)) if fp == presented => Ok(()),
        Some(Accepted::Certificate(_)) => Err(Refusal::CertificateReplaced),
        Some(Accepted::Revoked) => Err(Refusal::CertificateRevoked),
    }
}

/// The facilities the reconciler accepts, facility code → the certificate accepted, shared
/// between the server and whoever updates it (the reconciler's facility follower, tests). Clones
/// share one map; every change is announced ([`KnownFacilities::changes`]) so live connections
/// are checked again at once, not only at their next request.
#[derive(Debug, Clone)]
pub struct KnownFacilities {
    map: Arc<RwLock<HashMap<FacilityCode, Accepted>>>,
    changed: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Default for KnownFacilities {
    fn default() -> Self {
        Self::accepting(std::iter::empty())
    }
}

impl KnownFacilities {
    /// Any CA-issued certificate of each of these facilities (the set-of-codes form).
    pub fn new(facilities: impl IntoIterator<Item = FacilityCode>) -> Self {
        Self::accepting(
            facilities
                .into_iter()
                .map(|f| (f, Accepted::AnyCertificate)),
        )
    }

    /// Exactly what is accepted of each facility.
    pub fn accepting(facilities: impl IntoIterator<Item = (FacilityCode, Accepted)>) -> Self {
        KnownFacilities {
            map: Arc::new(RwLock::new(facilities.into_iter().collect())),
            changed: Arc::new(tokio::sync::watch::channel(0).0),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<FacilityCode, Accepted>> {
        // A poisoned lock still holds a consistent map (inserts and removes cannot half-happen).
        self.map.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write<T>(&self, f: impl FnOnce(&mut HashMap<FacilityCode, Accepted>) -> T) -> T {
        let out = f(&mut self.map.write().unwrap_or_else(|e| e.into_inner()));
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
        out
    }

    /// Whether a certificate for `facility` with this fingerprint is accepted now.
    pub fn check(&self, facility: &FacilityCode, presented: &Fingerprint) -> Result<(), Refusal> {
        authorise_certificate(self.read().get(facility), presented)
    }

    /// Whether some certificate of the facility is accepted (it is known and not revoked).
    pub fn contains(&self, facility: &FacilityCode) -> bool {
        self.read()
            .get(facility)
            .is_some_and(|a| *a != Accepted::Revoked)
    }

    /// What is accepted of the facility, if it is known.
    pub fn get(&self, facility: &FacilityCode) -> Option<Accepted> {
        self.read().get(facility).cloned()
    }

    /// Every facility and what is accepted of it, as it stands now.
    pub fn snapshot(&self) -> HashMap<FacilityCode, Accepted> {
        self.read().clone()
    }

    /// Accepts any CA-issued certificate of the facility; returns whether it was new.
    pub fn insert(&self, facility: FacilityCode) -> bool {
        self.set(facility, Accepted::AnyCertificate).is_none()
    }

    /// Sets what is accepted of the facility; returns what was.
    pub fn set(&self, facility: FacilityCode, accepted: Accepted) -> Option<Accepted> {
        self.write(|m| m.insert(facility, accepted))
    }

    /// Returns whether the facility was known. Its open connections are closed.
    pub fn remove(&self, facility: &FacilityCode) -> bool {
        self.write(|m| m.remove(facility).is_some())
    }

    /// Replaces the whole map with the set-of-codes form.
    pub fn replace(&self, facilities: impl IntoIterator<Item = FacilityCode>) {
        self.replace_accepting(
            facilities
                .into_iter()
                .map(|f| (f, Accepted::AnyCertificate)),
        );
    }

    /// Replaces the whole map (the follower, after the store's facilities changed); connections
    /// whose certificate is no longer accepted are closed.
    pub fn replace_accepting(
        &self,
        facilities: impl IntoIterator<Item = (FacilityCode, Accepted)>,
    ) {
        let map: HashMap<_, _> = facilities.into_iter().collect();
        self.write(|m| *m = map);
    }

    /// Facilities some certificate of which is accepted (revoked ones not counted).
    pub fn len(&self) -> usize {
        self.read()
            .values()
            .filter(|a| **a != Accepted::Revoked)
            .count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Changes each time the map does: a live connection waits on it to be checked again.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

/// The reconciler's live connections, for status and metrics: which facilities are connected now
/// (a facility with two connections counts once), and how many connections were authorised or
/// refused since start. Clones share one record.
#[derive(Debug, Clone, Default)]
pub struct Connections(Arc<ConnectionsInner>);

#[derive(Debug, Default)]
struct ConnectionsInner {
    open: Mutex<HashMap<FacilityCode, usize>>,
    accepted: AtomicU64,
    refused: AtomicU64,
    /// Limits broken, by facility and [`LimitBroken::label`].
    limited: crate::metrics::LabelledCounter,
    /// Certificates not accepted (at connection or on a live connection), by facility and
    /// [`Refusal::label`].
    refusals: crate::metrics::LabelledCounter,
}

/// Which limit of [`LinkLimits`] a facility broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitBroken {
    /// A request larger than its kind's limit.
    RequestTooLarge,
    /// A request stream not finished within the read timeout.
    RequestUnfinished,
    /// One connection more than allowed: the oldest was closed.
    TooManyConnections,
}

impl LimitBroken {
    /// The `reason` label of `onshi_reconciler_link_limited_total`.
    pub fn label(self) -> &'static str {
        match self {
            LimitBroken::RequestTooLarge => "request_too_large",
            LimitBroken::RequestUnfinished => "request_unfinished",
            LimitBroken::TooManyConnections => "too_many_connections",
        }
    }
}

/// Held while a facility's connection is served; dropping it counts the connection closed.
#[derive(Debug)]
pub struct ConnectionGuard {
    connections: Connections,
    facility: FacilityCode,
}

impl Connections {
    /// An authorised connection of `facility` opened; closed when the guard drops.
    pub fn opened(&self, facility: &FacilityCode) -> ConnectionGuard {
        *self
            .0
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(facility.clone())
            .or_default() += 1;
        self.0.accepted.fetch_add(1, Ordering::Relaxed);
        ConnectionGuard {
            connections: self.clone(),
            facility: facility.clone(),
        }
    }

    pub(crate) fn refused(&self) {
        self.0.refused.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn limit_broken(&self, facility: &FacilityCode, limit: LimitBroken) {
        self.0.limited.inc(&[facility.as_str(), limit.label()]);
    }

    pub(crate) fn certificate_refused(&self, facility: &FacilityCode, refusal: Refusal) {
        self.0.refusals.inc(&[facility.as_str(), refusal.label()]);
    }

    /// Certificates refused since start (new connections refused and live ones closed), by
    /// `[facility, reason]` ([`Refusal::label`]).
    pub fn certificates_refused(&self) -> &crate::metrics::LabelledCounter {
        &self.0.refusals
    }

    /// Limits broken since start, by `[facility, reason]` ([`LimitBroken::label`]).
    pub fn limits_broken(&self) -> &crate::metrics::LabelledCounter {
        &self.0.limited
    }

    /// Facilities with at least one open connection.
    pub fn facilities(&self) -> usize {
        self.0.open.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Connections authorised since start.
    pub fn accepted(&self) -> u64 {
        self.0.accepted.load(Ordering::Relaxed)
    }

    /// Connections refused since start (handshake failed or facility not known).
    pub fn refused_total(&self) -> u64 {
        self.0.refused.load(Ordering::Relaxed)
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        let mut open = self
            .connections
            .0
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.facility) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.facility);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_recorded_certificate_of_an_active_facility_is_accepted() {
        let (old, new) = (Fingerprint::of(b"old"), Fingerprint::of(b"new"));
        assert_eq!(
            authorise_certificate(Some(&Accepted::Certificate(new)), &new),
            Ok(())
        );
        assert_eq!(
            authorise_certificate(Some(&Accepted::Certificate(new)), &old),
            Err(Refusal::CertificateReplaced),
            "a re-issued facility's old certificate"
        );
        assert_eq!(
            authorise_certificate(Some(&Accepted::Revoked), &new),
            Err(Refusal::CertificateRevoked)
        );
        assert_eq!(
            authorise_certificate(None, &new),
            Err(Refusal::UnknownFacility)
        );
        assert_eq!(
            authorise_certificate(Some(&Accepted::AnyCertificate), &old),
            Ok(()),
            "the set-of-codes form"
        );
        let f = FacilityCode::parse("1341234567").expect("code");
        assert_eq!(
            Refusal::CertificateRevoked.reason(&f, true),
            "facility 1341234567: certificate revoked by the centre"
        );
        assert!(
            Refusal::CertificateReplaced
                .reason(&f, false)
                .starts_with("facility 1341234567: certificate replaced")
        );
        assert_eq!(
            Refusal::UnknownFacility.reason(&f, false),
            "facility 1341234567 is not known to the reconciler"
        );
    }

    #[test]
    fn known_facilities_announce_every_change_and_count_only_accepted_ones() {
        let (a, b) = (
            FacilityCode::parse("1311234567").expect("code"),
            FacilityCode::parse("1341234567").expect("code"),
        );
        let fp = Fingerprint::of(b"a");
        let known = KnownFacilities::accepting([
            (a.clone(), Accepted::Certificate(fp)),
            (b.clone(), Accepted::Revoked),
        ]);
        let mut changes = known.changes();
        assert_eq!(known.len(), 1, "a revoked facility is not counted");
        assert!(known.contains(&a) && !known.contains(&b));
        assert_eq!(known.check(&a, &fp), Ok(()));
        assert_eq!(known.check(&b, &fp), Err(Refusal::CertificateRevoked));
        assert!(!changes.has_changed().expect("open"));
        known.set(a.clone(), Accepted::Revoked);
        assert!(
            changes.has_changed().expect("open"),
            "a change is announced"
        );
        changes.mark_unchanged();
        known.replace_accepting([(b.clone(), Accepted::Certificate(fp))]);
        assert!(changes.has_changed().expect("open"));
        assert_eq!(known.check(&a, &fp), Err(Refusal::UnknownFacility));
        assert_eq!(known.check(&b, &fp), Ok(()));
    }

    #[test]
    fn a_reconnection_starts_from_the_last_rtt_within_bounds() {
        let ms = Duration::from_millis;
        assert_eq!(
            initial_rtt(None),
            ms(333),
            "no earlier connection: QUIC's default"
        );
        assert_eq!(
            initial_rtt(Some(ms(1))),
            ms(100),
            "after loopback: the floor, not 1 ms"
        );
        assert_eq!(initial_rtt(Some(ms(150))), ms(150));
        assert_eq!(
            initial_rtt(Some(ms(600))),
            ms(333),
            "satellite: never above the default"
        );
    }

    #[test]
    fn a_handshake_is_given_twelve_initial_rtts_within_bounds() {
        let (ms, idle) = (Duration::from_millis, IDLE_TIMEOUT);
        assert_eq!(
            handshake_timeout(None, idle),
            idle,
            "unknown line: the idle timeout"
        );
        assert_eq!(
            handshake_timeout(Some(ms(1)), idle),
            ms(1200),
            "fast line: the floor"
        );
        assert_eq!(handshake_timeout(Some(ms(150)), idle), ms(1800));
        assert_eq!(
            handshake_timeout(Some(ms(600)), idle),
            idle,
            "satellite: twelve default initial RTTs (4 s), capped at the idle timeout"
        );
        assert_eq!(
            handshake_timeout(Some(ms(250)), ms(500)),
            ms(1200),
            "never under the floor"
        );
    }
}
