//! The page's HTML (maud: checked at compile time, every interpolation escaped). One function per
//! screen; they take plain values and return markup, so they hold no state and do no IO.
//!
//! It must never put a secret in markup other than the session's own CSRF token in its forms, and
//! never load anything from another origin (no CDN: facilities may have no internet).
//!
//! Hooks outside tests rely on (DESIGN.md, second wave): form fields carry the JSON API's names
//! (dotted when nested); the element with a check's answer has `data-validity`; the banner has
//! `data-mode`; each search candidate has `data-person-id`.

use chrono::{DateTime, NaiveDate, Utc};
use maud::{DOCTYPE, Markup, html};
use onshi_fallback::Confidence;
use onshi_fallback::Reason;
use onshi_fallback::index::{BirthMatch, NameMatch, Partial, SexMatch};
use onshi_model::record::ProvisionalRecord;
use onshi_model::{Qualification, Sex};

use super::words;
use crate::journal::CheckRecord;

/// What every signed-in page shows around its content.
#[derive(Debug)]
pub(crate) struct Chrome<'a> {
    pub user: &'a str,
    pub role: &'a str,
    pub csrf: &'a str,
    pub banner: Markup,
    /// The navigation entry to mark (`check`, `search`, `declare`, `worklist`, and for admins
    /// `admin`, `audit`, `outage`).
    pub active: &'a str,
}

/// The mode banner's facts.
#[derive(Debug, Clone)]
pub(crate) struct BannerFacts {
    pub mode: &'static str,
    pub for_s: u64,
    pub reasons: Vec<String>,
    pub pending: usize,
    pub provisional_yen: u64,
    pub oldest_pending_s: Option<i64>,
    pub settled: usize,
    pub quarantined: usize,
    pub last_sync: Option<DateTime<Utc>>,
    /// Each card reader: id (or none), up, why down.
    pub readers: Vec<(Option<String>, bool, Option<String>)>,
    pub warnings: Vec<String>,
}

/// An error to show beside a form: the API's field and the reason.
#[derive(Debug, Clone)]
pub(crate) struct FormError {
    pub field: Option<String>,
    pub message: String,
}

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " — onshi" }
            link rel="stylesheet" href="/assets/page.css";
            script src="/assets/page.js" defer {}
        }
    }
}

/// A signed-in page.
pub(crate) fn layout(title: &str, c: &Chrome<'_>, body: Markup) -> Markup {
    let nav = [
        ("check", "/", "資格確認"),
        ("search", "/search", "患者検索（障害時）"),
        ("declare", "/declare", "申立書"),
        ("worklist", "/worklist", "作業リスト"),
        ("procedure", "/procedure", "障害時の手順"),
    ];
    // The admin pages, shown to admins only (the pages refuse anyone else with a 403).
    let admin_nav = [
        ("admin", "/admin/accounts", "ユーザーとトークン"),
        ("audit", "/admin/audit", "アクセスログ"),
        ("outage", "/admin/outage", "災害時モード"),
    ];
    let is_admin = c.role == "admin";
    html! {
        (DOCTYPE)
        html lang="ja" {
            (head(title))
            body {
                header.top {
                    nav {
                        @for (key, href, label) in nav {
                            a href=(href) aria-current=[(key == c.active).then_some("page")] { (label) }
                        }
                        @if is_admin {
                            @for (key, href, label) in admin_nav {
                                a.admin href=(href) aria-current=[(key == c.active).then_some("page")] { (label) }
                            }
                        }
                    }
                    div.who {
                        span { (c.user) "（" (role_words(c.role)) "）" }
                        form method="post" action="/logout" {
                            input type="hidden" name="csrf" value=(c.csrf);
                            button type="submit" id="sign-out" { "サインアウト" }
                        }
                    }
                }
                (c.banner)
                main { h1 { (title) } (body) }
            }
        }
    }
}

fn role_words(role: &str) -> &'static str {
    match role {
        "admin" => "管理者",
        "clinician" => "医療職",
        _ => "受付",
    }
}

/// The banner: `data-mode` is the API's mode; it is replaced every second by `page.js`.
pub(crate) fn banner(b: &BannerFacts) -> Markup {
    let mode_words = match b.mode {
        "online" => "オンライン",
        "degraded" => "縮退中",
        _ => "オフライン",
    };
    html! {
        section id="banner" class={ "banner mode-" (b.mode) } data-mode=(b.mode) role="status" aria-live="polite" {
            div.mode {
                strong { (mode_words) }
                " " span.for { (words::duration(b.for_s)) "前から" }
                @if !b.reasons.is_empty() {
                    " " span.why { "（" (b.reasons.join("、")) "）" }
                }
            }
            div.queue data-pending=(b.pending) {
                "未処理 " strong { (b.pending) "件" }
                " ・ 仮徴収 " strong { (words::yen(b.provisional_yen)) }
                @if let Some(s) = b.oldest_pending_s {
                    " ・ 最古 " (words::duration(u64::try_from(s).unwrap_or(0))) "前"
                }
                @if b.settled > 0 { " ・ 精算結果 " (b.settled) "件" }
                @if b.quarantined > 0 { " ・ " strong.warn { "保留 " (b.quarantined) "件" } }
            }
            div.sync {
                "最終同期 "
                @match b.last_sync {
                    Some(t) => { (words::at(t)) }
                    None => { "まだありません" }
                }
            }
            div.readers {
                "カードリーダー "
                @if b.readers.is_empty() { "（なし）" }
                @for (id, up, why) in &b.readers {
                    span.reader.down[!*up] data-reader=[id.as_deref()] {
                        (id.as_deref().unwrap_or("リーダー")) " "
                        @if *up { "正常" } @else { "停止" @if let Some(w) = why { "（" (w) "）" } }
                    }
                }
            }
            @for w in &b.warnings { div.warn { (w) } }
        }
    }
}

/// The sign-in page (no banner: nothing is shown before sign-in).
pub(crate) fn login(error: Option<&str>, user: &str) -> Markup {
    html! {
        (DOCTYPE)
        html lang="ja" {
            (head("サインイン"))
            body.login {
                main {
                    h1 { "onshi 受付 — サインイン" }
                    @if let Some(e) = error { p.error role="alert" { (e) } }
                    form method="post" action="/login" {
                        label { "ユーザー名" input name="user" value=(user) autocomplete="username" required autofocus[user.is_empty()]; }
                        label { "パスワード" input type="password" name="password" autocomplete="current-password" required autofocus[!user.is_empty()]; }
                        button type="submit" { "サインイン" }
                    }
                }
            }
        }
    }
}

fn error_box(e: Option<&FormError>) -> Markup {
    html! {
        @if let Some(e) = e {
            p.error role="alert" data-error-field=[e.field.as_deref()] { (e.message) }
        }
    }
}

fn text(label: &str, name: &str, value: &str, hint: &str, focus: bool) -> Markup {
    html! {
        label { (label)
            input name=(name) value=(value) autofocus[focus] placeholder=(hint);
        }
    }
}

/// Values to prefill a form with, by the API's field names.
pub(crate) type Prefill = std::collections::HashMap<String, String>;

fn val<'a>(p: &'a Prefill, name: &str) -> &'a str {
    p.get(name).map_or("", String::as_str)
}

fn sex_select(name: &str, current: &str) -> Markup {
    html! {
        label { "性別"
            select name=(name) {
                @for (v, l) in [("unset", "不明・未回答"), ("male", "男"), ("female", "女")] {
                    option value=(v) selected[current == v] { (l) }
                }
            }
        }
    }
}

/// Check by insurance-card numbers.
pub(crate) fn check_form(p: &Prefill, error: Option<&FormError>, csrf: &str) -> Markup {
    html! {
        (error_box(error))
        form.card method="post" action="/check" {
            input type="hidden" name="csrf" value=(csrf);
            (text("保険者番号", "insurance_card.insurer_number", val(p, "insurance_card.insurer_number"), "8桁（国保は6桁）", true))
            (text("記号", "insurance_card.symbol", val(p, "insurance_card.symbol"), "なければ空欄", false))
            (text("番号", "insurance_card.number", val(p, "insurance_card.number"), "", false))
            (text("枝番", "insurance_card.branch", val(p, "insurance_card.branch"), "なければ空欄", false))
            (text("生年月日", "birth_date", val(p, "birth_date"), "1980-04-01 / 昭和55年4月1日 / S55.4.1", false))
            (text("診療日（空欄は今日）", "service_date", val(p, "service_date"), "", false))
            button type="submit" { "照会する" }
        }
    }
}

/// A check's answer in words, and what to do next. `data-validity` is the API's value.
pub(crate) fn check_answer(r: &CheckRecord) -> Markup {
    let q: &[Qualification] = r
        .outcome
        .as_ref()
        .map_or(&[], |o| o.qualifications.as_slice());
    html! {
        section.answer data-validity=(r.validity.as_str()) data-source=(r.source.as_str()) data-check-id=(r.check_id) {
            p.validity { strong { (words::validity(r.validity)) } }
            dl {
                dt { "確認元" } dd { (words::source(r.source)) }
                dt { "時点" } dd { @match r.as_of { Some(t) => { (words::at(t)) } None => { "—" } } }
                @for q in q {
                    dt { "保険者" } dd { (q.insurer_name) "（" (q.insurer_number) "）" }
                    dt { "負担割合" } dd { (q.share_percent / 10) "割（" (q.share_percent) "%）" }
                    dt { "氏名" } dd { (q.name) "（" (q.name_kana) "）" }
                }
            }
            p.next { strong { "次に：" } (words::next_step(r.validity, r.source)) }
            @if matches!(r.validity, onshi_model::Validity::Pending | onshi_model::Validity::Invalid | onshi_model::Validity::NotFound) {
                @let bd = birth_of(r);
                a.button href={ "/declare?birth_date=" (bd) } { "申立書を記録する" }
            }
        }
    }
}

fn birth_of(r: &CheckRecord) -> String {
    match &r.request.subject {
        onshi_model::CheckSubject::InsuranceCard { birth_date, .. } => birth_date.to_string(),
        onshi_model::CheckSubject::Card { .. } => String::new(),
    }
}

/// The outage search form.
pub(crate) fn search_form(p: &Prefill, error: Option<&FormError>, csrf: &str) -> Markup {
    html! {
        (error_box(error))
        form.card method="post" action="/search" {
            input type="hidden" name="csrf" value=(csrf);
            (text("氏名", "name", val(p, "name"), "山田 太郎", true))
            (text("カナ", "name_kana", val(p, "name_kana"), "ヤマダ タロウ（ひらがな可）", false))
            (text("生年月日", "birth_date", val(p, "birth_date"), "昭和55年4月1日", false))
            (sex_select("sex", val(p, "sex")))
            (text("保険者名", "insurer_name", val(p, "insurer_name"), "", false))
            (text("住所", "address", val(p, "address"), "", false))
            (text("診療日（空欄は今日）", "service_date", val(p, "service_date"), "過去の受診を確認するときはその日", false))
            button type="submit" { "検索する" }
        }
    }
}

/// One candidate of an outage search.
#[derive(Debug)]
pub(crate) struct CandidateView {
    pub person_id: String,
    pub score: f32,
    pub reasons: Vec<Reason>,
    /// The qualification valid on `service_date` (else the latest).
    pub qualification: Qualification,
    pub service_date: NaiveDate,
    pub as_of: Option<DateTime<Utc>>,
}

fn reason_words(r: &Reason) -> String {
    let name = |what: &str, m: &NameMatch| match m {
        NameMatch::Exact => format!("{what}一致"),
        NameMatch::Variant => format!("{what}が表記違いで一致"),
        NameMatch::Typo => format!("{what}が近い（入力ミス）"),
        NameMatch::Swapped => format!("{what}一致（姓と名が逆）"),
        NameMatch::Missing => format!("{what}の入力なし"),
        NameMatch::Differs => format!("{what}不一致"),
    };
    let part = |what: &str, p: &Partial| match p {
        Partial::Full => format!("{what}一致"),
        Partial::Partial => format!("{what}一部一致"),
        Partial::No => format!("{what}不一致"),
    };
    match r {
        Reason::FamilyName(m) => name("姓", m),
        Reason::GivenName(m) => name("名", m),
        Reason::BirthDate(BirthMatch::Exact) => "生年月日一致".into(),
        Reason::BirthDate(BirthMatch::Swapped) => "生年月日の月と日が逆".into(),
        Reason::BirthDate(BirthMatch::YearOff) => "生年月日の年が1年違い".into(),
        Reason::BirthDate(BirthMatch::Era) => "生年月日の元号違い（同じ年数）".into(),
        Reason::BirthDate(BirthMatch::Typo) => "生年月日が入力ミス1つ分違い".into(),
        Reason::BirthDate(BirthMatch::Differs) => "生年月日不一致".into(),
        Reason::Sex(SexMatch::Same) => "性別一致".into(),
        Reason::Sex(SexMatch::Unknown) => "性別不明".into(),
        Reason::Sex(SexMatch::Differs) => "性別不一致".into(),
        Reason::InsurerName(p) => part("保険者名", p),
        Reason::Address(p) => part("住所", p),
    }
}

/// What the page says of a search's confidence.
fn confidence_words(c: Confidence) -> &'static str {
    match c {
        Confidence::High => "確度：高（最上位の候補がよく一致しています）",
        Confidence::Medium => "確度：中（本人確認のうえ選んでください）",
        Confidence::Low => {
            "確度：低（一致が弱いか、同姓同名などで区別できません。住所・保険者名を加えて検索し直すか、本人に確認してください）"
        }
    }
}

/// The candidates; choosing one opens the prefilled self-declaration.
pub(crate) fn search_results(
    source: &str,
    note: Option<&str>,
    confidence: Confidence,
    candidates: &[CandidateView],
) -> Markup {
    let level = match confidence {
        Confidence::High => "high",
        Confidence::Medium => "medium",
        Confidence::Low => "low",
    };
    html! {
        section.results data-source=(source) data-confidence=(level) {
            @if let Some(n) = note { p.note { (n) } }
            @if !candidates.is_empty() { p.confidence { (confidence_words(confidence)) } }
            @if candidates.is_empty() {
                p { "該当する候補はありません。申立書を空欄から記録してください。" }
                a.button href="/declare" { "申立書を記録する" }
            }
            ol.candidates {
                @for (i, c) in candidates.iter().enumerate() {
                    li.candidate data-person-id=(c.person_id) {
                        div.name { strong { (c.qualification.name) } "（" (c.qualification.name_kana) "）" }
                        div { (c.qualification.birth_date.to_string()) " ・ " (sex_words(c.qualification.sex)) " ・ " (c.qualification.insurer_name) " ・ 負担" (c.qualification.share_percent) "%" }
                        div.address { (c.qualification.address) }
                        div.why { "一致度 " (format!("{:.0}", c.score * 100.0)) "%：" (c.reasons.iter().map(reason_words).collect::<Vec<_>>().join("、")) }
                        div.asof { "情報の時点 " @match c.as_of { Some(t) => { (words::at(t)) } None => { "不明" } } }
                        div.service-date { "診療日 " (date(c.service_date)) " の資格" }
                        a.button.choose href={ "/declare?person_id=" (c.person_id) "&service_date=" (c.service_date) } autofocus[i == 0] { "この人で申立書へ" }
                    }
                }
            }
        }
    }
}

fn sex_words(s: Sex) -> &'static str {
    match s {
        Sex::Male => "男",
        Sex::Female => "女",
        Sex::Unset => "性別不明",
    }
}

/// The self-declaration form (prefilled from a chosen candidate or a check).
pub(crate) fn declare_form(p: &Prefill, error: Option<&FormError>, csrf: &str) -> Markup {
    html! {
        (error_box(error))
        form.card method="post" action="/declare" {
            input type="hidden" name="csrf" value=(csrf);
            @if let Some(pid) = p.get("person_id") {
                input type="hidden" name="person_id" value=(pid);
                p.note { "候補 " (pid) " の控えから記入しました。本人に確認してください。" }
            }
            (text("氏名", "declared.name", val(p, "declared.name"), "", p.get("person_id").is_none()))
            (text("カナ", "declared.name_kana", val(p, "declared.name_kana"), "", false))
            (text("生年月日", "declared.birth_date", val(p, "declared.birth_date"), "昭和55年4月1日", false))
            (sex_select("declared.sex", val(p, "declared.sex")))
            (text("住所", "declared.address", val(p, "declared.address"), "", false))
            (text("保険者名", "declared.insurer_name", val(p, "declared.insurer_name"), "", false))
            (text("保険の種類", "declared.insurance_type", val(p, "declared.insurance_type"), "協会けんぽ / 国保 / 後期高齢者", false))
            (text("本人申告の負担割合（%）", "declared.share_percent", val(p, "declared.share_percent"), "わからなければ空欄", false))
            (text("診療日", "service_date", val(p, "service_date"), "", false))
            label { "医療費の総額（円）"
                input name="total_fee_yen" value=(val(p, "total_fee_yen")) inputmode="numeric" required autofocus[p.get("person_id").is_some()];
            }
            button type="submit" { "記録して徴収額を出す" }
        }
    }
}

fn basis_words(b: onshi_model::record::Basis) -> &'static str {
    use onshi_model::record::Basis;
    match b {
        Basis::Declared => "本人の申告",
        Basis::Replica => "この施設の控え（過去の確認結果）",
        Basis::AgeRule => "年齢による標準の負担割合",
        Basis::UnidentifiedFullFee => "本人確認ができないため全額（確認後に返金）",
    }
}

/// The recorded self-declaration: share, amount to collect, basis; a link to the sheet.
pub(crate) fn declared(r: &ProvisionalRecord) -> Markup {
    html! {
        section.declared data-record-id=(r.record_id) data-collected-yen=(r.collected_yen) data-share-percent=(r.share_percent) {
            p.amount { "徴収額 " strong #collected { (words::yen(r.collected_yen)) } }
            dl {
                dt { "負担割合" } dd { (r.share_percent) "%" }
                dt { "医療費の総額" } dd { (words::yen(r.total_fee_yen)) }
                dt { "根拠" } dd { (basis_words(r.basis)) "：" (r.explanation) }
                dt { "記録番号" } dd { (r.record_id) }
            }
            p.next { strong { "次に：" } "申立書を印刷して本人に署名をもらってください。回線の復旧後、精算結果が作業リストに出ます。" }
            a.button href={ "/declare/" (r.record_id) "/print" } autofocus { "申立書を印刷する" }
        }
    }
}

/// The A4 sheet the patient signs (print CSS hides everything else).
pub(crate) fn print_sheet(r: &ProvisionalRecord, facility: &str) -> Markup {
    let d = &r.declared;
    html! {
        (DOCTYPE)
        html lang="ja" {
            (head("被保険者資格申立書"))
            body.sheet {
                p.noprint { button type="button" data-print autofocus { "印刷する" } " " a href="/worklist" { "作業リストへ" } }
                article.a4 data-record-id=(r.record_id) {
                    h1 { "被保険者資格申立書" }
                    p { "オンライン資格確認ができないため、以下の内容を申し立てます。" }
                    table {
                        tr { th { "氏名" } td { (d.name) } }
                        tr { th { "カナ" } td { (d.name_kana.as_deref().unwrap_or("")) } }
                        tr { th { "生年月日" } td { (d.birth_date.to_string()) } }
                        tr { th { "性別" } td { (sex_words(d.sex)) } }
                        tr { th { "住所" } td { (d.address.as_deref().unwrap_or("")) } }
                        tr { th { "保険者名" } td { (d.insurer_name.as_deref().unwrap_or("")) } }
                        tr { th { "保険の種類" } td { (d.insurance_type.as_deref().unwrap_or("")) } }
                        tr { th { "診療日" } td { (date(r.service_date)) } }
                        tr { th { "負担割合" } td { (r.share_percent) "%（" (basis_words(r.basis)) "）" } }
                        tr { th { "徴収額" } td { (words::yen(r.collected_yen)) "（総額 " (words::yen(r.total_fee_yen)) "）" } }
                        tr { th { "医療機関コード" } td { (facility) } }
                        tr { th { "記録番号" } td { (r.record_id) } }
                    }
                    p.sign { "上記のとおり相違ありません。" }
                    p.sign { "署名 ＿＿＿＿＿＿＿＿＿＿＿＿＿＿＿＿　　日付 ＿＿＿＿＿＿＿＿" }
                }
            }
        }
    }
}

fn date(d: NaiveDate) -> String {
    d.to_string()
}

/// The printable outage procedure for the counter (A4; nothing personal).
pub(crate) fn procedure() -> Markup {
    let steps: [(&str, &str); 6] = [
        (
            "画面上部の表示を確認する",
            "「オフライン」「縮退中」のときは、以下の手順で受付を続けます。理由と開始からの時間が表示されます。",
        ),
        (
            "まず保険証の番号で照会する",
            "この施設で過去に確認した人は控えから答えます（確認元と時点が表示されます）。表示の負担割合で受付してください。",
        ),
        (
            "答えが出ない・確認待ちのとき",
            "「患者検索（障害時）」で氏名またはカナ、生年月日、性別から本人を探します。候補ごとに一致した理由と情報の時点が出ます。",
        ),
        (
            "申立書を記録する",
            "候補を選ぶと申立書が記入済みで開きます。医療費の総額を入れると、負担割合・徴収額・根拠が出ます。見つからなければ空欄から記録します。",
        ),
        (
            "申立書を印刷して署名をもらう",
            "印刷した申立書（A4）に本人の署名をもらい、保管します。表示の徴収額を受け取ります。",
        ),
        (
            "回線の復旧後に作業リストを確認する",
            "精算結果（返金、追加徴収、請求先の変更、保険者不詳での請求、本人の選択）と、結果が変わった確認が出ます。対応したら「対応済みにする」を押します。",
        ),
    ];
    html! {
        (DOCTYPE)
        html lang="ja" {
            (head("障害時の受付手順"))
            body.sheet {
                p.noprint { button type="button" data-print autofocus { "印刷する" } " " a href="/" { "資格確認へ戻る" } }
                article.a4.procedure {
                    h1 { "オンライン資格確認の障害時の受付手順" }
                    ol {
                        @for (title, what) in steps {
                            li { strong { (title) } p { (what) } }
                        }
                    }
                    p.note { "回線が戻ると、確認待ちの照会と申立書は自動で送られ、結果が作業リストに出ます。" }
                }
            }
        }
    }
}

/// One row of the worklist.
#[derive(Debug)]
pub(crate) struct WorkItem {
    pub id: String,
    pub kind: &'static str,
    pub state: String,
    pub created_at: DateTime<Utc>,
    pub collected_yen: Option<u64>,
    /// The settlement's kind (API value) and the action in words.
    pub settlement: Option<(&'static str, String)>,
    pub quarantine: Option<String>,
    /// The candidates of an ambiguous settlement (empty otherwise).
    pub candidates: Vec<ChoiceCandidate>,
    /// The person staff chose, while the settlement against them is on its way.
    pub chosen: Option<String>,
    /// The settlement's revision (0: the first verdict).
    pub revision: u32,
    /// The centre revised the settlement after staff closed the item: to act on again.
    pub reopened: bool,
}

/// One person staff may choose under an ambiguous settlement.
#[derive(Debug)]
pub(crate) struct ChoiceCandidate {
    pub person_id: String,
    pub name: String,
    pub birth_date: chrono::NaiveDate,
    pub insurer: String,
    pub address: String,
}

/// A check whose final answer differs from what reception was told.
#[derive(Debug)]
pub(crate) struct ChangedAnswer {
    pub check_id: String,
    pub told: onshi_model::Validity,
    pub told_source: onshi_model::Source,
    pub final_validity: onshi_model::Validity,
    pub completed_at: DateTime<Utc>,
}

/// Which items the worklist shows (`?show=all|open|act`, `?kind=provisional|deferred_check`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WorkFilter {
    pub show: Show,
    pub kind: Option<&'static str>,
}

/// All items, those not closed, or those waiting for staff (a settlement to act on, a record set
/// aside).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Show {
    All,
    Open,
    Act,
}

impl WorkFilter {
    pub fn from_query(show: Option<&String>, kind: Option<&String>) -> WorkFilter {
        WorkFilter {
            show: match show.map(String::as_str) {
                Some("open") => Show::Open,
                Some("act") => Show::Act,
                _ => Show::All,
            },
            kind: match kind.map(String::as_str) {
                Some("provisional") => Some("provisional"),
                Some("deferred_check") => Some("deferred_check"),
                _ => None,
            },
        }
    }

    /// Whether the item is shown; `reopened`: closed, but its settlement was revised since (to
    /// act on again, so it is shown as open).
    pub fn keeps(&self, kind: &str, state: &str, reopened: bool) -> bool {
        let by_state = match self.show {
            Show::All => true,
            Show::Open => state != "closed" || reopened,
            Show::Act => matches!(state, "settled" | "quarantined") || reopened,
        };
        by_state && self.kind.is_none_or(|k| k == kind)
    }

    fn query(show: Show, kind: Option<&str>) -> String {
        let show = match show {
            Show::All => "all",
            Show::Open => "open",
            Show::Act => "act",
        };
        match kind {
            Some(k) => format!("/worklist?show={show}&kind={k}"),
            None => format!("/worklist?show={show}"),
        }
    }
}

/// The worklist: deferred checks, provisional records and settlements, changed answers.
pub(crate) fn worklist(
    items: &[WorkItem],
    changed: &[ChangedAnswer],
    totals: (usize, u64),
    (filter, listed): (WorkFilter, usize),
    csrf: &str,
) -> Markup {
    let shows = [
        (Show::Act, "要対応"),
        (Show::Open, "未完了"),
        (Show::All, "すべて"),
    ];
    let kinds = [
        (None, "全種類"),
        (Some("provisional"), "申立書"),
        (Some("deferred_check"), "確認待ち"),
    ];
    html! {
        p.totals { "未処理 " strong { (totals.0) "件" } " ・ 仮徴収 " strong { (words::yen(totals.1)) } }
        nav.filters aria-label="絞り込み" {
            @for (show, label) in shows {
                @if show == filter.show { strong data-filter-show=(label) { (label) } }
                @else { a href=(WorkFilter::query(show, filter.kind)) { (label) } }
                " "
            }
            " ｜ "
            @for (kind, label) in kinds {
                @if kind == filter.kind { strong { (label) } }
                @else { a href=(WorkFilter::query(filter.show, kind)) { (label) } }
                " "
            }
            span.shown { "（" (items.len()) " / " (listed) " 件を表示）" }
        }
        h2 { "回線復旧後に結果が変わった確認" }
        @if changed.is_empty() { p { "ありません。" } }
        ul.changed {
            @for c in changed {
                li.changed-answer data-check-id=(c.check_id) data-validity=(c.final_validity.as_str()) {
                    (words::at(c.completed_at)) "：受付時は「" (words::validity(c.told)) "」（" (words::source(c.told_source)) "）、最終結果は「"
                    strong { (words::validity(c.final_validity)) } "」。患者に連絡し、負担割合と請求先を確認してください。"
                }
            }
        }
        h2 { "作業" }
        @if items.is_empty() { p { "作業はありません。" } }
        table.work {
            thead { tr { th { "受付" } th { "種類" } th { "状態" } th { "徴収額" } th { "対応" } th {} } }
            tbody {
                @for (i, it) in items.iter().enumerate() {
                    tr.item data-id=(it.id) data-kind=(it.kind) data-state=(it.state) data-settlement=[it.settlement.as_ref().map(|s| s.0)] data-revision=(it.revision) data-reopened=[it.reopened.then_some("true")] {
                        td { (words::at(it.created_at)) }
                        td { @if it.kind == "provisional" { "申立書" } @else { "確認待ち" } }
                        td { (state_words(&it.state)) }
                        td { @if let Some(y) = it.collected_yen { (words::yen(y)) } }
                        td.action {
                            @if it.reopened {
                                p.reopened data-revision=(it.revision) { strong.warn { "対応済みにした後で、センターが精算結果を見直しました。新しい結果に沿って、もう一度対応してください。" } }
                            } @else if it.revision > 0 {
                                p.revised data-revision=(it.revision) { "センターが精算結果を見直しました（改訂" (it.revision) "）。" }
                            }
                            @if let Some((_, w)) = &it.settlement { (w) }
                            @if !it.candidates.is_empty() && it.state != "closed" {
                                @if let Some(p) = &it.chosen {
                                    p.chosen data-person-id=(p) { "選択済み（" (p) "）：この方で精算し直しています。" }
                                }
                                ul.choose {
                                    @for c in &it.candidates {
                                        li data-person-id=(c.person_id) {
                                            form method="post" action={ "/worklist/" (it.id) "/choose" } {
                                                input type="hidden" name="csrf" value=(csrf);
                                                input type="hidden" name="person_id" value=(c.person_id);
                                                (c.name) " ・ " (c.birth_date) " ・ " (c.insurer) " ・ " (c.address) " "
                                                button type="submit" { "この方を選ぶ" }
                                            }
                                        }
                                    }
                                }
                            }
                            @else if let Some(q) = &it.quarantine { strong.warn { "保留：" (q) } }
                            @else if it.kind == "deferred_check" { "回線の復旧後に自動で確認します。" }
                            @else { "精算結果を待っています。" }
                        }
                        td {
                            @if it.state == "settled" || it.reopened {
                                form method="post" action={ "/worklist/" (it.id) "/close" } {
                                    input type="hidden" name="csrf" value=(csrf);
                                    button type="submit" autofocus[i == 0] { "対応済みにする" }
                                }
                            }
                            @if it.kind == "provisional" {
                                a href={ "/declare/" (it.id) "/print" } { "申立書" }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn state_words(s: &str) -> &'static str {
    match s {
        "pending" => "確認待ち",
        "recorded" => "記録済み",
        "sent" => "送信済み",
        "settled" => "精算結果あり",
        "closed" => "対応済み",
        "quarantined" => "保留",
        _ => "—",
    }
}

/// A page-level error (refused, not found): a sentence and a way back.
pub(crate) fn problem(message: &str) -> Markup {
    html! {
        p.error role="alert" { (message) }
        p { a href="/" { "資格確認へ戻る" } }
    }
}

#[cfg(test)]
mod work_filter_tests {
    use super::{Show, WorkFilter};

    #[test]
    fn the_worklist_filters_by_what_staff_must_act_on_and_by_kind() {
        let q = |show: &str, kind: &str| {
            WorkFilter::from_query(Some(&show.to_string()), Some(&kind.to_string()))
        };
        let all = WorkFilter::from_query(None, None);
        assert_eq!((all.show, all.kind), (Show::All, None));
        assert!(all.keeps("provisional", "closed", false));
        let act = q("act", "");
        assert!(act.keeps("provisional", "settled", false));
        assert!(act.keeps("deferred_check", "quarantined", false));
        assert!(!act.keeps("provisional", "sent", false));
        assert!(!act.keeps("provisional", "closed", false));
        // Closed, then revised by the centre: to act on again.
        assert!(act.keeps("provisional", "closed", true));
        let open = q("open", "provisional");
        assert!(open.keeps("provisional", "recorded", false));
        assert!(!open.keeps("provisional", "closed", false));
        assert!(open.keeps("provisional", "closed", true));
        assert!(!open.keeps("deferred_check", "recorded", false));
        // Anything else reads as the default, never as an error.
        assert_eq!(q("<script>", "x").show, Show::All);
    }
}
