-- onshi central store, schema version 2: central search's index in the store (issue 17), so a
-- central search reads a bounded set of candidates instead of an index of everyone held in each
-- instance's memory.
--
-- One row per period and key: the empty key (by birth date alone) and each name key of the
-- period (family, given and whole name, of the name and of the kana reading: store::search_keys),
-- with the birth date and the sex code (1 male, 2 female, 3 unset). The primary key serves every
-- block of a search: (key '', date) for the people born on a day, (key, date) for a misread date,
-- (key, date range) for the key's people born nearest a date. Written by `import` in the
-- period's own transaction. A reference table, like the registry (ARCHITECTURE.md, Sharding).
--
-- The keys are computed in Rust (Unicode normalisation, kana folding): `onshi-reconciler migrate`
-- fills the table from registry_periods right after this file, in the same transaction, and
-- again whenever registry_search_state.keys_version is not the binary's.
CREATE TABLE registry_search (
    key        text COLLATE "C" NOT NULL,
    birth_date date NOT NULL,
    person_id  text COLLATE "C" NOT NULL,
    sex        smallint NOT NULL,
    PRIMARY KEY (key, birth_date, person_id)
);

-- One row: the version of the key rules registry_search was filled with (0: not yet).
CREATE TABLE registry_search_state (
    id           smallint PRIMARY KEY CHECK (id = 1),
    keys_version integer NOT NULL
);
INSERT INTO registry_search_state (id, keys_version) VALUES (1, 0);
