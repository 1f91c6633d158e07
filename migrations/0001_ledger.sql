-- The privacy-budget ledger. Portable SQL: applied as is on SQLite and PostgreSQL.
-- ε is never stored: entries hold DP events (the privacy core's canonical JSON); accountants derive ε.
CREATE TABLE datasets (
    name TEXT PRIMARY KEY,
    delta DOUBLE PRECISION NOT NULL,
    per_plan_cap DOUBLE PRECISION NOT NULL,
    window_days INTEGER,
    window_cap DOUBLE PRECISION,
    lifetime_cap DOUBLE PRECISION
);

CREATE TABLE ledger_entries (
    id TEXT PRIMARY KEY,
    dataset TEXT NOT NULL REFERENCES datasets(name),
    plan_hash TEXT NOT NULL,
    round INTEGER NOT NULL,
    event TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('reserved', 'committed', 'released')),
    created_at DOUBLE PRECISION NOT NULL,
    settled_at DOUBLE PRECISION
);

CREATE INDEX ledger_entries_by_dataset ON ledger_entries (dataset, state);
