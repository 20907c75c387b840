"""
Workers (mbmsd/workers.py): the listeners shared through SO_REUSEPORT, and
the supervisor that starts, restarts and stops the worker processes.
"""

import os
import shutil
import signal
import socket
import sys
import tempfile

from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from mbmsd.workerid import RESTARTS_ENV, WORKER_ENV, worker_number, worker_restarts
from mbmsd.workers import Supervisor, listen_tcp_shared, listen_udp_shared


class Counter:
    def __init__(self):
        self.value = 0

    def inc(self):
        self.value += 1


class FakeProcess:
    def __init__(self, pid):
        self.pid = pid
        self.signals = []

    def signalProcess(self, signum):
        self.signals.append(signum)


class ProcessClock(Clock):
    """A Clock with spawnProcess that records the processes it starts."""

    def __init__(self):
        Clock.__init__(self)
        self.spawned = []  # (protocol, executable, args, env, process)

    def spawnProcess(self, protocol, executable, args=(), env=None, childFDs=None, **kw):
        process = FakeProcess(1000 + len(self.spawned))
        protocol.makeConnection(process)
        self.spawned.append((protocol, executable, list(args), env, process))
        return process


def die(spawned, code=1):
    protocol = spawned[0]
    protocol.processEnded(Failure(ProcessTerminated(exitCode=code)))


class SupervisorTests(SynchronousTestCase):
    def setUp(self):
        self.clock = ProcessClock()
        self.failed = []
        self.restarts = Counter()
        self.sup = Supervisor(self.clock, 2, argv=["/usr/bin/twistd", "-n", "mbmsd"],
                              environ={"PATH": "/bin"}, backoff=1.0, maxBackoff=8.0,
                              stable=10.0, giveUp=3, failedStart=lambda: self.failed.append(1),
                              restarts=self.restarts)
        self.sup.startService()

    def test_startsEachWorkerWithItsNumber(self):
        self.assertEqual(len(self.clock.spawned), 2)
        for k, (_, executable, args, env, _) in enumerate(self.clock.spawned):
            self.assertEqual(executable, "/usr/bin/twistd")
            self.assertEqual(args, ["/usr/bin/twistd", "-n", "mbmsd"])
            self.assertEqual(env, {"PATH": "/bin", WORKER_ENV: str(k)})

    def test_deadWorkerRestartedWithBackoff(self):
        self.clock.advance(60)  # it ran long enough: the first backoff
        die(self.clock.spawned[1])
        self.assertEqual(len(self.clock.spawned), 2)
        self.clock.advance(1.0)
        self.assertEqual(len(self.clock.spawned), 3)
        self.assertEqual(self.clock.spawned[2][3][WORKER_ENV], "1")
        die(self.clock.spawned[2])  # at once again: the backoff doubles
        self.clock.advance(1.5)
        self.assertEqual(len(self.clock.spawned), 3)
        self.clock.advance(0.5)
        self.assertEqual(len(self.clock.spawned), 4)
        self.assertEqual(self.restarts.value, 2)
        self.assertEqual(self.failed, [])

    def test_restartedWorkerIsToldItsRestarts(self):
        """A restarted worker gets its number's restarts (it exports them), a first start none."""
        self.assertNotIn(RESTARTS_ENV, self.clock.spawned[1][3])
        self.clock.advance(60)
        die(self.clock.spawned[1])
        self.clock.advance(1.0)
        self.assertEqual(self.clock.spawned[2][3][RESTARTS_ENV], "1")
        self.clock.advance(60)
        die(self.clock.spawned[2])
        self.clock.advance(1.0)
        self.assertEqual(self.clock.spawned[3][3][RESTARTS_ENV], "2")
        self.assertEqual(worker_restarts(self.clock.spawned[3][3]), 2)
        self.assertEqual(worker_restarts({}), 0)

    def test_noWorkerStaysUpIsAFailedStart(self):
        for _ in range(3):
            for spawned in list(self.clock.spawned[-2:]):
                die(spawned)
            self.clock.advance(9)
        self.assertEqual(self.failed, [1])

    def test_signalsPassedOnAndStopWaitsForAll(self):
        self.sup.signal(signal.SIGHUP)
        self.assertEqual([p.signals for *_, p in self.clock.spawned],
                         [[signal.SIGHUP], [signal.SIGHUP]])
        d = self.sup.stopService()
        self.assertEqual([p.signals[-1] for *_, p in self.clock.spawned],
                         [signal.SIGTERM, signal.SIGTERM])
        self.assertNoResult(d)
        self.clock.spawned[0][0].processEnded(Failure(ProcessDone(0)))
        self.assertNoResult(d)
        self.clock.spawned[1][0].processEnded(Failure(ProcessDone(0)))
        self.successResultOf(d)
        self.clock.advance(60)
        self.assertEqual(len(self.clock.spawned), 2)  # nothing restarted while stopping

    def test_workerNumberFromEnvironment(self):
        self.assertEqual(worker_number({WORKER_ENV: "3"}), 3)
        self.assertIsNone(worker_number({}))


class SharedListenerTests(TestCase):
    """Two listeners on one port, as two workers bind it (Linux SO_REUSEPORT)."""

    def setUp(self):
        if not sys.platform.startswith("linux") or not hasattr(socket, "SO_REUSEPORT"):
            raise self.skipTest("SO_REUSEPORT sharing is Linux's")
        from twisted.internet import reactor
        self.reactor = reactor

    def test_tcpPortShared(self):
        one = listen_tcp_shared(self.reactor, 0, Factory.forProtocol(Protocol), "127.0.0.1")
        self.addCleanup(one.stopListening)
        port = one.getHost().port
        two = listen_tcp_shared(self.reactor, port, Factory.forProtocol(Protocol), "127.0.0.1")
        self.addCleanup(two.stopListening)
        self.assertEqual(two.getHost().port, port)
        # a plain bind (no SO_REUSEPORT) is refused: the port is really held
        plain = socket.socket()
        self.addCleanup(plain.close)
        self.assertRaises(OSError, plain.bind, ("127.0.0.1", port))

    def test_udpPortShared(self):
        one = listen_udp_shared(self.reactor, 0, DatagramProtocol(), "127.0.0.1")
        self.addCleanup(one.stopListening)
        port = one.getHost().port
        two = listen_udp_shared(self.reactor, port, DatagramProtocol(), "127.0.0.1")
        self.addCleanup(two.stopListening)
        self.assertEqual(two.getHost().port, port)


class WorkersConfigTests(SynchronousTestCase):
    def load(self, node, storage):

        from mbmsd.nodeconfig import load_config

        tmp = tempfile.mkdtemp(prefix="mbmsd-workers-")
        self.addCleanup(shutil.rmtree, tmp, True)
        path = os.path.join(tmp, "node.toml")
        with open(path, "w") as f:
            f.write('[node]\nhome_domain = "home1.net"\nroles = ["bsf"]\n%s\n'
                    '[storage]\n%s\n' % (node, storage))
        return path, lambda: load_config([path])

    def test_defaultIsOneWorker(self):
        _, load = self.load("", 'backend = "memory"')
        self.assertEqual(load()["node"]["workers"], 1)

    def test_workersWithTheMemoryStoreIsAnError(self):
        from mbmsd import config as c

        path, load = self.load("workers = 2", 'backend = "memory"')
        e = self.assertRaises(c.ConfigError, load)
        self.assertEqual(len(e.lines), 1, e.lines)
        self.assertTrue(e.lines[0].startswith("%s: node.workers: 2 workers need a shared store"
                                              % (path,)), e.lines)

    def test_workersWithSqlite(self):
        _, load = self.load("workers = 2", 'backend = "sqlite"\npath = "x.sqlite3"')
        self.assertEqual(load()["node"]["workers"], 2)


class EndpointTests(SynchronousTestCase):
    def test_tcpSharedInAWorkerOnly(self):
        from twisted.internet.endpoints import TCP4ServerEndpoint
        from twisted.internet.testing import MemoryReactor

        from mbmsd.workers import SharedTCPEndpoint, server_endpoint

        r = MemoryReactor()
        self.assertIsInstance(server_endpoint(r, "tcp:8080:interface=127.0.0.1"),
                              TCP4ServerEndpoint)
        e = server_endpoint(r, "tcp:8080:interface=127.0.0.1", worker=1)
        self.assertIsInstance(e, SharedTCPEndpoint)
        self.assertEqual((e.port, e.interface, e.backlog), (8080, "127.0.0.1", 50))
        e = server_endpoint(r, "tcp:port=80:interface=\\:\\:1:backlog=7", worker=0)
        self.assertEqual((e.port, e.interface, e.backlog), (80, "::1", 7))
        self.assertNotIsInstance(server_endpoint(r, "unix:mbmsd-test.sock", worker=0),
                                 SharedTCPEndpoint)

    def test_workerDescriptionOffsetsThePort(self):
        from mbmsd.workers import worker_description

        self.assertEqual(worker_description("tcp:9100:interface=127.0.0.1", 2),
                         "tcp:9102:interface=127.0.0.1:backlog=50")
        self.assertEqual(worker_description("tcp:9100", None), "tcp:9100")
        self.assertEqual(worker_description("tcp:0", 1), "tcp:0")


class WorkerLogTests(SynchronousTestCase):
    def event(self):
        return {"log_namespace": "mbmsd.bsf", "log_level": __import__(
            "twisted.logger", fromlist=["LogLevel"]).LogLevel.info,
            "log_format": "bootstrap {result}", "result": "ok", "log_time": 1_800_000_000.0}

    def test_textLineCarriesTheWorker(self):
        from mbmsd.logs import formatText, workerText

        plain = formatText(self.event())
        tagged = workerText(3)(self.event())
        self.assertIn("[mbmsd.bsf#info] bootstrap ok", tagged)
        self.assertEqual(tagged.replace(" [worker 3]", "", 1), plain)

    def test_jsonLineCarriesTheWorker(self):
        import json

        from mbmsd.logs import jsonFormatter

        self.assertEqual(json.loads(jsonFormatter("n", 2)(self.event()))["worker"], 2)
        self.assertNotIn("worker", json.loads(jsonFormatter("n")(self.event())))
