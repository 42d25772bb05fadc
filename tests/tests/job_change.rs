//! Issue 16, the job-change lag across real processes: a patient left his employer's health
//! insurance union 20 days ago and 協会けんぽ has not registered him yet. During an outage the
//! edge records two provisional records for him (two visits); synced, both settle
//! `insurer_unknown` (不詳請求) and staff close one (filed as insurer unknown). Then the new
//! insurer's line is imported; the reconciler revisits both: the open one shows the revised
//! settlement (`insurer_changed`, the new insurer's numbers) and that it changed, the closed one
//! shows as an item to act on again (API `revised_after_close`, the page's 要対応 list) until
//! staff close it again. The reconciler's log names the revisions by id and kind only.
//!
//! The new line is imported while the reconciler serves (`onshi-reconciler import` on its data
//! directory goes through its admin socket): its follower sees the change feed and revisits, and
//! the revision reaches the edge over the live link.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use onshi_tests::{
    Edge, EdgeOpts, FACILITY_A, Pki, Reconciler, Registry, TODAY, TestDir, add_user, runtime,
    shift_date, wait_until,
};
use serde_json::{Value, json};

const PASSWORD: &str = "reception counter 1";

/// The harness's tests run on `TODAY` (2026-04-01), whatever the date: the horizon must reach it.
const REVISIT_DAYS: &str = "3650";

/// A registry line of 転職 太郎; `over` replaces fields. Insurer numbers carry their check digits
/// (06130017 霞が関健康保険組合, 01130012 全国健康保険協会東京支部).
fn line(over: Value) -> Value {
    let mut v = json!({"person_id":"PJOBCHANGE01","card_id":null,"insurer_number":"06130017",
        "insurer_name":"霞が関健康保険組合","card_class":"01","symbol":"123","number":"70001","branch":"00",
        "relationship":"insured","name":"転職　太郎","name_kana":"テンショク　タロウ","sex":"male",
        "birth_date":"1980-04-01","address":"東京都千代田区霞が関1-2-2","postal_code":"100-8916",
        "acquired_on":"2020-04-01","lost_on":null,"loss_reason":null,"share_percent":30});
    for (k, val) in over.as_object().expect("an object") {
        v[k] = val.clone();
    }
    v
}

fn import_line(t: &TestDir, data: &Path, name: &str, line: &Value) {
    let file = Registry {
        path: t.join(name),
        periods: vec![line.clone()],
    };
    std::fs::write(&file.path, format!("{line}\n")).expect("write the registry line");
    file.import(data);
}

fn serve(t: &TestDir, data: &Path, pki: &Pki, listen: &str) -> Reconciler {
    Reconciler::start_with(t, data, pki, listen, |cmd: &mut Command| {
        cmd.args(["--revisit-days", REVISIT_DAYS]);
    })
}

fn queue_item(edge: &Edge, id: &str) -> Value {
    let q = edge.queue();
    q["items"]
        .as_array()
        .and_then(|items| items.iter().find(|i| i["id"] == id))
        .cloned()
        .unwrap_or_else(|| panic!("{id} is not in the queue: {q}"))
}

/// Waits until the queue item `id` satisfies `pred`.
fn wait_item(edge: &Edge, id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    wait_until(Duration::from_secs(30), Duration::from_millis(100), || {
        let _ = edge.post("/v1/sync-now", &json!({}));
        let item = queue_item(edge, id);
        pred(&item).then_some(item)
    })
    .unwrap_or_else(|| panic!("{id}: never {what}: {}", edge.queue()))
}

/// The worklist page's HTML for `query`, signed in as `uketsuke`.
fn worklist_page(edge: &Edge, query: &str) -> String {
    let base = format!("http://{}", edge.http_addr);
    runtime().block_on(async {
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("a client");
        let login = client
            .post(format!("{base}/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!(
                "user=uketsuke&password={}",
                PASSWORD.replace(' ', "+")
            ))
            .send()
            .await
            .expect("sign in");
        assert_eq!(login.status().as_u16(), 303, "sign in");
        let session = login
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|c| c.strip_prefix("onshi_session="))
            .and_then(|c| c.split(';').next())
            .expect("the session cookie")
            .to_string();
        let page = client
            .get(format!("{base}/worklist{query}"))
            .header("cookie", format!("onshi_session={session}"))
            .send()
            .await
            .expect("the worklist");
        assert_eq!(page.status().as_u16(), 200);
        page.text().await.expect("the page")
    })
}

/// The worklist row of `id` (its `<tr>` up to the next one), if shown.
fn row<'a>(html: &'a str, id: &str) -> Option<&'a str> {
    let start = html.find(&format!("data-id=\"{id}\""))?;
    let rest = &html[start..];
    Some(&rest[..rest.find("</tr>").unwrap_or(rest.len())])
}

#[test]
fn a_settlement_filed_as_insurer_unknown_is_revised_when_the_new_insurer_registers_the_patient() {
    let t = TestDir::new("job-change");
    let pki = Pki::init(&t.join("pki"), &[FACILITY_A]);
    let data = t.join("reconciler");
    Registry::standard(&t).import(&data);
    // The old period ends 20 days before the visits; the new one starts 10 days before them.
    let old = line(json!({"lost_on": shift_date(TODAY, -20), "loss_reason": "03"}));
    let new = line(
        json!({"insurer_number":"01130012","insurer_name":"全国健康保険協会東京支部",
        "symbol":"55","number":"70002","acquired_on": shift_date(TODAY, -10)}),
    );
    import_line(&t, &data, "old.jsonl", &old);

    let mut rec = serve(&t, &data, &pki, "127.0.0.1:0");
    let edge_data = t.join("edge-a");
    add_user(&edge_data, "uketsuke", "reception", PASSWORD);
    let edge = Edge::start(&t, EdgeOpts::new(FACILITY_A, &edge_data, &pki, rec.addr));
    edge.wait_online();

    // The outage: two visits recorded provisionally, declaring the old insurer.
    rec.kill9();
    edge.wait_mode("offline", Duration::from_secs(10));
    let declared = json!({"name": old["name"], "name_kana": old["name_kana"], "birth_date": old["birth_date"],
        "sex": old["sex"], "insurer_name": old["insurer_name"], "share_percent": 30});
    let ids: Vec<String> = [12_340, 5_670]
        .iter()
        .map(|total| {
            let (code, v) = edge.post(
                "/v1/provisional",
                &json!({"declared": declared, "service_date": TODAY, "total_fee_yen": total}),
            );
            assert_eq!(code, 201, "{v}");
            v["record_id"].as_str().expect("record_id").to_string()
        })
        .collect();
    let (open, closed) = (&ids[0], &ids[1]);

    // Back online: both settle as insurer unknown (no period valid on the day).
    let rec = serve(&t, &data, &pki, &rec.addr.to_string());
    edge.wait_online();
    for id in &ids {
        let item = wait_item(&edge, id, "settled", |i| !i["settlement"].is_null());
        assert_eq!(item["settlement"]["kind"], "insurer_unknown", "{item}");
        assert_eq!(
            (
                &item["settlement_revision"],
                &item["revised"],
                &item["revised_after_close"]
            ),
            (&json!(0), &json!(false), &json!(false)),
            "{item}"
        );
    }
    // Staff file the second one as insurer unknown and close it.
    let (code, v) = edge.post(&format!("/v1/queue/{closed}/close"), &json!({}));
    assert_eq!((code, &v["state"]), (200, &json!("closed")), "{v}");

    // 協会けんぽ registers him: the new line is imported while the reconciler serves; its
    // follower revisits what the import changed.
    let file = t.join("new.jsonl");
    std::fs::write(&file, format!("{new}\n")).expect("write the registry line");
    let (code, out, err) = rec.command(&["import", file.to_str().expect("utf-8")]);
    assert_eq!(code, 0, "{out}{err}");

    // The open item: the revised settlement, re-routed to the new insurer, and that it changed.
    let item = wait_item(&edge, open, "revised", |i| i["revised"] == true);
    let s = &item["settlement"];
    assert_eq!(s["kind"], "insurer_changed", "{item}");
    assert_eq!(s["insurer"]["number"], "01130012", "{item}");
    assert_eq!(s["insurer"]["name"], "全国健康保険協会東京支部", "{item}");
    assert_eq!(s["qualification"]["number"], "70002", "{item}");
    assert_eq!(
        (
            &item["state"],
            &item["settlement_revision"],
            &item["revised_after_close"]
        ),
        (&json!("settled"), &json!(1), &json!(false)),
        "{item}"
    );

    // The closed item: still closed, but revised since: an item to act on again.
    let item = wait_item(&edge, closed, "revised after close", |i| {
        i["revised_after_close"] == true
    });
    assert_eq!(
        item["state"], "closed",
        "the lifecycle never goes back: {item}"
    );
    assert_eq!(item["settlement"]["kind"], "insurer_changed", "{item}");
    assert_eq!(
        item["settlement"]["insurer"]["number"], "01130012",
        "{item}"
    );

    // The command line says so too.
    let out = edge.cli(&["queue"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("revised by the centre after it was closed (revision 1)")
            && text.contains("revised by the centre (revision 1)"),
        "{text}"
    );

    // The page: both under 要対応 with the centre's marker; the closed one says to act again.
    let act = worklist_page(&edge, "?show=act");
    let r = row(&act, closed).unwrap_or_else(|| panic!("{closed} not under 要対応: {act}"));
    assert!(
        r.contains("data-reopened=\"true\"") && r.contains("もう一度対応してください"),
        "{r}"
    );
    assert!(r.contains("/close"), "a close button: {r}");
    let r = row(&act, open).unwrap_or_else(|| panic!("{open} not under 要対応: {act}"));
    assert!(
        r.contains("センターが精算結果を見直しました") && r.contains("全国健康保険協会東京支部"),
        "{r}"
    );

    // Staff act on both: closing again acknowledges the revision; nothing is left to act on.
    for id in [open, closed] {
        let (code, v) = edge.post(&format!("/v1/queue/{id}/close"), &json!({}));
        assert_eq!(code, 200, "{v}");
        assert_eq!(
            (
                &v["state"],
                &v["revised_after_close"],
                &v["settlement_revision"]
            ),
            (&json!("closed"), &json!(false), &json!(1)),
            "{v}"
        );
        let item = queue_item(&edge, id);
        assert_eq!(item["revised_after_close"], false, "{item}");
    }
    let act = worklist_page(&edge, "?show=act");
    assert!(
        row(&act, closed).is_none() && row(&act, open).is_none(),
        "{act}"
    );

    // The reconciler logged the revisions by record id and kind, nothing about the patient.
    let log = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        rec.proc
            .stderr()
            .lines()
            .find(|l| {
                l.contains("settlement revised after a registry change")
                    && l.contains(open.as_str())
            })
            .map(str::to_string)
    })
    .unwrap_or_else(|| panic!("no revision logged: {}", rec.proc.stderr_tail(40)));
    assert!(
        log.contains("insurer_changed") && log.contains("insurer_unknown"),
        "{log}"
    );
    let all = rec.proc.stderr();
    for personal in ["転職", "テンショク", "1980-04-01", "70001", "70002"] {
        assert!(
            !all.contains(personal),
            "{personal} in the reconciler's log"
        );
    }
}
