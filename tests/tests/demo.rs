//! `onshi-edge demo`: one command that needs nothing else. What it prints must work as printed.

use std::time::Duration;

use onshi_tests::{Http, Proc, READY_TIMEOUT, TestDir, assert_error, edge_bin};
use serde_json::Value;

/// One example of the demo's output: the comment line above it, the URL and the JSON body.
#[derive(Debug)]
struct Example {
    comment: String,
    url: String,
    body: Value,
}

/// Reads `curl -s -X POST URL -H '…' -d 'BODY'`.
fn parse_curl(line: &str) -> Option<(String, Value)> {
    let rest = line.strip_prefix("curl -s -X POST ")?;
    let url = rest.split_whitespace().next()?.to_string();
    let body = rest.split_once(" -d '")?.1.strip_suffix('\'')?;
    let body: Value = serde_json::from_str(body).ok()?;
    Some((url, body))
}

#[test]
fn demo_prints_examples_that_work_and_stops_on_sigterm() {
    let t = TestDir::new("demo");
    let mut cmd = std::process::Command::new(edge_bin());
    cmd.args(["demo", "--http", "127.0.0.1:0", "--people", "2000"])
        .env_remove("NOTIFY_SOCKET");
    let mut demo = Proc::spawn("demo", cmd, t.path());
    let web = demo
        .wait_line("web address: ", READY_TIMEOUT)
        .trim()
        .to_string();
    assert!(web.starts_with("http://127.0.0.1:"), "web address: {web}");

    let mut examples = Vec::new();
    let mut comment = None;
    let mut token = None;
    let mut reception_password = None;
    while examples.len() < 3 {
        let line = demo.next_line(READY_TIMEOUT).unwrap_or_else(|| {
            panic!(
                "the demo printed only {} POST examples: {:?}",
                examples.len(),
                demo.stdout_lines()
            )
        });
        if let Some(t) = line.strip_prefix("export ONSHI_TOKEN=") {
            token = Some(t.trim().to_string());
        } else if let Some(p) = line.strip_prefix("#   reception  ") {
            reception_password = Some(p.trim().to_string());
        } else if line.starts_with("# ") {
            comment = Some(line);
        } else if line.starts_with("curl -s -X POST ") {
            assert!(
                line.contains("-H \"Authorization: Bearer $ONSHI_TOKEN\""),
                "the example sends the token: {line}"
            );
            let (url, body) =
                parse_curl(&line).unwrap_or_else(|| panic!("cannot read the curl line: {line}"));
            let comment = comment
                .take()
                .unwrap_or_else(|| panic!("no '# …' comment line before {line}"));
            examples.push(Example { comment, url, body });
        }
    }
    for e in &examples {
        assert!(e.comment.len() > "# ".len(), "an empty comment: {e:?}");
        assert_eq!(e.url, format!("{web}/v1/checks"), "{e:?}");
    }

    let token = token.expect("the demo prints `export ONSHI_TOKEN=…` before its examples");
    let http = Http::new(&web).with_token(Some(&token));
    // Without the token the API is closed; with it the examples work as printed.
    let refused = http.anonymous().post_json("/v1/checks", &examples[0].body);
    assert_eq!(refused.status, 401, "{}", refused.text);
    // The printed reception account signs in.
    let password = reception_password.expect("the demo prints the reception password");
    let signed_in = http.anonymous().post_json(
        "/login",
        &serde_json::json!({"user": "reception", "password": password}),
    );
    assert_eq!(signed_in.status, 200, "{}", signed_in.text);
    assert_eq!(signed_in.json["role"], "reception", "{}", signed_in.text);
    let a = http.post_json("/v1/checks", &examples[0].body);
    assert_eq!(a.status, 200, "{:?}: {}", examples[0], a.text);
    assert_eq!(a.json["validity"], "valid", "{:?}: {}", examples[0], a.text);
    assert_eq!(a.json["source"], "online", "{}", a.text);

    let b = http.post_json("/v1/checks", &examples[1].body);
    assert_eq!(b.status, 200, "{:?}: {}", examples[1], b.text);
    assert_eq!(
        b.json["validity"], "invalid_newer_exists",
        "{:?}: {}",
        examples[1], b.text
    );

    let c = http.post_json("/v1/checks", &examples[2].body);
    assert_error(
        &(c.status, c.json.clone()),
        400,
        "invalid_check_digit",
        Some("insurance_card.insurer_number"),
    );

    // The stored check reads back at the printed address.
    let id = a.json["check_id"].as_str().expect("check_id");
    let stored = http.get(&format!("/v1/checks/{id}"));
    assert_eq!(stored.status, 200, "{}", stored.text);
    assert_eq!(stored.json["validity"], "valid");

    demo.signal(libc::SIGTERM);
    let exit = demo
        .wait_exit(Duration::from_secs(15))
        .unwrap_or_else(|| panic!("the demo did not exit within 15 s of SIGTERM"));
    assert!(exit.success(), "the demo exits 0 on SIGTERM, got {exit}");
}
