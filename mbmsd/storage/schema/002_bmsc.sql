-- Schema 2: the BM-SC.UPF (TS 26.237 10.2.4, TS 33.246 6.3).
CREATE TABLE bmsc_authorizations (
    impu TEXT NOT NULL,
    service_id TEXT NOT NULL,
    ue_address TEXT NOT NULL,
    expires DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (impu, service_id)
);
CREATE INDEX bmsc_authorizations_expires ON bmsc_authorizations (expires);
CREATE TABLE bmsc_registrations (
    impu TEXT NOT NULL,
    service_id TEXT NOT NULL,
    btid TEXT NOT NULL,
    ue_address TEXT NOT NULL,
    expires DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (impu, service_id)
);
CREATE INDEX bmsc_registrations_service ON bmsc_registrations (service_id);
CREATE TABLE bmsc_msks (
    key_domain_id BLOB NOT NULL,
    msk_id BIGINT NOT NULL,
    service_id TEXT NOT NULL,
    msk BLOB NOT NULL,
    created DOUBLE PRECISION NOT NULL,
    expires DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (key_domain_id, msk_id)
);
CREATE INDEX bmsc_msks_service ON bmsc_msks (service_id, created);
CREATE TABLE bmsc_mikey_counters (
    muk_id TEXT PRIMARY KEY,
    counter BIGINT NOT NULL
);
