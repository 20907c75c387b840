"""
The P-CSCF service: the UDP and TCP listeners, the TCP connections (the
UEs' and ours to the SCF), the registrar, the proxy and the pruning timer.
"""

from twisted.application.internet import TimerService
from twisted.application.service import MultiService
from twisted.internet.defer import inlineCallbacks
from zope.interface import implementer

from mbmsd import tls
from mbmsd.interfaces import IReconfigurable
from mbmsd.logs import Logger
from mbmsd.overload import AuthGuard, OverloadMetrics, SipAdmission
from mbmsd.roles.pcscf.bindings import BindingTable
from mbmsd.roles.pcscf.config import parse_next_hop
from mbmsd.roles.pcscf.proxy import PcscfProxy
from mbmsd.roles.pcscf.registrar import Registrar
from mbmsd.sip.listeners import Connections, SipListenSettings, attach_listeners
from mbmsd.sip.transaction import TimerSettings
from mbmsd.workerid import worker_number

__all__ = ["PcscfService", "Connections"]

log = Logger(namespace="mbmsd.pcscf")


def _scfWorkerPorts(config):
    """
    The own ports of this node's SCF workers (node.workers > 1 with the scf
    role): its UDP requests (a BYE at the session timer's end) come from them.
    """
    workers = config["node"].get("workers") or 1
    if workers < 2 or "scf" not in config["node"]["roles"]:
        return ()
    base = config["scf"]["worker_ports"]
    return range(base, base + workers)


@implementer(IReconfigurable)
class PcscfService(MultiService):
    def __init__(self, node, config):
        MultiService.__init__(self)
        reactor = node.reactor
        listen = SipListenSettings(config, 5060, worker_number())
        scf = parse_next_hop(config["scf"])
        metrics = node.metrics.forRole("pcscf")
        overloaded = OverloadMetrics(metrics)
        self.scf = scf
        self.guard = AuthGuard.fromConfig(reactor, config, overloaded)
        self.clock = reactor
        # the bindings live here, written through to storage (bindings.py)
        self.store = BindingTable(node.storage.sipRegistrations, reactor,
                                  limit=config["max_bindings"])
        self._stopping = False
        self.registrar = Registrar(
            node.storage.subscribers, self.store, reactor,
            realm=config["realm"] or node.homeDomain,
            minExpires=config["min_expires"], maxExpires=config["max_expires"],
            defaultExpires=config["default_expires"],
            challengeLifetime=config["challenge_lifetime"],
            guard=self.guard,
        )
        self.bindingsGauge = metrics.gauge("mbmsd_pcscf_registered_bindings",
                                           "Live registration bindings")
        self.pruned = metrics.counter("mbmsd_pcscf_pruned_total",
                                      "Expired bindings and challenges removed")
        self.connections = Connections(reactor, None, config["max_message_size"], metrics,
                                       "pcscf")
        self.proxy = PcscfProxy(
            reactor, self.registrar, self.store, self.connections, scf, listen.advertised,
            listen.ports,
            metrics, trustedPeers=config["trusted_peers"],
            timers=TimerSettings(t1=config["t1"], trying_delay=0),
            onRegistration=self.updateGauge, maxDialogs=config["max_bindings"],
            sharedPorts=listen.sharedPorts, scfPorts=_scfWorkerPorts(node.config),
            recall=(node.config["node"].get("workers") or 1) > 1,
        )
        # the SCF and trusted peers carry many users' requests: per listener only
        self.proxy.layer.admission = self.connections.admission = SipAdmission(
            config, overloaded, exempt={scf[0], *config["trusted_peers"]}, clock=reactor)
        self.connections.receiver = self.proxy.layer
        self.tls = tls.ServerTls(config["tls"]) if listen.tls else None
        attach_listeners(self, reactor, "pcscf", listen, self.connections, self.proxy.ports,
                         tls=self.tls, sharedPorts=self.proxy.sharedPorts)
        timer = TimerService(config["prune_interval"], self.prune)
        timer.clock = reactor
        timer.setName("prune")
        timer.setServiceParent(self)
        log.info("P-CSCF: UDP {udp}, TCP {tcp}, TLS {tls}, next hop {scf}, advertised as {adv}",
                 udp=config["udp_listen"] or "off", tcp=config["tcp_listen"] or "off",
                 tls=listen.tls or "off", scf=config["scf"], adv=listen.advertised)

    def prepareReconfigure(self, config):
        """IReconfigurable: the trusted peers, the overload and rate limits, the TLS files."""
        switch = lambda: None  # noqa: E731 (no tls_listen: [pcscf.tls] serves nothing)
        if self.tls is not None:
            switch = tls.prepareReload(self.tls, config["tls"], "pcscf.tls")

        def apply():
            self.proxy.trustedPeers = set(config["trusted_peers"])
            self.proxy.layer.admission.reconfigure(
                config, {self.scf[0], *config["trusted_peers"]})
            self.guard.reconfigure(config)
            switch()

        return apply

    @inlineCallbacks
    def startService(self):
        """
        Restore the bindings from storage, then open the listeners: no
        request is served from an empty table. The node awaits this.
        """
        n = yield self.store.load()
        if self._stopping:
            return
        log.info("P-CSCF: {n} registration bindings restored from storage", n=n)
        self.updateGauge()
        MultiService.startService(self)

    def stopService(self):
        self._stopping = True
        if not self.running:
            return None
        self.connections.closeAll()
        return MultiService.stopService(self)

    def updateGauge(self):
        # between sweeps this counts bindings expired but not yet swept
        self.bindingsGauge.set(len(self.store))

    def prune(self):
        now = self.clock.seconds()
        self.proxy.sweepDialogs(now)
        d = self.store.prune(now)

        def done(n):
            if n:
                self.pruned.inc(n)
                log.info("pruned {n} expired registration entries", n=n)
            self.updateGauge()

        d.addCallback(done)
        d.addErrback(lambda f: log.failure("pruning failed", f))
        return d

