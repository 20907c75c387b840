"""
A real PostgreSQL server for the tests: a throwaway cluster under /tmp,
started once per test run on a free loopback port and stopped at exit
(initdb and pg_ctl run as postgres: the server refuses root).
MBMSD_TEST_PG_DSN points the tests at an existing server instead. No server binaries: skip, or fail under MBMSD_REQUIRE_EXTERNAL=1.
"""

import atexit
import glob
import os
import pwd
import shutil
import subprocess
import tempfile

from tests.support.helpers import missing_external

_server = {}


def _run_as_postgres(args, **kw):
    if os.geteuid() == 0:
        args = ["runuser", "-u", "postgres", "--"] + args
    return subprocess.run(args, check=True, capture_output=True, text=True, timeout=120, **kw)


def dsn():
    """
    @return: a DSN of an empty database on a running server, or skip/fail.
    """
    if os.environ.get("MBMSD_TEST_PG_DSN"):
        return os.environ["MBMSD_TEST_PG_DSN"]
    if "dsn" in _server:
        return _server["dsn"]
    cluster = Cluster()
    cluster.start()
    atexit.register(cluster.destroy)
    _server["dsn"] = cluster.dsn
    _server["port"] = cluster.port
    return _server["dsn"]


class Cluster:
    """
    A throwaway cluster of its own (initdb at construction) that a test may
    stop and start again, e.g. to see a node lose its database.
    """

    def __init__(self):
        try:
            import psycopg  # noqa: F401
        except ImportError:
            missing_external("psycopg is not installed (pip install 'psycopg[binary]')")
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not bins:
            missing_external("PostgreSQL server binaries are not installed (apt-get install postgresql)")
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                missing_external("no postgres system user to run the server as")
        self.bindir = os.path.dirname(bins[-1])
        self.tmp = tempfile.mkdtemp(prefix="mbmsd-pg-")
        if os.geteuid() == 0:
            shutil.chown(self.tmp, "postgres", "postgres")
        from tests.support.ports import free_port

        self.port = free_port()
        self.data = os.path.join(self.tmp, "data")
        self.dsn = "postgresql://postgres@127.0.0.1:%d/postgres" % (self.port,)
        _run_as_postgres([os.path.join(self.bindir, "initdb"), "-D", self.data, "-U", "postgres",
                          "--auth=trust", "-E", "UTF8", "--no-locale", "--no-sync"])

    def start(self):
        _run_as_postgres([os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-l",
                          os.path.join(self.tmp, "log"), "-w", "-t", "60", "-o",
                          "-c listen_addresses=127.0.0.1 -p %d -k %s -c fsync=off "
                          "-c synchronous_commit=off -c full_page_writes=off"
                          % (self.port, self.tmp), "start"])

    def stop(self, mode="immediate"):
        _run_as_postgres([os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-m", mode,
                          "-w", "stop"])

    def destroy(self):
        try:
            if os.path.exists(os.path.join(self.data, "postmaster.pid")):
                self.stop()
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)


def reset(url):
    """
    Drop every table: each test starts from an empty database.
    """
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")


def key_file():
    """
    The node key all PostgreSQL tests share (their database is reset, not
    their key): created once, mode 0600.
    """
    if "key_file" not in _server:
        folder = tempfile.mkdtemp(prefix="mbmsd-pg-key-")
        atexit.register(shutil.rmtree, folder, True)
        _server["key_file"] = os.path.join(folder, "node.key")
    return _server["key_file"]
