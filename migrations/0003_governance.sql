-- Policy versions and plans by content hash, and the approval queue of plans waiting for a person.
CREATE TABLE policy_versions (
    hash TEXT PRIMARY KEY,
    silo TEXT NOT NULL,
    content TEXT NOT NULL,
    recorded_at DOUBLE PRECISION NOT NULL
);

CREATE TABLE plans (
    hash TEXT PRIMARY KEY,
    content TEXT NOT NULL,
    recorded_at DOUBLE PRECISION NOT NULL
);

CREATE TABLE approvals (
    plan_hash TEXT NOT NULL REFERENCES plans(hash),
    silo TEXT NOT NULL,
    policy_hash TEXT NOT NULL REFERENCES policy_versions(hash),
    state TEXT NOT NULL CHECK (state IN ('pending', 'approved', 'rejected')),
    requested_at DOUBLE PRECISION NOT NULL,
    valid_hours INTEGER NOT NULL,
    decided_by TEXT,
    decided_at DOUBLE PRECISION,
    PRIMARY KEY (plan_hash, silo)
);
