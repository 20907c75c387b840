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

from twisted.internet.defer import succeed
from zope.interface import implementer

from mbmsd.interfaces import ILeaseStore


@implementer(ILeaseStore)
class MemoryLeaseStore:
    def __init__(self):
        self._rows = {}  # name -> (holder, expires)
        self._marks = {}  # name -> value

    def acquire(self, name, holder, now, duration):
        row = self._rows.get(name)
        if row is not None and row[0] != holder and row[1] > now:
            return succeed(False)
        self._rows[name] = (holder, now + duration)
        return succeed(True)

    def release(self, name, holder):
        row = self._rows.get(name)
        if row is None or row[0] != holder:
            return succeed(False)
        del self._rows[name]
        return succeed(True)

    def holder(self, name, now):
        row = self._rows.get(name)
        return succeed(row[0] if row is not None and row[1] > now else None)

    def holders(self, prefix, now):
        return succeed(sorted({h for name, (h, expires) in self._rows.items()
                               if name.startswith(prefix) and expires > now}))

    def mark(self, name, value):
        self._marks[name] = value
        return succeed(None)

    def markIfAbsent(self, name, value):
        self._marks.setdefault(name, value)
        return succeed(None)

    def marked(self, name):
        return succeed(self._marks.get(name))


@implementer(ILeaseStore)
class SqlLeaseStore:
    def __init__(self, db):
        self.db = db

    def acquire(self, name, holder, now, duration):
        return self.db.runInteraction("acquire_lease", self._acquire_txn, name, holder, now,
                                      duration)

    @staticmethod
    def _acquire_txn(txn, name, holder, now, duration):
        row = txn.execute(
            "INSERT INTO leases (name, holder, expires) VALUES (?, ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, "
            "expires = excluded.expires "
            "WHERE leases.holder = excluded.holder OR leases.expires <= ? "
            "RETURNING holder",
            (name, holder, now + duration, now)).fetchone()
        return row is not None

    def release(self, name, holder):
        return self.db.runInteraction("release_lease", self._release_txn, name, holder)

    @staticmethod
    def _release_txn(txn, name, holder):
        return txn.execute("DELETE FROM leases WHERE name = ? AND holder = ?",
                           (name, holder)).rowcount > 0

    def holder(self, name, now):
        return self.db.runInteraction("lease_holder", self._holder_txn, name, now)

    @staticmethod
    def _holder_txn(txn, name, now):
        row = txn.execute("SELECT holder FROM leases WHERE name = ? AND expires > ?",
                          (name, now)).fetchone()
        return row[0] if row is not None else None

    def holders(self, prefix, now):
        return self.db.runInteraction("lease_holders", self._holders_txn, prefix, now)

    @staticmethod
    def _holders_txn(txn, prefix, now):
        rows = txn.execute("SELECT DISTINCT holder FROM leases "
                           "WHERE substr(name, 1, length(?)) = ? AND expires > ?",
                           (prefix, prefix, now)).fetchall()
        return sorted(row[0] for row in rows)

    def mark(self, name, value):
        return self.db.runInteraction("mark_lease", self._mark_txn, name, value)

    @staticmethod
    def _mark_txn(txn, name, value):
        txn.execute("INSERT INTO lease_marks (name, value) VALUES (?, ?) "
                    "ON CONFLICT (name) DO UPDATE SET value = excluded.value", (name, value))

    def markIfAbsent(self, name, value):
        return self.db.runInteraction("mark_lease_if_absent", self._markIfAbsent_txn, name,
                                      value)

    @staticmethod
    def _markIfAbsent_txn(txn, name, value):
        txn.execute("INSERT INTO lease_marks (name, value) VALUES (?, ?) "
                    "ON CONFLICT (name) DO NOTHING", (name, value))

    def marked(self, name):
        return self.db.runInteraction("lease_marked", self._marked_txn, name)

    @staticmethod
    def _marked_txn(txn, name):
        row = txn.execute("SELECT value FROM lease_marks WHERE name = ?", (name,)).fetchone()
        return row[0] if row is not None else None
