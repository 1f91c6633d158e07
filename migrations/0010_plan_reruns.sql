-- A plan (by content hash) may run again after a run of it ended: each run has its number, and a
-- run's rounds are kept apart from the earlier runs' (round 1 of run 2 is not round 1 of run 1).
-- The rounds of runs before this migration belong to run 1.
ALTER TABLE plan_runs ADD COLUMN run INTEGER NOT NULL DEFAULT 1;

CREATE TABLE plan_rounds (
    plan_hash TEXT NOT NULL,
    run INTEGER NOT NULL,
    number INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('planned', 'offered', 'training', 'aggregating', 'evaluating', 'committed', 'aborted')),
    sampled TEXT NOT NULL,
    survivors TEXT NOT NULL,
    deadline DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (plan_hash, run, number)
);

INSERT INTO plan_rounds (plan_hash, run, number, state, sampled, survivors, deadline, updated_at)
    SELECT plan_hash, 1, number, state, sampled, survivors, deadline, updated_at FROM rounds;

DROP TABLE rounds;
