//! Staff accounts and tokens from the command line (`onshi-edge user …`, `token …`), as IT staff
//! use them: with no edge running, and beside a running edge that holds its store. Asserts on what
//! they see (output, exit codes) and on what is left on disk: the accounts file's mode whatever the
//! umask, and no password or token in clear anywhere in the data directory.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use onshi_tests::{Edge, EdgeOpts, FACILITY_A, Pki, TestDir, edge_bin, run};

const PASSWORD: &str = "correct horse battery staple";

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[track_caller]
fn assert_exit(o: &Output, code: i32) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        stdout(o),
        stderr(o)
    );
}

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).expect("listing the data directory") {
            let p = e.expect("an entry").path();
            if p.is_dir() {
                todo.push(p);
            } else if p.is_file()
                && std::fs::read(&p)
                    .expect("reading a file")
                    .windows(needle.len())
                    .any(|w| w == needle.as_bytes())
            {
                found.push(p.display().to_string());
            }
        }
    }
    found
}

#[test]
fn users_and_tokens_are_managed_without_a_running_edge() {
    let t = TestDir::new("accounts-offline");
    let data = t.join("data");
    let d = data.to_str().expect("utf-8");

    let added = onshi_tests::run_edge_stdin(
        &[
            "user",
            "add",
            "alice",
            "--role",
            "admin",
            "--password-stdin",
            "--data",
            d,
        ],
        &format!("{PASSWORD}\n"),
    );
    assert_exit(&added, 0);
    assert_eq!(stdout(&added), "added user alice (admin)\n");

    // A name is never given twice, whether to a user or a token.
    let again = onshi_tests::run_edge_stdin(
        &[
            "user",
            "add",
            "alice",
            "--role",
            "reception",
            "--password-stdin",
            "--data",
            d,
        ],
        &format!("{PASSWORD}\n"),
    );
    assert_exit(&again, 2);
    assert!(
        stderr(&again).contains("a user or token named `alice` already exists"),
        "{}",
        stderr(&again)
    );
    let token_named_alice = run(
        &edge_bin(),
        &["token", "add", "alice", "--role", "reception", "--data", d],
    );
    assert_exit(&token_named_alice, 2);
    assert!(
        stdout(&token_named_alice).is_empty(),
        "no token is printed when refused"
    );

    // Bad input: each refused with the reason, exit 2, nothing written.
    let before = std::fs::read(data.join("accounts.json")).expect("accounts.json");
    let short = onshi_tests::run_edge_stdin(
        &[
            "user",
            "add",
            "bob",
            "--role",
            "reception",
            "--password-stdin",
            "--data",
            d,
        ],
        "short\n",
    );
    assert_exit(&short, 2);
    assert!(
        stderr(&short).contains("the password has 5 characters; it needs at least 10"),
        "{}",
        stderr(&short)
    );
    let empty = onshi_tests::run_edge_stdin(
        &[
            "user",
            "add",
            "bob",
            "--role",
            "reception",
            "--password-stdin",
            "--data",
            d,
        ],
        "",
    );
    assert_exit(&empty, 2);
    assert!(
        stderr(&empty).contains("the password is empty"),
        "{}",
        stderr(&empty)
    );
    let no_flag = run(
        &edge_bin(),
        &["user", "add", "bob", "--role", "reception", "--data", d],
    );
    assert_exit(&no_flag, 2);
    assert!(
        stderr(&no_flag).contains("--password-stdin"),
        "{}",
        stderr(&no_flag)
    );
    let bad_role = onshi_tests::run_edge_stdin(
        &[
            "user",
            "add",
            "bob",
            "--role",
            "boss",
            "--password-stdin",
            "--data",
            d,
        ],
        &format!("{PASSWORD}\n"),
    );
    assert_exit(&bad_role, 2);
    assert!(
        stderr(&bad_role).contains("invalid value 'boss' for '--role <ROLE>'")
            && stderr(&bad_role).contains("reception, clinician, admin"),
        "{}",
        stderr(&bad_role)
    );
    let bad_name = onshi_tests::run_edge_stdin(
        &[
            "user",
            "add",
            "山田",
            "--role",
            "reception",
            "--password-stdin",
            "--data",
            d,
        ],
        &format!("{PASSWORD}\n"),
    );
    assert_exit(&bad_name, 2);
    assert!(
        stderr(&bad_name).contains("name `山田`"),
        "{}",
        stderr(&bad_name)
    );
    for (args, message) in [
        (vec!["user", "disable", "carol"], "unknown user `carol`"),
        (vec!["token", "revoke", "carol"], "unknown token `carol`"),
    ] {
        let mut args = args;
        args.extend(["--data", d]);
        let o = run(&edge_bin(), &args);
        assert_exit(&o, 2);
        assert!(stderr(&o).contains(message), "{args:?}: {}", stderr(&o));
    }
    let passwd_unknown = onshi_tests::run_edge_stdin(
        &["user", "passwd", "carol", "--password-stdin", "--data", d],
        &format!("{PASSWORD}\n"),
    );
    assert_exit(&passwd_unknown, 2);
    assert!(stderr(&passwd_unknown).contains("unknown user `carol`"));
    let nowhere = run(&edge_bin(), &["user", "list"]);
    assert_exit(&nowhere, 2);
    assert!(stderr(&nowhere).contains("give --data DIR or --config FILE"));
    assert_eq!(
        std::fs::read(data.join("accounts.json")).expect("accounts.json"),
        before,
        "refused commands write nothing"
    );

    // A reception user, through the configuration file's `data` setting.
    let config = t.join("edge.toml");
    std::fs::write(&config, format!("data = \"{d}\"\n")).expect("writing edge.toml");
    let c = config.to_str().expect("utf-8");
    let bob = onshi_tests::run_edge_stdin(
        &[
            "user",
            "add",
            "bob",
            "--role",
            "reception",
            "--password-stdin",
            "--config",
            c,
        ],
        &format!("{PASSWORD} of bob\r\n"),
    );
    assert_exit(&bob, 0);

    // A token: printed once, alone on stdout.
    let made = run(
        &edge_bin(),
        &["token", "add", "bridge", "--role", "reception", "--data", d],
    );
    assert_exit(&made, 0);
    let printed = stdout(&made);
    let lines: Vec<&str> = printed.lines().collect();
    assert_eq!(lines.len(), 1, "the token alone on one line: {printed:?}");
    let token = lines[0];
    let rest = token.strip_prefix("onshi_").expect("onshi_<id>_<secret>");
    let (id, secret) = rest.split_once('_').expect("onshi_<id>_<secret>");
    assert_eq!((id.len(), secret.len()), (16, 64), "{token}");
    assert!(
        stderr(&made).contains("shown only this once"),
        "{}",
        stderr(&made)
    );

    let users = run(&edge_bin(), &["user", "list", "--config", c]);
    assert_exit(&users, 0);
    let users = stdout(&users);
    let rows: Vec<Vec<&str>> = users
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0], ["NAME", "ROLE", "STATE", "CREATED"], "{users}");
    assert_eq!(rows[1][..3], ["alice", "admin", "enabled"], "{users}");
    assert_eq!(rows[2][..3], ["bob", "reception", "enabled"], "{users}");
    assert_eq!(rows.len(), 3, "{users}");
    assert!(!users.contains("argon2"), "never a hash: {users}");

    let disabled = run(&edge_bin(), &["user", "disable", "bob", "--data", d]);
    assert_exit(&disabled, 0);
    assert_eq!(stdout(&disabled), "disabled user bob\n");
    let revoked = run(&edge_bin(), &["token", "revoke", "bridge", "--data", d]);
    assert_exit(&revoked, 0);
    assert_eq!(stdout(&revoked), "revoked token bridge\n");
    let passwd = onshi_tests::run_edge_stdin(
        &["user", "passwd", "alice", "--password-stdin", "--data", d],
        "another long password\n",
    );
    assert_exit(&passwd, 0);

    let users = stdout(&run(&edge_bin(), &["user", "list", "--data", d]));
    assert!(
        users.lines().any(|l| l
            .split_whitespace()
            .take(3)
            .eq(["bob", "reception", "disabled"])),
        "{users}"
    );
    let tokens = stdout(&run(&edge_bin(), &["token", "list", "--data", d]));
    let row: Vec<&str> = tokens
        .lines()
        .find(|l| l.starts_with("bridge"))
        .unwrap_or_else(|| panic!("{tokens}"))
        .split_whitespace()
        .collect();
    assert_eq!(row[..4], ["bridge", id, "reception", "revoked"], "{tokens}");
    assert!(!tokens.contains(secret), "never the token: {tokens}");

    // Nothing in clear on disk; every change in the file's history.
    for secret_text in [token, secret, PASSWORD, "another long password"] {
        assert_eq!(
            files_containing(&data, secret_text),
            Vec::<String>::new(),
            "{secret_text}"
        );
    }
    let file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("accounts.json")).expect("accounts.json"))
            .expect("accounts.json is JSON");
    let history: Vec<(String, String)> = file["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|h| {
            (
                h["change"].as_str().unwrap_or("?").into(),
                h["name"].as_str().unwrap_or("?").into(),
            )
        })
        .collect();
    let expected = [
        ("user_add", "alice"),
        ("user_add", "bob"),
        ("token_add", "bridge"),
        ("user_disable", "bob"),
        ("token_revoke", "bridge"),
        ("user_passwd", "alice"),
    ];
    assert_eq!(
        history,
        expected.map(|(c, n)| (c.to_string(), n.to_string())),
        "{file}"
    );
    assert!(
        file["history"][0]["by"]
            .as_str()
            .is_some_and(|b| b.starts_with("cli uid "))
    );
}

#[test]
fn the_accounts_file_is_0600_whatever_the_umask() {
    let t = TestDir::new("accounts-umask");
    // 000 would leave a file made without a mode world-readable; 277 would leave one made with
    // mode 0600 but not set again afterwards read-only (0400) for its own writer.
    for umask in ["000", "277"] {
        let data = t.join(format!("data-{umask}"));
        let script = format!(
            "umask {umask}; printf '%s\\n' '{PASSWORD}' | '{bin}' user add alice --role admin --password-stdin --data '{d}' && '{bin}' token add bridge --role reception --data '{d}'",
            bin = edge_bin().display(),
            d = data.display(),
        );
        let out = onshi_tests::run_with(Command::new("sh").args(["-c", &script]));
        assert_exit(&out, 0);
        for name in ["accounts.json", "accounts.lock"] {
            let mode = std::fs::metadata(data.join(name))
                .unwrap_or_else(|e| panic!("{name}: {e}"))
                .permissions()
                .mode();
            assert_eq!(
                mode & 0o777,
                0o600,
                "umask {umask}: {name} has mode {:o}",
                mode & 0o777
            );
        }
    }
}

#[test]
fn the_commands_work_beside_a_running_edge_that_holds_its_store() {
    let t = TestDir::new("accounts-running");
    let pki = Pki::init(&t.join("pki"), &[FACILITY_A]);
    // No reconciler is needed for this: the edge runs offline, holding its sled store.
    let unused = std::net::UdpSocket::bind("127.0.0.1:0").expect("a free port");
    let nowhere = unused.local_addr().expect("addr");
    drop(unused);
    let data = t.join("edge");
    let edge = Edge::start(&t, EdgeOpts::new(FACILITY_A, &data, &pki, nowhere));
    let d = data.to_str().expect("utf-8");

    let added = onshi_tests::run_edge_stdin(
        &[
            "user",
            "add",
            "alice",
            "--role",
            "reception",
            "--password-stdin",
            "--data",
            d,
        ],
        &format!("{PASSWORD}\n"),
    );
    assert_exit(&added, 0);
    let made = run(
        &edge_bin(),
        &["token", "add", "bridge", "--role", "admin", "--data", d],
    );
    assert_exit(&made, 0);
    let token = stdout(&made).trim().to_string();
    assert_exit(
        &run(&edge_bin(), &["token", "revoke", "bridge", "--data", d]),
        0,
    );
    assert_exit(
        &run(&edge_bin(), &["user", "disable", "alice", "--data", d]),
        0,
    );
    let users = stdout(&run(&edge_bin(), &["user", "list", "--data", d]));
    assert!(
        users.contains("alice") && users.contains("disabled"),
        "{users}"
    );

    // The edge kept running and answering throughout.
    let status = edge.status();
    assert_eq!(status["facility"], FACILITY_A, "{status}");
    // Its store (sled's files) and the accounts file hold neither the token nor the password.
    for secret_text in [token.as_str(), PASSWORD] {
        assert_eq!(files_containing(&data, secret_text), Vec::<String>::new());
    }
}
