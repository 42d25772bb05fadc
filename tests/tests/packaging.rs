//! The systemd units as shipped: `systemd-analyze verify` accepts them (with the real binaries in
//! place of /usr/bin), `systemd-analyze security --offline=yes` scores each at 2.0 or better, and
//! the example configuration passes `check-config`; a bad one is explained (file, key, reason).
//! The man pages and completions the package ships cover every command and flag of the binaries.
//! (The package itself is built and checked by packaging/deb-check.sh, which CI runs.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use onshi_tests::{Pki, TestDir, edge_bin, reconciler_bin, run};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn systemd_analyze() -> &'static str {
    let ok = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "systemd-analyze is needed (apt-get install systemd); .ci/run installs it"
    );
    "systemd-analyze"
}

/// The unit with /usr/bin/onshi-* replaced by the binaries under test.
fn unit_with_real_binaries(t: &TestDir, name: &str) -> PathBuf {
    let text = std::fs::read_to_string(repo().join("packaging/systemd").join(name)).unwrap();
    let text = text
        .replace("/usr/bin/onshi-edge", edge_bin().to_str().unwrap())
        .replace(
            "/usr/bin/onshi-reconciler",
            reconciler_bin().to_str().unwrap(),
        );
    let path = t.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn units_verify_and_score_2_or_better() {
    let t = TestDir::new("units");
    let analyze = systemd_analyze();
    for name in ["onshi-edge.service", "onshi-reconciler.service"] {
        let unit = unit_with_real_binaries(&t, name);
        let out = Command::new(analyze)
            .arg("verify")
            .arg(&unit)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stderr).to_string()
            + &String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{name}: verify failed:\n{said}");
        assert!(said.trim().is_empty(), "{name}: verify warns:\n{said}");

        let out = Command::new(analyze)
            .args(["security", "--offline=yes"])
            .arg(repo().join("packaging/systemd").join(name))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find(|l| l.contains("Overall exposure level"))
            .unwrap_or_else(|| panic!("{name}: no score in:\n{text}"));
        let score: f64 = line
            .split(':')
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .unwrap();
        eprintln!("{name}: {}", line.trim());
        assert!(score <= 2.0, "{name}: exposure {score} > 2.0");
    }
}

/// The data key's drop-in (packaging/README.md, "The data key") is what `systemctl edit` adds:
/// the unit with it beside (as `onshi-edge.service.d/`) still verifies without a word, and names
/// the credential the edge reads.
#[test]
fn edge_unit_verifies_with_the_data_key_drop_in() {
    let t = TestDir::new("unit-data-key");
    let unit = unit_with_real_binaries(&t, "onshi-edge.service");
    let drop_in =
        std::fs::read_to_string(repo().join("packaging/systemd/onshi-edge-data-key.conf")).unwrap();
    assert!(
        drop_in.contains("LoadCredentialEncrypted=onshi-data-key:/etc/onshi/edge-data-key.cred"),
        "{drop_in}"
    );
    let dir = t.join("onshi-edge.service.d");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("data-key.conf"), &drop_in).unwrap();
    let out = Command::new(systemd_analyze())
        .arg("verify")
        .arg(&unit)
        .output()
        .unwrap();
    let said =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "verify failed:\n{said}");
    assert!(said.trim().is_empty(), "verify warns:\n{said}");
    let readme = std::fs::read_to_string(repo().join("packaging/README.md")).unwrap();
    assert!(
        readme.contains("systemd-creds encrypt --name=onshi-data-key"),
        "the README makes the credential the drop-in loads"
    );
}

#[test]
fn example_config_passes_check_config_and_errors_name_file_and_key() {
    let t = TestDir::new("check-config");
    let pki = Pki::init(&t.join("pki"), &["1311234567"]);
    let example = repo().join("packaging/config/edge.toml");
    let pki_dir = pki.dir.to_str().unwrap().to_string();
    let data = t.join("data");
    // The example as shipped, with this machine's PKI and data directory and a resolvable address.
    let out = run(
        &edge_bin(),
        &[
            "check-config",
            "--config",
            example.to_str().unwrap(),
            "--pki",
            &pki_dir,
            "--data",
            data.to_str().unwrap(),
            "--reconciler",
            "127.0.0.1:7700",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(": ok: facility 1311234567"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // A wrong value is explained with the file and the key.
    let bad = t.join("bad.toml");
    let text = std::fs::read_to_string(&example)
        .unwrap()
        .replace("share_75_plus = 10", "share_75_plus = 15");
    std::fs::write(&bad, text).unwrap();
    let out = run(
        &edge_bin(),
        &[
            "check-config",
            "--config",
            bad.to_str().unwrap(),
            "--pki",
            &pki_dir,
            "--reconciler",
            "127.0.0.1:7700",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}: share_75_plus: 15 is not 10, 20 or 30",
            bad.display()
        )),
        "{err}"
    );

    // A misspelt key is refused with its name, and a facility without a certificate is named too.
    std::fs::write(&bad, "facilty = \"1311234567\"\n").unwrap();
    let out = run(
        &edge_bin(),
        &["check-config", "--config", bad.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown field `facilty`"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(
        &edge_bin(),
        &[
            "check-config",
            "--config",
            example.to_str().unwrap(),
            "--pki",
            &pki_dir,
            "--reconciler",
            "127.0.0.1:7700",
            "--facility",
            "1341234567",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(": pki: "),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The reconciler's example too.
    let out = run(
        &reconciler_bin(),
        &[
            "check-config",
            "--config",
            repo()
                .join("packaging/config/reconciler.toml")
                .to_str()
                .unwrap(),
            "--pki",
            &pki_dir,
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `.SS "BIN COMMAND"` headers and `\-\-flag` names in a man page.
fn man_index(page: &str) -> (Vec<String>, std::collections::BTreeSet<String>) {
    let headers = page
        .lines()
        .filter_map(|l| l.strip_prefix(".SS \""))
        .map(|l| l.trim_end_matches('"').to_string())
        .collect();
    let flags = page
        .replace("\\-", "-")
        .split("--")
        .skip(1)
        .map(|rest| {
            rest.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .collect::<String>()
        })
        .filter(|f| !f.is_empty())
        .collect();
    (headers, flags)
}

#[test]
fn shipped_man_pages_and_completions_cover_every_command_and_flag() {
    for (bin, name) in [
        (edge_bin(), "onshi-edge"),
        (reconciler_bin(), "onshi-reconciler"),
    ] {
        let live = run(&bin, &["manpage"]);
        assert!(live.status.success());
        let live = String::from_utf8(live.stdout).unwrap();
        let shipped_path = repo().join(format!("packaging/man/{name}.1"));
        let shipped = std::fs::read_to_string(&shipped_path).unwrap();
        let (live_cmds, live_flags) = man_index(&live);
        let (shipped_cmds, shipped_flags) = man_index(&shipped);
        let regenerate = format!(
            "regenerate it: cargo build --workspace --bins && target/debug/{name} manpage > packaging/man/{name}.1"
        );
        assert!(
            live_cmds.len() >= 4 && live_flags.len() >= 4,
            "{live_cmds:?} {live_flags:?}"
        );
        for c in &live_cmds {
            assert!(
                shipped_cmds.contains(c),
                "{}: command '{c}' is missing; {regenerate}",
                shipped_path.display()
            );
        }
        for f in &live_flags {
            assert!(
                shipped_flags.contains(f),
                "{}: flag --{f} is missing; {regenerate}",
                shipped_path.display()
            );
        }
        let live = run(&bin, &["completions", "bash"]);
        let shipped_path = repo().join(format!("packaging/completions/{name}.bash"));
        assert_eq!(
            String::from_utf8_lossy(&live.stdout),
            std::fs::read_to_string(&shipped_path).unwrap(),
            "{} is out of date: target/debug/{name} completions bash > packaging/completions/{name}.bash",
            shipped_path.display()
        );
    }
    // Every command of the edge has its own section, enroll and check-config included.
    let page = std::fs::read_to_string(repo().join("packaging/man/onshi-edge.1")).unwrap();
    for c in [
        "run",
        "check-config",
        "enroll",
        "status",
        "queue",
        "sync-now",
        "export",
        "demo",
    ] {
        assert!(
            page.contains(&format!(".SS \"onshi-edge {c}\"")),
            "onshi-edge.1 has no section for {c}"
        );
    }
}

#[test]
fn reconciler_metrics_setting_is_checked_and_shown() {
    let t = TestDir::new("reconciler-metrics-config");
    let pki = Pki::init(&t.join("pki"), &["1311234567"]);
    let example = repo().join("packaging/config/reconciler.toml");
    let text = std::fs::read_to_string(&example).unwrap();
    assert!(
        text.contains("# metrics = \"127.0.0.1:7701\""),
        "the example documents metrics (off): {text}"
    );
    let on = t.join("reconciler.toml");
    std::fs::write(&on, text.replace("# metrics = ", "metrics = ")).unwrap();
    let out = run(
        &reconciler_bin(),
        &[
            "check-config",
            "--config",
            on.to_str().unwrap(),
            "--pki",
            pki.dir.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("metrics http://127.0.0.1:7701/metrics"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    std::fs::write(
        &on,
        text.replace("# metrics = \"127.0.0.1:7701\"", "metrics = \"nowhere\""),
    )
    .unwrap();
    let out = run(
        &reconciler_bin(),
        &[
            "check-config",
            "--config",
            on.to_str().unwrap(),
            "--pki",
            pki.dir.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("--metrics: 'nowhere' is not a host:port address"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
