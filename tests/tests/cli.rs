//! What IT staff do from the command line: make certificates, import registry files, configure the
//! edge with a file. Asserts on exit codes, messages and on the running system.

use std::process::Command;

use onshi_tests::{
    Edge, EdgeOpts, FACILITY_A, FACILITY_B, Http, Pki, Proc, READY_TIMEOUT, Reconciler, Registry,
    TODAY, TestDir, card_check, edge_bin, mistype_check_digit, reconciler_bin,
    reconciler_with_registry, run,
};
use serde_json::Value;

#[test]
fn import_reports_each_bad_line_applies_the_rest_and_is_idempotent() {
    let t = TestDir::new("import");
    let reg = Registry::standard(&t);
    let data = t.join("reconciler");
    let first = reg.import(&data);
    let summary = String::from_utf8_lossy(&first.stdout).to_string();
    assert!(
        summary.contains(&format!("{} added", reg.periods.len())),
        "{summary}"
    );

    // Importing the same file again changes nothing.
    let again = reg.import(&data);
    let summary = String::from_utf8_lossy(&again.stdout).to_string();
    assert!(
        summary.contains("0 added, 0 updated"),
        "a second import changes nothing: {summary}"
    );

    // A file whose second line has a mistyped check digit, and whose fourth is not JSON.
    let mut lines: Vec<String> = reg.periods.iter().take(3).map(Value::to_string).collect();
    let mut bad = reg.periods[1].clone();
    bad["insurer_number"] =
        mistype_check_digit(bad["insurer_number"].as_str().expect("insurer_number")).into();
    bad["person_id"] = "P9999999".into();
    lines[1] = bad.to_string();
    lines.push("{\"person_id\": ".to_string());
    let path = t.join("mixed.jsonl");
    std::fs::write(&path, lines.join("\n") + "\n").expect("writing the file");
    let path_s = path.to_str().expect("utf-8 path");
    let out = run(
        &reconciler_bin(),
        &[
            "import",
            "--data",
            t.join("other-data").to_str().expect("utf-8"),
            path_s,
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(
        out.status.code(),
        Some(1),
        "exit status 1 when a line is bad; stderr:\n{stderr}"
    );
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with(&format!("{path_s}:2: insurer_number"))),
        "line 2 reported with its field:\n{stderr}"
    );
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with(&format!("{path_s}:4: "))),
        "line 4 reported:\n{stderr}"
    );
    assert!(
        !stderr.contains(&format!("{path_s}:1:")) && !stderr.contains(&format!("{path_s}:3:")),
        "good lines are not reported:\n{stderr}"
    );
    let summary = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        summary.contains("2 added"),
        "the good lines are applied: {summary}"
    );
}

#[test]
fn pki_init_again_adds_facilities_and_keeps_the_ca() {
    let t = TestDir::new("pki-again");
    let dir = t.join("pki");
    let pki = Pki::init(&dir, &[FACILITY_A]);
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
    let (ca, ca_key, a_cert) = (
        read("ca.pem"),
        read("ca.key"),
        read(&format!("facility-{FACILITY_A}.pem")),
    );
    assert!(!dir.join(format!("facility-{FACILITY_B}.pem")).exists());

    Pki::init(&dir, &[FACILITY_A, FACILITY_B]);
    assert_eq!(read("ca.pem"), ca, "the CA is kept");
    assert_eq!(read("ca.key"), ca_key, "the CA key is kept");
    assert_eq!(
        read(&format!("facility-{FACILITY_A}.pem")),
        a_cert,
        "an existing facility certificate is kept"
    );

    // The added facility's certificate is from the same CA: a reconciler started on the directory
    // accepts both facilities.
    let reg = Registry::standard(&t);
    let data = t.join("reconciler");
    reg.import(&data);
    let rec = Reconciler::start(&t, &data, &pki);
    let check = card_check(reg.valid_insured(), TODAY);
    for code in [FACILITY_A, FACILITY_B] {
        let edge = Edge::start(
            &t,
            EdgeOpts::new(code, &t.join(format!("edge-{code}")), &pki, rec.addr),
        );
        edge.wait_online();
        let (status, v) = edge.post_check(&check);
        assert_eq!(status, 200, "facility {code}: {v}");
        assert_eq!(v["validity"], "valid", "{v}");
    }
}

#[test]
fn edge_runs_from_a_config_file_and_a_flag_wins_over_it() {
    let t = TestDir::new("config");
    let (pki, reg, rec) = reconciler_with_registry(&t, &[FACILITY_A]);
    let config = t.join("edge.toml");
    // The file's HTTP address cannot be bound here (TEST-NET-1): the command line's must win.
    let toml = format!(
        "facility = \"{FACILITY_A}\"\ndata = \"{}\"\npki = \"{}\"\nreconciler = \"{}\"\nhttp = \"192.0.2.1:7600\"\ndeadline_ms = 1200\nhold_ms = {}\n",
        t.join("edge").display(),
        pki.dir.display(),
        rec.addr,
        onshi_tests::TEST_HOLD_MS
    );
    std::fs::write(&config, toml).expect("writing the config");
    let mut cmd = Command::new(edge_bin());
    cmd.args(["run", "--config"])
        .arg(&config)
        .args(["--http", "127.0.0.1:0"])
        .env_remove("NOTIFY_SOCKET");
    let mut edge = Proc::spawn("edge-config", cmd, t.path());
    let addr = edge.wait_line("onshi-edge: HTTP API on http://", READY_TIMEOUT);
    let http = Http::new(&format!("http://{}", addr.trim()))
        .with_token(Some(&onshi_tests::admin_token(&t.join("edge"))));
    let status = onshi_tests::wait_until(
        std::time::Duration::from_secs(15),
        std::time::Duration::from_millis(50),
        || {
            let v = http.get("/v1/status").json;
            (v["mode"] == "online").then_some(v)
        },
    )
    .unwrap_or_else(|| {
        panic!(
            "the edge configured from a file never came online: {}",
            http.get("/v1/status").text
        )
    });
    assert_eq!(status["facility"], FACILITY_A, "{status}");
    assert_eq!(
        status["deadline_ms"], 1200,
        "deadline_ms from the file: {status}"
    );
    let a = http.post_json("/v1/checks", &card_check(reg.valid_insured(), TODAY));
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.json["validity"], "valid", "{}", a.text);
    edge.kill9();
}
