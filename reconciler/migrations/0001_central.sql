-- onshi central store, schema version 1: the registry with its change feed, every facility's
-- journal with its revision feed and revisit columns, outage requests, grants, facilities.
-- Applied by `onshi-reconciler migrate` in one transaction, recorded in schema_migrations.
-- Nothing here is ever deleted by onshi: ended grants and revoked facilities keep their times.
--
-- Distribution by facility (Citus/YugabyteDB, ARCHITECTURE.md): journal_records,
-- journal_feeds and journal_revisions are keyed by facility first; every transaction that writes
-- them touches one facility. The registry, grants, facilities and their counters are reference
-- data.

-- The registry: one row per qualification period, keyed as the embedded store keys it
-- (card numbers, branch, person, acquisition date). Empty text, not NULL, for a missing symbol or
-- branch, so the key is one primary-key index; "C" collation so the order is the byte order the
-- embedded store answers in.
CREATE TABLE registry_periods (
    insurer_number text COLLATE "C" NOT NULL,
    symbol         text COLLATE "C" NOT NULL,
    number         text COLLATE "C" NOT NULL,
    branch         text COLLATE "C" NOT NULL,
    person_id      text COLLATE "C" NOT NULL,
    acquired_on    date NOT NULL,
    card_id        text COLLATE "C",
    -- The period (postcard, versioned by its enum tag).
    period         bytea NOT NULL,
    PRIMARY KEY (insurer_number, symbol, number, branch, person_id, acquired_on)
);
CREATE INDEX registry_periods_by_person ON registry_periods (person_id);
CREATE INDEX registry_periods_by_card_id ON registry_periods (card_id) WHERE card_id IS NOT NULL;

-- Every period added or changed by an import, in commit order (imports take registry_state's row
-- lock first, so seq order is commit order and a follower never skips a late commit).
CREATE TABLE registry_changes (
    seq    bigint PRIMARY KEY,
    period bytea NOT NULL,
    at     timestamptz NOT NULL DEFAULT now()
);

-- One row: the change feed's last seq and the number of periods (kept by import, so a metrics
-- scrape never counts 125 million rows).
CREATE TABLE registry_state (
    id           smallint PRIMARY KEY CHECK (id = 1),
    change_seq   bigint NOT NULL,
    period_count bigint NOT NULL
);
INSERT INTO registry_state (id, change_seq, period_count) VALUES (1, 0, 0);

-- Every facility's journal: one row per record (JournalRecord::to_bytes). revisit_birth and
-- revisit_service are the revisit index (store::revisit_key), written with the record.
CREATE TABLE journal_records (
    facility        text COLLATE "C" NOT NULL,
    record_id       text COLLATE "C" NOT NULL,
    record          bytea NOT NULL,
    revisit_birth   date,
    revisit_service date,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (facility, record_id)
);
CREATE INDEX journal_records_revisit ON journal_records (revisit_birth, revisit_service)
    WHERE revisit_birth IS NOT NULL;

-- A facility's revision feed: its last seq (the row lock orders announcing transactions of one
-- facility, so seq order is commit order) and the records announced.
CREATE TABLE journal_feeds (
    facility text COLLATE "C" PRIMARY KEY,
    revision bigint NOT NULL
);
CREATE TABLE journal_revisions (
    facility  text COLLATE "C" NOT NULL,
    seq       bigint NOT NULL,
    record_id text COLLATE "C" NOT NULL,
    at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (facility, seq)
);

-- A facility's own outage declarations (requests the centre sees).
CREATE TABLE outage_requests (
    id       bigserial PRIMARY KEY,
    facility text COLLATE "C" NOT NULL,
    at       timestamptz NOT NULL,
    active   boolean NOT NULL,
    reason   text NOT NULL
);
CREATE INDEX outage_requests_by_time ON outage_requests (at, facility);

-- The centre's grants of central search.
CREATE TABLE grants (
    id         bigserial PRIMARY KEY,
    scope_kind text COLLATE "C" NOT NULL CHECK (scope_kind IN ('facility', 'prefecture')),
    scope_code text COLLATE "C" NOT NULL,
    since      timestamptz NOT NULL,
    until      timestamptz NOT NULL,
    ended_at   timestamptz
);
CREATE INDEX grants_by_scope ON grants (scope_kind, scope_code);

-- The facilities and the one certificate each may connect with.
CREATE TABLE facilities (
    code        text COLLATE "C" PRIMARY KEY,
    fingerprint text NOT NULL,
    added_at    timestamptz NOT NULL,
    revoked_at  timestamptz
);
-- One row: bumped by every change of facilities, so instances poll one number.
CREATE TABLE facilities_state (
    id      smallint PRIMARY KEY CHECK (id = 1),
    version bigint NOT NULL
);
INSERT INTO facilities_state (id, version) VALUES (1, 1);
