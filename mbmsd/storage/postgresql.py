"""
PostgreSQL, for nodes that share state (docs/design.md 8): the same queries and
schema files as SQLite through the engine, psycopg (3) through adbapi.

Connection loss is retried with backoff by L{Database}; a migration takes a
transaction-scoped advisory lock, so nodes starting together migrate once.
"""

from typing import Any

from twisted.python.failure import Failure
from zope.interface import implementer

from mbmsd import config as c
from mbmsd.errors import StartupError
from mbmsd.interfaces import IStorageFactory
from mbmsd.storage.sealing import Sealer, load_key
from mbmsd.storage.sql import Database, Engine, SqlStorage, make_pool

# pg_advisory_xact_lock key for schema changes ("mbmsd" in ASCII)
MIGRATION_LOCK = 0x6D626D7364


class PostgresEngine(Engine):
    name = "postgresql"
    placeholder = "%s"
    types: dict[str, str] = {"BLOB": "BYTEA"}
    group_commit = False  # a pool of connections; the server groups commits

    def sql(self, query: str) -> str:
        # psycopg's paramstyle is format: a literal % must be doubled first
        return query.replace("%", "%%").replace("?", "%s")

    def beginSchemaChange(self, cursor: Any) -> None:
        # DDL is transactional in PostgreSQL; serialise migrating nodes
        cursor.execute("SELECT pg_advisory_xact_lock(%d)" % (MIGRATION_LOCK,))

    def isConnectionError(self, failure: Failure) -> bool:
        import psycopg
        from twisted.enterprise.adbapi import ConnectionLost

        if failure.check(ConnectionLost):
            return True
        if failure.check(psycopg.OperationalError, psycopg.InterfaceError) is None:
            return False
        return not isinstance(failure.value, psycopg.errors.QueryCanceled)


def _open_connection(conn: Any) -> None:
    conn.autocommit = False


@implementer(IStorageFactory)
class PostgresStorageFactory:
    name = "postgresql"
    configSchema = c.Section(
        fields={
            "dsn": c.Field(c.string(r"postgres(ql)?://.+", "a postgresql:// URL"), c.REQUIRED,
                           "libpq connection URL, e.g. postgresql://mbmsd@db1/mbmsd"),
            "pool_min": c.Field(c.integer(1, 100), 2, "connections kept open"),
            "pool_max": c.Field(c.integer(1, 100), 8, "connections at most"),
            "connect_timeout": c.Field(c.integer(1, 60), 5, "seconds to connect"),
            "key_file": c.Field(c.string(r".+", "a file path"), "var/mbmsd.key",
                                "node key sealing keys at rest; the same file on every node"),
        }
    )

    def open(self, config: dict[str, Any], reactor: Any) -> SqlStorage:
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise StartupError(
                "storage.backend = 'postgresql' needs psycopg: pip install 'mbmsd[postgresql]'"
            ) from None
        pool = make_pool(
            reactor, "psycopg", conninfo=config["dsn"], connect_timeout=config["connect_timeout"],
            openfun=_open_connection, cp_min=config["pool_min"],
            cp_max=max(config["pool_min"], config["pool_max"]), cp_reconnect=True,
        )
        sealer = Sealer(load_key(config["key_file"]))
        return SqlStorage(Database(PostgresEngine(), pool, sealer, reactor),
                          "postgresql:%s" % (_redact(config["dsn"]),))


def _redact(dsn: str) -> str:
    # never log a password that the DSN may carry
    head, sep, tail = dsn.partition("@")
    if not sep or ":" not in head.split("//", 1)[-1]:
        return dsn
    scheme, _, userinfo = head.partition("//")
    return "%s//%s:***@%s" % (scheme, userinfo.split(":", 1)[0], tail)
