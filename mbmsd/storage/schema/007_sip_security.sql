-- Schema 7: the SIP-based security procedure (TS 26.237 Annex I.2): a
-- registration made by the SCF carries the MUK it handed over (sealed under
-- the node key), the MUK's expiry and the NAF FQDN it belongs to; NULL for
-- registrations of the HTTP-based procedure (their MUK comes from Zn).
ALTER TABLE bmsc_registrations ADD COLUMN muk BLOB;
ALTER TABLE bmsc_registrations ADD COLUMN muk_expires DOUBLE PRECISION;
ALTER TABLE bmsc_registrations ADD COLUMN naf_fqdn TEXT;
