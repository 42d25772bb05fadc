//! A real, throw-away PostgreSQL server for tests: `initdb` into the test's own directory, then
//! `pg_ctl start` on 127.0.0.1 at a free port, with a unix socket only inside that directory,
//! password (SCRAM) authentication, an unprivileged role that owns one database, and durability as
//! in production (`fsync`, `synchronous_commit` and `full_page_writes` on). Tests can stop it,
//! SIGKILL it (a crash) and start it again on the same port and data; dropping it stops it at once
//! and leaves no process behind.
//!
//! `ONSHI_TEST_PG_URL=postgres://USER:PASS@HOST:PORT/DB` makes every [`PgServer`] a fresh database
//! (`CREATE DATABASE`, so the role needs CREATEDB) on that existing server instead, dropped again at
//! the end; tests that crash or restart the server cannot run that way and say so.
//!
//! Must never: touch a cluster it did not create (Debian's `main` cluster on port 5432 and
//! `/var/run/postgresql` are never used), turn durability off, skip silently when PostgreSQL is
//! missing (it fails, saying to install Debian's `postgresql`), or wait by sleeping a fixed time.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use rand::RngExt;

use crate::{TestDir, run_with, wait_until};

/// The environment variable naming an external server to use instead of a private one.
pub const PG_URL_ENV: &str = "ONSHI_TEST_PG_URL";

/// The unprivileged role the tests (and the code under test) connect as, and its database.
pub const ROLE: &str = "onshi";
pub const DATABASE: &str = "onshi";

/// How long `pg_ctl` may wait for the server to start or stop (crash recovery included). Below the
/// 60 s after which [`run_with`] gives up on the command itself.
const PG_CTL_WAIT_SECS: &str = "50";

/// A PostgreSQL server for one test: a private cluster, or a database on `ONSHI_TEST_PG_URL`.
#[derive(Debug)]
pub struct PgServer {
    url: String,
    superuser_url: String,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Private(Cluster),
    /// `base`: the URL from the environment, to drop the database again from outside it.
    External {
        database: String,
        base: String,
    },
}

/// A cluster this harness created: its files, its port and (while it runs) its postmaster.
#[derive(Debug)]
struct Cluster {
    bindir: PathBuf,
    /// `TEST/pg`: data, socket and log, owned by whoever runs the server.
    root: PathBuf,
    data: PathBuf,
    log: PathBuf,
    port: u16,
    /// `Some` when the tests run as root: initdb refuses root, so the server runs as `postgres`.
    run_as: Option<Account>,
    postmaster: Option<u32>,
}

#[derive(Debug, Clone, Copy)]
struct Account {
    uid: u32,
    gid: u32,
}

impl PgServer {
    /// Starts a private server whose files live under `test` (or, with `ONSHI_TEST_PG_URL` set,
    /// creates a fresh database there). Ready to accept connections when this returns.
    pub fn start(test: &TestDir) -> PgServer {
        match std::env::var(PG_URL_ENV) {
            Ok(base) if !base.trim().is_empty() => Self::start_external(base.trim()),
            _ => Self::start_private(test),
        }
    }

    /// `postgres://onshi:PASSWORD@127.0.0.1:PORT/onshi`: the unprivileged role and its database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A superuser's URL on the same server (e.g. to end other sessions as a fault); on an
    /// external server, the test database with the role of `ONSHI_TEST_PG_URL`.
    pub fn superuser_url(&self) -> &str {
        &self.superuser_url
    }

    /// A connection pool on [`PgServer::url`]. Connections are verified (an empty query) before
    /// reuse, so a pool survives the server's restarts.
    pub fn pool(&self) -> deadpool_postgres::Pool {
        let mut cfg = deadpool_postgres::Config::new();
        cfg.url = Some(self.url.clone());
        cfg.manager = Some(deadpool_postgres::ManagerConfig {
            recycling_method: deadpool_postgres::RecyclingMethod::Verified,
        });
        cfg.create_pool(
            Some(deadpool_postgres::Runtime::Tokio1),
            tokio_postgres::NoTls,
        )
        .expect("a pool from the test server's URL")
    }

    /// The private cluster's port (`None` on an external server).
    pub fn port(&self) -> Option<u16> {
        self.cluster().map(|c| c.port)
    }

    /// The private cluster's data directory (`None` on an external server).
    pub fn data_dir(&self) -> Option<&Path> {
        self.cluster().map(|c| c.data.as_path())
    }

    /// The private cluster's server log (in the test's directory).
    pub fn log_path(&self) -> Option<&Path> {
        self.cluster().map(|c| c.log.as_path())
    }

    /// The running postmaster's pid (`None` when stopped, killed, or external).
    pub fn pid(&self) -> Option<u32> {
        self.cluster().and_then(|c| c.postmaster)
    }

    /// Stops the server cleanly and quickly (`pg_ctl stop -m fast`: sessions are ended, the
    /// checkpoint is written). [`PgServer::start_again`] brings it back.
    pub fn stop(&mut self) {
        let c = self.private_mut("stop");
        let Some(pid) = c.postmaster else { return };
        let out = c.pg_ctl(&["stop", "-m", "fast", "-w", "-t", PG_CTL_WAIT_SECS]);
        if !out.status.success() {
            panic!("pg_ctl stop failed\n{}", c.explain(&out));
        }
        wait_gone(pid);
        c.postmaster = None;
    }

    /// A crash: SIGKILL the postmaster and every process it started, and wait until they are gone.
    /// Nothing is flushed; [`PgServer::start_again`] must recover from the write-ahead log.
    pub fn kill(&mut self) {
        let c = self.private_mut("kill");
        if let Some(pid) = c.postmaster.take() {
            kill_tree(pid);
        }
    }

    /// Starts the server again on the same port and data (after [`PgServer::stop`] or
    /// [`PgServer::kill`]); returns once it accepts connections.
    pub fn start_again(&mut self) {
        let c = self.private_mut("start again");
        assert!(c.postmaster.is_none(), "the test server is already running");
        if let Err(why) = c.start() {
            panic!(
                "the test server did not start again on port {}: {why}",
                c.port
            );
        }
    }

    /// TLS on the private server with `cert` and `key` (PEM files), and the unprivileged role
    /// refused on a connection without it (`hostnossl … reject`, ahead of every other line of
    /// `pg_hba.conf`); in effect on return (the configuration reloaded and checked).
    pub fn require_tls(&mut self, cert: &Path, key: &Path) {
        let superuser_url = self.superuser_url.clone();
        let c = self.private_mut("require TLS on");
        let (crt, pem_key) = (c.root.join("server.crt"), c.root.join("server.key"));
        std::fs::copy(cert, &crt).expect("copying the server certificate");
        std::fs::copy(key, &pem_key).expect("copying the server key");
        std::fs::set_permissions(&pem_key, std::fs::Permissions::from_mode(0o600))
            .expect("chmod the server key");
        if let Some(acct) = c.run_as {
            for f in [&crt, &pem_key] {
                std::os::unix::fs::chown(f, Some(acct.uid), Some(acct.gid))
                    .expect("giving the certificate to the postgres user");
            }
        }
        let hba = c.data.join("pg_hba.conf");
        let old = std::fs::read_to_string(&hba).expect("reading pg_hba.conf");
        std::fs::write(
            &hba,
            format!(
                "# onshi test server: {ROLE} over TLS only\nhostnossl all {ROLE} all reject\n{old}"
            ),
        )
        .expect("writing pg_hba.conf");
        if let Err(e) = sql(
            &superuser_url,
            &[
                "ALTER SYSTEM SET ssl = on".into(),
                format!("ALTER SYSTEM SET ssl_cert_file = '{}'", crt.display()),
                format!("ALTER SYSTEM SET ssl_key_file = '{}'", pem_key.display()),
                "SELECT pg_reload_conf()".into(),
            ],
        ) {
            panic!(
                "turning TLS on failed: {e}\nserver log:\n{}",
                tail(&c.log, 30)
            );
        }
        // The postmaster rereads both files when it handles the reload's signal: a new session
        // then says `ssl` is on.
        let reloaded = wait_until(Duration::from_secs(30), Duration::from_millis(20), || {
            setting(&superuser_url, "ssl").ok().filter(|v| v == "on")
        });
        if reloaded.is_none() {
            panic!(
                "the server did not turn TLS on\nserver log:\n{}",
                tail(&c.log, 30)
            );
        }
    }

    /// The last `lines` lines of the server log (empty on an external server).
    pub fn log_tail(&self, lines: usize) -> String {
        let Some(c) = self.cluster() else {
            return String::new();
        };
        tail(&c.log, lines)
    }

    fn cluster(&self) -> Option<&Cluster> {
        match &self.kind {
            Kind::Private(c) => Some(c),
            Kind::External { .. } => None,
        }
    }

    fn private_mut(&mut self, what: &str) -> &mut Cluster {
        match &mut self.kind {
            Kind::Private(c) => c,
            Kind::External { .. } => panic!(
                "this test must {what} its PostgreSQL server, which it cannot do to the external \
                 server named by {PG_URL_ENV}: unset {PG_URL_ENV} so the test starts its own"
            ),
        }
    }

    fn start_private(test: &TestDir) -> PgServer {
        let bindir = bindir().to_path_buf();
        let run_as = rustix::process::geteuid().is_root().then(postgres_account);
        // Several servers may share one test directory: pg, pg-2, pg-3 …
        let root = (1..)
            .map(|n| {
                test.join(if n == 1 {
                    "pg".into()
                } else {
                    format!("pg-{n}")
                })
            })
            .find(|p| match std::fs::create_dir(p) {
                Ok(()) => true,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
                Err(e) => panic!("creating {}: {e}", p.display()),
            })
            .expect("a directory for the test server");
        if let Some(acct) = run_as {
            // The server's user must reach its files: let it through the test's directory (search
            // only, no listing) and own its own part.
            std::fs::set_permissions(test.path(), std::fs::Permissions::from_mode(0o711))
                .expect("making the test directory searchable");
            std::os::unix::fs::chown(&root, Some(acct.uid), Some(acct.gid))
                .expect("giving the test server's directory to the postgres user");
        }
        let superuser_password = password();
        let role_password = password();
        let mut c = Cluster {
            bindir,
            data: root.join("data"),
            log: root.join("server.log"),
            root,
            port: 0,
            run_as,
            postmaster: None,
        };
        c.initdb(&superuser_password);

        // A free port can be taken by someone else between our probe and the server's bind (other
        // tests run in parallel): try a few.
        let mut last = String::new();
        for _ in 0..5 {
            c.port = free_port();
            match c.start() {
                Ok(()) => break,
                Err(why) if why.contains("Address already in use") => last = why,
                Err(why) => panic!("the test server did not start: {why}"),
            }
        }
        if c.postmaster.is_none() {
            panic!("the test server found no free port in 5 tries: {last}");
        }

        let superuser_url = format!(
            "postgres://postgres:{superuser_password}@127.0.0.1:{}/postgres",
            c.port
        );
        if let Err(e) = sql(
            &superuser_url,
            &[
                format!("CREATE ROLE {ROLE} LOGIN PASSWORD '{role_password}'"),
                format!("CREATE DATABASE {DATABASE} OWNER {ROLE}"),
            ],
        ) {
            panic!(
                "creating the test role and database failed: {e}\nserver log:\n{}",
                tail(&c.log, 30)
            );
        }
        PgServer {
            url: format!(
                "postgres://{ROLE}:{role_password}@127.0.0.1:{}/{DATABASE}",
                c.port
            ),
            superuser_url,
            kind: Kind::Private(c),
        }
    }

    fn start_external(base: &str) -> PgServer {
        static NEXT: AtomicU32 = AtomicU32::new(1);
        let database = format!(
            "onshi_test_{}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            rand::rng().random_range(0..1_000_000u32)
        );
        // As the private server's: UTF-8, collation C, whatever the server's default is.
        let create = format!(
            "CREATE DATABASE {database} TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'"
        );
        // The message never shows the URL: it holds a password.
        if let Err(e) = sql(base, &[create]) {
            panic!("cannot create a test database on the server named by {PG_URL_ENV}: {e}");
        }
        let url = with_database(base, &database);
        PgServer {
            superuser_url: url.clone(),
            url,
            kind: Kind::External {
                database,
                base: base.to_string(),
            },
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        // A private cluster stops itself (Drop for Cluster).
        if let Kind::External { database, base } = &self.kind {
            if std::thread::panicking() {
                eprintln!("test database {database} kept on the server of {PG_URL_ENV}");
            } else if let Err(e) = sql(
                base,
                &[format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)")],
            ) {
                eprintln!("could not drop test database {database}: {e}");
            }
        }
    }
}

/// Also while [`PgServer::start`] is still setting up, so a failed set-up leaves nothing running.
impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(pid) = self.postmaster.take() {
            // Immediate: the cluster is thrown away, nothing needs to be flushed.
            let out = self.pg_ctl(&["stop", "-m", "immediate", "-w", "-t", PG_CTL_WAIT_SECS]);
            if !out.status.success() {
                eprintln!(
                    "pg_ctl stop failed, killing the server\n{}",
                    self.explain(&out)
                );
            }
            // Also after a clean stop: pg_ctl returns when the pid file is gone, a moment before
            // the process is.
            kill_tree(pid);
        }
        if std::thread::panicking() {
            eprintln!(
                "----- PostgreSQL server log ({}) -----\n{}",
                self.log.display(),
                tail(&self.log, 60)
            );
        }
    }
}

impl Cluster {
    /// One of PostgreSQL's programs, run as the server's user, from inside the cluster's own
    /// directory (the postgres user may not be able to enter the test's working directory).
    fn command(&self, program: &str) -> Command {
        let path = self.bindir.join(program);
        let mut cmd = if self.run_as.is_some() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        };
        cmd.current_dir(&self.root);
        // Settings from the environment must not redirect these programs to another cluster.
        for var in [
            "PGDATA",
            "PGHOST",
            "PGPORT",
            "PGUSER",
            "PGDATABASE",
            "PGPASSWORD",
        ] {
            cmd.env_remove(var);
        }
        cmd
    }

    fn pg_ctl(&self, args: &[&str]) -> Output {
        let mut cmd = self.command("pg_ctl");
        cmd.arg("-D").arg(&self.data).args(args);
        run_with(&mut cmd)
    }

    fn initdb(&self, superuser_password: &str) {
        let pwfile = self.root.join("superuser.pw");
        write_file(&pwfile, superuser_password);
        if let Some(acct) = self.run_as {
            std::os::unix::fs::chown(&pwfile, Some(acct.uid), Some(acct.gid))
                .expect("giving the password file to the postgres user");
        }
        let mut cmd = self.command("initdb");
        cmd.arg("-D")
            .arg(&self.data)
            .args(["-U", "postgres", "--auth=scram-sha-256", "-E", "UTF8"])
            // Locale C: the same collation on every machine, whatever LANG says.
            .arg("--no-locale")
            // Skips only initdb's final flush of the fresh template files (2 s of a 3 s initdb):
            // a power loss of the test machine ends the test anyway. The server itself runs with
            // fsync on, so every commit is durable.
            .arg("--no-sync")
            .arg(format!("--pwfile={}", pwfile.display()));
        let out = run_with(&mut cmd);
        let _ = std::fs::remove_file(&pwfile);
        if !out.status.success() {
            panic!("initdb failed\n{}", self.explain(&out));
        }
        let socket_dir = if self.root.join(".s.PGSQL.65535").as_os_str().len() < 100 {
            self.root.display().to_string()
        } else {
            // Too long for a unix socket's path: TCP only (never a shared socket directory).
            String::new()
        };
        let conf = format!(
            "\n# onshi test server (tests/src/pg.rs): loopback only, its own socket directory,\n\
             # durable as in production. The port is given by pg_ctl -o.\n\
             listen_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{socket_dir}'\n\
             fsync = on\n\
             synchronous_commit = on\n\
             full_page_writes = on\n\
             log_line_prefix = '%m [%p] %q%u@%d '\n"
        );
        File::options()
            .append(true)
            .open(self.data.join("postgresql.conf"))
            .and_then(|mut f| f.write_all(conf.as_bytes()))
            .expect("configuring the test server");
    }

    /// `pg_ctl start -w`: returns when the server accepts connections (pg_ctl watches the
    /// postmaster's own readiness report), or the reason it did not start (with the new part of
    /// the log).
    fn start(&mut self) -> Result<(), String> {
        self.clear_stale_lock_files();
        let log_before = std::fs::metadata(&self.log).map_or(0, |m| m.len());
        let log = self.log.display().to_string();
        let port = format!("-p {}", self.port);
        let out = self.pg_ctl(&[
            "start",
            "-w",
            "-t",
            PG_CTL_WAIT_SECS,
            "-l",
            &log,
            "-o",
            &port,
        ]);
        let pid = pid_in(&self.data.join("postmaster.pid"));
        if !out.status.success() {
            // pg_ctl gave up waiting, but a postmaster may still be starting: not left behind.
            if let Some(pid) = pid.filter(|p| alive(*p)) {
                kill_tree(pid);
            }
            let log = std::fs::read(&self.log).unwrap_or_default();
            let new = String::from_utf8_lossy(log.get(log_before as usize..).unwrap_or_default());
            return Err(format!(
                "pg_ctl start: {}\n{}{}\nserver log ({}):\n{new}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                self.log.display()
            ));
        }
        let pid =
            pid.ok_or_else(|| "the server started but wrote no postmaster.pid".to_string())?;
        self.postmaster = Some(pid);
        Ok(())
    }

    /// After a crash the old postmaster.pid and socket lock file stay; PostgreSQL ignores them when
    /// their pid is gone, but not when that pid is a zombie not yet reaped (some containers' init
    /// reaps orphans late). The pid is verified not to run first, so removing the files cannot let
    /// two postmasters share the data.
    fn clear_stale_lock_files(&self) {
        let socket_lock = self.root.join(format!(".s.PGSQL.{}.lock", self.port));
        for lock in [self.data.join("postmaster.pid"), socket_lock] {
            if pid_in(&lock).is_some_and(|pid| !alive(pid)) {
                let _ = std::fs::remove_file(lock);
            }
        }
    }

    fn explain(&self, out: &Output) -> String {
        format!(
            "status: {}\nstdout:\n{}\nstderr:\n{}\nlog ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log.display(),
            tail(&self.log, 30)
        )
    }
}

/// Where PostgreSQL's server programs are: `pg_config --bindir`, else the newest
/// `/usr/lib/postgresql/N/bin` (Debian's layout, not on PATH), else `initdb`'s directory on PATH.
fn bindir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let has_initdb = |d: &Path| d.join("initdb").is_file() && d.join("pg_ctl").is_file();
        let from_pg_config = Command::new("pg_config")
            .arg("--bindir")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
        if let Some(d) = from_pg_config.filter(|d| has_initdb(d)) {
            return d;
        }
        let mut debian: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let version = e.file_name().to_str()?.parse().ok()?;
                Some((version, e.path().join("bin")))
            })
            .filter(|(_, d)| has_initdb(d))
            .collect();
        debian.sort();
        if let Some((_, d)) = debian.pop() {
            return d;
        }
        if let Some(d) = std::env::var_os("PATH")
            .iter()
            .flat_map(std::env::split_paths)
            .find(|d| has_initdb(d))
        {
            return d;
        }
        panic!(
            "PostgreSQL's server programs (initdb, pg_ctl) were not found (not by `pg_config --bindir`, \
             not in /usr/lib/postgresql/*/bin, not on PATH): the tests start their own PostgreSQL, so \
             install it (Debian: `apt-get install postgresql`), or set {PG_URL_ENV} to an existing server"
        )
    })
}

/// The `postgres` system user that Debian's package creates (initdb refuses to run as root).
fn postgres_account() -> Account {
    let id = |flag: &str| {
        Command::new("id")
            .args([flag, "postgres"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
    };
    match (id("-u"), id("-g")) {
        (Some(uid), Some(gid)) => Account { uid, gid },
        _ => panic!(
            "the tests run as root, and PostgreSQL refuses to run as root, so the test server runs as \
             the `postgres` user, which does not exist: install Debian's `postgresql` package (it \
             creates the user), or run the tests as an ordinary user"
        ),
    }
}

/// A setting as a new session on `url` sees it (`SHOW name`).
fn setting(url: &str, name: &str) -> Result<String, String> {
    let show = format!("SHOW {name}");
    session(url, async move |client| {
        Ok(client
            .query_one(&show, &[])
            .await
            .map_err(|e| db_error(&e))?
            .get(0))
    })
}

/// Runs each statement on its own (CREATE DATABASE cannot share a transaction).
fn sql(url: &str, statements: &[String]) -> Result<(), String> {
    let statements = statements.to_vec();
    session(url, async move |client| {
        for s in &statements {
            client.batch_execute(s).await.map_err(|e| {
                // Never the password in a message.
                let what = s.split(" PASSWORD").next().unwrap_or(s);
                format!("{what}: {}", db_error(&e))
            })?;
        }
        Ok(())
    })
}

/// `f` on a short-lived connection to `url`, on a thread of its own so that it works from inside
/// a test's tokio runtime too.
fn session<T: Send + 'static>(
    url: &str,
    f: impl AsyncFnOnce(&tokio_postgres::Client) -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    let url = url.to_string();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .map_err(|e| format!("connecting: {}", db_error(&e)))?;
            let driver = tokio::spawn(connection);
            let out = f(&client).await;
            drop(client);
            let _ = driver.await;
            out
        })
    })
    .join()
    .map_err(|_| "the SQL thread panicked".to_string())?
}

/// The server's own message for a database error (tokio-postgres displays only "db error").
pub fn db_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

/// `url` with its database replaced by `database`.
fn with_database(url: &str, database: &str) -> String {
    let mut u = reqwest::Url::parse(url)
        .unwrap_or_else(|e| panic!("{PG_URL_ENV} is not a postgres:// URL: {e}"));
    u.set_path(&format!("/{database}"));
    u.to_string()
}

/// SIGKILL `pid` and every process it started, then wait until they are all gone. The postmaster
/// is stopped (SIGSTOP) first so that it cannot start another backend between the listing of its
/// children and the kill; its children are listed while it is still their parent.
fn kill_tree(pid: u32) {
    use rustix::process::{Pid, Signal, kill_process};
    let Some(postmaster) = Pid::from_raw(pid as i32) else {
        return;
    };
    if kill_process(postmaster, Signal::STOP).is_err() {
        return; // already gone
    }
    let children = children_of(pid);
    let _ = kill_process(postmaster, Signal::KILL);
    for child in &children {
        if let Some(p) = Pid::from_raw(*child as i32) {
            let _ = kill_process(p, Signal::KILL);
        }
    }
    wait_gone(pid);
    for child in children {
        wait_gone(child);
    }
}

/// The pid on the first line of a lock file (postmaster.pid, a socket's .lock).
fn pid_in(lock: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(lock).ok()?;
    text.lines().next()?.trim().parse().ok()
}

/// Pids whose parent is `pid` (from /proc).
fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| stat(*p).is_some_and(|(_, ppid)| ppid == pid))
        .collect()
}

/// A process's state letter and parent pid, from `/proc/PID/stat` (after the `(comm)` field,
/// which may itself contain spaces and parentheses).
fn stat(pid: u32) -> Option<(char, u32)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut rest = s.get(s.rfind(')')? + 1..)?.split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Whether `pid` runs (a zombie has ended: it only waits for its parent to reap it).
fn alive(pid: u32) -> bool {
    stat(pid).is_some_and(|(state, _)| state != 'Z' && state != 'X')
}

fn wait_gone(pid: u32) {
    if wait_until(Duration::from_secs(30), Duration::from_millis(10), || {
        (!alive(pid)).then_some(())
    })
    .is_none()
    {
        eprintln!("PostgreSQL process {pid} still runs 30 s after it was stopped");
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A random password of URL-safe characters.
fn password() -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut rng = rand::rng();
    (0..24)
        .map(|_| char::from(CHARS[rng.random_range(0..CHARS.len())]))
        .collect()
}

fn write_file(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

fn tail(path: &Path, lines: usize) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = s.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
