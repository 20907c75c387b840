"""
The SQLite backend keeps the storage contract, on a real database file with
adbapi made synchronous (tests/fakes.sqlite_storage), and its schema handling
does what an operator relies on across restarts and upgrades.
"""

import os
import shutil
import sqlite3
import tempfile

from twisted.trial.unittest import SynchronousTestCase

from mbmsd.storage.sql import SchemaError, migrate_txn, schema_files
from tests.support.fakes import SyncReactor, sqlite_storage
from tests.support.store_contract import (
    BmscStoreContract,
    BootstrapStoreContract,
    LeaseStoreContract,
    ProvisioningStoreContract,
    SubscriberStoreContract,
    authorization,
    msk,
    registration,
    session,
    subscriber,
)


class _TempDir:
    def makeStorage(self):
        self.tmp = tempfile.mkdtemp(prefix="mbmsd-test-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.reactor = SyncReactor()
        return sqlite_storage(self.tmp, self.reactor)


class SqliteSubscriberStoreTests(_TempDir, SubscriberStoreContract, SynchronousTestCase):
    pass


class SqliteBootstrapStoreTests(_TempDir, BootstrapStoreContract, SynchronousTestCase):
    pass


class SqliteBmscStoreTests(_TempDir, BmscStoreContract, SynchronousTestCase):
    pass


class SqliteLeaseStoreTests(_TempDir, LeaseStoreContract, SynchronousTestCase):
    pass


def query(storage, sql, args=()):
    return storage.db.runInteraction(
        "test_query", lambda txn: txn.execute(sql, args).fetchall()
    )


class SqliteSchemaTests(SynchronousTestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="mbmsd-test-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.reactor = SyncReactor()
        self.latest = schema_files()[-1][0]

    def open(self):
        storage = sqlite_storage(self.tmp, self.reactor)
        self.successResultOf(storage.open())
        return storage

    def close(self, storage):
        self.successResultOf(storage.close())

    def test_schemaVersionRecorded(self):
        storage = self.open()
        rows = self.successResultOf(query(storage, "SELECT version FROM schema_version"))
        self.assertEqual(rows, [(v,) for v, _, _ in schema_files()])
        self.assertEqual(rows[-1], (self.latest,))
        self.close(storage)

    def test_reopenKeepsDataAndAppliesNothing(self):
        """
        A restart on the same file: the schema is not applied again (no
        "table already exists", no second version row) and what was stored,
        including an advanced SQN, is still there.
        """
        storage = self.open()
        self.successResultOf(storage.subscribers.provision(subscriber(sqn=7)))
        self.assertEqual(self.successResultOf(storage.subscribers.nextSqn("user1@home1.net")), 8)
        s = session()
        self.successResultOf(storage.bootstrap.putSession(s))
        self.close(storage)

        again = self.open()
        rows = self.successResultOf(query(again, "SELECT version FROM schema_version"))
        self.assertEqual(rows, [(v,) for v, _, _ in schema_files()])
        self.assertEqual(
            self.successResultOf(again.subscribers.get("user1@home1.net")), subscriber(sqn=8)
        )
        self.assertEqual(self.successResultOf(again.bootstrap.getSession(s.btid)), s)
        # re-provisioning from config after the restart keeps the SQN
        self.successResultOf(again.subscribers.provision(subscriber(sqn=7)))
        self.assertEqual(self.successResultOf(again.subscribers.nextSqn("user1@home1.net")), 9)
        self.close(again)

    def test_reopenKeepsBmscStateAndCounters(self):
        """
        A restart on the same file keeps the BM-SC's authorizations,
        registrations and MSKs (byte-exact), and each MUK's MIKEY counter
        carries on from where it was: a counter that went back would make the
        UE reject the next MSK push as a replay (TS 33.246).
        """
        storage = self.open()
        a = authorization()
        r = registration()
        m = msk(keyDomainId=b"\x00\xf1\x10", mskId=b"\x00\x01\x00\x00",
                key=b"\x00\xff" * 8, created=100.5, expires=3700.25)
        self.successResultOf(storage.bmsc.putAuthorization(a))
        self.successResultOf(storage.bmsc.putRegistration(r))
        self.successResultOf(storage.bmsc.putMsk(m))
        for expected in (1, 2, 3):
            self.assertEqual(self.successResultOf(storage.bmsc.nextCounter("idi|btid-a")),
                             expected)
        self.assertEqual(self.successResultOf(storage.bmsc.nextCounter("idi|btid-b")), 1)
        self.assertEqual(self.successResultOf(storage.bmsc.reserveCounters({"idi|btid-d": 16})),
                         {"idi|btid-d": 16})
        self.close(storage)

        again = self.open()
        self.assertEqual(
            self.successResultOf(again.bmsc.getAuthorization(a.impu, a.serviceId)), a)
        self.assertEqual(
            self.successResultOf(again.bmsc.getRegistration(r.impu, r.serviceId)), r)
        self.assertEqual(self.successResultOf(again.bmsc.registrationsFor(r.serviceId)), [r])
        self.assertEqual(self.successResultOf(again.bmsc.getMsk(m.keyDomainId, m.mskId)), m)
        self.assertEqual(self.successResultOf(again.bmsc.currentMsk(m.serviceId, 200.0)), m)
        self.assertEqual(self.successResultOf(again.bmsc.lastMskNumber(m.serviceId)),
                         0x00010000)
        self.assertEqual(self.successResultOf(again.bmsc.nextCounter("idi|btid-a")), 4)
        self.assertEqual(self.successResultOf(again.bmsc.nextCounter("idi|btid-b")), 2)
        self.assertEqual(self.successResultOf(again.bmsc.nextCounter("idi|btid-c")), 1)
        # a reserved block stays taken across the restart, used or not
        self.assertEqual(self.successResultOf(again.bmsc.nextCounter("idi|btid-d")), 17)
        self.close(again)

    def test_registrationsFromBeforeSchema6KeepTheirMuk(self):
        """
        An MSK registration written before the Ua id was stored was made
        with TS 33.246's 01 00 00 00 01 (what mbmsd derived then): after the
        upgrade it still says so, so the pushes use the MUK the UE holds.
        """
        storage = sqlite_storage(self.tmp, self.reactor)
        old = [f for f in schema_files() if f[0] < 6]
        self.successResultOf(storage.db.runInteraction("migrate", migrate_txn, old))
        self.successResultOf(query(
            storage, "INSERT INTO bmsc_registrations (impu, service_id, btid, ue_address, "
            "expires) VALUES (?, ?, ?, ?, ?)",
            ("sip:user1@home1.net", "svc-1", "b-1@bsf.home1.net", "10.0.0.1", 3000.0)))
        self.close(storage)
        again = self.open()
        got = self.successResultOf(again.bmsc.getRegistration("sip:user1@home1.net", "svc-1"))
        self.assertEqual(got.uaId, bytes.fromhex("0100000001"))
        self.assertEqual(got.btid, "b-1@bsf.home1.net")
        self.close(again)

    def test_newerSchemaRefused(self):
        storage = self.open()
        self.successResultOf(
            query(storage, "INSERT INTO schema_version (version) VALUES (?)", (self.latest + 1,))
        )
        self.close(storage)

        newer = sqlite_storage(self.tmp, self.reactor)
        failure = self.failureResultOf(newer.open(), SchemaError)
        self.assertIn(str(self.latest + 1), str(failure.value))
        self.assertIn("upgrade mbmsd", str(failure.value))
        self.close(newer)

    def test_databaseFilesAreTheNodesOnly(self):
        """A new database and its WAL are readable by mbmsd's user alone."""
        import stat

        storage = self.open()
        self.successResultOf(storage.subscribers.provision(subscriber()))
        path = os.path.join(self.tmp, "mbmsd.sqlite3")
        for name in (path, path + "-wal"):
            self.assertEqual(stat.S_IMODE(os.stat(name).st_mode), 0o600, name)
        self.close(storage)

    def test_walJournalMode(self):
        storage = self.open()
        self.assertEqual(
            self.successResultOf(query(storage, "PRAGMA journal_mode")), [("wal",)]
        )
        # synchronous = FULL is 2
        self.assertEqual(self.successResultOf(query(storage, "PRAGMA synchronous")), [(2,)])
        self.close(storage)

    def test_telImpusOfEarlierSchemasNormalized(self):
        """
        Schema 10: subscriptions written before it with a tel: IMPU that kept
        its visual separators (RFC 3966 4) come out in the one comparable form
        the SCF looks up, a duplicate of a row already in that form merges,
        and sip: rows are left alone.
        """
        storage = self.open()
        rows = [("tel:+358-50-123", "urn:a"), ("tel:+35850123", "urn:b"),
                ("tel:(0)12.3a", "urn:a"), ("tel:+358-50-123", "urn:b"),
                ("sip:User1@home1.net", "urn:a")]
        for impu, sid in rows:
            self.successResultOf(query(
                storage, "INSERT INTO subscriptions (impu, service_id) VALUES (?, ?)", (impu, sid)))
        self.successResultOf(query(storage, "DELETE FROM schema_version WHERE version = 10"))
        self.close(storage)
        again = self.open()
        got = self.successResultOf(query(
            again, "SELECT impu, service_id FROM subscriptions ORDER BY impu, service_id"))
        self.assertEqual(got, [("sip:User1@home1.net", "urn:a"), ("tel:+35850123", "urn:a"),
                               ("tel:+35850123", "urn:b"), ("tel:0123A", "urn:a")])
        from mbmsd.protocols.identity import normalize_impu
        self.assertEqual({normalize_impu(i) for i, _ in got if i.startswith("tel:")},
                         {i for i, _ in got if i.startswith("tel:")})
        self.close(again)

    def test_failedMigrationLeavesNothing(self):
        """
        A schema file that fails half-way is rolled back whole: no table of it
        stays behind, its version is not recorded, and the corrected file
        applies on the next start (instead of "table already exists" forever).
        """
        storage = self.open()
        files = schema_files()
        nxt = self.latest + 1
        broken = files + [(nxt, "%03d_broken.sql" % nxt,
                           "CREATE TABLE extra (x INTEGER);\n"
                           "CREATE TABLE subscribers (impi TEXT)")]
        self.failureResultOf(
            storage.db.runInteraction("migrate", migrate_txn, broken), sqlite3.OperationalError
        )
        tables = self.successResultOf(
            query(storage, "SELECT name FROM sqlite_master WHERE type = 'table'")
        )
        self.assertNotIn(("extra",), tables)
        self.assertEqual(
            self.successResultOf(query(storage, "SELECT MAX(version) FROM schema_version")),
            [(self.latest,)],
        )
        fixed = files + [(nxt, "%03d_fixed.sql" % nxt, "CREATE TABLE extra (x INTEGER)")]
        self.successResultOf(storage.db.runInteraction("migrate", migrate_txn, fixed))
        self.assertIn(("extra",), self.successResultOf(
            query(storage, "SELECT name FROM sqlite_master WHERE type = 'table'")))
        self.assertEqual(
            self.successResultOf(query(storage, "SELECT MAX(version) FROM schema_version")),
            [(nxt,)],
        )
        self.close(storage)


class SqliteProvisioningStoreTests(_TempDir, ProvisioningStoreContract, SynchronousTestCase):
    pass
