-- Schema 1: subscribers (Zh data kept in-process) and GBA state of the BSF.
-- One dialect for SQLite and PostgreSQL; BLOB becomes BYTEA on PostgreSQL.
CREATE TABLE subscribers (
    impi TEXT PRIMARY KEY,
    impus TEXT NOT NULL,
    k BLOB NOT NULL,
    opc BLOB NOT NULL,
    amf BLOB NOT NULL,
    sqn BIGINT NOT NULL,
    gba_type TEXT NOT NULL
);
CREATE TABLE ub_challenges (
    nonce TEXT PRIMARY KEY,
    impi TEXT NOT NULL,
    rand BLOB NOT NULL,
    xres BLOB NOT NULL,
    ck BLOB NOT NULL,
    ik BLOB NOT NULL,
    expires DOUBLE PRECISION NOT NULL
);
CREATE INDEX ub_challenges_expires ON ub_challenges (expires);
CREATE TABLE bootstrap_sessions (
    btid TEXT PRIMARY KEY,
    impi TEXT NOT NULL,
    rand BLOB NOT NULL,
    ks BLOB NOT NULL,
    created DOUBLE PRECISION NOT NULL,
    expires DOUBLE PRECISION NOT NULL,
    gba_type TEXT NOT NULL
);
CREATE INDEX bootstrap_sessions_expires ON bootstrap_sessions (expires);
