-- Revocations beyond enrolled parties: any certificate the consortium CA issued (people's
-- included) by its SHA-256 fingerprint or serial number, and whole identities (every certificate
-- that carries the id). The broker refuses them at the handshake and closes their connections.
CREATE TABLE revocations (
    kind TEXT NOT NULL CHECK (kind IN ('identity', 'sha256', 'serial')),
    value TEXT NOT NULL,
    reason TEXT NOT NULL,
    revoked_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (kind, value)
);
