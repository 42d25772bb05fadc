//! `onshi-edge enroll` as IT staff use it: the centre's files for one facility are checked and
//! placed in the edge's PKI directory with safe modes, the configuration gets the facility and
//! the PKI directory, and the edge then passes `check-config` and connects. Each refusal (a key of
//! another certificate, a certificate of another CA, another facility's certificate, different
//! files already in place) names the file and the reason, and installs nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;

use onshi_tests::{
    Edge, EdgeOpts, FACILITY_A, FACILITY_B, Pki, TestDir, edge_bin, reconciler_with_registry, run,
};

fn enroll(args: &[&str]) -> Output {
    let mut all = vec!["enroll"];
    all.extend_from_slice(args);
    run(&edge_bin(), &all)
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn enroll_places_checked_files_and_the_edge_runs_with_them() {
    let t = TestDir::new("enroll");
    // The centre: its PKI knows both facilities, and the registry is served.
    let (centre, _reg, rec) = reconciler_with_registry(&t, &[FACILITY_A, FACILITY_B]);
    let c = |f: &str| centre.dir.join(f);
    let edge_pki = t.join("edge/pki");
    let config = t.join("edge.toml");
    // The example configuration as shipped (its facility is a placeholder, another one here).
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/config/edge.toml");
    std::fs::copy(&example, &config).unwrap();

    let ca = c("ca.pem");
    let cert_b = c(&format!("facility-{FACILITY_B}.pem"));
    let key_b = c(&format!("facility-{FACILITY_B}.key"));
    let key_a = c(&format!("facility-{FACILITY_A}.key"));
    let cert_a = c(&format!("facility-{FACILITY_A}.pem"));

    // A key that belongs to another certificate.
    let out = enroll(&[
        "--pki",
        s(&edge_pki),
        "--ca",
        s(&ca),
        "--cert",
        s(&cert_b),
        "--key",
        s(&key_a),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains(&format!(
            "{}: is not the key of the certificate in {}",
            key_a.display(),
            cert_b.display()
        )),
        "{}",
        text(&out)
    );
    assert!(text(&out).contains("nothing was installed"));
    assert!(!edge_pki.exists(), "a refused enrolment installs nothing");

    // A certificate made by another CA (another deployment's `pki init`).
    let other = Pki::init(&t.join("other-centre"), &[FACILITY_B]);
    let other_cert = other.dir.join(format!("facility-{FACILITY_B}.pem"));
    let out = enroll(&[
        "--pki",
        s(&edge_pki),
        "--ca",
        s(&ca),
        "--cert",
        s(&other_cert),
        "--key",
        s(&other.dir.join(format!("facility-{FACILITY_B}.key"))),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains(&format!(
            "{}: is not accepted under the CA in {}: it was not issued by this CA",
            other_cert.display(),
            ca.display()
        )),
        "{}",
        text(&out)
    );

    // Another facility's certificate than the one asked for.
    let out = enroll(&[
        "--pki",
        s(&edge_pki),
        "--ca",
        s(&ca),
        "--cert",
        s(&cert_a),
        "--key",
        s(&key_a),
        "--facility",
        FACILITY_B,
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains(&format!(
            "{}: names facility {FACILITY_A}, not {FACILITY_B}",
            cert_a.display()
        )),
        "{}",
        text(&out)
    );
    // The reconciler's own certificate names no facility.
    let out = enroll(&[
        "--pki",
        s(&edge_pki),
        "--ca",
        s(&ca),
        "--cert",
        s(&c("reconciler.pem")),
        "--key",
        s(&c("reconciler.key")),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("no subject-alternative-name URI"),
        "{}",
        text(&out)
    );
    assert!(!edge_pki.exists(), "refusals install nothing");

    // The right files: installed with safe modes, the configuration updated.
    let out = enroll(&[
        "--pki",
        s(&edge_pki),
        "--ca",
        s(&ca),
        "--cert",
        s(&cert_b),
        "--key",
        s(&key_b),
        "--facility",
        FACILITY_B,
        "--config",
        s(&config),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("enrolled facility {FACILITY_B}")),
        "{}",
        text(&out)
    );
    let key = edge_pki.join(format!("facility-{FACILITY_B}.key"));
    assert_eq!(mode(&key), 0o640);
    assert_eq!(
        mode(&edge_pki.join(format!("facility-{FACILITY_B}.pem"))),
        0o644
    );
    assert_eq!(mode(&edge_pki.join("ca.pem")), 0o644);
    assert_eq!(mode(&edge_pki), 0o750);
    assert_eq!(std::fs::read(&key).unwrap(), std::fs::read(&key_b).unwrap());
    let written = std::fs::read_to_string(&config).unwrap();
    assert!(
        written.contains(&format!("facility = \"{FACILITY_B}\"")),
        "{written}"
    );
    assert!(
        written.contains(&format!("pki = \"{}\"", edge_pki.display())),
        "{written}"
    );
    assert!(
        written.contains("# 10-digit facility code"),
        "comments are kept: {written}"
    );

    // Enrolling the same files again changes nothing; different ones need --replace.
    let out = enroll(&[
        "--pki",
        s(&edge_pki),
        "--ca",
        s(&ca),
        "--cert",
        s(&cert_b),
        "--key",
        s(&key_b),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(text(&out).matches("unchanged").count(), 3, "{}", text(&out));
    let out = enroll(&[
        "--pki",
        s(&edge_pki),
        "--ca",
        s(&other.dir.join("ca.pem")),
        "--cert",
        s(&other_cert),
        "--key",
        s(&other.dir.join(format!("facility-{FACILITY_B}.key"))),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("already exists with other contents; re-run with --replace"),
        "{}",
        text(&out)
    );
    assert_eq!(std::fs::read(&key).unwrap(), std::fs::read(&key_b).unwrap());

    // The enrolled configuration passes check-config and the edge connects with it.
    let data = t.join("edge/data");
    let out = run(
        &edge_bin(),
        &[
            "check-config",
            "--config",
            s(&config),
            "--data",
            s(&data),
            "--reconciler",
            &rec.addr.to_string(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let edge = Edge::start(
        &t,
        EdgeOpts::new(
            FACILITY_B,
            &data,
            &Pki {
                dir: edge_pki.clone(),
            },
            rec.addr,
        ),
    );
    edge.wait_online();
}
