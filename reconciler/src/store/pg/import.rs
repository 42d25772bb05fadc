//! The registry import on PostgreSQL, in bulk: a chunk of periods is copied (`COPY … FROM STDIN
//! (FORMAT binary)`) into a staging table of the transaction, then applied by a few set-based
//! statements: the upsert into `registry_periods` (sorted by its key, so the index is walked in
//! order, not at random), the change feed, and central search's index (its rows, made in Rust by
//! the shared key rules, copied and inserted sorted the same way), all in one transaction with the
//! feed's row lock. A national registry (125 million periods) goes in at the speed of sequential
//! writes instead of one round of per-row upserts per few thousand lines.
//!
//! The rules are the per-row import's (the conformance suite runs them against both stores): a
//! period keyed by card numbers, branch, person and acquisition date replaces the stored one only
//! when it differs; counts say added / updated / unchanged as the embedded store counts them,
//! line after line, a key repeated in the chunk included (its n-th line is applied in round n);
//! every period added or changed goes on the change feed in the order of the file and into the
//! search index before the commit, so the follower, revisits and central search see it at once.
//!
//! Must never: commit a chunk partly (one transaction); put on the feed a period that did not
//! change, or leave off one that did; keep anything of a chunk after its transaction (the staging
//! tables are `ON COMMIT DROP`); log a period.

use std::pin::pin;

use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};

use super::{PgStore, SearchRows, TxError, period_key};
use crate::store::ImportCounts;
use onshi_model::Qualification;

/// The staging table of one chunk: the periods as the file gives them, numbered (`ord`) and put in
/// rounds (`round`: the n-th line of a key is in round n), and what applying them did.
const SQL_STAGE: &str = r#"CREATE TEMP TABLE import_stage (
        ord            int4 NOT NULL,
        round          int4 NOT NULL,
        insurer_number text COLLATE "C" NOT NULL,
        symbol         text COLLATE "C" NOT NULL,
        number         text COLLATE "C" NOT NULL,
        branch         text COLLATE "C" NOT NULL,
        person_id      text COLLATE "C" NOT NULL,
        acquired_on    date NOT NULL,
        card_id        text COLLATE "C",
        period         bytea NOT NULL,
        changed        bool NOT NULL DEFAULT false,
        added          bool NOT NULL DEFAULT false
    ) ON COMMIT DROP;
    CREATE TEMP TABLE import_search_stage (
        key        text COLLATE "C" NOT NULL,
        birth_date date NOT NULL,
        person_id  text COLLATE "C" NOT NULL,
        sex        int2 NOT NULL
    ) ON COMMIT DROP"#;

const SQL_COPY_PERIODS: &str = "COPY import_stage (ord, round, insurer_number, symbol, number, \
     branch, person_id, acquired_on, card_id, period) FROM STDIN (FORMAT binary)";
const PERIOD_TYPES: [Type; 10] = [
    Type::INT4,
    Type::INT4,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::DATE,
    Type::TEXT,
    Type::BYTEA,
];

/// One round: upserts its periods in the primary key's order (a period that is the same as the
/// stored one is left, and not returned) and marks in the staging table what it changed.
const SQL_APPLY_ROUND: &str = "WITH up AS (
         INSERT INTO registry_periods AS p
             (insurer_number, symbol, number, branch, person_id, acquired_on, card_id, period)
         SELECT insurer_number, symbol, number, branch, person_id, acquired_on, card_id, period
         FROM import_stage WHERE round = $1
         ORDER BY insurer_number, symbol, number, branch, person_id, acquired_on
         ON CONFLICT (insurer_number, symbol, number, branch, person_id, acquired_on)
         DO UPDATE SET card_id = EXCLUDED.card_id, period = EXCLUDED.period
             WHERE p.period IS DISTINCT FROM EXCLUDED.period
         RETURNING p.insurer_number, p.symbol, p.number, p.branch, p.person_id, p.acquired_on,
                   (p.xmax = 0) AS added)
     UPDATE import_stage s SET changed = true, added = up.added
     FROM up
     WHERE s.round = $1 AND s.insurer_number = up.insurer_number AND s.symbol = up.symbol
       AND s.number = up.number AND s.branch = up.branch AND s.person_id = up.person_id
       AND s.acquired_on = up.acquired_on";

/// What changed, in the feed's order (round, then the order of the file).
const SQL_CHANGED: &str = "SELECT ord, added FROM import_stage WHERE changed ORDER BY round, ord";

/// The change feed, numbered after `$1` in the same order.
const SQL_FEED: &str = "INSERT INTO registry_changes (seq, period)
     SELECT $1 + row_number() OVER (ORDER BY round, ord), period
     FROM import_stage WHERE changed";

const SQL_COPY_SEARCH: &str = "COPY import_search_stage (key, birth_date, person_id, sex) \
     FROM STDIN (FORMAT binary)";
const SEARCH_TYPES: [Type; 4] = [Type::TEXT, Type::DATE, Type::TEXT, Type::INT2];

/// Central search's rows of the changed periods, in the index's order.
const SQL_APPLY_SEARCH: &str = "INSERT INTO registry_search AS s (key, birth_date, person_id, sex)
     SELECT key, birth_date, person_id, sex FROM import_search_stage
     ORDER BY key, birth_date, person_id
     ON CONFLICT (key, birth_date, person_id) DO UPDATE SET sex = EXCLUDED.sex
         WHERE s.sex <> EXCLUDED.sex";

impl PgStore {
    /// One attempt of the import of `periods` (encoded as stored; `round[i]`: the round of line
    /// `i`), in one transaction.
    pub(super) async fn import_bulk_once(
        &self,
        periods: &[Qualification],
        encoded: &[Vec<u8>],
        round: &[i32],
    ) -> Result<ImportCounts, TxError> {
        let mut c = self.read().await?;
        let tx = c.transaction().await?;
        // Imports one at a time: the feed's seq order is then its commit order.
        let row = tx
            .query_one(
                "SELECT change_seq FROM registry_state WHERE id = 1 FOR UPDATE",
                &[],
            )
            .await?;
        let seq: i64 = row.get(0);
        tx.batch_execute(SQL_STAGE).await?;

        let sink = tx.copy_in(SQL_COPY_PERIODS).await?;
        let mut writer = pin!(BinaryCopyInWriter::new(sink, &PERIOD_TYPES));
        for (i, q) in periods.iter().enumerate() {
            let k = period_key(q);
            let ord = i as i32;
            let card = q.card_id.as_ref().map(|c| c.as_str());
            let bytes: &[u8] = &encoded[i];
            let row: [&(dyn ToSql + Sync); 10] = [
                &ord, &round[i], &k.0, &k.1, &k.2, &k.3, &k.4, &k.5, &card, &bytes,
            ];
            writer.as_mut().write(&row).await?;
        }
        writer.finish().await?;

        let rounds = round.iter().copied().max().unwrap_or(0);
        let apply = tx.prepare(SQL_APPLY_ROUND).await?;
        for r in 0..=rounds {
            tx.execute(&apply, &[&r]).await?;
        }
        let changed = tx.query(SQL_CHANGED, &[]).await?;
        let mut counts = ImportCounts::default();
        let mut order = Vec::with_capacity(changed.len());
        for r in &changed {
            let ord: i32 = r.get(0);
            let added: bool = r.get(1);
            if added {
                counts.added += 1;
            } else {
                counts.updated += 1;
            }
            order.push(ord as usize);
        }
        counts.unchanged = (periods.len() - changed.len()) as u64;

        if !order.is_empty() {
            tx.execute(SQL_FEED, &[&seq]).await?;
            // Central search finds the changed periods from this commit on.
            let rows = SearchRows::of(order.iter().map(|&i| &periods[i]));
            let sink = tx.copy_in(SQL_COPY_SEARCH).await?;
            let mut writer = pin!(BinaryCopyInWriter::new(sink, &SEARCH_TYPES));
            for i in 0..rows.keys.len() {
                let row: [&(dyn ToSql + Sync); 4] = [
                    &rows.keys[i],
                    &rows.births[i],
                    &rows.persons[i],
                    &rows.sexes[i],
                ];
                writer.as_mut().write(&row).await?;
            }
            writer.finish().await?;
            tx.execute(SQL_APPLY_SEARCH, &[]).await?;
        }
        let new_seq = seq + order.len() as i64;
        tx.execute(
            "UPDATE registry_state SET change_seq = $1, period_count = period_count + $2 WHERE id = 1",
            &[&new_seq, &(counts.added as i64)],
        )
        .await?;
        tx.commit().await?;
        Ok(counts)
    }
}
