"""
The BSF service: the Ub and Zn listeners and the pruning timer.
"""

from twisted.application.internet import TimerService
from twisted.application.service import MultiService
from zope.interface import implementer

from mbmsd import tls
from mbmsd.interfaces import IBootstrapLookup, IReconfigurable
from mbmsd.logs import Logger
from mbmsd.overload import AuthGuard, ConcurrencyLimiter, OverloadMetrics
from mbmsd.roles.bsf.bootstrap import Bootstrapper
from mbmsd.roles.bsf.ub import UbResource
from mbmsd.roles.bsf.zn import ZnLookup, ZnResource
from mbmsd.web import listener, makeSite

log = Logger(namespace="mbmsd.bsf")


def _nafs(config):
    """{NAF FQDN (lower case): its addresses} of [[bsf.naf]]."""
    nafs = {}
    for naf in config["naf"]:
        nafs.setdefault(naf["fqdn"].lower(), set()).update(naf["addresses"])
    return nafs


@implementer(IReconfigurable)
class BsfService(MultiService):
    def __init__(self, node, config):
        MultiService.__init__(self)
        reactor = node.reactor
        domain = config["domain"] or "bsf." + node.homeDomain
        metrics = node.metrics.forRole("bsf")
        overloaded = OverloadMetrics(metrics)
        self.guard = AuthGuard.fromConfig(reactor, config, overloaded)
        self.bootstrapper = Bootstrapper(
            node.storage.subscribers, node.storage.bootstrap, reactor,
            domain=domain, realm=domain,
            keyLifetime=config["key_lifetime"],
            challengeLifetime=config["challenge_lifetime"],
            maxFailures=config["max_auth_failures"],
            failureWindow=config["auth_failure_window"],
            guard=self.guard,
        )
        nafs = _nafs(config)
        self.zn = ZnLookup(node.storage.bootstrap, reactor, nafs)
        node.provide(IBootstrapLookup, self.zn)
        self.ubResource = UbResource(self.bootstrapper, metrics, reactor)
        self.znResource = ZnResource(self.zn, metrics, reactor)
        # Ub: server-authenticated TLS only (the UE has no certificate);
        # Zn: a NAF may show its client certificate
        self.ubTls = ubTls = tls.ServerTls.forSection(config.get("tls"), clientCertificates=False)
        self.znTls = znTls = tls.ServerTls.forSection(config.get("tls"))
        # the configured NAFs carry many users' requests: bounded per listener only
        naf = set().union(*nafs.values())
        accessLog = node.config.get("node", {}).get("http_access_log", False)
        self.ubLimits = (ConcurrencyLimiter.fromConfig(config, overloaded, "ub", (), reactor),
                         ConcurrencyLimiter.connectionsFromConfig(config, overloaded, "ub", (),
                                                                  reactor))
        self.znLimits = (ConcurrencyLimiter.fromConfig(config, overloaded, "zn", naf, reactor),
                         ConcurrencyLimiter.connectionsFromConfig(config, overloaded, "zn", naf,
                                                                  reactor))
        ub = makeSite(self.ubResource, reactor, *self.ubLimits, accessLog)
        zn = makeSite(self.znResource, reactor, *self.znLimits, accessLog)
        listener(reactor, config["ub_listen"], ub, "ub", tls=ubTls,
                 key="bsf.ub_listen").setServiceParent(self)
        listener(reactor, config["zn_listen"], zn, "zn", tls=znTls,
                 key="bsf.zn_listen").setServiceParent(self)
        self.pruned = metrics.counter("mbmsd_bsf_pruned_total",
                                      "Expired bootstrapping sessions and challenges removed")
        self.store = node.storage.bootstrap
        self.clock = reactor
        timer = TimerService(config["prune_interval"], self.prune)
        timer.clock = reactor
        timer.setName("prune")
        timer.setServiceParent(self)
        log.info("BSF {domain}: Ub on {ub}, Zn on {zn}{tls}", domain=domain,
                 ub=config["ub_listen"], zn=config["zn_listen"],
                 tls=" (HTTPS)" if tls.enabled(config.get("tls")) else "")

    def prepareReconfigure(self, config):
        """IReconfigurable: the NAFs, the overload and rate limits, the TLS files."""
        nafs = _nafs(config)
        naf = set().union(*nafs.values())
        switches = [tls.prepareReload(self.ubTls, config["tls"], "bsf.tls"),
                    tls.prepareReload(self.znTls, config["tls"], "bsf.tls")]

        def apply():
            self.zn.nafs = nafs
            for limiter in self.ubLimits:
                limiter.reconfigure(config)
            for limiter in self.znLimits:
                limiter.reconfigure(config, naf)
            self.guard.reconfigure(config)
            for switch in switches:
                switch()

        return apply

    def prune(self):
        d = self.store.prune(self.clock.seconds())

        def done(n):
            if n:
                self.pruned.inc(n)
                log.info("pruned {n} expired bootstrapping entries", n=n)

        d.addCallback(done)
        d.addErrback(lambda f: log.failure("pruning failed", f))
        return d
