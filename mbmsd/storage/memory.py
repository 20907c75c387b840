"""
The in-memory reference implementation of every store: what the contract
suite (tests/store_contract.py) proves the SQL backends against. Nothing
survives a restart; for tests and throwaway labs.
"""

import dataclasses

from twisted.internet.defer import fail, succeed
from zope.interface import implementer

from mbmsd.interfaces import IBootstrapStore, IStorage, ISubscriberStore
from mbmsd.storage.challenges import issue_challenge_memory
from mbmsd.storage.bmsc import MemoryBmscStore
from mbmsd.storage.leases import MemoryLeaseStore
from mbmsd.storage.provisioning import MemoryProvisioningStore
from mbmsd.storage.records import SubscriberSummary
from mbmsd.storage.sipreg import MemorySipRegistrationStore


@implementer(ISubscriberStore)
class MemorySubscriberStore:
    def __init__(self):
        self._rows = {}

    def provision(self, subscriber):
        old = self._rows.get(subscriber.impi)
        if old is not None and old.sqn > subscriber.sqn:
            subscriber = dataclasses.replace(subscriber, sqn=old.sqn)
        self._rows[subscriber.impi] = subscriber
        return succeed(None)

    def create(self, subscriber):
        if subscriber.impi in self._rows:
            return succeed(False)
        return self.provision(subscriber).addCallback(lambda _: True)

    def update(self, subscriber):
        if subscriber.impi not in self._rows:
            return succeed(False)
        return self.provision(subscriber).addCallback(lambda _: True)

    def remove(self, impi):
        return succeed(self._rows.pop(impi, None) is not None)

    def page(self, after, limit, withKeys=False):
        # a sorted copy per page: the reference, not built for millions
        names = sorted(k for k in self._rows if k > (after or ""))[:limit]
        rows = [self._rows[k] for k in names]
        if withKeys:
            return succeed(rows)
        return succeed([SubscriberSummary(impi=r.impi, impus=r.impus, amf=r.amf, sqn=r.sqn,
                                          gbaType=r.gbaType) for r in rows])

    def provisionBatch(self, subscribers):
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

    def get(self, impi):
        return succeed(self._rows.get(impi))

    def nextSqn(self, impi):
        row = self._rows.get(impi)
        if row is None:
            return succeed(None)
        row = dataclasses.replace(row, sqn=(row.sqn + 1) % (1 << 48))
        self._rows[impi] = row
        return succeed(row.sqn)

    def resynchronise(self, impi, sqnMs):
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

    def __init__(self, subscribers=None):
        self._subscribers = subscribers
        self._challenges = {}
        self._sessions = {}

    def putChallenge(self, challenge):
        self._challenges[challenge.nonce] = challenge
        return succeed(None)

    def issueChallenge(self, impi, challengeFor):
        return issue_challenge_memory(self._subscribers, self._challenges, impi, challengeFor)

    def takeChallenge(self, nonce, sessionFor=None):
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

    def putSession(self, session):
        self._sessions[session.btid] = session
        return succeed(None)

    def getSession(self, btid):
        return succeed(self._sessions.get(btid))

    def prune(self, now):
        removed = 0
        for table in (self._challenges, self._sessions):
            for key in [k for k, v in table.items() if v.expires <= now]:
                del table[key]
                removed += 1
        return succeed(removed)


@implementer(IStorage)
class MemoryStorage:
    def __init__(self):
        self.subscribers = MemorySubscriberStore()
        self.bootstrap = MemoryBootstrapStore(self.subscribers)
        self.sipRegistrations = MemorySipRegistrationStore(self.subscribers)
        self.bmsc = MemoryBmscStore()
        self.leases = MemoryLeaseStore()
        self.provisioning = MemoryProvisioningStore(self)

    def open(self):
        return succeed(None)

    def close(self):
        return succeed(None)

    def ping(self):
        return succeed(None)
