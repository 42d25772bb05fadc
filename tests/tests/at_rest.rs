//! Keys for personal data at rest (issue 18 item 2), on real processes and real sled files: a
//! wrong or missing key refused with nothing on disk changed; `key rotate` on a running and on a
//! stopped edge; `key rotate --data` killed mid-way (the `ONSHI_CRASH_AT=reseal:N` hook of
//! `onshi_sync::sealed`) and finished by the next start; a plain-text store of an earlier version
//! converted at the first start with a key, and that conversion killed at each of its steps
//! (`convert.copied`, `convert.committed`, `convert.swapped`) then finished by a clean start.
//!
//! **The plain store "as an earlier version left it"** is made without building the earlier
//! version: a real session (checks, a batch that fills the replica, provisional records, a mailbox
//! request, the access log) on today's edge, then its store copied out in plain text through the
//! same `onshi-sync` APIs the earlier version wrote it with — a plain `SledStore` (whose
//! `Store::blind` leaves card numbers as they are, as that version stored them), the registry's
//! trees re-put through `Registry::open_named` (so the replica's card-number keys are the plain
//! numbers again) and every other tree copied value for value. The earlier version (4674466) and
//! this one store the same trees with the same values; only the sealing differs (the diff touches
//! no value format), so this is that layout, filled by a realistic session, and it needs no
//! dev-dependency on the daemon's internals. The test first checks that the copy really holds the
//! person's name and card number in plain text, so the later "no longer there" is not vacuous.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use onshi_sync::registry::Registry as StoreRegistry;
use onshi_sync::sealed::Vault;
use onshi_sync::store::{SledStore, Store};
use onshi_sync::vault::{Kek, KeySource};
use onshi_tests::{
    Edge, EdgeOpts, FACILITY_A, Registry, TODAY, TestDir, card_check, edge_bin,
    reconciler_with_registry, run, run_with, wait_until,
};
use serde_json::{Value, json};

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn str_of(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

/// Every regular file under `dir` (path relative to it → bytes); other entries by name only.
fn files_under(dir: &Path) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let path = e.path();
            let kind = e.file_type().unwrap();
            let rel = path.strip_prefix(dir).unwrap().to_path_buf();
            if kind.is_dir() {
                stack.push(path);
                out.insert(rel, None);
            } else if kind.is_file() {
                out.insert(rel, Some(std::fs::read(&path).unwrap()));
            } else {
                out.insert(rel, None);
            }
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The files under `dir` whose bytes hold `needle`.
fn holding(dir: &Path, needle: &str) -> Vec<PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|(_, b)| b.as_ref().is_some_and(|b| contains(b, needle.as_bytes())))
        .map(|(p, _)| p)
        .collect()
}

/// Stops the edge cleanly (SIGTERM): its store is let go when the process is gone.
fn stop(edge: &mut Edge) {
    edge.proc.signal(libc::SIGTERM);
    edge.proc
        .wait_exit(Duration::from_secs(30))
        .expect("the edge stops on SIGTERM");
}

fn with_key(mut opts: EdgeOpts, key: &Path) -> EdgeOpts {
    opts.extra_args = vec!["--data-key".into(), p(key)];
    opts
}

/// `onshi-edge run` as the harness runs it, to completion: for a start that must not get far.
fn run_edge_to_exit(opts: &EdgeOpts, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(edge_bin());
    cmd.args(["run", "--facility", &opts.facility, "--data"])
        .arg(&opts.data)
        .arg("--pki")
        .arg(&opts.pki)
        .args(["--reconciler", &opts.reconciler.to_string()])
        .args(["--http", "127.0.0.1:0"])
        .args(&opts.extra_args)
        .env("NO_COLOR", "1")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("CREDENTIALS_DIRECTORY");
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_with(&mut cmd)
}

/// `onshi-edge export` through the API, one JSON value per record, in order.
fn export(edge: &Edge) -> Vec<Value> {
    edge.export()
}

/// `onshi-edge key …` with `--data-dir DATA --data-key KEY`, and optionally the crash hook.
fn key_cmd(args: &[&str], data: &Path, key: &Path, crash_at: Option<&str>) -> Output {
    let mut cmd = Command::new(edge_bin());
    cmd.arg("key")
        .args(args)
        .args(["--data-dir", &p(data), "--data-key", &p(key)])
        .env_remove("CREDENTIALS_DIRECTORY");
    if let Some(at) = crash_at {
        cmd.env("ONSHI_CRASH_AT", at);
    }
    run_with(&mut cmd)
}

/// `key status --json` of a stopped (or running) edge.
fn key_status(data: &Path, key: &Path) -> Value {
    let out = key_cmd(&["status", "--json"], data, key, None);
    assert!(out.status.success(), "key status: {}", text(&out));
    serde_json::from_slice(&out.stdout).expect("key status --json prints JSON")
}

/// `audit verify --data DATA --data-key KEY`: the entries of an intact chain.
fn audit_entries(data: &Path, key: &Path) -> u64 {
    let out = run(
        &edge_bin(),
        &["audit", "verify", "--data", &p(data), "--data-key", &p(key)],
    );
    let said = text(&out);
    assert!(out.status.success(), "audit verify: {said}");
    let n = said
        .split("access log: ")
        .nth(1)
        .and_then(|r| r.split(" entries, chain intact").next())
        .and_then(|n| n.trim().parse().ok());
    n.unwrap_or_else(|| panic!("audit verify did not say the chain is intact: {said}"))
}

fn fingerprint(key: &Path) -> String {
    Kek::load(key).unwrap().fingerprint()
}

/// What a reception desk did in a session, for comparing after a restart.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    export: Vec<Value>,
    checks: u64,
    replica_people: u64,
    replica_periods: u64,
    mailbox_records: Option<u64>,
}

fn seen(edge: &Edge) -> Seen {
    let s = edge.status();
    Seen {
        export: export(edge),
        checks: s["journal"]["checks"].as_u64().unwrap(),
        replica_people: s["replica"]["people"].as_u64().unwrap(),
        replica_periods: s["replica"]["periods"].as_u64().unwrap(),
        mailbox_records: s["mailbox"]["records"].as_u64(),
    }
}

/// A single-check OQS request file for period `q`.
fn request_xml(q: &Value) -> String {
    onshi_tests::oqs::request_doc("UTF-8", FACILITY_A, "P", &onshi_tests::oqs::search_info(q))
}

/// A session at reception for `person` (plus `extra_checks` checks of others): a batch inquiry
/// that fills the replica, checks, a provisional record with the person's declaration, a request
/// file through the mailbox (when the edge has one); synced, so a later start changes nothing.
fn session(edge: &Edge, reg: &Registry, person: &Value, extra_checks: usize) {
    edge.wait_online();
    let people = reg.valid_people(0, 200);
    let items: Vec<Value> = people
        .iter()
        .map(|q| {
            let mut c = card_check(q, TODAY);
            c.as_object_mut().unwrap().remove("service_date");
            c
        })
        .collect();
    let (code, batch) = edge.post(
        "/v1/batch",
        &json!({"service_date": TODAY, "checks": items}),
    );
    assert_eq!(code, 200, "{batch}");
    let (code, v) = edge.post_check(&card_check(person, TODAY));
    assert_eq!(code, 200, "{v}");
    // Several senders at once: a journal big enough that a re-seal is seen under way.
    let http = &edge.http;
    std::thread::scope(|s| {
        for t in 0..4 {
            let people = &people;
            s.spawn(move || {
                for i in (t..extra_checks).step_by(4) {
                    let a =
                        http.post_json("/v1/checks", &card_check(people[i % people.len()], TODAY));
                    assert_eq!(a.status, 200, "{}", a.text);
                }
            });
        }
    });
    let prov = json!({"declared": {"name": person["name"], "name_kana": person["name_kana"], "birth_date": person["birth_date"], "sex": person["sex"], "address": person["address"], "insurer_name": person["insurer_name"]}, "service_date": TODAY, "total_fee_yen": 4321});
    let (code, v) = edge.post("/v1/provisional", &prov);
    assert_eq!(code, 201, "{v}");
    if let Some(mailbox) = &edge.opts.mailbox {
        let name = "OQSsiquc01req_atrest_1.xml";
        let tmp = mailbox.join(format!("{name}.part"));
        std::fs::write(&tmp, request_xml(person)).unwrap();
        std::fs::rename(&tmp, mailbox.join("req").join(name)).unwrap();
        let res = mailbox.join("res/OQSsiquc01res_atrest_1.xml");
        wait_until(Duration::from_secs(30), Duration::from_millis(20), || {
            res.exists().then_some(())
        })
        .expect("the mailbox answered the request file");
    }
    let synced = edge.cli(&["sync-now", "--timeout-s", "30"]);
    assert!(synced.status.success(), "sync-now: {}", text(&synced));
}

/// Someone whose card number is long enough to be told apart from other bytes on disk.
fn marked_person(reg: &Registry) -> Value {
    reg.valid_people(0, 300)
        .into_iter()
        .find(|q| str_of(&q["number"]).len() >= 6 && str_of(&q["name_kana"]).chars().count() >= 3)
        .expect("a person with a long card number")
        .clone()
}

#[test]
fn a_wrong_or_missing_key_is_refused_and_nothing_on_disk_changes() {
    let t = TestDir::new("at-rest-wrong-key");
    let (pki, reg, rec) = reconciler_with_registry(&t, &[FACILITY_A]);
    let data = t.join("edge");
    let key_a = t.join("keys-a.key");
    let opts = with_key(EdgeOpts::new(FACILITY_A, &data, &pki, rec.addr), &key_a);
    let mut edge = Edge::start(&t, opts.clone());
    edge.wait_online();
    assert_eq!(
        edge.post_check(&card_check(reg.valid_insured(), TODAY)).0,
        200
    );
    stop(&mut edge);
    assert!(key_a.is_file(), "the first start made the key file");

    let key_b = t.join("keys-b.key");
    Kek::generate().unwrap().write(&key_b).unwrap();
    let before = files_under(&data);
    let wrong = run_edge_to_exit(&with_key(opts.clone(), &key_b), &[]);
    let said = text(&wrong);
    assert!(
        !wrong.status.success(),
        "a wrong key must not start: {said}"
    );
    assert!(
        said.contains(&fingerprint(&key_a)),
        "names the data's key: {said}"
    );
    assert!(
        said.contains(&fingerprint(&key_b)),
        "names the key given: {said}"
    );
    assert!(said.contains("nothing was changed"), "{said}");
    assert!(
        files_under(&data) == before,
        "a refused start changed files under {}",
        p(&data)
    );

    // No key file where the flag points, and none beside the data: refused, nothing made.
    let nowhere = t.join("missing.key");
    let mut no_flag = opts.clone();
    no_flag.extra_args.clear();
    for (opts, what) in [
        (with_key(opts.clone(), &nowhere), "--data-key"),
        (no_flag, "no flag"),
    ] {
        let missing = run_edge_to_exit(&opts, &[]);
        let said = text(&missing);
        assert!(
            !missing.status.success(),
            "{what}: a missing key must not start: {said}"
        );
        assert!(said.contains("no data key was given"), "{what}: {said}");
        assert!(
            files_under(&data) == before,
            "{what}: a refused start changed files"
        );
    }
    assert!(
        !nowhere.exists(),
        "no key is made for an encrypted directory"
    );
    assert!(
        !t.join("edge.key").exists(),
        "no key is made beside it either"
    );

    // The right key still opens everything.
    let edge = Edge::start(&t, opts);
    assert_eq!(edge.journal_checks(), 1);
}

#[test]
fn key_rotate_on_a_running_and_a_stopped_edge() {
    let t = TestDir::new("at-rest-rotate-kek");
    let (pki, reg, rec) = reconciler_with_registry(&t, &[FACILITY_A]);
    let data = t.join("edge");
    let k1 = t.join("k1.key");
    let base = EdgeOpts::new(FACILITY_A, &data, &pki, rec.addr);
    let mut edge = Edge::start(&t, with_key(base.clone(), &k1));
    let person = marked_person(&reg);
    session(&edge, &reg, &person, 20);
    let before = seen(&edge);
    assert!(before.export.len() >= 22, "{:?}", before.export.len());

    // Running: the edge writes the new key where it is told.
    let k2 = t.join("k2.key");
    let out = key_cmd(&["rotate", "--new-key", &p(&k2)], &data, &k1, None);
    assert!(out.status.success(), "key rotate: {}", text(&out));
    assert!(text(&out).contains(&fingerprint(&k2)), "{}", text(&out));
    assert_eq!(edge.status()["at_rest"]["kek"], fingerprint(&k2));
    stop(&mut edge);
    let refused = key_cmd(&["status"], &data, &k1, None);
    assert!(
        !refused.status.success(),
        "the old key still opens: {}",
        text(&refused)
    );
    assert!(
        text(&refused).contains("does not open"),
        "{}",
        text(&refused)
    );
    let mut edge = Edge::start(&t, with_key(base.clone(), &k2));
    assert_eq!(seen(&edge), before, "everything there under the new key");
    stop(&mut edge);

    // Stopped: the key file is replaced in place.
    let k2_old = t.join("k2-old.key");
    std::fs::copy(&k2, &k2_old).unwrap();
    let out = key_cmd(&["rotate"], &data, &k2, None);
    assert!(out.status.success(), "key rotate (stopped): {}", text(&out));
    assert_ne!(
        fingerprint(&k2),
        fingerprint(&k2_old),
        "a new key in the file"
    );
    let old_start = run_edge_to_exit(&with_key(base.clone(), &k2_old), &[]);
    assert!(
        !old_start.status.success(),
        "the old key still starts the edge"
    );
    assert!(
        text(&old_start).contains("does not open"),
        "{}",
        text(&old_start)
    );
    let edge = Edge::start(&t, with_key(base, &k2));
    assert_eq!(edge.status()["at_rest"]["kek"], fingerprint(&k2));
    assert_eq!(
        seen(&edge),
        before,
        "everything there after the stopped rotation"
    );
}

#[test]
fn a_data_key_rotation_killed_mid_way_is_finished_by_the_next_start() {
    let t = TestDir::new("at-rest-rotate-data");
    let (pki, reg, rec) = reconciler_with_registry(&t, &[FACILITY_A]);
    let data = t.join("edge");
    let key = t.join("data.key");
    let opts = with_key(EdgeOpts::new(FACILITY_A, &data, &pki, rec.addr), &key);
    let mut edge = Edge::start(&t, opts.clone());
    let person = marked_person(&reg);
    session(&edge, &reg, &person, 2000);
    let before = seen(&edge);
    assert!(before.checks >= 2000, "{}", before.checks);
    let entries = audit_entries(&data, &key);
    stop(&mut edge);
    assert_eq!(key_status(&data, &key)["data_key"], 1);

    // Running, with the hook: the rotation is acknowledged and under way, then the edge dies.
    let mut hooked = opts.clone();
    hooked.env = vec![("ONSHI_CRASH_AT".into(), "reseal:1500".into())];
    let mut edge = Edge::start(&t, hooked);
    // The answer may or may not get out before the kill: what counts is what is on disk.
    let _ = key_cmd(&["rotate", "--data"], &data, &key, None);
    let died = edge
        .proc
        .wait_exit(Duration::from_secs(60))
        .expect("the hook kills the edge");
    assert_eq!(died.signal(), Some(libc::SIGKILL), "{died:?}");
    let status = key_status(&data, &key);
    assert_eq!(status["data_key"], 2, "{status}");
    assert_eq!(
        status["rotation"]["to_key"], 2,
        "the rotation is unfinished: {status}"
    );
    let said = text(&key_cmd(&["status"], &data, &key, None));
    assert!(said.contains("data key rotation to key 2"), "{said}");

    // Restarted without the hook: it finishes by itself, and nothing was lost.
    let edge = Edge::start(&t, opts.clone());
    let done = edge.wait_status("the rotation finished", Duration::from_secs(120), |s| {
        s["at_rest"]["rotation"].is_null()
    });
    assert_eq!(done["at_rest"]["data_key"], 2, "{done}");
    assert!(
        edge.proc.stderr().contains("data key rotation finished"),
        "the log says so"
    );
    assert_eq!(
        seen(&edge),
        before,
        "every record readable after the rotation"
    );
    drop(edge);

    // Offline: killed mid-way too, then continued by the command itself.
    let killed = key_cmd(&["rotate", "--data"], &data, &key, Some("reseal:700"));
    assert_eq!(
        killed.status.signal(),
        Some(libc::SIGKILL),
        "{}",
        text(&killed)
    );
    assert_eq!(key_status(&data, &key)["rotation"]["to_key"], 3);
    let out = key_cmd(&["rotate", "--data"], &data, &key, None);
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("continuing the unfinished rotation to data key 3"),
        "{said}"
    );
    assert!(said.contains("data key rotation finished"), "{said}");
    let status = key_status(&data, &key);
    assert_eq!(
        (status["data_key"].clone(), status["rotation"].clone()),
        (json!(3), Value::Null)
    );
    assert!(audit_entries(&data, &key) >= entries);
    let edge = Edge::start(&t, opts);
    assert_eq!(
        seen(&edge),
        before,
        "every record readable after the offline rotation"
    );
}

/// Copies the (stopped) edge store at `data` out in plain text into `plain/journal`, as the
/// earlier version stored it (see the module doc).
fn plain_copy(data: &Path, key: &Path, plain: &Path) {
    let (vault, _) = Vault::open(&data.join("journal"), KeySource::File(key.into()), &[])
        .expect("the session's store");
    let from: Arc<dyn Store> = Arc::new(vault.store().clone());
    let to: Arc<dyn Store> = Arc::new(SledStore::open(&plain.join("journal")).unwrap());
    let names = from.tree_names().unwrap();
    let registries: Vec<&str> = names
        .iter()
        .filter_map(|n| n.strip_suffix(".periods"))
        .collect();
    for prefix in &registries {
        let src = StoreRegistry::open_named(from.clone(), prefix).unwrap();
        let dst = StoreRegistry::open_named(to.clone(), prefix).unwrap();
        for q in src.all_periods() {
            dst.put(&q.unwrap()).unwrap();
        }
    }
    for name in &names {
        if registries.iter().any(|r| {
            [".periods", ".by_person", ".by_card_id"]
                .iter()
                .any(|s| *name == format!("{r}{s}"))
        }) {
            continue;
        }
        let (src, dst) = (from.tree(name).unwrap(), to.tree(name).unwrap());
        for kv in src.scan_prefix(&[]) {
            let (k, v) = kv.unwrap();
            dst.insert(&k, &v).unwrap();
        }
    }
    to.sync().unwrap();
}

#[test]
fn a_plain_store_is_converted_and_each_crash_point_recovers() {
    let t = TestDir::new("at-rest-convert");
    let (pki, reg, mut rec) = reconciler_with_registry(&t, &[FACILITY_A]);
    let session_data = t.join("session");
    let session_key = t.join("session.key");
    let mailbox = t.join("mailbox");
    let mut opts = EdgeOpts::new(FACILITY_A, &session_data, &pki, rec.addr);
    opts.mailbox = Some(mailbox.clone());
    opts.mailbox_settle_ms = Some(50);
    let mut edge = Edge::start(&t, with_key(opts.clone(), &session_key));
    let person = marked_person(&reg);
    session(&edge, &reg, &person, 20);
    let before = seen(&edge);
    assert_eq!(before.mailbox_records, Some(1), "{before:?}");
    let entries = audit_entries(&session_data, &session_key);
    stop(&mut edge);
    drop(edge);
    // Nothing may change the records from here on: the converted edges run without a reconciler.
    rec.kill9();

    let plain = t.join("plain");
    plain_copy(&session_data, &session_key, &plain);
    std::fs::remove_dir_all(&session_data).unwrap();
    let secrets = [
        ("name", str_of(&person["name"])),
        ("kana", str_of(&person["name_kana"])),
        ("card number", str_of(&person["number"])),
        ("address", str_of(&person["address"])),
    ];
    for (what, secret) in &secrets[..3] {
        assert!(
            !holding(&plain, secret).is_empty(),
            "the plain store holds the {what} in plain text (else the scan below proves nothing)"
        );
    }

    for crash_at in [
        None,
        Some("convert.copied"),
        Some("convert.committed"),
        Some("convert.swapped"),
    ] {
        let label = crash_at.unwrap_or("clean");
        let data = t.join(format!("edge-{label}"));
        let key = t.join(format!("edge-{label}.key"));
        std::fs::create_dir(&data).unwrap();
        let cp = Command::new("cp")
            .arg("-a")
            .arg(plain.join("journal"))
            .arg(data.join("journal"))
            .status()
            .unwrap();
        assert!(cp.success());
        let mut o = with_key(opts.clone(), &key);
        o.data = data.clone();
        o.name = format!("edge-{label}");
        if let Some(at) = crash_at {
            let killed = run_edge_to_exit(&o, &[("ONSHI_CRASH_AT", at)]);
            assert_eq!(
                killed.status.signal(),
                Some(libc::SIGKILL),
                "{at}: {}",
                text(&killed)
            );
            let (keyring, sealing, plain_old) = (
                data.join("journal.keyring").exists(),
                data.join("journal.sealing").exists(),
                data.join("journal.plain-old").exists(),
            );
            let expected = match at {
                "convert.copied" => (false, true, false),
                "convert.committed" => (true, true, false),
                _ => (true, false, true),
            };
            assert_eq!(
                (keyring, sealing, plain_old),
                expected,
                "{at}: keyring, sealing, plain-old"
            );
        }
        let mut edge = Edge::start(&t, o);
        let after = seen(&edge);
        assert_eq!(
            after, before,
            "{label}: everything served after the conversion"
        );
        stop(&mut edge);
        assert!(
            audit_entries(&data, &key) >= entries,
            "{label}: the access log's chain"
        );
        for leftover in ["journal.sealing", "journal.plain-old"] {
            assert!(
                !data.join(leftover).exists(),
                "{label}: {leftover} left behind"
            );
        }
        for (what, secret) in &secrets {
            let found = holding(&data, secret);
            assert!(
                found.is_empty(),
                "{label}: the {what} in plain text in {found:?}"
            );
        }
        std::fs::remove_dir_all(&data).unwrap();
    }
}
