-- Schema 9: a value kept per lease across its holders (the MSK ID each
-- rotation shard pushed last, so a takeover knows what is left to push).
CREATE TABLE lease_marks (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
