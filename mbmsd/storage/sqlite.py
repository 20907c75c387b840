"""
The embedded default backend: one SQLite file in WAL mode.

One connection (SQLite has one writer anyway), so transactions are
serialised, and those that wait share the next commit (group commit,
L{mbmsd.storage.sql._GroupCommit}); C{synchronous = FULL} by default, so what
was acknowledged survives a power cut, not only a crash (operators may trade
that for speed).
"""

import os
import sqlite3
from typing import Any

from zope.interface import implementer

from mbmsd import config as c
from mbmsd.errors import StartupError
from mbmsd.interfaces import IStorageFactory
from mbmsd.storage.sealing import Sealer, load_key
from mbmsd.storage.sql import Database, Engine, SqlStorage, make_pool


class SqliteEngine(Engine):
    name = "sqlite"


@implementer(IStorageFactory)
class SqliteStorageFactory:
    name = "sqlite"
    configSchema = c.Section(
        fields={
            "path": c.Field(c.string(r".+", "a file path"), "var/mbmsd.sqlite3",
                            "database file; its folder is created"),
            "synchronous": c.Field(c.choice("FULL", "NORMAL"), "FULL",
                                   "SQLite durability (FULL survives power loss)"),
            "key_file": c.Field(c.string(r".+", "a file path"), "var/mbmsd.key",
                                "node key sealing keys at rest; created (0600) when missing"),
        }
    )

    def open(self, config: dict[str, Any], reactor: Any) -> SqlStorage:
        if sqlite3.sqlite_version_info < (3, 35):
            raise RuntimeError(
                "storage.backend = 'sqlite' needs SQLite 3.35 or newer (RETURNING); "
                "this Python has %s" % (sqlite3.sqlite_version,)
            )
        path = config["path"]
        if path != ":memory:":
            folder = os.path.dirname(os.path.abspath(path))
            try:
                os.makedirs(folder, mode=0o700, exist_ok=True)
                # subscribers and sessions are for mbmsd's eyes only: a new file
                # is 0600, and SQLite gives its -wal and -shm files the same mode
                os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
            except OSError as e:
                raise StartupError("storage.path: cannot create %s: %s"
                                   % (e.filename or path, e.strerror or e)) from None
        synchronous = config.get("synchronous", "FULL")

        def openfun(conn: sqlite3.Connection) -> None:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = %s" % (synchronous,))
            conn.execute("PRAGMA busy_timeout = 5000")

        pool = make_pool(
            reactor, "sqlite3", path, check_same_thread=False,
            openfun=openfun, cp_min=1, cp_max=1,
        )
        sealer = Sealer(load_key(config["key_file"]))
        return SqlStorage(Database(SqliteEngine(), pool, sealer), "sqlite:%s" % (path,))

