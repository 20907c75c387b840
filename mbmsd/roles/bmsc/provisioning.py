"""
The BM-SC's view of provisioning: its MBMS User Services and the Key Group
of each one's MSK IDs, read from storage at each use (a service the admin
API adds is known to every BM-SC node sharing the database at once).
"""

from twisted.internet.defer import inlineCallbacks

from mbmsd.roles.bmsc.msk import default_key_group


class StoredKeyGroups:
    """
    @param store: the L{mbmsd.interfaces.IProvisioningStore}.
    """

    def __init__(self, store):
        self.store = store

    def keyGroup(self, serviceId):
        """
        @return: Deferred firing with the service's Key Group (TS 31.102
            4.2.80: the first two octets of its MSK IDs), or None for an
            unknown service.
        """
        d = self.store.getService(serviceId)
        return d.addCallback(lambda s: None if s is None else (
            s.keyGroup if s.keyGroup is not None else default_key_group(s.serviceId)))

    @inlineCallbacks
    def serviceIds(self):
        """
        @return: Deferred firing with the sorted list of service IDs.
        """
        services = yield self.store.services()
        return [s.serviceId for s in services]
