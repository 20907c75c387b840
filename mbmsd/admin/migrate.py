"""
C{mbmsd-admin migrate --from sqlite:PATH --to postgresql://...}: move a
node's SQLite database to PostgreSQL, as Synapse's C{synapse_port_db} does.

Every table is copied as stored: sealed keys stay sealed (the PostgreSQL
nodes use the same node key file), the schema is this mbmsd's (applied to
the target first, from the same numbered files). In one transaction on the
target, so a failed migration leaves it empty: a target that has any table
is refused; after the copy every table's row count and the sealed check
value (node_key_check) are compared with the source, and the check value
must open under the node key.
"""

import sqlite3

from mbmsd.storage.sealing import Sealer, load_key
from mbmsd.storage.sql import _Txn, key_opens, migrate_txn, schema_files

CHUNK = 5000


class MigrateError(Exception):
    """The migration cannot be done; the message says why and what to do."""


def _quote(name):
    return '"%s"' % (name.replace('"', '""'),)


def _open_source(path):
    try:
        src = sqlite3.connect("file:%s?mode=ro" % (path,), uri=True)
        src.execute("SELECT 1 FROM sqlite_master").fetchall()
    except sqlite3.Error as e:
        raise MigrateError("--from: cannot open %s: %s" % (path, e)) from None
    return src


def migrate(source, target, keyFile, out):
    """
    @param source: C{sqlite:PATH}.
    @param target: a C{postgresql://} DSN.
    @param keyFile: the node key file (storage.key_file) both databases use.
    @param out: called with each line of the report.
    @return: {table: rows copied}.
    @raise MigrateError: nothing was written to the target.
    """
    if not source.startswith("sqlite:") or len(source) == len("sqlite:"):
        raise MigrateError("--from must be sqlite:PATH")
    if not (target.startswith("postgresql://") or target.startswith("postgres://")):
        raise MigrateError("--to must be a postgresql:// URL")
    sealer = Sealer(load_key(keyFile, create=False))
    src = _open_source(source[len("sqlite:"):])
    files = schema_files()
    known = [version for version, _, _ in files]
    try:
        versions = sorted(r[0] for r in src.execute("SELECT version FROM schema_version"))
    except sqlite3.Error:
        raise MigrateError("--from: not an mbmsd database (no schema_version)") from None
    if versions != known:
        raise MigrateError(
            "--from: the database has schema %s and this mbmsd %s: start the node of this "
            "version on it once (it migrates the schema), then migrate"
            % (",".join(map(str, versions)), ",".join(map(str, known))))
    check = src.execute("SELECT sealed FROM node_key_check WHERE id = 1").fetchone()
    if check is None:
        raise MigrateError("--from: no node key check value (no node ever opened it)")
    if not key_opens(sealer, check[0]):
        raise MigrateError("--key-file: this key does not open the keys of the SQLite "
                           "database (another node's key file?)")
    tables = [r[0] for r in src.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
        "AND name <> 'schema_version' ORDER BY name")]

    try:
        import psycopg
    except ImportError:
        raise MigrateError("--to: needs psycopg: pip install 'mbmsd[postgresql]'") from None
    from mbmsd.storage.postgresql import PostgresEngine, _redact

    try:
        conn = psycopg.connect(target, autocommit=False)
    except psycopg.Error as e:
        raise MigrateError("--to: cannot connect to %s: %s"
                           % (_redact(target), str(e).strip())) from None
    copied = {}
    try:
        cur = conn.cursor()
        existing = [r[0] for r in cur.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = current_schema() ORDER BY table_name").fetchall()]
        if existing:
            raise MigrateError("--to: the target database is not empty (tables %s): "
                               "migrate into a new database" % (", ".join(existing),))
        migrate_txn(_Txn(PostgresEngine(), cur, sealer), files)
        for table in tables:
            columns = [r[1] for r in src.execute("PRAGMA table_info(%s)" % (_quote(table),))]
            names = ", ".join(_quote(c) for c in columns)
            insert = "INSERT INTO %s (%s) VALUES (%s)" % (
                _quote(table), names, ", ".join(["%s"] * len(columns)))
            rows = src.execute("SELECT %s FROM %s" % (names, _quote(table)))
            n = 0
            while True:
                chunk = rows.fetchmany(CHUNK)
                if not chunk:
                    break
                cur.executemany(insert, chunk)
                n += len(chunk)
            have = cur.execute("SELECT COUNT(*) FROM %s" % (_quote(table),)).fetchone()[0]
            want = src.execute("SELECT COUNT(*) FROM %s" % (_quote(table),)).fetchone()[0]
            if not have == want == n:
                raise MigrateError("%s: %d row(s) in the source, %d copied, %d in the target"
                                   % (table, want, n, have))
            copied[table] = n
        sealed = cur.execute("SELECT sealed FROM node_key_check WHERE id = 1").fetchone()[0]
        if bytes(sealed) != bytes(check[0]) or not key_opens(sealer, bytes(sealed)):
            raise MigrateError("node_key_check: the sealed check value differs after the copy")
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    finally:
        conn.close()
        src.close()
    for table in tables:
        out("%s: %d row(s)" % (table, copied[table]))
    out("migrated %d table(s), %d row(s), schema %s, from %s to %s; the sealed check value "
        "opens under the node key" % (len(tables), sum(copied.values()),
                                      ",".join(map(str, known)), source, _redact(target)))
    return copied
