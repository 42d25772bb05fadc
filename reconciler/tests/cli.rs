//! The `onshi-reconciler` command line: what an operator sees.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Value, json};

fn line(over: Value) -> Value {
    let mut v = json!({"person_id":"P0000001","card_id":null,"insurer_number":"06130017","insurer_name":"霞が関健康保険組合",
        "card_class":"01","symbol":"123","number":"4567","branch":"01","relationship":"insured",
        "name":"山田　太郎","name_kana":"ヤマダ　タロウ","sex":"male","birth_date":"1980-04-01",
        "address":"東京都千代田区霞が関1-2-2","postal_code":"100-8916",
        "acquired_on":"2020-04-01","lost_on":null,"loss_reason":null,"share_percent":30});
    for (k, val) in over.as_object().unwrap() {
        v[k] = val.clone();
    }
    v
}

#[test]
fn import_cli_reports_each_bad_line_applies_the_good_ones_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("registry.jsonl");
    let lines = [
        line(json!({})).to_string(),
        line(json!({"person_id":"P0000002","insurer_number":"06130012"})).to_string(),
        String::new(),
        "{this is not json".to_string(),
        line(json!({"person_id":"P0000003","branch":"03","birth_date":"2010-02-30"})).to_string(),
        line(json!({"person_id":"P0000004","branch":"04","number":"45●7"})).to_string(),
        line(json!({"person_id":"P0000005","branch":"05","birth_date":"H22.2.1"})).to_string(),
    ];
    std::fs::write(&file, lines.join("\n")).unwrap();
    let data = dir.path().join("data");
    let run = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_onshi-reconciler"))
            .args(["import", "--data"])
            .arg(&data)
            .arg(&file)
            .output()
            .unwrap()
    };
    let out = run();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("registry.jsonl:2: insurer_number: check digit of 06130012 is 2 but the other digits give 7"), "{stderr}");
    assert!(
        stderr.contains("registry.jsonl:4: not valid JSON"),
        "{stderr}"
    );
    assert!(
        stderr.contains("registry.jsonl:5: birth_date: '2010-02-30' is not a real day"),
        "{stderr}"
    );
    assert!(
        stderr.contains("registry.jsonl:6: number: character 3 is '●'"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("registry.jsonl:1:") && !stderr.contains("registry.jsonl:7:"),
        "{stderr}"
    );
    assert!(
        stdout.contains("2 added, 0 updated, 0 unchanged, 4 bad line(s); registry holds 2 periods"),
        "{stdout}"
    );
    // Importing the same file again changes nothing.
    let out = run();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("0 added, 0 updated, 2 unchanged, 4 bad line(s); registry holds 2 periods")
    );
    // A clean file exits 0.
    std::fs::write(&file, format!("{}\n", lines[0])).unwrap();
    assert_eq!(run().status.code(), Some(0));
}

#[test]
fn a_revisit_horizon_past_ten_years_is_refused_by_name_as_a_flag_or_in_the_toml() {
    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("reconciler.toml");
    std::fs::write(
        &toml,
        "data = \"/nonexistent\"\npki = \"/nonexistent\"\nlisten = \"127.0.0.1:0\"\nrevisit_days = 4000\n",
    )
    .unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_onshi-reconciler"))
            .args(args)
            .output()
            .unwrap()
    };
    for out in [
        run(&["check-config", "--config", toml.to_str().unwrap()]),
        run(&[
            "check-config",
            "--data",
            "/nonexistent",
            "--pki",
            "/nonexistent",
            "--listen",
            "127.0.0.1:0",
            "--revisit-days",
            "3651",
        ]),
    ] {
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(
            err.contains("--revisit-days: ") && err.contains("at most 3650"),
            "{err}"
        );
    }
    // A flag wins over the file: a valid horizon passes the settings (the PKI is what fails).
    let out = run(&[
        "check-config",
        "--config",
        toml.to_str().unwrap(),
        "--revisit-days",
        "30",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("revisit"), "{err}");
}
