"""
The BM-SC.UPF service: the key management listener, the MIKEY UDP port,
MSK rotation and pruning.
"""

from twisted.application.internet import TimerService
from twisted.application.service import MultiService, Service
from twisted.internet.defer import DeferredList, maybeDeferred
from twisted.internet.error import CannotListenError
from zope.interface import implementer

from mbmsd import profile, tls
from mbmsd.cluster import holder_id
from mbmsd.errors import ReloadRefused, listenFailed
from mbmsd.interfaces import IBootstrapLookup, IHealth, IReconfigurable, IServiceAuthorization
from mbmsd.logs import Logger
from mbmsd.overload import AuthGuard, ConcurrencyLimiter, OverloadMetrics
from mbmsd.roles.bmsc.config import lease_renewal, streaming, streams
from mbmsd.roles.bmsc.counters import CounterReservations
from mbmsd.roles.bmsc.delivery import MikeyDelivery, MskPush
from mbmsd.roles.bmsc.http import KeyManagementResource
from mbmsd.roles.bmsc.keymanagement import KeyManagement, KmAccounting, LocalServiceAuthorization
from mbmsd.roles.bmsc.msk import MskManager
from mbmsd.roles.bmsc.provisioning import StoredKeyGroups
from mbmsd.roles.bmsc.ua import UaAuthenticator
from mbmsd.web import listener, makeSite
from mbmsd.znclient import zn_lookup

log = Logger(namespace="mbmsd.bmsc")


class _MikeyPort(Service):
    """
    The UDP socket MSK messages leave from and verifications return to.
    """

    def __init__(self, reactor, protocol, port, interface):
        self.reactor = reactor
        self.protocol = protocol
        self.portNumber = port
        self.interface = interface
        self.port = None

    def startService(self):
        Service.startService(self)
        try:
            self.port = self.reactor.listenUDP(self.portNumber, self.protocol,
                                               interface=self.interface)
        except CannotListenError as e:
            raise listenFailed("bmsc.mikey_source_port", "udp:%d:interface=%s" % (
                self.portNumber, self.interface), e) from None

    def stopService(self):
        Service.stopService(self)
        if self.port is not None:
            port, self.port = self.port, None
            return port.stopListening()


class _Msks(Service):
    def __init__(self, manager):
        self.manager = manager

    def startService(self):
        Service.startService(self)
        self.manager.start().addErrback(
            lambda f: log.failure("reading the MBMS User Services failed", f))

    def stopService(self):
        Service.stopService(self)
        return self.manager.stop()  # releases the rotation leases


class _Streaming(Service):
    """
    The streaming services: their bearer sockets and content ports, and
    their MTK schedules (started after the MSK manager).
    """

    def __init__(self, reactor, streams):
        self.reactor = reactor
        self.streams = streams  # [(StreamingService, UdpBearer, (host, port), interface)]
        self.ports = []

    def startService(self):
        Service.startService(self)
        from mbmsd.roles.bmsc.streaming import MediaPort
        from mbmsd.workerid import worker_number

        if worker_number() not in (None, 0):
            return  # one content port and MTK schedule per stream: worker 0's
        for stream, bearer, source, interface in self.streams:
            self.ports.append(self.reactor.listenUDP(0, bearer, interface=interface))
            self.ports.append(self.reactor.listenUDP(source[1], MediaPort(stream),
                                                     interface=source[0]))
            stream.start()

    def stopService(self):
        Service.stopService(self)
        for stream, _, _, _ in self.streams if self.ports else ():
            stream.stop()
        ports, self.ports = self.ports, []
        return DeferredList([maybeDeferred(p.stopListening) for p in ports])


@implementer(IReconfigurable)
class BmscService(MultiService):
    def __init__(self, node, config):
        MultiService.__init__(self)
        reactor = node.reactor
        metrics = node.metrics.forRole("bmsc")
        store = node.storage.bmsc
        self.nafFqdn = config["naf_fqdn"] or "bmsc." + node.homeDomain
        zn = node.lookup(IBootstrapLookup)
        if config["zn_url"]:
            zn = zn_lookup(node, config["zn_url"], config["zn_timeout"])
            health = node.lookup(IHealth)
            if health is not None:
                # readiness: the BSF's Zn answers (in-process: the bsf role)
                health.addCheck("bmsc.zn", zn.probe)
        overloaded = OverloadMetrics(metrics)
        self.guard = AuthGuard.fromConfig(reactor, config, overloaded)
        # NAF_Id = FQDN || each accepted Ua security protocol id (TS 33.220 H.3)
        self.ua = UaAuthenticator(zn, self.nafFqdn, config["ua_ids"], reactor,
                                  config["nonce_lifetime"], guard=self.guard)
        keyDomainId = profile.key_domain_id(config["mcc"], config["mnc"])
        # services and their Key Groups: from storage, at each use
        services = StoredKeyGroups(node.storage.provisioning)
        uePort = config["ue_mikey_port"] or profile.MSK_UDP_PORT
        # MIKEY counters reserved durably before use, many MUKs per transaction
        # (counters.py), one counter per message: no node holds a block in
        # memory, so the counters a UE gets only grow whichever BM-SC node of
        # a shared database sends
        counters = CounterReservations(store, reactor, block=1)
        streamingIds = [s["id"] for s in config["service"] if streaming(s)]
        self.delivery = MikeyDelivery(reactor, counters,
                                      self.nafFqdn.encode("ascii"), uePort, metrics,
                                      streaming=streamingIds)
        self.pusher = MskPush(self.delivery, self.ua, reactor)
        self.msks = MskManager(store, reactor, keyDomainId, services, config["msk_lifetime"],
                               config["msk_rotation"], metrics, self.pusher,
                               # one node of those sharing the database rotates
                               leases=node.storage.leases, holder=holder_id(node.name),
                               leaseDuration=config["lease_duration"],
                               leaseRenewal=lease_renewal(config),
                               shards=config["rotation_shards"])
        self.km = KeyManagement(store, node.storage.subscribers, self.ua, self.msks, self.pusher,
                                reactor, services, config["trusted_scfs"],
                                config["authorization_lifetime"], keyDomainId,
                                trustedScfNames=config.get("trusted_scf_names", ()))
        self.store = store
        self.clock = reactor
        # trusted SCFs carry many users' requests: bounded per listener only
        scfs = config["trusted_scfs"]
        self.limits = (
            ConcurrencyLimiter.fromConfig(config, overloaded, "keymanagement", scfs, reactor),
            ConcurrencyLimiter.connectionsFromConfig(config, overloaded, "keymanagement", scfs,
                                                     reactor))
        # one set of metrics for both transports; in-process for the SCF
        # of this node (scf.bmsc_url = "local")
        accounting = KmAccounting(metrics, reactor)
        node.provide(IServiceAuthorization, LocalServiceAuthorization(self.km, accounting, reactor))
        site = makeSite(
            KeyManagementResource(self.km, metrics, reactor, accounting), reactor, *self.limits,
            node.config.get("node", {}).get("http_access_log", False))
        _MikeyPort(reactor, self.delivery, config["mikey_source_port"],
                   config["mikey_interface"]).setServiceParent(self)
        _Msks(self.msks).setServiceParent(self)
        self.streams = self._streams(reactor, config, metrics, streamingIds)
        self.streamConfig = streams(config)
        if self.streams:
            _Streaming(reactor, self.streams).setServiceParent(self)
        self.tls = tls.ServerTls.forSection(config.get("tls"))
        listener(reactor, config["listen"], site, "keymanagement", tls=self.tls,
                 key="bmsc.listen").setServiceParent(self)
        timer = TimerService(config["prune_interval"], self.prune)
        timer.clock = reactor
        timer.setServiceParent(self)
        log.info("BM-SC.UPF {naf}: key management on {listen}, services {services}",
                 naf=self.nafFqdn, listen=config["listen"],
                 services=", ".join(s["id"] for s in config["service"]))

    def prepareReconfigure(self, config):
        """
        IReconfigurable: the trusted SCFs, the overload and rate limits, the
        TLS files; the services are read from storage, where the reload wrote
        the config's, and their rotation follows them.
        """
        wanted = streams(config)
        changed = sorted(i for i in set(wanted) | set(self.streamConfig)
                         if wanted.get(i) != self.streamConfig.get(i))
        if changed:
            # the stream's sockets and MTK schedule are made at start
            raise ReloadRefused("bmsc.service: the stream of %s (media_source, bearer and "
                                "the other streaming keys) needs a restart" % (", ".join(changed),))
        switch = tls.prepareReload(self.tls, config["tls"], "bmsc.tls")

        def apply():
            self.km.trustedScfs = set(config["trusted_scfs"])
            self.km.trustedScfNames = {n.lower() for n in config["trusted_scf_names"]}
            for limiter in self.limits:
                limiter.reconfigure(config, config["trusted_scfs"])
            self.guard.reconfigure(config)
            switch()
            d = self.msks.refresh()
            d.addErrback(lambda f: log.failure("following the stored services", f))

        return apply

    def _streams(self, reactor, config, metrics, streamingIds):
        """The streaming services of [[bmsc.service]] (those naming a bearer)."""
        from mbmsd.roles.bmsc.streaming import StreamingMetrics, StreamingService, UdpBearer

        if not streamingIds:
            return []
        counters = StreamingMetrics(metrics, streamingIds)
        streams = []
        for s in config["service"]:
            if not streaming(s):
                continue
            interface = s["bearer_interface"] or config["mikey_interface"]
            group, port = s["bearer"]
            bearer = UdpBearer(group, port, s["bearer_key_port"] or profile.MTK_UDP_PORT,
                               s["bearer_ttl"], interface)
            stream = StreamingService(s["id"], reactor, self.msks, bearer, counters,
                                      s["mtk_rotation"], s["mtk_repeat"], s["max_packet_rate"])
            streams.append((stream, bearer, s["media_source"], interface))
        return streams

    def prune(self):
        d = self.store.prune(self.clock.seconds())
        d.addErrback(lambda f: log.failure("pruning failed", f))
        # services added or removed through the admin API: their rotation
        d.addCallback(lambda _: self.msks.refresh())
        d.addErrback(lambda f: log.failure("reading the MBMS User Services failed", f))
        return d
