-- Schema 3: the P-CSCF's registrar (TS 24.229 5.2.2): REGISTER challenges
-- (Digest AKA, one use per nonce) and the bindings of registered IMPUs.
-- One dialect for SQLite and PostgreSQL; BLOB becomes BYTEA on PostgreSQL.
CREATE TABLE sip_challenges (
    nonce TEXT PRIMARY KEY,
    impi TEXT NOT NULL,
    rand BLOB NOT NULL,
    xres BLOB NOT NULL,
    ck BLOB NOT NULL,
    ik BLOB NOT NULL,
    expires DOUBLE PRECISION NOT NULL
);
CREATE INDEX sip_challenges_expires ON sip_challenges (expires);
CREATE TABLE sip_bindings (
    impu TEXT NOT NULL,
    contact TEXT NOT NULL,
    impi TEXT NOT NULL,
    associated TEXT NOT NULL,
    transport TEXT NOT NULL,
    host TEXT NOT NULL,
    port INTEGER NOT NULL,
    expires DOUBLE PRECISION NOT NULL,
    call_id TEXT NOT NULL,
    cseq BIGINT NOT NULL,
    registered DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (impu, contact)
);
CREATE INDEX sip_bindings_source ON sip_bindings (host, port, transport);
CREATE INDEX sip_bindings_expires ON sip_bindings (expires);
