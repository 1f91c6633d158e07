-- The audit chain: append-only, each record hashing the previous one (see AuditChain.swift).
CREATE TABLE audit_records (
    seq INTEGER PRIMARY KEY,
    at DOUBLE PRECISION NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    subject TEXT NOT NULL,
    payload TEXT NOT NULL,
    previous_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);

-- Consent per data set: purpose, legal basis, scope, validity, withdrawal.
CREATE TABLE consents (
    id TEXT PRIMARY KEY,
    dataset TEXT NOT NULL,
    purpose TEXT NOT NULL,
    legal_basis TEXT NOT NULL,
    scope TEXT NOT NULL,
    valid_from DOUBLE PRECISION NOT NULL,
    valid_until DOUBLE PRECISION,
    withdrawn_at DOUBLE PRECISION
);

CREATE INDEX consents_by_dataset ON consents (dataset);
