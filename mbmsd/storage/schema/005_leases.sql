-- Schema 5: leases on singleton duties shared by the nodes of one database
-- (the MSK rotation of each MBMS User Service runs on the lease's holder).
CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires DOUBLE PRECISION NOT NULL
);
