//! Disaster mode is the centre's to grant: a facility's own declaration is a request the centre
//! records; central search answers only under a grant for the facility or its prefecture, until
//! the grant ends — on a real reconciler over the link, with the operators' commands
//! (`admin::execute`) on the same store.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use onshi_fallback::SearchQuery;
use onshi_model::FacilityCode;
use onshi_reconciler::admin::{AdminRequest, AdminResponse, execute};
use onshi_reconciler::service::ServeOptions;
use onshi_reconciler::store::embedded::EmbeddedStore;
use onshi_reconciler::store::{CentralStore, GrantScope};
use onshi_sync::link::{LinkClient, LinkSettings};
use onshi_sync::pki;
use onshi_sync::wire::{Request, Response};

const WAIT: Duration = Duration::from_secs(20);

fn code(s: &str) -> FacilityCode {
    FacilityCode::parse(s).unwrap()
}

async fn search_as(c: &LinkClient, q: &SearchQuery) -> Response {
    c.call(Request::Search(q.clone()), WAIT).await.unwrap()
}

fn error_code(r: &Response) -> Option<&str> {
    match r {
        Response::Error { code, .. } => Some(code),
        _ => None,
    }
}

#[tokio::test]
async fn central_search_only_under_the_centres_grant_by_facility_or_prefecture_until_it_ends() {
    let dir = tempfile::tempdir().unwrap();
    let pki_dir = dir.path().join("pki");
    // Two facilities in Tokyo (13), one in Osaka (27).
    let (tokyo_a, tokyo_b, osaka) = (code("1311234567"), code("1312345678"), code("2711234567"));
    pki::init(&pki_dir, &[tokyo_a.clone(), tokyo_b.clone(), osaka.clone()]).unwrap();
    let today = Utc::now().date_naive();
    let periods = onshi_sync::synth::generate(&onshi_sync::synth::SynthParams {
        people: 300,
        seed: 11,
        today,
    });
    let store = Arc::new(EmbeddedStore::open(&dir.path().join("data")).unwrap());
    store.import(&periods).unwrap();
    let person = &periods[0];
    let query = SearchQuery {
        name: Some(person.name.clone()),
        name_kana: None,
        birth_date: person.birth_date,
        sex: person.sex,
        insurer_name: None,
        address: None,
        service_date: None,
    };
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
    let client = |f: &FacilityCode| {
        let identity = pki::load_client(&pki_dir, f).unwrap();
        LinkClient::new(running.addr, &identity, LinkSettings::default()).unwrap()
    };
    let (a, b, o) = (client(&tokyo_a), client(&tokyo_b), client(&osaka));
    let admin = |req| execute(store.as_ref(), req, Utc::now()).unwrap();

    // The facility's own declaration: recorded as a request, no grant, no central search.
    let declared = a
        .call(
            Request::Outage {
                active: true,
                reason: "停電".into(),
            },
            WAIT,
        )
        .await
        .unwrap();
    assert!(
        matches!(declared, Response::Outage { active: false, .. }),
        "{declared:?}"
    );
    assert_eq!(
        error_code(&search_as(&a, &query).await),
        Some("no_outage_declared")
    );
    let AdminResponse::Outages { grants, requests } = admin(AdminRequest::Outages) else {
        panic!("outages")
    };
    assert!(grants.is_empty());
    assert_eq!(requests.len(), 1);
    assert_eq!(
        (&requests[0].facility, requests[0].active),
        (&tokyo_a, true)
    );

    // Granted to the facility: it searches the registry; its neighbour does not.
    admin(AdminRequest::Grant {
        scope: GrantScope::Facility(tokyo_a.clone()),
        days: 7,
    });
    let found = search_as(&a, &query).await;
    assert!(
        matches!(&found, Response::Search(hits) if hits.iter().any(|h| h.person_id == person.person_id)),
        "{found:?}"
    );
    assert_eq!(
        error_code(&search_as(&b, &query).await),
        Some("no_outage_declared")
    );
    // Declaring again now answers with the grant.
    let again = a
        .call(
            Request::Outage {
                active: true,
                reason: "停電".into(),
            },
            WAIT,
        )
        .await
        .unwrap();
    assert!(
        matches!(
            again,
            Response::Outage {
                active: true,
                until: Some(_),
                ..
            }
        ),
        "{again:?}"
    );

    // A disaster area: every Tokyo facility, declared or not; not Osaka.
    admin(AdminRequest::Grant {
        scope: GrantScope::Prefecture("13".into()),
        days: 3,
    });
    assert!(matches!(search_as(&b, &query).await, Response::Search(_)));
    assert_eq!(
        error_code(&search_as(&o, &query).await),
        Some("no_outage_declared")
    );

    // Ended: the facility's own grant ends, the prefecture's still covers it; then that ends too.
    let AdminResponse::Ended { count } = admin(AdminRequest::EndGrants {
        scope: GrantScope::Facility(tokyo_a.clone()),
    }) else {
        panic!("ended")
    };
    assert_eq!(count, 1);
    assert!(matches!(search_as(&a, &query).await, Response::Search(_)));
    admin(AdminRequest::EndGrants {
        scope: GrantScope::Prefecture("13".into()),
    });
    assert_eq!(
        error_code(&search_as(&a, &query).await),
        Some("no_outage_declared")
    );
    assert_eq!(
        error_code(&search_as(&b, &query).await),
        Some("no_outage_declared")
    );
    // Nothing is deleted: the ended grants stay on record.
    let AdminResponse::Outages { grants, .. } = admin(AdminRequest::Outages) else {
        panic!("outages")
    };
    assert_eq!(grants.len(), 2);
    assert!(grants.iter().all(|g| g.ended_at.is_some()));
    let _ = stop.send(());
}
