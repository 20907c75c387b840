-- Schema 10: the subscriptions' tel: IMPUs in the one comparable form of
-- protocols/identity.py (RFC 3966 4: visual separators are not part of the
-- number, hex digits in upper case). Rows written before kept them, and the
-- SCF's lookup by the normalized asserted identity would miss them.
INSERT INTO subscriptions (impu, service_id)
    SELECT 'tel:' || upper(replace(replace(replace(replace(substr(impu, 5), '-', ''), '.', ''),
                                           '(', ''), ')', '')), service_id
    FROM subscriptions
    WHERE impu LIKE 'tel:%'
ON CONFLICT DO NOTHING;
DELETE FROM subscriptions
    WHERE impu LIKE 'tel:%'
      AND impu <> 'tel:' || upper(replace(replace(replace(replace(substr(impu, 5), '-', ''), '.', ''),
                                                   '(', ''), ')', ''));
