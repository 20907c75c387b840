"""
Provisioning in storage (L{IProvisioningStore}): the MBMS User Services, the
subscriptions (IMPU -> MBMS User Service IDs) and the operator's live view of
one subscriber, as the in-memory reference and the SQL implementation (each
query written once for SQLite and PostgreSQL, schema file
008_provisioning.sql). What one node writes, every node sharing the database
reads on its next request: nothing is cached.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from mbmsd.interfaces import IProvisioningStore
from mbmsd.protocols.identity import normalize_impu
from mbmsd.storage.records import (
    Authorization,
    MbmsService,
    MskRegistration,
    SessionSummary,
    SubscriberState,
)

if TYPE_CHECKING:
    from mbmsd.storage.memory import MemoryStorage
    from mbmsd.storage.sipreg import SipBinding
    from mbmsd.storage.sql import Database, Row, _Txn

__all__ = ["MemoryProvisioningStore", "SqlProvisioningStore"]


def _identities(impus: Iterable[str]) -> list[str]:
    # the BM-SC keys its state by the IMPU the SCF normalized
    out: list[str] = []
    for impu in impus:
        for form in (impu, _normalized(normalize_impu, impu)):
            if form is not None and form not in out:
                out.append(form)
    return out


def _normalized(normalize: Callable[[str], str], impu: str) -> str | None:
    try:
        return normalize(impu)
    except ValueError:
        return None


@implementer(IProvisioningStore)
class MemoryProvisioningStore:
    """
    @param storage: the L{mbmsd.storage.memory.MemoryStorage} whose other
        stores L{subscriberState} reads.
    """

    def __init__(self, storage: MemoryStorage | None = None) -> None:
        self._storage = storage
        self._services: dict[str, MbmsService] = {}
        self._subscriptions: dict[str, set[str]] = {}     # IMPU -> set of service IDs

    def addService(self, service: MbmsService) -> Deferred[bool]:
        if service.serviceId in self._services:
            return succeed(False)
        self._services[service.serviceId] = service
        return succeed(True)

    def putService(self, service: MbmsService) -> Deferred[None]:
        self._services[service.serviceId] = service
        return succeed(None)

    def getService(self, serviceId: str) -> Deferred[MbmsService | None]:
        return succeed(self._services.get(serviceId))

    def services(self) -> Deferred[list[MbmsService]]:
        return succeed([self._services[k] for k in sorted(self._services)])

    def removeService(self, serviceId: str) -> Deferred[bool]:
        for ids in self._subscriptions.values():
            ids.discard(serviceId)
        return succeed(self._services.pop(serviceId, None) is not None)

    def setSubscriptions(self, impu: str, serviceIds: Iterable[str]) -> Deferred[None]:
        if serviceIds:
            self._subscriptions[impu] = set(serviceIds)
        else:
            self._subscriptions.pop(impu, None)
        return succeed(None)

    def subscriptions(self, impu: str) -> Deferred[list[str]]:
        return succeed(sorted(self._subscriptions.get(impu, ())))

    def isSubscribed(self, impu: str, serviceId: str) -> Deferred[bool]:
        return succeed(serviceId in self._subscriptions.get(impu, ()))

    def subscriberState(self, impi: str, now: float) -> Deferred[SubscriberState | None]:
        s = self._storage
        assert s is not None  # MemoryStorage gives itself to its provisioning store
        sub = s.subscribers._rows.get(impi)
        if sub is None:
            return succeed(None)
        ids = _identities(sub.impus)
        sessions = sorted((SessionSummary(v.btid, v.created, v.expires, v.gbaType)
                           for v in s.bootstrap._sessions.values()
                           if v.impi == impi and v.expires > now),
                          key=lambda v: (v.created, v.btid))
        bindings: list[SipBinding] = sorted((b for b in s.sipRegistrations._bindings.values()
                           if b.impi == impi and b.expires > now),
                          key=lambda b: (b.registered, b.impu, b.contact))
        auths = sorted((a for a in s.bmsc._auth.values() if a.impu in ids and a.expires > now),
                       key=lambda a: (a.impu, a.serviceId))
        regs = sorted((r for r in s.bmsc._reg.values() if r.impu in ids and r.expires > now),
                      key=lambda r: (r.impu, r.serviceId))
        return succeed(SubscriberState(sessions, bindings, auths, regs))


def _service(row: Row) -> MbmsService:
    return MbmsService(row[0], int(row[1]) if row[1] is not None else None,
                       json.loads(row[2]) if row[2] is not None else None)


def _sdp(service: MbmsService) -> str | None:
    return json.dumps(service.sdp, sort_keys=True) if service.sdp is not None else None


@implementer(IProvisioningStore)
class SqlProvisioningStore:
    def __init__(self, db: "Database") -> None:
        self.db = db

    def addService(self, service: MbmsService) -> Deferred[bool]:
        return self.db.runInteraction("add_service", self._addService_txn, service)

    @staticmethod
    def _addService_txn(txn: _Txn, s: MbmsService) -> bool:
        return txn.execute(
            "INSERT INTO mbms_services (service_id, key_group, sdp) VALUES (?, ?, ?) "
            "ON CONFLICT (service_id) DO NOTHING", (s.serviceId, s.keyGroup, _sdp(s))
        ).rowcount > 0

    def putService(self, service: MbmsService) -> Deferred[None]:
        return self.db.runInteraction("put_service", self._putService_txn, service)

    @staticmethod
    def _putService_txn(txn: _Txn, s: MbmsService) -> None:
        txn.execute(
            "INSERT INTO mbms_services (service_id, key_group, sdp) VALUES (?, ?, ?) "
            "ON CONFLICT (service_id) DO UPDATE SET key_group = excluded.key_group, "
            "sdp = excluded.sdp", (s.serviceId, s.keyGroup, _sdp(s)))

    def getService(self, serviceId: str) -> Deferred[MbmsService | None]:
        return self.db.runInteraction("get_service", self._getService_txn, serviceId)

    @staticmethod
    def _getService_txn(txn: _Txn, serviceId: str) -> MbmsService | None:
        row = txn.execute("SELECT service_id, key_group, sdp FROM mbms_services "
                          "WHERE service_id = ?", (serviceId,)).fetchone()
        return _service(row) if row is not None else None

    def services(self) -> Deferred[list[MbmsService]]:
        return self.db.runInteraction("list_services", self._services_txn)

    @staticmethod
    def _services_txn(txn: _Txn) -> list[MbmsService]:
        rows = txn.execute("SELECT service_id, key_group, sdp FROM mbms_services "
                           "ORDER BY service_id").fetchall()
        return [_service(row) for row in rows]

    def removeService(self, serviceId: str) -> Deferred[bool]:
        return self.db.runInteraction("remove_service", self._removeService_txn, serviceId)

    @staticmethod
    def _removeService_txn(txn: _Txn, serviceId: str) -> bool:
        txn.execute("DELETE FROM subscriptions WHERE service_id = ?", (serviceId,))
        return txn.execute("DELETE FROM mbms_services WHERE service_id = ?",
                           (serviceId,)).rowcount > 0

    def setSubscriptions(self, impu: str, serviceIds: Iterable[str]) -> Deferred[None]:
        return self.db.runInteraction("set_subscriptions", self._setSubscriptions_txn, impu,
                                      sorted(set(serviceIds)))

    @staticmethod
    def _setSubscriptions_txn(txn: _Txn, impu: str, serviceIds: list[str]) -> None:
        txn.execute("DELETE FROM subscriptions WHERE impu = ?", (impu,))
        for serviceId in serviceIds:
            txn.execute("INSERT INTO subscriptions (impu, service_id) VALUES (?, ?)",
                        (impu, serviceId))

    def subscriptions(self, impu: str) -> Deferred[list[str]]:
        return self.db.runInteraction("get_subscriptions", self._subscriptions_txn, impu)

    @staticmethod
    def _subscriptions_txn(txn: _Txn, impu: str) -> list[str]:
        return [row[0] for row in txn.execute(
            "SELECT service_id FROM subscriptions WHERE impu = ? ORDER BY service_id",
            (impu,)).fetchall()]

    def isSubscribed(self, impu: str, serviceId: str) -> Deferred[bool]:
        return self.db.runInteraction("is_subscribed", self._isSubscribed_txn, impu, serviceId)

    @staticmethod
    def _isSubscribed_txn(txn: _Txn, impu: str, serviceId: str) -> bool:
        return txn.execute("SELECT 1 FROM subscriptions WHERE impu = ? AND service_id = ?",
                           (impu, serviceId)).fetchone() is not None

    def subscriberState(self, impi: str, now: float) -> Deferred[SubscriberState | None]:
        return self.db.runInteraction("subscriber_state", self._subscriberState_txn, impi, now)

    @staticmethod
    def _subscriberState_txn(txn: _Txn, impi: str, now: float) -> SubscriberState | None:
        from mbmsd.storage.sipreg import _BINDING_COLUMNS, _binding

        row = txn.execute("SELECT impus FROM subscribers WHERE impi = ?", (impi,)).fetchone()
        if row is None:
            return None
        ids = _identities(row[0].split("\n") if row[0] else ())
        sessions = [SessionSummary(r[0], float(r[1]), float(r[2]), r[3]) for r in txn.execute(
            "SELECT btid, created, expires, gba_type FROM bootstrap_sessions "
            "WHERE impi = ? AND expires > ? ORDER BY created, btid", (impi, now)).fetchall()]
        bindings = [_binding(r) for r in txn.execute(
            "SELECT " + _BINDING_COLUMNS + " FROM sip_bindings WHERE impi = ? AND expires > ? "
            "ORDER BY registered, impu, contact", (impi, now)).fetchall()]
        auths: list[Authorization] = []
        regs: list[MskRegistration] = []
        for impu in ids:
            auths += [Authorization(r[0], r[1], r[2], float(r[3])) for r in txn.execute(
                "SELECT impu, service_id, ue_address, expires FROM bmsc_authorizations "
                "WHERE impu = ? AND expires > ? ORDER BY service_id", (impu, now)).fetchall()]
            regs += [MskRegistration(r[0], r[1], r[2], r[3], float(r[4])) for r in txn.execute(
                "SELECT impu, service_id, btid, ue_address, expires FROM bmsc_registrations "
                "WHERE impu = ? AND expires > ? ORDER BY service_id", (impu, now)).fetchall()]
        auths.sort(key=lambda a: (a.impu, a.serviceId))
        regs.sort(key=lambda r: (r.impu, r.serviceId))
        return SubscriberState(sessions, bindings, auths, regs)
