//! `onshi-reconciler` on PostgreSQL as an operator runs it: `migrate --store URL` (idempotent),
//! `import --store`, then `serve --store` with an edge: a check is answered online from the
//! database, and a provisional record syncs and is settled there. The password is in a file; on
//! the command line it is refused; a database without the schema is refused naming `migrate`.

use std::os::unix::fs::PermissionsExt;
use std::process::Output;
use std::time::Duration;

use onshi_tests::pg::PgServer;
use onshi_tests::{
    Edge, EdgeOpts, FACILITY_A, Pki, Reconciler, Registry, TODAY, TestDir, card_check,
    reconciler_bin, run, run_ok, wait_until,
};
use serde_json::{Value, json};

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn migrate_import_and_serve_on_postgresql_answer_checks_and_settle_records() {
    let t = TestDir::new("pg-reconciler");
    let pg = PgServer::start(&t);
    let onshi_tests::Store::Postgres { url, password_file } =
        onshi_tests::Store::postgres(&pg, t.path())
    else {
        unreachable!("a PostgreSQL store")
    };
    let pw = password_file.to_str().expect("utf-8 path");
    let registry = Registry::standard(&t);
    let file = registry.path.to_str().expect("utf-8 path");

    // A password on the command line is refused before anything is touched.
    let out = run(&reconciler_bin(), &["import", "--store", pg.url(), file]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("--store: the URL carries a password"),
        "{}",
        text(&out)
    );
    assert!(
        !text(&out).contains(pg.url()),
        "the password is echoed: {}",
        text(&out)
    );

    // No schema yet: import refuses, naming the command that makes it.
    let out = run(
        &reconciler_bin(),
        &["import", "--store", &url, "--store-password-file", pw, file],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("onshi-reconciler migrate"),
        "{}",
        text(&out)
    );

    // serve refuses it too, before listening.
    let pki = Pki::init(&t.join("pki"), &[FACILITY_A]);
    let pki_dir = pki.dir.to_str().expect("utf-8 path");
    let serve = [
        "serve",
        "--store",
        &url,
        "--store-password-file",
        pw,
        "--pki",
        pki_dir,
        "--listen",
        "127.0.0.1:0",
    ];
    let out = run(&reconciler_bin(), &serve);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("no onshi schema") && text(&out).contains("onshi-reconciler migrate"),
        "{}",
        text(&out)
    );

    // migrate applies the schema once and says so; again, it has nothing to do.
    let migrate = ["migrate", "--store", &url, "--store-password-file", pw];
    let first = String::from_utf8_lossy(&run_ok(&reconciler_bin(), &migrate).stdout).into_owned();
    assert!(first.contains("applied 0001_central"), "{first}");
    let again = String::from_utf8_lossy(&run_ok(&reconciler_bin(), &migrate).stdout).into_owned();
    assert!(
        !again.contains("applied") && again.contains("already current"),
        "{again}"
    );

    // import into the database.
    let out = run_ok(
        &reconciler_bin(),
        &["import", "--store", &url, "--store-password-file", pw, file],
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains(&format!("{} added", registry.periods.len())),
        "{said}"
    );

    // check-config connects and reports the schema.
    let out = run_ok(
        &reconciler_bin(),
        &[
            "check-config",
            "--store",
            &url,
            "--store-password-file",
            pw,
            "--pki",
            pki.dir.to_str().expect("utf-8 path"),
            "--listen",
            "127.0.0.1:0",
        ],
    );
    let said = String::from_utf8_lossy(&out.stdout);
    // The schema this binary knows, whatever migrations it has grown since.
    let schema = format!(
        "schema version {}",
        onshi_reconciler::store::pg::known_version()
    );
    assert!(
        said.contains("store postgresql") && said.contains(&schema),
        "{said}"
    );

    // A URL with its password in the TOML file: refused while others can read the file, accepted
    // with a warning at mode 0600 (and the password never printed).
    let toml = t.join("reconciler.toml");
    std::fs::write(
        &toml,
        format!(
            "store = \"{}\"\npki = \"{pki_dir}\"\nlisten = \"127.0.0.1:0\"\n",
            pg.url()
        ),
    )
    .expect("writing the TOML");
    std::fs::set_permissions(&toml, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let check = [
        "check-config",
        "--config",
        toml.to_str().expect("utf-8 path"),
    ];
    let out = run(&reconciler_bin(), &check);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("chmod 600"), "{}", text(&out));
    std::fs::set_permissions(&toml, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let out = run_ok(&reconciler_bin(), &check);
    assert!(
        text(&out).contains("warning: store: the database password is in")
            && text(&out).contains(&schema),
        "{}",
        text(&out)
    );
    let password = pg
        .url()
        .split_once("://")
        .and_then(|(_, r)| r.split_once('@'))
        .and_then(|(u, _)| u.split_once(':'))
        .map(|(_, p)| p.to_string())
        .expect("a password");
    assert!(!text(&out).contains(&password), "{}", text(&out));

    // serve from the database, with an edge.
    let rec = Reconciler::start_pg(&t, &url, &password_file, &pki);
    let edge = Edge::start(
        &t,
        EdgeOpts::new(FACILITY_A, &t.join("edge"), &pki, rec.addr),
    );
    edge.wait_online();
    let valid = registry.valid_insured().clone();
    let (code, answer) = edge.post_check(&card_check(&valid, TODAY));
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["validity"], "valid", "{answer}");
    assert_eq!(answer["source"], "online", "{answer}");

    // A provisional record syncs and is settled against the registry in PostgreSQL.
    let share = valid["share_percent"].as_u64().expect("share_percent");
    let declared = json!({"name": valid["name"], "name_kana": valid["name_kana"],
        "birth_date": valid["birth_date"], "sex": valid["sex"],
        "insurer_name": valid["insurer_name"], "share_percent": share});
    let (code, v) = edge.post(
        "/v1/provisional",
        &json!({"declared": declared, "person_id": valid["person_id"], "service_date": TODAY,
                "total_fee_yen": 10_000}),
    );
    assert_eq!(code, 201, "{v}");
    let id = v["record_id"].as_str().expect("record_id").to_string();
    let item = wait_until(Duration::from_secs(30), Duration::from_millis(100), || {
        let q: Value = edge.queue();
        q["items"]
            .as_array()?
            .iter()
            .find(|i| i["id"] == id.as_str() && i["settlement"].is_object())
            .cloned()
    })
    .unwrap_or_else(|| panic!("no settlement came back for {id}: {}", edge.queue()));
    assert_eq!(item["settlement"]["kind"], "confirmed", "{item}");
    // It is in the database, settled.
    let rows = onshi_tests::runtime().block_on(async {
        let pool = pg.pool();
        let c = pool.get().await.expect("a connection");
        c.query(
            "SELECT record_id FROM journal_records WHERE facility = $1",
            &[&FACILITY_A],
        )
        .await
        .expect("reading the journal")
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<Vec<_>>()
    });
    assert_eq!(rows, vec![id.clone()]);
    assert!(
        rec.proc.stderr().contains("store=postgresql") || rec.proc.stderr().contains("postgresql"),
        "{}",
        rec.proc.stderr_tail(20)
    );
}
