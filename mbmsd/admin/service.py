"""
The admin API's service in the node's tree: its listener (HTTP, or HTTPS
with C{[admin.tls]}; mutual TLS with its C{ca}).
"""

from twisted.application.service import MultiService

from mbmsd import tls
from mbmsd.admin.api import AdminOperations, AdminResource
from mbmsd.admin.config import read_token
from mbmsd.logs import Logger
from mbmsd.web import listener, makeSite

log = Logger(namespace="mbmsd.admin")


class AdminService(MultiService):
    """
    @param node: the L{mbmsd.interfaces.INode} (its storage and clock).
    @param config: the validated C{[admin]} section, C{listen} set.
    """

    name = "admin"

    def __init__(self, node, config):
        MultiService.__init__(self)
        self.config = config
        section = config.get("tls") or {}
        secure = tls.enabled(section)
        mutual = secure and section.get("ca") is not None
        # read (and its mode checked) at start, as the config check did
        token = read_token(config["token_file"])
        self.resource = AdminResource(AdminOperations(node.storage, node.reactor), token,
                                      requireCertificate=mutual)
        site = makeSite(self.resource, node.reactor,
                        accessLog=node.config.get("node", {}).get("http_access_log", False))
        listener(node.reactor, config["listen"], site, "admin",
                 tls=tls.serverOptions(section) if secure else None).setServiceParent(self)
        self.description = "%s%s" % ("HTTPS" if secure else "HTTP",
                                     " with client certificates" if mutual else "")

    def startService(self):
        MultiService.startService(self)
        log.info("admin API on {listen} ({how}, bearer token)", listen=self.config["listen"],
                 how=self.description)
