"""
The in-memory reference implementation of every store: what the contract
suite (tests/store_contract.py) proves the SQL backends against. Nothing
survives a restart; for tests and throwaway labs.
"""

import dataclasses
from collections.abc import Callable, Iterable

from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer

from mbmsd.interfaces import IBootstrapStore, IStorage, ISubscriberStore
from mbmsd.storage.bmsc import MemoryBmscStore
from mbmsd.storage.challenges import issue_challenge_memory
from mbmsd.storage.leases import MemoryLeaseStore
from mbmsd.storage.provisioning import MemoryProvisioningStore
from mbmsd.storage.records import BootstrapSession, Challenge, Subscriber, SubscriberSummary
from mbmsd.storage.sipreg import MemorySipRegistrationStore


@implementer(ISubscriberStore)
class MemorySubscriberStore:
    def __init__(self) -> None:
        self._rows: dict[str, Subscriber] = {}

    def provision(self, subscriber: Subscriber) -> Deferred[None]:
        old = self._rows.get(subscriber.impi)
        if old is not None and old.sqn > subscriber.sqn:
            subscriber = dataclasses.replace(subscriber, sqn=old.sqn)
        self._rows[subscriber.impi] = subscriber
        return succeed(None)

    def create(self, subscriber: Subscriber) -> Deferred[bool]:
        if subscriber.impi in self._rows:
            return succeed(False)
        return self.provision(subscriber).addCallback(lambda _: True)

    def update(self, subscriber: Subscriber) -> Deferred[bool]:
        if subscriber.impi not in self._rows:
            return succeed(False)
        return self.provision(subscriber).addCallback(lambda _: True)

    def remove(self, impi: str) -> Deferred[bool]:
        return succeed(self._rows.pop(impi, None) is not None)

    def page(
        self, after: str | None, limit: int, withKeys: bool = False,
    ) -> Deferred[list[SubscriberSummary] | list[Subscriber]]:
        # a sorted copy per page: the reference, not built for millions
        names = sorted(k for k in self._rows if k > (after or ""))[:limit]
        rows = [self._rows[k] for k in names]
        page: list[SubscriberSummary] | list[Subscriber] = rows
        if withKeys:
            return succeed(page)
        page = [SubscriberSummary(impi=r.impi, impus=r.impus, amf=r.amf, sqn=r.sqn,
                                  gbaType=r.gbaType) for r in rows]
        return succeed(page)

    def provisionBatch(
        self, subscribers: Iterable[Subscriber],
    ) -> Deferred[tuple[int, int, int]]:
        created = updated = unchanged = 0
        for s in subscribers:
            old = self._rows.get(s.impi)
            if old is None:
                created += 1
            elif old.sqn >= s.sqn and old == dataclasses.replace(s, sqn=old.sqn):
                unchanged += 1
                continue
            else:
                updated += 1
            self.provision(s)
        return succeed((created, updated, unchanged))

    def get(self, impi: str) -> Deferred[Subscriber | None]:
        return succeed(self._rows.get(impi))

    def nextSqn(self, impi: str) -> Deferred[int | None]:
        row = self._rows.get(impi)
        if row is None:
            return succeed(None)
        row = dataclasses.replace(row, sqn=(row.sqn + 1) % (1 << 48))
        self._rows[impi] = row
        return succeed(row.sqn)

    def resynchronise(self, impi: str, sqnMs: int) -> Deferred[None]:
        row = self._rows.get(impi)
        if row is not None:
            self._rows[impi] = dataclasses.replace(row, sqn=sqnMs)
        return succeed(None)


@implementer(IBootstrapStore)
class MemoryBootstrapStore:
    """
    @param subscribers: the L{MemorySubscriberStore} whose SQNs
        L{issueChallenge} advances.
    """

    def __init__(self, subscribers: MemorySubscriberStore | None = None) -> None:
        self._subscribers = subscribers
        self._challenges: dict[str, Challenge] = {}
        self._sessions: dict[str, BootstrapSession] = {}

    def putChallenge(self, challenge: Challenge) -> Deferred[None]:
        self._challenges[challenge.nonce] = challenge
        return succeed(None)

    def issueChallenge(
        self, impi: str, challengeFor: Callable[[Subscriber], Challenge],
    ) -> Deferred[Challenge | None]:
        return issue_challenge_memory(self._subscribers, self._challenges, impi, challengeFor)

    def takeChallenge(
        self, nonce: str,
        sessionFor: Callable[[Challenge], BootstrapSession | None] | None = None,
    ) -> Deferred[Challenge | None]:
        challenge = self._challenges.get(nonce)
        if challenge is not None and sessionFor is not None:
            try:
                session = sessionFor(challenge)
            except Exception:
                return fail()
            if session is not None:
                self._sessions[session.btid] = session
        self._challenges.pop(nonce, None)
        return succeed(challenge)

    def putSession(self, session: BootstrapSession) -> Deferred[None]:
        self._sessions[session.btid] = session
        return succeed(None)

    def getSession(self, btid: str) -> Deferred[BootstrapSession | None]:
        return succeed(self._sessions.get(btid))

    def prune(self, now: float) -> Deferred[int]:
        removed = 0
        table: dict[str, Challenge] | dict[str, BootstrapSession]
        for table in (self._challenges, self._sessions):
            for key in [k for k, v in table.items() if v.expires <= now]:
                del table[key]
                removed += 1
        return succeed(removed)


@implementer(IStorage)
class MemoryStorage:
    def __init__(self) -> None:
        self.subscribers = MemorySubscriberStore()
        self.bootstrap = MemoryBootstrapStore(self.subscribers)
        self.sipRegistrations = MemorySipRegistrationStore(self.subscribers)
        self.bmsc = MemoryBmscStore()
        self.leases = MemoryLeaseStore()
        self.provisioning = MemoryProvisioningStore(self)

    def open(self) -> Deferred[None]:
        return succeed(None)

    def close(self) -> Deferred[None]:
        return succeed(None)

    def ping(self) -> Deferred[None]:
        return succeed(None)
