"""
MIKEY COUNTERs for MSK delivery, reserved in batches (TS 33.246 6.3.2.3.1:
the UE rejects a message whose counter does not grow for its MUK).

A rotation asks for one counter per registered UE, all at once. One store
transaction per counter made the transactions the bottleneck of the push
(the profile of bench/mikey_push.py: one adbapi round trip, thread hand-off
and commit per message). Here the requests made in the same reactor turn
(up to C{maxBatch}) go to the store together, in one
L{IBmscStore.reserveCounters} transaction; a MUK asked for several values
in that turn reserves them as one block. With C{block} > 1 each MUK reserves
at least that many, and the next messages to it are numbered from memory;
the default is 1, because batching across MUKs already brings a rotation to
one transaction per C{maxBatch} messages, while a kept rest costs about 200
bytes per registered UE (bench/mikey_push.py --block 8: +194 B/UE, no
measurable gain in throughput).

The durability contract does not change: a value is handed out only after
the transaction that reserved it committed, so a counter never goes back,
even after a restart; the unused rest of a block is skipped then. The
values handed out for one MUK grow in the order they were asked for.
"""

from twisted.internet.defer import Deferred, succeed

from mbmsd.logs import Logger

log = Logger(namespace="mbmsd.bmsc.counters")

BLOCK = 1  # counters reserved at least per MUK and transaction
MAX_BATCH = 2000  # MUKs per transaction
MAX_CACHED = 200000  # MUKs whose unused block is kept; beyond, the oldest is dropped


class CounterReservations:
    """
    C{nextCounter(mukId)} as L{IBmscStore.nextCounter} promises it, over
    C{store.reserveCounters}.
    """

    def __init__(self, store, clock, block=BLOCK, maxBatch=MAX_BATCH, maxCached=MAX_CACHED):
        if block < 1 or maxBatch < 1:
            raise ValueError("block and maxBatch must be >= 1")
        self.store = store
        self.clock = clock
        self.block = block
        self.maxBatch = maxBatch
        self.maxCached = maxCached
        self._free = {}  # MUK ID -> [next value, last value reserved]
        self._waiting = {}  # MUK ID -> [Deferred, ...] in request order
        self._flush = None  # the IDelayedCall of the pending flush
        self.transactions = 0

    def nextCounter(self, mukId):
        """
        @return: Deferred firing with the next counter of the MUK, once it
            is durably reserved.
        """
        if mukId not in self._waiting:
            free = self._free.get(mukId)
            if free is not None:
                value = free[0]
                if value == free[1]:
                    del self._free[mukId]
                else:
                    free[0] = value + 1
                return succeed(value)
        d = Deferred()
        self._waiting.setdefault(mukId, []).append(d)
        if len(self._waiting) >= self.maxBatch:
            self._flushNow()
        elif self._flush is None:
            self._flush = self.clock.callLater(0, self._flushNow)
        return d

    def _flushNow(self):
        if self._flush is not None:
            if self._flush.active():
                self._flush.cancel()
            self._flush = None
        if not self._waiting:
            return
        waiting, self._waiting = self._waiting, {}
        counts = {}
        for mukId, ds in waiting.items():
            # values still free for this MUK go first, in order
            free = self._free.pop(mukId, None)
            if free is not None:
                while ds and free[0] <= free[1]:
                    ds.pop(0).callback(free[0])
                    free[0] += 1
            if ds:
                counts[mukId] = max(self.block, len(ds))
            elif free is not None and free[0] <= free[1]:
                self._free[mukId] = free
        waiting = {m: ds for m, ds in waiting.items() if ds}
        if not counts:
            return
        self.transactions += 1
        d = self.store.reserveCounters(counts)
        d.addCallbacks(self._reserved, self._failed, callbackArgs=(counts, waiting),
                       errbackArgs=(waiting,))

    def _reserved(self, lasts, counts, waiting):
        for mukId, ds in waiting.items():
            last = lasts[mukId]
            value = last - counts[mukId] + 1
            for d in ds:
                d.callback(value)
                value += 1
            if value <= last:
                self._keep(mukId, value, last)

    def _keep(self, mukId, value, last):
        free = self._free.get(mukId)
        if free is not None:
            # a newer block was cached meanwhile: the older rest is dropped
            # (values must grow in the order handed out, never go back)
            if free[0] > value:
                return
        elif len(self._free) >= self.maxCached:
            self._free.pop(next(iter(self._free)))
        self._free[mukId] = [value, last]

    def _failed(self, failure, waiting):
        log.failure("MIKEY counter reservation for {n} MUK(s) failed", failure, n=len(waiting))
        for ds in waiting.values():
            for d in ds:
                d.errback(failure)
