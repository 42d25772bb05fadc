//! Outage mode across real processes (issue 3): the reconciler SIGKILLed while checks run, the
//! replica answering (`source: replica`) or the check queued (`pending`, `queued`) within the
//! deadline, deferred checks completing when the reconciler returns; the batch inquiry that fills
//! the replica; outage search over the replica and central search in a declared outage (refused
//! without one, rate-limited, logged); provisional patient-share records; the card reader adapter.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use onshi_tests::{
    Edge, EdgeOpts, FACILITY_A, Proc, TODAY, TestDir, card_check, edge_bin, era_date,
    reconciler_with_registry, to_hiragana, wait_until,
};
use serde_json::{Value, json};

/// The deadline the tests run edges with, and how much later than it an answer may come.
const DEADLINE: Duration = Duration::from_millis(1000);
const SLACK: Duration = Duration::from_millis(500);

fn time(v: &Value) -> DateTime<Utc> {
    let s = v.as_str().unwrap_or_else(|| panic!("not a time: {v}"));
    DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("not an RFC 3339 time ({e}): {s}"))
        .with_timezone(&Utc)
}

fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v}"))
}

/// The `POST /v1/batch` item for a period (an insurance-card check without its service date).
fn batch_item(q: &Value) -> Value {
    let mut c = card_check(q, TODAY);
    c.as_object_mut().expect("object").remove("service_date");
    c
}

/// Asserts an error answer naming `field` (status 400, any code, a message).
#[track_caller]
fn assert_field_error(answer: &(u16, Value), field: &str) {
    let (code, body) = answer;
    assert_eq!(
        *code, 400,
        "expected 400 naming {field}; got {code}: {body}"
    );
    assert_eq!(body["error"]["field"], field, "{body}");
    assert!(
        body["error"]["code"]
            .as_str()
            .is_some_and(|c| !c.is_empty()),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

/// Whether a status says the mode is `mode` for a reason containing `needle`.
fn mode_because(v: &Value, mode: &str, needle: &str) -> bool {
    v["mode"] == mode
        && v["reasons"].as_array().is_some_and(|r| {
            r.iter()
                .any(|r| r.as_str().is_some_and(|r| r.contains(needle)))
        })
}

/// The last mode change in a status.
fn last_change(v: &Value) -> Value {
    v["mode_changes"]
        .as_array()
        .and_then(|c| c.last())
        .cloned()
        .unwrap_or(Value::Null)
}

/// One answer a client thread got.
#[derive(Debug)]
struct Sent {
    at: Instant,
    person: String,
    status: u16,
    elapsed: Duration,
    json: Value,
}

#[test]
fn reconciler_killed_while_checks_run_answers_within_the_deadline_and_deferred_checks_complete() {
    let _serial = onshi_tests::serial();
    let t = TestDir::new("kill-reconciler");
    let (pki, reg, rec) = reconciler_with_registry(&t, &[FACILITY_A]);
    let mut opts = EdgeOpts::new(FACILITY_A, &t.join("edge"), &pki, rec.addr);
    opts.deadline_ms = Some(DEADLINE.as_millis() as u64);
    let edge = Edge::start(&t, opts);
    edge.wait_online();

    let people = reg.valid_people(0, 5);
    let (seen, unknown) = (&people[..4], people[4]);
    // The seen patients are checked online once: the replica learns them.
    let mut first_online = BTreeMap::new();
    for q in seen {
        let (code, v) = edge.post_check(&card_check(q, TODAY));
        assert_eq!(code, 200, "{v}");
        assert_eq!(
            (
                v["validity"].as_str(),
                v["source"].as_str(),
                v["state"].as_str()
            ),
            (Some("valid"), Some("online"), Some("answered")),
            "{v}"
        );
        first_online.insert(str_of(&q["person_id"]).to_string(), v);
    }
    let online_before = edge
        .metric("onshi_checks_total{source=\"online\"}")
        .expect("the online checks metric");

    // Client threads post checks of the seen patients, paced (10 a second each), for 6 s; the
    // reconciler is SIGKILLed once they are under way.
    const THREADS: usize = 6;
    let started = Instant::now();
    let run_until = started + Duration::from_secs(6);
    let mut rec = rec;
    let (sent, killed, killed_wall, offline_at, offline_status) = std::thread::scope(|s| {
        let workers: Vec<_> = (0..THREADS)
            .map(|i| {
                let http = edge.http.clone();
                s.spawn(move || {
                    let mut out = Vec::new();
                    let mut n = 0u32;
                    while Instant::now() < run_until {
                        let q = seen[(i + n as usize) % seen.len()];
                        let at = Instant::now();
                        let a = http.post_json("/v1/checks", &card_check(q, TODAY));
                        out.push(Sent {
                            at,
                            person: str_of(&q["person_id"]).to_string(),
                            status: a.status,
                            elapsed: a.elapsed,
                            json: a.json,
                        });
                        n += 1;
                        // Pacing, not synchronisation: the next request is due 100 ms after the last.
                        let due = at + Duration::from_millis(100);
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                    }
                    out
                })
            })
            .collect();
        // Kill once the threads have been answered online a few times.
        let under_way = wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
            let n = edge.metric("onshi_checks_total{source=\"online\"}")?;
            (n >= online_before + 2.0 * THREADS as f64).then_some(n)
        });
        assert!(
            under_way.is_some(),
            "the client threads get online answers; status {}",
            edge.status()
        );
        rec.kill9();
        let killed = Instant::now();
        let killed_wall = Utc::now();
        // Offline within 3 s of the kill (plus slack for a loaded test machine), with the cause.
        let offline = edge.wait_status("offline", Duration::from_secs(5), |v| {
            v["mode"] == "offline"
        });
        let offline_at = Instant::now();
        eprintln!("offline {:?} after the kill", offline_at - killed);
        let sent: Vec<Sent> = workers
            .into_iter()
            .flat_map(|w| w.join().expect("a client thread"))
            .collect();
        (sent, killed, killed_wall, offline_at, offline)
    });
    // (The mode may pass through `degraded` first, when answers miss the deadline.)
    let change = last_change(&offline_status);
    assert_eq!(change["to"], "offline", "{offline_status}");
    assert!(
        matches!(change["from"].as_str(), Some("online" | "degraded")),
        "{offline_status}"
    );
    assert!(
        change["cause"].as_str().is_some_and(|c| !c.is_empty()),
        "the change has a cause: {offline_status}"
    );
    assert!(
        offline_status["reasons"]
            .as_array()
            .is_some_and(|r| !r.is_empty()),
        "{offline_status}"
    );
    // The QUIC connection itself is given up by its idle timeout (3 s) too.
    let link_down = edge.wait_status("link not up", Duration::from_secs(5), |v| {
        v["link"]["state"] != "up" && v["mode"] == "offline"
    });
    eprintln!(
        "link {} {:?} after the kill",
        link_down["link"]["state"],
        killed.elapsed()
    );

    // Every request was answered, none later than the deadline + 0.5 s; the seen patients online
    // before the kill, from the replica after it, as of an online answer before the kill.
    assert!(
        sent.len() >= THREADS * 15,
        "the threads kept posting: {} requests",
        sent.len()
    );
    let slowest = sent.iter().map(|a| a.elapsed).max().unwrap_or_default();
    eprintln!(
        "{} requests over the kill; slowest answer {slowest:?}",
        sent.len()
    );
    let mut deferred = Vec::new();
    let (mut online, mut replica) = (0, 0);
    for a in &sent {
        assert_eq!(a.status, 200, "{}", a.json);
        assert!(
            a.elapsed <= DEADLINE + SLACK,
            "a request waited {:?} (deadline {DEADLINE:?}): {}",
            a.elapsed,
            a.json
        );
        assert_eq!(a.json["validity"], "valid", "{}", a.json);
        assert!(
            a.json["qualifications"]
                .as_array()
                .is_some_and(|q| q.iter().any(|q| q["person_id"] == a.person.as_str())),
            "{}",
            a.json
        );
        match a.json["source"].as_str() {
            Some("online") => {
                online += 1;
                assert!(
                    a.at < killed,
                    "an online answer to a request sent after the kill: {}",
                    a.json
                );
                assert_eq!(a.json["state"], "answered", "{}", a.json);
            }
            Some("replica") => {
                replica += 1;
                assert_eq!(a.json["state"], "deferred", "{}", a.json);
                let as_of = time(&a.json["as_of"]);
                assert!(
                    as_of >= time(&first_online[&a.person]["as_of"]) && as_of <= killed_wall,
                    "as_of is when the replica learnt it: {}",
                    a.json
                );
                deferred.push(a.json["check_id"].as_str().expect("check_id").to_string());
            }
            _ => panic!(
                "a seen patient answered neither online nor from the replica: {}",
                a.json
            ),
        }
    }
    assert!(
        online > 0 && replica > 0,
        "{online} online and {replica} replica answers"
    );
    let late: Vec<&Sent> = sent.iter().filter(|a| a.at > offline_at).collect();
    assert!(
        !late.is_empty() && late.iter().all(|a| a.json["source"] == "replica"),
        "after the link is known down, the replica answers"
    );

    // A patient the edge never saw: pending, queued, at once.
    let a = edge.post_check_answer(&card_check(unknown, TODAY));
    assert_eq!(a.status, 200, "{}", a.text);
    assert!(
        a.elapsed <= DEADLINE + SLACK,
        "answered after {:?}",
        a.elapsed
    );
    assert_eq!(
        (
            a.json["validity"].as_str(),
            a.json["source"].as_str(),
            a.json["state"].as_str()
        ),
        (Some("pending"), Some("queued"), Some("deferred")),
        "{}",
        a.text
    );
    assert_eq!(a.json["qualifications"], json!([]), "{}", a.text);
    let unknown_id = str_of(&a.json["check_id"]).to_string();
    deferred.push(unknown_id.clone());
    let queue = edge.queue();
    assert_eq!(
        queue["pending"],
        deferred.len(),
        "every deferred check is queued: {}",
        queue["pending"]
    );
    assert!(
        queue["oldest_pending_s"].is_number(),
        "{}",
        queue["oldest_pending_s"]
    );
    assert_eq!(edge.status()["queue"]["pending"], deferred.len());

    // The reconciler comes back on the same port: online again (after the hold time), every
    // deferred check completes, its record showing the final outcome, and the queue drains.
    let rec = rec.restart(&t);
    let back = edge.wait_status("online again", Duration::from_secs(20), |v| {
        v["mode"] == "online" && v["link"]["state"] == "up"
    });
    let change = last_change(&back);
    assert_eq!(
        (change["from"].as_str(), change["to"].as_str()),
        (Some("offline"), Some("online")),
        "{back}"
    );
    let completing = Instant::now();
    for id in &deferred {
        let left = Duration::from_secs(30)
            .saturating_sub(completing.elapsed())
            .max(Duration::from_millis(100));
        let r = edge.wait_check_state(id, "completed", left);
        assert_eq!(r["final"]["validity"], "valid", "{r}");
        assert!(r["final"]["completed_at"].is_string(), "{r}");
        assert_eq!(r["validity"], "valid", "the latest knowledge on top: {r}");
        assert_eq!(r["source"], "online", "{r}");
        assert_eq!(r["as_of"], r["final"]["completed_at"], "{r}");
        assert!(r["attempts"].as_u64().is_some_and(|n| n >= 2), "{r}");
        if *id == unknown_id {
            assert_eq!(
                r["answered"]["validity"], "pending",
                "what reception was told: {r}"
            );
            assert_eq!(r["answered"]["source"], "queued", "{r}");
            assert_eq!(r["changed"], true, "{r}");
            let quals = r["final"]["qualifications"]
                .as_array()
                .expect("final.qualifications");
            assert!(
                quals.iter().any(|q| q["person_id"] == unknown["person_id"]),
                "{r}"
            );
        } else {
            assert_eq!(r["answered"]["source"], "replica", "{r}");
            assert_eq!(r["changed"], false, "{r}");
        }
    }
    eprintln!(
        "{} deferred checks completed {:?} after the reconnect",
        deferred.len(),
        completing.elapsed()
    );
    let drained = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        let q = edge.queue();
        (q["pending"] == 0).then_some(q)
    })
    .unwrap_or_else(|| panic!("the queue drains: {}", edge.queue()));
    assert_eq!(drained["items"], json!([]), "{drained}");
    assert_eq!(edge.status()["queue"]["pending"], 0);
    // The unknown patient is now known: checked again, online.
    let (code, v) = edge.post_check(&card_check(unknown, TODAY));
    assert_eq!(code, 200, "{v}");
    assert_eq!(
        (v["validity"].as_str(), v["source"].as_str()),
        (Some("valid"), Some("online")),
        "{v}"
    );
    drop(rec);
}

#[test]
fn batch_prefetch_fills_the_replica_for_offline_checks_and_search() {
    let _serial = onshi_tests::serial();
    let t = TestDir::new("batch");
    let (pki, reg, rec) = reconciler_with_registry(&t, &[FACILITY_A]);
    let mut opts = EdgeOpts::new(FACILITY_A, &t.join("edge"), &pki, rec.addr);
    opts.deadline_ms = Some(DEADLINE.as_millis() as u64);
    let edge = Edge::start(&t, opts);
    edge.wait_online();
    assert_eq!(
        edge.status()["replica"]["people"],
        0,
        "a new edge's replica is empty"
    );

    // Tomorrow's reservations: eight valid patients and one whose card was replaced.
    let (lost, newer) = reg.lost_with_newer();
    let people: Vec<&Value> = reg
        .valid_people(0, 12)
        .into_iter()
        .filter(|q| q["person_id"] != lost["person_id"])
        .take(10)
        .collect();
    let (reserved, outsider, never_seen) = (&people[..8], people[8], people[9]);
    let mut items: Vec<Value> = reserved.iter().map(|q| batch_item(q)).collect();
    items.push(batch_item(lost));
    let (code, batch) = edge.post(
        "/v1/batch",
        &json!({"service_date": TODAY, "checks": items}),
    );
    assert_eq!(code, 200, "{batch}");
    assert_eq!(batch["total"], 9, "{batch}");
    assert_eq!(batch["counts"]["valid"], 8, "{batch}");
    assert_eq!(batch["counts"]["invalid_newer_exists"], 1, "{batch}");
    let results = batch["results"].as_array().expect("results");
    for (i, q) in reserved.iter().chain([&lost]).enumerate() {
        assert_eq!(results[i]["index"], i, "{batch}");
        assert_eq!(
            results[i]["person_id"], q["person_id"],
            "result {i}: {batch}"
        );
    }
    assert!(
        results[8]["qualifications"]
            .as_array()
            .is_some_and(|qs| qs.iter().any(|p| p["acquired_on"] == newer["acquired_on"])),
        "{batch}"
    );
    assert!(
        batch["replica_people"].as_u64().is_some_and(|n| n >= 9),
        "{batch}"
    );
    let replica_people = edge.status()["replica"]["people"].clone();
    assert_eq!(replica_people, batch["replica_people"]);
    assert_eq!(edge.journal_checks(), 0, "a batch inquiry is not a check");
    // Bad input names the item.
    let bad = edge.post("/v1/batch", &json!({"service_date": TODAY, "checks": [batch_item(reserved[0]), {"birth_date": "1980-01-01"}]}));
    assert_eq!(bad.0, 400, "{}", bad.1);
    assert!(
        bad.1["error"]["field"]
            .as_str()
            .is_some_and(|f| f.starts_with("checks[1]")),
        "{}",
        bad.1
    );

    let mut rec = rec;
    rec.kill9();
    edge.wait_mode("offline", Duration::from_secs(10));
    let (code, refused) = edge.post(
        "/v1/batch",
        &json!({"service_date": TODAY, "checks": [batch_item(outsider)]}),
    );
    assert_eq!(code, 503, "{refused}");
    assert_eq!(refused["error"]["code"], "link_down", "{refused}");
    assert_eq!(
        edge.status()["replica"]["people"],
        replica_people,
        "nothing stored from a refused batch"
    );

    // Offline, the prefetched patients are answered from the replica; the others are queued.
    for (q, validity) in reserved
        .iter()
        .map(|q| (*q, "valid"))
        .chain([(lost, "invalid_newer_exists")])
    {
        let a = edge.post_check_answer(&card_check(q, TODAY));
        assert_eq!(a.status, 200, "{}", a.text);
        assert!(
            a.elapsed <= DEADLINE + SLACK,
            "answered after {:?}",
            a.elapsed
        );
        assert_eq!(a.json["source"], "replica", "{}", a.text);
        assert_eq!(a.json["validity"], validity, "{}", a.text);
        assert!(a.json["as_of"].is_string(), "{}", a.text);
    }
    let (code, v) = edge.post_check(&card_check(outsider, TODAY));
    assert_eq!(code, 200, "{v}");
    assert_eq!(
        (v["validity"].as_str(), v["source"].as_str()),
        (Some("pending"), Some("queued")),
        "{v}"
    );

    // Outage search over the replica: the reading typed in hiragana, the birth date as an era date.
    let target = reserved[0];
    let query = json!({
        "name": to_hiragana(str_of(&target["name_kana"])),
        "birth_date": era_date(str_of(&target["birth_date"]), false),
        "sex": target["sex"],
    });
    let (code, found) = edge.post("/v1/search", &query);
    assert_eq!(code, 200, "{query} → {found}");
    assert_eq!(found["source"], "replica", "{found}");
    assert!(found["as_of"].is_string(), "{found}");
    let best = &found["candidates"][0];
    assert_eq!(
        best["person_id"], target["person_id"],
        "the prefetched person comes first for {query}: {found}"
    );
    assert!(best["score"].is_number(), "{found}");
    assert!(
        best["reasons"].as_array().is_some_and(|r| !r.is_empty()),
        "the replica says why: {found}"
    );
    assert_eq!(
        best["qualification"]["person_id"], target["person_id"],
        "{found}"
    );
    // The kanji name without its space and a compact birth date find the same person.
    let query = json!({"name": str_of(&target["name"]).replace(['　', ' '], ""), "birth_date": str_of(&target["birth_date"]).replace('-', ""), "sex": target["sex"]});
    let (code, found) = edge.post("/v1/search", &query);
    assert_eq!(code, 200, "{found}");
    assert_eq!(
        found["candidates"][0]["person_id"], target["person_id"],
        "{query} → {found}"
    );
    // Bad searches name the field.
    assert_field_error(
        &edge.post(
            "/v1/search",
            &json!({"birth_date": "1980-01-01", "sex": "male"}),
        ),
        "name",
    );
    assert_field_error(
        &edge.post(
            "/v1/search",
            &json!({"name": "やまだ", "birth_date": "昭和64年1月8日", "sex": "male"}),
        ),
        "birth_date",
    );

    // An outage declared while the link is down is recorded here first, and delivered to the
    // reconciler once it is back; once the centre grants it, central search works.
    let (code, declared) = edge.post(
        "/v1/outage",
        &json!({"active": true, "reason": "card reader broken"}),
    );
    assert_eq!(code, 200, "{declared}");
    assert_eq!(
        (declared["active"].as_bool(), declared["central"].as_bool()),
        (Some(true), Some(false)),
        "{declared}"
    );
    assert!(declared["note"].is_string(), "{declared}");
    let rec = rec.restart(&t);
    edge.wait_online();
    let delivered = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        let (_, o) = edge.get("/v1/outage");
        (o["central"] == true).then_some(o)
    });
    let delivered = delivered.unwrap_or_else(|| {
        panic!(
            "the outage declaration reaches the reconciler after the reconnect: {}",
            edge.get("/v1/outage").1
        )
    });
    assert_eq!(delivered["active"], true, "{delivered}");
    assert_eq!(
        delivered["granted"], false,
        "a request, not a grant: {delivered}"
    );
    let said = rec
        .proc
        .wait_stderr(&["outage requested"], Duration::from_secs(5));
    assert!(
        said.is_some(),
        "the reconciler logs the declaration:\n{}",
        rec.proc.stderr_tail(20)
    );
    let query = json!({"name": never_seen["name"], "birth_date": never_seen["birth_date"], "sex": never_seen["sex"]});
    let (code, refused) = edge.post("/v1/search", &query);
    assert_eq!(
        (code, refused["source"].as_str()),
        (200, Some("replica")),
        "{refused}"
    );
    assert!(
        str_of(&refused["note"]).contains("not granted"),
        "{refused}"
    );
    let (code, out, err) = rec.command(&["outage", "list"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(FACILITY_A) && out.contains("card reader broken"),
        "the centre sees the request:\n{out}"
    );
    rec.grant(FACILITY_A);
    let (code, found) = edge.post("/v1/search", &query);
    assert_eq!(code, 200, "{found}");
    assert_eq!(found["source"], "online", "{found}");
    assert_eq!(
        found["candidates"][0]["person_id"], never_seen["person_id"],
        "{found}"
    );
}

#[test]
fn central_search_only_when_the_centre_grants_it_rate_limited_and_logged() {
    let _serial = onshi_tests::serial();
    let t = TestDir::new("central-search");
    let (pki, reg, rec) = reconciler_with_registry(&t, &[FACILITY_A]);
    let edge = Edge::start(
        &t,
        EdgeOpts::new(FACILITY_A, &t.join("edge"), &pki, rec.addr),
    );
    edge.wait_online();
    // A person this edge has never seen (its replica is empty).
    let target = reg.valid_people(3, 1)[0];
    let query =
        json!({"name": target["name"], "birth_date": target["birth_date"], "sex": target["sex"]});

    // Online without a grant: the replica, with a note.
    let (code, v) = edge.post("/v1/search", &query);
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["source"], "replica", "{v}");
    assert!(str_of(&v["note"]).contains("outage"), "{v}");
    assert_eq!(v["candidates"], json!([]), "{v}");
    let (code, v) = edge.get("/v1/outage");
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["active"], false, "{v}");
    assert_field_error(&edge.post("/v1/outage", &json!({"active": true})), "reason");
    assert_field_error(&edge.post("/v1/outage", &json!({"reason": "x"})), "active");

    // Declared: a request the centre records; the facility's own declaration does not open
    // central search.
    let (code, declared) = edge.post(
        "/v1/outage",
        &json!({"active": true, "reason": "card reader broken"}),
    );
    assert_eq!(code, 200, "{declared}");
    assert_eq!(
        (
            declared["active"].as_bool(),
            declared["central"].as_bool(),
            declared["granted"].as_bool()
        ),
        (Some(true), Some(true), Some(false)),
        "{declared}"
    );
    let (code, v) = edge.post("/v1/search", &query);
    assert_eq!((code, v["source"].as_str()), (200, Some("replica")), "{v}");
    assert!(str_of(&v["note"]).contains("not granted"), "{v}");
    // The centre grants it: the reconciler searches the registry and finds the person.
    rec.grant(FACILITY_A);
    let (code, declared) = edge.post(
        "/v1/outage",
        &json!({"active": true, "reason": "card reader broken"}),
    );
    assert_eq!(code, 200, "{declared}");
    assert_eq!(declared["granted"], true, "{declared}");
    assert!(
        declared["since"].is_string() && declared["until"].is_string(),
        "{declared}"
    );
    let (_, v) = edge.get("/v1/outage");
    assert_eq!(
        (v["active"].as_bool(), v["reason"].as_str()),
        (Some(true), Some("card reader broken")),
        "{v}"
    );
    let log_from = rec.proc.stderr().len();
    let (code, found) = edge.post("/v1/search", &query);
    assert_eq!(code, 200, "{found}");
    assert_eq!(found["source"], "online", "{found}");
    assert!(found["as_of"].is_string(), "{found}");
    assert_eq!(
        found["candidates"][0]["person_id"], target["person_id"],
        "{query} → {found}"
    );
    assert_eq!(
        found["candidates"][0]["qualification"]["person_id"], target["person_id"],
        "{found}"
    );
    // The centre's answer says why, field by field, and how far to trust it, as the replica's does.
    let reasons = found["candidates"][0]["reasons"]
        .as_array()
        .unwrap_or_else(|| panic!("central candidates carry reasons: {found}"));
    assert!(
        reasons
            .iter()
            .any(|r| r["field"] == "birth_date" && r["match"] == "exact"),
        "{found}"
    );
    assert!(
        matches!(
            found["confidence"].as_str(),
            Some("high" | "medium" | "low")
        ),
        "{found}"
    );
    let logged = wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
        let log = rec.proc.stderr();
        log.get(log_from..)?
            .lines()
            .find(|l| {
                l.contains("central search") && l.contains(FACILITY_A) && l.contains("candidates")
            })
            .map(str::to_string)
    });
    let logged = logged.unwrap_or_else(|| {
        panic!(
            "the reconciler logs each central search with the facility and count:\n{}",
            rec.proc.stderr_tail(20)
        )
    });
    eprintln!("the reconciler said: {logged}");

    // Ended by the centre: central search is refused again (the replica answers).
    let (code, out, err) = rec.command(&["outage", "end", "--facility", FACILITY_A]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, ended) = edge.post("/v1/outage", &json!({"active": false}));
    assert_eq!(code, 200, "{ended}");
    assert_eq!(
        (ended["active"].as_bool(), ended["central"].as_bool()),
        (Some(false), Some(true)),
        "{ended}"
    );
    let (code, v) = edge.post("/v1/search", &query);
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["source"], "replica", "{v}");
    assert!(str_of(&v["note"]).contains("outage"), "{v}");
    assert_eq!(v["candidates"], json!([]), "{v}");

    // Granted again (for the facility's whole prefecture, a disaster area): quick central
    // searches are rate-limited (20 at once, then 60 a minute); past the limit the edge falls
    // back to the replica and says why.
    let (code, out, err) = rec.command(&["outage", "grant", "--prefecture", &FACILITY_A[..2]]);
    assert_eq!(code, 0, "{out}{err}");
    let burst = Instant::now();
    let mut central = 0;
    let limited = (0..80).find_map(|_| {
        let (code, v) = edge.post("/v1/search", &query);
        assert_eq!(code, 200, "{v}");
        if v["source"] == "online" {
            central += 1;
            None
        } else {
            Some(v)
        }
    });
    let limited =
        limited.unwrap_or_else(|| panic!("80 quick central searches were never rate-limited"));
    let took = burst.elapsed();
    assert_eq!(limited["source"], "replica", "{limited}");
    assert!(
        str_of(&limited["note"]).contains("rate_limited"),
        "{limited}"
    );
    eprintln!("rate-limited after {central} central searches in {took:?}");
    assert!(
        central >= 15 && central as u64 <= 21 + took.as_secs(),
        "{central} central searches in {took:?} before the limit"
    );
    assert!(
        rec.proc
            .wait_stderr(&["rate-limited"], Duration::from_secs(5))
            .is_some(),
        "{}",
        rec.proc.stderr_tail(20)
    );
    let log = rec.proc.stderr();
    let searches = log
        .lines()
        .filter(|l| l.contains("central search") && l.contains("candidates"))
        .count();
    assert!(
        searches > central,
        "each central lookup is logged: {searches} lines for {} searches",
        central + 1
    );
}

/// `POST /v1/provisional`, which must answer 201 with a record id and an explanation.
#[track_caller]
fn provisional(edge: &Edge, body: Value) -> Value {
    let (code, v) = edge.post("/v1/provisional", &body);
    assert_eq!(code, 201, "{body} → {v}");
    assert!(
        v["record_id"].as_str().is_some_and(|id| !id.is_empty()),
        "{v}"
    );
    assert!(
        v["explanation"].as_str().is_some_and(|e| !e.is_empty()),
        "{v}"
    );
    v
}

#[test]
fn provisional_records_share_basis_rounding_validation_and_durability() {
    let _serial = onshi_tests::serial();
    let t = TestDir::new("provisional");
    let (pki, reg, rec) = reconciler_with_registry(&t, &[FACILITY_A]);
    let edge = Edge::start(
        &t,
        EdgeOpts::new(FACILITY_A, &t.join("edge"), &pki, rec.addr),
    );
    edge.wait_online();
    let declared = |birth: &str| json!({"name": "山田　花子", "name_kana": "ヤマダ　ハナコ", "birth_date": birth, "sex": "female"});
    let mut records = Vec::new();

    // No person: the age rule on the service date; collected_yen rounds to 10 yen, 5 yen up.
    for (birth, total, share, rule, collected) in [
        ("1990-05-05", 1050, 30, "school_age_to_69", 320),
        ("1990-05-05", 1049, 30, "school_age_to_69", 310),
        ("2022-01-01", 1234, 20, "preschool", 250),
        ("1955-01-15", 4321, 20, "age_70_to_74", 860),
        ("1950-01-01", 9999, 10, "age_75_plus", 1000),
    ] {
        let v = provisional(
            &edge,
            json!({"declared": declared(birth), "service_date": TODAY, "total_fee_yen": total}),
        );
        assert_eq!(
            (v["share_percent"].as_u64(), v["collected_yen"].as_u64()),
            (Some(share), Some(collected)),
            "{birth}, ¥{total}: {v}"
        );
        assert_eq!(
            (v["basis"].as_str(), v["rule"].as_str()),
            (Some("age_rule"), Some(rule)),
            "{v}"
        );
        records.push(v);
    }
    // An era birth date works as well.
    let v = provisional(
        &edge,
        json!({"declared": declared(&era_date("1990-05-05", false)), "service_date": TODAY, "total_fee_yen": 1000}),
    );
    assert_eq!(
        (v["share_percent"].as_u64(), v["collected_yen"].as_u64()),
        (Some(30), Some(300)),
        "{v}"
    );
    records.push(v);

    // The declared share wins over the age rule.
    let mut d = declared("1950-01-01");
    d["share_percent"] = json!(30);
    let v = provisional(
        &edge,
        json!({"declared": d, "service_date": TODAY, "total_fee_yen": 2000}),
    );
    assert_eq!(
        (
            v["share_percent"].as_u64(),
            v["collected_yen"].as_u64(),
            v["basis"].as_str()
        ),
        (Some(30), Some(600), Some("declared")),
        "{v}"
    );
    assert_eq!(v["rule"], Value::Null, "{v}");
    records.push(v);

    // A person the replica knows (checked online before): the replica's share.
    let known = reg.valid_people(0, 1)[0];
    let (code, c) = edge.post_check(&card_check(known, TODAY));
    assert_eq!((code, c["source"].as_str()), (200, Some("online")), "{c}");
    let body = json!({
        "declared": {"name": known["name"], "birth_date": known["birth_date"], "sex": known["sex"]},
        "person_id": known["person_id"], "service_date": TODAY, "total_fee_yen": 3000,
    });
    let v = provisional(&edge, body);
    assert_eq!(v["basis"], "replica", "{v}");
    assert_eq!(v["share_percent"], known["share_percent"], "{v}");
    assert_eq!(v["person_id"], known["person_id"], "{v}");
    records.push(v);

    // Bad input names the field, and nothing is recorded.
    let recorded = edge.status()["journal"]["provisional"].clone();
    assert_eq!(recorded, records.len(), "status counts the records");
    let ok =
        json!({"declared": declared("1990-05-05"), "service_date": TODAY, "total_fee_yen": 1000});
    let with = |path: &[&str], value: Value| {
        let mut b = ok.clone();
        let mut at = &mut b;
        for p in &path[..path.len() - 1] {
            at = &mut at[*p];
        }
        at[path[path.len() - 1]] = value;
        b
    };
    let without = |path: &[&str]| {
        let mut b = ok.clone();
        let mut at = &mut b;
        for p in &path[..path.len() - 1] {
            at = &mut at[*p];
        }
        at.as_object_mut()
            .expect("object")
            .remove(path[path.len() - 1]);
        b
    };
    for (body, field) in [
        (
            with(&["declared", "birth_date"], json!("1990-02-30")),
            "declared.birth_date",
        ),
        (
            with(&["declared", "birth_date"], json!("2030-01-01")),
            "declared.birth_date",
        ),
        (without(&["declared", "birth_date"]), "declared.birth_date"),
        (with(&["total_fee_yen"], json!(-10)), "total_fee_yen"),
        (with(&["total_fee_yen"], json!("千円")), "total_fee_yen"),
        (with(&["total_fee_yen"], json!(1.5)), "total_fee_yen"),
        (
            with(&["total_fee_yen"], json!(100_000_000)),
            "total_fee_yen",
        ),
        (without(&["total_fee_yen"]), "total_fee_yen"),
        (
            with(&["declared", "share_percent"], json!(25)),
            "declared.share_percent",
        ),
        (
            with(&["declared", "share_percent"], json!(110)),
            "declared.share_percent",
        ),
        (with(&["declared", "sex"], json!("x")), "declared.sex"),
        (without(&["declared", "name"]), "declared.name"),
        (with(&["service_date"], json!("2026-04-31")), "service_date"),
    ] {
        assert_field_error(&edge.post("/v1/provisional", &body), field);
    }
    assert_eq!(
        edge.status()["journal"]["provisional"],
        recorded,
        "refused requests are not recorded"
    );
    let (code, missing) = edge.get("/v1/provisional/no-such-record");
    assert_eq!(
        (code, missing["error"]["code"].as_str()),
        (404, Some("not_found")),
        "{missing}"
    );

    // The queue lists every record with what was collected.
    let total: u64 = records
        .iter()
        .map(|r| r["collected_yen"].as_u64().expect("collected_yen"))
        .sum();
    let check_queue = |edge: &Edge| {
        let q = edge.queue();
        assert_eq!(q["provisional_yen"], total, "{q}");
        assert_eq!(q["pending"], records.len(), "{q}");
        for r in &records {
            let item = q["items"]
                .as_array()
                .and_then(|items| items.iter().find(|i| i["id"] == r["record_id"]));
            let item = item
                .unwrap_or_else(|| panic!("record {} is not in the queue: {q}", r["record_id"]));
            assert_eq!(item["kind"], "provisional", "{item}");
            assert_eq!(item["collected_yen"], r["collected_yen"], "{item}");
            assert!(
                item["state"].is_string() && item["created_at"].is_string(),
                "{item}"
            );
        }
        let s = edge.status();
        assert_eq!(s["queue"]["provisional_yen"], total, "{s}");
    };
    check_queue(&edge);

    // SIGKILL, and restart under another policy: every record reads back as answered, the queue
    // still lists them; new records follow the new policy.
    let mut edge = edge;
    edge.kill9();
    let mut opts = edge.opts.clone();
    opts.unidentified_full_fee = Some(true);
    opts.share_70_74 = Some(30);
    opts.share_75_plus = Some(20);
    drop(edge);
    let edge = Edge::start(&t, opts);
    for r in &records {
        let (code, stored) = edge.get(&format!("/v1/provisional/{}", str_of(&r["record_id"])));
        assert_eq!(code, 200, "{stored}");
        assert_eq!(&stored, r, "a provisional record changed across SIGKILL");
    }
    check_queue(&edge);
    let out = edge.cli(&["queue", "--json"]);
    assert!(
        out.status.success(),
        "onshi-edge queue --json: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let q: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(
        (q["pending"].as_u64(), q["provisional_yen"].as_u64()),
        (Some(records.len() as u64), Some(total)),
        "{q}"
    );
    let out = edge.cli(&["queue"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains(&total.to_string()) && text.contains("provisional"),
        "onshi-edge queue:\n{text}"
    );

    let v = provisional(
        &edge,
        json!({"declared": declared("1990-05-05"), "service_date": TODAY, "total_fee_yen": 1234}),
    );
    assert_eq!(
        (
            v["share_percent"].as_u64(),
            v["collected_yen"].as_u64(),
            v["basis"].as_str()
        ),
        (Some(100), Some(1230), Some("unidentified_full_fee")),
        "{v}"
    );
    // Naming the insurer is enough not to be "unidentified": the configured 70–74 and 75+ shares.
    for (birth, share) in [("1955-01-15", 30), ("1950-01-01", 20)] {
        let mut d = declared(birth);
        d["insurer_name"] = json!("全国健康保険協会");
        let v = provisional(
            &edge,
            json!({"declared": d, "service_date": TODAY, "total_fee_yen": 1000}),
        );
        assert_eq!(
            (v["share_percent"].as_u64(), v["basis"].as_str()),
            (Some(share), Some("age_rule")),
            "{v}"
        );
    }
    drop(rec);
}

#[test]
fn card_reader_heartbeats_faults_and_cards() {
    let _serial = onshi_tests::serial();
    let t = TestDir::new("reader");
    let (pki, reg, rec) = reconciler_with_registry(&t, &[FACILITY_A]);
    let mut opts = EdgeOpts::new(FACILITY_A, &t.join("edge"), &pki, rec.addr);
    opts.reader_timeout_ms = Some(500);
    let edge = Edge::start(&t, opts);
    let status = edge.wait_online();
    assert_eq!(
        status["reader"]["state"], "none",
        "no reader yet is not a fault: {status}"
    );

    // Three heartbeats, then silence: the reader is down, the mode degraded, with the reason.
    let out = edge.cli(&[
        "reader-sim",
        "--reader-id",
        "R1",
        "--count",
        "3",
        "--every-ms",
        "100",
    ]);
    assert!(
        out.status.success(),
        "reader-sim: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = edge.wait_status("degraded: no heartbeat", Duration::from_secs(5), |v| {
        mode_because(v, "degraded", "no heartbeat")
    });
    assert_eq!(s["reader"]["state"], "down", "{s}");
    assert!(
        str_of(&s["reader"]["reason"]).contains("no heartbeat"),
        "{s}"
    );
    assert_eq!(s["link"]["state"], "up", "{s}");
    let change = last_change(&s);
    assert_eq!(change["to"], "degraded", "{s}");
    assert!(str_of(&change["cause"]).contains("no heartbeat"), "{s}");

    // A reader that reports a fault: degraded with its words.
    let out = edge.cli(&[
        "reader-sim",
        "--reader-id",
        "R1",
        "--count",
        "1",
        "--fault",
        "face camera error",
    ]);
    assert!(
        out.status.success(),
        "reader-sim --fault: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = edge.wait_status("degraded: face camera error", Duration::from_secs(5), |v| {
        mode_because(v, "degraded", "face camera error")
    });
    assert!(
        str_of(&s["reader"]["reason"]).contains("face camera error"),
        "{s}"
    );

    // A card presented through the reader: checked online (the link is up).
    let carded = reg.with_card_id();
    for verified in ["face", "pin"] {
        let out = edge.cli(&[
            "reader-sim",
            "--reader-id",
            "R1",
            "--card",
            str_of(&carded["card_id"]),
            "--verified",
            verified,
        ]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "reader-sim --card: {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_str(text.trim()).unwrap_or_else(|e| {
            panic!("reader-sim --card prints the answer as JSON ({e}): {text}")
        });
        assert_eq!(
            (
                v["validity"].as_str(),
                v["source"].as_str(),
                v["verified"].as_str()
            ),
            (Some("valid"), Some("online"), Some(verified)),
            "{v}"
        );
        assert!(
            v["qualifications"]
                .as_array()
                .is_some_and(|q| q.iter().any(|q| q["person_id"] == carded["person_id"])),
            "{v}"
        );
        let (code, stored) = edge.get(&format!("/v1/checks/{}", str_of(&v["check_id"])));
        assert_eq!(
            (code, stored["request"]["card_id"].clone()),
            (200, carded["card_id"].clone()),
            "{stored}"
        );
    }
    let out = edge.cli(&[
        "reader-sim",
        "--card",
        str_of(&carded["card_id"]),
        "--verified",
        "none",
    ]);
    assert!(
        !out.status.success(),
        "an unverified holder is refused: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert_eq!(v["error"]["field"], "verified", "{v}");

    // A working reader again: heartbeats bring the mode back online after the hold time.
    let mut cmd = std::process::Command::new(edge_bin());
    cmd.args([
        "reader-sim",
        "--reader-id",
        "R1",
        "--every-ms",
        "100",
        "--http",
        &edge.http_addr.to_string(),
    ]);
    let mut sim = Proc::spawn("reader-sim", cmd, t.path());
    let s = edge.wait_status("online with the reader up", Duration::from_secs(5), |v| {
        v["mode"] == "online" && v["reader"]["state"] == "up"
    });
    assert_eq!(s["reasons"], json!([]), "{s}");
    sim.kill9();
    edge.wait_status(
        "degraded again once the reader is silent",
        Duration::from_secs(5),
        |v| mode_because(v, "degraded", "no heartbeat"),
    );
    drop(rec);
}

/// Issue 17 at the edge: `POST /v1/search` over the replica answers with a `confidence` and each
/// candidate's `reasons` (`{"field","match"}`), picks each candidate's qualification on the
/// query's `service_date` (today when absent: the current insurer; a past date: the insurer of
/// then), and refuses an implausible `service_date` naming the field.
#[test]
fn replica_search_says_its_confidence_and_reasons_and_shows_the_insurer_of_the_service_date() {
    let _serial = onshi_tests::serial();
    let t = TestDir::new("search-service-date");
    let (pki, reg, rec) = reconciler_with_registry(&t, &[FACILITY_A]);
    let edge = Edge::start(
        &t,
        EdgeOpts::new(FACILITY_A, &t.join("edge"), &pki, rec.addr),
    );
    edge.wait_online();
    // A person who changed insurer recently enough that a visit under the old one may still be
    // confirmed (service dates go 36 months back from the edge's today).
    let today = chrono::Local::now().date_naive();
    let earliest = (today - chrono::Months::new(35)).to_string();
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    let (old, new) = reg
        .periods
        .iter()
        .filter(|q| q["loss_reason"] == "joined_other_insurance" && s(&q["lost_on"]) > earliest)
        .find_map(|q| {
            let new = reg.periods.iter().find(|p| {
                p["person_id"] == q["person_id"]
                    && p["lost_on"].is_null()
                    && p["insurer_number"] != q["insurer_number"]
                    && s(&p["acquired_on"]) >= s(&q["lost_on"])
            })?;
            Some((q, new))
        })
        .expect("the standard registry has a recent change of insurer");
    let lost_on = chrono::NaiveDate::parse_from_str(&s(&old["lost_on"]), "%Y-%m-%d").expect("date");
    let past = (lost_on - chrono::Days::new(1)).to_string();
    assert!(past >= s(&old["acquired_on"]) && past >= earliest, "{old}");
    // The replica learns both periods from a batch inquiry with the old card.
    let (code, batch) = edge.post(
        "/v1/batch",
        &json!({"service_date": TODAY, "checks": [batch_item(old)]}),
    );
    assert_eq!(code, 200, "{batch}");

    let query = json!({"name": new["name"], "birth_date": new["birth_date"], "sex": new["sex"]});
    let (code, found) = edge.post("/v1/search", &query);
    assert_eq!(code, 200, "{found}");
    assert_eq!(found["source"], "replica", "{found}");
    let best = &found["candidates"][0];
    assert_eq!(best["person_id"], new["person_id"], "{found}");
    assert_eq!(found["confidence"], "high", "an exact match: {found}");
    let reasons = best["reasons"].as_array().expect("reasons");
    for (field, want) in [
        ("family_name", "exact"),
        ("given_name", "exact"),
        ("birth_date", "exact"),
        ("sex", "same"),
    ] {
        assert!(
            reasons.contains(&json!({"field": field, "match": want})),
            "{field} {want}: {found}"
        );
    }
    assert_eq!(
        best["qualification"]["insurer_number"], new["insurer_number"],
        "without a service date, today's insurer: {found}"
    );

    // A visit before the change: the insurer of then.
    let mut on_past = query.clone();
    on_past["service_date"] = past.clone().into();
    let (code, found) = edge.post("/v1/search", &on_past);
    assert_eq!(code, 200, "{found}");
    assert_eq!(
        found["candidates"][0]["person_id"], new["person_id"],
        "{found}"
    );
    assert_eq!(
        found["candidates"][0]["qualification"]["insurer_number"], old["insurer_number"],
        "on {past}, the old insurer: {found}"
    );
    assert_eq!(
        found["candidates"][0]["qualification"]["acquired_on"], old["acquired_on"],
        "{found}"
    );

    // Only the given name in kana, a digit of the birth date slipped: found, but not high.
    let kana = s(&new["name_kana"]);
    let given = kana.split('\u{3000}').nth(1).unwrap_or(&kana).to_string();
    let birth = s(&new["birth_date"]);
    let slipped = ('1'..='8')
        .map(|d| format!("{}{d}", &birth[..9]))
        .find(|x| *x != birth && chrono::NaiveDate::parse_from_str(x, "%Y-%m-%d").is_ok())
        .expect("a date one digit away");
    let weak = json!({"name_kana": to_hiragana(&given), "birth_date": slipped, "sex": new["sex"]});
    let (code, found) = edge.post("/v1/search", &weak);
    assert_eq!(code, 200, "{found}");
    assert_ne!(found["confidence"], "high", "{weak} → {found}");
    assert!(
        found["confidence"] == "low" || found["confidence"] == "medium",
        "{found}"
    );

    // Implausible service dates are refused, naming the field.
    for bad in ["2000-01-01", "2099-01-01", "2025-02-30"] {
        let mut q = query.clone();
        q["service_date"] = bad.into();
        assert_field_error(&edge.post("/v1/search", &q), "service_date");
    }
    drop(rec);
}
