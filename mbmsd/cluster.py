"""
Singleton duties across the nodes that share one database (docs/design.md 8.3): a
duty (the MSK rotation of a service) runs only on the node that holds its
lease in the L{ILeaseStore}, renewed on a timer; when that node dies its
lease runs out and another node's next attempt takes it.

    lease = Lease(storage.leases, reactor, "bmsc.msk-rotation:urn:mbmsd:news",
                  holder_id("core-1"), duration=30, renewal=10,
                  onAcquired=start_duty, onLost=stop_duty)
    lease.start()
    ...
    if lease.held: do_the_duty()
    yield lease.stop()  # releases it: another node takes over at once

Safety rests on the nodes' clocks agreeing to well within C{duration -
renewal}: the holder stops acting at the expiry it asked for, measured on its
own clock, even when it cannot reach the database to learn that it lost.
"""

import os

from twisted.internet.defer import succeed
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure

from mbmsd.logs import Logger

log = Logger(namespace="mbmsd.cluster")


def holder_id(nodeName):
    """
    The holder name of this process: the node name, the PID and a random
    part, so that a restarted node (or a second process started with the
    same config by mistake) is another holder.
    """
    return "%s/%d/%s" % (nodeName, os.getpid(), os.urandom(4).hex())


class Lease:
    """
    One lease, taken and renewed every C{renewal} seconds while started.

    @param store: an L{mbmsd.interfaces.ILeaseStore}.
    @param clock: IReactorTime.
    @param onAcquired: called with no argument when the lease becomes ours.
    @param onLost: called with no argument when it stops being ours (another
        holder has it, or it ran out before a renewal succeeded, or we
        handed it over).
    @param wanted: optional, called before each attempt: when it returns
        False the lease is not taken, or released when ours (handed over
        to another holder, to balance shards).
    """

    def __init__(self, store, clock, name, holder, duration, renewal, onAcquired, onLost,
                 wanted=None):
        if not 0 < renewal < duration:
            raise ValueError("the renewal interval must be shorter than the lease")
        self.store = store
        self.clock = clock
        self.name = name
        self.holder = holder
        self.duration = duration
        self.renewal = renewal
        self.onAcquired = onAcquired
        self.onLost = onLost
        self.wanted = wanted
        self._until = None  # our lease's expiry on our clock, None when not ours
        self._loop = None

    @property
    def held(self):
        """True while the lease is ours and has not run out on our clock."""
        return self._until is not None and self.clock.seconds() < self._until

    def start(self):
        self._loop = LoopingCall(self._tick)
        self._loop.clock = self.clock
        # fires once stopped and no attempt is in flight (LoopingCall waits
        # for the Deferred a call returned)
        self._stopped = self._loop.start(self.renewal, now=True)

    def _tick(self):
        now = self.clock.seconds()
        if self._until is not None and now >= self._until:
            self._lose("it ran out before a renewal succeeded")
        if self.wanted is not None and not self.wanted():
            if self._until is None:
                return None
            self._lose("handed over")
            d = self.store.release(self.name, self.holder)
            d.addErrback(lambda f: log.warn("lease {name}: release failed: {e}", name=self.name,
                                            e=f.getErrorMessage()))
            return d
        d = self.store.acquire(self.name, self.holder, now, self.duration)
        d.addCallbacks(self._answered, self._failed, callbackArgs=(now,))
        return d  # the loop waits for it: attempts never pile up

    def _answered(self, ours, asked):
        if self._loop is None or not self._loop.running:
            return  # answered after stop(), which releases once this is in
        if not ours:
            if self._until is not None:
                self._lose("another node holds it")
            return
        first = self._until is None
        self._until = asked + self.duration
        if first:
            log.info("lease {name} taken by {holder}", name=self.name, holder=self.holder)
            self.onAcquired()

    def _failed(self, failure):
        log.warn("lease {name}: renewal failed: {e}", name=self.name,
                 e=failure.getErrorMessage())
        # held stays True only until the expiry we were granted

    def _lose(self, why):
        self._until = None
        log.warn("lease {name} lost by {holder}: {why}", name=self.name, holder=self.holder,
                 why=why)
        self.onLost()

    def stop(self):
        """
        Stop renewing; release the lease if it is ours, or became ours by an
        attempt still in flight when stop() was called.

        @return: Deferred firing when released (errors are logged), so that
            the node closes its storage only after the release committed.
        """
        if self._loop is None:
            return succeed(None)
        held = self._until is not None
        if self._loop.running:
            self._loop.stop()
        self._loop = None
        if held:
            self._until = None
            self.onLost()

        def release(result):
            if isinstance(result, Failure):
                log.failure("lease {name}: renewal loop failed", result, name=self.name)
            # An attempt in flight may commit after a release sent beside it
            # (another pool connection) and insert the row again: release
            # only once it is answered. The DELETE names our holder, so it
            # removes nothing that is not ours.
            d = self.store.release(self.name, self.holder)
            d.addErrback(lambda f: log.warn("lease {name}: release failed: {e}", name=self.name,
                                            e=f.getErrorMessage()))
            return d

        return self._stopped.addBoth(release)
