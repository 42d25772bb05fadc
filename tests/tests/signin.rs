//! Sign-in on the edge's API (issue #15): every `/v1/*` route needs a token or a session; roles;
//! CSRF for a session's changes; a disabled user's session ends at once; failed sign-ins are
//! slowed; the access log records who read what and never what was searched for. Real edge
//! processes; accounts made with the real `onshi-edge user`/`token` commands.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use onshi_tests::{
    Edge, EdgeOpts, FACILITY_A, Http, Pki, TODAY, TestDir, card_check, edge_bin,
    reconciler_with_registry, run, wait_until,
};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery staple";

fn data_arg(edge: &Edge) -> String {
    edge.opts.data.display().to_string()
}

/// `onshi-edge user add NAME --role ROLE --password-stdin` beside the running edge.
fn add_user(edge: &Edge, name: &str, role: &str) {
    let d = data_arg(edge);
    let out = onshi_tests::run_edge_stdin(
        &[
            "user",
            "add",
            name,
            "--role",
            role,
            "--password-stdin",
            "--data",
            &d,
        ],
        &format!("{PASSWORD}\n"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `onshi-edge token add NAME --role ROLE`: the token.
fn add_token(edge: &Edge, name: &str, role: &str) -> String {
    let d = data_arg(edge);
    let out = run(
        &edge_bin(),
        &["token", "add", name, "--role", role, "--data", &d],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// An edge with no reconciler (the link stays down; checks are queued, records kept).
fn offline_edge(t: &TestDir) -> Edge {
    let pki = Pki::init(&t.join("pki"), &[FACILITY_A]);
    let nowhere = std::net::UdpSocket::bind("127.0.0.1:0").expect("a free port");
    let addr = nowhere.local_addr().expect("addr");
    drop(nowhere);
    let mut opts = EdgeOpts::new(FACILITY_A, &t.join("edge"), &pki, addr);
    opts.deadline_ms = Some(200);
    Edge::start(t, opts)
}

fn provisional(name: &str) -> Value {
    json!({"declared": {"name": name, "birth_date": "1980-04-01", "sex": "female"}, "service_date": TODAY, "total_fee_yen": 5000})
}

fn assert_refused(a: &onshi_tests::Answer, status: u16, code: &str, what: &str) {
    assert_eq!(a.status, status, "{what}: {}", a.text);
    assert_eq!(a.json["error"]["code"], code, "{what}: {}", a.text);
    assert!(
        a.json["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{what}: a message: {}",
        a.text
    );
}

/// Every `/v1` route of the API, with a body that would be accepted.
fn routes() -> Vec<(&'static str, String, Value)> {
    let id = format!("{FACILITY_A}-00000001-0000000001");
    vec![
        (
            "POST",
            "/v1/checks".into(),
            json!({"card_id": "C0000001", "verified": "face"}),
        ),
        ("GET", format!("/v1/checks/{id}"), Value::Null),
        ("GET", "/v1/status".into(), Value::Null),
        ("GET", "/v1/queue".into(), Value::Null),
        ("GET", "/v1/export".into(), Value::Null),
        ("POST", format!("/v1/queue/{id}/close"), json!({})),
        (
            "POST",
            format!("/v1/queue/{id}/choose"),
            json!({"person_id": "P0000001"}),
        ),
        ("POST", "/v1/sync-now".into(), json!({"timeout_ms": 10})),
        ("POST", "/v1/batch".into(), json!({"checks": []})),
        (
            "POST",
            "/v1/search".into(),
            json!({"name_kana": "ヤマダ", "birth_date": "1980-04-01", "sex": "female"}),
        ),
        (
            "POST",
            "/v1/outage".into(),
            json!({"active": true, "reason": "card reader broken"}),
        ),
        ("GET", "/v1/outage".into(), Value::Null),
        ("POST", "/v1/provisional".into(), provisional("山田　花子")),
        ("GET", format!("/v1/provisional/{id}"), Value::Null),
        (
            "POST",
            "/v1/reader/heartbeat".into(),
            json!({"reader_id": "R1"}),
        ),
        (
            "POST",
            "/v1/reader/card".into(),
            json!({"reader_id": "R1", "card_id": "C0000001", "verified": "face"}),
        ),
        ("GET", "/v1/audit".into(), Value::Null),
    ]
}

fn call(http: &Http, method: &str, path: &str, body: &Value) -> onshi_tests::Answer {
    match method {
        "GET" => http.get(path),
        _ => http.post_json(path, body),
    }
}

#[test]
fn every_v1_route_needs_credentials_but_health_and_metrics_are_open() {
    let t = TestDir::new("signin-routes");
    let edge = offline_edge(&t);
    let anonymous = edge.http.anonymous();
    let forged = edge.http.with_token(Some(&format!(
        "onshi_{}_{}",
        "0".repeat(16),
        "0".repeat(64)
    )));
    for (method, path, body) in routes() {
        let a = call(&anonymous, method, &path, &body);
        assert_refused(&a, 401, "unauthenticated", &format!("{method} {path}"));
        assert_eq!(a.json["error"]["field"], "Authorization", "{}", a.text);
        let b = call(&forged, method, &path, &body);
        assert_refused(
            &b,
            401,
            "unauthenticated",
            &format!("{method} {path} forged"),
        );
    }
    // Nothing was recorded by the refused requests.
    let status = edge.status();
    assert_eq!(status["journal"]["checks"], 0, "{status}");
    assert_eq!(status["journal"]["provisional"], 0, "{status}");
    assert_eq!(edge.get("/v1/outage").1["active"], false);

    // The health route is open and says the mode, nothing else.
    let h = anonymous.get("/v1/health");
    assert_eq!(h.status, 200, "{}", h.text);
    let keys: Vec<&String> = h.json.as_object().expect("an object").keys().collect();
    assert_eq!(keys, ["mode"], "{}", h.text);
    assert_eq!(h.json["mode"], status["mode"], "{}", h.text);
    let m = anonymous.get("/metrics");
    assert_eq!(m.status, 200, "{}", m.text);
    assert!(m.text.contains("onshi_mode"), "{}", m.text);

    // With the token, the same routes are let in (a 401 would be the guard).
    for (method, path, body) in routes() {
        let a = call(&edge.http, method, &path, &body);
        assert_ne!(a.status, 401, "{method} {path}: {}", a.text);
        assert_ne!(a.status, 403, "{method} {path}: {}", a.text);
    }
}

#[test]
fn reception_is_forbidden_the_export_the_access_log_and_declaring_an_outage() {
    let t = TestDir::new("signin-roles");
    let edge = offline_edge(&t);
    let desk = edge
        .http
        .with_token(Some(&add_token(&edge, "desk", "reception")));
    for (method, path, body) in [
        ("GET", "/v1/export", Value::Null),
        ("GET", "/v1/audit", Value::Null),
        (
            "POST",
            "/v1/outage",
            json!({"active": true, "reason": "card reader broken"}),
        ),
    ] {
        let a = call(&desk, method, path, &body);
        assert_refused(&a, 403, "forbidden", &format!("{method} {path}"));
        assert!(
            a.text.contains("admin"),
            "names the role needed: {}",
            a.text
        );
    }
    assert_eq!(edge.get("/v1/outage").1["active"], false);
    // What reception does, it may.
    assert_eq!(desk.get("/v1/queue").status, 200);
    let p = desk.post_json("/v1/provisional", &provisional("山田　花子"));
    assert_eq!(p.status, 201, "{}", p.text);
    // The command-line clients say what is wrong with the token.
    let out = Command::new(edge_bin())
        .args(["export", "--http", &edge.http_addr.to_string()])
        .env("ONSHI_TOKEN", desk.token().unwrap())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("403") && err.contains("admin"), "{err}");
    let out = Command::new(edge_bin())
        .args(["status", "--http", &edge.http_addr.to_string()])
        .env_remove("ONSHI_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--token"), "{err}");
    // A revoked token is refused at its next request.
    let d = data_arg(&edge);
    let revoked = run(&edge_bin(), &["token", "revoke", "desk", "--data", &d]);
    assert!(revoked.status.success());
    assert_refused(&desk.get("/v1/queue"), 401, "unauthenticated", "revoked");
}

/// The session cookie from a sign-in's `Set-Cookie`.
fn cookie_of(a: &onshi_tests::Answer) -> String {
    let set = a.header("set-cookie").expect("a Set-Cookie");
    let value = set.split(';').next().unwrap().trim();
    assert!(value.starts_with("onshi_session="), "{set}");
    value.to_string()
}

#[test]
fn a_session_needs_its_csrf_token_to_change_anything_and_ends_when_the_user_is_disabled() {
    let t = TestDir::new("signin-session");
    let edge = offline_edge(&t);
    add_user(&edge, "hanako", "reception");
    let anonymous = edge.http.anonymous();

    // A form sign-in (as the page posts it): a cookie for the whole site, never for scripts.
    let form = anonymous.send(
        anonymous
            .request(reqwest::Method::POST, "/login")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!(
                "user=hanako&password={}",
                PASSWORD.replace(' ', "+")
            )),
    );
    assert_eq!(form.status, 303, "{}", form.text);
    assert_eq!(form.header("location"), Some("/"));
    let set = form.header("set-cookie").unwrap();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(attr), "{attr} in {set}");
    }

    // A program's sign-in (JSON): the CSRF token comes with it.
    let signed = anonymous.post_json("/login", &json!({"user": "hanako", "password": PASSWORD}));
    assert_eq!(signed.status, 200, "{}", signed.text);
    assert_eq!(signed.json["role"], "reception");
    let csrf = signed.json["csrf"].as_str().unwrap().to_string();
    let cookie = cookie_of(&signed);
    let with_cookie = |m: reqwest::Method, path: &str| {
        anonymous
            .request(m, path)
            .header("cookie", &cookie)
            .header("content-type", "application/json")
    };
    let s = anonymous.send(with_cookie(reqwest::Method::GET, "/v1/status"));
    assert_eq!(s.status, 200, "{}", s.text);

    // A change without the CSRF token (or with a wrong one) is refused, and nothing is recorded.
    let body = provisional("山田　花子").to_string();
    let no_csrf =
        anonymous.send(with_cookie(reqwest::Method::POST, "/v1/provisional").body(body.clone()));
    assert_refused(&no_csrf, 403, "csrf_invalid", "no CSRF token");
    assert_eq!(no_csrf.json["error"]["field"], "X-CSRF-Token");
    let wrong = anonymous.send(
        with_cookie(reqwest::Method::POST, "/v1/provisional")
            .header("x-csrf-token", "0".repeat(csrf.len()))
            .body(body.clone()),
    );
    assert_refused(&wrong, 403, "csrf_invalid", "a wrong CSRF token");
    assert_eq!(edge.status()["journal"]["provisional"], 0);
    let ok = anonymous.send(
        with_cookie(reqwest::Method::POST, "/v1/provisional")
            .header("x-csrf-token", &csrf)
            .body(body),
    );
    assert_eq!(ok.status, 201, "{}", ok.text);
    assert_eq!(edge.status()["journal"]["provisional"], 1);

    // Disabled while signed in: the very next request is refused.
    let d = data_arg(&edge);
    let disabled = run(&edge_bin(), &["user", "disable", "hanako", "--data", &d]);
    assert!(
        disabled.status.success(),
        "{}",
        String::from_utf8_lossy(&disabled.stderr)
    );
    let after = anonymous.send(with_cookie(reqwest::Method::GET, "/v1/status"));
    assert_refused(&after, 401, "unauthenticated", "a disabled user's session");

    // Sign-out ends a session (another user's, still enabled).
    add_user(&edge, "taro", "reception");
    let s2 = anonymous.post_json("/login", &json!({"user": "taro", "password": PASSWORD}));
    let (cookie2, csrf2) = (
        cookie_of(&s2),
        s2.json["csrf"].as_str().unwrap().to_string(),
    );
    let out = anonymous.send(
        anonymous
            .request(reqwest::Method::POST, "/logout")
            .header("cookie", &cookie2)
            .header("content-type", "application/json")
            .header("x-csrf-token", &csrf2),
    );
    assert_eq!(out.status, 204, "{}", out.text);
    let gone = anonymous.send(
        anonymous
            .request(reqwest::Method::GET, "/v1/queue")
            .header("cookie", &cookie2),
    );
    assert_refused(&gone, 401, "unauthenticated", "after sign-out");
}

#[test]
fn repeated_bad_passwords_are_slowed() {
    let t = TestDir::new("signin-throttle");
    let edge = offline_edge(&t);
    add_user(&edge, "hanako", "reception");
    let anonymous = edge.http.anonymous();
    let attempt = |password: &str| {
        anonymous.post_json("/login", &json!({"user": "hanako", "password": password}))
    };
    let mut statuses = Vec::new();
    let slowed = wait_until(Duration::from_secs(20), Duration::from_millis(1), || {
        let a = attempt("not the password at all");
        statuses.push(a.status);
        (a.status == 429).then_some(a)
    })
    .unwrap_or_else(|| panic!("never slowed: {statuses:?}"));
    assert!(
        statuses[..statuses.len() - 1].iter().all(|s| *s == 401),
        "{statuses:?}"
    );
    assert_eq!(slowed.json["error"]["code"], "throttled", "{}", slowed.text);
    let retry: u64 = slowed
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!(retry >= 1, "{retry}");
    // Even the right password waits its turn.
    assert_eq!(attempt(PASSWORD).status, 429);
}

#[test]
fn a_search_and_an_export_are_in_the_access_log_with_the_actor_and_without_the_searched_values() {
    let t = TestDir::new("signin-audit");
    let (pki, reg, rec) = reconciler_with_registry(&t, &[FACILITY_A]);
    let edge = Edge::start(
        &t,
        EdgeOpts::new(FACILITY_A, &t.join("edge"), &pki, rec.addr),
    );
    edge.wait_online();
    let q = reg.valid_insured().clone();
    let desk = edge
        .http
        .with_token(Some(&add_token(&edge, "desk", "reception")));
    // The check teaches the replica the person; the search finds them there.
    let c = desk.post_json("/v1/checks", &card_check(&q, TODAY));
    assert_eq!(c.status, 200, "{}", c.text);
    let check_id = c.json["check_id"].as_str().unwrap().to_string();
    let search =
        json!({"name_kana": q["name_kana"], "birth_date": q["birth_date"], "sex": q["sex"]});
    let s = desk.post_json("/v1/search", &search);
    assert_eq!(s.status, 200, "{}", s.text);
    let person = q["person_id"].as_str().unwrap();
    assert!(
        s.json["candidates"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["person_id"] == person),
        "{}",
        s.text
    );
    let e = edge.http.get("/v1/export");
    assert_eq!(e.status, 200, "{}", e.text);

    let log = edge.http.get("/v1/audit");
    assert_eq!(log.status, 200, "{}", log.text);
    let entries = log.json["entries"].as_array().expect("entries").clone();
    let find = |actor: &str, action: &str| {
        entries
            .iter()
            .find(|e| e["actor"] == actor && e["action"] == action)
            .unwrap_or_else(|| panic!("no {action} by {actor}: {}", log.text))
            .clone()
    };
    let checked = find("desk", "check");
    assert_eq!(checked["role"], "reception");
    assert!(
        checked["subject"]
            .as_array()
            .unwrap()
            .contains(&json!({"check": check_id})),
        "{checked}"
    );
    let searched = find("desk", "search");
    assert!(
        searched["subject"]
            .as_array()
            .unwrap()
            .contains(&json!({"person": person})),
        "{searched}"
    );
    assert_eq!(searched["from"], "127.0.0.1", "{searched}");
    assert!(searched["at"].as_str().is_some(), "{searched}");
    let exported = find(onshi_tests::HARNESS_TOKEN, "export");
    assert_eq!(exported["role"], "admin");

    // Never the values searched for.
    let birth = q["birth_date"].as_str().unwrap();
    for value in [
        q["name_kana"].as_str().unwrap(),
        q["name"].as_str().unwrap(),
        birth,
        &birth.replace('-', ""),
    ] {
        assert!(
            !log.text.contains(value),
            "{value} in the access log: {}",
            log.text
        );
    }

    // The command-line client, filtered by actor.
    let out = edge.cli(&["audit", "--actor", "desk"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("desk (reception) search"), "{text}");
    assert!(!text.contains("export"), "only desk's entries: {text}");
    let since = edge.cli(&["audit", "--since", "2999-01-01", "--json"]);
    let v: Value = serde_json::from_slice(&since.stdout).unwrap();
    assert_eq!(v["entries"], json!([]), "{v}");
}
