-- Schema 8: provisioning in storage, read by every node at each request: the
-- MBMS User Services (Key Group of their MSK IDs, the SCF's stream
-- description as JSON) and the subscriptions (IMPU -> MBMS User Service ID).
-- The indexes serve an operator's view of one subscriber by IMPI.
CREATE TABLE mbms_services (
    service_id TEXT PRIMARY KEY,
    key_group INTEGER,
    sdp TEXT
);
CREATE TABLE subscriptions (
    impu TEXT NOT NULL,
    service_id TEXT NOT NULL,
    PRIMARY KEY (impu, service_id)
);
CREATE INDEX subscriptions_service ON subscriptions (service_id);
CREATE INDEX bootstrap_sessions_impi ON bootstrap_sessions (impi);
CREATE INDEX sip_bindings_impi ON sip_bindings (impi);
