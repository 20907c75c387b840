"""
Outstanding AKA challenges in SQL, shared by the BSF (Ub) and the P-CSCF
(SIP REGISTER): the same columns, each in its own table.
"""

import dataclasses

from twisted.internet.defer import fail, succeed

from mbmsd.storage.records import Challenge

# SQN wraps at 2^48 (TS 33.102 C.1.1)
SQN_MODULUS = 1 << 48


def _b(value):
    return bytes(value) if value is not None else None


# AKA challenges (Ub and SIP REGISTER keep them alike, each in its own table)
CHALLENGE_TABLES = ("ub_challenges", "sip_challenges")


def put_challenge_txn(txn, table, c):
    assert table in CHALLENGE_TABLES
    txn.execute(
        "INSERT INTO %s (nonce, impi, rand, xres, ck, ik, expires) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)" % (table,),
        (c.nonce, c.impi, c.rand,
         txn.seal(c.xres, "%s.xres:%s" % (table, c.nonce)),
         txn.seal(c.ck, "%s.ck:%s" % (table, c.nonce)),
         txn.seal(c.ik, "%s.ik:%s" % (table, c.nonce)), c.expires),
    )


def take_challenge_txn(txn, table, nonce):
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


def issue_challenge_txn(txn, subscribers, table, impi, challengeFor):
    """
    L{mbmsd.interfaces.IBootstrapStore.issueChallenge} in SQL: the SQN
    advance and the challenge made from it in one transaction, one commit.

    @param subscribers: what reads and advances a subscriber in C{txn}
        (L{mbmsd.storage.sql.SqlSubscriberStore}, which imports this module).
    """
    if subscribers._nextSqn_txn(txn, impi) is None:
        return None
    challenge = challengeFor(subscribers._get_txn(txn, impi))
    put_challenge_txn(txn, table, challenge)
    return challenge


def issue_challenge_memory(subscribers, challenges, impi, challengeFor):
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
