//! `onshi-edge backup` and `onshi-edge restore` (issue 18 item 4) on real processes and files: a
//! backup of a running edge under load holds every check acknowledged before it started and is a
//! consistent prefix of what came after; the edge started on the restored directory with the key
//! serves the same checks, provisional records, mailbox records and replica, and its access log's
//! chain holds. A backup of a stopped edge too; a damaged or truncated file, a wrong key and a
//! directory that holds edge data are refused with nothing written; the file holds nothing personal
//! in plain text.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use onshi_tests::{
    Edge, EdgeOpts, FACILITY_A, TODAY, TestDir, card_check, edge_bin, reconciler_with_registry,
    run, wait_until,
};
use serde_json::{Value, json};

/// `onshi-edge ARGS`: (exit code, stdout, stderr).
fn edge_cli(args: &[&str]) -> (i32, String, String) {
    let out = run(&edge_bin(), args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

fn str_of(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

/// The export's lines, by kind and id.
fn export(edge: &Edge) -> Vec<Value> {
    edge.export()
}

fn id_of(line: &Value) -> String {
    match line["record"].as_str() {
        Some("check") => format!("check {}", str_of(&line["check_id"])),
        Some("provisional") => format!("provisional {}", str_of(&line["record_id"])),
        other => format!("{} {}", other.unwrap_or("?"), line),
    }
}

/// A single-check request file for period `q`.
fn request_xml(q: &Value) -> String {
    onshi_tests::oqs::request_doc("UTF-8", FACILITY_A, "B", &onshi_tests::oqs::search_info(q))
}

fn wait_file(path: &Path) {
    wait_until(Duration::from_secs(30), Duration::from_millis(20), || {
        path.exists().then_some(())
    })
    .unwrap_or_else(|| panic!("{} never appeared", path.display()));
}

/// Stops the edge cleanly (SIGTERM): its store is closed when the process is gone.
fn stop(edge: &mut Edge) {
    edge.proc.signal(libc::SIGTERM);
    edge.proc
        .wait_exit(Duration::from_secs(20))
        .expect("the edge stops on SIGTERM");
}

/// What a session leaves that must never be readable in a backup: the person's name (and family
/// name), kana (katakana and hiragana, UTF-8 and Shift_JIS), card number, address.
fn assert_nothing_personal(file: &Path, q: &Value) {
    let bytes = std::fs::read(file).unwrap();
    let name = str_of(&q["name"]);
    let kana = str_of(&q["name_kana"]);
    let mut secrets: Vec<(&str, Vec<u8>)> = vec![
        ("name", name.clone().into_bytes()),
        (
            "family name",
            name.split('　').next().unwrap().as_bytes().to_vec(),
        ),
        ("kana", kana.clone().into_bytes()),
        (
            "kana in hiragana",
            onshi_tests::to_hiragana(&kana).into_bytes(),
        ),
        ("card number", str_of(&q["number"]).into_bytes()),
        ("address", str_of(&q["address"]).into_bytes()),
    ];
    let (sjis, _, _) = encoding_rs::SHIFT_JIS.encode(&name);
    secrets.push(("name in Shift_JIS", sjis.into_owned()));
    let (sjis, _, _) = encoding_rs::SHIFT_JIS.encode(&kana);
    secrets.push(("kana in Shift_JIS", sjis.into_owned()));
    for (what, s) in secrets {
        assert!(s.len() >= 4, "{what} too short to look for");
        assert!(
            !bytes.windows(s.len()).any(|w| w == s.as_slice()),
            "the {what} is in the backup in plain text"
        );
    }
}

/// Someone whose card number is long enough to be told apart from other bytes.
fn long_card(reg: &onshi_tests::Registry) -> Value {
    reg.valid_people(0, 300)
        .into_iter()
        .find(|q| str_of(&q["number"]).len() >= 6)
        .expect("a person with a long card number")
        .clone()
}

#[test]
fn a_backup_of_a_running_edge_under_load_restores_everything_acknowledged() {
    let t = TestDir::new("backup-running");
    let (pki, reg, mut rec) = reconciler_with_registry(&t, &[FACILITY_A]);
    let data = t.join("edge");
    let key = t.join("edge.key");
    let mut opts = EdgeOpts::new(FACILITY_A, &data, &pki, rec.addr);
    let mailbox = t.join("mailbox");
    opts.mailbox = Some(mailbox.clone());
    opts.mailbox_settle_ms = Some(50);
    let mut edge = Edge::start(&t, opts.clone());
    edge.wait_online();
    // A session: checks, a provisional record with the person's declaration, a request file.
    let q = long_card(&reg);
    assert_eq!(edge.post_check(&card_check(&q, TODAY)).0, 200);
    let prov = json!({"declared": {"name": q["name"], "name_kana": q["name_kana"], "birth_date": q["birth_date"], "sex": q["sex"], "address": q["address"]}, "service_date": TODAY, "total_fee_yen": 4321});
    assert_eq!(edge.post("/v1/provisional", &prov).0, 201);
    std::fs::write(mailbox.join("r.part"), request_xml(&q)).unwrap();
    std::fs::rename(
        mailbox.join("r.part"),
        mailbox.join("req/OQSsiquc01req_backup_1.xml"),
    )
    .unwrap();
    wait_file(&mailbox.join("res/OQSsiquc01res_backup_1.xml"));
    let before = edge.status();
    assert!(
        before["replica"]["periods"].as_u64().unwrap_or(0) > 0,
        "the replica holds periods: {before}"
    );
    assert_eq!(before["mailbox"]["records"], 1, "{before}");

    // Load: checks one after another, each id noted once it is acknowledged.
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop_load = Arc::new(AtomicBool::new(false));
    let loader = {
        let (http, acked, stop_load) = (edge.http.clone(), acked.clone(), stop_load.clone());
        let people: Vec<Value> = reg.valid_people(0, 50).into_iter().cloned().collect();
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop_load.load(Ordering::SeqCst) {
                let a = http.post_json("/v1/checks", &card_check(&people[i % people.len()], TODAY));
                assert_eq!(a.status, 200, "{}", a.json);
                acked.lock().unwrap().push(str_of(&a.json["check_id"]));
                i += 1;
            }
        })
    };
    let count = || acked.lock().unwrap().len();
    wait_until(Duration::from_secs(30), Duration::from_millis(5), || {
        (count() >= 20).then_some(())
    })
    .expect("the load runs");

    // A path the running edge cannot write is refused, saying who writes it.
    let (code, _, err) = edge_cli(&[
        "backup",
        "--out",
        &p(&t.join("no-such-dir/b.onshi")),
        "--data-dir",
        &p(&data),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("cannot write the backup there") && err.contains("as its service user"),
        "{err}"
    );

    let file = t.join("edge-backup.onshi");
    let acked_before = acked.lock().unwrap().clone();
    let (code, out, err) = edge_cli(&["backup", "--out", &p(&file), "--data-dir", &p(&data)]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("backup written by the running edge"), "{out}");
    let after_backup = count();
    // The load goes on after the backup: the backup is a moment, not the end.
    wait_until(Duration::from_secs(30), Duration::from_millis(5), || {
        (count() >= after_backup + 20).then_some(())
    })
    .expect("checks after the backup");
    stop_load.store(true, Ordering::SeqCst);
    loader.join().expect("the load's checks were all answered");
    let acked = acked.lock().unwrap().clone();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_nothing_personal(&file, &q);

    let original = export(&edge);
    stop(&mut edge);
    // Nothing is synced or settled on the restored edge while it is compared.
    rec.kill9();

    let restored = t.join("restored");
    let (code, out, err) = edge_cli(&[
        "restore",
        &p(&file),
        "--data",
        &p(&restored),
        "--data-key",
        &p(&key),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("restored the backup"), "{out}");
    let (code, out, err) = edge_cli(&[
        "audit",
        "verify",
        "--data",
        &p(&restored),
        "--data-key",
        &p(&key),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("chain intact"), "{out}");

    // The staff accounts came with the backup: the harness's token of the original works.
    onshi_tests::same_admin_token(&data, &restored);
    let mut ropts = opts.clone();
    ropts.data = restored.clone();
    ropts.name = "edge-restored".into();
    ropts.mailbox = Some(t.join("mailbox-restored"));
    ropts.extra_args = vec!["--data-key".into(), p(&key)];
    let redge = Edge::start(&t, ropts);
    let status = redge.status();
    let periods = |v: &Value| v["replica"]["periods"].as_u64().unwrap_or(0);
    assert!(periods(&status) >= periods(&before), "{status}");
    assert_eq!(status["mailbox"]["records"], 1, "{status}");
    let got = export(&redge);

    // Every record acknowledged before the backup started is there.
    let ids: Vec<String> = got.iter().map(id_of).collect();
    for id in &acked_before {
        assert!(
            ids.contains(&format!("check {id}")),
            "check {id}, acknowledged before the backup, is missing"
        );
    }
    // The load's checks in the restored edge are a prefix of those acknowledged, in order.
    let load_ids: Vec<&String> = acked
        .iter()
        .filter(|id| ids.contains(&format!("check {id}")))
        .collect();
    assert_eq!(
        load_ids,
        acked.iter().take(load_ids.len()).collect::<Vec<_>>(),
        "a consistent prefix of the load"
    );
    assert!(
        load_ids.len() < acked.len(),
        "checks made after the backup are not in it"
    );
    // Each restored line is the original's: the export at the backup's moment.
    for line in &got {
        let id = id_of(line);
        let orig = original
            .iter()
            .find(|o| id_of(o) == id)
            .unwrap_or_else(|| panic!("{id} is in the restored edge only"));
        assert_eq!(line, orig, "{id}");
    }
    assert!(ids.iter().any(|i| i.starts_with("provisional ")));
    assert!(got.iter().any(|l| l["record"] == "mailbox"));
    // The replica serves: with no reconciler, the person's check is answered from it.
    let (code, answer) = redge.post_check(&card_check(&q, TODAY));
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["source"], "replica", "{answer}");
    assert_eq!(answer["validity"], "valid", "{answer}");
    // A record made now never takes an id the original edge handed out after the backup (those
    // may be at the centre): the restored directory is a journal node of its own.
    let node = |id: &str| {
        id.rsplit_once('-')
            .map(|x| x.0)
            .unwrap_or_default()
            .to_string()
    };
    let new_id = str_of(&answer["check_id"]);
    assert_ne!(node(&new_id), node(&acked[0]), "{new_id} vs {}", acked[0]);
    assert!(!acked.contains(&new_id));
}

#[test]
fn a_stopped_edge_is_backed_up_and_damage_a_wrong_key_or_used_directory_are_refused() {
    let t = TestDir::new("backup-stopped");
    let (pki, reg, mut rec) = reconciler_with_registry(&t, &[FACILITY_A]);
    let data = t.join("edge");
    let key = t.join("edge.key");
    let opts = EdgeOpts::new(FACILITY_A, &data, &pki, rec.addr);
    let mut edge = Edge::start(&t, opts.clone());
    edge.wait_online();
    let q = long_card(&reg);
    assert_eq!(edge.post_check(&card_check(&q, TODAY)).0, 200);
    let prov = json!({"declared": {"name": q["name"], "name_kana": q["name_kana"], "birth_date": q["birth_date"], "sex": q["sex"]}, "service_date": TODAY, "total_fee_yen": 5000});
    assert_eq!(edge.post("/v1/provisional", &prov).0, 201);
    let original = export(&edge);
    stop(&mut edge);
    rec.kill9();

    let file = t.join("b.onshi");
    let (code, out, err) = edge_cli(&[
        "backup",
        "--out",
        &p(&file),
        "--data-dir",
        &p(&data),
        "--data-key",
        &p(&key),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("written by this process (the edge is stopped)"),
        "{out}"
    );
    assert!(out.contains("accounts.json"), "{out}");
    assert_nothing_personal(&file, &q);

    let target = t.join("restored");
    let restore = |from: &Path, key: &Path| {
        edge_cli(&[
            "restore",
            &p(from),
            "--data",
            &p(&target),
            "--data-key",
            &p(key),
        ])
    };
    // Truncated, and one byte changed: refused, nothing made.
    let good = std::fs::read(&file).unwrap();
    let bad = t.join("bad.onshi");
    std::fs::write(&bad, &good[..good.len() * 2 / 3]).unwrap();
    let (code, _, err) = restore(&bad, &key);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("the backup is damaged") && err.contains("nothing was written"),
        "{err}"
    );
    assert!(!target.exists());
    let mut flipped = good.clone();
    flipped[good.len() / 2] ^= 1;
    std::fs::write(&bad, &flipped).unwrap();
    let (code, _, err) = restore(&bad, &key);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("the backup is damaged"), "{err}");
    assert!(!target.exists());

    // A wrong key: refused naming both keys; the (empty) directory stays as it was.
    std::fs::create_dir(&target).unwrap();
    let wrong = t.join("wrong.key");
    std::fs::write(&wrong, format!("{}\n", "ab".repeat(32))).unwrap();
    let (code, _, err) = restore(&file, &wrong);
    assert_eq!(code, 2, "{err}");
    let (_, status, _) = edge_cli(&[
        "key",
        "status",
        "--data-dir",
        &p(&data),
        "--data-key",
        &p(&key),
        "--json",
    ]);
    let kek = serde_json::from_str::<Value>(&status).unwrap()["kek"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(err.contains("does not open") && err.contains(&kek), "{err}");
    assert!(
        err.matches("sha256:").count() >= 2,
        "both fingerprints: {err}"
    );
    assert_eq!(std::fs::read_dir(&target).unwrap().count(), 0);
    // A directory that holds edge data: refused, naming it.
    let (code, _, err) = edge_cli(&[
        "restore",
        &p(&file),
        "--data",
        &p(&data),
        "--data-key",
        &p(&key),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&p(&data)) && err.contains("already holds edge data"),
        "{err}"
    );

    let (code, out, err) = restore(&file, &key);
    assert_eq!(code, 0, "{out}{err}");
    let leftovers: Vec<_> = std::fs::read_dir(t.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("restoring") || n.contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    onshi_tests::same_admin_token(&data, &target);
    let mut ropts = opts;
    ropts.data = target.clone();
    ropts.name = "edge-restored".into();
    ropts.extra_args = vec!["--data-key".into(), p(&key)];
    let redge = Edge::start(&t, ropts);
    assert_eq!(export(&redge), original);
}
