//! The reconciler's embedded store at rest (issue 18), as IT staff meet it with the real binaries:
//! after `import` of a registry and a session of checks, central searches and a provisional record
//! settled through a running `serve`, no name, reading (full- and half-width), birth date as the
//! registry file writes it, address, card number or insurer-and-number pair is found in any file
//! under DATA, in UTF-8 or Shift_JIS; a plain store an earlier version left is converted at the
//! first start with a key and answers the same; a wrong or missing key is refused by every command
//! with the directory's bytes unchanged.

use std::path::Path;
use std::time::Duration;

use onshi_tests::scan::{files_under, personal};
use onshi_tests::{
    Edge, EdgeOpts, FACILITY_A, Pki, Reconciler, Registry, TODAY, TestDir, card_check,
    reconciler_bin, run, run_ok, wait_until,
};
use serde_json::json;

#[track_caller]
fn assert_nothing_personal(data: &Path, reg: &Registry) {
    let needles: Vec<(String, Vec<u8>)> = reg.periods.iter().flat_map(personal).collect();
    let finder = aho_corasick::AhoCorasick::new(needles.iter().map(|n| &n.1)).expect("the needles");
    let files = files_under(data);
    assert!(files.len() > 3, "{files:?}");
    for (path, bytes) in &files {
        if let Some(m) = finder.find(bytes.as_slice()) {
            panic!(
                "'{}' in plain text in {}",
                needles[m.pattern().as_usize()].0,
                path.display()
            );
        }
    }
}

fn arg(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

fn serve_with_key(t: &TestDir, data: &Path, pki: &Pki, key: &Path) -> Reconciler {
    let key = key.to_path_buf();
    Reconciler::start_with(t, data, pki, "127.0.0.1:0", move |cmd| {
        cmd.arg("--data-key").arg(key);
    })
}

/// Checks and central searches of a few people through an edge, and a provisional record settled
/// at the centre: what the store then holds of a working day.
fn session(t: &TestDir, rec: &Reconciler, pki: &Pki, reg: &Registry) {
    let edge = Edge::start(t, EdgeOpts::new(FACILITY_A, &t.join("edge"), pki, rec.addr));
    edge.wait_online();
    // An operator's command while serve runs: through its admin socket, no key needed.
    rec.grant(FACILITY_A);
    for q in reg.valid_people(0, 4) {
        let (code, v) = edge.post("/v1/checks", &card_check(q, TODAY));
        assert_eq!(code, 200, "{v}");
        assert_eq!(v["source"], "online", "{v}");
        assert_eq!(v["validity"], "valid", "{v}");
        let body = json!({"name": q["name"], "birth_date": q["birth_date"], "sex": q["sex"]});
        let (code, v) = edge.post("/v1/search", &body);
        assert_eq!(code, 200, "{v}");
        assert_eq!(v["source"], "online", "central search answers: {v}");
        assert_eq!(v["candidates"][0]["person_id"], q["person_id"], "{v}");
    }
    let q = reg.valid_insured();
    let declared = json!({"name": q["name"], "name_kana": q["name_kana"], "birth_date": q["birth_date"],
        "sex": q["sex"], "insurer_name": q["insurer_name"], "share_percent": q["share_percent"]});
    let (code, v) = edge.post(
        "/v1/provisional",
        &json!({"declared": declared, "person_id": q["person_id"], "service_date": TODAY, "total_fee_yen": 5000}),
    );
    assert_eq!(code, 201, "{v}");
    let id = v["record_id"].clone();
    let out = edge.cli(&["sync-now", "--timeout-s", "20"]);
    assert!(out.status.success(), "{out:?}");
    wait_until(Duration::from_secs(20), Duration::from_millis(100), || {
        let queue = edge.queue();
        queue["items"]
            .as_array()?
            .iter()
            .find(|i| i["id"] == id && i["settlement"].is_object())
            .cloned()
    })
    .unwrap_or_else(|| panic!("the record was not settled at the centre: {}", edge.queue()));
}

fn stop(mut rec: Reconciler) {
    rec.proc.signal(libc::SIGTERM);
    rec.proc
        .wait_exit(Duration::from_secs(20))
        .expect("the reconciler stops on SIGTERM");
}

#[test]
fn a_session_leaves_nothing_personal_in_plain_text_under_data() {
    let t = TestDir::new("central-at-rest");
    let pki = Pki::init(&t.join("pki"), &[FACILITY_A]);
    let reg = Registry::generate(t.path(), 300, 11);
    let (data, key) = (t.join("reconciler"), t.join("keys").join("reconciler.key"));
    std::fs::create_dir_all(t.join("keys")).expect("mkdir");
    run_ok(
        &reconciler_bin(),
        &[
            "import",
            "--data",
            arg(&data),
            "--data-key",
            arg(&key),
            arg(&reg.path),
        ],
    );
    assert!(key.is_file(), "the key is made with a new data directory");
    let rec = serve_with_key(&t, &data, &pki, &key);
    session(&t, &rec, &pki, &reg);
    assert!(
        !rec.proc.stderr().contains("protects nothing"),
        "a key was given: no warning"
    );
    stop(rec);
    assert_nothing_personal(&data, &reg);
}

#[test]
fn a_plain_store_of_an_earlier_version_is_converted_at_the_first_start_with_a_key() {
    use onshi_sync::store::Store;
    let t = TestDir::new("central-at-rest-convert");
    let pki = Pki::init(&t.join("pki"), &[FACILITY_A]);
    let reg = Registry::generate(t.path(), 300, 12);
    let data = t.join("reconciler");
    {
        // As the previous version's `import` left it: sled in DATA/registry, in plain text.
        let sled = std::sync::Arc::new(
            onshi_sync::store::SledStore::open(&data.join("registry")).expect("sled"),
        );
        let registry = onshi_sync::registry::Registry::open(sled.clone()).expect("registry");
        for line in &reg.periods {
            let q = onshi_model::Qualification::from_registry_value(line).expect("a period");
            registry.put(&q).expect("put");
        }
        sled.sync().expect("sync");
    }
    let plain = files_under(&data);
    let name = reg.valid_insured()["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        plain
            .iter()
            .any(|(_, b)| b.windows(name.len()).any(|w| w == name.as_bytes())),
        "the earlier version's store is plain text"
    );
    let key = t.join("reconciler-data.key");
    let rec = serve_with_key(&t, &data, &pki, &key);
    assert!(
        rec.proc.stderr().contains("converted to an encrypted one"),
        "{}",
        rec.proc.stderr_tail(20)
    );
    session(&t, &rec, &pki, &reg);
    stop(rec);
    assert_nothing_personal(&data, &reg);
}

#[test]
fn a_wrong_or_missing_key_is_refused_by_every_command_and_nothing_changes() {
    let t = TestDir::new("central-at-rest-wrong-key");
    let pki = Pki::init(&t.join("pki"), &[FACILITY_A]);
    let reg = Registry::generate(t.path(), 50, 13);
    let data = t.join("reconciler");
    let right = t.join("right.key");
    run_ok(
        &reconciler_bin(),
        &[
            "import",
            "--data",
            arg(&data),
            "--data-key",
            arg(&right),
            arg(&reg.path),
        ],
    );
    let wrong = t.join("wrong.key");
    onshi_sync::vault::Kek::generate()
        .expect("a key")
        .write(&wrong)
        .expect("writing the key");
    let before = files_under(t.path());
    let base = ["--data", arg(&data)];
    let serve = ["serve", "--pki", arg(&pki.dir), "--listen", "127.0.0.1:0"];
    let check = [
        "check-config",
        "--pki",
        arg(&pki.dir),
        "--listen",
        "127.0.0.1:0",
    ];
    let commands: Vec<Vec<&str>> = vec![
        [&["import"][..], &base, &[arg(&reg.path)]].concat(),
        [&serve[..], &base].concat(),
        [&check[..], &base].concat(),
        [&["facility", "list"][..], &base].concat(),
        [&["outage", "list"][..], &base].concat(),
        [&["audit", "verify", "--facility", FACILITY_A][..], &base].concat(),
    ];
    for c in &commands {
        for (key, says) in [
            (Some(&wrong), "does not open"),
            (None, "no data key was given"),
        ] {
            let mut args = c.clone();
            if let Some(k) = key {
                args.extend(["--data-key", arg(k)]);
            }
            let out = run(&reconciler_bin(), &args);
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{args:?} succeeded: {err}");
            assert!(
                err.contains(says) && err.contains("nothing was changed"),
                "{args:?}: {err}"
            );
        }
    }
    assert_eq!(files_under(t.path()), before, "nothing changed on disk");
    // The right key opens it.
    let out = run_ok(
        &reconciler_bin(),
        &[
            "facility",
            "list",
            "--data",
            arg(&data),
            "--data-key",
            arg(&right),
        ],
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("facilities (0)"));
    // No key at all for a new directory: a key beside it, and a warning that says what that is.
    let out = run_ok(
        &reconciler_bin(),
        &[&check[..], &["--data", arg(&t.join("fresh"))]].concat(),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("protects nothing against a stolen disk"),
        "{err}"
    );
}
