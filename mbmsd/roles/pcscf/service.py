"""
The P-CSCF service: the UDP and TCP listeners, the TCP connections (the
UEs' and ours to the SCF), the registrar, the proxy and the pruning timer.
"""

import re

from twisted.application.internet import TimerService
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from mbmsd.roles.pcscf.plugin import parse_next_hop, parse_udp_listen
from mbmsd.roles.pcscf.proxy import PcscfProxy
from mbmsd.roles.pcscf.registrar import Registrar
from mbmsd.sip.transaction import TimerSettings
from mbmsd.sip.transport import SipDatagramProtocol, SipStreamFactory, SipStreamProtocol

__all__ = ["PcscfService", "Connections"]

log = Logger(namespace="mbmsd.pcscf")


class _Counting:
    """Count what the transports refuse (parse errors), by answer."""

    def _count(self, error):
        status = getattr(error, "status", 400)
        self.connections.malformed.labels(str(status)).inc()


class _Datagram(_Counting, SipDatagramProtocol):
    noisy = False

    def __init__(self, receiver, max_size, connections):
        SipDatagramProtocol.__init__(self, receiver, max_size)
        self.connections = connections

    def _answer_error(self, error, addr):
        self._count(error)
        SipDatagramProtocol._answer_error(self, error, addr)


class _Stream(_Counting, SipStreamProtocol):
    """A TCP connection that the L{Connections} table knows about."""

    outbound = False

    def __init__(self, receiver, max_size, connections, outbound=False):
        SipStreamProtocol.__init__(self, receiver, max_size)
        self.connections = connections
        self.outbound = outbound

    def connectionMade(self):
        SipStreamProtocol.connectionMade(self)
        self.connections._add(self)

    def connectionLost(self, reason=None):
        SipStreamProtocol.connectionLost(self, reason)
        self.connections._remove(self)

    def _error(self, error):
        self._count(error)
        SipStreamProtocol._error(self, error)


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

    def __init__(self, receiver, max_size, connections):
        self.receiver = receiver
        self.max_size = max_size
        self.connections = connections

    def buildProtocol(self, addr):
        return _Stream(self.receiver, self.max_size, self.connections, outbound=True)


class Connections:
    """
    The P-CSCF's way to the network: the UDP socket, and the open TCP
    connections by peer C{(host, port)}, opening one to a peer when needed.
    """

    def __init__(self, reactor, receiver, max_size, metrics, connectTimeout=5):
        self.reactor = reactor
        self.receiver = receiver
        self.max_size = max_size
        self.connectTimeout = connectTimeout
        self.udp = None
        self.streams = {}
        self._pending = {}
        self.malformed = metrics.counter(
            "mbmsd_pcscf_malformed_total",
            "Messages refused by the parser, by the status answered (or dropped)", ["status"])
        self.open = metrics.gauge("mbmsd_pcscf_tcp_connections", "Open SIP TCP connections")

    def datagramProtocol(self):
        return _Datagram(self.receiver, self.max_size, self)

    def streamFactory(self):
        return _StreamFactory(self.receiver, self.max_size, self)

    def _add(self, protocol):
        if protocol.peer is not None:
            self.streams[protocol.peer] = protocol
        self.open.set(len(self.streams))

    def _remove(self, protocol):
        if self.streams.get(protocol.peer) is protocol:
            del self.streams[protocol.peer]
        self.open.set(len(self.streams))

    def isOutbound(self, transport):
        return bool(getattr(transport, "outbound", False))

    def transportFor(self, name, host, port):
        """
        @return: Deferred of the ISipTransport that reaches C{(host, port)}
            over C{name} ('UDP' or 'TCP').
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
        endpoint = cls(self.reactor, host, port, timeout=self.connectTimeout)
        factory = _OutboundFactory(self.receiver, self.max_size, self)
        connecting = endpoint.connect(factory)

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
            raise RuntimeError("pcscf.tcp_listen: %s did not bind at once" % (self.description,))
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


class PcscfService(MultiService):
    def __init__(self, node, config):
        MultiService.__init__(self)
        reactor = node.reactor
        udp = parse_udp_listen(config["udp_listen"])
        scf = parse_next_hop(config["scf"])
        advertised = config["advertised_host"]
        if advertised is None:
            advertised = (udp[0] if udp else _tcp_interface(config["tcp_listen"])) or "127.0.0.1"
            if advertised in ("0.0.0.0", "::"):
                advertised = "127.0.0.1"
        metrics = node.metrics.forRole("pcscf")
        self.clock = reactor
        self.store = node.storage.sipRegistrations
        self.registrar = Registrar(
            node.storage.subscribers, self.store, reactor,
            realm=config["realm"] or node.homeDomain,
            minExpires=config["min_expires"], maxExpires=config["max_expires"],
            defaultExpires=config["default_expires"],
            challengeLifetime=config["challenge_lifetime"],
        )
        self.bindingsGauge = metrics.gauge("mbmsd_pcscf_registered_bindings",
                                           "Live registration bindings")
        self.pruned = metrics.counter("mbmsd_pcscf_pruned_total",
                                      "Expired bindings and challenges removed")
        self.connections = Connections(reactor, None, config["max_message_size"], metrics)
        ports = {}
        if udp is not None:
            ports["UDP"] = udp[1]
        if config["tcp_listen"]:
            m = re.match(r"tcp6?:(?:port=)?(\d+)", config["tcp_listen"])
            ports["TCP"] = int(m.group(1)) if m else 5060
        self.proxy = PcscfProxy(
            reactor, self.registrar, self.store, self.connections, scf, advertised, ports,
            metrics, trustedPeers=config["trusted_peers"],
            timers=TimerSettings(t1=config["t1"], trying_delay=0),
            onRegistration=self.updateGauge,
        )
        self.connections.receiver = self.proxy.layer
        if udp is not None:
            self.connections.udp = self.connections.datagramProtocol()

            def boundUdp(port):
                self.proxy.ports["UDP"] = port

            _UdpListener(reactor, udp[0], udp[1], self.connections.udp,
                         boundUdp).setServiceParent(self)
        if config["tcp_listen"]:
            def boundTcp(port):
                if port:
                    self.proxy.ports["TCP"] = port

            _TcpListener(reactor, config["tcp_listen"], self.connections.streamFactory(),
                         boundTcp).setServiceParent(self)
        timer = TimerService(config["prune_interval"], self.prune)
        timer.clock = reactor
        timer.setName("prune")
        timer.setServiceParent(self)
        log.info("P-CSCF: UDP {udp}, TCP {tcp}, next hop {scf}, advertised as {adv}",
                 udp=config["udp_listen"] or "off", tcp=config["tcp_listen"] or "off",
                 scf=config["scf"], adv=advertised)

    def stopService(self):
        self.connections.closeAll()
        return MultiService.stopService(self)

    def updateGauge(self):
        d = self.store.countBindings(self.clock.seconds())
        d.addCallback(self.bindingsGauge.set)
        d.addErrback(lambda f: log.failure("counting bindings failed", f))
        return d

    def prune(self):
        d = self.store.prune(self.clock.seconds())

        def done(n):
            if n:
                self.pruned.inc(n)
                log.info("pruned {n} expired registration entries", n=n)
            return self.updateGauge()

        d.addCallback(done)
        d.addErrback(lambda f: log.failure("pruning failed", f))
        return d

