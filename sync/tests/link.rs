//! The link over real QUIC on loopback: round trips, every kind of refusal, version errors,
//! timeouts and reconnection; and the PKI directory as `pki init` leaves it.
//! Synchronisation is by the client's state channel (with a timeout), never by sleeping.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use onshi_model::{
    CardId, CheckOutcome, CheckRequest, CheckSubject, FacilityCode, NaiveDate, Validity,
};
use onshi_sync::link::{
    Accepted, Backoff, KnownFacilities, LinkClient, LinkError, LinkPhase, LinkServer, LinkSettings,
    LinkState, Service, tls,
};
use onshi_sync::pki::{self, ClientIdentity};
use onshi_sync::wire::{self, Request, Response};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(15);
const CALL: Duration = Duration::from_secs(5);

fn code(s: &str) -> FacilityCode {
    FacilityCode::parse(s).expect("test facility code")
}

fn clinic() -> FacilityCode {
    code("1311234567")
}

fn pharmacy() -> FacilityCode {
    code("1341234567")
}

fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("onshi_sync=debug")
        .try_init();
}

fn settings() -> LinkSettings {
    // A short schedule so reconnection tests do not wait for the production 5 s cap.
    LinkSettings {
        backoff: Backoff::new(Duration::from_millis(20), Duration::from_millis(300), 0.5),
        ..LinkSettings::default()
    }
}

/// Answers pings (slowly, 1 s, while `slow` is set) and card checks (card `C0000001` is valid).
/// Records which facility each request came from.
#[derive(Default)]
struct TestService {
    callers: Mutex<Vec<FacilityCode>>,
    slow: AtomicBool,
}

impl Service for TestService {
    fn call(&self, facility: &FacilityCode, req: Request) -> Response {
        self.callers
            .lock()
            .expect("callers lock")
            .push(facility.clone());
        match req {
            Request::Ping => {
                if self.slow.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_secs(1));
                }
                Response::Pong
            }
            Request::Check(CheckRequest {
                subject: CheckSubject::Card { card_id },
                ..
            }) => {
                let validity = if card_id.as_str() == "C0000001" {
                    Validity::Valid
                } else {
                    Validity::NotFound
                };
                Response::Check(CheckOutcome {
                    validity,
                    qualifications: vec![],
                })
            }
            other => Response::error("unexpected", format!("{other:?}")),
        }
    }
}

fn card_check(card: &str) -> Request {
    Request::Check(CheckRequest {
        subject: CheckSubject::Card {
            card_id: CardId::parse(card).expect("card id"),
        },
        service_date: NaiveDate::from_ymd_opt(2025, 4, 1).expect("date"),
    })
}

struct RunningServer {
    addr: SocketAddr,
    known: KnownFacilities,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl RunningServer {
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await.expect("server task");
    }
}

fn start_server(
    pki_dir: &Path,
    addr: SocketAddr,
    known: &[FacilityCode],
    service: Arc<dyn Service>,
) -> RunningServer {
    start_server_knowing(
        pki_dir,
        addr,
        KnownFacilities::new(known.iter().cloned()),
        service,
    )
}

fn start_server_knowing(
    pki_dir: &Path,
    addr: SocketAddr,
    known: KnownFacilities,
    service: Arc<dyn Service>,
) -> RunningServer {
    let identity = pki::load_server(pki_dir).expect("server identity");
    let server = LinkServer::bind(addr, &identity, known.clone(), &settings()).expect("bind");
    let addr = server.local_addr().expect("local addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run(service, async move {
        let _ = stopped.await;
    }));
    RunningServer {
        addr,
        known,
        stop: Some(stop),
        task,
    }
}

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().expect("addr")
}

async fn wait_for(
    rx: &mut watch::Receiver<LinkState>,
    what: &str,
    pred: impl FnMut(&LinkState) -> bool,
) -> LinkState {
    let result = tokio::time::timeout(WAIT, rx.wait_for(pred))
        .await
        .map(|r| r.map(|state| state.clone()));
    match result {
        Ok(Ok(state)) => state,
        Ok(Err(_)) => panic!("state channel closed while waiting for {what}"),
        Err(_) => panic!("timed out waiting for {what}; state is {:?}", *rx.borrow()),
    }
}

fn pki_with(facilities: &[FacilityCode]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    pki::init(dir.path(), facilities).expect("pki init");
    dir
}

#[tokio::test]
async fn ping_round_trip_through_the_service() {
    logs();
    let dir = pki_with(&[clinic()]);
    let service = Arc::new(TestService::default());
    let server = start_server(dir.path(), any_port(), &[clinic()], service.clone());
    let client = LinkClient::new(
        server.addr,
        &pki::load_client(dir.path(), &clinic()).expect("client"),
        settings(),
    )
    .expect("client");

    // The first call waits out the connection attempt instead of failing with NotConnected.
    assert_eq!(client.call(Request::Ping, CALL).await, Ok(Response::Pong));
    let state = client.state();
    assert_eq!(state.phase, LinkPhase::Up);
    assert!(state.last_rtt.is_some());
    assert_eq!(state.reconnects, 0);
    assert_eq!(state.last_error, None);

    // Many RPCs at once on the one connection.
    let answers = join_all((0..20).map(|_| client.call(Request::Ping, CALL))).await;
    assert!(
        answers.iter().all(|a| a == &Ok(Response::Pong)),
        "{answers:?}"
    );
    // The service saw every request (plus the connection probe) as from the certificate's facility.
    let callers = service.callers.lock().expect("lock").clone();
    assert_eq!(callers.len(), 1 + 1 + 20);
    assert!(callers.iter().all(|f| f == &clinic()));

    client.close().await;
    assert!(client.state().closed);
    assert_eq!(
        client.call(Request::Ping, CALL).await,
        Err(LinkError::Closed)
    );
    server.stop().await;
}

#[tokio::test]

async fn check_round_trip() {
    logs();
    let dir = pki_with(&[clinic()]);
    let server = start_server(
        dir.path(),
        any_port(),
        &[clinic()],
        Arc::new(TestService::default()),
    );
    let client = LinkClient::new(
        server.addr,
        &pki::load_client(dir.path(), &clinic()).expect("client"),
        settings(),
    )
    .expect("client");
    let answer = client
        .call(card_check("C0000001"), CALL)
        .await
        .expect("check");
    assert_eq!(
        answer,
        Response::Check(CheckOutcome {
            validity: Validity::Valid,
            qualifications: vec![]
        })
    );
    let answer = client
        .call(card_check("C0000002"), CALL)
        .await
        .expect("check");
    assert_eq!(
        answer,
        Response::Check(CheckOutcome {
            validity: Validity::NotFound,
            qualifications: vec![]
        })
    );
    client.close().await;
    server.stop().await;
}

/// Await all futures concurrently (a small `join_all`, so the tests need no futures crate).
async fn join_all<F>(calls: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future,
{
    let mut futs: Vec<_> = calls.map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in futs.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter()
        .map(|v| v.expect("every future completed"))
        .collect()
}

#[tokio::test]
async fn client_without_certificate_is_refused() {
    logs();
    let dir = pki_with(&[clinic()]);
    let server = start_server(
        dir.path(),
        any_port(),
        &[clinic()],
        Arc::new(TestService::default()),
    );
    let ca = pki::load_server(dir.path()).expect("identity").ca;
    let client = LinkClient::with_tls(
        server.addr,
        tls::client_config_without_certificate(&ca).expect("tls"),
        settings(),
    )
    .expect("client");

    let mut rx = client.subscribe();
    let state = wait_for(&mut rx, "the refusal", |s| {
        s.phase == LinkPhase::Down && s.last_error.is_some()
    })
    .await;
    let err = client
        .call(Request::Ping, CALL)
        .await
        .expect_err("no certificate, no answer");
    assert!(matches!(err, LinkError::Refused { .. }), "{err}");
    assert!(
        err.to_string().contains("TLS handshake rejected"),
        "{err}; state {state:?}"
    );
    assert!(!matches!(client.state().phase, LinkPhase::Up));
    client.close().await;
    server.stop().await;
}

#[tokio::test]
async fn client_certificate_from_another_ca_is_refused() {
    logs();
    let dir = pki_with(&[clinic()]);
    let other = pki_with(&[clinic()]);
    let server = start_server(
        dir.path(),
        any_port(),
        &[clinic()],
        Arc::new(TestService::default()),
    );
    // Trusts the real CA (so the client accepts the server) but presents the other CA's certificate.
    let genuine = pki::load_client(dir.path(), &clinic()).expect("genuine");
    let forged = pki::load_client(other.path(), &clinic()).expect("forged");
    let identity = ClientIdentity {
        ca: genuine.ca,
        ..forged
    };
    let client = LinkClient::new(server.addr, &identity, settings()).expect("client");

    let err = client
        .call(Request::Ping, CALL)
        .await
        .expect_err("foreign CA, no answer");
    assert!(matches!(err, LinkError::Refused { .. }), "{err}");
    assert!(err.to_string().contains("TLS handshake rejected"), "{err}");
    client.close().await;
    server.stop().await;
}

#[tokio::test]
async fn server_from_another_ca_is_not_trusted() {
    logs();
    let dir = pki_with(&[clinic()]);
    let other = pki_with(&[clinic()]);
    let server = start_server(
        other.path(),
        any_port(),
        &[clinic()],
        Arc::new(TestService::default()),
    );
    let client = LinkClient::new(
        server.addr,
        &pki::load_client(dir.path(), &clinic()).expect("client"),
        settings(),
    )
    .expect("client");
    let err = client
        .call(Request::Ping, CALL)
        .await
        .expect_err("server not trusted");
    assert!(matches!(err, LinkError::NotConnected { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("invalid peer certificate: UnknownIssuer"),
        "{err}"
    );
    client.close().await;
    server.stop().await;
}

#[tokio::test]
async fn unknown_facility_is_refused_with_a_reason() {
    logs();
    let dir = pki_with(&[clinic(), pharmacy()]);
    let service = Arc::new(TestService::default());
    let server = start_server(dir.path(), any_port(), &[clinic()], service.clone());
    let client = LinkClient::new(
        server.addr,
        &pki::load_client(dir.path(), &pharmacy()).expect("client"),
        settings(),
    )
    .expect("client");

    let err = client
        .call(Request::Ping, CALL)
        .await
        .expect_err("unknown facility");
    assert_eq!(
        err,
        LinkError::Refused {
            reason: "facility 1341234567 is not known to the reconciler".into()
        }
    );
    let mut rx = client.subscribe();
    let state = wait_for(&mut rx, "down after refusal", |s| {
        s.phase == LinkPhase::Down
    })
    .await;
    assert_eq!(state.last_error, Some(err));
    assert!(
        service.callers.lock().expect("lock").is_empty(),
        "the service must not see a refused facility"
    );

    // Adding the facility to the known set lets the next attempt in.
    server.known.insert(pharmacy());
    wait_for(&mut rx, "up after the facility became known", |s| {
        s.phase == LinkPhase::Up
    })
    .await;
    assert!(matches!(
        client.call(Request::Ping, CALL).await,
        Ok(Response::Pong)
    ));

    // Removing it closes the live connection at once, without waiting for a request.
    server.known.remove(&pharmacy());
    let state = wait_for(&mut rx, "down after removal", |s| {
        s.phase == LinkPhase::Down
    })
    .await;
    assert_eq!(
        state.last_error,
        Some(LinkError::Refused {
            reason: "facility 1341234567 is no longer known to the reconciler".into()
        })
    );
    let err = client
        .call(Request::Ping, CALL)
        .await
        .expect_err("removed facility");
    assert!(
        matches!(&err, LinkError::Refused { reason } if reason.contains("1341234567") && reason.contains("known to the reconciler")),
        "{err}"
    );
    client.close().await;
    server.stop().await;
}

/// Waits until the client is down, refused with exactly `reason`.
async fn wait_refused(rx: &mut watch::Receiver<LinkState>, reason: &str) -> LinkState {
    let want = Some(LinkError::Refused {
        reason: reason.into(),
    });
    wait_for(rx, reason, |s| {
        s.phase == LinkPhase::Down && s.last_error == want
    })
    .await
}

#[tokio::test]
async fn an_idle_connection_is_closed_once_its_certificate_is_revoked_or_replaced() {
    logs();
    let dir = pki_with(&[clinic(), pharmacy()]);
    let fingerprint = |f: &FacilityCode| pki::facility_fingerprint(dir.path(), f).expect("fp");
    let known = KnownFacilities::accepting([
        (clinic(), Accepted::Certificate(fingerprint(&clinic()))),
        (pharmacy(), Accepted::Certificate(fingerprint(&pharmacy()))),
    ]);
    let service = Arc::new(TestService::default());
    let server = start_server_knowing(dir.path(), any_port(), known, service.clone());
    let connect = |f: &FacilityCode| {
        LinkClient::new(
            server.addr,
            &pki::load_client(dir.path(), f).expect("identity"),
            settings(),
        )
        .expect("client")
    };
    let (a, b) = (connect(&clinic()), connect(&pharmacy()));
    assert!(matches!(
        a.call(Request::Ping, CALL).await,
        Ok(Response::Pong)
    ));
    assert!(matches!(
        b.call(Request::Ping, CALL).await,
        Ok(Response::Pong)
    ));
    let (mut a_rx, mut b_rx) = (a.subscribe(), b.subscribe());
    let served = service.callers.lock().expect("lock").len();

    // Revoked while idle: closed with the reason, no request needed; the other facility stays.
    server.known.set(clinic(), Accepted::Revoked);
    wait_refused(
        &mut a_rx,
        "facility 1311234567: certificate revoked by the centre",
    )
    .await;
    let b_state = b_rx.borrow().clone();
    assert_eq!(b_state.phase, LinkPhase::Up, "{b_state:?}");
    assert_eq!(b_state.reconnects, 0, "the pharmacy kept its connection");
    assert!(matches!(
        b.call(Request::Ping, CALL).await,
        Ok(Response::Pong)
    ));

    // Re-issued: the connection with the old certificate is closed; the new certificate connects,
    // the old one is refused.
    let issued = pki::issue_facility(dir.path(), &pharmacy()).expect("re-issue");
    server
        .known
        .set(pharmacy(), Accepted::Certificate(issued.fingerprint));
    let replaced = "facility 1341234567: certificate replaced (the centre issued a newer one; this one is no longer accepted)";
    wait_refused(&mut b_rx, replaced).await;
    let renewed = connect(&pharmacy());
    assert!(matches!(
        renewed.call(Request::Ping, CALL).await,
        Ok(Response::Pong)
    ));
    let err = b
        .call(Request::Ping, CALL)
        .await
        .expect_err("old certificate");
    assert_eq!(
        err,
        LinkError::Refused {
            reason: replaced.into()
        }
    );
    // The revoked clinic is still refused, and the service saw nothing of it after the
    // revocation.
    assert!(a.call(Request::Ping, CALL).await.is_err());
    let callers = service.callers.lock().expect("lock").clone();
    assert!(
        callers[served..].iter().all(|c| *c == pharmacy()),
        "only the pharmacy was served after the revocation: {callers:?}"
    );
    for c in [a, b, renewed] {
        c.close().await;
    }
    server.stop().await;
}

#[tokio::test]
async fn bad_frames_get_a_clear_error() {
    logs();
    let dir = pki_with(&[clinic()]);
    let server = start_server(
        dir.path(),
        any_port(),
        &[clinic()],
        Arc::new(TestService::default()),
    );
    let client = LinkClient::new(
        server.addr,
        &pki::load_client(dir.path(), &clinic()).expect("client"),
        settings(),
    )
    .expect("client");

    let frame = client
        .call_frame(wire::encode_with_version(7, &Request::Ping), CALL)
        .await
        .expect("answer");
    assert_eq!(
        wire::decode::<Response>(&frame).expect("decodes"),
        Response::error(
            "unsupported_version",
            "unsupported wire version 7; this build speaks version 1"
        )
    );
    let frame = client
        .call_frame(vec![0, 1, 200], CALL)
        .await
        .expect("answer");
    let answer = wire::decode::<Response>(&frame).expect("decodes");
    assert!(
        matches!(&answer, Response::Error { code, .. } if code == "bad_frame"),
        "{answer:?}"
    );
    let frame = client.call_frame(vec![0], CALL).await.expect("answer");
    let answer = wire::decode::<Response>(&frame).expect("decodes");
    assert!(
        matches!(&answer, Response::Error { code, message } if code == "bad_frame" && message.contains("too short")),
        "{answer:?}"
    );
    // The connection survives bad frames.
    assert_eq!(client.call(Request::Ping, CALL).await, Ok(Response::Pong));
    client.close().await;
    server.stop().await;
}

#[tokio::test]
async fn a_slow_answer_times_out_without_hanging() {
    logs();
    let dir = pki_with(&[clinic()]);
    let service = Arc::new(TestService::default());
    let server = start_server(dir.path(), any_port(), &[clinic()], service.clone());
    let client = LinkClient::new(
        server.addr,
        &pki::load_client(dir.path(), &clinic()).expect("client"),
        settings(),
    )
    .expect("client");
    assert_eq!(client.call(Request::Ping, CALL).await, Ok(Response::Pong));
    service.slow.store(true, Ordering::SeqCst);
    let timeout = Duration::from_millis(200);
    let outer =
        tokio::time::timeout(Duration::from_secs(2), client.call(Request::Ping, timeout)).await;
    assert_eq!(
        outer.expect("call returned by itself"),
        Err(LinkError::Timeout(timeout))
    );
    // Other calls on the same connection are not held up by the slow one.
    service.slow.store(false, Ordering::SeqCst);
    assert_eq!(client.call(Request::Ping, CALL).await, Ok(Response::Pong));
    client.close().await;
    server.stop().await;
}

#[tokio::test]
async fn no_reconciler_is_an_error_not_a_hang() {
    logs();
    let dir = pki_with(&[clinic()]);
    // A bound-then-released port: nothing answers there.
    let addr = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("free port");
    let client = LinkClient::new(
        addr,
        &pki::load_client(dir.path(), &clinic()).expect("client"),
        settings(),
    )
    .expect("client");
    let timeout = Duration::from_millis(300);
    let answer = tokio::time::timeout(Duration::from_secs(2), client.call(Request::Ping, timeout))
        .await
        .expect("returned by itself");
    assert!(
        matches!(
            answer,
            Err(LinkError::Timeout(_) | LinkError::NotConnected { .. })
        ),
        "{answer:?}"
    );
    client.close().await;
}

#[tokio::test]
async fn reconnects_after_the_server_comes_back_on_the_same_port() {
    logs();
    let dir = pki_with(&[clinic()]);
    let first = start_server(
        dir.path(),
        any_port(),
        &[clinic()],
        Arc::new(TestService::default()),
    );
    let addr = first.addr;
    let client = LinkClient::new(
        addr,
        &pki::load_client(dir.path(), &clinic()).expect("client"),
        settings(),
    )
    .expect("client");
    let mut rx = client.subscribe();
    wait_for(&mut rx, "first connection", |s| s.phase == LinkPhase::Up).await;

    first.stop().await;
    let down = wait_for(&mut rx, "link down after the server stopped", |s| {
        s.phase == LinkPhase::Down
    })
    .await;
    assert!(down.last_error.is_some());
    assert!(matches!(
        client.call(Request::Ping, CALL).await,
        Err(LinkError::NotConnected { .. }) | Ok(_)
    ));

    let second = start_server(
        dir.path(),
        addr,
        &[clinic()],
        Arc::new(TestService::default()),
    );
    assert_eq!(second.addr, addr);
    let up = wait_for(&mut rx, "reconnection", |s| s.phase == LinkPhase::Up).await;
    assert!(up.reconnects >= 1, "{up:?}");
    assert_eq!(up.last_error, None);
    assert_eq!(client.call(Request::Ping, CALL).await, Ok(Response::Pong));
    client.close().await;
    second.stop().await;
}

#[test]
fn pki_init_twice_keeps_the_ca_and_adds_a_facility() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = pki::init(dir.path(), &[clinic()]).expect("first init");
    assert!(first.ca_created);
    let ca_before = std::fs::read(dir.path().join("ca.pem")).expect("ca.pem");
    let ca_key_before = std::fs::read(dir.path().join("ca.key")).expect("ca.key");
    let clinic_before =
        std::fs::read(dir.path().join("facility-1311234567.pem")).expect("clinic cert");

    let second = pki::init(dir.path(), &[clinic(), pharmacy()]).expect("second init");
    assert!(!second.ca_created && !second.reconciler_created);
    assert_eq!(second.facilities_added, vec![pharmacy()]);
    assert_eq!(second.facilities_kept, vec![clinic()]);
    assert_eq!(
        std::fs::read(dir.path().join("ca.pem")).expect("ca.pem"),
        ca_before
    );
    assert_eq!(
        std::fs::read(dir.path().join("ca.key")).expect("ca.key"),
        ca_key_before
    );
    assert_eq!(
        std::fs::read(dir.path().join("facility-1311234567.pem")).expect("clinic cert"),
        clinic_before
    );
    assert_eq!(pki::facilities_in(dir.path()), vec![clinic(), pharmacy()]);

    // The added facility chains to the same CA as the server.
    let added = pki::load_client(dir.path(), &pharmacy()).expect("pharmacy identity");
    assert_eq!(
        added.ca.as_ref(),
        pki::load_server(dir.path()).expect("server").ca.as_ref()
    );
    assert_eq!(
        pki::facility_of_certificate(&added.chain[0]),
        Ok(pharmacy())
    );

    let wrong = pki::load_client(dir.path(), &code("1331234567")).expect_err("no such facility");
    assert!(
        wrong
            .to_string()
            .contains("facility-1331234567.pem is missing"),
        "{wrong}"
    );
}

#[cfg(unix)]
#[test]
fn key_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = pki_with(&[clinic(), pharmacy()]);
    for key in [
        "ca.key",
        "reconciler.key",
        "facility-1311234567.key",
        "facility-1341234567.key",
    ] {
        let mode = std::fs::metadata(dir.path().join(key))
            .expect(key)
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{key} has mode {mode:o}");
    }
}

#[tokio::test]
async fn pki_identity_drives_the_link_end_to_end_for_two_facilities() {
    logs();
    let dir = pki_with(&[clinic(), pharmacy()]);
    let service = Arc::new(TestService::default());
    let known = pki::facilities_in(dir.path());
    let server = start_server(dir.path(), any_port(), &known, service.clone());
    let a = LinkClient::new(
        server.addr,
        &pki::load_client(dir.path(), &clinic()).expect("a"),
        settings(),
    )
    .expect("a");
    let b = LinkClient::new(
        server.addr,
        &pki::load_client(dir.path(), &pharmacy()).expect("b"),
        settings(),
    )
    .expect("b");
    assert!(a.call(Request::Ping, CALL).await.is_ok());
    assert!(b.call(Request::Ping, CALL).await.is_ok());
    let mut callers = service.callers.lock().expect("lock").clone();
    callers.sort();
    callers.dedup();
    assert_eq!(callers, vec![clinic(), pharmacy()]);
    a.close().await;
    b.close().await;
    server.stop().await;
}
