//! The edge's end of the link: one QUIC endpoint, one connection to the reconciler, kept up by a
//! background task that reconnects with [`Backoff`](super::Backoff) and publishes every [`LinkState`] change on a
//! watch channel. A new connection counts as up only after a ping round trip: the server serves no
//! stream before it has authorised the facility, so any answer means "authorised".
//!
//! Several reconciler instances: the client is given their addresses in the order this edge
//! prefers them (the caller decides the order) and connects to the first. A failed or timed-out
//! attempt, or a lost connection, sends the next attempt to the next address, cyclically (after
//! the same backoff as with one address). With more than one address, a connection from which
//! nothing at all has arrived for [`LinkSettings::silence_limit`](super::LinkSettings) is given
//! up for the next address before QUIC's idle timeout: this edge sends a keep-alive every second
//! and the reconciler acknowledges it, so two seconds of silence mean the instance (or the line) is gone,
//! and another instance may answer. With one address there is nowhere else to go, and the idle
//! timeout alone decides, as it always did.
//!
//! When a preferred instance comes back, the edge stays where it is until that connection fails
//! (then the cycle reaches the preferred one again): a deliberate move would drop a working
//! connection, which reception sees as the link down (offline, then the mode's hold time), and an
//! instance that flaps would drag its facilities along. The facilities of an instance that failed
//! are spread over the others by the rendezvous order, so staying costs no instance more than its
//! share; the returned instance fills again as edges restart or lose their connections.
//!
//! This module must never let [`LinkClient::call`] wait past its timeout, never queue requests
//! while the link is down (the gate decides what to do instead), and never swallow a refusal: the
//! server's reason reaches the caller as [`LinkError::Refused`].

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quinn::{ConnectionError, Endpoint, VarInt};
use rand::rngs::StdRng;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{
    CLOSE_LIMIT, CLOSE_REFUSED, CLOSE_SHUTDOWN, LinkSettings, LinkSetupError, tls, transport_config,
};
use crate::pki::{ClientIdentity, SERVER_NAME};
use crate::wire::{self, MAX_FRAME_BYTES, Request, Response};

/// Why a call over the link did not get an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("the link to the reconciler is not up: {reason}")]
    NotConnected { reason: String },
    #[error("no answer from the reconciler within {0:?}")]
    Timeout(Duration),
    #[error("the reconciler refused this edge: {reason}")]
    Refused { reason: String },
    #[error("link I/O failed: {0}")]
    Io(String),
    #[error("link protocol error: {0}")]
    Protocol(String),
    #[error("the link client is closed")]
    Closed,
}

impl LinkError {
    /// How a lost or failed connection reads to a caller.
    fn from_connection(e: &ConnectionError) -> Self {
        match e {
            ConnectionError::ApplicationClosed(close)
                if close.error_code == VarInt::from_u32(CLOSE_REFUSED) =>
            {
                LinkError::Refused {
                    reason: String::from_utf8_lossy(&close.reason).into_owned(),
                }
            }
            // A limit broken: the connection is gone, not the edge refused; the next one may work.
            ConnectionError::ApplicationClosed(close)
                if close.error_code == VarInt::from_u32(CLOSE_LIMIT) =>
            {
                LinkError::Io(format!(
                    "the reconciler closed the connection: {}",
                    String::from_utf8_lossy(&close.reason)
                ))
            }
            ConnectionError::ApplicationClosed(close)
                if close.error_code == VarInt::from_u32(CLOSE_SHUTDOWN) =>
            {
                LinkError::Io(format!(
                    "the reconciler closed the connection: {}",
                    String::from_utf8_lossy(&close.reason)
                ))
            }
            // The peer aborted with a TLS alert: it rejected our certificate (or lack of one).
            ConnectionError::ConnectionClosed(close)
                if (0x100..0x200).contains(&u64::from(close.error_code)) =>
            {
                LinkError::Refused {
                    reason: format!("TLS handshake rejected by the reconciler: {close}"),
                }
            }
            ConnectionError::TransportError(e) => LinkError::Protocol(format!("TLS/QUIC: {e}")),
            ConnectionError::VersionMismatch => LinkError::Protocol(e.to_string()),
            ConnectionError::LocallyClosed => LinkError::Closed,
            ConnectionError::TimedOut => {
                LinkError::Io("the reconciler stopped answering (idle timeout)".into())
            }
            other => LinkError::Io(format!("connection lost: {other}")),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkPhase {
    /// A connection attempt (handshake and first ping) is under way.
    Connecting,
    /// Connected and authorised.
    Up,
    /// No connection; the next attempt is scheduled (or the client is closed).
    Down,
}

/// What the link is doing, for status pages and the mode machine.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkState {
    pub phase: LinkPhase,
    /// When `phase` last changed.
    pub since: Instant,
    /// Why the last connection attempt or connection ended; kept while reconnecting.
    pub last_error: Option<LinkError>,
    /// Connection attempts started after the first.
    pub reconnects: u64,
    /// Round-trip time of the current (or last) connection.
    pub last_rtt: Option<Duration>,
    /// The reconciler address of the current connection, of the attempt under way, or (when
    /// down) of the last one tried.
    pub server: SocketAddr,
    /// True once [`LinkClient::close`] was called; no more attempts follow.
    pub closed: bool,
}

impl LinkState {
    /// Connected and authorised.
    pub fn is_up(&self) -> bool {
        self.phase == LinkPhase::Up
    }

    /// `connecting`, `up` or `down`, as status pages show it.
    pub fn name(&self) -> &'static str {
        match self.phase {
            LinkPhase::Connecting => "connecting",
            LinkPhase::Up => "up",
            LinkPhase::Down => "down",
        }
    }

    fn initial(server: SocketAddr) -> Self {
        LinkState {
            phase: LinkPhase::Connecting,
            since: Instant::now(),
            last_error: None,
            reconnects: 0,
            last_rtt: None,
            server,
            closed: false,
        }
    }
}

struct Shared {
    endpoint: Endpoint,
    /// The reconciler addresses, in the order this edge tries them; never empty.
    servers: Vec<SocketAddr>,
    /// The TLS side of every connection attempt's configuration.
    crypto: Arc<quinn::crypto::rustls::QuicClientConfig>,
    /// Application bytes of answered RPCs: request frames sent, answer frames received.
    payload: [AtomicU64; 2],
    /// The current authorised connection, if any.
    conn: Mutex<Option<quinn::Connection>>,
    /// A connection this client gave up (its `stable_id`) and why: its RPCs fail with that reason
    /// rather than quinn's "locally closed", which reads as the client shutting down.
    given_up: Mutex<Option<(usize, LinkError)>>,
    state: watch::Sender<LinkState>,
}

impl Shared {
    fn current(&self) -> Option<quinn::Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Why `conn` was given up, if this client gave it up.
    fn given_up_reason(&self, conn: &quinn::Connection) -> Option<LinkError> {
        match &*self.given_up.lock().unwrap_or_else(|e| e.into_inner()) {
            Some((id, reason)) if *id == conn.stable_id() => Some(reason.clone()),
            _ => None,
        }
    }

    fn set_conn(&self, conn: Option<quinn::Connection>) {
        *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = conn;
    }

    fn set_phase(&self, phase: LinkPhase, edit: impl FnOnce(&mut LinkState)) {
        self.state.send_modify(|s| {
            if s.phase != phase {
                s.phase = phase;
                s.since = Instant::now();
            }
            edit(s);
        });
    }
}

/// The edge's connection to the reconciler. Must be created inside a tokio runtime.
pub struct LinkClient {
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for LinkClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkClient")
            .field("state", &*self.shared.state.borrow())
            .finish_non_exhaustive()
    }
}

impl LinkClient {
    /// Start connecting to the reconciler at `server` as the facility in `identity`.
    pub fn new(
        server: SocketAddr,
        identity: &ClientIdentity,
        settings: LinkSettings,
    ) -> Result<Self, LinkSetupError> {
        Self::with_servers(vec![server], identity, settings)
    }

    /// As [`LinkClient::new`] with several reconciler instances, in the order this edge prefers
    /// them (see the module doc for how it moves between them).
    pub fn with_servers(
        servers: Vec<SocketAddr>,
        identity: &ClientIdentity,
        settings: LinkSettings,
    ) -> Result<Self, LinkSetupError> {
        Self::with_tls_servers(servers, tls::client_config(identity)?, settings)
    }

    /// As [`LinkClient::new`] with a ready-made TLS configuration (tests play odd clients with it).
    pub fn with_tls(
        server: SocketAddr,
        tls: rustls::ClientConfig,
        settings: LinkSettings,
    ) -> Result<Self, LinkSetupError> {
        Self::with_tls_servers(vec![server], tls, settings)
    }

    /// As [`LinkClient::with_servers`] with a ready-made TLS configuration.
    pub fn with_tls_servers(
        servers: Vec<SocketAddr>,
        tls: rustls::ClientConfig,
        settings: LinkSettings,
    ) -> Result<Self, LinkSetupError> {
        let Some(&first) = servers.first() else {
            return Err(LinkSetupError::NoServer);
        };
        let crypto = Arc::new(quinn::crypto::rustls::QuicClientConfig::try_from(tls)?);
        // Checked here, so each attempt's own configuration (`attempt_config`) cannot fail.
        transport_config(&settings, super::DEFAULT_INITIAL_RTT)?;
        // IPv4 only: an IPv4 socket, as always. Any IPv6 address: an IPv6 socket, which reaches
        // IPv4 instances too (quinn maps their addresses).
        let bind: SocketAddr = if servers.iter().all(SocketAddr::is_ipv4) {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let endpoint = super::endpoint(bind, None)
            .map_err(|source| LinkSetupError::Bind { addr: bind, source })?;

        let (state, _) = watch::channel(LinkState::initial(first));
        let shared = Arc::new(Shared {
            endpoint,
            servers,
            crypto,
            payload: Default::default(),
            conn: Mutex::new(None),
            given_up: Mutex::new(None),
            state,
        });
        let (shutdown, shutdown_rx) = watch::channel(false);
        let task = tokio::spawn(supervise(shared.clone(), settings, shutdown_rx));
        Ok(LinkClient {
            shared,
            shutdown,
            task: Mutex::new(Some(task)),
        })
    }

    /// One RPC. While a connection attempt is under way, waits for it (within `timeout`); while the
    /// link is down, fails at once with the reason it is down.
    pub async fn call(&self, req: Request, timeout: Duration) -> Result<Response, LinkError> {
        let frame = self
            .call_prioritised(wire::encode(&req), req.priority(), timeout)
            .await?;
        wire::decode::<Response>(&frame)
            .map_err(|e| LinkError::Protocol(format!("the reconciler's answer: {e}")))
    }

    /// As [`LinkClient::call`] with a raw request frame and the raw answer frame (for playing an
    /// incompatible peer in tests and for diagnostics).
    pub async fn call_frame(
        &self,
        frame: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, LinkError> {
        self.call_prioritised(frame, 0, timeout).await
    }

    async fn call_prioritised(
        &self,
        frame: Vec<u8>,
        priority: i32,
        timeout: Duration,
    ) -> Result<Vec<u8>, LinkError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let conn = tokio::time::timeout_at(deadline, self.connection())
            .await
            .map_err(|_| LinkError::Timeout(timeout))??;
        let answer = tokio::time::timeout_at(deadline, rpc(&conn, &frame, priority))
            .await
            .map_err(|_| LinkError::Timeout(timeout))?
            .map_err(|e| match e {
                LinkError::Closed => self.shared.given_up_reason(&conn).unwrap_or(e),
                other => other,
            })?;
        self.shared.payload[0].fetch_add(frame.len() as u64, Ordering::Relaxed);
        self.shared.payload[1].fetch_add(answer.len() as u64, Ordering::Relaxed);
        Ok(answer)
    }

    /// Application bytes carried by answered RPCs since start: request frames sent to the
    /// reconciler, answer frames received from it. The link's goodput: no QUIC or UDP headers,
    /// no retransmissions, nothing of an RPC that failed.
    pub fn payload_bytes(&self) -> (u64, u64) {
        (
            self.shared.payload[0].load(Ordering::Relaxed),
            self.shared.payload[1].load(Ordering::Relaxed),
        )
    }

    /// The current state, with a fresh RTT estimate when up.
    pub fn state(&self) -> LinkState {
        let mut state = self.shared.state.borrow().clone();
        if let (LinkPhase::Up, Some(conn)) = (state.phase, self.shared.current()) {
            state.last_rtt = Some(conn.rtt());
        }
        state
    }

    /// The reconciler addresses, in the order this edge tries them.
    pub fn servers(&self) -> &[SocketAddr] {
        &self.shared.servers
    }

    /// State changes as events (every phase change, error and reconnect).
    pub fn subscribe(&self) -> watch::Receiver<LinkState> {
        self.shared.state.subscribe()
    }

    /// Stop reconnecting, close the connection and release the socket.
    pub async fn close(&self) {
        let _ = self.shutdown.send(true);
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
        self.shared
            .endpoint
            .close(VarInt::from_u32(CLOSE_SHUTDOWN), b"edge shutting down");
        let _ =
            tokio::time::timeout(Duration::from_secs(1), self.shared.endpoint.wait_idle()).await;
    }

    /// The authorised connection, waiting out a connection attempt in progress.
    async fn connection(&self) -> Result<quinn::Connection, LinkError> {
        let mut rx = self.shared.state.subscribe();
        loop {
            let state = rx.borrow_and_update().clone();
            match state.phase {
                LinkPhase::Up => {
                    if let Some(conn) = self.shared.current() {
                        return Ok(conn);
                    }
                }
                LinkPhase::Down if state.closed => return Err(LinkError::Closed),
                LinkPhase::Down => {
                    return Err(match state.last_error {
                        Some(refused @ LinkError::Refused { .. }) => refused,
                        Some(e) => LinkError::NotConnected {
                            reason: e.to_string(),
                        },
                        None => LinkError::NotConnected {
                            reason: "no connection yet".into(),
                        },
                    });
                }
                LinkPhase::Connecting => {}
            }
            if rx.changed().await.is_err() {
                return Err(LinkError::Closed);
            }
        }
    }
}

impl Drop for LinkClient {
    fn drop(&mut self) {
        // The background task ends on this signal; `close` is the orderly path.
        let _ = self.shutdown.send(true);
        self.shared
            .endpoint
            .close(VarInt::from_u32(CLOSE_SHUTDOWN), b"edge shutting down");
    }
}

/// One request frame out, one answer frame back, on a fresh bidirectional stream.
async fn rpc(conn: &quinn::Connection, frame: &[u8], priority: i32) -> Result<Vec<u8>, LinkError> {
    let (mut send, mut recv) = conn
        .open_bi()
        .await
        .map_err(|e| LinkError::from_connection(&e))?;
    // Only fails on a stream already closed, which the write below reports.
    let _ = send.set_priority(priority);
    send.write_all(frame).await.map_err(|e| match e {
        quinn::WriteError::ConnectionLost(e) => LinkError::from_connection(&e),
        other => LinkError::Io(format!("sending the request: {other}")),
    })?;
    send.finish()
        .map_err(|e| LinkError::Io(format!("finishing the request: {e}")))?;
    recv.read_to_end(MAX_FRAME_BYTES)
        .await
        .map_err(|e| match e {
            quinn::ReadToEndError::Read(quinn::ReadError::ConnectionLost(e)) => {
                LinkError::from_connection(&e)
            }
            quinn::ReadToEndError::TooLong => {
                LinkError::Protocol(format!("answer larger than {MAX_FRAME_BYTES} bytes"))
            }
            other => LinkError::Io(format!("reading the answer: {other}")),
        })
}

/// One attempt's QUIC configuration: the settings, and the initial RTT learnt from the last
/// connection ([`super::initial_rtt`]). The settings were checked when the client was made and
/// only the initial RTT differs, so this does not fail; if it did, the attempt fails with the
/// reason rather than run on QUIC's defaults (no keep-alive, a loss-based controller).
fn attempt_config(
    shared: &Shared,
    settings: &LinkSettings,
    last_rtt: Option<Duration>,
) -> Result<quinn::ClientConfig, LinkError> {
    let transport = transport_config(settings, super::initial_rtt(last_rtt))
        .map_err(|e| LinkError::Protocol(format!("link settings: {e}")))?;
    let mut config = quinn::ClientConfig::new(shared.crypto.clone());
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// Handshake, then a ping that only an authorising server answers; returns the connection and RTT.
async fn connect(
    shared: &Shared,
    server: SocketAddr,
    settings: &LinkSettings,
    last_rtt: Option<Duration>,
) -> Result<(quinn::Connection, Duration), LinkError> {
    let probe_timeout = settings.probe_timeout;
    let mut connecting = shared
        .endpoint
        .connect_with(
            attempt_config(shared, settings, last_rtt)?,
            server,
            SERVER_NAME,
        )
        .map_err(|e| LinkError::Protocol(format!("cannot start connecting: {e}")))?;
    // QUIC resends an unanswered handshake datagram after ever longer waits; an attempt the
    // reconciler has not answered within many RTTs is given up and the next one (after the
    // backoff) starts afresh, so an edge whose line returns is not left waiting out a long silent
    // tail. Once the reconciler's first flight has arrived the line is back: the rest of the
    // handshake (a lost datagram costs a resend) has until the idle timeout, where QUIC gives up.
    let limit = super::handshake_timeout(last_rtt, settings.idle_timeout);
    tokio::time::timeout(limit, connecting.handshake_data())
        .await
        .map_err(|_| LinkError::Io(format!("no answer to the handshake within {limit:?}")))?
        .map_err(|e| LinkError::from_connection(&e))?;
    let conn = connecting
        .await
        .map_err(|e| LinkError::from_connection(&e))?;
    let started = Instant::now();
    let answer = tokio::time::timeout(
        probe_timeout,
        rpc(
            &conn,
            &wire::encode(&Request::Ping),
            Request::Ping.priority(),
        ),
    )
    .await;
    let result = match answer {
        Err(_) => Err(LinkError::Timeout(probe_timeout)),
        Ok(Err(e)) => Err(e),
        Ok(Ok(frame)) => match wire::decode::<Response>(&frame) {
            Ok(Response::Pong) => Ok((conn.clone(), started.elapsed())),
            // Any well-formed answer proves the facility was authorised; the service's view of a
            // ping is its own business, but worth a line in the log.
            Ok(other) => {
                tracing::warn!(answer = ?other, "the reconciler answered a ping with something other than Pong");
                Ok((conn.clone(), started.elapsed()))
            }
            Err(e) => Err(LinkError::Protocol(format!(
                "the reconciler's answer to a ping: {e}"
            ))),
        },
    };
    if result.is_err() {
        conn.close(VarInt::from_u32(CLOSE_SHUTDOWN), b"connection probe failed");
    }
    result
}

/// The reconnect loop: connect, hold the connection until it ends, back off, repeat; each attempt
/// after a failed one or a lost connection goes to the next address.
async fn supervise(
    shared: Arc<Shared>,
    settings: LinkSettings,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = settings.backoff.clone();
    let mut rng: StdRng = rand::make_rng();
    let mut first = true;
    // The line's RTT as the last connection knew it (for the next attempt's initial RTT and its
    // time limit): the least of its first ping's and its final estimate (a loaded line's estimate
    // includes its queue).
    let mut last_rtt: Option<Duration> = None;
    let servers = shared.servers.len();
    let mut index = 0;
    loop {
        let server = shared.servers[index];
        shared.set_phase(LinkPhase::Connecting, |s| {
            if !first {
                s.reconnects += 1;
            }
            s.server = server;
        });
        first = false;
        let attempt = tokio::select! {
            r = connect(&shared, server, &settings, last_rtt) => r,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        match attempt {
            Ok((conn, rtt)) => {
                backoff.reset();
                shared.set_conn(Some(conn.clone()));
                shared.set_phase(LinkPhase::Up, |s| {
                    s.last_rtt = Some(rtt);
                    s.last_error = None;
                });
                tracing::info!(%server, ?rtt, "link up");
                let lost = tokio::select! {
                    e = conn.closed() => LinkError::from_connection(&e),
                    // With one address there is nowhere else to go: QUIC's idle timeout decides.
                    quiet = silence(&conn, settings.silence_limit), if servers > 1 => {
                        let reason = LinkError::Io(format!(
                            "nothing from the reconciler at {server} for {} ms; trying the next instance",
                            quiet.as_millis()
                        ));
                        *shared.given_up.lock().unwrap_or_else(|e| e.into_inner()) =
                            Some((conn.stable_id(), reason.clone()));
                        conn.close(VarInt::from_u32(CLOSE_SHUTDOWN), b"no sign of life");
                        reason
                    }
                    _ = shutdown.wait_for(|stop| *stop) => {
                        conn.close(VarInt::from_u32(CLOSE_SHUTDOWN), b"edge shutting down");
                        break;
                    }
                };
                shared.set_conn(None);
                last_rtt = Some(rtt.min(conn.rtt()));
                tracing::warn!(%server, reason = %lost, "link down");
                shared.set_phase(LinkPhase::Down, |s| s.last_error = Some(lost));
            }
            Err(e) => {
                tracing::warn!(%server, reason = %e, "link connection attempt failed");
                shared.set_phase(LinkPhase::Down, |s| s.last_error = Some(e));
            }
        }
        index = next_server(index, servers);
        let delay = backoff.next_delay(&mut rng);
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = shutdown.wait_for(|stop| *stop) => break,
        }
    }
    shared.set_conn(None);
    shared.set_phase(LinkPhase::Down, |s| s.closed = true);
}

/// The address after `current` of `servers`, cyclically: where the attempt after a failure goes.
fn next_server(current: usize, servers: usize) -> usize {
    (current + 1) % servers.max(1)
}

/// How often a held connection's count of received datagrams is read (several addresses only).
const SILENCE_READ_EVERY: Duration = Duration::from_millis(200);

/// Resolves once nothing at all has arrived on `conn` for `limit`, with how long that was.
async fn silence(conn: &quinn::Connection, limit: Duration) -> Duration {
    let mut quiet = Quiet::new(conn.stats().udp_rx.datagrams, Instant::now());
    let mut every = tokio::time::interval(SILENCE_READ_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let silent = quiet.read(conn.stats().udp_rx.datagrams, Instant::now());
        if silent >= limit {
            return silent;
        }
    }
}

/// How long nothing has arrived, from a count of received datagrams read now and then. An
/// arrival is noticed at the first reading after it, so the silence is never over-estimated: a
/// connection is never given up early.
#[derive(Debug, Clone, Copy)]
struct Quiet {
    received: u64,
    since: Instant,
}

impl Quiet {
    fn new(received: u64, now: Instant) -> Self {
        Quiet {
            received,
            since: now,
        }
    }

    /// The count read at `now`; how long it has not changed.
    fn read(&mut self, received: u64, now: Instant) -> Duration {
        if received != self.received {
            self.received = received;
            self.since = now;
        }
        now.saturating_duration_since(self.since)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_a_failure_the_next_address_is_tried_cyclically() {
        assert_eq!(next_server(0, 1), 0, "one address: always it");
        let order: Vec<usize> = std::iter::successors(Some(0), |&i| Some(next_server(i, 3)))
            .take(7)
            .collect();
        assert_eq!(order, vec![0, 1, 2, 0, 1, 2, 0]);
    }

    #[test]
    fn silence_counts_from_the_last_reading_that_saw_a_datagram() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut q = Quiet::new(10, t0);
        assert_eq!(q.read(10, at(200)), Duration::from_millis(200));
        assert_eq!(q.read(12, at(400)), Duration::ZERO, "a datagram came");
        assert_eq!(q.read(12, at(2_300)), Duration::from_millis(1_900));
        assert_eq!(q.read(12, at(2_400)), Duration::from_millis(2_000));
        // A reading that goes back in time (never with a monotonic clock) is no silence.
        assert_eq!(q.read(12, at(300)), Duration::ZERO);
    }
}
