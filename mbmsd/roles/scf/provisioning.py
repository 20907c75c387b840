"""
The SCF's view of provisioning (TS 26.237 8.3.2.4): which MBMS User Services
exist, how their streams are described, and who is subscribed, read from
storage at each INVITE (what the admin API writes counts at once, on every
node sharing the database).
"""

from mbmsd.roles.scf.config import SERVICE_SECTION


def describe(service):
    """
    The [[scf.service]] table of a stored L{MbmsService}: its stored
    description, with the defaults for what it lacks (a service added
    through the admin API with an ID and a Key Group only).
    """
    errors = []
    table = SERVICE_SECTION.validate(dict(service.sdp or {}, id=service.serviceId),
                                     ("service",), errors, lambda path: "storage")
    if errors:
        raise ValueError("; ".join(errors))
    return table


class StoredServices:
    """
    @param store: the L{mbmsd.interfaces.IProvisioningStore}.
    """

    def __init__(self, store):
        self.store = store

    def isSubscribed(self, impu, serviceId):
        """
        @param impu: a normalized IMPU.
        @return: Deferred firing with True or False.
        """
        return self.store.isSubscribed(impu, serviceId)

    def describe(self, serviceId):
        """
        @return: Deferred firing with the service's [[scf.service]] table, or
            None for an unknown service.
        """
        d = self.store.getService(serviceId)
        return d.addCallback(lambda s: describe(s) if s is not None else None)
