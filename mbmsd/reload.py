"""
Reload without a restart: SIGHUP (systemd: C{ExecReload=/bin/kill -HUP
$MAINPID}) re-reads the config files and applies what can change while the
node runs, in three steps, so that nothing is ever half applied:

  1. decide, for the whole node: the new files must validate as at start
     (else the reload is refused as invalid), and every key that changed
     must be one that can change live: C{node.log_level},
     C{node.http_client}, C{[[subscriber]]}, and each role's C{liveKeys}
     (L{mbmsd.interfaces.IRoleFactory}); a change of anything else (listen
     addresses, roles, storage, metrics) is refused with one line naming
     the keys;
  2. prepare: every role builds what its new table needs
     (L{mbmsd.interfaces.IReconfigurable}: TLS contexts from the files,
     read again even when their paths did not change, so that renewed
     certificates apply; peer sets); one that cannot refuses the reload;
  3. apply: the config's subscribers, services and subscriptions are
     written to storage again (the seeding of the start,
     L{mbmsd.provisioning.seedFromConfig}; rows the config no longer names
     stay, as the admin API's do), then the log level and every role's
     prepared change, at once; the roles read services and subscriptions
     from storage.

Every reload is logged once and counted in
C{mbmsd_node_reloads_total{result}}: C{applied}, C{unchanged} (no key
changed; the TLS files were read again), C{refused}
(needs a restart), C{invalid} (the files do not validate), C{failed}
(provisioning failed: the roles and the log level kept their config).
"""

import signal

from twisted.internet.defer import DeferredLock, inlineCallbacks

from mbmsd import config as c
from mbmsd import logs
from mbmsd.errors import ReloadRefused
from mbmsd.interfaces import IReconfigurable
from mbmsd.logs import Logger
from mbmsd.tls import TlsConfigError, clientPolicy

log = Logger(namespace="mbmsd.reload")

# the config's tables that are a seed of storage (mbmsd.provisioning), with
# [[subscriber]]: written to storage again when they change
PROVISIONED = {("bmsc", "service"), ("scf", "service"), ("scf", "subscription")}

APPLIED, UNCHANGED, REFUSED, INVALID, FAILED = RESULTS = (
    "applied", "unchanged", "refused", "invalid", "failed")

# keys of [node] a reload applies; the whole [[subscriber]] list is live too
NODE_LIVE_KEYS = frozenset({"log_level", "http_client", "stop_grace"})


def changedKeys(old, new, path=()):
    """
    The key paths (tuples) whose values differ between two validated
    configs: tables are compared key by key, anything else (arrays, arrays
    of tables) whole.
    """
    if isinstance(old, dict) and isinstance(new, dict):
        changed = []
        for key in list(old) + [k for k in new if k not in old]:
            if key in old and key in new:
                changed += changedKeys(old[key], new[key], path + (key,))
            else:
                changed.append(path + (key,))
        return changed
    return [] if old == new else [path]


def decide(old, new, factories):
    """
    Step 1 of a reload, for the whole node.

    @param factories: {role name: L{IRoleFactory}}.
    @return: C{(changed, refused)}: the changed key paths (tuples), and the
        dotted names of those that need a restart (empty: it may go on).
    """
    changed = changedKeys(old, new)
    roles = set(old["node"]["roles"]) | set(new["node"]["roles"])
    refused = []
    for path in changed:
        top, key = path[0], path[1] if len(path) > 1 else None
        if top == "subscriber" or (top == "node" and key in NODE_LIVE_KEYS):
            continue
        if top in factories and top not in roles:
            continue  # the table of a role this node does not run
        if top in factories and key in getattr(factories[top], "liveKeys", ()):
            continue
        refused.append(".".join(path))
    return changed, refused


class Reloader:
    """
    Reloads the config files of a running L{mbmsd.node.NodeService}.

    @param paths: the config files, in the order of the command line.
    @param load: reads and validates them (L{mbmsd.nodeconfig.load_config}).
    @param factories: {role name: L{IRoleFactory}}.
    """

    def __init__(self, service, paths, load, factories):
        self.service = service
        self.paths = list(paths)
        self.load = load
        self.factories = factories
        self.reloads = service.node.metrics.forRole("node").counter(
            "mbmsd_node_reloads_total",
            "Config reloads (SIGHUP), by result: applied, unchanged, refused (a key that "
            "needs a restart), invalid (the files do not validate), failed",
            ["result"], initial=[(r,) for r in RESULTS])
        self._lock = DeferredLock()

    def reload(self):
        """
        One reload (reloads asked for meanwhile wait their turn).

        @return: Deferred firing with the result, one of L{RESULTS}.
        """
        d = self._lock.run(self._reload)
        d.addCallback(self._count)
        return d

    def _count(self, result):
        self.reloads.labels(result).inc()
        return result

    @inlineCallbacks
    def _reload(self):
        node = self.service.node
        if not self.service.running or self.service.ready is None or not self.service.ready.called:
            log.warn("reload refused: the node is not running (starting or stopping)")
            return REFUSED
        try:
            new = self.load(self.paths)
        except c.ConfigError as e:
            log.error("reload refused, the config is invalid (the node keeps its running "
                      "config): {errors}", errors="; ".join(e.lines))
            return INVALID
        old = node.config
        changed, refused = decide(old, new, self.factories)
        if refused:
            return self._refused("%s: changing %s needs a restart" % (
                ", ".join(refused), "it" if len(refused) == 1 else "them"))
        try:
            # every role, changed or not: TLS files renewed in place (same
            # paths) are read again
            applies = self._prepare(old, new, {path[0] for path in changed})
        except (ReloadRefused, TlsConfigError) as e:
            return self._refused(str(e))
        provisioned = None
        if any(tuple(path[:2]) in PROVISIONED or path[:1] == ("subscriber",) for path in changed):
            try:
                provisioned = yield self._provision(new)
            except Exception as e:
                log.error("reload failed: provisioning from the config: {e} (the roles and the "
                          "log level keep their config)", e=str(e) or e.__class__.__name__)
                return FAILED
        self._apply(old, new, applies, changed, provisioned)
        return APPLIED if changed else UNCHANGED

    def _refused(self, why):
        log.warn("reload refused (the node keeps running with its old config): {why}", why=why)
        return REFUSED

    def _prepare(self, old, new, sections):
        """
        Step 2: every role prepares (also one whose table did not change,
        so that its TLS files are read again). @return: the callables that
        apply.
        """
        applies = [self._prepareHttpClient(self.service.node, new["node"]["http_client"])]
        for svc in self.service.roles:
            if IReconfigurable.providedBy(svc):
                applies.append(svc.prepareReconfigure(new[svc.name]))
            elif svc.name in sections:
                raise ReloadRefused("%s: the role takes no new config while it runs" % (svc.name,))
        return applies

    def _prepareHttpClient(self, node, section):
        running = getattr(node.http, "tlsPolicy", None)
        wanted = bool(section.get("certificate") or section.get("ca"))
        if running is None and not wanted:
            return lambda: None
        if running is None or not wanted:
            raise ReloadRefused("node.http_client: turning the HTTP client's TLS settings on or "
                                "off needs a restart")
        try:
            fresh = clientPolicy(section)
        except TlsConfigError as e:
            raise ReloadRefused("node.http_client: %s" % (e,)) from None
        return lambda: running.replaceWith(fresh)

    def _provision(self, config):
        from mbmsd.provisioning import seedFromConfig

        d = seedFromConfig(config, self.service.node.storage, lambda: self.service.running,
                           logged=False)
        return d.addCallback(lambda written: written[0])  # the subscribers

    def _apply(self, old, new, applies, changed, provisioned):
        """Step 3: nothing here can fail."""
        for apply in applies:
            apply()
        self.service.node.config = new
        level = new["node"]["log_level"]
        looser = logs.LEVELS.index(level) <= logs.LEVELS.index(logs.level())
        if looser:
            logs.setLevel(level)  # the line below shows at the new level too
        if changed:
            log.info("reload applied: {keys}{subscribers}",
                     keys=", ".join(sorted({".".join(p[:2]) for p in changed})),
                     subscribers="" if provisioned is None
                     else " (%d subscriber(s) provisioned)" % (provisioned,))
        else:
            log.info("reload: no key changed (TLS files read again)")
        if not looser:
            logs.setLevel(level)


def onSighup(reactor, reloader):
    """
    Reload on SIGHUP (which would otherwise end the process). Called once
    the reactor runs; the reload itself runs in the reactor thread.
    """
    def handler(signum, frame):
        reactor.callFromThread(reloader.reload)

    signal.signal(signal.SIGHUP, handler)
