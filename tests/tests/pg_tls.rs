//! The reconciler's connections to PostgreSQL over TLS (`--store-ca FILE`), against a real server
//! that refuses the reconciler's role without TLS: with the CA that signed the server's
//! certificate the commands and the store work (the certificate checked with the URL's host
//! name); without TLS, with another CA, with a certificate that does not name the URL's host, or
//! with `sslmode=require` and no CA, nothing connects, and the message says why.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use onshi_reconciler::store::CentralStore;
use onshi_reconciler::store::pg::{self, PgConnect, PgStore};
use onshi_tests::pg::PgServer;
use onshi_tests::{Registry, Store, TestDir, reconciler_bin, run};

#[test]
fn the_reconciler_reaches_postgresql_over_verified_tls_only_with_the_servers_ca() {
    let test = TestDir::new("pg-tls");
    let mut server = PgServer::start(&test);
    let pki = test.join("pki");
    onshi_sync::pki::init(&pki, &[]).unwrap();
    let other = test.join("other-pki");
    onshi_sync::pki::init(&other, &[]).unwrap();
    // The server's certificate: the PKI's server certificate (SANs localhost, 127.0.0.1).
    server.require_tls(&pki.join("reconciler.pem"), &pki.join("reconciler.key"));
    let ca = pki.join("ca.pem");
    let config = pg::config_from_url(server.url(), None).unwrap();

    // Without TLS: the server refuses the role.
    let e = PgStore::connect_unchecked(&config).unwrap_err().to_string();
    assert!(e.contains("no encryption"), "{e}");
    // A certificate another CA signed is not trusted.
    let e = PgStore::connect_unchecked(
        PgConnect::new(config.clone(), Some(&other.join("ca.pem"))).unwrap(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("certificate"), "{e}");
    // The right CA, but the server's certificate does not name the host the URL gives (the
    // address is the server's own): refused; the name it does carry is accepted.
    let named = |host: &str| {
        let mut c = config.clone();
        let mut by_name = tokio_postgres::Config::new();
        by_name
            .user(c.get_user().unwrap())
            .password(c.get_password().unwrap())
            .dbname(c.get_dbname().unwrap())
            .port(c.get_ports()[0])
            .host(host)
            .hostaddr(std::net::Ipv4Addr::LOCALHOST.into());
        c = by_name;
        PgConnect::new(c, Some(&ca)).unwrap()
    };
    let e = PgStore::connect_unchecked(named("db.elsewhere.example"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("certificate"), "{e}");
    PgStore::connect_unchecked(named("localhost")).unwrap();
    // A CA with a URL that turns TLS off is a contradiction: refused, naming the flag.
    let mut disable = config.clone();
    disable.ssl_mode(tokio_postgres::config::SslMode::Disable);
    let e = PgConnect::new(disable, Some(&ca)).unwrap_err().to_string();
    assert!(
        e.contains("--store-ca") && e.contains("sslmode=disable"),
        "{e}"
    );
    // The URL asks for TLS, but nothing says whom to trust: refused before connecting.
    let mut require = config.clone();
    require.ssl_mode(tokio_postgres::config::SslMode::Require);
    let e = PgStore::connect_unchecked(&require)
        .unwrap_err()
        .to_string();
    assert!(e.contains("--store-ca"), "{e}");

    // The operator's commands with --store-ca: migrate, import.
    let Store::Postgres { url, password_file } = Store::postgres(&server, test.path()) else {
        unreachable!()
    };
    let (ca_arg, pw) = (ca.to_str().unwrap(), password_file.to_str().unwrap());
    let store_args = [
        "--store",
        url.as_str(),
        "--store-password-file",
        pw,
        "--store-ca",
        ca_arg,
    ];
    let out = run(&reconciler_bin(), &[&["migrate"][..], &store_args].concat());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("schema version"));
    let registry = Registry::generate(test.path(), 40, 3);
    let file = &registry.path;
    let out = run(
        &reconciler_bin(),
        &[&["import"][..], &store_args, &[file.to_str().unwrap()]].concat(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The library's store over the same TLS sees them.
    let store = PgStore::connect(PgConnect::new(config, Some(&ca)).unwrap()).unwrap();
    assert_eq!(store.period_count().unwrap(), registry.periods.len() as u64);

    // `check-config` says the connection is TLS.
    let out = run(
        &reconciler_bin(),
        &[
            &[
                "check-config",
                "--pki",
                pki.to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
            ][..],
            &store_args,
        ]
        .concat(),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("TLS, the server's certificate verified"),
        "{stdout}"
    );
    // A file that holds no certificate is named, before anything connects.
    let not_pem = [
        "migrate",
        "--store",
        url.as_str(),
        "--store-password-file",
        pw,
        "--store-ca",
        pw,
    ];
    let out = run(&reconciler_bin(), &not_pem);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("--store-ca") && stderr.contains("no certificate"),
        "{stderr}"
    );
}
