"""
Outstanding AKA challenges in SQL, shared by the BSF (Ub) and the P-CSCF
(SIP REGISTER): the same columns, each in its own table.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, overload

from twisted.internet.defer import Deferred, fail, succeed

from mbmsd.storage.records import Challenge, Subscriber

if TYPE_CHECKING:
    from mbmsd.storage.memory import MemorySubscriberStore
    from mbmsd.storage.sql import _Txn

    class _SubscribersTxn(Protocol):
        """What issue_challenge_txn asks of the subscriber store, in a transaction."""

        @staticmethod
        def _nextSqn_txn(txn: _Txn, impi: str) -> int | None: ...

        @staticmethod
        def _get_txn(txn: _Txn, impi: str) -> Subscriber | None: ...

# SQN wraps at 2^48 (TS 33.102 C.1.1)
SQN_MODULUS = 1 << 48


@overload
def _b(value: bytes) -> bytes: ...


@overload
def _b(value: None) -> None: ...


def _b(value: bytes | None) -> bytes | None:
    return bytes(value) if value is not None else None


# AKA challenges (Ub and SIP REGISTER keep them alike, each in its own table)
CHALLENGE_TABLES = ("ub_challenges", "sip_challenges")


def put_challenge_txn(txn: _Txn, table: str, c: Challenge) -> None:
    assert table in CHALLENGE_TABLES
    txn.execute(
        "INSERT INTO %s (nonce, impi, rand, xres, ck, ik, expires) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)" % (table,),
        (c.nonce, c.impi, c.rand,
         txn.seal(c.xres, "%s.xres:%s" % (table, c.nonce)),
         txn.seal(c.ck, "%s.ck:%s" % (table, c.nonce)),
         txn.seal(c.ik, "%s.ik:%s" % (table, c.nonce)), c.expires),
    )


def take_challenge_txn(txn: _Txn, table: str, nonce: str) -> Challenge | None:
    # DELETE ... RETURNING: a nonce is answered at most once, even with
    # several nodes on one database.
    assert table in CHALLENGE_TABLES
    row = txn.execute(
        "DELETE FROM %s WHERE nonce = ? RETURNING nonce, impi, rand, xres, ck, ik, expires"
        % (table,),
        (nonce,),
    ).fetchone()
    if row is None:
        return None
    return Challenge(
        nonce=row[0], impi=row[1], rand=_b(row[2]),
        xres=txn.unseal(row[3], "%s.xres:%s" % (table, row[0])),
        ck=txn.unseal(row[4], "%s.ck:%s" % (table, row[0])),
        ik=txn.unseal(row[5], "%s.ik:%s" % (table, row[0])), expires=float(row[6]),
    )


def issue_challenge_txn(
    txn: _Txn, subscribers: _SubscribersTxn, table: str, impi: str,
    challengeFor: Callable[[Subscriber], Challenge],
) -> Challenge | None:
    """
    L{mbmsd.interfaces.IBootstrapStore.issueChallenge} in SQL: the SQN
    advance and the challenge made from it in one transaction, one commit.

    @param subscribers: what reads and advances a subscriber in C{txn}
        (L{mbmsd.storage.sql.SqlSubscriberStore}, which imports this module).
    """
    if subscribers._nextSqn_txn(txn, impi) is None:
        return None
    subscriber = subscribers._get_txn(txn, impi)
    assert subscriber is not None  # its SQN was just advanced
    challenge = challengeFor(subscriber)
    put_challenge_txn(txn, table, challenge)
    return challenge


def issue_challenge_memory(
    subscribers: MemorySubscriberStore | None, challenges: dict[str, Challenge], impi: str,
    challengeFor: Callable[[Subscriber], Challenge],
) -> Deferred[Challenge | None]:
    """
    The same in memory: C{subscribers} a L{MemorySubscriberStore},
    C{challenges} the nonce -> L{Challenge} dict; all or nothing.
    """
    if subscribers is None:
        raise RuntimeError("the memory store needs its subscriber store to issue challenges")
    row = subscribers._rows.get(impi)
    if row is None:
        return succeed(None)
    row = dataclasses.replace(row, sqn=(row.sqn + 1) % SQN_MODULUS)
    try:
        challenge = challengeFor(row)
    except Exception:
        return fail()
    subscribers._rows[impi] = row
    challenges[challenge.nonce] = challenge
    return succeed(challenge)
