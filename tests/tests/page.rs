//! The reception page as staff use it: headless Chromium (Debian's `chromium` driven through
//! `chromedriver`) against a real edge and a real reconciler, both processes. Sign in, check a
//! patient, lose the reconciler (SIGKILL) and see the banner say so without a reload, find the
//! patient by kana and an era birth date, record the self-declaration and see the amount, get the
//! reconciler back and act on the settlement in the worklist, sign out. A screenshot of each page
//! is kept under `target/page-screenshots/` for people to look at.
//!
//! Plus, without a browser, what the page refuses: every page without a session, a POST without
//! the session's CSRF token, and the session cookie's attributes.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use onshi_tests::webdriver::{Browser, Driver, ENTER, wait};
use onshi_tests::{
    Edge, EdgeOpts, FACILITY_A, TODAY, TestDir, era_date, reconciler_with_registry, to_hiragana,
};
use serde_json::Value;

const PASSWORD: &str = "reception counter 1";

fn screenshots() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .map_or_else(|| PathBuf::from("target"), |p| p.to_path_buf())
        .join("page-screenshots")
}

/// `onshi-edge user add NAME --role ROLE --password-stdin --data DIR`.
fn add_user(data: &std::path::Path, name: &str, role: &str) {
    onshi_tests::add_user(data, name, role, PASSWORD);
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

fn banner_mode(b: &Browser) -> Option<String> {
    b.try_find("#banner").and_then(|e| b.attr(&e, "data-mode"))
}

#[test]
fn reception_works_an_outage_in_the_browser() {
    let t = TestDir::new("page");
    let shots = screenshots();
    let (pki, registry, rec) = reconciler_with_registry(&t, &[FACILITY_A]);
    let data = t.join("edge");
    add_user(&data, "uketsuke", "reception");
    let edge = Edge::start(&t, EdgeOpts::new(FACILITY_A, &data, &pki, rec.addr));
    edge.wait_online();
    let base = format!("http://{}", edge.http_addr);
    let b = Driver::start(t.path()).browser();

    // Not signed in: the page sends the browser to sign in.
    b.goto(&format!("{base}/worklist"));
    b.find("input[name='user']");
    assert!(b.url().ends_with("/login"), "{}", b.url());
    assert_eq!(
        b.focused_name().as_deref(),
        Some("user"),
        "the user field has the focus"
    );
    b.screenshot(&shots.join("01-login.png"));

    // Sign in with the keyboard: type, Enter.
    b.fill("input[name='user']", "uketsuke");
    b.fill("input[name='password']", &format!("{PASSWORD}{ENTER}"));
    b.find("#banner");
    assert_eq!(b.url(), format!("{base}/"));
    let cookie = b.cookie("onshi_session").expect("the session cookie");
    assert_eq!(cookie["httpOnly"], true, "{cookie}");
    assert_eq!(cookie["sameSite"], "Strict", "{cookie}");
    assert_eq!(banner_mode(&b).as_deref(), Some("online"));
    assert_eq!(
        b.focused_name().as_deref(),
        Some("insurance_card.insurer_number"),
        "the check form has the focus"
    );

    // Check a valid person by their card numbers, the birth date as an era date.
    let q = registry.valid_insured().clone();
    b.fill(
        "input[name='insurance_card.insurer_number']",
        s(&q["insurer_number"]),
    );
    b.fill("input[name='insurance_card.symbol']", s(&q["symbol"]));
    b.fill("input[name='insurance_card.number']", s(&q["number"]));
    b.fill("input[name='insurance_card.branch']", s(&q["branch"]));
    b.fill(
        "input[name='birth_date']",
        &era_date(s(&q["birth_date"]), false),
    );
    b.fill("input[name='service_date']", &format!("{TODAY}{ENTER}"));
    let answer = b.find("[data-validity]");
    assert_eq!(b.attr(&answer, "data-validity").as_deref(), Some("valid"));
    assert_eq!(b.attr(&answer, "data-source").as_deref(), Some("online"));
    let words = b.text(&answer);
    assert!(words.contains("有効"), "{words}");
    assert!(words.contains(s(&q["insurer_name"])), "{words}");
    b.screenshot(&shots.join("02-check-valid.png"));

    // The reconciler dies: the banner turns offline by itself, without a reload.
    let mut rec = rec;
    rec.kill9();
    let killed = Instant::now();
    let offline = wait(Duration::from_secs(3), || {
        (banner_mode(&b).as_deref() == Some("offline")).then_some(())
    });
    assert!(
        offline.is_some(),
        "the banner did not show offline within 3 s of the SIGKILL (it says {:?}; the edge's status says {})",
        banner_mode(&b),
        edge.status()["mode"]
    );
    eprintln!("banner offline {:?} after the SIGKILL", killed.elapsed());
    b.screenshot(&shots.join("03-offline-banner.png"));

    // A patient this facility never saw: no answer now, and the page says what to do.
    let unseen = registry
        .valid_people(0, 50)
        .into_iter()
        .find(|p| p["person_id"] != q["person_id"])
        .expect("another valid person")
        .clone();
    b.click("nav a[href='/']");
    b.fill(
        "input[name='insurance_card.insurer_number']",
        s(&unseen["insurer_number"]),
    );
    b.fill("input[name='insurance_card.symbol']", s(&unseen["symbol"]));
    b.fill("input[name='insurance_card.number']", s(&unseen["number"]));
    b.fill("input[name='insurance_card.branch']", s(&unseen["branch"]));
    b.fill("input[name='birth_date']", s(&unseen["birth_date"]));
    b.fill("input[name='service_date']", &format!("{TODAY}{ENTER}"));
    let pending = b.find("[data-validity]");
    assert_eq!(
        b.attr(&pending, "data-validity").as_deref(),
        Some("pending")
    );
    assert!(b.text(&pending).contains("申立書"), "{}", b.text(&pending));
    let pending_id = b.attr(&pending, "data-check-id").expect("a check id");
    b.screenshot(&shots.join("03b-check-pending.png"));

    // Outage search: the reading in hiragana, the birth date as an era date, the day of care.
    b.click("nav a[href='/search']");
    b.fill("input[name='name_kana']", &to_hiragana(s(&q["name_kana"])));
    b.fill(
        "input[name='birth_date']",
        &era_date(s(&q["birth_date"]), false),
    );
    b.click(&format!(
        "select[name='sex'] option[value='{}']",
        s(&q["sex"])
    ));
    // A day of care that does not exist is refused, naming the field; what was typed stays.
    b.fill("input[name='service_date']", "2025-02-30");
    b.click("form.card button[type='submit']");
    let refused = b.find("p.error[data-error-field]");
    assert_eq!(
        b.attr(&refused, "data-error-field").as_deref(),
        Some("service_date")
    );
    let kept = b.find("input[name='name_kana']");
    assert_eq!(
        b.attr(&kept, "value").as_deref(),
        Some(to_hiragana(s(&q["name_kana"])).as_str())
    );
    b.fill("input[name='service_date']", TODAY);
    b.click("form.card button[type='submit']");
    let first = b.find("li.candidate[data-person-id]");
    assert_eq!(
        b.attr(&first, "data-person-id").as_deref(),
        Some(s(&q["person_id"])),
        "the person checked before the outage comes first"
    );
    let why = b.text(&first);
    assert!(why.contains("生年月日一致"), "the page says why: {why}");
    b.screenshot(&shots.join("04-search.png"));

    // Choose them: the self-declaration opens prefilled for that day of care; type the fee,
    // Enter.
    b.click("li.candidate a.choose");
    let name = b.find("input[name='declared.name']");
    assert_eq!(b.attr(&name, "value").as_deref(), Some(s(&q["name"])));
    assert_eq!(b.focused_name().as_deref(), Some("total_fee_yen"));
    let day = b.find("input[name='service_date']");
    assert_eq!(b.attr(&day, "value").as_deref(), Some(TODAY));
    b.fill("input[name='total_fee_yen']", &format!("10000{ENTER}"));
    let declared = b.find("section.declared");
    let share: u64 = q["share_percent"].as_u64().expect("a share");
    assert_eq!(
        b.attr(&declared, "data-collected-yen"),
        Some((10_000 * share / 100).to_string()),
        "the amount to collect"
    );
    let record_id = b.attr(&declared, "data-record-id").expect("a record id");
    let amount = b.text(&b.find("#collected"));
    assert!(amount.starts_with('¥'), "{amount}");
    b.screenshot(&shots.join("05-declared.png"));
    b.click("section.declared a.button");
    let sheet = b.find("article.a4");
    assert_eq!(
        b.attr(&sheet, "data-record-id").as_deref(),
        Some(record_id.as_str())
    );
    b.screenshot(&shots.join("06-sheet.png"));

    // The reconciler is back: the worklist shows the record settled, in words; close it.
    let _rec = rec.restart(&t);
    let row = format!("tr.item[data-id='{record_id}']");
    let settled = wait(Duration::from_secs(30), || {
        b.goto(&format!("{base}/worklist"));
        let r = b.find(&row);
        (b.attr(&r, "data-state").as_deref() == Some("settled")).then_some(r)
    });
    let settled = settled.unwrap_or_else(|| {
        panic!(
            "the settlement never reached the worklist; page:\n{}",
            b.source()
        )
    });
    assert_eq!(
        b.attr(&settled, "data-settlement").as_deref(),
        Some("confirmed"),
        "{}",
        b.text(&settled)
    );
    assert!(b.text(&settled).contains("確定"), "{}", b.text(&settled));
    // The banner comes back online by itself too (the mode improves after its hold time).
    let online = wait(Duration::from_secs(10), || {
        (banner_mode(&b).as_deref() == Some("online")).then_some(())
    });
    assert!(online.is_some(), "banner: {:?}", banner_mode(&b));
    // The check answered "pending" in the outage got its final answer: listed as changed.
    let changed_css = format!("li.changed-answer[data-check-id='{pending_id}']");
    let changed = wait(Duration::from_secs(30), || {
        b.try_find(&changed_css).or_else(|| {
            b.goto(&format!("{base}/worklist"));
            None
        })
    })
    .unwrap_or_else(|| panic!("the completed check is not listed; page:\n{}", b.source()));
    assert_eq!(b.attr(&changed, "data-validity").as_deref(), Some("valid"));
    b.screenshot(&shots.join("07-worklist-settled.png"));
    b.click(&format!("{row} button[type='submit']"));
    let closed = b.find(&format!("{row}[data-state='closed']"));
    assert!(b.text(&closed).contains("対応済み"), "{}", b.text(&closed));
    b.screenshot(&shots.join("08-worklist-closed.png"));
    // Filtered to what staff must still act on, the closed record is gone; "all" shows it again.
    b.goto(&format!("{base}/worklist?show=act"));
    b.find("nav.filters strong[data-filter-show]");
    assert!(b.try_find(row.as_str()).is_none(), "{}", b.source());
    b.goto(&format!("{base}/worklist?show=all"));
    b.find(&format!("{row}[data-state='closed']"));

    // The printable procedure for the counter.
    b.click("nav a[href='/procedure']");
    b.find("article.procedure li");
    b.screenshot(&shots.join("09-procedure.png"));
    b.goto(&format!("{base}/worklist"));

    // Sign out: the pages are refused again, and the old cookie opens nothing.
    let old = s(&cookie["value"]).to_string();
    b.click("#sign-out");
    b.find("input[name='user']");
    b.goto(&format!("{base}/worklist"));
    b.find("input[name='user']");
    assert!(b.url().ends_with("/login"), "{}", b.url());
    let http = Raw::new(&base);
    let (status, location, _) = http.get("/worklist", Some(&old));
    assert_eq!((status, location.as_deref()), (303, Some("/login")));
    assert_eq!(http.get("/page/banner", Some(&old)).0, 401);
}

/// A plain HTTP client that follows no redirect and keeps no cookie.
struct Raw {
    client: reqwest::Client,
    rt: tokio::runtime::Runtime,
    base: String,
}

fn form_encode(pairs: &[(&str, &str)]) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                b' ' => "+".into(),
                b => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

impl Raw {
    fn new(base: &str) -> Raw {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let client = rt.block_on(async {
            reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("a client")
        });
        Raw {
            client,
            rt,
            base: base.to_string(),
        }
    }

    fn send(&self, req: reqwest::RequestBuilder) -> (u16, Option<String>, String, Vec<String>) {
        self.rt.block_on(async move {
            let r = req.send().await.expect("an answer");
            let status = r.status().as_u16();
            let location = r
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let cookies = r
                .headers()
                .get_all("set-cookie")
                .iter()
                .filter_map(|v| v.to_str().ok().map(str::to_string))
                .collect();
            (
                status,
                location,
                r.text().await.unwrap_or_default(),
                cookies,
            )
        })
    }

    fn get(&self, path: &str, session: Option<&str>) -> (u16, Option<String>, String) {
        let mut req = self.client.get(format!("{}{path}", self.base));
        if let Some(c) = session {
            req = req.header("cookie", format!("onshi_session={c}"));
        }
        let (s, l, t, _) = self.send(req);
        (s, l, t)
    }

    fn post_form(
        &self,
        path: &str,
        session: Option<&str>,
        pairs: &[(&str, &str)],
    ) -> (u16, Option<String>, String, Vec<String>) {
        let mut req = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form_encode(pairs));
        if let Some(c) = session {
            req = req.header("cookie", format!("onshi_session={c}"));
        }
        self.send(req)
    }
}

#[test]
fn the_page_refuses_without_a_session_or_its_csrf_token() {
    let t = TestDir::new("page-refusals");
    let (pki, registry, rec) = reconciler_with_registry(&t, &[FACILITY_A]);
    let data = t.join("edge");
    add_user(&data, "uketsuke", "reception");
    let edge = Edge::start(&t, EdgeOpts::new(FACILITY_A, &data, &pki, rec.addr));
    edge.wait_online();
    let http = Raw::new(&format!("http://{}", edge.http_addr));

    // Without a session every page sends the browser to sign in, and the banner is refused.
    for path in [
        "/",
        "/search",
        "/declare",
        "/worklist",
        "/declare/x/print",
        "/procedure",
    ] {
        let (status, location, _) = http.get(path, None);
        assert_eq!(
            (status, location.as_deref()),
            (303, Some("/login")),
            "{path}"
        );
    }
    assert_eq!(http.get("/page/banner", None).0, 401);
    let (status, _, login) = http.get("/login", None);
    assert_eq!(status, 200);
    assert!(
        login.contains("name=\"user\"") && login.contains("name=\"password\""),
        "{login}"
    );

    // A wrong password: the form again with the reason, no cookie.
    let (status, _, text, cookies) = http.post_form(
        "/login",
        None,
        &[("user", "uketsuke"), ("password", "not the password")],
    );
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("パスワードが違います"), "{text}");
    assert!(cookies.is_empty(), "{cookies:?}");

    // The right one: a strict, HttpOnly session cookie and a redirect to the page.
    let (status, location, _, cookies) = http.post_form(
        "/login",
        None,
        &[("user", "uketsuke"), ("password", PASSWORD)],
    );
    assert_eq!((status, location.as_deref()), (303, Some("/")));
    let set = cookies
        .iter()
        .find(|c| c.starts_with("onshi_session="))
        .expect("the session cookie");
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    let session = set
        .trim_start_matches("onshi_session=")
        .split(';')
        .next()
        .unwrap_or_default()
        .to_string();
    let (status, _, page) = http.get("/", Some(&session));
    assert_eq!(status, 200);
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("the form carries the CSRF token")
        .to_string();

    // A check posted without the token (or with another) records nothing.
    let q = registry.valid_insured();
    let card = [
        ("insurance_card.insurer_number", s(&q["insurer_number"])),
        ("insurance_card.symbol", s(&q["symbol"])),
        ("insurance_card.number", s(&q["number"])),
        ("insurance_card.branch", s(&q["branch"])),
        ("birth_date", s(&q["birth_date"])),
        ("service_date", TODAY),
    ];
    let before = edge.journal_checks();
    let forged = "0".repeat(csrf.len());
    for token in [None, Some(forged.as_str())] {
        let mut form = card.to_vec();
        form.extend(token.map(|t| ("csrf", t)));
        let (status, _, text, _) = http.post_form("/check", Some(&session), &form);
        assert_eq!(status, 403, "{text}");
        assert!(text.contains("csrf"), "{text}");
    }
    assert_eq!(edge.journal_checks(), before, "nothing was checked");

    // With it: the answer, with the API's validity; a bad field is named.
    let mut form = card.to_vec();
    form.push(("csrf", &csrf));
    let (status, _, text, _) = http.post_form("/check", Some(&session), &form);
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("data-validity=\"valid\""), "{text}");
    assert_eq!(edge.journal_checks(), before + 1);
    form[0].1 = "0613001";
    let (status, _, text, _) = http.post_form("/check", Some(&session), &form);
    assert_eq!(status, 400, "{text}");
    assert!(
        text.contains("data-error-field=\"insurance_card.insurer_number\""),
        "{text}"
    );

    // Signing out needs the token too; then the session opens nothing.
    let (status, _, _, _) = http.post_form("/logout", Some(&session), &[]);
    assert_eq!(status, 403);
    let (status, location, _, _) = http.post_form("/logout", Some(&session), &[("csrf", &csrf)]);
    assert_eq!((status, location.as_deref()), (303, Some("/login")));
    assert_eq!(http.get("/", Some(&session)).0, 303);
}
