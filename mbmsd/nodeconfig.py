"""
The node's config: the installed plugins (roles, storage backends, metrics
exporters), the [node] and [[subscriber]] schemas, and L{load_config}, which
reads, merges and validates the files as a whole (the schema machinery is
L{mbmsd.config}; each role's section is its L{IRoleFactory}'s configSchema).
"""

from twisted.plugin import getPlugins

from mbmsd import config as c
from mbmsd import logs, tls
from mbmsd.admin import config as admin_config
from mbmsd.interfaces import IMetricsExporterFactory, IRoleFactory, IStorageFactory
from mbmsd.protocols.identity import NAI, PUBLIC_ID
from mbmsd.storage.sealing import check_key_file

__all__ = ["NODE_SECTION", "SUBSCRIBER_SECTION", "exporterFactories", "load_config",
           "roleFactories", "storageFactories"]


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
            errors.append("%s: %s: give exactly one of op and opc"
                          % (where(("subscriber",)), path[0]))
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
