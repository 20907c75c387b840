"""
The SCF service: the SIP listeners (UDP, TCP), the connections the SCF's
own requests (BYE, UPDATE) leave on, and the UAS core behind them.
"""

import re

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, fail, inlineCallbacks, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, serverFromString
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from mbmsd.roles.scf.bmsc import HttpServiceAuthorizationClient
from mbmsd.roles.scf.core import ScfCore, Subscriptions
from mbmsd.roles.scf.plugin import parse_udp_listen
from mbmsd.sip.transaction import TimerSettings
from mbmsd.sip.transport import SipDatagramProtocol, SipStreamFactory, SipStreamProtocol

__all__ = ["ScfService", "Connections"]

log = Logger(namespace="mbmsd.scf")


class _Datagram(SipDatagramProtocol):
    noisy = False


class _Stream(SipStreamProtocol):
    """A TCP connection that the L{Connections} table knows about."""

    def __init__(self, receiver, max_size, connections):
        SipStreamProtocol.__init__(self, receiver, max_size)
        self.connections = connections

    def connectionMade(self):
        SipStreamProtocol.connectionMade(self)
        self.connections._add(self)

    def connectionLost(self, reason=None):
        SipStreamProtocol.connectionLost(self, reason)
        self.connections._remove(self)


class _StreamFactory(SipStreamFactory):
    noisy = False

    def __init__(self, receiver, max_size, connections):
        SipStreamFactory.__init__(self, receiver, max_size)
        self.connections = connections

    def buildProtocol(self, addr):
        protocol = _Stream(self.receiver, self.max_size, self.connections)
        protocol.factory = self
        return protocol


class _OutboundFactory(Factory):
    noisy = False

    def __init__(self, connections):
        self.connections = connections

    def buildProtocol(self, addr):
        c = self.connections
        return _Stream(c.receiver, c.max_size, c)


class Connections:
    """
    The SCF's way to the network: the UDP socket (our requests leave from
    the listening port, so the P-CSCF knows them as the SCF's), and the open
    TCP connections by peer, opening one when needed.
    """

    def __init__(self, reactor, receiver, max_size, connectTimeout=5):
        self.reactor = reactor
        self.receiver = receiver
        self.max_size = max_size
        self.connectTimeout = connectTimeout
        self.udp = None
        self.streams = {}
        self._pending = {}

    def _add(self, protocol):
        if protocol.peer is not None:
            self.streams[protocol.peer] = protocol

    def _remove(self, protocol):
        if self.streams.get(protocol.peer) is protocol:
            del self.streams[protocol.peer]

    def transportFor(self, name, host, port):
        """
        @return: Deferred of the ISipTransport reaching C{(host, port)} over
            C{name} ('UDP' or 'TCP').
        """
        if name == "UDP":
            if self.udp is None:
                return fail(ConnectionError("UDP is not enabled"))
            return succeed(self.udp)
        if name != "TCP":
            return fail(ConnectionError("transport %s not supported" % (name,)))
        key = (host, port)
        protocol = self.streams.get(key)
        if protocol is not None and protocol.open:
            return succeed(protocol)
        waiting = Deferred()
        if key in self._pending:
            self._pending[key].append(waiting)
            return waiting
        self._pending[key] = [waiting]
        cls = TCP6ClientEndpoint if ":" in host else TCP4ClientEndpoint
        connecting = cls(self.reactor, host, port, timeout=self.connectTimeout).connect(
            _OutboundFactory(self))

        def done(result):
            for d in self._pending.pop(key, []):
                if isinstance(result, Failure):
                    d.errback(result)
                else:
                    d.callback(result)

        connecting.addBoth(done)
        return waiting

    def closeAll(self):
        for protocol in list(self.streams.values()):
            protocol.transport.loseConnection()


class _UdpListener(Service):
    def __init__(self, reactor, host, port, protocol, onBound):
        self.reactor = reactor
        self.host = host
        self.port = port
        self.protocol = protocol
        self.onBound = onBound
        self.listening = None

    def startService(self):
        Service.startService(self)
        self.listening = self.reactor.listenUDP(self.port, self.protocol, interface=self.host)
        self.onBound(self.listening.getHost().port)

    def stopService(self):
        Service.stopService(self)
        if self.listening is not None:
            d = self.listening.stopListening()
            self.listening = None
            return d


class _TcpListener(Service):
    def __init__(self, reactor, description, factory, onBound):
        self.reactor = reactor
        self.description = description
        self.factory = factory
        self.onBound = onBound
        self.listening = None

    def startService(self):
        Service.startService(self)
        d = serverFromString(self.reactor, self.description).listen(self.factory)
        result = []
        d.addBoth(result.append)
        if not result:
            raise RuntimeError("scf.tcp_listen: %s did not bind at once" % (self.description,))
        if hasattr(result[0], "raiseException"):
            result[0].raiseException()
        self.listening = result[0]
        self.onBound(getattr(self.listening.getHost(), "port", None))

    def stopService(self):
        Service.stopService(self)
        if self.listening is not None:
            d = self.listening.stopListening()
            self.listening = None
            return d


def _tcp_interface(description):
    m = re.search(r"(?:^|:)interface=([^:]+)", description)
    return m.group(1) if m else None


class ScfService(MultiService):
    def __init__(self, node, config):
        MultiService.__init__(self)
        reactor = node.reactor
        udp = parse_udp_listen(config["udp_listen"])
        advertised = config["advertised_host"]
        if advertised is None:
            advertised = (udp[0] if udp else _tcp_interface(config["tcp_listen"])) or "127.0.0.1"
            if advertised in ("0.0.0.0", "::"):
                advertised = "127.0.0.1"
        serviceDomain = config["service_domain"] or "mbms." + node.homeDomain
        metrics = node.metrics.forRole("scf")
        self.client = HttpServiceAuthorizationClient(
            node.http, config["bmsc_url"], config["bmsc_timeout"], config["retries"])
        ports = {}
        if udp is not None:
            ports["UDP"] = udp[1]
        if config["tcp_listen"]:
            m = re.match(r"tcp6?:(?:port=)?(\d+)", config["tcp_listen"])
            ports["TCP"] = int(m.group(1)) if m else 5070
        self.connections = Connections(reactor, None, config["max_message_size"])
        self.core = ScfCore(
            reactor, self.client, Subscriptions(config["subscription"]),
            {s["id"]: s for s in config["service"]}, serviceDomain, config["trusted_pcscfs"],
            self.connections, advertised, ports, metrics,
            sessionExpires=config["session_expires"], minSe=config["min_se"],
            authorizationMargin=config["authorization_margin"],
            timers=TimerSettings(t1=config["t1"], trying_delay=0),
        )
        self.connections.receiver = self.core.layer
        if udp is not None:
            self.connections.udp = _Datagram(self.core.layer, config["max_message_size"])

            def boundUdp(port):
                self.core.ports["UDP"] = port

            _UdpListener(reactor, udp[0], udp[1], self.connections.udp,
                         boundUdp).setServiceParent(self)
        if config["tcp_listen"]:
            def boundTcp(port):
                if port:
                    self.core.ports["TCP"] = port

            _TcpListener(reactor, config["tcp_listen"],
                         _StreamFactory(self.core.layer, config["max_message_size"],
                                        self.connections),
                         boundTcp).setServiceParent(self)
        log.info("SCF: UDP {udp}, TCP {tcp}, services {services} in {domain}, BM-SC {bmsc}",
                 udp=config["udp_listen"] or "off", tcp=config["tcp_listen"] or "off",
                 services=", ".join(s["id"] for s in config["service"]), domain=serviceDomain,
                 bmsc=config["bmsc_url"])

    @inlineCallbacks
    def stopService(self):
        # Sessions end with the role: BYE to the UEs (first transmission
        # only), deauthorize at the BM-SC, awaited (bounded by bmsc_timeout)
        # before the listeners close; the node closes the HTTP pool after.
        yield self.core.stop()
        yield MultiService.stopService(self)
        self.connections.closeAll()
