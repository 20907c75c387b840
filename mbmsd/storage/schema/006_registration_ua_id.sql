-- Schema 6: the Ua security protocol id (TS 33.220 H.3, hex) of each MSK
-- registration, whose Ks_NAF is the MUK. Rows from before were made with
-- TS 33.246's 01 00 00 00 01.
ALTER TABLE bmsc_registrations ADD COLUMN ua_id TEXT NOT NULL DEFAULT '0100000001';
