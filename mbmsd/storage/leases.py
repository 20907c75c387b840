"""
Leases on singleton duties (L{ILeaseStore}): the in-memory reference and the
SQL implementation, one query set for SQLite and PostgreSQL (schema 5; the
marks kept per lease, schema 9).

Taking or renewing a lease is one upsert whose update only applies when the
row is ours or has expired; C{RETURNING} tells whether it applied. Both
dialects evaluate the C{WHERE} of C{ON CONFLICT DO UPDATE} on the row as
locked by the statement, so two nodes racing for a free lease cannot both
win.
"""

from typing import TYPE_CHECKING

from twisted.internet.defer import succeed
from zope.interface import implementer

from mbmsd.interfaces import ILeaseStore

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

    from mbmsd.storage.sql import Database, _Txn


@implementer(ILeaseStore)
class MemoryLeaseStore:
    def __init__(self) -> None:
        self._rows: dict[str, tuple[str, float]] = {}  # name -> (holder, expires)
        self._marks: dict[str, str] = {}  # name -> value

    def acquire(self, name: str, holder: str, now: float, duration: float) -> "Deferred[bool]":
        row = self._rows.get(name)
        if row is not None and row[0] != holder and row[1] > now:
            return succeed(False)
        self._rows[name] = (holder, now + duration)
        return succeed(True)

    def release(self, name: str, holder: str) -> "Deferred[bool]":
        row = self._rows.get(name)
        if row is None or row[0] != holder:
            return succeed(False)
        del self._rows[name]
        return succeed(True)

    def holder(self, name: str, now: float) -> "Deferred[str | None]":
        row = self._rows.get(name)
        return succeed(row[0] if row is not None and row[1] > now else None)

    def holders(self, prefix: str, now: float) -> "Deferred[list[str]]":
        return succeed(sorted({h for name, (h, expires) in self._rows.items()
                               if name.startswith(prefix) and expires > now}))

    def mark(self, name: str, value: str) -> "Deferred[None]":
        self._marks[name] = value
        return succeed(None)

    def markIfAbsent(self, name: str, value: str) -> "Deferred[None]":
        self._marks.setdefault(name, value)
        return succeed(None)

    def marked(self, name: str) -> "Deferred[str | None]":
        return succeed(self._marks.get(name))


@implementer(ILeaseStore)
class SqlLeaseStore:
    def __init__(self, db: "Database") -> None:
        self.db = db

    def acquire(self, name: str, holder: str, now: float, duration: float) -> "Deferred[bool]":
        return self.db.runInteraction("acquire_lease", self._acquire_txn, name, holder, now,
                                      duration)

    @staticmethod
    def _acquire_txn(txn: "_Txn", name: str, holder: str, now: float, duration: float) -> bool:
        row = txn.execute(
            "INSERT INTO leases (name, holder, expires) VALUES (?, ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, "
            "expires = excluded.expires "
            "WHERE leases.holder = excluded.holder OR leases.expires <= ? "
            "RETURNING holder",
            (name, holder, now + duration, now)).fetchone()
        return row is not None

    def release(self, name: str, holder: str) -> "Deferred[bool]":
        return self.db.runInteraction("release_lease", self._release_txn, name, holder)

    @staticmethod
    def _release_txn(txn: "_Txn", name: str, holder: str) -> bool:
        return txn.execute("DELETE FROM leases WHERE name = ? AND holder = ?",
                           (name, holder)).rowcount > 0

    def holder(self, name: str, now: float) -> "Deferred[str | None]":
        return self.db.runInteraction("lease_holder", self._holder_txn, name, now)

    @staticmethod
    def _holder_txn(txn: "_Txn", name: str, now: float) -> str | None:
        row = txn.execute("SELECT holder FROM leases WHERE name = ? AND expires > ?",
                          (name, now)).fetchone()
        return row[0] if row is not None else None

    def holders(self, prefix: str, now: float) -> "Deferred[list[str]]":
        return self.db.runInteraction("lease_holders", self._holders_txn, prefix, now)

    @staticmethod
    def _holders_txn(txn: "_Txn", prefix: str, now: float) -> list[str]:
        rows = txn.execute("SELECT DISTINCT holder FROM leases "
                           "WHERE substr(name, 1, length(?)) = ? AND expires > ?",
                           (prefix, prefix, now)).fetchall()
        return sorted(row[0] for row in rows)

    def mark(self, name: str, value: str) -> "Deferred[None]":
        return self.db.runInteraction("mark_lease", self._mark_txn, name, value)

    @staticmethod
    def _mark_txn(txn: "_Txn", name: str, value: str) -> None:
        txn.execute("INSERT INTO lease_marks (name, value) VALUES (?, ?) "
                    "ON CONFLICT (name) DO UPDATE SET value = excluded.value", (name, value))

    def markIfAbsent(self, name: str, value: str) -> "Deferred[None]":
        return self.db.runInteraction("mark_lease_if_absent", self._markIfAbsent_txn, name,
                                      value)

    @staticmethod
    def _markIfAbsent_txn(txn: "_Txn", name: str, value: str) -> None:
        txn.execute("INSERT INTO lease_marks (name, value) VALUES (?, ?) "
                    "ON CONFLICT (name) DO NOTHING", (name, value))

    def marked(self, name: str) -> "Deferred[str | None]":
        return self.db.runInteraction("lease_marked", self._marked_txn, name)

    @staticmethod
    def _marked_txn(txn: "_Txn", name: str) -> str | None:
        row = txn.execute("SELECT value FROM lease_marks WHERE name = ?", (name,)).fetchone()
        return row[0] if row is not None else None
