"""
The node: one process, one reactor, one store, one metrics registry, and the
roles its config enables, as a tree of services with an explicit order.

Start: storage opens and migrates, the config's provisioning is seeded, then the
exporters and the roles start in ascending C{startOrder}. Stop: the roles in
reverse, each awaited, then the exporters, then storage closes.
MultiService would not wait for any of this, so NodeService sequences it.
"""


from twisted.application.service import MultiService, Service
from twisted.internet.defer import TimeoutError, inlineCallbacks, maybeDeferred
from twisted.plugin import getPlugins
from zope.interface import implementer

from mbmsd import __version__
from mbmsd import config as c
from mbmsd import logs
from mbmsd import sdnotify
from mbmsd import tls
from mbmsd.health import Health
from mbmsd.admin import config as admin_config
from mbmsd.interfaces import (
    IDrainable,
    IHealth,
    IHealthExporterFactory,
    IMetricsExporterFactory,
    INode,
    IRoleFactory,
    IStorageFactory,
)
from mbmsd.errors import StartupError
from mbmsd.httpclient import HttpClient
from mbmsd.logs import Logger
from mbmsd.metrics import Metrics
from mbmsd.provisioning import NAI, PUBLIC_ID, seedFromConfig
from mbmsd.storage.sealing import KeyFileError, check_key_file
from mbmsd.storage.sql import SchemaError

log = Logger(namespace="mbmsd.node")


# ---------------------------------------------------------------- plugins


def _plugins(interface):
    import mbmsd.plugins

    found = {}
    for plugin in getPlugins(interface, mbmsd.plugins):
        found[plugin.name] = plugin
    return found


def roleFactories():
    return _plugins(IRoleFactory)


def storageFactories():
    return _plugins(IStorageFactory)


def exporterFactories():
    return _plugins(IMetricsExporterFactory)


# ---------------------------------------------------------------- config

NODE_SECTION = c.Section(
    fields={
        "name": c.Field(c.string(r"[A-Za-z0-9_.-]{1,64}", "letters, digits, '_', '.', '-'"),
                        "mbmsd", "node name: a metric label and a log prefix"),
        "home_domain": c.Field(c.fqdn(), c.REQUIRED, "home network domain"),
        "roles": c.Field(c.array(c.string(), minimum=1), c.REQUIRED,
                         "roles this node runs: bsf, pcscf, scf, bmsc"),
        "log_level": c.Field(c.choice(*logs.LEVELS), logs.DEFAULT,
                             "least severe events logged by mbmsd: per-transaction detail "
                             "is debug, each procedure's outcome info"),
        "stop_grace": c.Field(c.number(0, 300), 5.0,
                              "seconds a clean stop waits for the roles to end their work "
                              "(the SCF's BYEs and deauthorizes) before the listeners close"),
        "log_format": c.Field(c.choice(*logs.FORMATS), "text",
                              "text (twistd's lines) or json (one object per line, "
                              "the event's fields as keys)"),
        "workers": c.Field(c.integer(1, 64), 1,
                           "processes of this node sharing its listeners (SO_REUSEPORT, "
                           "Linux); more than 1 needs a shared store (sqlite, postgresql)"),
        "http_access_log": c.Field(c.boolean(), False,
                                   "an access-log line per HTTP request on Ub, Zn and Ua "
                                   "(each procedure's outcome is logged anyway)"),
    },
    # the pooled HTTP client's TLS: client certificate and the servers' CA
    tables={"http_client": tls.HTTP_CLIENT_SECTION},
)

SUBSCRIBER_SECTION = c.Section(
    fields={
        "impi": c.Field(c.string(NAI, "an NAI such as 'user1@home1.net'"), c.REQUIRED, "IMPI"),
        "impus": c.Field(c.array(c.string(PUBLIC_ID, "a SIP or tel URI"), minimum=1),
                         c.REQUIRED, "IMPUs; the first is the default public identity"),
        "k": c.Field(c.hexbytes(16), c.REQUIRED, "subscriber key K", secret=True),
        "op": c.Field(c.hexbytes(16), None, "operator variant OP (or give opc)", secret=True),
        "opc": c.Field(c.hexbytes(16), None, "OPc (or give op)", secret=True),
        "amf": c.Field(c.hexbytes(2), bytes.fromhex("8000"), "AMF for vectors"),
        "sqn": c.Field(c.hexbytes(6), bytes(6), "initial SQN (a stored SQN ahead of it wins)"),
    }
)


# an overlay naming another backend replaces [storage] whole (config.load_files)
SELECTORS = {("storage",): "backend"}


def load_config(paths):
    """
    Read, merge and validate the node's config files.

    @return: the validated config dict.
    @raise c.ConfigError: with every problem found, one line each.
    """
    data, where = c.load_files(paths, selectors=SELECTORS)
    errors = []
    out = {}
    roles = roleFactories()
    storages = storageFactories()
    exporters = exporterFactories()

    out["node"] = NODE_SECTION.validate(data.get("node", {}), ("node",), errors, where)
    for line in tls.check(out["node"].get("http_client") or {}, "node.http_client",
                          server=False):
        errors.append("%s: %s" % (where(("node", "http_client")), line))
    for i, role in enumerate(out["node"].get("roles") or ()):
        if role not in roles:
            errors.append(
                "%s: node.roles: item %d: unknown role %r (installed: %s)"
                % (where(("node", "roles")), i, role, ", ".join(sorted(roles)))
            )
        elif role in out["node"]["roles"][:i]:
            errors.append("%s: node.roles: item %d: role %r listed twice"
                          % (where(("node", "roles")), i, role))

    storage = _table(data, "storage", errors, where)
    backend = storage.pop("backend", "sqlite")
    if not isinstance(backend, str) or backend not in storages:
        errors.append(
            "%s: storage.backend: unknown backend %r (installed: %s)"
            % (where(("storage", "backend")), backend, ", ".join(sorted(storages)))
        )
        out["storage"] = {"backend": backend}
    else:
        out["storage"] = storages[backend].configSchema.validate(
            storage, ("storage",), errors, where
        )
        out["storage"]["backend"] = backend
        if out["storage"].get("key_file"):
            # the start's own check (load_key), so --check refuses what it would
            problem = check_key_file(out["storage"]["key_file"])
            if problem:
                errors.append("%s: %s" % (where(("storage", "key_file")), problem))

    if (out["node"].get("workers") or 1) > 1 and out["storage"].get("backend") == "memory":
        errors.append("%s: node.workers: %d workers need a shared store: the memory backend "
                      "keeps each worker's state to itself (use sqlite or postgresql)"
                      % (where(("node", "workers")), out["node"]["workers"]))

    metrics = _table(data, "metrics", errors, where)
    names = metrics.pop("exporters", ["prometheus"])
    out["metrics"] = {"exporters": []}
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        errors.append("%s: metrics.exporters: must be an array of names"
                      % (where(("metrics", "exporters")),))
        names = []
    for name in names:
        if name not in exporters:
            errors.append(
                "%s: metrics.exporters: unknown exporter %r (installed: %s)"
                % (where(("metrics", "exporters")), name, ", ".join(sorted(exporters)))
            )
            continue
        out["metrics"]["exporters"].append(name)
        out["metrics"][name] = exporters[name].configSchema.validate(
            metrics.pop(name, {}), ("metrics", name), errors, where
        )
    for key in metrics:
        errors.append("%s: metrics.%s: unknown key (not an enabled exporter)"
                      % (where(("metrics", key)), key))

    out["admin"] = admin_config.ADMIN_SECTION.validate(
        _table(data, "admin", errors, where), ("admin",), errors, where)
    for line in admin_config.check(out["admin"]):
        errors.append("%s: %s" % (where(("admin",)), line))

    subs = data.get("subscriber", [])
    out["subscriber"] = []
    if not isinstance(subs, list):
        errors.append("%s: subscriber: must be an array of tables ([[subscriber]])"
                      % (where(("subscriber",)),))
        subs = []
    seen = set()
    for i, item in enumerate(subs):
        path = ("subscriber[%d]" % (i,),)
        sub = SUBSCRIBER_SECTION.validate(item, path, errors, where)
        if (sub.get("op") is None) == (sub.get("opc") is None):
            errors.append("%s: %s: give exactly one of op and opc" % (where(("subscriber",)), path[0]))
        if sub.get("impi") is not None and sub["impi"] in seen:  # None: impi invalid, reported
            errors.append("%s: %s.impi: duplicate IMPI %r"
                          % (where(("subscriber",)), path[0], sub["impi"]))
        seen.add(sub.get("impi"))
        out["subscriber"].append(sub)

    enabled = set(out["node"].get("roles") or ())
    for name, factory in roles.items():
        if name in enabled or name in data:
            out[name] = factory.configSchema.validate(data.get(name, {}), (name,), errors, where)

    if not errors:
        for name in sorted(enabled):
            for line in roles[name].checkNode(out):
                errors.append("%s: %s" % (where(tuple(line.split(":", 1)[0].split("."))), line))

    known = {"node", "storage", "metrics", "subscriber", "admin"} | set(roles)
    for key in data:
        if key not in known:
            errors.append("%s: %s: unknown section (known: %s)"
                          % (where((key,)), key, ", ".join(sorted(known))))
    if errors:
        raise c.ConfigError(errors)
    return out


def _table(data, name, errors, where):
    # a copy of table C{name}; anything else is an error, not silently the defaults
    value = data.get(name, {})
    if not isinstance(value, dict):
        errors.append("%s: %s: must be a table ([%s]), got %s"
                      % (where((name,)), name, name, c._show(value)))
        return {}
    return dict(value)


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
        # the one pooled HTTP client of the process (DESIGN 1)
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
            svc.startService()
            self._started.append(svc)
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
        # Dependence order (STYLE 5): the roles end their sessions while
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

