-- Schema 4: keys at rest are sealed under the node key (docs/design.md 5.4). One
-- sealed known value tells at start-up whether the key file opens this
-- database's keys.
CREATE TABLE node_key_check (
    id INTEGER PRIMARY KEY,
    sealed BLOB NOT NULL
);
