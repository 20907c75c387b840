"""
The fakes of tests/support/fakes.py prove themselves (docs/design.md 3): they provide the
interfaces they stand in for, their signatures match the real thing, and
adbapi over them really is synchronous and really reports errors.
"""

import inspect
import tempfile
import threading

from twisted.enterprise import adbapi
from twisted.internet.interfaces import (
    IReactorCore,
    IReactorFromThreads,
    IReactorInThreads,
    IReactorThreads,
    IReactorTime,
)
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from tests.support.fakes import NonThreadPool, SyncReactor, sqlite_storage


class Boom(Exception):
    pass


class NonThreadPoolTests(SynchronousTestCase):
    def test_signaturesMatchThreadPool(self):
        """
        Every method adbapi and deferToThreadPool call has the real pool's
        signature, so code that works against the fake calls the real one
        the same way.
        """
        for name in ("__init__", "start", "stop", "callInThread",
                     "callInThreadWithCallback", "adjustPoolsize"):
            real = inspect.signature(getattr(ThreadPool, name))
            fake = inspect.signature(getattr(NonThreadPool, name))
            self.assertEqual(
                list(fake.parameters), list(real.parameters),
                "NonThreadPool.%s%s != ThreadPool.%s%s" % (name, fake, name, real),
            )

    def test_runsNowInThisThread(self):
        pool = NonThreadPool()
        pool.start()
        seen = []
        pool.callInThreadWithCallback(
            lambda ok, result: seen.append((ok, result)),
            lambda a, b=0: (threading.get_ident(), a + b), 1, b=2,
        )
        self.assertEqual(seen, [(True, (threading.get_ident(), 3))])

    def test_exceptionReportedAsFailure(self):
        pool = NonThreadPool()
        seen = []

        def fail():
            raise Boom("x")

        pool.callInThreadWithCallback(lambda ok, result: seen.append((ok, result)), fail)
        [(ok, failure)] = seen
        self.assertFalse(ok)
        self.assertTrue(failure.check(Boom))

    def test_startStop(self):
        pool = NonThreadPool()
        self.assertFalse(pool.started)
        pool.start()
        self.assertTrue(pool.started)
        pool.stop()
        self.assertFalse(pool.started)
        self.assertTrue(pool.joined)


class SyncReactorTests(SynchronousTestCase):
    def test_interfaces(self):
        reactor = SyncReactor()
        for iface in (IReactorTime, IReactorThreads, IReactorFromThreads, IReactorInThreads):
            self.assertTrue(verifyObject(iface, reactor), iface)

    def test_coreSliceSignatures(self):
        """
        The IReactorCore methods it has (not the whole interface: there is no
        run/stop) take what the real ones take.
        """
        for name in ("callWhenRunning", "addSystemEventTrigger", "removeSystemEventTrigger"):
            want = IReactorCore[name].getSignatureInfo()
            params = list(inspect.signature(getattr(SyncReactor, name)).parameters.values())[1:]
            positional = tuple(p.name for p in params if p.kind == p.POSITIONAL_OR_KEYWORD)
            varargs = [p.name for p in params if p.kind == p.VAR_POSITIONAL]
            kwargs = [p.name for p in params if p.kind == p.VAR_KEYWORD]
            self.assertEqual(positional, want["positional"], name)
            self.assertEqual(varargs[0] if varargs else None, want["varargs"], name)
            self.assertEqual(kwargs[0] if kwargs else None, want["kwargs"], name)

    def test_clockStillWorks(self):
        reactor = SyncReactor()
        calls = []
        reactor.callLater(5, calls.append, "late")
        reactor.advance(4.9)
        self.assertEqual(calls, [])
        reactor.advance(0.1)
        self.assertEqual(calls, ["late"])

    def test_callFromThreadAndWhenRunningRunAtOnce(self):
        reactor = SyncReactor()
        calls = []
        reactor.callFromThread(calls.append, 1)
        self.assertIsNone(reactor.callWhenRunning(calls.append, 2))
        reactor.callInThread(calls.append, 3)
        self.assertEqual(calls, [1, 2, 3])

    def test_triggersRecordedAndRemovable(self):
        reactor = SyncReactor()
        a = reactor.addSystemEventTrigger("during", "shutdown", lambda: None)
        b = reactor.addSystemEventTrigger("during", "shutdown", lambda: None)
        self.assertNotEqual(a, b)
        reactor.removeSystemEventTrigger(a)
        self.assertEqual(list(reactor.triggers), [b])
        self.assertRaises(ValueError, reactor.removeSystemEventTrigger, a)

    def test_getThreadPool(self):
        reactor = SyncReactor()
        self.assertIsInstance(reactor.getThreadPool(), NonThreadPool)


class SynchronousAdbapiTests(SynchronousTestCase):
    def setUp(self):
        self.reactor = SyncReactor()
        self.pool = adbapi.ConnectionPool(
            "sqlite3", ":memory:", check_same_thread=False,
            cp_reactor=self.reactor, cp_min=1, cp_max=1, cp_noisy=False,
        )
        self.pool.threadpool.stop()
        self.pool.threadpool = NonThreadPool(1, 1)
        self.pool.threadpool.start()
        self.addCleanup(self.pool.close)

    def test_resultAvailableAtOnce(self):
        def txn(cursor, n):
            cursor.execute("SELECT ? + 1", (n,))
            return cursor.fetchone()[0], threading.get_ident()

        self.assertEqual(
            self.successResultOf(self.pool.runInteraction(txn, 41)),
            (42, threading.get_ident()),
        )

    def test_exceptionIsFailedDeferredAndRollsBack(self):
        def setup(cursor):
            cursor.execute("CREATE TABLE t (x INTEGER)")

        def insertThenFail(cursor):
            cursor.execute("INSERT INTO t VALUES (1)")
            raise Boom("in the interaction")

        self.successResultOf(self.pool.runInteraction(setup))
        failure = self.failureResultOf(self.pool.runInteraction(insertThenFail), Boom)
        self.assertEqual(str(failure.value), "in the interaction")
        rows = self.successResultOf(self.pool.runQuery("SELECT COUNT(*) FROM t"))
        self.assertEqual(rows, [(0,)])

    def test_sqlErrorIsFailedDeferred(self):
        import sqlite3

        self.failureResultOf(self.pool.runQuery("SELECT * FROM nowhere"), sqlite3.OperationalError)


class SqliteStorageHelperTests(SynchronousTestCase):
    def test_noThreadLeftAndWorkOnThisThread(self):
        before = threading.active_count()
        reactor = SyncReactor()
        with tempfile.TemporaryDirectory() as tmp:
            storage = sqlite_storage(tmp, reactor)
            self.assertEqual(threading.active_count(), before)
            self.assertIsNone(self.successResultOf(storage.open()))
            here = self.successResultOf(
                storage.db.runInteraction("whoami", lambda txn: threading.get_ident())
            )
            self.assertEqual(here, threading.get_ident())
            self.assertTrue(storage.db.pool.threadpool.calls >= 2)
            self.successResultOf(storage.close())
        self.assertEqual(threading.active_count(), before)
        # close removed the shutdown trigger adbapi added
        self.assertEqual(reactor.triggers, {})
