-- Silos and brokers with their certificates' fingerprints and residency, rounds, and model versions.
CREATE TABLE parties (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('silo', 'broker')),
    region TEXT NOT NULL,
    jurisdiction TEXT NOT NULL,
    certificate_sha256 TEXT NOT NULL,
    enrolled_at DOUBLE PRECISION NOT NULL,
    revoked_at DOUBLE PRECISION
);

CREATE TABLE rounds (
    plan_hash TEXT NOT NULL,
    number INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('planned', 'offered', 'training', 'aggregating', 'evaluating', 'committed', 'aborted')),
    sampled TEXT NOT NULL,
    survivors TEXT NOT NULL,
    deadline DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (plan_hash, number)
);

CREATE TABLE model_versions (
    version INTEGER PRIMARY KEY,
    plan_hash TEXT NOT NULL,
    round INTEGER NOT NULL,
    content_sha256 TEXT NOT NULL,
    participants TEXT NOT NULL,
    epsilon_per_silo TEXT NOT NULL,
    metrics TEXT NOT NULL,
    parent INTEGER,
    created_at DOUBLE PRECISION NOT NULL
);
