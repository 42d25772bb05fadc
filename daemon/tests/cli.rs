//! `onshi-edge run` refuses a bad configuration before touching anything, naming the setting.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn edge(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_onshi-edge"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn missing_and_wrong_settings_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    let (code, err) = edge(&[
        "run",
        "--data",
        d,
        "--pki",
        d,
        "--reconciler",
        "127.0.0.1:1",
        "--http",
        "127.0.0.1:0",
    ]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("--facility: is required (as a flag or in the --config file)"),
        "{err}"
    );
    let (code, err) = edge(&[
        "run",
        "--facility",
        "1321234567",
        "--data",
        d,
        "--pki",
        d,
        "--reconciler",
        "127.0.0.1:1",
        "--http",
        "127.0.0.1:0",
    ]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("--facility: fee-table digit (3rd) is 2"),
        "{err}"
    );
    let (code, err) = edge(&[
        "run",
        "--facility",
        "1311234567",
        "--data",
        d,
        "--pki",
        d,
        "--reconciler",
        "127.0.0.1:1",
        "--http",
        "127.0.0.1:0",
        "--deadline-ms",
        "0",
    ]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("--deadline-ms: must be between 1 and 30000"),
        "{err}"
    );
    // Nothing was created for a refused configuration.
    assert!(!data.exists());
}

#[test]
fn config_file_settings_apply_and_flags_win() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("edge.toml");
    std::fs::write(&cfg, "facility = \"1321234567\"\ndata = \"/nonexistent\"\npki = \"/nonexistent\"\nreconciler = \"127.0.0.1:1\"\nhttp = \"127.0.0.1:0\"\n").unwrap();
    let c = cfg.to_str().unwrap();
    // The file's facility is wrong: reported under the setting's name.
    let (code, err) = edge(&["run", "--config", c]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--facility: fee-table digit"), "{err}");
    // A flag wins over the file; the next problem is then the missing PKI directory.
    let (code, err) = edge(&["run", "--config", c, "--facility", "1311234567"]);
    assert_eq!(code, Some(2));
    assert!(!err.contains("--facility"), "{err}");
    assert!(err.contains("/nonexistent"), "{err}");
    // An unknown key in the file is refused, not ignored.
    std::fs::write(&cfg, "facilty = \"1311234567\"\n").unwrap();
    let (code, err) = edge(&["run", "--config", c]);
    assert_eq!(code, Some(2));
    assert!(err.contains("unknown field `facilty`"), "{err}");
}

#[test]
fn mailbox_settings_are_validated_with_their_names() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let base = [
        "run",
        "--facility",
        "1311234567",
        "--data",
        d,
        "--pki",
        d,
        "--reconciler",
        "127.0.0.1:1",
        "--http",
        "127.0.0.1:0",
    ];
    let with = |extra: &[&str]| {
        let mut a: Vec<&str> = base.to_vec();
        a.extend_from_slice(extra);
        edge(&a)
    };
    let (code, err) = with(&["--mailbox", file.to_str().unwrap()]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("--mailbox:") && err.contains("is not a directory"),
        "{err}"
    );
    let (code, err) = with(&["--mailbox", "relative/mailbox"]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("--mailbox:") && err.contains("absolute"),
        "{err}"
    );
    let (code, err) = with(&["--mailbox", d, "--mailbox-settle-ms", "0"]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("--mailbox-settle-ms: must be between"),
        "{err}"
    );
    let (code, err) = with(&[
        "--mailbox",
        d,
        "--mailbox-settle-ms",
        "500",
        "--mailbox-incomplete-ms",
        "100",
    ]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--mailbox-incomplete-ms:"), "{err}");
}
