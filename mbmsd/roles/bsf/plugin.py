"""
The C{bsf} role's plugin: only the factory (L{IRoleFactory}). Its config
schema is L{mbmsd.roles.bsf.config}; its service is built on demand.
"""

from zope.interface import implementer

from mbmsd import overload
from mbmsd.interfaces import IRoleFactory
from mbmsd.roles.bsf import config as schema


@implementer(IRoleFactory)
class BsfRoleFactory:
    name = "bsf"
    description = "Bootstrapping Server Function (Ub, Zn)"
    configSchema = schema.BSF_SECTION
    startOrder = 10
    # a reload applies these (BsfService.prepareReconfigure)
    liveKeys = frozenset({"naf", "tls"}) | overload.live_keys()

    def checkNode(self, config):
        return schema.check_node(config)

    def makeService(self, node, config):
        from mbmsd.roles.bsf.service import BsfService

        return BsfService(node, config)
