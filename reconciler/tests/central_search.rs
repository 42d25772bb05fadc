//! Central search on the service date, over the link to a real reconciler on the embedded store:
//! a person who changed jobs is shown with the insurer of the day asked about (a past visit
//! shows that day's insurer, today the new one), each candidate says why it ranks there, and an
//! implausible service date is refused naming the field.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use chrono::{Days, Utc};
use onshi_fallback::SearchQuery;
use onshi_model::FacilityCode;
use onshi_reconciler::admin::{AdminRequest, execute};
use onshi_reconciler::service::ServeOptions;
use onshi_reconciler::store::embedded::EmbeddedStore;
use onshi_reconciler::store::{CentralStore, GrantScope};
use onshi_sync::link::{LinkClient, LinkSettings};
use onshi_sync::pki;
use onshi_sync::wire::{Request, Response, SearchHit};

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn central_search_shows_the_insurer_of_the_service_date_and_refuses_an_implausible_one() {
    let dir = tempfile::tempdir().unwrap();
    let pki_dir = dir.path().join("pki");
    let facility = FacilityCode::parse("1311234567").unwrap();
    pki::init(&pki_dir, std::slice::from_ref(&facility)).unwrap();
    let today = chrono::Local::now().date_naive();
    let mut periods = onshi_sync::synth::generate(&onshi_sync::synth::SynthParams {
        people: 200,
        seed: 17,
        today,
    });
    // A job change: insurer A until 60 days ago, insurer B (another person's) from the next day.
    let changed_on = today.checked_sub_days(Days::new(60)).unwrap();
    let mut old = periods[0].clone();
    old.acquired_on = changed_on.checked_sub_days(Days::new(3000)).unwrap();
    old.lost_on = Some(changed_on);
    old.loss_reason = None;
    let other = periods
        .iter()
        .find(|q| q.insurer_number != old.insurer_number)
        .unwrap()
        .clone();
    let mut new = old.clone();
    new.insurer_number = other.insurer_number.clone();
    new.insurer_name = other.insurer_name.clone();
    new.symbol = other.symbol.clone();
    new.number = other.number.clone();
    new.card_id = None;
    new.acquired_on = changed_on.checked_add_days(Days::new(1)).unwrap();
    new.lost_on = None;
    periods.retain(|q| q.person_id != old.person_id);
    periods.extend([old.clone(), new.clone()]);
    let store = Arc::new(EmbeddedStore::open(&dir.path().join("data")).unwrap());
    store.import(&periods).unwrap();
    execute(
        store.as_ref(),
        AdminRequest::Grant {
            scope: GrantScope::Facility(facility.clone()),
            days: 7,
        },
        Utc::now(),
    )
    .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = onshi_reconciler::service::start_with_options(
        store.clone(),
        &pki_dir,
        "127.0.0.1:0".parse().unwrap(),
        ServeOptions::default(),
        async move {
            let _ = stopped.await;
        },
    )
    .unwrap();
    let client = LinkClient::new(
        running.addr,
        &pki::load_client(&pki_dir, &facility).unwrap(),
        LinkSettings::default(),
    )
    .unwrap();
    let search = |service_date| {
        let query = SearchQuery {
            name: Some(old.name.clone()),
            name_kana: None,
            birth_date: old.birth_date,
            sex: old.sex,
            insurer_name: None,
            address: None,
            service_date,
        };
        let client = &client;
        async move {
            client
                .call(Request::Search(query), WAIT)
                .await
                .expect("an answer")
        }
    };
    let best = |r: Response| -> SearchHit {
        match r {
            Response::Search(hits) => hits
                .into_iter()
                .next()
                .filter(|h| h.person_id == old.person_id)
                .expect("the person first"),
            other => panic!("{other:?}"),
        }
    };

    // A visit ten days before the change: that day's insurer.
    let past = changed_on.checked_sub_days(Days::new(10)).unwrap();
    let hit = best(search(Some(past)).await);
    assert_eq!(hit.qualification.insurer_number, old.insurer_number);
    assert_eq!(hit.qualification.acquired_on, old.acquired_on);
    // The reasons travel with the hit, as the replica's JSON.
    assert!(
        hit.reasons
            .iter()
            .any(|r| r.to_json() == serde_json::json!({"field": "birth_date", "match": "exact"})),
        "{:?}",
        hit.reasons
    );
    // Today (no service date given) and a visit after the change: the new insurer.
    for day in [
        None,
        Some(changed_on.checked_add_days(Days::new(1)).unwrap()),
    ] {
        let hit = best(search(day).await);
        assert_eq!(
            hit.qualification.insurer_number, new.insurer_number,
            "{day:?}"
        );
    }
    // Four years back: refused, naming the field.
    let long_ago = today.checked_sub_days(Days::new(4 * 366)).unwrap();
    match search(Some(long_ago)).await {
        Response::Error { code, message } => {
            assert_eq!(code, "bad_service_date");
            assert!(message.starts_with("service_date: "), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let _ = stop.send(());
    running.task.await.unwrap();
}
