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
from mbmsd.sip.grammar import SipParseError
from mbmsd.sip.transport import (
    SipDatagramProtocol,
    SipReceiver,
    SipStreamFactory,
    SipStreamProtocol,
)
from mbmsd.workerid import worker_number
from mbmsd.workers import listen_udp_shared, server_endpoint

if TYPE_CHECKING:
    from mbmsd.metrics import RoleMetrics
    from mbmsd.overload import SipAdmission, Slot

__all__ = ["Connections", "SipListenSettings", "parse_udp_listen", "udp_listen_field",
           "tcp_listen_field", "tls_listen_field", "attach_listeners"]


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


class SipListenSettings:
    """
    A role's listen keys read once: the UDP address, the address we put in
    Via, Contact and Record-Route, and the port per transport.
    """

    def __init__(self, config: Mapping[str, Any], defaultPort: int) -> None:
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
        protocol: _Datagram, onBound: Callable[[int], object],
    ) -> None:
        self.reactor = reactor
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
            if worker_number() is None:
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
        onBound: Callable[[int | None], object],
    ) -> None:
        self.reactor = reactor
        self.key = key
        self.description = description
        self.factory = factory
        self.onBound = onBound

    def startService(self) -> None:
        Service.startService(self)
        d = server_endpoint(self.reactor, self.description, worker_number()).listen(self.factory)
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
    ports: dict[str, int], tls: Any = None,
) -> None:
    """
    Add the role's UDP, TCP and TLS listeners to C{parent} (they bind when
    it starts); C{ports}, the core's port per transport, learns the bound
    ports (port 0 in tests).

    @param tls: the C{CertificateOptions} of the TLS listener
        (L{mbmsd.tls.serverOptions}), needed when C{settings.tls} is set.
    """
    if settings.udp is not None:
        connections.udp = connections.datagramProtocol()

        def boundUdp(port: int) -> None:
            ports["UDP"] = port

        # Service's method named: mypy's untyped-call exclusion matches it there
        Service.setServiceParent(
            _UdpListener(reactor, "%s.udp_listen" % (role,), settings.udpDescription,
                         settings.udp[0], settings.udp[1], connections.udp, boundUdp),
            parent)
    if settings.tcp:
        def boundTcp(port: int | None) -> None:
            if port:
                ports["TCP"] = port

        Service.setServiceParent(
            _StreamListener(reactor, "%s.tcp_listen" % (role,), settings.tcp,
                            connections.streamFactory(), boundTcp),
            parent)
    if settings.tls:
        from mbmsd.tls import wrapServer

        def boundTls(port: int | None) -> None:
            if port:
                ports["TLS"] = port

        Service.setServiceParent(
            _StreamListener(reactor, "%s.tls_listen" % (role,), settings.tls,
                            wrapServer(tls, connections.streamFactory("TLS")), boundTls),
            parent)
