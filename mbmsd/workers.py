"""
Workers (issue 16 item 5, docs/design.md): C{node.workers = N} runs N
processes of the same node. The twistd process is the supervisor: it starts
N workers (the same twistd command with C{MBMSD_WORKER=k} in their
environment), restarts one that dies (with a backoff, logged and counted),
passes SIGTERM and SIGHUP on, and exits non-zero when the workers cannot
start. The workers share each listener through SO_REUSEPORT (Linux): the
kernel spreads the connections and datagrams, keeping one source on one
worker. Their state is in storage, so any worker serves any request.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from twisted.application import service
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError, ProcessDone
from twisted.internet.interfaces import (
    IDelayedCall,
    IListeningPort,
    IProcessTransport,
    IProtocolFactory,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import DatagramProtocol, ProcessProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

from mbmsd.logs import Logger
from mbmsd.workerid import RESTARTS_ENV, WORKER_ENV

log = Logger(namespace="mbmsd.workers")

# ---------------------------------------------------------------- shared listeners


def _reusable(family: int, kind: int, host: str, port: int) -> socket.socket:
    sock = socket.socket(family, kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # every worker binds the same address; the kernel spreads the load
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.setblocking(False)
    except OSError as e:
        sock.close()
        raise CannotListenError(host, port, e) from None
    except BaseException:
        sock.close()
        raise
    return sock


def _family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def listen_tcp_shared(
    reactor: Any, port: int, factory: IProtocolFactory, interface: str = "", backlog: int = 50,
) -> IListeningPort:
    """
    C{reactor.listenTCP}, with SO_REUSEPORT set before bind (Twisted's does
    not), so the workers of a node share the port.
    @return: the IListeningPort.
    """
    family = _family(interface)
    sock = _reusable(family, socket.SOCK_STREAM, interface, port)
    try:
        sock.listen(backlog)
        listening: IListeningPort = reactor.adoptStreamPort(sock.fileno(), family, factory)
        return listening
    finally:
        sock.close()  # the reactor holds its own duplicate


def listen_udp_shared(
    reactor: Any, port: int, protocol: DatagramProtocol, interface: str = "",
    maxPacketSize: int = 8192,
) -> IListeningPort:
    """
    C{reactor.listenUDP}, with SO_REUSEPORT set before bind.
    @return: the IListeningPort.
    """
    family = _family(interface)
    sock = _reusable(family, socket.SOCK_DGRAM, interface, port)
    try:
        listening: IListeningPort = reactor.adoptDatagramPort(sock.fileno(), family, protocol,
                                                             maxPacketSize)
        return listening
    finally:
        sock.close()


_COLON = re.compile(r"(?<!\\):")


def tcp_parts(description: str) -> tuple[int, str, int] | None:
    """
    C{tcp:PORT[:interface=HOST][:backlog=N]} as (port, interface, backlog),
    or None for any other endpoint (ssl:, unix:, systemd:, ...).
    """
    parts = [p.replace("\\:", ":") for p in _COLON.split(description)]
    if parts[0] != "tcp" or len(parts) < 2:
        return None
    args: list[str] = []
    kw: dict[str, str] = {}
    for part in parts[1:]:
        key, eq, value = part.partition("=")
        if eq:
            kw[key] = value
        else:
            args.append(part)
    if set(kw) - {"port", "interface", "backlog"} or len(args) > 1:
        return None
    port = kw.get("port", args[0] if args else None)
    if port is None or not str(port).isdigit():
        return None
    return int(port), kw.get("interface", ""), int(kw.get("backlog", 50))


@implementer(IStreamServerEndpoint)
class SharedTCPEndpoint:
    """A TCP server endpoint whose port the node's workers share (SO_REUSEPORT)."""

    def __init__(self, reactor: Any, port: int, interface: str = "", backlog: int = 50) -> None:
        self.reactor = reactor
        self.port = port
        self.interface = interface
        self.backlog = backlog

    def listen(self, factory: IProtocolFactory) -> Deferred[IListeningPort]:
        return maybeDeferred(listen_tcp_shared, self.reactor, self.port, factory,
                             self.interface, self.backlog)


def server_endpoint(
    reactor: Any, description: str, worker: int | None = None,
) -> IStreamServerEndpoint:
    """
    C{serverFromString}, except in a worker (C{worker} a number): a C{tcp:}
    listener is then shared with the other workers. Other endpoints stay as
    they are (systemd sockets: give the unit C{ReusePort=yes}).
    """
    if worker is not None:
        tcp = tcp_parts(description)
        if tcp is not None:
            return SharedTCPEndpoint(reactor, *tcp)
    endpoint: IStreamServerEndpoint = serverFromString(reactor, description)
    return endpoint


def worker_description(description: str, worker: int | None) -> str:
    """
    A C{tcp:} description moved to port + C{worker}: each worker's own
    port (its metrics exporter), next to the node's.
    """
    tcp = tcp_parts(description) if worker is not None else None
    if tcp is None or tcp[0] == 0 or worker is None:
        return description
    port, interface, backlog = tcp
    out = "tcp:%d" % (port + worker,)
    if interface:
        out += ":interface=" + interface.replace(":", "\\:")
    return out + ":backlog=%d" % (backlog,)


# ---------------------------------------------------------------- supervisor


class _Worker(ProcessProtocol):
    def __init__(self, supervisor: Supervisor, number: int) -> None:
        self.supervisor = supervisor
        self.number = number
        self.started = 0.0

    def processEnded(self, reason: Failure) -> None:
        self.supervisor._ended(self, reason)


class Supervisor(service.Service):
    """
    The twistd process of a node with workers: starts, watches and stops
    them. It binds nothing itself.

    @param reactor: IReactorProcess and IReactorTime.
    @param count: the number of workers (C{node.workers}).
    @param argv: the command of a worker (default: this twistd's, so a
        worker reads the same --config files).
    @param backoff: seconds before the first restart of a dying worker,
        doubled while it keeps dying within C{stable} seconds of its start,
        at most C{maxBackoff}.
    @param failedStart: called with no argument when no worker stays up
        past C{stable} seconds C{giveUp} times in a row: the node cannot
        start (twistd then exits non-zero).
    @param restarts: optional counter (C{inc()}) of workers restarted. A
        restarted worker is also told how often its number was restarted
        (C{MBMSD_WORKER_RESTARTS}), which it exports as
        C{mbmsd_worker_restarts_total} (the supervisor exports nothing).
    """

    name = "workers"

    def __init__(
        self, reactor: Any, count: int, argv: Sequence[str] | None = None,
        environ: Mapping[str, str] | None = None, backoff: float = 0.5, maxBackoff: float = 30.0,
        stable: float = 10.0, giveUp: int = 5, failedStart: Callable[[], None] | None = None,
        restarts: Any = None,
    ) -> None:
        self.reactor = reactor
        self.count = count
        self.argv = list(argv if argv is not None else [sys.executable] + sys.argv)
        self.environ = dict(environ if environ is not None else os.environ)
        self.backoff = backoff
        self.maxBackoff = maxBackoff
        self.stable = stable
        self.giveUp = giveUp
        self.failedStart = failedStart
        self.restarts = restarts
        # number -> (its _Worker, its IProcessTransport)
        self.workers: dict[int, tuple[_Worker, IProcessTransport]] = {}
        self._delay: dict[int, float] = {}  # number -> the next restart's backoff
        self._failures: dict[int, int] = {}  # number -> quick deaths in a row
        self._restarted: dict[int, int] = {}  # number -> restarts so far
        self._pending: dict[int, IDelayedCall] = {}  # number -> its restart
        self._stopping: Deferred[None] | None = None

    def startService(self) -> None:
        service.Service.startService(self)
        for number in range(self.count):
            self._spawn(number)

    def _spawn(self, number: int) -> None:
        self._pending.pop(number, None)
        env = dict(self.environ, **{WORKER_ENV: str(number)})
        if self._restarted.get(number):
            env[RESTARTS_ENV] = str(self._restarted[number])
        worker = _Worker(self, number)
        worker.started = self.reactor.seconds()
        transport = self.reactor.spawnProcess(worker, self.argv[0], self.argv, env=env,
                                              childFDs={0: "w", 1: 1, 2: 2})
        self.workers[number] = (worker, transport)
        log.info("worker {n} started (pid {pid})", n=number, pid=transport.pid)

    def _ended(self, worker: _Worker, reason: Failure) -> None:
        number = worker.number
        if number in self.workers and self.workers[number][0] is worker:
            del self.workers[number]
        if self._stopping is not None:
            if not self.workers:
                d, self._stopping = self._stopping, None
                d.callback(None)
            return
        code = getattr(reason.value, "exitCode", None)
        how = ("exited" if reason.check(ProcessDone) else
               "ended (exit %s, signal %s)" % (code, getattr(reason.value, "signal", None)))
        quick = self.reactor.seconds() - worker.started < self.stable
        if quick:
            self._failures[number] = self._failures.get(number, 0) + 1
            last = self._delay.get(number)
            delay = self.backoff if last is None else min(last * 2, self.maxBackoff)
            self._delay[number] = delay
        else:
            self._failures[number] = 0
            delay = self._delay[number] = self.backoff
        if self._failures[number] >= self.giveUp and self.failedStart is not None \
                and not any(self.reactor.seconds() - w.started >= self.stable
                            for w, _ in self.workers.values()):
            log.error("worker {n} {how}: no worker stays up, the node cannot start", n=number,
                      how=how)
            self._stopping = Deferred()  # restart nothing more
            self.failedStart()
            return
        log.warn("worker {n} {how}: restarting it in {delay} s", n=number, how=how, delay=delay)
        self._restarted[number] = self._restarted.get(number, 0) + 1
        if self.restarts is not None:
            self.restarts.inc()
        self._pending[number] = self.reactor.callLater(delay, self._spawn, number)

    def signal(self, signum: int) -> None:
        """Pass a signal (SIGHUP: reload) on to every worker."""
        for _, transport in list(self.workers.values()):
            try:
                transport.signalProcess(signum)
            except Exception as e:  # it ended meanwhile
                log.debug("worker signal: {e}", e=str(e))

    def stopService(self) -> Deferred[None]:
        """
        Stop the workers: SIGTERM to each (each stops cleanly within its
        node.stop_grace). @return: Deferred firing once all have ended.
        """
        service.Service.stopService(self)
        for call in self._pending.values():
            if call.active():
                call.cancel()
        self._pending.clear()
        if not self.workers:
            return succeed(None)
        self._stopping = Deferred()
        d = self._stopping
        self.signal(signal.SIGTERM)
        return d


def worker_argv(
    serverOptions: Mapping[str, Any], configPaths: Sequence[str], executable: str = sys.executable,
) -> list[str]:
    """
    The command of a worker: this twistd's, in the foreground, without a
    pidfile (the supervisor has it), logging where the supervisor does.
    """
    argv = [executable, "-c", "from twisted.scripts.twistd import run; run()",
            "--nodaemon", "--pidfile="]
    logfile = serverOptions.get("logfile")
    if logfile is None and not serverOptions.get("nodaemon"):
        logfile = "twistd.log"  # twistd's default for a daemon
    if logfile is not None:
        argv.append("--logfile=" + logfile)
    if serverOptions.get("syslog"):
        argv.append("--syslog")
    argv.append("mbmsd")
    for path in configPaths:
        argv += ["--config", os.path.abspath(path)]
    return argv


def makeSupervisor(
    reactor: Any, count: int, serverOptions: Mapping[str, Any], configPaths: Sequence[str],
) -> Supervisor:
    """
    The service of C{twistd mbmsd} when C{node.workers} > 1: the workers,
    SIGHUP passed on to them, exit 1 when they cannot start.
    """

    def failedStart() -> None:
        reactor.addSystemEventTrigger("after", "shutdown", os._exit, 1)
        reactor.stop()

    supervisor = Supervisor(reactor, count, argv=worker_argv(serverOptions, configPaths),
                            failedStart=failedStart)

    def onSighup(*_: object) -> None:
        reactor.callFromThread(supervisor.signal, signal.SIGHUP)

    reactor.callWhenRunning(signal.signal, signal.SIGHUP, onSighup)
    return supervisor


def die_with_supervisor() -> None:
    """
    In a worker (Linux): be sent SIGTERM when the supervisor dies, even by
    SIGKILL, so that no orphan worker keeps the node's ports.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    PR_SET_PDEATHSIG = 1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError) as e:
        log.warn("worker: cannot follow the supervisor's death: {e}", e=str(e))
