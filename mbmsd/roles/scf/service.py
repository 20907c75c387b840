"""
The SCF service: the SIP listeners (UDP, TCP), the connections the SCF's
own requests (BYE, UPDATE) leave on, and the UAS core behind them.
"""

from twisted.application.service import MultiService
from twisted.internet.defer import inlineCallbacks
from zope.interface import implementer

from mbmsd.interfaces import IDrainable, IReconfigurable
from mbmsd.logs import Logger
from mbmsd.overload import OverloadMetrics, SipAdmission
from mbmsd.roles.scf.bmsc import service_authorization_client
from mbmsd.roles.scf.core import ScfCore
from mbmsd.roles.scf.provisioning import StoredServices
from mbmsd.sip.listeners import Connections, SipListenSettings, attach_listeners
from mbmsd.sip.transaction import TimerSettings
from mbmsd.workerid import worker_number
from mbmsd.znclient import zn_lookup

__all__ = ["ScfService", "Connections"]

log = Logger(namespace="mbmsd.scf")


@implementer(IDrainable, IReconfigurable)
class ScfService(MultiService):
    def __init__(self, node, config):
        MultiService.__init__(self)
        reactor = node.reactor
        listen = SipListenSettings(config, 5070, worker_number())
        serviceDomain = config["service_domain"] or "mbms." + node.homeDomain
        metrics = node.metrics.forRole("scf")
        self.client = service_authorization_client(node, config)
        # services and subscriptions: from storage, at each INVITE
        provisioned = StoredServices(node.storage.provisioning)
        self.connections = Connections(reactor, None, config["max_message_size"], metrics, "scf")
        self.core = ScfCore(
            reactor, self.client, provisioned, provisioned, serviceDomain,
            config["trusted_pcscfs"],
            self.connections, listen.advertised, listen.ports, metrics,
            sessionExpires=config["session_expires"], minSe=config["min_se"],
            authorizationMargin=config["authorization_margin"],
            timers=TimerSettings(t1=config["t1"], trying_delay=0),
            # the SIP-based security procedure: the SCF as a NAF on Zn
            zn=zn_lookup(node, config["zn_url"], config["zn_timeout"]),
            nafFqdn=config["naf_fqdn"] or "scf." + node.homeDomain,
            subscribers=node.storage.subscribers,
        )
        if self.core.zn is None:
            log.warn("SCF: no Zn (no bsf role on this node, no scf.zn_url): INVITEs of the "
                     "SIP-based security procedure get 500")
        # the trusted P-CSCFs carry many users' requests: per listener only
        self.core.layer.admission = self.connections.admission = SipAdmission(
            config, OverloadMetrics(metrics), exempt=config["trusted_pcscfs"], clock=reactor)
        self.connections.receiver = self.core.layer
        attach_listeners(self, reactor, "scf", listen, self.connections, self.core.ports)
        log.info("SCF: UDP {udp}, TCP {tcp}, services {services} in {domain}, BM-SC {bmsc}",
                 udp=config["udp_listen"] or "off", tcp=config["tcp_listen"] or "off",
                 services=", ".join(s["id"] for s in config["service"]), domain=serviceDomain,
                 bmsc=", ".join(self.client.bases))

    def prepareReconfigure(self, config):
        """
        IReconfigurable: the trusted P-CSCFs, the overload limits (the
        services and subscriptions are read from storage, where the reload
        wrote the config's). Sessions already up keep theirs.
        """

        def apply():
            self.core.trustedPcscfs = set(config["trusted_pcscfs"])
            self.core.layer.admission.reconfigure(config, config["trusted_pcscfs"])

        return apply

    def drain(self):
        """
        IDrainable: end every session, BYE to the UE (through the P-CSCF,
        still listening) and deauthorize at the BM-SC, both awaited.
        """
        return self.core.stop()

    @inlineCallbacks
    def stopService(self):
        # Sessions end with the role (the node drained them first: this
        # ends only those that began since), before the listeners close;
        # the node closes the HTTP pool after.
        yield self.core.stop()
        yield MultiService.stopService(self)
        self.connections.closeAll()
