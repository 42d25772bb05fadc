//! Listening beyond loopback (#15 item 5): a non-loopback `--http` needs TLS (`--http-cert`,
//! `--http-key`) or `allow_plain_http_on_lan = true`, which warns at every start; without either
//! the edge refuses to start, and `check-config` says the same. The certificate is made here, by a
//! CA of the test's own (as a facility's PKI would), and the client trusts only that CA.
//!
//! `0.0.0.0:0` is the non-loopback address (127.0.0.2 is loopback too): the edge listens on every
//! address and the test reaches it on 127.0.0.1.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use onshi_tests::{Edge, EdgeOpts, FACILITY_A, Pki, TestDir, edge_bin, run, runtime, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Where no reconciler listens: these tests are about the HTTP side only (the edge runs offline).
const NO_RECONCILER: &str = "127.0.0.1:9";

/// The `run` arguments of an edge listening on every address.
fn run_args(t: &TestDir, pki: &Path) -> Vec<String> {
    [
        "run",
        "--facility",
        FACILITY_A,
        "--data",
        t.join("edge").to_str().expect("a UTF-8 path"),
        "--pki",
        pki.to_str().expect("a UTF-8 path"),
        "--reconciler",
        NO_RECONCILER,
        "--http",
        "0.0.0.0:0",
    ]
    .map(String::from)
    .to_vec()
}

#[test]
fn a_lan_address_without_tls_or_the_setting_is_refused_by_run_and_check_config() {
    let t = TestDir::new("lan-refused");
    // The refusal comes before anything is opened: no PKI is needed to see it.
    let pki = t.join("pki");
    let args = run_args(&t, &pki);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run(&edge_bin(), &args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "run: {stderr}");
    for words in [
        "--http",
        "0.0.0.0:0 is not a loopback address",
        "--http-cert",
        "--http-key",
        "allow_plain_http_on_lan = true",
    ] {
        assert!(stderr.contains(words), "run names {words:?}: {stderr}");
    }
    assert!(
        !t.join("edge").exists(),
        "a refused start creates no data directory"
    );

    let mut check = args.clone();
    check[0] = "check-config";
    let out = run(&edge_bin(), &check);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "check-config: {stderr}");
    assert!(
        stderr.contains("http: 0.0.0.0:0 is not a loopback address")
            && stderr.contains("--http-cert")
            && stderr.contains("allow_plain_http_on_lan"),
        "check-config: {stderr}"
    );
}

#[test]
fn plain_http_on_the_lan_when_allowed_warns_at_every_start() {
    let t = TestDir::new("lan-plain");
    let pki = Pki::init(&t.join("pki"), &[FACILITY_A]);
    let mut opts = EdgeOpts::new(
        FACILITY_A,
        &t.join("edge"),
        &pki,
        NO_RECONCILER.parse().unwrap(),
    );
    opts.http = "0.0.0.0:0".into();
    opts.extra_args = vec!["--allow-plain-http-on-lan".into()];
    let mut edge = Edge::start(&t, opts);
    let warning = "plain HTTP on a non-loopback address";
    for (n, start) in ["first", "second"].into_iter().enumerate() {
        // The log file is appended across restarts: this start's warning is the (n+1)th.
        let warned = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
            let log = edge.proc.stderr();
            let lines: Vec<String> = log
                .lines()
                .filter(|l| l.contains(warning))
                .map(String::from)
                .collect();
            (lines.len() > n).then_some(lines)
        })
        .unwrap_or_else(|| {
            panic!(
                "{start} start: no warning in the log:\n{}",
                edge.proc.stderr_tail(20)
            )
        });
        assert!(
            warned.iter().all(|l| l.contains("WARN")),
            "{start} start, a warning: {warned:?}"
        );
        let a = edge.http.get("/metrics");
        assert_eq!(
            a.status, 200,
            "{start} start: plain HTTP is served: {}",
            a.text
        );
        if n == 0 {
            edge = edge.restart();
        }
    }
}

/// A CA, and a server certificate it signed for `localhost` and 127.0.0.1 (PEM files).
struct Certs {
    ca_pem: String,
    cert: PathBuf,
    key: PathBuf,
    other_key: PathBuf,
}

fn make_certs(dir: &Path) -> Certs {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, SanType,
    };
    std::fs::create_dir_all(dir).expect("test set-up");
    let ca_key = KeyPair::generate().expect("test set-up");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("test set-up");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "onshi test facility CA");
    let ca_cert = ca.self_signed(&ca_key).expect("test set-up");
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().expect("test set-up");
    let mut server = CertificateParams::new(vec!["localhost".to_string()]).expect("test set-up");
    server
        .subject_alt_names
        .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = server.signed_by(&key, &issuer).expect("test set-up");
    let certs = Certs {
        ca_pem: ca_cert.pem(),
        cert: dir.join("http.pem"),
        key: dir.join("http.key"),
        other_key: dir.join("other.key"),
    };
    std::fs::write(&certs.cert, cert.pem()).expect("test set-up");
    std::fs::write(&certs.key, key.serialize_pem()).expect("test set-up");
    std::fs::write(
        &certs.other_key,
        KeyPair::generate().expect("test set-up").serialize_pem(),
    )
    .expect("test set-up");
    certs
}

/// `GET path` over TLS to `addr` as `localhost`, trusting only `ca_pem`: the raw answer, or the
/// TLS error.
fn https_get(addr: SocketAddr, ca_pem: &str, path: &str) -> Result<String, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).expect("test set-up"))
        .expect("test set-up");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("test set-up")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    runtime().block_on(async move {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let name = ServerName::try_from("localhost").expect("test set-up");
        let mut tls = tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp))
            .await
            .map_err(|_| "TLS handshake timed out".to_string())?
            .map_err(|e| e.to_string())?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: localhost:{}\r\nConnection: close\r\n\r\n",
            addr.port()
        );
        tls.write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut answer))
            .await
            .map_err(|_| "no answer within 10 s".to_string())?
            .map_err(|e| e.to_string())?;
        Ok(String::from_utf8_lossy(&answer).into_owned())
    })
}

/// What a plain-HTTP request to `addr` gets back (bytes until the server closes).
fn plain_get(addr: SocketAddr, path: &str) -> String {
    runtime().block_on(async move {
        let mut tcp = tokio::net::TcpStream::connect(addr)
            .await
            .expect("test set-up");
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
            addr.port()
        );
        let _ = tcp.write_all(request.as_bytes()).await;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(15), tcp.read_to_end(&mut answer)).await;
        String::from_utf8_lossy(&answer).into_owned()
    })
}

#[test]
fn https_with_a_certificate_from_the_facilitys_ca_serves_a_client_that_trusts_it() {
    let t = TestDir::new("lan-tls");
    let pki = Pki::init(&t.join("pki"), &[FACILITY_A]);
    let certs = make_certs(&t.join("http-tls"));

    // check-config reads the certificate too: a key that is not the certificate's is named.
    let mut args = run_args(&t, &pki.dir);
    args[0] = "check-config".into();
    for (flag, file) in [
        ("--http-cert", &certs.cert),
        ("--http-key", &certs.other_key),
    ] {
        args.extend([flag.to_string(), file.display().to_string()]);
    }
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run(&edge_bin(), &a);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("http_key:"), "{stderr}");

    let mut opts = EdgeOpts::new(
        FACILITY_A,
        &t.join("edge"),
        &pki,
        NO_RECONCILER.parse().unwrap(),
    );
    opts.http = "0.0.0.0:0".into();
    opts.extra_args = vec![
        "--http-cert".into(),
        certs.cert.display().to_string(),
        "--http-key".into(),
        certs.key.display().to_string(),
    ];
    let edge = Edge::start(&t, opts);
    assert!(
        edge.http.base.starts_with("https://"),
        "the edge says it serves HTTPS: {}",
        edge.http.base
    );
    let addr = edge.http_addr;
    let answer = https_get(addr, &certs.ca_pem, "/metrics").expect("HTTPS answers");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("onshi_"), "the metrics: {answer}");
    assert!(
        !edge
            .proc
            .stderr()
            .contains("plain HTTP on a non-loopback address"),
        "no plain-HTTP warning with TLS"
    );

    // A client that trusts another CA does not get through; plain HTTP gets no answer.
    let stranger = make_certs(&t.join("stranger"));
    let refused = https_get(addr, &stranger.ca_pem, "/metrics");
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.contains("UnknownIssuer") || e.contains("certificate")),
        "{refused:?}"
    );
    let plain = plain_get(addr, "/metrics");
    assert!(
        !plain.contains("200 OK"),
        "plain HTTP is not served: {plain}"
    );
    // The server is still there for the client that trusts it.
    let again = https_get(addr, &certs.ca_pem, "/metrics").expect("HTTPS answers again");
    assert!(again.starts_with("HTTP/1.1 200"), "{again}");
}
