//! `onshi-edge demo`: everything in one process on loopback, from nothing: a private CA, a
//! synthetic registry, a reconciler and an edge; then it prints the web address and example
//! requests that work, and runs until Ctrl-C.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use onshi_model::{FacilityCode, Qualification};

use crate::config::{DEFAULT_DEADLINE, EdgeConfig};

/// The demo facility: Tokyo (13), medical (1).
pub const DEMO_FACILITY: &str = "1311234567";

fn card_body(q: &Qualification) -> serde_json::Value {
    serde_json::json!({
        "insurance_card": {"insurer_number": q.insurer_number, "symbol": q.symbol, "number": q.number, "branch": q.branch},
        "birth_date": q.birth_date,
    })
}

/// A check as curl sends it; `key` is its `Idempotency-Key` (a retry returns the same check).
fn curl(http: SocketAddr, auth: &str, body: &serde_json::Value, key: &str) -> String {
    format!(
        "curl -s -X POST http://{http}/v1/checks {auth} -H 'content-type: application/json' -H 'idempotency-key: {key}' -d '{body}'"
    )
}

/// The demo's accounts: an admin and a receptionist with random passwords, and an admin token.
struct DemoAccounts {
    admin_password: String,
    reception_password: String,
    token: String,
}

/// A random password of 20 letters and digits (from the operating system's generator).
fn random_password() -> anyhow::Result<String> {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut bytes = [0u8; 20];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| anyhow::anyhow!("the system's random generator failed"))?;
    Ok(bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect())
}

fn demo_accounts(data: &std::path::Path) -> anyhow::Result<DemoAccounts> {
    use crate::auth::{AccountName, AccountsDir, NewToken, Password, Role, password};
    let admin_password = random_password()?;
    let reception_password = random_password()?;
    let hash = |p: &str| -> anyhow::Result<String> {
        Ok(password::hash_password(&Password::new(p.to_string())?)?)
    };
    let (admin_hash, reception_hash) = (hash(&admin_password)?, hash(&reception_password)?);
    let token = NewToken::generate()?;
    let now = chrono::Utc::now();
    AccountsDir::new(data).update(|f| {
        f.add_user(
            AccountName::parse("admin")?,
            Role::Admin,
            admin_hash,
            now,
            "demo",
        )?;
        f.add_user(
            AccountName::parse("reception")?,
            Role::Reception,
            reception_hash,
            now,
            "demo",
        )?;
        f.add_token(
            AccountName::parse("demo-token")?,
            Role::Admin,
            token.id,
            token.hash.clone(),
            now,
            "demo",
        )
    })?;
    Ok(DemoAccounts {
        admin_password,
        reception_password,
        token: token.text,
    })
}

/// Runs the demo until `shutdown` resolves.
pub async fn run(
    http: &str,
    people: usize,
    seed: u64,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("onshi-demo-")
        .tempdir()
        .context("creating a temporary directory")?;
    let facility = FacilityCode::parse(DEMO_FACILITY)?;
    let pki_dir = dir.path().join("pki");
    onshi_sync::pki::init(&pki_dir, std::slice::from_ref(&facility))
        .context("creating the demo CA")?;

    let today = chrono::Local::now().date_naive();
    let periods = onshi_sync::synth::generate(&onshi_sync::synth::SynthParams {
        people,
        seed,
        today,
    });
    let reconciler_store = Arc::new(onshi_reconciler::store::embedded::EmbeddedStore::open(
        &dir.path().join("reconciler"),
    )?);
    onshi_reconciler::store::CentralStore::import(reconciler_store.as_ref(), &periods)?;
    // Disaster mode is the centre's to grant: the demo's centre grants it to the demo facility,
    // so the demo shows central search (as `onshi-reconciler outage grant --facility` would).
    let granted = chrono::Utc::now();
    onshi_reconciler::store::CentralStore::grant(
        reconciler_store.as_ref(),
        &onshi_reconciler::store::Grant {
            scope: onshi_reconciler::store::GrantScope::Facility(facility.clone()),
            since: granted,
            until: granted + chrono::Duration::days(onshi_reconciler::service::OUTAGE_DAYS),
            ended_at: None,
        },
    )?;
    let examples = onshi_sync::synth::pick_examples(&periods, today);
    let card_holder = examples.card_holder.clone();
    let (Some(valid_q), Some(lost_q)) = (examples.valid_insured, examples.lost_with_newer) else {
        anyhow::bail!(
            "--people {people}: too few people for the examples (a valid insured person and a job change); use at least 200"
        );
    };

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let reconciler = onshi_reconciler::service::start(
        reconciler_store.clone(),
        &pki_dir,
        "127.0.0.1:0".parse()?,
        stopped(stop_rx.clone()),
    )?;

    let wanted: SocketAddr = http
        .parse()
        .with_context(|| format!("--http: '{http}' is not an address"))?;
    let http_addr = match std::net::TcpListener::bind(wanted) {
        Ok(l) => l.local_addr()?,
        Err(_) => SocketAddr::new(wanted.ip(), 0),
    };
    let config = EdgeConfig {
        facility,
        data: dir.path().join("edge"),
        // The demo's key beside its data (the status says so): a throwaway directory.
        data_key: None,
        pki: pki_dir,
        reconciler: crate::config::Reconcilers::single(reconciler.addr),
        http: http_addr,
        http_settings: crate::config::HttpSettings::default(),
        // The demo serves plain HTTP: the rule for a non-loopback --http applies (no TLS here).
        http_transport: crate::config::http_transport(http_addr, None, None, false)
            .map_err(|e| anyhow::anyhow!("{e}"))?,
        readers: Vec::new(),
        mailbox: Some(dir.path().join("mailbox")),
        mailbox_timing: crate::config::MailboxTiming::default(),
        deadline: DEFAULT_DEADLINE,
        mode: crate::mode::ModeSettings {
            hold: std::time::Duration::from_secs(3),
            ..Default::default()
        },
        reader_timeout: std::time::Duration::from_secs(10),
        share: onshi_fallback::share::SharePolicy::default(),
        queue: crate::queue::QueueCaps::default(),
        session_idle: crate::auth::session::DEFAULT_IDLE,
    };
    let accounts = demo_accounts(&config.data).context("creating the demo's accounts")?;
    let edge = crate::edge::start(config, stopped(stop_rx)).await?;
    let mut link = edge.link.subscribe();
    tokio::time::timeout(Duration::from_secs(10), link.wait_for(|s| s.is_up()))
        .await
        .context("the demo link did not come up within 10 s")??;

    let http = edge.http_addr;
    let valid = card_body(&valid_q);
    let lost = card_body(&lost_q);
    let mut typo = valid.clone();
    let insurer = valid_q.insurer_number.as_str();
    let last = insurer.as_bytes()[insurer.len() - 1] - b'0';
    typo["insurance_card"]["insurer_number"] =
        format!("{}{}", &insurer[..insurer.len() - 1], (last + 1) % 10).into();
    println!(
        "onshi demo: reconciler on quic://{} with {} people ({} qualification periods), edge for facility {DEMO_FACILITY}",
        reconciler.addr,
        people,
        periods.len()
    );
    println!("web address: http://{http}");
    println!("data in {} (deleted on exit)", dir.path().display());
    println!();
    println!("# sign in at the web address (random passwords, made for this run):");
    println!("#   admin      {}", accounts.admin_password);
    println!("#   reception  {}", accounts.reception_password);
    println!("# a token for programs (admin role), used by the examples below:");
    println!("export ONSHI_TOKEN={}", accounts.token);
    let auth = "-H \"Authorization: Bearer $ONSHI_TOKEN\"";
    println!();
    println!("# a valid qualification ({}):", valid_q.name);
    println!("{}", curl(http, auth, &valid, "demo-check-0001"));
    println!(
        "# a lost qualification, the person has a newer one ({}):",
        lost_q.name
    );
    println!("{}", curl(http, auth, &lost, "demo-check-0002"));
    println!("# a mistyped check digit in the insurer number (answers 400 naming the field):");
    println!("{}", curl(http, auth, &typo, "demo-check-0003"));
    println!("# the stored check, and the edge's status:");
    println!("curl -s {auth} http://{http}/v1/checks/CHECK_ID");
    println!("curl -s {auth} http://{http}/v1/status");
    println!();
    println!(
        "# outage mode: search by name (kana or kanji, variants and one typo tolerated), birth date (era dates too), sex."
    );
    println!("# Over this facility's replica; declare an outage first to search centrally:");
    let era = onshi_model::date::format_era(valid_q.birth_date)
        .unwrap_or_else(|| valid_q.birth_date.to_string());
    let search =
        serde_json::json!({"name_kana": valid_q.name_kana, "birth_date": era, "sex": valid_q.sex});
    println!(
        "curl -s -X POST http://{http}/v1/outage {auth} -H 'content-type: application/json' -d '{{\"active\":true,\"reason\":\"card reader broken\"}}'"
    );
    println!(
        "curl -s -X POST http://{http}/v1/search {auth} -H 'content-type: application/json' -d '{search}'"
    );
    println!(
        "# a provisional record (self-declaration) when nothing can be confirmed: what to collect, and why:"
    );
    let prov = serde_json::json!({"declared": {"name": "山田　花子", "birth_date": "令和3年4月1日", "sex": "female", "insurance_type": "国保"}, "service_date": today, "total_fee_yen": 12345});
    // The key makes a retry (a lost answer, a 503) return the first record instead of a second.
    println!(
        "curl -s -X POST http://{http}/v1/provisional {auth} -H 'content-type: application/json' -H 'idempotency-key: demo-visit-0001' -d '{prov}'"
    );
    println!("curl -s {auth} http://{http}/v1/queue");
    println!("# who read what (the access log; admin):");
    println!("curl -s {auth} http://{http}/v1/audit");
    if let Some(card) = card_holder.as_ref().and_then(|q| q.card_id.clone()) {
        println!("# a My Number card on the (simulated) face-authentication reader:");
        println!("onshi-edge reader-sim --http {http} --card {card}  # sends $ONSHI_TOKEN");
    }
    // The receipt computers' file interface: an example request file, to copy into req/.
    let mailbox = dir.path().join("mailbox");
    let example = dir.path().join("OQSsiquc01req_demo0001.xml");
    let request = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"no\"?>\n<XmlMsg>\n  <MessageHeader>\n    <QualificationConfirmationDate>{}</QualificationConfirmationDate>\n    <MedicalInstitutionCode>{DEMO_FACILITY}</MedicalInstitutionCode>\n    <ArbitraryFileIdentifier>DEMO-0001</ArbitraryFileIdentifier>\n  </MessageHeader>\n  <MessageBody>\n    <QualificationConfirmSearchInfo>\n      <InsurerNumber>{}</InsurerNumber>\n      <InsuredCardSymbol>{}</InsuredCardSymbol>\n      <InsuredIdentificationNumber>{}</InsuredIdentificationNumber>\n      <InsuredBranchNumber>{}</InsuredBranchNumber>\n      <Birthdate>{}</Birthdate>\n      <LimitApplicationCertificateRelatedConsFlg>0</LimitApplicationCertificateRelatedConsFlg>\n    </QualificationConfirmSearchInfo>\n  </MessageBody>\n</XmlMsg>\n",
        today.format("%Y%m%d"),
        valid_q.insurer_number.to_file_field(),
        valid_q.symbol.as_ref().map_or("", |s| s.as_str()),
        valid_q.number.as_str(),
        valid_q.branch.as_ref().map_or("", |b| b.as_str()),
        valid_q.birth_date.format("%Y%m%d"),
    );
    std::fs::write(&example, request).context("writing the example request file")?;
    println!(
        "# the receipt computers' file interface (OQS mailbox): drop a request into req/, the result appears in res/:"
    );
    println!(
        "cp {} {}/req/ && sleep 1 && cat {}/res/OQSsiquc01res_demo0001.xml",
        example.display(),
        mailbox.display(),
        mailbox.display()
    );
    println!();
    println!("Ctrl-C stops the demo.");
    shutdown.await;
    let _ = stop_tx.send(true);
    edge.task.await??;
    let _ = reconciler.task.await;
    Ok(())
}
