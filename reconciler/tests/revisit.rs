//! Settlements that catch up with the registry (issue 16), in process: the reconciler started on
//! an embedded store this test holds too, a facility's real QUIC link for central searches, and
//! the registry changed by the store's own import while the reconciler serves. Central search
//! finds the new periods (the import wrote the store's search index) and the follower must revise
//! exactly the settlements
//! the change makes different: a job changer's `insurer_unknown` becomes `insurer_changed` at
//! revision 1 and goes on the facility's revision feed; a verdict the change only rewords stays
//! as it is; a record past the horizon is left alone. Waits are on the follower's position in the
//! change feed (its metric), never on time.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{NaiveDate, Utc};
use onshi_fallback::SearchQuery;
use onshi_model::ids::luhn_check_digit;
use onshi_model::record::{Basis, Declaration, ProvisionalRecord, RecordState, SettlementKind};
use onshi_model::{FacilityCode, Qualification, Sex};
use onshi_reconciler::revisit::RevisitSettings;
use onshi_reconciler::service::{RunningReconciler, ServeOptions};
use onshi_reconciler::settlement::{MemoryRegistry, settle};
use onshi_reconciler::store::embedded::EmbeddedStore;
use onshi_reconciler::store::{CentralStore, Grant, GrantScope};
use onshi_sync::crdt::{Actor, JournalRecord, RecordFacts, RecordId};
use onshi_sync::link::{LinkClient, LinkSettings};
use onshi_sync::pki;
use onshi_sync::wire::{Request, Response};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

fn clinic() -> FacilityCode {
    FacilityCode::parse("1311234567").unwrap()
}

fn today() -> NaiveDate {
    chrono::Local::now().date_naive()
}

fn days_ago(n: u64) -> NaiveDate {
    today().checked_sub_days(chrono::Days::new(n)).unwrap()
}

fn ins(body: &str) -> String {
    format!("{body}{}", luhn_check_digit(body))
}

/// A registry line of a person born on 1980-04-01; `over` replaces fields.
fn period(over: Value) -> Qualification {
    let mut v = json!({"person_id":"P0000001","card_id":null,"insurer_number":"06130017","insurer_name":"霞が関健康保険組合",
        "card_class":"01","symbol":"123","number":"4567","branch":"01","relationship":"insured",
        "name":"転職　太郎","name_kana":"テンショク　タロウ","sex":"male","birth_date":"1980-04-01",
        "address":"東京都千代田区霞が関1-2-2","postal_code":"100-8916",
        "acquired_on":"2020-04-01","lost_on":null,"loss_reason":null,"share_percent":30});
    for (k, val) in over.as_object().unwrap() {
        v[k] = val.clone();
    }
    Qualification::from_registry_value(&v).unwrap()
}

/// 転職 太郎 (P0000001) left the 霞が関 union 20 days ago; 協会けんぽ registers him from 15 days
/// ago only once `new_periods` are imported. 遅届 花子 (P0000002) changed jobs long ago: her
/// new insurer's line comes in the same import. 新規 一郎 (P0000003) is new to the registry.
fn old_periods() -> Vec<Qualification> {
    vec![
        period(json!({"lost_on": days_ago(20), "loss_reason": "03"})),
        period(
            json!({"person_id":"P0000002","name":"遅届　花子","name_kana":"チトドケ　ハナコ","sex":"female",
            "birth_date":"1975-07-07","number":"8888","lost_on": days_ago(300), "loss_reason":"03"}),
        ),
    ]
}

fn new_periods() -> Vec<Qualification> {
    let kyokai = ins("0113001");
    vec![
        period(
            json!({"insurer_number":kyokai,"insurer_name":"全国健康保険協会東京支部","symbol":"55",
            "number":"901","branch":"00","acquired_on": days_ago(15)}),
        ),
        period(
            json!({"person_id":"P0000002","name":"遅届　花子","name_kana":"チトドケ　ハナコ","sex":"female",
            "birth_date":"1975-07-07","insurer_number":kyokai,"insurer_name":"全国健康保険協会東京支部",
            "symbol":"55","number":"902","branch":"00","acquired_on": days_ago(250)}),
        ),
        period(
            json!({"person_id":"P0000003","name":"新規　一郎","name_kana":"シンキ　イチロウ",
            "birth_date":"1990-10-10","number":"9999","acquired_on": days_ago(3)}),
        ),
    ]
}

/// A provisional record of `who` on `service`, declaring the old insurer by name.
fn record(
    seq: u64,
    name: &str,
    kana: &str,
    birth: &str,
    sex: Sex,
    service: NaiveDate,
) -> JournalRecord {
    let id = RecordId::new(clinic(), 0xe1, seq);
    let p = ProvisionalRecord {
        record_id: id.to_string(),
        created_at: Utc::now(),
        declared: Declaration {
            name: name.into(),
            name_kana: Some(kana.into()),
            birth_date: onshi_model::parse_date(birth).unwrap(),
            sex,
            address: None,
            insurer_name: Some("霞が関健康保険組合".into()),
            insurance_type: None,
            employer: None,
            contact: None,
            share_percent: Some(30),
        },
        person_id: None,
        service_date: service,
        total_fee_yen: 10_000,
        share_percent: 30,
        collected_yen: 3_000,
        basis: Basis::Declared,
        rule: None,
        explanation: String::new(),
        state: RecordState::Recorded,
    };
    JournalRecord::new(id, RecordFacts::Provisional(p)).unwrap()
}

/// Merges the records and settles them against the registry as the sync session does.
fn settle_into(store: &EmbeddedStore, records: Vec<JournalRecord>) {
    let ids: Vec<RecordId> = records.iter().map(|r| r.id().clone()).collect();
    store.merge(&clinic(), records).unwrap();
    let registry = MemoryRegistry::new(old_periods());
    let written = store
        .update(&clinic(), &ids, false, &mut |r| {
            let s = settle(&r.provisional()?, &registry, Utc::now()).ok()?;
            let mut r = r.clone();
            r.settle(Actor::Reconciler, s).ok()?;
            Some(r)
        })
        .unwrap();
    assert_eq!(written.len(), ids.len());
}

fn kind_of(store: &EmbeddedStore, id: &RecordId) -> (SettlementKind, u32) {
    let r = store.record(&clinic(), id).unwrap().unwrap();
    (r.settlement().unwrap().kind, r.settlement_revision())
}

/// Waits until the follower has caught up with everything imported so far.
async fn caught_up(store: &EmbeddedStore, running: &RunningReconciler) {
    let target = store.registry_cursor().unwrap();
    assert!(target > 0);
    tokio::time::timeout(WAIT, async {
        while running.metrics.registry_followed.load(Ordering::SeqCst) < target {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the follower catches up with the change feed");
}

async fn search(link: &LinkClient, name: &str, kana: &str, birth: &str) -> Vec<String> {
    let q = SearchQuery {
        name: Some(name.into()),
        name_kana: Some(kana.into()),
        birth_date: onshi_model::parse_date(birth).unwrap(),
        sex: Sex::Male,
        insurer_name: None,
        address: None,
        service_date: None,
    };
    match link.call(Request::Search(q), WAIT).await.unwrap() {
        Response::Search(hits) => hits.into_iter().map(|h| h.person_id.to_string()).collect(),
        other => panic!("not a search answer: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_while_serving_reaches_central_search_and_revises_what_it_changes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(&dir.path().join("data")).unwrap());
    store.import(&old_periods()).unwrap();
    // The job changer seen 10 days ago (the new insurer covers that day) and 18 days ago (in the
    // gap: no insurer that day, whatever is imported); the other one 200 days ago (past the
    // 90-day horizon).
    let a = record(
        1,
        "転職　太郎",
        "テンショク　タロウ",
        "1980-04-01",
        Sex::Male,
        days_ago(10),
    );
    let b = record(
        2,
        "転職　太郎",
        "テンショク　タロウ",
        "1980-04-01",
        Sex::Male,
        days_ago(18),
    );
    let c = record(
        3,
        "遅届　花子",
        "チトドケ　ハナコ",
        "1975-07-07",
        Sex::Female,
        days_ago(200),
    );
    let (ia, ib, ic) = (a.id().clone(), b.id().clone(), c.id().clone());
    settle_into(&store, vec![a, b, c]);
    for id in [&ia, &ib, &ic] {
        assert_eq!(kind_of(&store, id), (SettlementKind::InsurerUnknown, 0));
    }
    let explained_b = store.record(&clinic(), &ib).unwrap().unwrap();

    let pki_dir = dir.path().join("pki");
    pki::init(&pki_dir, &[clinic()]).unwrap();
    store
        .grant(&Grant {
            scope: GrantScope::Facility(clinic()),
            since: Utc::now() - chrono::Duration::minutes(1),
            until: Utc::now() + chrono::Duration::days(1),
            ended_at: None,
        })
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = onshi_reconciler::service::start_with_options(
        store.clone(),
        &pki_dir,
        "127.0.0.1:0".parse().unwrap(),
        ServeOptions {
            revisit: RevisitSettings {
                horizon_days: 90,
                poll: Duration::from_millis(50),
            },
            ..ServeOptions::default()
        },
        async move {
            let _ = stopped.await;
        },
    )
    .unwrap();
    let link = LinkClient::new(
        running.addr,
        &pki::load_client(&pki_dir, &clinic()).unwrap(),
        LinkSettings::default(),
    )
    .unwrap();

    // The sweep at start changes nothing: the registry is what the records were settled on.
    caught_up(&store, &running).await;
    for id in [&ia, &ib, &ic] {
        assert_eq!(kind_of(&store, id), (SettlementKind::InsurerUnknown, 0));
    }
    assert!(
        search(&link, "新規　一郎", "シンキ　イチロウ", "1990-10-10")
            .await
            .is_empty()
    );
    let feed = store.revision_cursor(&clinic()).unwrap();

    // The insurers' update, imported while the reconciler serves.
    store.import(&new_periods()).unwrap();
    caught_up(&store, &running).await;

    // Central search sees the new person without a restart.
    assert_eq!(
        search(&link, "新規　一郎", "シンキ　イチロウ", "1990-10-10").await,
        vec!["P0000003".to_string()]
    );

    // The job changer's record: insurer_changed to 協会けんぽ, revision 1, on the revision feed.
    let revised = store.record(&clinic(), &ia).unwrap().unwrap();
    let s = revised.settlement().unwrap();
    assert_eq!(
        (s.kind, revised.settlement_revision()),
        (SettlementKind::InsurerChanged, 1),
        "{}",
        s.explanation
    );
    let q = s.qualification.as_ref().unwrap();
    assert_eq!(
        (q.insurer_number.as_str(), q.number.as_str()),
        (ins("0113001").as_str(), "901")
    );
    let (on_feed, _) = store.revisions(&clinic(), feed).unwrap();
    assert_eq!(
        on_feed.iter().map(|r| r.id().clone()).collect::<Vec<_>>(),
        vec![ia.clone()],
        "only the revised record is announced"
    );
    assert_eq!(on_feed[0].settlement_revision(), 1);

    // In the gap the verdict is the same (the explanation may now name the new period): nothing
    // written, not even the new wording.
    assert_eq!(
        store.record(&clinic(), &ib).unwrap().unwrap(),
        explained_b,
        "an unchanged verdict writes nothing"
    );
    // Past the horizon: left alone, although settling it now would re-route it.
    assert_eq!(kind_of(&store, &ic), (SettlementKind::InsurerUnknown, 0));
    let mut all = old_periods();
    all.extend(new_periods());
    let now_says = settle(
        &store
            .record(&clinic(), &ic)
            .unwrap()
            .unwrap()
            .provisional()
            .unwrap(),
        &MemoryRegistry::new(all),
        Utc::now(),
    )
    .unwrap();
    assert_eq!(now_says.kind, SettlementKind::InsurerChanged);

    // Counted: one revision, to insurer_changed.
    assert_eq!(
        running.metrics.revisions.snapshot(),
        vec![(vec!["insurer_changed".to_string()], 1)]
    );

    // A second instance on the same store (its own sweep) writes nothing more.
    let other = onshi_reconciler::service::Reconciler::new(store.clone()).unwrap();
    let mut follower = other.follower(RevisitSettings::default()).unwrap();
    let report = tokio::task::spawn_blocking(move || follower.pass(today(), Utc::now()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.revised, 0, "{report:?}");
    assert!(report.revisited >= 1, "{report:?}");
    assert_eq!(kind_of(&store, &ia), (SettlementKind::InsurerChanged, 1));

    link.close().await;
    let _ = stop.send(());
    tokio::time::timeout(WAIT, running.task)
        .await
        .unwrap()
        .unwrap();
}
