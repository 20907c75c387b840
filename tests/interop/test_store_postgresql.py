"""
The PostgreSQL backend keeps the same storage contract as memory and SQLite,
on a real PostgreSQL server (tests/support/pg.py), with adbapi made synchronous.
"""

import pytest
from twisted.trial.unittest import SynchronousTestCase

from tests.support.fakes import NonThreadPool, SyncReactor
from tests.support.store_contract import (
    BmscStoreContract,
    BootstrapStoreContract,
    LeaseStoreContract,
    ProvisioningStoreContract,
    SubscriberStoreContract,
    subscriber,
)
from tests.unit.storage.test_sipreg import SipRegistrationStoreContract

pytestmark = pytest.mark.external


def postgres_storage(reactor):
    from mbmsd.storage.postgresql import PostgresStorageFactory
    from tests.support import pg

    url = pg.dsn()
    pg.reset(url)
    storage = PostgresStorageFactory().open(
        {"dsn": url, "pool_min": 1, "pool_max": 1, "connect_timeout": 5,
         "key_file": pg.key_file()}, reactor)
    pool = storage.db.pool
    pool.threadpool.stop()
    pool.threadpool = NonThreadPool(pool.min, pool.max)
    pool.threadpool.start()
    return storage


class _Postgres:
    def makeStorage(self):
        self.reactor = SyncReactor()
        storage = postgres_storage(self.reactor)
        self.addCleanup(storage.close)
        return storage


class PostgresSubscriberStoreTests(_Postgres, SubscriberStoreContract, SynchronousTestCase):
    pass


class PostgresBootstrapStoreTests(_Postgres, BootstrapStoreContract, SynchronousTestCase):
    pass


class PostgresBmscStoreTests(_Postgres, BmscStoreContract, SynchronousTestCase):
    pass


class PostgresLeaseStoreTests(_Postgres, LeaseStoreContract, SynchronousTestCase):
    pass


class PostgresSchemaTests(SynchronousTestCase):
    def test_reopen_keeps_data_and_applies_nothing(self):
        reactor = SyncReactor()
        storage = postgres_storage(reactor)
        self.successResultOf(storage.open())
        self.successResultOf(storage.subscribers.provision(subscriber()))
        storage.close()
        from mbmsd.storage.postgresql import PostgresStorageFactory
        from tests.support import pg

        again = PostgresStorageFactory().open(
            {"dsn": pg.dsn(), "pool_min": 1, "pool_max": 1, "connect_timeout": 5,
             "key_file": pg.key_file()}, reactor)
        pool = again.db.pool
        pool.threadpool.stop()
        pool.threadpool = NonThreadPool(pool.min, pool.max)
        pool.threadpool.start()
        self.addCleanup(again.close)
        self.successResultOf(again.open())
        got = self.successResultOf(again.subscribers.get(subscriber().impi))
        self.assertEqual(got, subscriber())

    def test_blob_columns_are_bytea(self):
        import psycopg

        from tests.support import pg

        storage = postgres_storage(SyncReactor())
        self.addCleanup(storage.close)
        self.successResultOf(storage.open())
        with psycopg.connect(pg.dsn()) as conn:
            kind = conn.execute(
                "SELECT data_type FROM information_schema.columns "
                "WHERE table_name = 'subscribers' AND column_name = 'k'").fetchone()[0]
        self.assertEqual(kind, "bytea")


class PostgresConnectionLossTests(SynchronousTestCase):
    def test_lost_connection_is_retried_and_nothing_is_lost(self):
        """
        The server drops our connection (a failover, a restart): the next
        interaction fails once, is retried with backoff on a new connection,
        and succeeds; what was written before is there.
        """
        import psycopg

        from tests.support import pg

        reactor = SyncReactor()
        storage = postgres_storage(reactor)
        self.addCleanup(storage.close)
        self.successResultOf(storage.open())
        self.successResultOf(storage.subscribers.provision(subscriber()))
        with psycopg.connect(pg.dsn(), autocommit=True) as admin:
            killed = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE pid <> pg_backend_pid() AND datname = current_database()").fetchone()[0]
        self.assertGreaterEqual(killed, 1)
        d = storage.subscribers.nextSqn(subscriber().impi)
        self.assertNoResult(d)  # failed once, waiting to retry
        reactor.advance(storage.db.retryDelays[0])
        self.assertEqual(self.successResultOf(d), subscriber().sqn + 1)
        # adbapi itself logs the failed rollback on the dead connection
        self.flushLoggedErrors()


class PostgresProvisioningStoreTests(_Postgres, ProvisioningStoreContract, SynchronousTestCase):
    pass


class PostgresSipRegistrationStoreTests(_Postgres, SipRegistrationStoreContract, SynchronousTestCase):
    pass
