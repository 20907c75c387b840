"""
C{twistd mbmsd}: options and service construction.

    twistd -n mbmsd --config etc/mbmsd.toml [--config OVERLAY ...] [--check]
"""

import os
import sys

from twisted.python import usage

from mbmsd import __version__, gctune, logs
from mbmsd import config as c
from mbmsd.errors import StartupError
from mbmsd.node import makeNode
from mbmsd.nodeconfig import load_config, roleFactories
from mbmsd.reload import Reloader, onSighup
from mbmsd.storage.sealing import KeyFileError


class Options(usage.Options):
    synopsis = "--config FILE [--config OVERLAY ...] [--check]"
    longdesc = (
        "Run an mbmsd node: the roles (bsf, pcscf, scf, bmsc) its TOML config "
        "enables. Later --config files override earlier ones."
    )
    optFlags = [["check", None, "Validate the configuration, print the result and exit."]]

    def __init__(self):
        usage.Options.__init__(self)
        self["config"] = []

    def opt_version(self):
        """Print mbmsd's version and exit."""
        sys.stdout.write("mbmsd %s\n" % (__version__,))
        raise SystemExit(0)

    def opt_config(self, path):
        """A TOML config file; repeat for overlays."""
        self["config"].append(path)

    def postOptions(self):
        if not self["config"]:
            raise usage.UsageError("--config FILE is required (see etc/mbmsd.toml)")
        try:
            self["node_config"] = load_config(self["config"])
        except c.ConfigError as e:
            for line in e.lines:
                sys.stderr.write("mbmsd: config error: %s\n" % (line,))
            raise SystemExit(1)
        if self["check"]:
            node = self["node_config"]["node"]
            sys.stdout.write(
                "mbmsd: config OK: node %s, roles %s, storage %s\n"
                % (node["name"], ", ".join(node["roles"]),
                   self["node_config"]["storage"]["backend"])
            )
            raise SystemExit(0)
        node = self["node_config"]["node"]
        logs.installObserver(self.parent, node["name"], node["log_format"])


def makeService(options, reactor=None):
    if reactor is None:
        from twisted.internet import reactor

    def startupFailed(failure):
        # A node that cannot start must not linger half-up: stop, exit 1.
        # The failure may come before the reactor runs (a backend that opens
        # at once, such as memory): stop it as soon as it does.
        reactor.addSystemEventTrigger("after", "shutdown", os._exit, 1)
        reactor.callWhenRunning(reactor.stop)

    from mbmsd.workerid import worker_number
    from mbmsd.workers import die_with_supervisor, makeSupervisor

    workers = options["node_config"]["node"]["workers"]
    if workers > 1 and worker_number() is None:
        # this process supervises the workers; they run the node
        return makeSupervisor(reactor, workers, options.parent or {}, options["config"])
    if worker_number() is not None:
        die_with_supervisor()
    try:
        service = makeNode(options["node_config"], reactor, onStartupFailure=startupFailed)
    except (KeyFileError, StartupError) as e:
        sys.stderr.write("mbmsd: storage error: %s\n" % (e,))
        raise SystemExit(1)
    # SIGHUP: re-read the --config files and apply what can change live
    reloader = Reloader(service, options["config"], load_config, roleFactories())
    reactor.callWhenRunning(onSighup, reactor, reloader)
    # a long-running server's collector (mbmsd/gctune.py)
    reactor.callWhenRunning(gctune.freezeAfterStartup, reactor, service)
    return service
