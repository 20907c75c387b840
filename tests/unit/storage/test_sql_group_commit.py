"""
Group commit on SQLite (mbmsd.storage.sql._GroupCommit): interactions that
arrive while a transaction runs share the next one and its commit, each
under its own savepoint. Checked on a real SQLite file, with the database
"thread" run by hand so that the test decides when work happens.
"""

import shutil
import sqlite3
import tempfile

from twisted.trial.unittest import SynchronousTestCase

from mbmsd.storage import sql
from tests.support.fakes import NonThreadPool, SyncReactor, sqlite_storage


class HeldThreadPool(NonThreadPool):
    """Queues the work handed to the database thread until L{flush}."""

    def __init__(self, *a, **kw):
        NonThreadPool.__init__(self, *a, **kw)
        self.held = []

    def callInThreadWithCallback(self, onResult, func, *args, **kw):
        self.held.append((onResult, func, args, kw))

    def flush(self):
        """Run the work queued so far (not what it queues in turn)."""
        held, self.held = self.held, []
        for onResult, func, args, kw in held:
            NonThreadPool.callInThreadWithCallback(self, onResult, func, *args, **kw)
        return len(held)


class GroupCommitTests(SynchronousTestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="mbmsd-test-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.storage = sqlite_storage(self.tmp, SyncReactor())
        self.successResultOf(self.storage.open())
        self.successResultOf(self.storage.db.runInteraction(
            "create", lambda txn: txn.execute("CREATE TABLE t (n INTEGER PRIMARY KEY)")))
        self.addCleanup(self.storage.close)
        pool = self.storage.db.pool
        pool.threadpool = self.held = HeldThreadPool(pool.min, pool.max)
        self.group = self.storage.db.group
        self.path = self.storage.db.pool.connargs[0]

    def insert(self, n, fail=False, seen=None):
        def txn(t):
            t.execute("INSERT INTO t (n) VALUES (?)", (n,))
            if seen is not None:
                seen.append(n)
            if fail:
                raise ValueError("interaction %d fails" % (n,))
            return n
        return self.storage.db.runInteraction("insert", txn)

    def committed(self):
        # another connection sees only what was committed
        with sqlite3.connect(self.path) as other:
            return sorted(n for (n,) in other.execute("SELECT n FROM t"))

    def test_interactions_that_wait_share_one_transaction(self):
        before = self.group.transactions
        seen = []
        ds = [self.insert(n, seen=seen) for n in range(1, 6)]
        self.assertEqual(self.held.flush(), 1)  # the first ran alone
        self.assertEqual(self.successResultOf(ds[0]), 1)
        for d in ds[1:]:
            self.assertNoResult(d)  # nothing acknowledged before its commit
        self.assertEqual(self.committed(), [1])
        self.assertEqual(self.held.flush(), 1)  # the other four: one transaction
        self.assertEqual([self.successResultOf(d) for d in ds[1:]], [2, 3, 4, 5])
        self.assertEqual(seen, [1, 2, 3, 4, 5])  # in the order they came
        self.assertEqual(self.committed(), [1, 2, 3, 4, 5])
        self.assertEqual(self.group.transactions - before, 2)

    def test_a_failing_interaction_is_rolled_back_alone(self):
        first = self.insert(1)
        ds = [self.insert(2), self.insert(3, fail=True), self.insert(4)]
        self.held.flush()
        self.held.flush()
        self.successResultOf(first)
        self.assertEqual(self.successResultOf(ds[0]), 2)
        self.failureResultOf(ds[1], ValueError)
        self.assertEqual(self.successResultOf(ds[2]), 4)
        self.assertEqual(self.committed(), [1, 2, 4])

    def test_later_interactions_see_earlier_ones_of_the_same_transaction(self):
        self.insert(1)
        self.insert(2)
        count = self.storage.db.runInteraction(
            "count", lambda t: t.execute("SELECT COUNT(*) FROM t").fetchone()[0])
        self.held.flush()
        self.held.flush()
        self.assertEqual(self.successResultOf(count), 2)

    def test_a_failed_commit_fails_every_interaction_and_keeps_nothing(self):
        self.insert(1)
        ds = [self.insert(2), self.insert(3)]
        original = sql._GroupCommit.__dict__["_together"]  # the staticmethod itself
        self.addCleanup(setattr, sql._GroupCommit, "_together", original)
        real = sql._GroupCommit._together

        def commitFails(cursor, interactions):
            real(cursor, interactions)
            raise sqlite3.OperationalError("disk I/O error")  # as a failing COMMIT would

        sql._GroupCommit._together = staticmethod(commitFails)
        self.held.flush()
        self.held.flush()
        for d in ds:
            self.failureResultOf(d, sqlite3.OperationalError)
        self.assertEqual(self.committed(), [1])
        # and the next interaction runs on
        sql._GroupCommit._together = original
        d = self.insert(5)
        self.held.flush()
        self.assertEqual(self.successResultOf(d), 5)

    def test_a_batch_holds_at_most_maxBatch(self):
        self.patch(sql._GroupCommit, "maxBatch", 3)
        before = self.group.transactions
        ds = [self.insert(n) for n in range(1, 9)]
        while self.held.flush():
            pass
        self.assertEqual([self.successResultOf(d) for d in ds], list(range(1, 9)))
        self.assertEqual(self.group.transactions - before, 4)  # 1, then 3, 3, 1

    def test_postgresql_does_not_group(self):
        from mbmsd.storage.postgresql import PostgresEngine
        self.assertFalse(PostgresEngine.group_commit)
        self.assertIsNone(sql.Database(PostgresEngine(), None, None).group)
