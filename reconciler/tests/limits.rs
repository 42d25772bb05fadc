//! What a compromised facility box can make the reconciler hold, over real QUIC on loopback with a
//! client of the test's own (raw quinn, with the facility's certificate from `pki init`): an
//! oversize request of a small kind, streams never finished, more connections than allowed; and
//! the per-facility rate limit on checks through the real reconciler service. Short, configurable
//! limits where timing matters; synchronisation by awaiting what the peer sees, never by sleeping.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use onshi_model::{CardId, CheckRequest, CheckSubject, FacilityCode, NaiveDate};
use onshi_reconciler::service::{Rate, RateLimits, ServeOptions};
use onshi_sync::link::{
    CLOSE_LIMIT, Connections, KnownFacilities, LinkClient, LinkLimits, LinkServer, LinkSettings,
    Service, tls,
};
use onshi_sync::pki;
use onshi_sync::wire::{self, Request, Response};
use tokio::sync::oneshot;

/// Bounds every wait on the peer, so a broken limit fails the test instead of hanging it.
const WAIT: Duration = Duration::from_secs(20);

fn clinic() -> FacilityCode {
    FacilityCode::parse("1311234567").unwrap()
}

fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("onshi_sync=debug")
        .try_init();
}

/// Answers pings and card checks (every card: not found).
#[derive(Debug)]
struct Pong;

impl Service for Pong {
    fn call(&self, _facility: &FacilityCode, req: Request) -> Response {
        match req {
            Request::Ping => Response::Pong,
            Request::Check(_) => Response::Check(onshi_model::CheckOutcome {
                validity: onshi_model::Validity::NotFound,
                qualifications: vec![],
            }),
            other => Response::error("unexpected", format!("{other:?}")),
        }
    }
}

struct Server {
    addr: SocketAddr,
    connections: Connections,
    pki: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn serve(limits: LinkLimits) -> Server {
    let pki = tempfile::tempdir().unwrap();
    pki::init(pki.path(), &[clinic()]).unwrap();
    let identity = pki::load_server(pki.path()).unwrap();
    let server = LinkServer::bind_with_limits(
        "127.0.0.1:0".parse().unwrap(),
        &identity,
        KnownFacilities::new([clinic()]),
        &LinkSettings::default(),
        limits,
    )
    .unwrap();
    let addr = server.local_addr().unwrap();
    let connections = server.connections().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(server.run(Arc::new(Pong), async move {
        let _ = stopped.await;
    }));
    Server {
        addr,
        connections,
        pki,
        stop: Some(stop),
    }
}

/// A facility's raw QUIC connection: the test decides every byte.
async fn connect(server: &Server) -> quinn::Connection {
    let identity = pki::load_client(server.pki.path(), &clinic()).unwrap();
    let crypto =
        quinn::crypto::rustls::QuicClientConfig::try_from(tls::client_config(&identity).unwrap())
            .unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    let conn = endpoint
        .connect(server.addr, pki::SERVER_NAME)
        .unwrap()
        .await
        .unwrap();
    // The first answer proves the connection was authorised (and counted) by the server.
    assert_eq!(
        rpc(&conn, &wire::encode(&Request::Ping)).await,
        Response::Pong
    );
    conn
}

/// One request frame out, its answer back.
async fn rpc(conn: &quinn::Connection, frame: &[u8]) -> Response {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(frame).await.unwrap();
    send.finish().unwrap();
    let answer = tokio::time::timeout(WAIT, recv.read_to_end(1 << 20))
        .await
        .expect("an answer in time")
        .unwrap();
    wire::decode(&answer).unwrap()
}

/// How the server closed `conn`: its close code and reason.
async fn closed(conn: &quinn::Connection) -> (u32, String) {
    match tokio::time::timeout(WAIT, conn.closed())
        .await
        .expect("closed in time")
    {
        quinn::ConnectionError::ApplicationClosed(c) => (
            u32::try_from(u64::from(c.error_code)).unwrap(),
            String::from_utf8_lossy(&c.reason).into_owned(),
        ),
        other => panic!("closed otherwise: {other}"),
    }
}

fn card_check(card: &str) -> Request {
    Request::Check(CheckRequest {
        subject: CheckSubject::Card {
            card_id: CardId::parse(card).unwrap(),
        },
        service_date: NaiveDate::from_ymd_opt(2026, 4, 1).unwrap(),
    })
}

fn broken(server: &Server, reason: &str) -> u64 {
    server
        .connections
        .limits_broken()
        .get(&[clinic().as_str(), reason])
}

#[tokio::test]
async fn an_oversize_request_of_a_small_kind_is_refused_before_it_is_read_whole() {
    logs();
    let server = serve(LinkLimits::default());
    let conn = connect(&server).await;
    // A check's head, then 8 MiB: far past a check's 4 KiB. The server must answer without
    // waiting for the rest, and the rest need never be sent: the writer runs on its own while
    // the answer is awaited.
    let mut frame = wire::encode(&card_check("C0000001"));
    frame.resize(8 * 1024 * 1024, b'x');
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let writer = tokio::spawn(async move {
        // Stopped by the server (or the connection closed) long before the end.
        send.write_all(&frame).await
    });
    let answer = tokio::time::timeout(WAIT, recv.read_to_end(1 << 20))
        .await
        .expect("answered in time")
        .expect("an answer, not a lost connection");
    let answer: Response = wire::decode(&answer).unwrap();
    assert_eq!(
        answer,
        Response::error(
            "request_too_large",
            "a check request may be at most 4096 bytes; this one is larger"
        )
    );
    assert!(
        writer.await.unwrap().is_err(),
        "the server stopped the stream before all 8 MiB were taken"
    );
    let (code, reason) = closed(&conn).await;
    assert_eq!(code, CLOSE_LIMIT);
    assert!(reason.contains("at most 4096 bytes"), "{reason}");
    assert_eq!(broken(&server, "request_too_large"), 1);

    // A well-behaved connection of the same facility is still served.
    let again = connect(&server).await;
    assert_eq!(
        rpc(&again, &wire::encode(&card_check("C0000001"))).await,
        Pong.call(&clinic(), card_check("C0000001"))
    );
}

#[tokio::test]
async fn streams_never_finished_are_refused_after_the_limit_and_the_connection_closed() {
    logs();
    let server = serve(LinkLimits {
        request_read_timeout: Duration::from_millis(300),
        ..LinkLimits::default()
    });
    let conn = connect(&server).await;
    // Three requests begun and never finished: each sends a check's first bytes and holds.
    let mut held = Vec::new();
    for _ in 0..3 {
        let (mut send, recv) = conn.open_bi().await.unwrap();
        send.write_all(&wire::encode(&card_check("C0000001"))[..10])
            .await
            .unwrap();
        held.push((send, recv));
    }
    let (code, reason) = closed(&conn).await;
    assert_eq!(code, CLOSE_LIMIT);
    assert_eq!(
        reason,
        "a request must be sent whole within 300 ms; this one was not finished"
    );
    assert!(broken(&server, "request_unfinished") >= 1);
    // The finished requests of a well-behaved connection are unaffected.
    let again = connect(&server).await;
    assert_eq!(
        rpc(&again, &wire::encode(&Request::Ping)).await,
        Response::Pong
    );
}

#[tokio::test]
async fn one_connection_more_than_allowed_closes_the_oldest_so_a_restarted_edge_gets_in() {
    logs();
    let server = serve(LinkLimits {
        connections_per_facility: 2,
        ..LinkLimits::default()
    });
    let first = connect(&server).await;
    let second = connect(&server).await;
    assert_eq!(broken(&server, "too_many_connections"), 0);
    // The third (an edge restarted while its old connections linger, or an attacker) gets in;
    // the oldest is closed with the reason.
    let third = connect(&server).await;
    let (code, reason) = closed(&first).await;
    assert_eq!(code, CLOSE_LIMIT);
    assert_eq!(
        reason,
        "facility 1311234567 opened more than 2 connections; the oldest is closed"
    );
    assert_eq!(broken(&server, "too_many_connections"), 1);
    for conn in [&second, &third] {
        assert_eq!(
            rpc(conn, &wire::encode(&Request::Ping)).await,
            Response::Pong
        );
    }
    assert_eq!(server.connections.facilities(), 1);
}

#[tokio::test]
async fn the_edges_own_client_still_works_within_the_limits() {
    logs();
    let server = serve(LinkLimits::default());
    let identity = pki::load_client(server.pki.path(), &clinic()).unwrap();
    let client = LinkClient::new(server.addr, &identity, LinkSettings::default()).unwrap();
    // More RPCs at once than the edge ever has out (16 sync, 16 batches, a few checks): the
    // streams beyond the limit wait for QUIC flow control; none is refused.
    let mut set = tokio::task::JoinSet::new();
    let client = Arc::new(client);
    for i in 0..80 {
        let client = client.clone();
        set.spawn(async move { client.call(card_check(&format!("C{i:07}")), WAIT).await });
    }
    while let Some(answer) = set.join_next().await {
        assert!(
            matches!(answer.unwrap(), Ok(Response::Check(_))),
            "every check answered"
        );
    }
    assert!(server.connections.limits_broken().snapshot().is_empty());
    client.close().await;
}

#[tokio::test]
async fn a_facility_over_its_check_rate_is_answered_throttled_and_counted() {
    logs();
    let data = tempfile::tempdir().unwrap();
    let pki_dir = tempfile::tempdir().unwrap();
    pki::init(pki_dir.path(), &[clinic()]).unwrap();
    // `data/` inside the temporary directory: its key file (beside it) goes with it.
    let store = Arc::new(
        onshi_reconciler::store::embedded::EmbeddedStore::open(&data.path().join("data")).unwrap(),
    );
    // Five at once, then one a minute: the test never lasts long enough for a second token.
    let rates = RateLimits {
        checks: Rate {
            burst: 5.0,
            per_minute: 1.0,
        },
        ..RateLimits::default()
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let running = onshi_reconciler::service::start_with_options(
        store,
        pki_dir.path(),
        "127.0.0.1:0".parse().unwrap(),
        ServeOptions {
            rates,
            ..ServeOptions::default()
        },
        async move {
            let _ = stopped.await;
        },
    )
    .unwrap();
    let identity = pki::load_client(pki_dir.path(), &clinic()).unwrap();
    let client = LinkClient::new(running.addr, &identity, LinkSettings::default()).unwrap();
    let mut answers = Vec::new();
    for i in 0..8 {
        answers.push(
            client
                .call(card_check(&format!("C{i:07}")), WAIT)
                .await
                .unwrap(),
        );
    }
    for a in &answers[..5] {
        assert!(matches!(a, Response::Check(_)), "{a:?}");
    }
    for a in &answers[5..] {
        match a {
            Response::Error { code, message } => {
                assert_eq!(code, "throttled");
                assert!(
                    message.starts_with(
                        "too many online checks from this facility (at most 5 at once, 1 a minute)"
                    ),
                    "{message}"
                );
            }
            other => panic!("{other:?}"),
        }
    }
    // Pings and the sync are not checks: never throttled.
    assert_eq!(client.call(Request::Ping, WAIT).await, Ok(Response::Pong));
    assert_eq!(
        running.metrics.checks_throttled.get(&[clinic().as_str()]),
        3
    );
    client.close().await;
    let _ = stop.send(());
    running.task.await.unwrap();
}

/// `onshi-reconciler serve` as a real process, its stderr (the log) in a file.
struct ReconcilerProcess {
    child: std::process::Child,
    addr: SocketAddr,
    log: std::path::PathBuf,
}

impl ReconcilerProcess {
    fn start(dir: &std::path::Path, pki_dir: &std::path::Path, extra: &[&str]) -> Self {
        use std::io::BufRead;
        let log = dir.join("reconciler.log");
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_onshi-reconciler"))
            .args(["serve", "--data"])
            .arg(dir.join("data"))
            .arg("--pki")
            .arg(pki_dir)
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .env_remove("JOURNAL_STREAM")
            .env_remove("ONSHI_LOG_FORMAT")
            .env("RUST_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let prefix = "onshi-reconciler: listening on quic://";
        let line = stdout
            .lines()
            .map_while(Result::ok)
            .find(|l| l.starts_with(prefix))
            .expect("the reconciler says where it listens");
        let addr = line[prefix.len()..].parse().unwrap();
        ReconcilerProcess { child, addr, log }
    }

    /// Everything it logged so far.
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap()
    }
}

impl Drop for ReconcilerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn outage(reason: &str) -> Request {
    Request::Outage {
        active: true,
        reason: reason.to_string(),
    }
}

#[tokio::test]
async fn an_outage_reason_cannot_forge_a_log_line_nor_flood_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let pki_dir = dir.path().join("pki");
    pki::init(&pki_dir, &[clinic()]).unwrap();
    let process = ReconcilerProcess::start(dir.path(), &pki_dir, &["--outage-burst", "3"]);
    let identity = pki::load_client(&pki_dir, &clinic()).unwrap();
    let client = LinkClient::new(process.addr, &identity, LinkSettings::default()).unwrap();

    // A newline, then what would read as the centre's own line about another facility.
    let forged = "lunch\n2031-01-01T00:00:00.000000Z  INFO onshi_sync::reconciler: outage ended: \
                  central search disabled facility=1341234567 reason=all clear";
    assert_eq!(
        client.call(outage(forged), WAIT).await,
        Ok(Response::error(
            "bad_reason",
            "reason: control character at position 5; write the reason on one line"
        ))
    );
    assert_eq!(
        client.call(outage(&"停".repeat(201)), WAIT).await,
        Ok(Response::error(
            "bad_reason",
            "reason: 201 characters; at most 200"
        ))
    );
    // Accepted as a request to the centre (no grant yet, so central search stays off).
    let accepted = client.call(outage("カードリーダー故障"), WAIT).await;
    assert!(
        matches!(accepted, Ok(Response::Outage { active: false, .. })),
        "{accepted:?}"
    );
    // Past the burst (three, counting the refused ones): throttled, however many more come.
    for _ in 0..5 {
        match client.call(outage("again"), WAIT).await {
            Ok(Response::Error { code, .. }) => assert_eq!(code, "throttled"),
            other => panic!("{other:?}"),
        }
    }
    // The answers above came after their log lines were written.
    let log = process.log();
    assert!(
        !log.contains("1341234567"),
        "the forged facility reached the log as a line of its own:\n{log}"
    );
    assert!(
        log.lines().all(|l| !l.starts_with("2031-01-01")),
        "a forged line:\n{log}"
    );
    let refused: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("outage declaration refused"))
        .collect();
    assert_eq!(refused.len(), 2, "{log}");
    assert!(
        refused[0].contains(r"reason=lunch\n2031-01-01T00:00:00.000000Z"),
        "the refused reason is shown escaped and bounded: {}",
        refused[0]
    );
    assert!(refused[1].contains("…(+81 chars)"), "{}", refused[1]);
    assert_eq!(
        log.matches("outage declarations throttled").count(),
        1,
        "one line per throttling episode, not per request:\n{log}"
    );
    client.close().await;
}
