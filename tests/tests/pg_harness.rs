//! The test PostgreSQL server itself (tests/src/pg.rs): what the store and process tests rely on.
//! A committed row survives a SIGKILL of the server; two servers run side by side; dropping one
//! leaves no process behind. These need a private server: they fail, saying so, when
//! `ONSHI_TEST_PG_URL` names an external one.

use std::path::Path;

use onshi_tests::TestDir;
use onshi_tests::pg::{PgServer, db_error};
use onshi_tests::runtime;

/// What these tests need: a server of their own to crash, stop and count processes of.
const PRIVATE: &str = "a private test server (these tests cannot run with ONSHI_TEST_PG_URL)";

/// Reads `/proc/PID/stat`: (state, parent pid); `None` once the process is gone.
fn proc_stat(pid: u32) -> Option<(char, u32)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut rest = s[s.rfind(')')? + 1..].split_whitespace();
    let state = rest.next()?.chars().next()?;
    Some((state, rest.next()?.parse().ok()?))
}

/// Running: present and not a zombie (a zombie has ended and only waits to be reaped).
fn running(pid: u32) -> bool {
    proc_stat(pid).is_some_and(|(state, _)| state != 'Z' && state != 'X')
}

/// The pid the postmaster wrote in its data directory.
fn postmaster_pid(data: &Path) -> u32 {
    let text = std::fs::read_to_string(data.join("postmaster.pid")).expect("postmaster.pid");
    text.lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .expect("a pid on postmaster.pid's first line")
}

fn children(pid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| proc_stat(*p).is_some_and(|(_, parent)| parent == pid))
        .collect()
}

async fn names(pool: &deadpool_postgres::Pool) -> Vec<String> {
    let client = pool.get().await.expect("a connection from the pool");
    client
        .query("SELECT name FROM people ORDER BY name", &[])
        .await
        .expect("reading the table")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[test]
fn a_committed_row_survives_a_sigkill_and_an_uncommitted_one_does_not() {
    let test = TestDir::new("pg-crash");
    let mut pg = PgServer::start(&test);
    let port = pg.port().expect(PRIVATE);
    assert!(
        pg.url().starts_with("postgres://onshi:")
            && pg.url().ends_with(&format!("@127.0.0.1:{port}/onshi")),
        "{}",
        pg.url()
    );
    let pool = pg.pool();

    let in_flight = runtime().block_on(async {
        let mut client = pool.get().await.expect("a connection from the pool");
        // Durable as in production, reachable on loopback only, as a role that is not a superuser.
        for (setting, want) in [
            ("fsync", "on"),
            ("synchronous_commit", "on"),
            ("full_page_writes", "on"),
            ("listen_addresses", "127.0.0.1"),
        ] {
            let row = client
                .query_one(&format!("SHOW {setting}"), &[])
                .await
                .expect("SHOW");
            assert_eq!(row.get::<_, String>(0), want, "{setting}");
        }
        let superuser: bool = client
            .query_one(
                "SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
                &[],
            )
            .await
            .expect("the role")
            .get(0);
        assert!(!superuser, "the tests' role must not be a superuser");

        client
            .batch_execute("CREATE TABLE people (name text PRIMARY KEY)")
            .await
            .expect("CREATE TABLE");
        let tx = client.transaction().await.expect("BEGIN");
        tx.execute("INSERT INTO people VALUES ($1)", &[&"山田太郎"])
            .await
            .expect("INSERT");
        tx.commit().await.expect("COMMIT");

        // A second session inserts without committing, and is still open when the server dies.
        let mut other = pool.get().await.expect("a second connection");
        let tx = other.transaction().await.expect("BEGIN");
        tx.execute("INSERT INTO people VALUES ($1)", &[&"佐藤花子"])
            .await
            .expect("INSERT");
        std::mem::forget(tx); // never committed nor rolled back
        other
    });

    let before = pg.pid().expect("a running server");
    pg.kill();
    assert!(
        !running(before),
        "the postmaster {before} still runs after kill()"
    );
    drop(in_flight);

    pg.start_again();
    assert_eq!(pg.port(), Some(port), "the same port after the restart");
    assert_ne!(pg.pid(), Some(before), "a new postmaster");
    assert!(
        pg.log_tail(200)
            .contains("database system was not properly shut down"),
        "the restart recovered from a crash:\n{}",
        pg.log_tail(40)
    );
    // The same pool, after the crash: the committed row is there, the uncommitted one is not.
    assert_eq!(
        runtime().block_on(names(&pool)),
        vec!["山田太郎".to_string()]
    );
}

#[test]
fn a_stopped_server_starts_again_on_the_same_port_with_its_data() {
    let test = TestDir::new("pg-stop");
    let mut pg = PgServer::start(&test);
    let port = pg.port().expect(PRIVATE);
    let pool = pg.pool();
    runtime().block_on(async {
        let client = pool.get().await.expect("a connection");
        client
            .batch_execute("CREATE TABLE people (name text); INSERT INTO people VALUES ('a')")
            .await
            .expect("create and insert");
    });
    pg.stop();
    assert_eq!(pg.pid(), None);
    let refused = runtime().block_on(pool.get());
    assert!(refused.is_err(), "a stopped server accepts no connection");
    pg.start_again();
    assert_eq!(pg.port(), Some(port));
    assert_eq!(runtime().block_on(names(&pool)), vec!["a".to_string()]);
}

#[test]
fn two_servers_run_at_once_on_different_ports_with_their_own_data() {
    let test = TestDir::new("pg-two");
    let one = PgServer::start(&test);
    let two = PgServer::start(&test);
    assert_ne!(one.port().expect(PRIVATE), two.port().expect(PRIVATE));
    assert_ne!(one.data_dir(), two.data_dir());
    runtime().block_on(async {
        let a = one.pool().get().await.expect("a connection to the first");
        a.batch_execute("CREATE TABLE only_here (x int)")
            .await
            .expect("CREATE TABLE");
        let b = two.pool().get().await.expect("a connection to the second");
        let err = b
            .query("SELECT x FROM only_here", &[])
            .await
            .expect_err("the second server has its own data");
        let message = db_error(&err);
        assert!(
            message.contains("\"only_here\" does not exist"),
            "{message}"
        );
    });
}

#[test]
fn a_wrong_password_is_refused() {
    let test = TestDir::new("pg-auth");
    let pg = PgServer::start(&test);
    let url = pg.url().to_string();
    let (user_and_password, host) = url
        .trim_start_matches("postgres://")
        .split_once('@')
        .expect("user:password@host");
    let user = user_and_password.split(':').next().expect("a user");
    let wrong = format!("postgres://{user}:not-the-password@{host}");
    let refused = runtime().block_on(tokio_postgres::connect(&wrong, tokio_postgres::NoTls));
    let err = refused.err().expect("a wrong password is refused");
    let message = db_error(&err);
    assert!(
        message.contains("password authentication failed"),
        "{message}"
    );
}

#[test]
fn dropping_the_server_leaves_no_postgres_process() {
    let test = TestDir::new("pg-drop");
    let pg = PgServer::start(&test);
    let data = pg.data_dir().expect(PRIVATE).to_path_buf();
    let pool = pg.pool();
    // An open session, so that a backend process runs too.
    let session = runtime().block_on(pool.get()).expect("a connection");
    let postmaster = postmaster_pid(&data);
    assert!(running(postmaster), "the postmaster {postmaster} runs");
    let backends = children(postmaster);
    assert!(!backends.is_empty(), "the postmaster has children");

    drop(pg);
    for pid in std::iter::once(postmaster).chain(backends) {
        assert!(
            !running(pid),
            "process {pid} of the dropped server still runs"
        );
    }
    assert!(
        !data.join("postmaster.pid").exists(),
        "the server was stopped, not abandoned"
    );
    drop(session);
}
