"""
The P-CSCF's registrar state (L{ISipRegistrationStore}): the in-memory
reference implementation and the SQL one (queries written once for SQLite and
PostgreSQL, schema file 003_sip.sql), with the L{SipBinding} record.

Challenges reuse L{mbmsd.storage.records.Challenge} (nonce, IMPI, RAND, XRES,
CK, IK, expiry), the same record the BSF keeps for Ub.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from mbmsd.interfaces import ISipRegistrationStore
from mbmsd.storage.challenges import (
    issue_challenge_memory,
    issue_challenge_txn,
    put_challenge_txn,
    take_challenge_txn,
)

if TYPE_CHECKING:
    from mbmsd.storage.memory import MemorySubscriberStore
    from mbmsd.storage.records import Challenge, Subscriber
    from mbmsd.storage.sql import Database, Row, SqlSubscriberStore, _Txn

__all__ = ["SipBinding", "MemorySipRegistrationStore", "SqlSipRegistrationStore"]


@dataclass(frozen=True)
class SipBinding:
    """
    One registered contact of a public user identity (RFC 3261 10.3 step 7,
    TS 24.229 5.2.2): the IMPU, the Contact URI, and the network path the
    REGISTER came over (what later requests are checked against).

    @ivar associated: the IMPUs the 200 OK listed in P-Associated-URI (the
        implicit registration set); the first is the default public user
        identity.
    @ivar transport: 'UDP' or 'TCP'.
    @ivar registered: when the binding was (re)created, POSIX seconds.
    """

    impu: str
    contact: str
    impi: str
    associated: tuple[str, ...]
    transport: str
    host: str
    port: int
    expires: float
    callId: str
    cseq: int
    registered: float = 0.0

    @property
    def source(self) -> tuple[str, str, int]:
        return (self.transport, self.host, self.port)


@implementer(ISipRegistrationStore)
class MemorySipRegistrationStore:
    """
    @param subscribers: the L{mbmsd.storage.memory.MemorySubscriberStore}
        whose SQNs L{issueChallenge} advances.
    """

    def __init__(self, subscribers: MemorySubscriberStore | None = None) -> None:
        self._subscribers = subscribers
        self._challenges: dict[str, Challenge] = {}
        # (impu, contact) -> SipBinding, insertion order
        self._bindings: dict[tuple[str, str], SipBinding] = {}

    def putChallenge(self, challenge: Challenge) -> Deferred[None]:
        self._challenges[challenge.nonce] = challenge
        return succeed(None)

    def issueChallenge(
        self, impi: str, challengeFor: Callable[[Subscriber], Challenge],
    ) -> Deferred[Challenge | None]:
        return issue_challenge_memory(self._subscribers, self._challenges, impi, challengeFor)

    def takeChallenge(self, nonce: str) -> Deferred[Challenge | None]:
        return succeed(self._challenges.pop(nonce, None))

    def putBinding(self, binding: SipBinding) -> Deferred[None]:
        key = (binding.impu, binding.contact)
        self._bindings.pop(key, None)
        self._bindings[key] = binding
        return succeed(None)

    def getBinding(self, impu: str, contact: str) -> Deferred[SipBinding | None]:
        return succeed(self._bindings.get((impu, contact)))

    def removeBinding(self, impu: str, contact: str) -> Deferred[int]:
        return succeed(1 if self._bindings.pop((impu, contact), None) is not None else 0)

    def removeBindings(self, impu: str) -> Deferred[int]:
        keys = [k for k in self._bindings if k[0] == impu]
        for k in keys:
            del self._bindings[k]
        return succeed(len(keys))

    def _live(self, now: float, match: Callable[[SipBinding], bool]) -> list[SipBinding]:
        rows = [b for b in self._bindings.values() if b.expires > now and match(b)]
        rows.sort(key=lambda b: b.registered)
        return rows

    def bindings(self, impu: str, now: float) -> Deferred[list[SipBinding]]:
        return succeed(self._live(now, lambda b: b.impu == impu))

    def bindingsFromSource(
        self, transport: str, host: str, port: int, now: float,
    ) -> Deferred[list[SipBinding]]:
        source = (transport.upper(), host, int(port))
        return succeed(self._live(now, lambda b: b.source == source))

    def liveBindings(self, now: float) -> Deferred[list[SipBinding]]:
        return succeed(self._live(now, lambda b: True))

    def countBindings(self, now: float) -> Deferred[int]:
        return succeed(sum(1 for b in self._bindings.values() if b.expires > now))

    def prune(self, now: float) -> Deferred[int]:
        return succeed(_prune(self._challenges, now) + _prune(self._bindings, now))


class _Expiring(Protocol):
    @property
    def expires(self) -> float: ...


_K = TypeVar("_K")
_V = TypeVar("_V", bound=_Expiring)


def _prune(table: dict[_K, _V], now: float) -> int:
    """Delete C{table}'s entries expired at or before C{now}; how many."""
    keys = [k for k, v in table.items() if v.expires <= now]
    for key in keys:
        del table[key]
    return len(keys)


_BINDING_COLUMNS = ("impu, contact, impi, associated, transport, host, port, expires, "
                    "call_id, cseq, registered")


def _binding(row: Row) -> SipBinding:
    return SipBinding(
        impu=row[0], contact=row[1], impi=row[2],
        associated=tuple(row[3].split("\n")) if row[3] else (),
        transport=row[4], host=row[5], port=int(row[6]), expires=float(row[7]),
        callId=row[8], cseq=int(row[9]), registered=float(row[10]),
    )


@implementer(ISipRegistrationStore)
class SqlSipRegistrationStore:
    """
    Over a L{mbmsd.storage.sql.Database}; every transaction named.
    """

    def __init__(self, db: Database, subscribers: SqlSubscriberStore) -> None:
        """
        @param subscribers: the L{mbmsd.storage.sql.SqlSubscriberStore} of
            the same database (the SQN that L{issueChallenge} advances).
        """
        self.db = db
        self._subscribers = subscribers

    def putChallenge(self, challenge: Challenge) -> Deferred[None]:
        return self.db.runInteraction("sip_put_challenge", put_challenge_txn, "sip_challenges",
                                      challenge)

    def issueChallenge(
        self, impi: str, challengeFor: Callable[[Subscriber], Challenge],
    ) -> Deferred[Challenge | None]:
        # one transaction, one commit: the SQN and the challenge it went into
        return self.db.runInteraction("sip_issue_challenge", issue_challenge_txn,
                                      self._subscribers, "sip_challenges", impi, challengeFor)

    def takeChallenge(self, nonce: str) -> Deferred[Challenge | None]:
        return self.db.runInteraction("sip_take_challenge", take_challenge_txn,
                                      "sip_challenges", nonce)

    def putBinding(self, binding: SipBinding) -> Deferred[None]:
        return self.db.runInteraction("sip_put_binding", self._putBinding_txn, binding)

    @staticmethod
    def _putBinding_txn(txn: _Txn, b: SipBinding) -> None:
        txn.execute(
            "INSERT INTO sip_bindings (" + _BINDING_COLUMNS + ") "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (impu, contact) DO UPDATE SET impi = excluded.impi, "
            "associated = excluded.associated, transport = excluded.transport, "
            "host = excluded.host, port = excluded.port, expires = excluded.expires, "
            "call_id = excluded.call_id, cseq = excluded.cseq, registered = excluded.registered",
            (b.impu, b.contact, b.impi, "\n".join(b.associated), b.transport, b.host,
             b.port, b.expires, b.callId, b.cseq, b.registered),
        )

    def getBinding(self, impu: str, contact: str) -> Deferred[SipBinding | None]:
        return self.db.runInteraction("sip_get_binding", self._getBinding_txn, impu, contact)

    @staticmethod
    def _getBinding_txn(txn: _Txn, impu: str, contact: str) -> SipBinding | None:
        row = txn.execute(
            "SELECT " + _BINDING_COLUMNS + " FROM sip_bindings WHERE impu = ? AND contact = ?",
            (impu, contact),
        ).fetchone()
        return _binding(row) if row is not None else None

    def removeBinding(self, impu: str, contact: str) -> Deferred[int]:
        return self.db.runInteraction("sip_remove_binding", self._remove_txn,
                                      "impu = ? AND contact = ?", (impu, contact))

    def removeBindings(self, impu: str) -> Deferred[int]:
        return self.db.runInteraction("sip_remove_bindings", self._remove_txn,
                                      "impu = ?", (impu,))

    @staticmethod
    def _remove_txn(txn: _Txn, where: str, args: tuple[str, ...]) -> int:
        return txn.execute("DELETE FROM sip_bindings WHERE " + where, args).rowcount

    def bindings(self, impu: str, now: float) -> Deferred[list[SipBinding]]:
        return self.db.runInteraction("sip_bindings_of_impu", self._select_txn,
                                      "impu = ?", (impu,), now)

    def bindingsFromSource(
        self, transport: str, host: str, port: int, now: float,
    ) -> Deferred[list[SipBinding]]:
        return self.db.runInteraction(
            "sip_bindings_from_source", self._select_txn,
            "host = ? AND port = ? AND transport = ?", (host, int(port), transport.upper()), now)

    def liveBindings(self, now: float) -> Deferred[list[SipBinding]]:
        return self.db.runInteraction("sip_live_bindings", self._select_txn, "1 = 1", (), now)

    @staticmethod
    def _select_txn(
        txn: _Txn, where: str, args: Sequence[object], now: float,
    ) -> list[SipBinding]:
        rows = txn.execute(
            "SELECT " + _BINDING_COLUMNS + " FROM sip_bindings WHERE " + where
            + " AND expires > ? ORDER BY registered, impu, contact",
            tuple(args) + (now,),
        ).fetchall()
        return [_binding(row) for row in rows]

    def countBindings(self, now: float) -> Deferred[int]:
        return self.db.runInteraction("sip_count_bindings", self._count_txn, now)

    @staticmethod
    def _count_txn(txn: _Txn, now: float) -> int:
        row = txn.execute("SELECT COUNT(*) FROM sip_bindings WHERE expires > ?",
                          (now,)).fetchone()
        assert row is not None  # an aggregate without GROUP BY yields one row
        return int(row[0])

    def prune(self, now: float) -> Deferred[int]:
        return self.db.runInteraction("sip_prune", self._prune_txn, now)

    @staticmethod
    def _prune_txn(txn: _Txn, now: float) -> int:
        removed = txn.execute("DELETE FROM sip_challenges WHERE expires <= ?", (now,)).rowcount
        removed += txn.execute("DELETE FROM sip_bindings WHERE expires <= ?", (now,)).rowcount
        return removed


def replace(binding: SipBinding, **changes: Any) -> SipBinding:  # Any: the fields' own types
    """A copy of C{binding} with C{changes}."""
    return dataclasses.replace(binding, **changes)
