-- What a broker needs to pick a plan up again after a restart or on another broker: the plan as
-- submitted, where it stands, and the global model of its last committed round (a model_content
-- row) with the feature standardisation the silos agreed on. And the lease that says which of the
-- brokers sharing this store is the leader.
CREATE TABLE plan_runs (
    plan_hash TEXT PRIMARY KEY,
    plan_yaml TEXT NOT NULL,
    submitter TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('running', 'finished', 'failed', 'cancelled')),
    reason TEXT,
    checkpoint_round INTEGER,
    checkpoint_sha256 TEXT,
    standardisation TEXT,
    submitted_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
);

CREATE TABLE broker_lease (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    term INTEGER NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL
);
