"""
The C{scf} role's plugin: only the factory (L{IRoleFactory}). Its config
schema is L{mbmsd.roles.scf.config}; its service is built on demand.
"""

from zope.interface import implementer

from mbmsd import overload
from mbmsd.interfaces import IRoleFactory
from mbmsd.roles.scf import config as schema


@implementer(IRoleFactory)
class ScfRoleFactory:
    name = "scf"
    description = "SCF: SIP UAS of the MBMS user service, authorizes users at the BM-SC"
    configSchema = schema.SCF_SECTION
    startOrder = 30
    # a reload applies these (ScfService.prepareReconfigure)
    liveKeys = frozenset({"service", "subscription", "trusted_pcscfs"}) | overload.live_keys()

    def checkNode(self, config):
        return schema.check_node(config)

    def makeService(self, node, config):
        from mbmsd.roles.scf.service import ScfService

        return ScfService(node, config)
