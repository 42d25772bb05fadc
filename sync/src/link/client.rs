//! The edge's end of the link: one QUIC endpoint, one connection to the reconciler, kept up by a
//! background task that reconnects with [`Backoff`](super::Backoff) and publishes every [`LinkState`] change on a
//! watch channel. A new connection counts as up only after a ping round trip: the server serves no
//! stream before it has authorised the facility, so any answer means "authorised".
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

    fn initial() -> Self {
        LinkState {
            phase: LinkPhase::Connecting,
            since: Instant::now(),
            last_error: None,
            reconnects: 0,
            last_rtt: None,
            closed: false,
        }
    }
}

struct Shared {
    endpoint: Endpoint,
    /// The TLS side of every connection attempt's configuration.
    crypto: Arc<quinn::crypto::rustls::QuicClientConfig>,
    /// Application bytes of answered RPCs: request frames sent, answer frames received.
    payload: [AtomicU64; 2],
    /// The current authorised connection, if any.
    conn: Mutex<Option<quinn::Connection>>,
    state: watch::Sender<LinkState>,
}

impl Shared {
    fn current(&self) -> Option<quinn::Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner()).clone()
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
        Self::with_tls(server, tls::client_config(identity)?, settings)
    }

    /// As [`LinkClient::new`] with a ready-made TLS configuration (tests play odd clients with it).
    pub fn with_tls(
        server: SocketAddr,
        tls: rustls::ClientConfig,
        settings: LinkSettings,
    ) -> Result<Self, LinkSetupError> {
        let crypto = Arc::new(quinn::crypto::rustls::QuicClientConfig::try_from(tls)?);
        // Checked here, so each attempt's own configuration (`attempt_config`) cannot fail.
        transport_config(&settings, super::DEFAULT_INITIAL_RTT)?;
        let bind: SocketAddr = if server.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let endpoint = super::endpoint(bind, None)
            .map_err(|source| LinkSetupError::Bind { addr: bind, source })?;

        let (state, _) = watch::channel(LinkState::initial());
        let shared = Arc::new(Shared {
            endpoint,
            crypto,
            payload: Default::default(),
            conn: Mutex::new(None),
            state,
        });
        let (shutdown, shutdown_rx) = watch::channel(false);
        let task = tokio::spawn(supervise(shared.clone(), server, settings, shutdown_rx));
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
            .map_err(|_| LinkError::Timeout(timeout))??;
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

/// The reconnect loop: connect, hold the connection until it ends, back off, repeat.
async fn supervise(
    shared: Arc<Shared>,
    server: SocketAddr,
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
    loop {
        shared.set_phase(LinkPhase::Connecting, |s| {
            if !first {
                s.reconnects += 1;
            }
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
        let delay = backoff.next_delay(&mut rng);
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = shutdown.wait_for(|stop| *stop) => break,
        }
    }
    shared.set_conn(None);
    shared.set_phase(LinkPhase::Down, |s| s.closed = true);
}
