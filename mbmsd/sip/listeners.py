"""
What every SIP role of the node (P-CSCF, SCF) needs between its core and
the network: the listen settings of its config section, the UDP and TCP
listeners as services, and the L{Connections} table through which its
requests and responses leave (RFC 3261 18: the UDP socket we listen on, and
one TCP connection per peer, reused in both directions).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, cast

from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IAddress, IListeningPort, IProtocol, IProtocolFactory
from twisted.internet.protocol import Factory
from twisted.python.failure import Failure

from mbmsd import config as c
from mbmsd.errors import listenFailed
from mbmsd.interfaces import ISipTransport
from mbmsd.logs import Logger
from mbmsd.sip.grammar import SipParseError
from mbmsd.sip.transport import (
    SipDatagramProtocol,
    SipReceiver,
    SipStreamFactory,
    SipStreamProtocol,
)
from mbmsd.workers import listen_udp_shared, server_endpoint, tcp_parts

if TYPE_CHECKING:
    from mbmsd.metrics import RoleMetrics
    from mbmsd.overload import SipAdmission, Slot

__all__ = ["Connections", "SipListenSettings", "parse_udp_listen", "udp_listen_field",
           "tcp_listen_field", "tls_listen_field", "worker_ports_field", "check_worker_ports",
           "attach_listeners"]

log = Logger(namespace="mbmsd.sip.listeners")


# ---------------------------------------------------------------- config


def parse_udp_listen(value: str) -> tuple[str, int] | None:
    """
    C{"udp:PORT[:interface=HOST]"} (the Twisted endpoint spelling) or
    C{"HOST:PORT"} -> C{(host, port)}; C{""} -> None (UDP off).

    @raise c.Invalid: anything else.
    """
    if value == "":
        return None
    m = re.fullmatch(r"udp:(\d{1,5})(?::interface=([^:]+|\[[0-9A-Fa-f:.]+\]))?", value)
    if m:
        port, host = int(m.group(1)), (m.group(2) or "0.0.0.0").strip("[]")
    else:
        m = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[^:\[\]]+):(\d{1,5})", value)
        if not m:
            raise c.Invalid("must be 'udp:PORT:interface=HOST', 'HOST:PORT' or ''")
        host, port = m.group(1).strip("[]"), int(m.group(2))
    if port > 65535:
        raise c.Invalid("port must be <= 65535")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise c.Invalid("the interface must be an IP address") from None
    return host, port


def udp_listen_field(port: int) -> c.Field:
    def check(value: object) -> str:
        if not isinstance(value, str):
            raise c.Invalid("must be a string such as 'udp:%d:interface=127.0.0.1'" % (port,))
        parse_udp_listen(value)
        return value

    return c.Field(check, "udp:%d:interface=127.0.0.1" % (port,),
                   "SIP over UDP: 'udp:PORT:interface=HOST' or '' for none")


def _stream_endpoint_or_off() -> Callable[[str], str]:
    endpoint = c.endpoint()

    def check(value: str) -> str:
        if value == "":
            return value
        result: str = endpoint(value)  # the normalised description
        return result

    return check


def tcp_listen_field(port: int) -> c.Field:
    return c.Field(_stream_endpoint_or_off(), "tcp:%d:interface=127.0.0.1" % (port,),
                   "SIP over TCP: a Twisted endpoint string or '' for none")


def tls_listen_field(port: int) -> c.Field:
    # RFC 3261 26.2 / TS 24.229: SIP over TLS, port 5061 by convention
    return c.Field(_stream_endpoint_or_off(), "",
                   "SIP over TLS: a Twisted stream endpoint string such as "
                   "'tcp:%d:interface=127.0.0.1' (TLS from the role's [tls] table), "
                   "or '' for none" % (port,))


def worker_ports_field(port: int) -> c.Field:
    return c.Field(c.integer(1, 65535), port,
                   "with node.workers = N > 1: worker k also binds this port + k (UDP and "
                   "TCP, on the listeners' interfaces) and puts it in its Via, Record-Route "
                   "and Contact, so that responses and in-dialog requests reach it; unused "
                   "with one worker")


_SIP_ROLES = ("pcscf", "scf")


def _listen_port(key: str, value: object) -> int | None:
    """The port of a listen key's value (None: off, or not a numbered port)."""
    if not isinstance(value, str) or value == "":
        return None
    if key == "udp_listen":
        udp = parse_udp_listen(value)
        return udp[1] if udp else None
    tcp = tcp_parts(value)
    return tcp[0] if tcp else None


def check_worker_ports(config: Mapping[str, Any], role: str) -> list[str]:
    """
    The cross-key checks of C{<role>.worker_ports} on a node with workers:
    the range (C{worker_ports} .. + C{node.workers} - 1) within 65535 and
    clear of the node's SIP listen ports and of the other SIP role's range.
    @return: error lines, each naming the key.
    """
    workers = (config.get("node") or {}).get("workers") or 1
    section = config.get(role) or {}
    base = section.get("worker_ports")
    if workers <= 1 or not isinstance(base, int):
        return []
    key = "%s.worker_ports" % (role,)
    last = base + workers - 1
    if last > 65535:
        return ["%s: %d + %d workers runs past port 65535 (at most %d)"
                % (key, base, workers, 65536 - workers)]
    errors = []
    roles = set((config.get("node") or {}).get("roles") or ())
    for other in _SIP_ROLES:
        if other not in roles or other not in config:
            continue
        for listen in ("udp_listen", "tcp_listen", "tls_listen"):
            port = _listen_port(listen, (config.get(other) or {}).get(listen))
            if port is not None and base <= port <= last:
                errors.append("%s: ports %d-%d (one per worker) clash with %s.%s (port %d)"
                              % (key, base, last, other, listen, port))
        theirs = (config.get(other) or {}).get("worker_ports")
        if other < role and isinstance(theirs, int) \
                and base <= theirs + workers - 1 and theirs <= last:
            errors.append("%s: ports %d-%d (one per worker) clash with %s.worker_ports "
                          "(%d-%d)" % (key, base, last, other, theirs, theirs + workers - 1))
    return errors


class SipListenSettings:
    """
    A role's listen keys read once: the UDP address, the address we put in
    Via, Contact and Record-Route, and the port per transport.

    In a worker (C{worker} a number, C{node.workers} > 1) the UDP and TCP
    listeners are shared by the node's workers (C{sharedPorts}) and this
    worker binds C{worker_ports} + C{worker} of its own (C{workerPort}):
    C{ports}, what goes in Via, Record-Route and Contact, names that one,
    so that responses and in-dialog requests come back to this worker
    (docs/design.md, workers). TLS stays on the shared port only (its UEs
    keep their connection, which is one worker's).
    """

    def __init__(
        self, config: Mapping[str, Any], defaultPort: int, worker: int | None = None,
    ) -> None:
        self.udp = parse_udp_listen(config["udp_listen"])
        self.udpDescription: str = config["udp_listen"]
        self.tcp: str = config["tcp_listen"]
        self.tls: str = config.get("tls_listen") or ""
        advertised: str | None = config["advertised_host"]
        if advertised is None:
            advertised = (self.udp[0] if self.udp else _tcp_interface(self.tcp)) or "127.0.0.1"
            if advertised in ("0.0.0.0", "::"):
                advertised = "127.0.0.1"
        self.advertised: str = advertised
        self.ports: dict[str, int] = {}
        if self.udp is not None:
            self.ports["UDP"] = self.udp[1]
        if self.tcp:
            m = re.match(r"tcp6?:(?:port=)?(\d+)", self.tcp)
            self.ports["TCP"] = int(m.group(1)) if m else defaultPort
        if self.tls:
            m = re.match(r"tcp6?:(?:port=)?(\d+)", self.tls)
            self.ports["TLS"] = int(m.group(1)) if m else defaultPort + 1
        self.worker = worker
        self.sharedPorts: dict[str, int] = dict(self.ports)
        self.workerPort: int | None = None
        self.workerTcp: str | None = None  # the endpoint of this worker's own TCP port
        base = config.get("worker_ports")
        if worker is not None and isinstance(base, int):
            self.workerPort = base + worker
            if self.udp is not None:
                self.ports["UDP"] = self.workerPort
            tcp = tcp_parts(self.tcp) if self.tcp else None
            if tcp is not None:  # a tcp: listener (not systemd:): its interface
                interface = tcp[1].replace(":", "\\:")
                self.workerTcp = "tcp:%d" % (self.workerPort,) + (
                    ":interface=" + interface if interface else "")
                self.ports["TCP"] = self.workerPort


def _tcp_interface(description: str) -> str | None:
    m = re.search(r"(?:^|:)interface=([^:]+)", description)
    return m.group(1) if m else None


# ---------------------------------------------------------------- transports


class _Datagram(SipDatagramProtocol):
    noisy = False

    def __init__(
        self, receiver: SipReceiver, max_size: int, connections: Connections,
    ) -> None:
        SipDatagramProtocol.__init__(self, receiver, max_size)
        self.connections = connections

    def _answer_error(self, error: SipParseError, addr: tuple[str, int]) -> None:
        self.connections.countMalformed(error)
        SipDatagramProtocol._answer_error(self, error, addr)


class _Stream(SipStreamProtocol):
    """A TCP connection that the L{Connections} table knows about."""

    outbound = False
    slot: Slot | None = None  # its place under the listener's connection bound

    def __init__(
        self, receiver: SipReceiver, max_size: int, connections: Connections,
        outbound: bool = False,
    ) -> None:
        SipStreamProtocol.__init__(self, receiver, max_size)
        self.connections = connections
        self.outbound = outbound

    def connectionMade(self) -> None:
        SipStreamProtocol.connectionMade(self)
        self.connections._add(self)

    def connectionLost(self, reason: Failure | None = None) -> None:
        SipStreamProtocol.connectionLost(self, reason)
        self.connections._remove(self)
        slot, self.slot = self.slot, None
        if slot is not None:
            slot.release()

    def _error(self, error: SipParseError) -> None:
        self.connections.countMalformed(error)
        SipStreamProtocol._error(self, error)


class _StreamFactory(SipStreamFactory):
    noisy = False

    def __init__(self, connections: Connections, name: str = "TCP") -> None:
        SipStreamFactory.__init__(self, connections.receiver, connections.max_size)
        self.connections = connections
        self.name = name

    def buildProtocol(self, addr: IAddress | None) -> _Stream | None:
        c = self.connections
        slot = None
        if c.admission is not None:
            slot = c.admission.connection(self.name, getattr(addr, "host", None))
            if slot is None:
                return None  # over the connection bound: closed at once
        protocol = _Stream(c.receiver, c.max_size, c)
        protocol.slot = slot
        protocol.name = self.name  # the Via token: TCP or TLS
        protocol.factory = self
        return protocol


class _OutboundFactory(Factory):
    noisy = False

    def __init__(self, connections: Connections) -> None:
        self.connections = connections

    def buildProtocol(self, addr: IAddress | None) -> _Stream:
        c = self.connections
        return _Stream(c.receiver, c.max_size, c, outbound=True)


class Connections:
    """
    A SIP role's way to the network: the UDP socket (our requests leave from
    the listening port, so peers know them as ours), and the open TCP
    connections by peer C{(host, port)}, opening one when needed.

    @param metrics: the role's metrics: messages the parser refused (by the
        answer) and the open TCP connections are counted as
        C{mbmsd_<role>_malformed_total} and C{mbmsd_<role>_tcp_connections}.
    """

    def __init__(
        self, reactor: Any, receiver: SipReceiver | None, max_size: int, metrics: RoleMetrics,
        role: str, connectTimeout: float = 5,
    ) -> None:
        self.reactor = reactor
        # None until the role sets its transaction layer, before any listener
        self.receiver: SipReceiver = receiver  # type: ignore[assignment]
        self.max_size = max_size
        self.connectTimeout = connectTimeout
        self.udp: _Datagram | None = None
        self.streams: dict[tuple[str, int], _Stream] = {}
        self._pending: dict[tuple[str, int], list[Deferred[ISipTransport]]] = {}
        # the mbmsd.overload.SipAdmission bounding accepted connections
        self.admission: SipAdmission | None = None
        self.malformed = metrics.counter(
            "mbmsd_%s_malformed_total" % (role,),
            "Messages refused by the parser, by the status answered (or dropped)", ["status"])
        self.open = metrics.gauge("mbmsd_%s_tcp_connections" % (role,),
                                  "Open SIP TCP connections")

    def countMalformed(self, error: SipParseError) -> None:
        self.malformed.labels(str(getattr(error, "status", 400))).inc()

    def datagramProtocol(self) -> _Datagram:
        return _Datagram(self.receiver, self.max_size, self)

    def streamFactory(self, name: str = "TCP") -> _StreamFactory:
        return _StreamFactory(self, name)

    def _add(self, protocol: _Stream) -> None:
        if protocol.peer is not None:
            self.streams[protocol.peer] = protocol
        self.open.set(len(self.streams))

    def _remove(self, protocol: _Stream) -> None:
        if protocol.peer is not None and self.streams.get(protocol.peer) is protocol:
            del self.streams[protocol.peer]
        self.open.set(len(self.streams))

    def isOutbound(self, transport: object) -> bool:
        return bool(getattr(transport, "outbound", False))

    def transportFor(self, name: str, host: str, port: int) -> Deferred[ISipTransport]:
        """
        @return: Deferred of the ISipTransport that reaches C{(host, port)}
            over C{name} ('UDP' or 'TCP').
        """
        if name == "UDP":
            if self.udp is None:
                return fail(ConnectionError("UDP is not enabled"))
            return succeed(self.udp)
        if name not in ("TCP", "TLS"):
            return fail(ConnectionError("transport %s not supported" % (name,)))
        key = (host, port)
        protocol = self.streams.get(key)
        if protocol is not None and protocol.open and protocol.name == name:
            return succeed(protocol)
        if name == "TLS":
            # TLS peers (UEs) connect to us; requests to them reuse their
            # connection (RFC 3261 18, RFC 5626 5.3): we open none
            return fail(ConnectionError("no TLS connection from %s:%s" % (host, port)))
        waiting: Deferred[ISipTransport] = Deferred()
        if key in self._pending:
            self._pending[key].append(waiting)
            return waiting
        self._pending[key] = [waiting]
        cls = TCP6ClientEndpoint if ":" in host else TCP4ClientEndpoint
        connecting = cls(self.reactor, host, port, timeout=self.connectTimeout).connect(
            _OutboundFactory(self))

        def done(result: IProtocol | Failure) -> None:
            for d in self._pending.pop(key, []):
                if isinstance(result, Failure):
                    d.errback(result)
                else:
                    d.callback(cast(_Stream, result))  # what _OutboundFactory builds

        connecting.addBoth(done)
        return waiting

    def closeAll(self) -> None:
        for protocol in list(self.streams.values()):
            assert protocol.transport is not None  # in the table while connected
            protocol.transport.loseConnection()


# ---------------------------------------------------------------- listeners


class _Listener(Service):
    """A port bound in startService (C{listening}), closed in stopService."""

    listening: IListeningPort | None = None

    def stopService(self) -> Deferred[None] | None:
        Service.stopService(self)
        if self.listening is not None:
            d = self.listening.stopListening()
            self.listening = None
            return d
        return None


class _UdpListener(_Listener):
    def __init__(
        self, reactor: Any, key: str, description: str, host: str, port: int,
        protocol: _Datagram, onBound: Callable[[int], object], shared: bool = False,
    ) -> None:
        self.reactor = reactor
        self.shared = shared
        self.key = key
        self.description = description
        self.host = host
        self.port = port
        self.protocol = protocol
        self.onBound = onBound

    def startService(self) -> None:
        Service.startService(self)
        try:
            listening: Any  # a twisted.internet.udp.Port: getHost() an IPv4Address
            if not self.shared:
                listening = self.reactor.listenUDP(self.port, self.protocol,
                                                   interface=self.host)
            else:  # the node's workers share the port
                listening = listen_udp_shared(self.reactor, self.port, self.protocol,
                                              self.host)
            self.listening = listening
        except CannotListenError as e:
            raise listenFailed(self.key, self.description, e) from None
        self.onBound(listening.getHost().port)


class _StreamListener(_Listener):
    def __init__(
        self, reactor: Any, key: str, description: str, factory: IProtocolFactory,
        onBound: Callable[[int | None], object], shared: bool = False,
    ) -> None:
        self.reactor = reactor
        self.shared = shared
        self.key = key
        self.description = description
        self.factory = factory
        self.onBound = onBound

    def startService(self) -> None:
        Service.startService(self)
        # in a worker, a tcp: port shared with the node's other workers
        d = server_endpoint(self.reactor, self.description, 0 if self.shared else None).listen(
            self.factory)
        result: list[Any] = []  # the IListeningPort or a Failure
        d.addBoth(result.append)
        if not result:
            raise RuntimeError("%s: %s did not bind at once" % (self.key, self.description))
        if hasattr(result[0], "raiseException"):
            if result[0].check(CannotListenError):
                raise listenFailed(self.key, self.description, result[0].value)
            result[0].raiseException()
        self.listening = result[0]
        self.onBound(getattr(self.listening.getHost(), "port", None))


def attach_listeners(
    parent: Any, reactor: Any, role: str, settings: SipListenSettings, connections: Connections,
    ports: dict[str, int], tls: Any = None, sharedPorts: dict[str, int] | None = None,
) -> None:
    """
    Add the role's UDP, TCP and TLS listeners to C{parent} (they bind when
    it starts); C{ports}, the core's port per transport (its Via, Contact,
    Record-Route), learns the bound ports (port 0 in tests).

    In a worker (C{settings.workerPort}), the UDP and TCP listeners are
    shared with the other workers and C{sharedPorts} learns their ports;
    the worker's own UDP and TCP ports bind besides them, C{ports} learns
    those, and our UDP requests leave from the own one (its Via's port).

    @param tls: the C{CertificateOptions} of the TLS listener
        (L{mbmsd.tls.serverOptions}), needed when C{settings.tls} is set.
    """
    worker = settings.workerPort is not None
    inWorker = settings.worker is not None  # its listeners shared with the other workers
    learns = sharedPorts if worker and sharedPorts is not None else {}
    if settings.udp is not None:
        host = settings.udp[0]

        def boundUdp(port: int) -> None:
            ports["UDP"] = port

        def boundSharedUdp(port: int) -> None:
            learns["UDP"] = port

        own = connections.datagramProtocol()
        if worker:
            assert settings.workerPort is not None
            # Service's method named: mypy's untyped-call exclusion matches it there
            Service.setServiceParent(
                _UdpListener(reactor, "%s.udp_listen" % (role,), settings.udpDescription,
                             host, settings.udp[1], connections.datagramProtocol(),
                             boundSharedUdp, shared=True),
                parent)
            Service.setServiceParent(
                _UdpListener(reactor, "%s.worker_ports" % (role,),
                             "udp:%d:interface=%s" % (settings.workerPort, host),
                             host, settings.workerPort, own, boundUdp),
                parent)
        else:
            Service.setServiceParent(
                _UdpListener(reactor, "%s.udp_listen" % (role,), settings.udpDescription,
                             host, settings.udp[1], own, boundUdp, shared=inWorker),
                parent)
        connections.udp = own  # our requests leave from the port in our Via
    if settings.tcp:
        def boundTcp(port: int | None) -> None:
            if port:
                ports["TCP"] = port

        def boundSharedTcp(port: int | None) -> None:
            if port:
                learns["TCP"] = port

        Service.setServiceParent(
            _StreamListener(reactor, "%s.tcp_listen" % (role,), settings.tcp,
                            connections.streamFactory(),
                            boundSharedTcp if settings.workerTcp else boundTcp,
                            shared=inWorker),
            parent)
        if settings.workerTcp:
            Service.setServiceParent(
                _StreamListener(reactor, "%s.worker_ports" % (role,), settings.workerTcp,
                                connections.streamFactory(), boundTcp),
                parent)
    if worker:
        log.info("{role}: worker {worker}'s own SIP port {port} (Via, Record-Route, Contact)",
                 role=role, worker=settings.worker, port=settings.workerPort)
    if settings.tls:
        from mbmsd.tls import wrapServer

        def boundTls(port: int | None) -> None:
            if port:
                ports["TLS"] = port

        Service.setServiceParent(
            _StreamListener(reactor, "%s.tls_listen" % (role,), settings.tls,
                            wrapServer(tls, connections.streamFactory("TLS")), boundTls,
                            shared=inWorker),
            parent)
