//! The admin pages (issue #15) against a real edge process, over HTTP with the session cookie as a
//! browser holds it: an admin adds a user and a token through the pages, the token works on the
//! API and stops at once when revoked; a reception user is refused the pages (403) and does not
//! see their links; a POST without the CSRF token changes nothing; the access log page lists the
//! admin's actions; disaster mode is asked for with a reason.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use onshi_tests::{Answer, Edge, EdgeOpts, FACILITY_A, Http, Pki, TestDir};

const PASSWORD: &str = "correct horse battery staple";

/// An edge with no reconciler (the link stays down): accounts and the access log need none.
fn offline_edge(t: &TestDir) -> Edge {
    let pki = Pki::init(&t.join("pki"), &[FACILITY_A]);
    let nowhere = std::net::UdpSocket::bind("127.0.0.1:0").expect("a free port");
    let addr = nowhere.local_addr().expect("addr");
    drop(nowhere);
    let mut opts = EdgeOpts::new(FACILITY_A, &t.join("edge"), &pki, addr);
    opts.deadline_ms = Some(200);
    Edge::start(t, opts)
}

/// `onshi-edge user add NAME --role ROLE --password-stdin`, as an operator would.
fn cli_add_user(edge: &Edge, name: &str, role: &str) {
    onshi_tests::add_user(&edge.opts.data, name, role, PASSWORD);
}

/// `application/x-www-form-urlencoded`, every byte but the unreserved ones escaped.
fn form_body(pairs: &[(&str, &str)]) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// A browser's view of the edge: one signed-in person's session cookie.
struct Browser {
    http: Http,
    cookie: String,
}

impl Browser {
    /// Signs in with the page's form (as the sign-in page posts it).
    fn sign_in(edge: &Edge, user: &str) -> Browser {
        let http = edge.http.anonymous();
        let a = http.send(
            http.request(reqwest::Method::POST, "/login")
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form_body(&[("user", user), ("password", PASSWORD)])),
        );
        assert_eq!(a.status, 303, "sign-in of {user}: {}", a.text);
        let set = a.header("set-cookie").expect("a session cookie");
        let cookie = set.split(';').next().unwrap().trim().to_string();
        Browser { http, cookie }
    }

    fn get(&self, path: &str) -> Answer {
        self.http.send(
            self.http
                .request(reqwest::Method::GET, path)
                .header("cookie", &self.cookie),
        )
    }

    fn post(&self, path: &str, pairs: &[(&str, &str)]) -> Answer {
        self.http.send(
            self.http
                .request(reqwest::Method::POST, path)
                .header("cookie", &self.cookie)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form_body(pairs)),
        )
    }

    /// The session's CSRF token, from the hidden field of a page's forms.
    fn csrf(&self) -> String {
        let page = self.get("/");
        assert_eq!(page.status, 200, "{}", page.text);
        let marker = r#"name="csrf" value=""#;
        let at = page.text.find(marker).expect("a form with the CSRF field") + marker.len();
        page.text[at..].split('"').next().unwrap().to_string()
    }
}

/// The text of the element with `id` (its first text node).
fn element_text(html: &str, id: &str) -> Option<String> {
    let at = html.find(&format!(r#"id="{id}""#))?;
    let rest = &html[at..];
    let start = rest.find('>')? + 1;
    Some(rest[start..].split('<').next()?.to_string())
}

#[test]
fn an_admin_manages_users_and_tokens_through_the_pages_and_the_access_log_lists_it() {
    let t = TestDir::new("admin-page-accounts");
    let edge = offline_edge(&t);
    cli_add_user(&edge, "kanri", "admin");
    cli_add_user(&edge, "uketsuke", "reception");
    let admin = Browser::sign_in(&edge, "kanri");
    let csrf = admin.csrf();

    // The admin sees the links; the list shows the accounts, never a hash.
    assert!(admin.get("/").text.contains(r#"href="/admin/accounts""#));
    let list = admin.get("/admin/accounts");
    assert_eq!(list.status, 200, "{}", list.text);
    assert!(
        list.text
            .contains(r#"data-user="uketsuke" data-state="enabled""#)
    );
    assert!(!list.text.contains("$argon2"), "no hash on the page");

    // A POST without the CSRF token changes nothing.
    let new_user = [
        ("name", "hanako"),
        ("role", "reception"),
        ("password", PASSWORD),
        ("password_again", PASSWORD),
    ];
    let forged = admin.post("/admin/users", &new_user);
    assert_eq!(forged.status, 403, "{}", forged.text);
    assert!(forged.text.contains("csrf"), "{}", forged.text);
    assert!(
        !admin
            .get("/admin/accounts")
            .text
            .contains(r#"data-user="hanako""#)
    );

    // Two different passwords: refused, naming the field; nothing added.
    let mismatch = admin.post(
        "/admin/users",
        &[
            ("csrf", &csrf),
            ("name", "hanako"),
            ("role", "reception"),
            ("password", PASSWORD),
            ("password_again", "correct horse battery stapler"),
        ],
    );
    assert_eq!(mismatch.status, 400, "{}", mismatch.text);
    assert!(
        mismatch.text.contains("password_again"),
        "{}",
        mismatch.text
    );
    // Too short for the policy: refused, naming the field.
    let short = admin.post(
        "/admin/users",
        &[
            ("csrf", &csrf),
            ("name", "hanako"),
            ("role", "reception"),
            ("password", "short"),
            ("password_again", "short"),
        ],
    );
    assert_eq!(short.status, 400, "{}", short.text);
    assert!(short.text.contains("（password）"), "{}", short.text);
    assert!(
        !admin
            .get("/admin/accounts")
            .text
            .contains(r#"data-user="hanako""#)
    );

    // Added: listed, and the new user can sign in.
    let mut with_csrf = vec![("csrf", csrf.as_str())];
    with_csrf.extend_from_slice(&new_user);
    let added = admin.post("/admin/users", &with_csrf);
    assert_eq!(added.status, 303, "{}", added.text);
    assert!(
        admin
            .get("/admin/accounts")
            .text
            .contains(r#"data-user="hanako" data-state="enabled""#)
    );
    let hanako = Browser::sign_in(&edge, "hanako");
    // The same name again: refused as taken.
    let again = admin.post("/admin/users", &with_csrf);
    assert_eq!(again.status, 409, "{}", again.text);

    // A token, shown once; it works on the API at once.
    let made = admin.post(
        "/admin/tokens",
        &[("csrf", &csrf), ("name", "desk"), ("role", "reception")],
    );
    assert_eq!(made.status, 201, "{}", made.text);
    let token = element_text(&made.text, "new-token").expect("the new token on the page");
    assert!(token.starts_with("onshi_"), "{token}");
    assert!(
        !admin.get("/admin/accounts").text.contains(&token),
        "shown once"
    );
    let desk = edge.http.with_token(Some(&token));
    assert_eq!(desk.get("/v1/status").status, 200);

    // Revoked: its next request is refused.
    let revoked = admin.post("/admin/tokens/desk/revoke", &[("csrf", &csrf)]);
    assert_eq!(revoked.status, 303, "{}", revoked.text);
    assert_eq!(desk.get("/v1/status").status, 401);
    assert!(
        admin
            .get("/admin/accounts")
            .text
            .contains(r#"data-token="desk" data-state="revoked""#)
    );

    // Disabled: the user's session stops at once.
    assert_eq!(hanako.get("/v1/status").status, 200);
    let disabled = admin.post("/admin/users/hanako/disable", &[("csrf", &csrf)]);
    assert_eq!(disabled.status, 303, "{}", disabled.text);
    assert_eq!(hanako.get("/v1/status").status, 401);

    // The accounts file's history names the admin, as the CLI's names its user.
    let file: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(edge.opts.data.join("accounts.json")).unwrap(),
    )
    .unwrap();
    let by_admin: Vec<(&str, &str)> = file["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["by"] == "kanri")
        .map(|h| (h["change"].as_str().unwrap(), h["name"].as_str().unwrap()))
        .collect();
    assert_eq!(
        by_admin,
        [
            ("user_add", "hanako"),
            ("token_add", "desk"),
            ("token_revoke", "desk"),
            ("user_disable", "hanako"),
        ]
    );

    // A reception user: refused every admin page and change, and shown no link to them.
    let reception = Browser::sign_in(&edge, "uketsuke");
    let reception_csrf = reception.csrf();
    assert!(!reception.get("/").text.contains("/admin/"));
    for path in ["/admin/accounts", "/admin/audit", "/admin/outage"] {
        let a = reception.get(path);
        assert_eq!(a.status, 403, "{path}: {}", a.text);
        assert!(
            a.text.contains("admin"),
            "{path} names the role: {}",
            a.text
        );
    }
    let sneaky = reception.post(
        "/admin/tokens",
        &[
            ("csrf", &reception_csrf),
            ("name", "mine"),
            ("role", "admin"),
        ],
    );
    assert_eq!(sneaky.status, 403, "{}", sneaky.text);
    assert!(
        !admin
            .get("/admin/accounts")
            .text
            .contains(r#"data-token="mine""#)
    );

    // The access log lists the admin's actions (newest first), and a filter by actor.
    let log = admin.get("/admin/audit?actor=kanri");
    assert_eq!(log.status, 200, "{}", log.text);
    for action in ["user_add", "token_add", "token_revoke", "user_disable"] {
        assert!(
            log.text
                .contains(&format!(r#"data-actor="kanri" data-action="{action}""#)),
            "{action} in the access log: {}",
            log.text
        );
    }
    assert!(log.text.contains("アカウント hanako"), "the subject by id");
    let others = admin.get("/admin/audit?actor=uketsuke");
    assert!(!others.text.contains(r#"data-actor="kanri""#));
    // Reading the log is itself logged; a bad filter is refused naming it.
    let later = admin.get("/admin/audit?since=2000-01-01");
    assert!(
        later
            .text
            .contains(r#"data-actor="kanri" data-action="audit_read""#)
    );
    let bad = admin.get("/admin/audit?since=yesterday");
    assert_eq!(bad.status, 400, "{}", bad.text);
    assert!(bad.text.contains("since"), "{}", bad.text);
}

#[test]
fn an_admin_asks_for_disaster_mode_with_a_reason_and_sees_its_state() {
    let t = TestDir::new("admin-page-outage");
    let edge = offline_edge(&t);
    cli_add_user(&edge, "kanri", "admin");
    let admin = Browser::sign_in(&edge, "kanri");
    let csrf = admin.csrf();

    let before = admin.get("/admin/outage");
    assert_eq!(before.status, 200, "{}", before.text);
    assert!(
        before.text.contains(r#"data-active="false""#),
        "{}",
        before.text
    );

    // No reason: refused naming the field, nothing recorded.
    let no_reason = admin.post(
        "/admin/outage",
        &[("csrf", &csrf), ("active", "true"), ("reason", " ")],
    );
    assert_eq!(no_reason.status, 400, "{}", no_reason.text);
    assert!(no_reason.text.contains("reason"), "{}", no_reason.text);
    let too_long = "停".repeat(201);
    let long = admin.post(
        "/admin/outage",
        &[("csrf", &csrf), ("active", "true"), ("reason", &too_long)],
    );
    assert_eq!(long.status, 400, "{}", long.text);
    assert_eq!(edge.http.get("/v1/outage").json["active"], false);

    // Without the CSRF token: refused.
    let forged = admin.post("/admin/outage", &[("active", "true"), ("reason", "地震")]);
    assert_eq!(forged.status, 403, "{}", forged.text);
    assert_eq!(edge.http.get("/v1/outage").json["active"], false);

    // Declared: recorded here (the centre is unreachable, and the page says so), shown, and the
    // API's GET /v1/outage agrees; central search is not available without the centre.
    let asked = admin.post(
        "/admin/outage",
        &[
            ("csrf", &csrf),
            ("active", "true"),
            ("reason", "地震で回線断"),
        ],
    );
    assert_eq!(asked.status, 200, "{}", asked.text);
    assert!(
        asked.text.contains(r#"data-active="true""#),
        "{}",
        asked.text
    );
    assert!(
        asked.text.contains(r#"data-central="false""#),
        "{}",
        asked.text
    );
    assert!(asked.text.contains("unreachable"), "{}", asked.text);
    let api = edge.http.get("/v1/outage");
    assert_eq!(api.json["active"], true, "{}", api.text);
    assert_eq!(api.json["reason"], "地震で回線断");
    assert!(admin.get("/admin/outage").text.contains("地震で回線断"));

    // The request is in the access log.
    assert!(
        admin
            .get("/admin/audit")
            .text
            .contains(r#"data-actor="kanri" data-action="outage_request""#)
    );
}

#[test]
fn card_checks_at_the_readers_appear_on_the_check_page_without_names_or_card_numbers() {
    let t = TestDir::new("admin-page-cards");
    let edge = offline_edge(&t);
    cli_add_user(&edge, "uketsuke", "reception");
    let staff = Browser::sign_in(&edge, "uketsuke");
    assert!(
        staff
            .get("/")
            .text
            .contains("カードリーダーでの確認はまだありません")
    );

    // Two cards at two readers (the bridge's token); the link is down, so they are answered
    // from what the edge knows, which is enough for the list.
    for (reader, card, verified) in [("R1", "C0000001", "face"), ("R2", "C0000002", "pin")] {
        let a = edge.http.post_json(
            "/v1/reader/card",
            &serde_json::json!({"reader_id": reader, "card_id": card, "verified": verified}),
        );
        assert!(a.status < 300, "{reader}: {}", a.text);
    }

    // The list the script swaps in, and the check page itself: newest first, no card number.
    let list = staff.get("/page/cards");
    assert_eq!(list.status, 200, "{}", list.text);
    let r2 = list.text.find(r#"data-reader="R2" data-verified="pin""#);
    let r1 = list.text.find(r#"data-reader="R1" data-verified="face""#);
    assert!(r2.is_some() && r1.is_some() && r2 < r1, "{}", list.text);
    let page = staff.get("/");
    assert!(page.text.contains(r#"id="recent-cards""#), "{}", page.text);
    assert!(page.text.contains(r#"data-reader="R1""#), "{}", page.text);
    for text in [&list.text, &page.text] {
        assert!(!text.contains("C000000"), "no card number: {text}");
    }

    // Signed out (no cookie): nothing.
    assert_eq!(edge.http.anonymous().get("/page/cards").status, 401);
}
