-- Signed heads of the audit chain: at intervals each party signs (sequence, hash) of its chain's
-- last record with its certificate's key. Rewriting or truncating the chain then needs that key,
-- not only write access to the database; another party's copy of a head (a witness) also catches
-- a chain cut back together with its heads.
CREATE TABLE audit_heads (
    signer TEXT NOT NULL,
    seq INTEGER NOT NULL,
    hash TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL,
    certificate TEXT NOT NULL,
    signature TEXT NOT NULL,
    PRIMARY KEY (signer, seq)
);

-- Other parties' signed heads this party received (the broker's at a silo, each silo's at the
-- broker), kept to check their trails against: `fedgate audit heads --witnessed`.
CREATE TABLE audit_witnessed (
    signer TEXT NOT NULL,
    seq INTEGER NOT NULL,
    hash TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL,
    certificate TEXT NOT NULL,
    signature TEXT NOT NULL,
    received_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (signer, seq)
);
