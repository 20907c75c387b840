"""
Outstanding AKA challenges in SQL, shared by the BSF (Ub) and the P-CSCF
(SIP REGISTER): the same columns, each in its own table.
"""

from mbmsd.storage.records import Challenge


def _b(value):
    return bytes(value) if value is not None else None


# AKA challenges (Ub and SIP REGISTER keep them alike, each in its own table)
CHALLENGE_TABLES = ("ub_challenges", "sip_challenges")


def put_challenge_txn(txn, table, c):
    assert table in CHALLENGE_TABLES
    txn.execute(
        "INSERT INTO %s (nonce, impi, rand, xres, ck, ik, expires) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)" % (table,),
        (c.nonce, c.impi, c.rand, c.xres, c.ck, c.ik, c.expires),
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
        nonce=row[0], impi=row[1], rand=_b(row[2]), xres=_b(row[3]),
        ck=_b(row[4]), ik=_b(row[5]), expires=float(row[6]),
    )
