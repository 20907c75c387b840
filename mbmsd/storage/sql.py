"""
SQL storage over C{twisted.enterprise.adbapi}: each query written once.

Queries use C{?} placeholders and the portable subset shared by SQLite (3.35+)
and PostgreSQL (C{INSERT ... ON CONFLICT}, C{RETURNING}); an L{Engine}
absorbs what still differs (placeholder style, BLOB vs BYTEA). Functions that
run in the database thread end in C{_txn}; every transaction has a name
(C{desc}) that shows in logs. The schema is the numbered files in
C{schema/}, applied in order at start-up and recorded in C{schema_version}.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable, Iterable, Sequence
from importlib import resources
from typing import Any, Concatenate, Generator, ParamSpec, TypeVar, cast, overload

from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from zope.interface import implementer

from mbmsd.interfaces import IBootstrapStore, IStorage, ISubscriberStore
from mbmsd.logs import Logger
from mbmsd.storage.bmsc import SqlBmscStore, msk_context
from mbmsd.storage.challenges import issue_challenge_txn, put_challenge_txn, take_challenge_txn
from mbmsd.storage.leases import SqlLeaseStore
from mbmsd.storage.provisioning import SqlProvisioningStore
from mbmsd.storage.records import BootstrapSession, Challenge, Subscriber, SubscriberSummary
from mbmsd.storage.sealing import Sealer, SealError
from mbmsd.storage.sipreg import SqlSipRegistrationStore

log = Logger(namespace="mbmsd.storage")

SQN_MODULUS = 1 << 48

_T = TypeVar("_T")
_P = ParamSpec("_P")
# a database row (PEP 249): column values in SELECT order
Row = tuple[Any, ...]


from mbmsd.errors import StartupError  # noqa: E402


class SchemaError(Exception):
    """
    The database's schema cannot be used by this version of mbmsd.
    """


class Engine:
    """
    What differs between database dialects; the base is SQLite's.
    """

    name = "sqlite"
    placeholder = "?"
    types: dict[str, str] = {}
    # group commit (see L{_GroupCommit}): for one connection whose every
    # commit waits for the disk; a PostgreSQL pool runs transactions side by
    # side and the server groups their commits itself
    group_commit = True

    def sql(self, query: str) -> str:
        if self.placeholder != "?":
            query = query.replace("?", self.placeholder)
        return query

    def beginSchemaChange(self, cursor: Any) -> None:
        """
        Open the transaction a migration runs in, so that a failed or
        interrupted one leaves nothing behind: Python's sqlite3 runs DDL
        outside any transaction unless one is open (a PostgreSQL driver opens
        one on the first statement: a PostgreSQL engine overrides this).
        """
        if not cursor.connection.in_transaction:
            cursor.execute("BEGIN IMMEDIATE")

    def ddl(self, statement: str) -> str:
        for ours, theirs in self.types.items():
            statement = re.sub(r"\b%s\b" % ours, theirs, statement)
        return statement

    def isConnectionError(self, failure: Failure) -> bool:
        """
        True when the interaction failed because the connection to the
        database was lost (its transaction was rolled back, so the whole
        interaction may run again).
        """
        return False


def schema_files() -> list[tuple[int, str, str]]:
    """
    @return: [(version, name, text)] for every schema file, in order.
    """
    out: list[tuple[int, str, str]] = []
    folder = resources.files("mbmsd.storage").joinpath("schema")
    for entry in folder.iterdir():
        m = re.fullmatch(r"(\d+)_(\w+)\.sql", entry.name)
        if m:
            out.append((int(m.group(1)), entry.name, entry.read_text("utf-8")))
    out.sort()
    return out


def split_statements(text: str) -> list[str]:
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
    return [s.strip() for s in body.split(";") if s.strip()]


class Database:
    """
    An adbapi pool with named transactions. An interaction that fails because
    the connection was lost runs again on a new connection, with backoff: its
    transaction was rolled back, so nothing is applied twice.
    """

    retryDelays = (0.1, 0.5, 1.0, 2.0, 5.0)

    def __init__(
        self, engine: Engine, pool: adbapi.ConnectionPool, sealer: Sealer,
        clock: IReactorTime | None = None,
    ) -> None:
        self.engine = engine
        self.pool = pool
        self.sealer = sealer
        self.clock = clock
        self.group = _GroupCommit(pool) if engine.group_commit else None

    def runInteraction(
        self, desc: str, fn: Callable[Concatenate[_Txn, _P], _T], *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> Deferred[_T]:
        def wrapped(cursor: Any) -> _T:
            start = time.monotonic()
            try:
                return fn(_Txn(self.engine, cursor, self.sealer), *args, **kwargs)
            finally:
                elapsed = time.monotonic() - start
                if elapsed > 0.5:
                    log.warn("slow transaction {desc} took {s:.3f}s", desc=desc, s=elapsed)

        return self._run(desc, wrapped, 0)

    def _run(self, desc: str, wrapped: Callable[[Any], _T], attempt: int) -> Deferred[_T]:
        d: Deferred[_T]
        if self.group is not None:
            d = self.group.run(wrapped)
        else:
            d = self.pool.runInteraction(wrapped)

        def retry(failure: Failure) -> Any:  # the failure, or the Deferred of a retry
            if (self.clock is None or attempt >= len(self.retryDelays)
                    or not self.engine.isConnectionError(failure)):
                return failure
            delay = self.retryDelays[attempt]
            log.warn("{desc}: database connection lost ({e}); retrying in {delay}s",
                     desc=desc, e=failure.getErrorMessage(), delay=delay)
            # deferLater's Deferred of the retry's Deferred fires with its result
            return cast("Deferred[_T]", deferLater(self.clock, delay, self._run, desc, wrapped,
                                                   attempt + 1))

        return d.addErrback(retry)

    def close(self) -> None:
        self.pool.close()


class _GroupCommit:
    """
    Group commit over a pool of one connection: the interactions that arrive
    while a transaction is running run together in the next one, each under
    its own savepoint, and share its commit, so a busy node pays one fsync for
    many. An interaction that raises is rolled back to its savepoint alone.
    Each Deferred fires only after the commit that made its interaction
    durable, and a failed commit fails every interaction of its transaction:
    nothing is acknowledged before it is on disk. Interactions run in the
    order they came, as on the one connection before. Alone, an interaction
    runs as it always did: its own transaction, no savepoint.
    """

    maxBatch = 64

    def __init__(self, pool: adbapi.ConnectionPool) -> None:
        self.pool = pool
        self.waiting: list[tuple[Callable[[Any], Any], Deferred[Any]]] = []
        self.busy = False
        self.transactions = 0  # committed or not: for tests and curiosity

    def run(self, wrapped: Callable[[Any], _T]) -> Deferred[_T]:
        d: Deferred[_T] = Deferred()
        self.waiting.append((wrapped, d))
        if not self.busy:
            self._next()
        return d

    def _next(self) -> None:
        if not self.waiting:
            self.busy = False
            return
        self.busy = True
        batch, self.waiting = self.waiting[:self.maxBatch], self.waiting[self.maxBatch:]
        self.transactions += 1
        d: Deferred[Any]
        if len(batch) == 1:
            d = self.pool.runInteraction(batch[0][0])
            d.addCallback(lambda result: [(True, result)])
        else:
            d = self.pool.runInteraction(self._together, [w for w, _ in batch])
        d.addBoth(self._done, [waiting for _, waiting in batch])

    @staticmethod
    def _together(
        cursor: Any, interactions: Iterable[Callable[[Any], Any]],
    ) -> list[tuple[bool, Any]]:
        # in the database thread; adbapi commits after, or rolls back on raise
        cursor.execute("BEGIN")  # savepoints nest in it; RELEASE would commit otherwise
        outcomes: list[tuple[bool, Any]] = []
        for wrapped in interactions:
            cursor.execute("SAVEPOINT interaction")
            try:
                result = wrapped(cursor)
            except Exception:
                outcomes.append((False, Failure()))
                cursor.execute("ROLLBACK TO SAVEPOINT interaction")
            else:
                outcomes.append((True, result))
            cursor.execute("RELEASE SAVEPOINT interaction")
        return outcomes

    def _done(
        self, outcomes: list[tuple[bool, Any]] | Failure, deferreds: list[Deferred[Any]],
    ) -> None:
        if isinstance(outcomes, Failure):
            outcomes = [(False, outcomes)] * len(deferreds)
        try:
            for (ok, value), d in zip(outcomes, deferreds):
                if ok:
                    d.callback(value)
                else:
                    d.errback(value)
        finally:
            self._next()


class _Txn:
    def __init__(self, engine: Engine, cursor: Any, sealer: Sealer) -> None:
        self.engine = engine
        self.cursor = cursor
        self.sealer = sealer

    def seal(self, value: bytes, context: str) -> bytes:
        """A key as stored: sealed under the node key, bound to C{context}."""
        return self.sealer.seal(value, context)

    def unseal(self, value: bytes, context: str) -> bytes:
        return self.sealer.unseal(value, context)

    def execute(self, query: str, args: Iterable[object] = ()) -> _Txn:
        self.cursor.execute(self.engine.sql(query), tuple(args))
        return self

    def fetchone(self) -> Row | None:
        row: Row | None = self.cursor.fetchone()
        return row

    def fetchall(self) -> list[Row]:
        rows: list[Row] = self.cursor.fetchall()
        return rows

    @property
    def rowcount(self) -> int:
        count: int = self.cursor.rowcount
        return count


def migrate_txn(
    txn: _Txn, files: Sequence[tuple[int, str, str]],
) -> tuple[list[int], list[int]]:
    """
    Apply every schema file not yet recorded in schema_version, in order.

    @return: (versions applied before, versions applied after), as sorted lists.
    """
    txn.engine.beginSchemaChange(txn.cursor)
    txn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    applied = sorted(row[0] for row in txn.execute("SELECT version FROM schema_version").fetchall())
    known = [version for version, _, _ in files]
    newer = [v for v in applied if v not in known]
    if newer:
        raise SchemaError(
            "database has schema version(s) %s that this mbmsd does not know: "
            "upgrade mbmsd or use another database" % (", ".join(map(str, newer)),)
        )
    for version, name, text in files:
        if version in applied:
            continue
        for statement in split_statements(text):
            txn.cursor.execute(txn.engine.ddl(statement))
        txn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
    return applied, sorted(set(applied) | set(known))


@overload
def _b(value: bytes) -> bytes: ...


@overload
def _b(value: None) -> None: ...


def _b(value: bytes | None) -> bytes | None:
    return bytes(value) if value is not None else None


KEY_CHECK = b"mbmsd node key check"


# Where keys live: table, row key, sealed columns (context "table.column:key").
SEALED_COLUMNS = (
    ("subscribers", "impi", ("k", "opc")),
    ("ub_challenges", "nonce", ("xres", "ck", "ik")),
    ("sip_challenges", "nonce", ("xres", "ck", "ik")),
    ("bootstrap_sessions", "btid", ("ks",)),
)


def seal_clear_rows_txn(txn: _Txn) -> None:
    """
    Seal the keys of a database written before schema 4, where they were
    stored in clear.
    """
    for table, key, columns in SEALED_COLUMNS:
        rows = txn.execute("SELECT %s, %s FROM %s" % (key, ", ".join(columns), table)).fetchall()
        for row in rows:
            values = [txn.seal(_b(v), "%s.%s:%s" % (table, col, row[0]))
                      for col, v in zip(columns, row[1:])]
            txn.execute("UPDATE %s SET %s WHERE %s = ?" % (
                table, ", ".join("%s = ?" % (col,) for col in columns), key),
                values + [row[0]])
    for keyDomainId, mskNumber, key in txn.execute(
            "SELECT key_domain_id, msk_id, msk FROM bmsc_msks").fetchall():
        context = msk_context(_b(keyDomainId), int(mskNumber).to_bytes(4, "big"))
        txn.execute("UPDATE bmsc_msks SET msk = ? WHERE key_domain_id = ? AND msk_id = ?",
                    (txn.seal(_b(key), context), keyDomainId, mskNumber))


def key_opens(sealer: Sealer, sealed: bytes) -> bool:
    """Does C{sealer}'s node key open the sealed check value C{sealed}?"""
    try:
        return sealer.unseal(sealed, "node_key_check") == KEY_CHECK
    except SealError:
        return False


def check_node_key_txn(txn: _Txn) -> None:
    """
    The first node to open the database seals a known value; every later
    start proves that its key file opens this database's keys.
    """
    # nodes starting together on one database: one at a time (the lock
    # migrations take), so exactly one seals and the others check
    txn.engine.beginSchemaChange(txn.cursor)
    row = txn.execute("SELECT sealed FROM node_key_check WHERE id = 1").fetchone()
    if row is None:
        # the first start with sealing: rows from before schema 4 are sealed
        # in place, in the same transaction (nothing stored is lost)
        seal_clear_rows_txn(txn)
        txn.execute("INSERT INTO node_key_check (id, sealed) VALUES (1, ?)",
                    (txn.seal(KEY_CHECK, "node_key_check"),))
        return
    if not key_opens(txn.sealer, row[0]):
        raise SchemaError("storage.key_file: this key does not open the keys stored in the "
                          "database (another node's key file, or a new one?)")


# ---------------------------------------------------------------- stores


# SQN never goes back (TS 33.102 C.1): keep the stored one when ahead.
_PROVISION = (
    "INSERT INTO subscribers (impi, impus, k, opc, amf, sqn, gba_type) "
    "VALUES (?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (impi) DO UPDATE SET impus = excluded.impus, k = excluded.k, "
    "opc = excluded.opc, amf = excluded.amf, gba_type = excluded.gba_type, "
    "sqn = CASE WHEN subscribers.sqn > excluded.sqn "
    "THEN subscribers.sqn ELSE excluded.sqn END")


@implementer(ISubscriberStore)
class SqlSubscriberStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def provision(self, subscriber: Subscriber) -> Deferred[None]:
        return self.db.runInteraction("provision_subscriber", self._provision_txn, subscriber)

    @classmethod
    def _provision_txn(cls, txn: _Txn, s: Subscriber) -> None:
        txn.execute(_PROVISION, cls._provision_args(txn, s))

    @staticmethod
    def _provision_args(txn: _Txn, s: Subscriber) -> Row:
        return (s.impi, "\n".join(s.impus), txn.seal(s.k, "subscribers.k:" + s.impi),
                txn.seal(s.opc, "subscribers.opc:" + s.impi), s.amf, s.sqn, s.gbaType)

    def create(self, subscriber: Subscriber) -> Deferred[bool]:
        return self.db.runInteraction("create_subscriber", self._create_txn, subscriber)

    @classmethod
    def _create_txn(cls, txn: _Txn, s: Subscriber) -> bool:
        if txn.execute("SELECT 1 FROM subscribers WHERE impi = ?", (s.impi,)).fetchone():
            return False
        cls._provision_txn(txn, s)
        return True

    def update(self, subscriber: Subscriber) -> Deferred[bool]:
        return self.db.runInteraction("update_subscriber", self._update_txn, subscriber)

    @classmethod
    def _update_txn(cls, txn: _Txn, s: Subscriber) -> bool:
        if not txn.execute("SELECT 1 FROM subscribers WHERE impi = ?", (s.impi,)).fetchone():
            return False
        cls._provision_txn(txn, s)
        return True

    def remove(self, impi: str) -> Deferred[bool]:
        return self.db.runInteraction("remove_subscriber", self._remove_txn, impi)

    @staticmethod
    def _remove_txn(txn: _Txn, impi: str) -> bool:
        return txn.execute("DELETE FROM subscribers WHERE impi = ?", (impi,)).rowcount > 0

    def page(
        self, after: str | None, limit: int, withKeys: bool = False,
    ) -> Deferred[list[SubscriberSummary] | list[Subscriber]]:
        return self.db.runInteraction("page_subscribers", self._page_txn, after, limit,
                                      withKeys)

    @classmethod
    def _page_txn(
        cls, txn: _Txn, after: str | None, limit: int, withKeys: bool,
    ) -> list[SubscriberSummary] | list[Subscriber]:
        rows = txn.execute(
            "SELECT impi, impus, k, opc, amf, sqn, gba_type FROM subscribers WHERE impi > ? "
            "ORDER BY impi LIMIT ?" if withKeys else
            "SELECT impi, impus, NULL, NULL, amf, sqn, gba_type FROM subscribers "
            "WHERE impi > ? ORDER BY impi LIMIT ?", (after or "", int(limit))).fetchall()
        if withKeys:
            return [cls._subscriber(txn, r) for r in rows]
        return [SubscriberSummary(impi=r[0], impus=tuple(r[1].split("\n")) if r[1] else (),
                                  amf=_b(r[4]), sqn=int(r[5]), gbaType=r[6]) for r in rows]

    def provisionBatch(
        self, subscribers: Iterable[Subscriber],
    ) -> Deferred[tuple[int, int, int]]:
        return self.db.runInteraction("provision_batch", self._provisionBatch_txn,
                                      list(subscribers))

    @classmethod
    def _provisionBatch_txn(cls, txn: _Txn, batch: list[Subscriber]) -> tuple[int, int, int]:
        stored: dict[str, Row] = {}
        for i in range(0, len(batch), 500):
            chunk = [s.impi for s in batch[i:i + 500]]
            for found in txn.execute(
                    "SELECT impi, impus, k, opc, amf, sqn, gba_type FROM subscribers "
                    "WHERE impi IN (%s)" % (", ".join("?" * len(chunk)),), chunk).fetchall():
                stored[found[0]] = found
        created = updated = 0
        writes: list[Row] = []
        for s in batch:
            row = stored.get(s.impi)
            if row is not None:
                old = cls._subscriber(txn, row)
                # unchanged: the same data, and a stored SQN not behind
                if old.sqn >= s.sqn and old == dataclasses.replace(s, sqn=old.sqn):
                    continue
                updated += 1
            else:
                created += 1
            writes.append(cls._provision_args(txn, s))
        if writes:
            # one statement for the batch (psycopg pipelines it)
            txn.cursor.executemany(txn.engine.sql(_PROVISION), writes)
        return created, updated, len(batch) - created - updated

    def get(self, impi: str) -> Deferred[Subscriber | None]:
        return self.db.runInteraction("get_subscriber", self._get_txn, impi)

    @staticmethod
    def _get_txn(txn: _Txn, impi: str) -> Subscriber | None:
        row = txn.execute(
            "SELECT impi, impus, k, opc, amf, sqn, gba_type FROM subscribers WHERE impi = ?",
            (impi,),
        ).fetchone()
        if row is None:
            return None
        return SqlSubscriberStore._subscriber(txn, row)

    @staticmethod
    def _subscriber(txn: _Txn, row: Row) -> Subscriber:
        return Subscriber(
            impi=row[0],
            impus=tuple(row[1].split("\n")) if row[1] else (),
            k=txn.unseal(row[2], "subscribers.k:" + row[0]),
            opc=txn.unseal(row[3], "subscribers.opc:" + row[0]),
            amf=_b(row[4]),
            sqn=int(row[5]),
            gbaType=row[6],
        )

    def nextSqn(self, impi: str) -> Deferred[int | None]:
        return self.db.runInteraction("next_sqn", self._nextSqn_txn, impi)

    @staticmethod
    def _nextSqn_txn(txn: _Txn, impi: str) -> int | None:
        row = txn.execute(
            # SQN wraps at 2^48 (TS 33.102 C.1.1)
            "UPDATE subscribers SET sqn = CASE WHEN sqn >= ? THEN 0 ELSE sqn + 1 END "
            "WHERE impi = ? RETURNING sqn",
            (SQN_MODULUS - 1, impi),
        ).fetchone()
        return int(row[0]) if row is not None else None

    def resynchronise(self, impi: str, sqnMs: int) -> Deferred[None]:
        return self.db.runInteraction("resync_sqn", self._resync_txn, impi, sqnMs)

    @staticmethod
    def _resync_txn(txn: _Txn, impi: str, sqnMs: int) -> None:
        txn.execute("UPDATE subscribers SET sqn = ? WHERE impi = ?", (sqnMs, impi))


@implementer(IBootstrapStore)
class SqlBootstrapStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def putChallenge(self, challenge: Challenge) -> Deferred[None]:
        return self.db.runInteraction("put_challenge", put_challenge_txn, "ub_challenges",
                                      challenge)

    def issueChallenge(
        self, impi: str, challengeFor: Callable[[Subscriber], Challenge],
    ) -> Deferred[Challenge | None]:
        # one transaction, one commit: the SQN and the challenge it went into
        return self.db.runInteraction("issue_challenge", self._issueChallenge_txn, impi,
                                      challengeFor)

    @staticmethod
    def _issueChallenge_txn(
        txn: _Txn, impi: str, challengeFor: Callable[[Subscriber], Challenge],
    ) -> Challenge | None:
        return issue_challenge_txn(txn, SqlSubscriberStore, "ub_challenges", impi, challengeFor)

    def takeChallenge(
        self, nonce: str,
        sessionFor: Callable[[Challenge], BootstrapSession | None] | None = None,
    ) -> Deferred[Challenge | None]:
        if sessionFor is None:
            return self.db.runInteraction("take_challenge", take_challenge_txn, "ub_challenges",
                                          nonce)
        # one transaction, one commit: the nonce used up and the session it made
        return self.db.runInteraction("redeem_challenge", self._redeem_txn, nonce, sessionFor)

    @classmethod
    def _redeem_txn(
        cls, txn: _Txn, nonce: str, sessionFor: Callable[[Challenge], BootstrapSession | None],
    ) -> Challenge | None:
        challenge = take_challenge_txn(txn, "ub_challenges", nonce)
        if challenge is not None:
            session = sessionFor(challenge)
            if session is not None:
                cls._putSession_txn(txn, session)
        return challenge

    def putSession(self, session: BootstrapSession) -> Deferred[None]:
        return self.db.runInteraction("put_session", self._putSession_txn, session)

    @staticmethod
    def _putSession_txn(txn: _Txn, s: BootstrapSession) -> None:
        txn.execute(
            "INSERT INTO bootstrap_sessions (btid, impi, rand, ks, created, expires, gba_type) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (btid) DO UPDATE SET impi = excluded.impi, rand = excluded.rand, "
            "ks = excluded.ks, created = excluded.created, expires = excluded.expires, "
            "gba_type = excluded.gba_type",
            (s.btid, s.impi, s.rand, txn.seal(s.ks, "bootstrap_sessions.ks:" + s.btid),
             s.created, s.expires, s.gbaType),
        )

    def getSession(self, btid: str) -> Deferred[BootstrapSession | None]:
        return self.db.runInteraction("get_session", self._getSession_txn, btid)

    @staticmethod
    def _getSession_txn(txn: _Txn, btid: str) -> BootstrapSession | None:
        row = txn.execute(
            "SELECT btid, impi, rand, ks, created, expires, gba_type "
            "FROM bootstrap_sessions WHERE btid = ?",
            (btid,),
        ).fetchone()
        if row is None:
            return None
        return BootstrapSession(
            btid=row[0], impi=row[1], rand=_b(row[2]),
            ks=txn.unseal(row[3], "bootstrap_sessions.ks:" + row[0]),
            created=float(row[4]), expires=float(row[5]), gbaType=row[6],
        )

    def prune(self, now: float) -> Deferred[int]:
        return self.db.runInteraction("prune_bootstrap", self._prune_txn, now)

    @staticmethod
    def _prune_txn(txn: _Txn, now: float) -> int:
        removed = txn.execute("DELETE FROM ub_challenges WHERE expires <= ?", (now,)).rowcount
        removed += txn.execute(
            "DELETE FROM bootstrap_sessions WHERE expires <= ?", (now,)
        ).rowcount
        return removed


@implementer(IStorage)
class SqlStorage:
    """
    The typed stores over one L{Database}; C{open} applies the schema.
    """

    def __init__(self, db: Database, description: str) -> None:
        self.db = db
        self.description = description
        self.subscribers = SqlSubscriberStore(db)
        self.bootstrap = SqlBootstrapStore(db)
        self.sipRegistrations = SqlSipRegistrationStore(db, self.subscribers)
        self.bmsc = SqlBmscStore(db)
        self.leases = SqlLeaseStore(db)
        self.provisioning = SqlProvisioningStore(db)

    @inlineCallbacks
    def open(self) -> Generator[Deferred[Any], Any, None]:
        files = schema_files()
        try:
            before, after = yield self.db.runInteraction("migrate", migrate_txn, files)
        except Exception as e:
            # PEP 249: OperationalError is the database's own trouble (a server
            # that does not answer, a file that cannot be opened), the
            # operator's to fix: one line, no traceback
            if type(e).__name__ != "OperationalError":
                raise
            reason = (str(e).strip().splitlines() or [e.__class__.__name__])[0]
            raise StartupError("storage: cannot open %s: %s" % (self.description, reason)) from None
        yield self.db.runInteraction("check_node_key", check_node_key_txn)
        added = [v for v in after if v not in before]
        if added:
            log.info("{db}: schema migrations {added} applied", db=self.description,
                     added=", ".join(map(str, added)))
        else:
            log.info("{db}: schema up to date ({v})", db=self.description,
                     v=", ".join(map(str, after)))

    def close(self) -> Deferred[None]:
        self.db.close()
        return succeed(None)

    def ping(self) -> Deferred[None]:
        # on the pool itself, not Database's retrying path: readiness wants
        # the backend's state now, not after the backoff
        d: Deferred[None] = self.db.pool.runInteraction(_ping_txn)
        return d


def _ping_txn(cursor: Any) -> None:
    cursor.execute("SELECT 1")
    cursor.fetchall()


def make_pool(
    reactor: Any, module: str, *args: Any, openfun: Callable[[Any], None] | None = None,
    **kwargs: Any,
) -> adbapi.ConnectionPool:
    return adbapi.ConnectionPool(
        module, *args, cp_reactor=reactor, cp_openfun=openfun, cp_noisy=False, **kwargs
    )
