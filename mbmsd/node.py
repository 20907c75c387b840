"""
The node: one process, one reactor, one store, one metrics registry, and the
roles its config enables, as a tree of services with an explicit order
(the config itself: L{mbmsd.nodeconfig}).

Start: storage opens and migrates, the config's provisioning is seeded, then the
exporters and the roles start in ascending C{startOrder}. Stop: the roles in
reverse, each awaited, then the exporters, then storage closes.
MultiService would not wait for any of this, so NodeService sequences it.
"""


from twisted.application.service import MultiService, Service
from twisted.internet.defer import TimeoutError, inlineCallbacks, maybeDeferred
from zope.interface import implementer

from mbmsd import __version__, logs, sdnotify, tls
from mbmsd.admin import config as admin_config
from mbmsd.errors import StartupError
from mbmsd.health import Health
from mbmsd.httpclient import HttpClient
from mbmsd.interfaces import IDrainable, IHealth, IHealthExporterFactory, INode
from mbmsd.logs import Logger
from mbmsd.metrics import Metrics
from mbmsd.nodeconfig import exporterFactories, roleFactories, storageFactories
from mbmsd.provisioning import seedFromConfig
from mbmsd.storage.sealing import KeyFileError
from mbmsd.storage.sql import SchemaError
from mbmsd.workerid import worker_number
from mbmsd.workers import export_restarts

log = Logger(namespace="mbmsd.node")


# ---------------------------------------------------------------- node


@implementer(INode)
class Node:
    def __init__(self, config, reactor, storage, metrics, http=None):
        self.config = config
        self.name = config["node"]["name"]
        self.homeDomain = config["node"]["home_domain"]
        self.reactor = reactor
        self.storage = storage
        self.metrics = metrics
        # the one pooled HTTP client of the process (docs/design.md 1.3)
        self.http = http if http is not None else HttpClient(reactor)
        self._ports = {}

    def provide(self, interface, provider):
        self._ports[interface] = provider

    def lookup(self, interface):
        return self._ports.get(interface)


class NodeService(MultiService):
    """
    The root service. C{ready} fires once everything has started.

    @ivar onStartupFailure: called with the Failure when start-up fails
        (twistd: log and exit non-zero, so systemd sees it).
    @ivar health: the node's L{Health}, told when every role started and
        when the node begins to stop; or None.
    """

    def __init__(self, node, exporters, roles, onStartupFailure=None, health=None):
        MultiService.__init__(self)
        self.node = node
        self.health = health
        self.exporters = list(exporters)
        self.roles = list(roles)
        self.onStartupFailure = onStartupFailure
        self._started = []
        self.ready = None
        for svc in self.exporters + self.roles:
            svc.setServiceParent(self)

    def privilegedStartService(self):
        # Children bind their ports in startService, after storage is ready:
        # no request may arrive before the schema exists. Privileged ports
        # (SIP on 5060) come from CAP_NET_BIND_SERVICE under systemd.
        Service.privilegedStartService(self)

    def startService(self):
        Service.startService(self)
        self.ready = self._start()
        self.ready.addErrback(self._failed)

    @inlineCallbacks
    def _start(self):
        yield self.node.storage.open()
        yield seedFromConfig(self.node.config, self.node.storage, lambda: self.running)
        if not self.running:
            # stopService ran while storage was opening: touch nothing more
            # (storage is closed) and start nothing on a stopped node.
            log.info("node {node} stopped before it was ready", node=self.node.name)
            return
        for svc in self.exporters + self.roles:
            self._started.append(svc)
            # a role may restore its state before its listeners open (pcscf)
            yield maybeDeferred(svc.startService)
            if not self.running:
                return
        log.info(
            "node {node} ready (mbmsd {v}): roles {roles}",
            node=self.node.name, v=__version__, roles=", ".join(s.name for s in self.roles),
        )
        self._announceReady()

    def _announceReady(self):
        # every listener is bound: the roles' startService bound them above
        if self.health is not None:
            self.health.nodeStarted(self.roles)
        sdnotify.notify("READY=1", "STATUS=node %s ready: roles %s"
                        % (self.node.name, ", ".join(s.name for s in self.roles)))

    def _announceStopping(self):
        if self.health is not None:
            self.health.nodeStopping()
        sdnotify.notify("STOPPING=1")

    def _failed(self, failure):
        if failure.check(SchemaError, KeyFileError, StartupError, tls.TlsConfigError):
            # an operator's problem with a one-line answer, not a bug
            log.critical("node {node} cannot start: {reason}", node=self.node.name,
                         reason=failure.getErrorMessage())
        else:
            log.failure("node {node} failed to start", failure, node=self.node.name)
        if self.onStartupFailure is not None:
            self.onStartupFailure(failure)
        return None

    @inlineCallbacks
    def stopService(self):
        Service.stopService(self)
        self._announceStopping()
        yield self._drain()
        while self._started:
            svc = self._started.pop()
            try:
                yield maybeDeferred(svc.stopService)
            except Exception:
                log.failure("stopping {name} failed", name=svc.name)
        try:
            yield self.node.http.close()
        except Exception:
            log.failure("closing the HTTP client pool failed")
        yield self.node.storage.close()
        log.info("node {node} stopped", node=self.node.name)

    @inlineCallbacks
    def _drain(self):
        # Dependence order (docs/design.md 2.3): the roles end their sessions while
        # every listener still carries them, within node.stop_grace.
        clock = self.node.reactor
        grace = self.node.config["node"]["stop_grace"]
        deadline = clock.seconds() + grace
        for svc in reversed(self._started):
            if not IDrainable.providedBy(svc):
                continue
            d = maybeDeferred(svc.drain)
            d.addTimeout(max(0.0, deadline - clock.seconds()), clock)
            try:
                yield d
            except TimeoutError:
                log.warn("{name}: not drained within node.stop_grace ({grace:g} s); stopping "
                         "anyway", name=svc.name, grace=grace)
            except Exception:
                log.failure("draining {name} failed", name=svc.name)


def makeNode(config, reactor, onStartupFailure=None, registry=None):
    """
    Build the node and its service tree from a validated config.
    """
    logs.setLevel(config["node"]["log_level"])
    storage = storageFactories()[config["storage"]["backend"]].open(config["storage"], reactor)
    metrics = Metrics(config["node"]["name"], registry)
    # worker 0 exports the supervisor's restart count (node.workers > 1)
    export_restarts(metrics.registry, config["node"]["name"], worker_number())
    metrics.info("mbmsd_node", "This mbmsd node", {
        "version": __version__, "roles": ",".join(config["node"]["roles"]),
    })
    clientTls = config["node"].get("http_client") or {}
    policy = None
    if clientTls.get("certificate") or clientTls.get("ca"):
        policy = tls.clientPolicy(clientTls)
    node = Node(config, reactor, storage, metrics, HttpClient(reactor, tlsPolicy=policy))
    health = Health(node, reactor)
    node.provide(IHealth, health)
    exporters = []
    factories = exporterFactories()
    for name in config["metrics"]["exporters"]:
        extra = (health,) if IHealthExporterFactory.providedBy(factories[name]) else ()
        exporters.append(factories[name].makeService(config["metrics"][name], metrics.registry,
                                                     reactor, *extra))
    if admin_config.enabled(config):
        # with the exporters: up once storage is, before the roles; down after them
        from mbmsd.admin.service import AdminService

        exporters.append(AdminService(node, config["admin"]))
    roles = []
    available = roleFactories()
    enabled = sorted(config["node"]["roles"], key=lambda r: (available[r].startOrder, r))
    for name in enabled:
        svc = available[name].makeService(node, config[name])
        svc.setName(name)
        roles.append(svc)
    return NodeService(node, exporters, roles, onStartupFailure, health)

