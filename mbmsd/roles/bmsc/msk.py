"""
MSK management per MBMS User Service (TS 33.246 6.3.2.1, 6.3.2.3.1): one
current MSK per service, named by (Key Domain ID, MSK ID), rotated on a
schedule, and pushed to every UE registered for the service.
"""

import os
import zlib

from twisted.internet.defer import DeferredList, inlineCallbacks

from mbmsd.cluster import Lease
from mbmsd.logs import Logger
from mbmsd.storage.leases import MemoryLeaseStore
from mbmsd.storage.records import Msk

log = Logger(namespace="mbmsd.bmsc.msk")

MSK_LENGTH = 16
LEASE_PREFIX = "bmsc.msk-rotation:"  # + MBMS User Service ID


def default_key_group(serviceId):
    """
    A stable Key Group (the first two octets of the MSK ID, TS 31.102
    4.2.80) for a service whose config names none.
    """
    return zlib.crc32(serviceId.encode("utf-8")) & 0xFFFF


class MskManager:
    """
    @param services: the services, with C{keyGroup(serviceId)} -> Deferred
        of the Key Group or None, and C{serviceIds()} -> Deferred of a list
        (L{mbmsd.roles.bmsc.provisioning.StoredKeyGroups}).
    @param push: the L{IMskPush} each new MSK goes out through.
    @param leases: the L{ILeaseStore} shared by the nodes of this BM-SC:
        each service's rotation runs only while this process (C{holder})
        holds its lease (default: a store of this process alone).
    """

    def __init__(self, store, clock, keyDomainId, services, lifetime, rotation, metrics, push,
                 random=os.urandom, leases=None, holder="mbmsd", leaseDuration=30.0,
                 leaseRenewal=10.0):
        self.store = store
        self.clock = clock
        self.keyDomainId = keyDomainId
        self.services = services
        self.lifetime = lifetime
        self.rotation = rotation
        self.random = random
        self.push = push
        self.leaseStore = leases if leases is not None else MemoryLeaseStore()
        self.holder = holder
        self.leaseDuration = leaseDuration
        self.leaseRenewal = leaseRenewal
        self.leases = {}  # service ID -> Lease
        self._due = {}  # service ID -> the IDelayedCall of its next rotation
        self._running = False
        self.rotations = metrics.counter("mbmsd_bmsc_msk_rotations_total",
                                         "New MSKs generated (first and rotations)")
        self.leasesHeld = metrics.gauge(
            "mbmsd_bmsc_rotation_leases_held",
            "Services whose MSK rotation lease this node holds")
        self.leaseChanges = metrics.counter(
            "mbmsd_bmsc_rotation_lease_changes_total",
            "MSK rotation leases taken and lost by this node", ["event"],
            initial=[("acquired",), ("lost",)])

    @inlineCallbacks
    def current(self, serviceId):
        """
        @return: Deferred firing with the service's valid MSK, made if needed.
        """
        msk = yield self.store.currentMsk(serviceId, self.clock.seconds())
        if msk is None:
            try:
                msk = yield self._newMsk(serviceId)
            except Exception:
                # another node of the BM-SC made the first MSK (same MSK ID)
                # at the same moment: use that one
                msk = yield self.store.currentMsk(serviceId, self.clock.seconds())
                if msk is None:
                    raise
        return msk

    @inlineCallbacks
    def _newMsk(self, serviceId):
        last = yield self.store.lastMskNumber(serviceId)
        number = ((last & 0xFFFF) + 1) & 0xFFFF if last is not None else 1
        # MSK ID = Key Group (2 octets) || key number (2 octets)
        keyGroup = yield self.services.keyGroup(serviceId)
        if keyGroup is None:
            raise KeyError("no MBMS User Service %r" % (serviceId,))
        mskId = keyGroup.to_bytes(2, "big") + number.to_bytes(2, "big")
        now = self.clock.seconds()
        msk = Msk(serviceId=serviceId, keyDomainId=self.keyDomainId, mskId=mskId,
                  key=self.random(MSK_LENGTH), created=now, expires=now + self.lifetime)
        yield self.store.putMsk(msk)
        self.rotations.inc()
        log.info("new MSK {msk_id} for {service}", msk_id=mskId.hex(), service=serviceId)
        return msk

    @inlineCallbacks
    def rotate(self, serviceId):
        """
        Make a new MSK and push it to every UE registered for the service.
        @return: Deferred firing with (pushed, verified) counts.
        """
        msk = yield self._newMsk(serviceId)
        registrations = yield self.store.registrationsFor(serviceId)
        now = self.clock.seconds()
        live = [r for r in registrations if r.expires > now]
        results = yield DeferredList([self.push.pushMsk(r, msk) for r in live], consumeErrors=True)
        verified = sum(1 for ok, value in results if ok and value)
        log.info("MSK {msk_id} of {service} pushed to {n} UE(s), {v} verified",
                 msk_id=msk.mskId.hex(), service=serviceId, n=len(live), v=verified)
        return len(live), verified

    def start(self):
        """
        Compete for each service's rotation lease; rotate the services whose
        lease we hold, C{rotation} seconds after their current MSK was made
        (after we took the lease, when there is none yet).
        """
        self._running = True
        return self.refresh()

    @inlineCallbacks
    def refresh(self):
        """
        Follow the stored services: compete for the lease of each new one,
        release those of services removed.
        """
        serviceIds = yield self.services.serviceIds()
        if not self._running:
            return
        for serviceId in serviceIds:
            if serviceId in self.leases:
                continue
            lease = Lease(self.leaseStore, self.clock, LEASE_PREFIX + serviceId, self.holder,
                          self.leaseDuration, self.leaseRenewal,
                          lambda s=serviceId: self._acquired(s),
                          lambda s=serviceId: self._lost(s))
            self.leases[serviceId] = lease
            lease.start()
        for serviceId in [s for s in self.leases if s not in serviceIds]:
            call = self._due.pop(serviceId, None)
            if call is not None and call.active():
                call.cancel()
            yield self.leases.pop(serviceId).stop()

    def _acquired(self, serviceId):
        self.leasesHeld.inc()
        self.leaseChanges.labels("acquired").inc()
        log.info("MSK rotation of {service} runs on this node ({holder})", service=serviceId,
                 holder=self.holder)
        self._schedule(serviceId)

    def _lost(self, serviceId):
        self.leasesHeld.dec()
        self.leaseChanges.labels("lost").inc()
        call = self._due.pop(serviceId, None)
        if call is not None and call.active():
            call.cancel()

    def _schedule(self, serviceId, minimum=0.0):
        now = self.clock.seconds()

        def later(msk):
            delay = self.rotation if msk is None else msk.created + self.rotation - now
            lease = self.leases.get(serviceId)
            if lease is not None and lease.held:
                old = self._due.get(serviceId)
                if old is not None and old.active():
                    old.cancel()  # one schedule per service (lost and retaken meanwhile)
                self._due[serviceId] = self.clock.callLater(
                    max(minimum, delay), self._rotateDue, serviceId)

        def failed(f):
            log.warn("MSK rotation of {service}: cannot read its MSK: {e}", service=serviceId,
                     e=f.getErrorMessage())
            later(None)

        d = self.store.currentMsk(serviceId, now)
        d.addCallbacks(later, failed)

    def _rotateDue(self, serviceId):
        self._due.pop(serviceId, None)
        lease = self.leases.get(serviceId)
        if lease is None or not lease.held:
            return None  # lost meanwhile: the new holder rotates
        d = self.rotate(serviceId)

        def failed(f):
            log.failure("MSK rotation of {service} failed", f, service=serviceId)
            return self.leaseRenewal  # try again soon, not in a loop

        d.addCallbacks(lambda _: 0.0, failed)
        d.addCallback(lambda minimum: self._schedule(serviceId, minimum))
        return d

    def stop(self):
        """
        Stop rotating and release our leases (another node takes over at
        once). @return: Deferred firing when released.
        """
        self._running = False
        leases, self.leases = self.leases, {}
        for call in self._due.values():
            if call.active():
                call.cancel()
        self._due.clear()
        return DeferredList([lease.stop() for lease in leases.values()])
