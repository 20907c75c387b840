"""
MSK management per MBMS User Service (TS 33.246 6.3.2.1, 6.3.2.3.1): one
current MSK per service, named by (Key Domain ID, MSK ID), rotated on a
schedule, and pushed to every UE registered for the service.

Rotation is sharded (docs/design.md, issue 16 item 5): the registered UEs of
a service are split into C{shards} by a stable hash of their IMPU, each shard
with its own lease, so several nodes (or workers) push one rotation in
parallel. The holder of shard 0 makes each new MSK, once; every shard holder
pushes the stored current MSK to its shard's UEs and then marks the MSK ID
in the lease store, so a holder taking over a dead one's shard pushes what
it had not. A UE whose push was in flight when its holder died gets it again
from the next holder (at least once); no UE is skipped.
"""

import math
import os
import zlib

from twisted.internet.defer import DeferredList, inlineCallbacks
from twisted.internet.task import LoopingCall

from mbmsd.cluster import Lease
from mbmsd.logs import Logger
from mbmsd.storage.leases import MemoryLeaseStore
from mbmsd.storage.records import Msk, rotation_shard

log = Logger(namespace="mbmsd.bmsc.msk")

MSK_LENGTH = 16
LEASE_PREFIX = "bmsc.msk-rotation:"  # + MBMS User Service ID
MEMBER_PREFIX = "bmsc.msk-members:"  # + holder: the nodes sharing the shards


shard_of = rotation_shard  # the rotation shard of a registration (storage filters by it)


def shard_lease(serviceId, shard, shards):
    """The lease name of a shard; with one shard, the service's lease as before."""
    if shards == 1:
        return LEASE_PREFIX + serviceId
    return "%s%s/%d" % (LEASE_PREFIX, serviceId, shard)


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
    @param shards: the rotation shards per service (the same on every node
        sharing C{leases}); 1 keeps one lease per service.
    """

    def __init__(self, store, clock, keyDomainId, services, lifetime, rotation, metrics, push,
                 random=os.urandom, leases=None, holder="mbmsd", leaseDuration=30.0,
                 leaseRenewal=10.0, shards=1):
        if shards < 1:
            raise ValueError("shards must be at least 1")
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
        self.shards = shards
        self.leases = {}  # service ID -> its shards' Leases, by shard
        self._syncing = set()  # (service ID, shard) being pushed
        self._poll = None
        self._member = None  # our membership lease, when sharded
        self._members = 1  # the nodes sharing the shards, as last read
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
        self.shardsHeld = metrics.gauge(
            "mbmsd_bmsc_rotation_shards_held",
            "MSK rotation shards (all services) whose lease this node holds")

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
        for shard in range(self.shards):
            yield self.leaseStore.mark(shard_lease(serviceId, shard, self.shards),
                                       msk.mskId.hex())
        return len(live), verified

    @inlineCallbacks
    def _rotateShards(self, serviceId):
        """
        The holder of shard 0: make the new MSK once, then push it to the
        shards we hold (the other holders see it on their next poll).
        """
        old = yield self.store.currentMsk(serviceId, self.clock.seconds())
        # a shard never marked yet must push this MSK, not adopt it
        for shard in range(self.shards):
            yield self.leaseStore.markIfAbsent(shard_lease(serviceId, shard, self.shards),
                                               old.mskId.hex() if old is not None else "")
        yield self._newMsk(serviceId)
        results = yield DeferredList([self._sync(serviceId, shard)
                                      for shard in range(len(self.leases.get(serviceId, ())))],
                                     consumeErrors=True)
        for ok, value in results:
            if not ok:
                log.failure("MSK push of {service} failed", value, service=serviceId)

    @inlineCallbacks
    def _sync(self, serviceId, shard):
        """
        Push the service's current MSK to the live UEs of C{shard} unless
        the shard's mark says it was pushed, then mark it.
        @return: Deferred firing with (pushed, verified) counts, or None.
        """
        key = (serviceId, shard)
        lease = self._lease(serviceId, shard)
        if key in self._syncing or lease is None or not lease.held:
            return None
        self._syncing.add(key)
        try:
            name = shard_lease(serviceId, shard, self.shards)
            msk = yield self.store.currentMsk(serviceId, self.clock.seconds())
            if msk is None:
                return None
            done = yield self.leaseStore.marked(name)
            if done is None:
                # never rotated since the UEs registered (each got the
                # current MSK then): nothing to push
                yield self.leaseStore.markIfAbsent(name, msk.mskId.hex())
                return None
            if done == msk.mskId.hex():
                return None
            registrations = yield self.store.registrationsFor(serviceId, shard, self.shards)
            if not lease.held:
                return None  # lost meanwhile: the next holder pushes
            now = self.clock.seconds()
            live = [r for r in registrations if r.expires > now]
            results = yield DeferredList([self.push.pushMsk(r, msk) for r in live],
                                         consumeErrors=True)
            verified = sum(1 for ok, value in results if ok and value)
            yield self.leaseStore.mark(name, msk.mskId.hex())
            log.info("MSK {msk_id} of {service} shard {shard} pushed to {n} UE(s), {v} verified",
                     msk_id=msk.mskId.hex(), service=serviceId, shard=shard, n=len(live),
                     v=verified)
            return len(live), verified
        finally:
            self._syncing.discard(key)

    def _wanted(self, serviceId, shard):
        """
        Whether to take (or keep) a shard: at most our fair part of each
        service's shards, ceil(shards / nodes), so that nodes split them.
        """
        shards = self.leases.get(serviceId, ())
        held = sum(1 for lease in shards if lease.held)
        fair = math.ceil(self.shards / max(1, self._members))
        lease = self._lease(serviceId, shard)
        if lease is not None and lease.held:
            return held <= fair
        return held < fair

    def _countMembers(self):
        d = self.leaseStore.holders(MEMBER_PREFIX, self.clock.seconds())

        def counted(holders):
            self._members = max(1, len(holders))

        d.addCallbacks(counted, lambda f: log.warn("MSK rotation: cannot count the nodes: {e}",
                                                   e=f.getErrorMessage()))
        return d

    def _pollShards(self):
        """Push a new MSK to the shards we hold (made by shard 0's holder)."""
        if self._member is not None:
            self._countMembers()
        for serviceId, shards in list(self.leases.items()):
            for shard in range(len(shards)):
                d = self._sync(serviceId, shard)
                d.addErrback(lambda f, s=serviceId: log.failure("MSK push of {service} failed",
                                                               f, service=s))

    def _lease(self, serviceId, shard):
        shards = self.leases.get(serviceId)
        return shards[shard] if shards is not None and shard < len(shards) else None

    def start(self):
        """
        Compete for each service's rotation lease; rotate the services whose
        lease we hold, C{rotation} seconds after their current MSK was made
        (after we took the lease, when there is none yet).
        """
        self._running = True
        if self.shards > 1:
            # nodes count each other to share the shards evenly
            self._member = Lease(self.leaseStore, self.clock, MEMBER_PREFIX + self.holder,
                                 self.holder, self.leaseDuration, self.leaseRenewal,
                                 lambda: None, lambda: None)
            self._member.start()
        self._poll = LoopingCall(self._pollShards)
        self._poll.clock = self.clock
        self._poll.start(self.leaseRenewal, now=False)
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
            self.leases[serviceId] = shards = []
            for shard in range(self.shards):
                lease = Lease(self.leaseStore, self.clock,
                              shard_lease(serviceId, shard, self.shards), self.holder,
                              self.leaseDuration, self.leaseRenewal,
                              lambda s=serviceId, k=shard: self._acquired(s, k),
                              lambda s=serviceId, k=shard: self._lost(s, k),
                              wanted=(None if self.shards == 1 else
                                      lambda s=serviceId, k=shard: self._wanted(s, k)))
                shards.append(lease)
                lease.start()
        for serviceId in [s for s in self.leases if s not in serviceIds]:
            call = self._due.pop(serviceId, None)
            if call is not None and call.active():
                call.cancel()
            yield DeferredList([lease.stop() for lease in self.leases.pop(serviceId)])

    def _acquired(self, serviceId, shard=0):
        self.shardsHeld.inc()
        if shard != 0:
            log.info("MSK rotation shard {shard} of {service} pushed by this node ({holder})",
                     shard=shard, service=serviceId, holder=self.holder)
        else:
            self.leasesHeld.inc()
            self.leaseChanges.labels("acquired").inc()
            log.info("MSK rotation of {service} runs on this node ({holder})",
                     service=serviceId, holder=self.holder)
            self._schedule(serviceId)
        # a dead holder's shard: push what it had not
        d = self._sync(serviceId, shard)
        d.addErrback(lambda f: log.failure("MSK push of {service} failed", f,
                                           service=serviceId))

    def _lost(self, serviceId, shard=0):
        self.shardsHeld.dec()
        if shard != 0:
            return
        self.leasesHeld.dec()
        self.leaseChanges.labels("lost").inc()
        call = self._due.pop(serviceId, None)
        if call is not None and call.active():
            call.cancel()

    def _schedule(self, serviceId, minimum=0.0):
        now = self.clock.seconds()

        def later(msk):
            delay = self.rotation if msk is None else msk.created + self.rotation - now
            lease = self._lease(serviceId, 0)
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
        lease = self._lease(serviceId, 0)
        if lease is None or not lease.held:
            return None  # lost meanwhile: the new holder rotates
        d = self._rotateShards(serviceId)

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
        if self._poll is not None and self._poll.running:
            self._poll.stop()
        self._poll = None
        leases, self.leases = self.leases, {}
        member, self._member = self._member, None
        for call in self._due.values():
            if call.active():
                call.cancel()
        self._due.clear()
        stops = [lease.stop() for shards in leases.values() for lease in shards]
        if member is not None:
            stops.append(member.stop())
        return DeferredList(stops)
