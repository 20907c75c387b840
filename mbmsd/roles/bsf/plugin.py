"""
The C{bsf} role's plugin: its config schema, and the factory.
"""

from zope.interface import implementer

from mbmsd import config as c
from mbmsd.interfaces import IRoleFactory

NAF_SECTION = c.Section(
    fields={
        "fqdn": c.Field(c.fqdn(), c.REQUIRED, "the NAF's FQDN (the FQDN part of its NAF_Id)"),
        "addresses": c.Field(c.array(c.ip_address(), minimum=1), c.REQUIRED,
                             "source addresses the NAF's Zn requests come from"),
    }
)

BSF_SECTION = c.Section(
    fields={
        "ub_listen": c.Field(c.endpoint(), "tcp:8080:interface=127.0.0.1", "Ub listener"),
        "zn_listen": c.Field(c.endpoint(), "tcp:8081:interface=127.0.0.1", "Zn listener"),
        "domain": c.Field(c.fqdn(), None,
                          "BSF domain in B-TIDs and the Ub realm (default bsf.<home_domain>)"),
        "key_lifetime": c.Field(c.integer(60, 7 * 86400), 3600, "Ks lifetime, seconds"),
        "challenge_lifetime": c.Field(c.integer(5, 600), 30,
                                      "seconds a Ub nonce may be answered"),
        "max_auth_failures": c.Field(c.integer(1, 1000), 5,
                                     "failed answers per IMPI before 403 (per window)"),
        "auth_failure_window": c.Field(c.integer(1, 86400), 300,
                                       "seconds over which failures are counted"),
        "prune_interval": c.Field(c.integer(1, 86400), 60,
                                  "seconds between removals of expired sessions"),
    },
    arrays={"naf": NAF_SECTION},
)


@implementer(IRoleFactory)
class BsfRoleFactory:
    name = "bsf"
    description = "Bootstrapping Server Function (Ub, Zn)"
    configSchema = BSF_SECTION
    startOrder = 10

    def checkNode(self, config):
        return []

    def makeService(self, node, config):
        from mbmsd.roles.bsf.service import BsfService

        return BsfService(node, config)
