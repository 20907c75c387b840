"""
The C{bmsc} role's plugin: only the factory (L{IRoleFactory}). Its config
schema is L{mbmsd.roles.bmsc.config}; its service is built on demand.
"""

from zope.interface import implementer

from mbmsd import overload
from mbmsd.interfaces import IRoleFactory
from mbmsd.roles.bmsc import config as schema


@implementer(IRoleFactory)
class BmscRoleFactory:
    name = "bmsc"
    description = "BM-SC.UPF: MBMS authorization, MSK registration, MIKEY delivery"
    configSchema = schema.BMSC_SECTION
    startOrder = 20
    # a reload applies these (BmscService.prepareReconfigure)
    liveKeys = frozenset({"service", "trusted_scfs", "trusted_scf_names", "tls"}) | (
        overload.live_keys())

    def checkNode(self, config):
        return schema.check_node(config)

    def makeService(self, node, config):
        from mbmsd.roles.bmsc.service import BmscService

        return BmscService(node, config)
