//! The check page's "最近のカード確認": the last few card checks at the card readers (time,
//! reader id, how the holder was verified, validity), kept current by `page.js` through
//! `GET /page/cards` like the banner.
//!
//! It must never show a name, a birth date or a card number: only what the list below has. For
//! that reason reading it is not an access-log entry (it is asked for every second).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use maud::{Markup, html};

use super::{PageState, Peer, Shared, html as html_answer, words};
use crate::reader::{CardSeen, Verified};

fn verified_words(v: Verified) -> &'static str {
    match v {
        Verified::Face => "顔認証",
        Verified::Pin => "暗証番号",
    }
}

/// The list, with `id="recent-cards"` for `page.js` to swap.
pub(super) fn list(cards: &[CardSeen]) -> Markup {
    html! {
        section id="recent-cards" aria-live="polite" {
            h2 { "最近のカード確認" }
            @if cards.is_empty() {
                p { "カードリーダーでの確認はまだありません。" }
            } @else {
                table.work {
                    thead { tr { th { "時刻" } th { "リーダー" } th { "本人確認" } th { "資格" } } }
                    tbody {
                        @for c in cards {
                            tr data-check-id=(c.check_id) data-reader=(c.reader_id) data-verified=(c.verified.as_str()) data-validity=(c.validity.as_str()) {
                                td { (words::at(c.at)) }
                                td { (c.reader_id) }
                                td { (verified_words(c.verified)) }
                                td { (words::validity(c.validity)) }
                            }
                        }
                    }
                }
            }
        }
    }
}

impl PageState {
    pub(super) fn recent_cards(&self) -> Markup {
        list(&self.app.gate.mode.recent_cards())
    }
}

/// `GET /page/cards`: the list alone (401 once the session has ended).
pub(super) async fn get_cards(State(st): Shared, headers: HeaderMap, peer: Peer) -> Response {
    if st.staff(&headers, peer).is_err() {
        return html_answer(StatusCode::UNAUTHORIZED, html! {});
    }
    html_answer(StatusCode::OK, st.recent_cards())
}
