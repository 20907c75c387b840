"""
The BM-SC.UPF's store (L{IBmscStore}): the in-memory reference and the SQL
implementation (each query written once for SQLite and PostgreSQL).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer

from mbmsd.interfaces import IBmscStore
from mbmsd.storage.records import Authorization, Msk, MskRegistration, rotation_shard

if TYPE_CHECKING:
    from mbmsd.storage.sql import Database, Row, _Txn

MSK_RETENTION = 86400  # an expired MSK is kept a day for late msk-requests


_COUNTER_CHUNK = 400  # MUKs per statement of reserveCounters (2 parameters each)


def _mskNumber(mskId: bytes) -> int:
    return int.from_bytes(mskId, "big")


def _checkCounts(counts: Mapping[str, object]) -> None:
    for mukId, n in counts.items():
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError("a counter reservation must be a positive int, not %r" % (n,))


@implementer(IBmscStore)
class MemoryBmscStore:
    def __init__(self) -> None:
        self._auth: dict[tuple[str, str], Authorization] = {}
        self._reg: dict[tuple[str, str], MskRegistration] = {}
        self._msks: dict[tuple[bytes, bytes], Msk] = {}
        self._counters: dict[str, int] = {}

    def putAuthorization(self, a: Authorization) -> Deferred[None]:
        self._auth[(a.impu, a.serviceId)] = a
        return succeed(None)

    def getAuthorization(self, impu: str, serviceId: str) -> Deferred[Authorization | None]:
        return succeed(self._auth.get((impu, serviceId)))

    def removeAuthorization(self, impu: str, serviceId: str) -> Deferred[bool]:
        self._reg.pop((impu, serviceId), None)
        return succeed(self._auth.pop((impu, serviceId), None) is not None)

    def putRegistration(self, r: MskRegistration) -> Deferred[None]:
        self._reg[(r.impu, r.serviceId)] = r
        return succeed(None)

    def putSipAuthorization(
        self, a: Authorization, r: MskRegistration,
    ) -> Deferred[MskRegistration | None]:
        old = self._reg.get((r.impu, r.serviceId))
        self._auth[(a.impu, a.serviceId)] = a
        self._reg[(r.impu, r.serviceId)] = r
        return succeed(old)

    def removeRegistration(self, impu: str, serviceId: str) -> Deferred[bool]:
        return succeed(self._reg.pop((impu, serviceId), None) is not None)

    def registrationsFor(
        self, serviceId: str, shard: int = 0, shards: int = 1,
    ) -> Deferred[list[MskRegistration]]:
        return succeed(sorted((r for r in self._reg.values() if r.serviceId == serviceId
                               and (shards == 1 or rotation_shard(r.impu, shards) == shard)),
                              key=lambda r: r.impu))

    def getRegistration(self, impu: str, serviceId: str) -> Deferred[MskRegistration | None]:
        return succeed(self._reg.get((impu, serviceId)))

    def putMsk(self, msk: Msk) -> Deferred[None]:
        self._msks[(msk.keyDomainId, msk.mskId)] = msk
        return succeed(None)

    def currentMsk(self, serviceId: str, now: float) -> Deferred[Msk | None]:
        valid = [m for m in self._msks.values() if m.serviceId == serviceId and m.expires > now]
        return succeed(max(valid, key=lambda m: (m.created, _mskNumber(m.mskId)))
                       if valid else None)

    def getMsk(self, keyDomainId: bytes, mskId: bytes) -> Deferred[Msk | None]:
        return succeed(self._msks.get((keyDomainId, mskId)))

    def lastMskNumber(self, serviceId: str) -> Deferred[int | None]:
        numbers = [_mskNumber(m.mskId) for m in self._msks.values() if m.serviceId == serviceId]
        return succeed(max(numbers) if numbers else None)

    def nextCounter(self, mukId: str) -> Deferred[int]:
        self._counters[mukId] = self._counters.get(mukId, 0) + 1
        return succeed(self._counters[mukId])

    def reserveCounters(self, counts: Mapping[str, int]) -> Deferred[dict[str, int]]:
        try:
            _checkCounts(counts)
        except Exception as e:
            return fail(e)
        for mukId, n in counts.items():
            self._counters[mukId] = self._counters.get(mukId, 0) + n
        return succeed({mukId: self._counters[mukId] for mukId in counts})

    def prune(self, now: float) -> Deferred[int]:
        removed = 0
        table: dict[tuple[str, str], Authorization] | dict[tuple[str, str], MskRegistration]
        for table in (self._auth, self._reg):
            for key in [k for k, v in table.items() if v.expires <= now]:
                del table[key]
                removed += 1
        for mskKey in [k for k, m in self._msks.items() if m.expires + MSK_RETENTION <= now]:
            del self._msks[mskKey]
            removed += 1
        return succeed(removed)


def msk_context(keyDomainId: bytes, mskId: bytes) -> str:
    return "bmsc_msks.msk:%s%s" % (bytes(keyDomainId).hex(), bytes(mskId).hex())


def _msk(txn: _Txn, row: Row) -> Msk:
    keyDomainId, mskId = bytes(row[1]), int(row[2]).to_bytes(4, "big")
    return Msk(serviceId=row[0], keyDomainId=keyDomainId, mskId=mskId,
               key=txn.unseal(row[3], msk_context(keyDomainId, mskId)),
               created=float(row[4]), expires=float(row[5]))


_MSK_COLUMNS = "service_id, key_domain_id, msk_id, msk, created, expires"
_REG_COLUMNS = "impu, service_id, btid, ue_address, expires, ua_id, muk, muk_expires, naf_fqdn"


def muk_context(impu: str, serviceId: str) -> str:
    # IMPUs and service IDs hold no space (their grammars)
    return "bmsc_registrations.muk:%s %s" % (impu, serviceId)


def _registration(txn: _Txn, r: Row) -> MskRegistration:
    muk = txn.unseal(r[6], muk_context(r[0], r[1])) if r[6] is not None else None
    return MskRegistration(r[0], r[1], r[2], r[3], float(r[4]), uaId=bytes.fromhex(r[5]),
                           muk=muk, mukExpires=float(r[7]) if r[7] is not None else None,
                           nafFqdn=r[8])


@implementer(IBmscStore)
class SqlBmscStore:
    def __init__(self, db: "Database") -> None:
        self.db = db

    def putAuthorization(self, a: Authorization) -> Deferred[None]:
        return self.db.runInteraction("put_authorization", self._putAuthorization_txn, a)

    @staticmethod
    def _putAuthorization_txn(txn: _Txn, a: Authorization) -> None:
        txn.execute(
            "INSERT INTO bmsc_authorizations (impu, service_id, ue_address, expires) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (impu, service_id) DO UPDATE SET "
            "ue_address = excluded.ue_address, expires = excluded.expires",
            (a.impu, a.serviceId, a.ueAddress, a.expires),
        )

    def getAuthorization(self, impu: str, serviceId: str) -> Deferred[Authorization | None]:
        return self.db.runInteraction("get_authorization", self._getAuthorization_txn, impu,
                                      serviceId)

    @staticmethod
    def _getAuthorization_txn(txn: _Txn, impu: str, serviceId: str) -> Authorization | None:
        row = txn.execute(
            "SELECT impu, service_id, ue_address, expires FROM bmsc_authorizations "
            "WHERE impu = ? AND service_id = ?", (impu, serviceId)).fetchone()
        return Authorization(row[0], row[1], row[2], float(row[3])) if row else None

    def removeAuthorization(self, impu: str, serviceId: str) -> Deferred[bool]:
        return self.db.runInteraction("remove_authorization", self._removeAuthorization_txn,
                                      impu, serviceId)

    @staticmethod
    def _removeAuthorization_txn(txn: _Txn, impu: str, serviceId: str) -> bool:
        txn.execute("DELETE FROM bmsc_registrations WHERE impu = ? AND service_id = ?",
                    (impu, serviceId))
        return txn.execute("DELETE FROM bmsc_authorizations WHERE impu = ? AND service_id = ?",
                           (impu, serviceId)).rowcount > 0

    def putRegistration(self, r: MskRegistration) -> Deferred[None]:
        return self.db.runInteraction("put_registration", self._putRegistration_txn, r)

    @staticmethod
    def _putRegistration_txn(txn: _Txn, r: MskRegistration) -> None:
        muk = txn.seal(r.muk, muk_context(r.impu, r.serviceId)) if r.muk is not None else None
        txn.execute(
            "INSERT INTO bmsc_registrations (%s) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (impu, service_id) DO UPDATE SET "
            "btid = excluded.btid, ue_address = excluded.ue_address, expires = excluded.expires, "
            "ua_id = excluded.ua_id, muk = excluded.muk, muk_expires = excluded.muk_expires, "
            "naf_fqdn = excluded.naf_fqdn" % (_REG_COLUMNS,),
            (r.impu, r.serviceId, r.btid, r.ueAddress, r.expires, r.uaId.hex(), muk, r.mukExpires,
             r.nafFqdn),
        )

    def putSipAuthorization(
        self, a: Authorization, r: MskRegistration,
    ) -> Deferred[MskRegistration | None]:
        return self.db.runInteraction("put_sip_authorization", self._putSipAuthorization_txn,
                                      a, r)

    @classmethod
    def _putSipAuthorization_txn(
        cls, txn: _Txn, a: Authorization, r: MskRegistration,
    ) -> MskRegistration | None:
        old = cls._getRegistration_txn(txn, r.impu, r.serviceId)
        cls._putAuthorization_txn(txn, a)
        cls._putRegistration_txn(txn, r)
        return old

    def removeRegistration(self, impu: str, serviceId: str) -> Deferred[bool]:
        return self.db.runInteraction("remove_registration", self._removeRegistration_txn,
                                      impu, serviceId)

    @staticmethod
    def _removeRegistration_txn(txn: _Txn, impu: str, serviceId: str) -> bool:
        return txn.execute("DELETE FROM bmsc_registrations WHERE impu = ? AND service_id = ?",
                           (impu, serviceId)).rowcount > 0

    def registrationsFor(
        self, serviceId: str, shard: int = 0, shards: int = 1,
    ) -> Deferred[list[MskRegistration]]:
        return self.db.runInteraction("registrations_for", self._registrationsFor_txn, serviceId,
                                      shard, shards)

    @staticmethod
    def _registrationsFor_txn(
        txn: _Txn, serviceId: str, shard: int, shards: int,
    ) -> list[MskRegistration]:
        rows = txn.execute(
            "SELECT %s FROM bmsc_registrations "
            "WHERE service_id = ? ORDER BY impu" % (_REG_COLUMNS,), (serviceId,)).fetchall()
        if shards > 1:
            # the shard by the IMPU column, before a row becomes an object
            rows = [r for r in rows if rotation_shard(r[0], shards) == shard]
        return [_registration(txn, r) for r in rows]

    def getRegistration(self, impu: str, serviceId: str) -> Deferred[MskRegistration | None]:
        return self.db.runInteraction("get_registration", self._getRegistration_txn, impu,
                                      serviceId)

    @staticmethod
    def _getRegistration_txn(txn: _Txn, impu: str, serviceId: str) -> MskRegistration | None:
        r = txn.execute(
            "SELECT %s FROM bmsc_registrations "
            "WHERE impu = ? AND service_id = ?" % (_REG_COLUMNS,), (impu, serviceId)).fetchone()
        return _registration(txn, r) if r else None

    def putMsk(self, msk: Msk) -> Deferred[None]:
        return self.db.runInteraction("put_msk", self._putMsk_txn, msk)

    @staticmethod
    def _putMsk_txn(txn: _Txn, m: Msk) -> None:
        txn.execute(
            "INSERT INTO bmsc_msks (%s) VALUES (?, ?, ?, ?, ?, ?)" % (_MSK_COLUMNS,),
            (m.serviceId, m.keyDomainId, _mskNumber(m.mskId),
             txn.seal(m.key, msk_context(m.keyDomainId, m.mskId)), m.created, m.expires),
        )

    def currentMsk(self, serviceId: str, now: float) -> Deferred[Msk | None]:
        return self.db.runInteraction("current_msk", self._currentMsk_txn, serviceId, now)

    @staticmethod
    def _currentMsk_txn(txn: _Txn, serviceId: str, now: float) -> Msk | None:
        row = txn.execute(
            "SELECT %s FROM bmsc_msks WHERE service_id = ? AND expires > ? "
            "ORDER BY created DESC, msk_id DESC LIMIT 1" % (_MSK_COLUMNS,),
            (serviceId, now)).fetchone()
        return _msk(txn, row) if row else None

    def getMsk(self, keyDomainId: bytes, mskId: bytes) -> Deferred[Msk | None]:
        return self.db.runInteraction("get_msk", self._getMsk_txn, keyDomainId, mskId)

    @staticmethod
    def _getMsk_txn(txn: _Txn, keyDomainId: bytes, mskId: bytes) -> Msk | None:
        row = txn.execute(
            "SELECT %s FROM bmsc_msks WHERE key_domain_id = ? AND msk_id = ?" % (_MSK_COLUMNS,),
            (keyDomainId, _mskNumber(mskId))).fetchone()
        return _msk(txn, row) if row else None

    def lastMskNumber(self, serviceId: str) -> Deferred[int | None]:
        return self.db.runInteraction("last_msk_number", self._lastMskNumber_txn, serviceId)

    @staticmethod
    def _lastMskNumber_txn(txn: _Txn, serviceId: str) -> int | None:
        row = txn.execute("SELECT MAX(msk_id) FROM bmsc_msks WHERE service_id = ?",
                          (serviceId,)).fetchone()
        return int(row[0]) if row and row[0] is not None else None

    def nextCounter(self, mukId: str) -> Deferred[int]:
        return self.db.runInteraction("next_mikey_counter", self._nextCounter_txn, mukId)

    @staticmethod
    def _nextCounter_txn(txn: _Txn, mukId: str) -> int:
        row = txn.execute(
            "INSERT INTO bmsc_mikey_counters (muk_id, counter) VALUES (?, 1) "
            "ON CONFLICT (muk_id) DO UPDATE SET counter = bmsc_mikey_counters.counter + 1 "
            "RETURNING counter", (mukId,)).fetchone()
        assert row is not None  # RETURNING of an upsert: one row
        return int(row[0])

    def reserveCounters(self, counts: Mapping[str, int]) -> Deferred[dict[str, int]]:
        try:
            _checkCounts(counts)
        except Exception as e:
            return fail(e)
        if not counts:
            return succeed({})
        return self.db.runInteraction("reserve_mikey_counters", self._reserveCounters_txn,
                                      list(counts.items()))

    @staticmethod
    def _reserveCounters_txn(txn: _Txn, items: list[tuple[str, int]]) -> dict[str, int]:
        # one multi-row upsert per chunk (bounded by the engines' limits on
        # bound parameters), all in this one transaction
        out: dict[str, int] = {}
        for start in range(0, len(items), _COUNTER_CHUNK):
            chunk = items[start:start + _COUNTER_CHUNK]
            rows = txn.execute(
                "INSERT INTO bmsc_mikey_counters (muk_id, counter) VALUES %s "
                "ON CONFLICT (muk_id) DO UPDATE "
                "SET counter = bmsc_mikey_counters.counter + excluded.counter "
                "RETURNING muk_id, counter" % (", ".join(["(?, ?)"] * len(chunk)),),
                [v for item in chunk for v in item]).fetchall()
            out.update((mukId, int(counter)) for mukId, counter in rows)
        if len(out) != len(items):
            raise RuntimeError("counter reservation returned %d of %d MUKs"
                               % (len(out), len(items)))
        return out

    def prune(self, now: float) -> Deferred[int]:
        return self.db.runInteraction("prune_bmsc", self._prune_txn, now)

    @staticmethod
    def _prune_txn(txn: _Txn, now: float) -> int:
        n = txn.execute("DELETE FROM bmsc_authorizations WHERE expires <= ?", (now,)).rowcount
        n += txn.execute("DELETE FROM bmsc_registrations WHERE expires <= ?", (now,)).rowcount
        n += txn.execute("DELETE FROM bmsc_msks WHERE expires <= ?",
                         (now - MSK_RETENTION,)).rowcount
        return n
