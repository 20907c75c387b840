"""
MSK management per MBMS User Service (TS 33.246 6.3.2.1, 6.3.2.3.1): one
current MSK per service, named by (Key Domain ID, MSK ID), rotated on a
schedule, and pushed to every UE registered for the service.
"""

import os
import zlib

from twisted.internet.defer import DeferredList, inlineCallbacks
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from mbmsd.storage.records import Msk

log = Logger(namespace="mbmsd.bmsc.msk")

MSK_LENGTH = 16


def default_key_group(serviceId):
    """
    A stable Key Group (the first two octets of the MSK ID, TS 31.102
    4.2.80) for a service whose config names none.
    """
    return zlib.crc32(serviceId.encode("utf-8")) & 0xFFFF


class MskManager:
    """
    @param services: {MBMS User Service ID: Key Group}.
    @param push: C{push(registration, msk)} firing when done.
    """

    def __init__(self, store, clock, keyDomainId, services, lifetime, rotation, metrics,
                 random=os.urandom):
        self.store = store
        self.clock = clock
        self.keyDomainId = keyDomainId
        self.services = services
        self.lifetime = lifetime
        self.rotation = rotation
        self.random = random
        self.push = None
        self._loops = {}
        self.rotations = metrics.counter("mbmsd_bmsc_msk_rotations_total",
                                         "New MSKs generated (first and rotations)")

    @inlineCallbacks
    def current(self, serviceId):
        """
        @return: Deferred firing with the service's valid MSK, made if needed.
        """
        msk = yield self.store.currentMsk(serviceId, self.clock.seconds())
        if msk is None:
            msk = yield self._newMsk(serviceId)
        return msk

    @inlineCallbacks
    def _newMsk(self, serviceId):
        last = yield self.store.lastMskNumber(serviceId)
        number = ((last & 0xFFFF) + 1) & 0xFFFF if last is not None else 1
        # MSK ID = Key Group (2 octets) || key number (2 octets)
        mskId = self.services[serviceId].to_bytes(2, "big") + number.to_bytes(2, "big")
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
        results = yield DeferredList([self.push(r, msk) for r in live], consumeErrors=True)
        verified = sum(1 for ok, value in results if ok and value)
        log.info("MSK {msk_id} of {service} pushed to {n} UE(s), {v} verified",
                 msk_id=msk.mskId.hex(), service=serviceId, n=len(live), v=verified)
        return len(live), verified

    def start(self):
        for serviceId in self.services:
            loop = LoopingCall(self._rotateLogged, serviceId)
            loop.clock = self.clock
            self._loops[serviceId] = loop
            # now=False: the current MSK stays until the first rotation is due
            loop.start(self.rotation, now=False)

    def _rotateLogged(self, serviceId):
        d = self.rotate(serviceId)
        d.addErrback(lambda f: log.failure("MSK rotation of {service} failed", f, service=serviceId))
        return d

    def stop(self):
        for loop in self._loops.values():
            if loop.running:
                loop.stop()
        self._loops.clear()
