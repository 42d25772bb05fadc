-- onshi central store, schema version 3: each facility's access-log chain (issue 18), so that an
-- edge whose log was rewritten, even re-chained consistently, is seen at the centre.
--
-- The edge sends, with its syncs, the links of its access log: (seq, prev, hash), SHA-256 each,
-- never an entry's content. The centre appends those that continue what it holds, and records
-- where the edge's log departs from it (crate::audit). Keyed by facility first, and every
-- transaction touches one facility (ARCHITECTURE.md, Sharding). Nothing here is ever deleted.
CREATE TABLE audit_links (
    facility    text COLLATE "C" NOT NULL,
    seq         bigint NOT NULL CHECK (seq >= 0),
    prev        bytea NOT NULL CHECK (length(prev) = 32),
    hash        bytea NOT NULL CHECK (length(hash) = 32),
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (facility, seq)
);

-- One row per facility that sent a chain: links held (0 .. next) and the break recorded, if any
-- (break_seq: the first entry known to differ; break_agreed_below: entries below it known to
-- agree; equal once narrowed to the exact entry). Its row lock serialises a facility's reports
-- across every instance.
CREATE TABLE audit_chains (
    facility           text COLLATE "C" PRIMARY KEY,
    next               bigint NOT NULL CHECK (next >= 0),
    break_seq          bigint,
    break_kind         text CHECK (break_kind IN ('rewritten', 'removed')),
    break_agreed_below bigint,
    break_at           timestamptz,
    CHECK ((break_seq IS NULL) = (break_kind IS NULL)
       AND (break_seq IS NULL) = (break_agreed_below IS NULL)
       AND (break_seq IS NULL) = (break_at IS NULL))
);
