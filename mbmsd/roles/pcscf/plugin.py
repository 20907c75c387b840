"""
The C{pcscf} role's plugin: only the factory (L{IRoleFactory}). Its config
schema is L{mbmsd.roles.pcscf.config}; its service is built on demand.
"""

from zope.interface import implementer

from mbmsd import overload
from mbmsd.interfaces import IRoleFactory
from mbmsd.roles.pcscf import config as schema


@implementer(IRoleFactory)
class PcscfRoleFactory:
    name = "pcscf"
    description = "P-CSCF: IMS registration (Digest AKA) and the asserting SIP edge proxy"
    configSchema = schema.PCSCF_SECTION
    startOrder = 40
    # a reload applies these (PcscfService.prepareReconfigure)
    liveKeys = frozenset({"trusted_peers", "tls"}) | overload.live_keys()

    def checkNode(self, config):
        return schema.check_node(config)

    def makeService(self, node, config):
        from mbmsd.roles.pcscf.service import PcscfService

        return PcscfService(node, config)
