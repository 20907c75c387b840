"""
The P-CSCF's registration bindings in memory: its source of truth.

In IMS the UE's P-CSCF is fixed for the life of its registration (TS 23.228
5.2.1: found at attach, the UE's first hop), so this node owns the bindings
of the UEs registered through it; storage holds a copy written through, for
a restart and for the operator's views (the admin API reads storage). A
second edge node sees none of them.

  - L{BindingTable.load} reads the live bindings from storage; the service
    calls it before its SIP listeners open;
  - a binding enters memory only once storage acknowledged the write (the
    200 OK of REGISTER follows it): nothing acknowledged is lost on restart,
    and a failed write leaves nothing behind (the REGISTER is answered 500);
  - de-registration removes from storage, then from memory;
  - lookups (by IMPU, by network path) read memory only; expiry is exact at
    lookup (C{expires > now}) and L{BindingTable.prune}, driven by the
    service's one sweep timer, frees what expired;
  - C{limit} bounds the bindings held: a new binding beyond it raises
    L{BindingLimitReached} (the proxy answers 503 with Retry-After, RFC 3261
    21.5.4: a capacity condition, not a refusal of the user);
  - with C{node.workers} > 1 the workers share storage, and the kernel's
    SO_REUSEPORT hash may move a UE's source to another worker when one
    restarts: L{BindingTable.recallFrom} reads a source missing from memory
    from storage once (at most C{RECALLS_AT_ONCE} at a time, a source found
    missing is not read again for C{MISS_HOLD} seconds), and a recalled
    binding is read again after C{RECALL_HOLD} seconds, so a de-registration
    at the other worker is seen.

It offers the L{mbmsd.interfaces.ISipRegistrationStore} methods the
L{mbmsd.roles.pcscf.registrar.Registrar} uses (challenges pass through to
storage), so the registrar is unchanged, plus synchronous lookups for the
proxy's per-request path.
"""

from twisted.internet.defer import Deferred, fail, inlineCallbacks, succeed

from mbmsd.logs import Logger

__all__ = ["BindingTable", "BindingLimitReached"]

log = Logger(namespace="mbmsd.pcscf.bindings")


class BindingLimitReached(Exception):
    """A new binding would exceed C{pcscf.max_bindings}."""


# a recall reads storage on the proxy's request path: bounded
RECALLS_AT_ONCE = 16
MISS_HOLD = 2.0
MISSES_KEPT = 4096
RECALL_HOLD = 30.0


def _order(b):
    # the storage order (oldest registration first), sipreg._select_txn
    return (b.registered, b.impu, b.contact)


class BindingTable:
    """
    @param store: the L{mbmsd.interfaces.ISipRegistrationStore} written
        through.
    @param clock: IReactorTime.
    @param limit: the most bindings held (C{pcscf.max_bindings}).
    """

    def __init__(self, store, clock, limit=100_000):
        self.store = store
        self.clock = clock
        self.limit = limit
        self._byKey = {}        # (impu, contact) -> SipBinding
        self._byImpu = {}       # impu -> {contact: SipBinding}
        self._bySource = {}     # (transport, host, port) -> {(impu, contact): SipBinding}
        self._pending = set()   # keys of new bindings being written
        self._recalled = {}     # source -> when its bindings came from storage
        self._missed = {}       # source -> until when a miss holds (insertion order)
        self._recalling = {}    # source -> [Deferred] waiting for the one read

    def __len__(self):
        return len(self._byKey)

    # ------------------------------------------------------------ memory

    def _add(self, b):
        key = (b.impu, b.contact)
        self._drop(key)
        self._byKey[key] = b
        self._byImpu.setdefault(b.impu, {})[b.contact] = b
        self._bySource.setdefault(b.source, {})[key] = b

    def _drop(self, key):
        b = self._byKey.pop(key, None)
        if b is None:
            return 0
        contacts = self._byImpu[b.impu]
        del contacts[b.contact]
        if not contacts:
            del self._byImpu[b.impu]
        paths = self._bySource[b.source]
        del paths[key]
        if not paths:
            del self._bySource[b.source]
        return 1

    def liveOf(self, impu, now):
        """The live bindings of C{impu}, oldest registration first (no I/O)."""
        rows = [b for b in self._byImpu.get(impu, {}).values() if b.expires > now]
        rows.sort(key=_order)
        return rows

    def liveFrom(self, transport, host, port, now):
        """The live bindings registered from one network path (no I/O)."""
        source = (transport.upper(), host, int(port))
        paths = self._bySource.get(source)
        if not paths:
            return []
        if self._recalled and now - self._recalled.get(source, now) >= RECALL_HOLD:
            # a copy read from the other workers' storage: read it again
            del self._recalled[source]
            for key in list(paths):
                self._drop(key)
            return []
        rows = [b for b in paths.values() if b.expires > now]
        rows.sort(key=_order)
        return rows

    def recallFrom(self, transport, host, port, now):
        """
        Read the live bindings of one network path from storage into memory:
        a worker's read-through on a miss of L{liveFrom} (C{node.workers} >
        1, where another worker may have registered the source).

        @return: Deferred firing with C{(outcome, bindings)}: C{'recalled'}
            and the live bindings, C{'missing'} and C{[]} (storage has none,
            or a miss of the last C{MISS_HOLD} seconds), or C{'busy'} and
            C{[]} (C{RECALLS_AT_ONCE} reads are running, or the table is
            full); never fails (a storage error counts as C{'busy'}).
        """
        source = (transport.upper(), host, int(port))
        waiting = self._recalling.get(source)
        if waiting is not None:
            d = Deferred()
            waiting.append(d)
            return d
        if self._missed.get(source, 0) > now:
            return succeed(("missing", []))
        if len(self._recalling) >= RECALLS_AT_ONCE or len(self._byKey) >= self.limit:
            return succeed(("busy", []))
        self._recalling[source] = waiting = []
        d = self.store.bindingsFromSource(source[0], host, int(port), now)

        def read(rows):
            rows = [b for b in rows if b.expires > now]
            for b in rows:
                if (b.impu, b.contact) not in self._byKey:
                    self._add(b)
            if rows:
                self._recalled[source] = now
                self._missed.pop(source, None)
                return ("recalled", self.liveFrom(*source, now))
            self._missed.pop(source, None)
            self._missed[source] = now + MISS_HOLD
            while len(self._missed) > MISSES_KEPT:
                del self._missed[next(iter(self._missed))]
            return ("missing", [])

        def failed(f):
            log.warn("P-CSCF: reading the bindings of {source} from storage failed: {e}",
                     source="%s %s:%d" % source, e=f.getErrorMessage())
            return ("busy", [])

        def done(result):
            del self._recalling[source]
            for w in waiting:
                w.callback(result)
            return result

        d.addCallbacks(read, failed)
        d.addCallback(done)
        return d

    # ------------------------------------------------------------ start

    @inlineCallbacks
    def load(self):
        """
        Replace memory with the live bindings in storage.

        @return: Deferred firing with the number loaded.
        """
        rows = yield self.store.liveBindings(self.clock.seconds())
        self._byKey, self._byImpu, self._bySource = {}, {}, {}
        for b in rows:
            self._add(b)
        if len(self._byKey) > self.limit:
            log.warn("P-CSCF: {n} bindings restored, above pcscf.max_bindings ({limit}): "
                     "new ones are refused until some expire", n=len(self._byKey),
                     limit=self.limit)
        return len(self._byKey)

    # ------------------------------------------------ ISipRegistrationStore

    def putChallenge(self, challenge):
        return self.store.putChallenge(challenge)

    def takeChallenge(self, nonce):
        return self.store.takeChallenge(nonce)

    def issueChallenge(self, impi, challengeFor):
        # the SQN and the challenge made from it: one storage transaction
        return self.store.issueChallenge(impi, challengeFor)

    def putBinding(self, binding):
        """
        Write C{binding} to storage, then to memory.

        @return: Deferred firing with None once storage acknowledged it;
            failing with L{BindingLimitReached} (nothing written) when a new
            binding would exceed C{limit}, or with the storage's error
            (nothing kept).
        """
        key = (binding.impu, binding.contact)
        new = key not in self._byKey
        if new:
            if key in self._pending or len(self._byKey) + len(self._pending) >= self.limit:
                return fail(BindingLimitReached(self.limit))
            self._pending.add(key)
        d = self.store.putBinding(binding)

        def written(_):
            self._add(binding)
            # registered here: this worker's own, no longer a recalled copy
            self._recalled.pop(binding.source, None)

        def done(result):
            if new:
                self._pending.discard(key)
            return result

        d.addCallback(written)
        d.addBoth(done)
        return d

    def getBinding(self, impu, contact):
        return succeed(self._byKey.get((impu, contact)))

    def removeBinding(self, impu, contact):
        d = self.store.removeBinding(impu, contact)
        d.addCallback(lambda n: max(n, self._drop((impu, contact))))
        return d

    def removeBindings(self, impu):
        d = self.store.removeBindings(impu)

        def removed(n):
            mine = [(impu, contact) for contact in self._byImpu.get(impu, {})]
            for key in mine:
                self._drop(key)
            return max(n, len(mine))

        d.addCallback(removed)
        return d

    def bindings(self, impu, now):
        return succeed(self.liveOf(impu, now))

    def bindingsFromSource(self, transport, host, port, now):
        return succeed(self.liveFrom(transport, host, port, now))

    def countBindings(self, now):
        return succeed(sum(1 for b in self._byKey.values() if b.expires > now))

    def prune(self, now):
        """
        The sweep: drop from memory what expired at or before C{now}, then
        prune storage (bindings and challenges).

        @return: Deferred firing with the number of storage rows removed.
        """
        for key in [k for k, b in self._byKey.items() if b.expires <= now]:
            self._drop(key)
        for source in [s for s in self._recalled if s not in self._bySource]:
            del self._recalled[source]
        for source in [s for s, until in self._missed.items() if until <= now]:
            del self._missed[source]
        return self.store.prune(now)
