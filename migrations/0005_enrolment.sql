-- One-time enrolment invitations: a silo presents the token (stored only as its SHA-256) with its
-- CSR; the broker signs once, before the expiry, for the named silo only.
CREATE TABLE enrolment_invitations (
    token_sha256 TEXT PRIMARY KEY,
    silo TEXT NOT NULL,
    region TEXT NOT NULL,
    jurisdiction TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL,
    used_at DOUBLE PRECISION
);
