"""
Keys at rest (issue 6, docs/design.md 5.4): K, OPc, XRES/CK/IK, Ks and MSKs are sealed
under the node key. The independent truth is the database itself: its dump
(sqlite3's iterdump, PostgreSQL's pg_dump) and its raw files must not hold
any of the keys we stored, in hex or as raw bytes, while the stores still
give every key back.
"""

import glob
import os
import shutil
import stat
import subprocess
import tempfile

import pytest
from twisted.trial.unittest import SynchronousTestCase

from mbmsd.storage.sealing import KeyFileError, Sealer, SealError, load_key
from mbmsd.storage.sql import SchemaError
from tests.support.daemon import Daemon
from tests.support.fakes import SyncReactor, sqlite_storage
from tests.support.store_contract import (
    authorization,
    challenge,
    msk,
    registration,
    session,
    subscriber,
)

# Keys unlike any other stored value (RAND, say, is public and stays clear).
SECRETS = {name: bytes.fromhex(value) for name, value in {
    "K": "465b5ce8b199b49faa5f0a2ee238a6bc", "OPc": "cd63cb71954a9f4e48a5994e37a02baf",
    "XRES": "a54211d5e3ba50bf", "CK": "b40ba9a3c58b2a05bbf0d987b21bf8cb",
    "IK": "f769bcd751044604127672711c6d3441", "Ks": "5e" * 8 + "c3" * 8 + "7a" * 8 + "19" * 8,
    "MSK": "9e4b3c2a1f0e8d7c6b5a49382716f5e4",
    "MUK": "4d" * 8 + "55" * 8 + "4b" * 8 + "21" * 8}.items()}


def secrets():
    return SECRETS


def store_every_secret(test, storage):
    k = SECRETS
    test.successResultOf(storage.subscribers.provision(subscriber(k=k["K"], opc=k["OPc"])))
    for store, nonce in ((storage.bootstrap, "ub-nonce"), (storage.sipRegistrations, "sip-nonce")):
        test.successResultOf(store.putChallenge(
            challenge(nonce=nonce, xres=k["XRES"], ck=k["CK"], ik=k["IK"])))
    test.successResultOf(storage.bootstrap.putSession(session(ks=k["Ks"])))
    test.successResultOf(storage.bmsc.putMsk(msk(key=k["MSK"])))
    test.successResultOf(storage.bmsc.putSipAuthorization(authorization(), registration(
        muk=k["MUK"], mukExpires=5000.0, nafFqdn="scf.home1.net")))


def assert_no_secret_in(text_or_bytes, where):
    if isinstance(text_or_bytes, bytes):
        for name, value in secrets().items():
            assert value not in text_or_bytes, "%s in clear in %s" % (name, where)
            assert value.hex().encode() not in text_or_bytes.lower(), "%s hex in %s" % (name, where)
    else:
        lowered = text_or_bytes.lower()
        for name, value in secrets().items():
            assert value.hex() not in lowered, "%s in hex in %s" % (name, where)


class SealerTests(SynchronousTestCase):
    def setUp(self):
        self.sealer = Sealer(b"\x01" * 32)

    def test_round_trip_with_a_fresh_nonce(self):
        a = self.sealer.seal(b"key", "subscribers.k:alice")
        b = self.sealer.seal(b"key", "subscribers.k:alice")
        self.assertNotEqual(a, b)
        self.assertNotIn(b"key", a)
        self.assertEqual(self.sealer.unseal(a, "subscribers.k:alice"), b"key")
        self.assertEqual(self.sealer.unseal(memoryview(b), "subscribers.k:alice"), b"key")

    def test_bound_to_its_place(self):
        """A value copied to another row or column does not open."""
        sealed = self.sealer.seal(b"key", "subscribers.k:alice")
        for other in ("subscribers.k:bob", "subscribers.opc:alice"):
            with self.assertRaises(SealError) as e:
                self.sealer.unseal(sealed, other)
            self.assertNotIn("alice", str(e.exception))
            self.assertNotIn("bob", str(e.exception))

    def test_other_key_tampering_and_clear_values_refused(self):
        sealed = self.sealer.seal(b"key", "c")
        self.assertRaises(SealError, Sealer(b"\x02" * 32).unseal, sealed, "c")
        tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
        self.assertRaises(SealError, self.sealer.unseal, tampered, "c")
        self.assertRaises(SealError, self.sealer.unseal, b"\x00" * 16, "c")

    def test_key_length(self):
        self.assertRaises(ValueError, Sealer, b"\x01" * 16)


class LoadKeyTests(SynchronousTestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="mbmsd-key-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.path = os.path.join(self.tmp, "var", "node.key")

    def test_created_once_mode_0600(self):
        key = load_key(self.path)
        self.assertEqual(len(key), 32)
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o600)
        with open(self.path) as f:
            self.assertEqual(f.read().strip(), key.hex())
        self.assertEqual(load_key(self.path), key)

    def test_readable_by_others_refused(self):
        load_key(self.path)
        os.chmod(self.path, 0o644)
        with self.assertRaises(KeyFileError) as e:
            load_key(self.path)
        self.assertIn("storage.key_file", str(e.exception))
        self.assertIn("chmod 600", str(e.exception))

    def test_malformed_refused(self):
        for text in ("zz" * 32, "ab" * 16, ""):
            with open(os.open(self.tmp + "/bad.key", os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                              0o600), "w") as f:
                f.write(text)
            with self.assertRaises(KeyFileError) as e:
                load_key(self.tmp + "/bad.key")
            self.assertIn("storage.key_file", str(e.exception))
            self.assertIn("64 hex digits", str(e.exception))

    def test_missing_without_create_refused(self):
        with self.assertRaises(KeyFileError) as e:
            load_key(self.path, create=False)
        self.assertIn("storage.key_file", str(e.exception))


class SqliteAtRestTests(SynchronousTestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="mbmsd-test-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.reactor = SyncReactor()

    def open(self):
        storage = sqlite_storage(self.tmp, self.reactor)
        self.successResultOf(storage.open())
        return storage

    def test_dump_and_files_hold_no_key_in_clear(self):
        import sqlite3

        storage = self.open()
        store_every_secret(self, storage)
        # the keys still come back whole
        self.assertEqual(self.successResultOf(storage.subscribers.get(subscriber().impi)).k,
                         SECRETS["K"])
        self.assertEqual(self.successResultOf(storage.bootstrap.getSession(session().btid)).ks,
                         SECRETS["Ks"])
        self.assertEqual(self.successResultOf(storage.bootstrap.takeChallenge("ub-nonce")).ck,
                         SECRETS["CK"])
        path = os.path.join(self.tmp, "mbmsd.sqlite3")
        for name in glob.glob(path + "*"):
            with open(name, "rb") as f:
                assert_no_secret_in(f.read(), os.path.basename(name))
        self.successResultOf(storage.close())
        conn = sqlite3.connect(path)
        try:
            dump = "\n".join(conn.iterdump())
        finally:
            conn.close()
        self.assertIn("INSERT INTO \"subscribers\"", dump)
        assert_no_secret_in(dump, "the SQLite dump")
        with open(path, "rb") as f:
            assert_no_secret_in(f.read(), "the SQLite file")

    def test_keys_stored_before_sealing_are_sealed_in_place(self):
        """
        A database of schema 3 held keys in clear: the first start with
        sealing seals them where they are, and every one still reads back.
        """
        import sqlite3

        from mbmsd.storage.sql import migrate_txn, schema_files

        old = sqlite_storage(self.tmp, self.reactor)
        self.successResultOf(old.db.runInteraction("migrate", migrate_txn, schema_files()[:3]))
        k = SECRETS

        def clear_rows(txn):
            txn.execute("INSERT INTO subscribers VALUES (?, ?, ?, ?, ?, ?, ?)",
                        ("user1@home1.net", "sip:user1@home1.net", k["K"], k["OPc"],
                         b"\xb9\xb9", 16, "GBA_ME"))
            for table in ("ub_challenges", "sip_challenges"):
                txn.execute("INSERT INTO %s VALUES (?, ?, ?, ?, ?, ?, ?)" % (table,),
                            ("n-" + table, "user1@home1.net", b"\x00" * 16, k["XRES"], k["CK"],
                             k["IK"], 1e12))
            txn.execute("INSERT INTO bootstrap_sessions VALUES (?, ?, ?, ?, ?, ?, ?)",
                        ("btid-old@bsf", "user1@home1.net", b"\x00" * 16, k["Ks"], 1.0, 1e12,
                         "GBA_ME"))
            txn.execute("INSERT INTO bmsc_msks VALUES (?, ?, ?, ?, ?, ?)",
                        (b"\x00\xf1\x10", 0x00010002, "urn:mbmsd:news", k["MSK"], 1.0, 1e12))

        self.successResultOf(old.db.runInteraction("clear_rows", clear_rows))
        self.successResultOf(old.close())

        storage = self.open()
        self.assertEqual(self.successResultOf(storage.subscribers.get("user1@home1.net")).opc,
                         k["OPc"])
        self.assertEqual(self.successResultOf(storage.bootstrap.getSession("btid-old@bsf")).ks,
                         k["Ks"])
        self.assertEqual(self.successResultOf(
            storage.sipRegistrations.takeChallenge("n-sip_challenges")).ik, k["IK"])
        self.assertEqual(self.successResultOf(
            storage.bmsc.getMsk(b"\x00\xf1\x10", b"\x00\x01\x00\x02")).key, k["MSK"])
        self.successResultOf(storage.close())
        conn = sqlite3.connect(os.path.join(self.tmp, "mbmsd.sqlite3"))
        try:
            assert_no_secret_in("\n".join(conn.iterdump()), "the upgraded SQLite dump")
        finally:
            conn.close()

    def test_another_key_file_is_refused_at_start(self):
        storage = self.open()
        self.successResultOf(storage.subscribers.provision(subscriber()))
        self.successResultOf(storage.close())
        os.unlink(os.path.join(self.tmp, "node.key"))
        other = sqlite_storage(self.tmp, self.reactor)  # creates a new key
        failure = self.failureResultOf(other.open(), SchemaError)
        self.assertIn("storage.key_file", str(failure.value))
        self.successResultOf(other.close())


@pytest.mark.external
class PostgresAtRestTests(SynchronousTestCase):
    def test_pg_dump_holds_no_key_in_clear(self):
        from tests.interop.test_store_postgresql import postgres_storage
        from tests.support import pg

        storage = postgres_storage(SyncReactor())
        self.addCleanup(storage.close)
        self.successResultOf(storage.open())
        store_every_secret(self, storage)
        self.assertEqual(
            self.successResultOf(storage.bmsc.getMsk(msk().keyDomainId, msk().mskId)).key,
            SECRETS["MSK"])
        pg_dump = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_dump"))
        if not pg_dump:
            from tests.support.helpers import missing_external

            missing_external("pg_dump is not installed (apt-get install postgresql)")
        p = subprocess.run([pg_dump[-1], "--data-only", "--inserts", pg.dsn()],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("INSERT INTO public.subscribers", p.stdout)
        assert_no_secret_in(p.stdout, "pg_dump")


@pytest.mark.external
def test_daemon_refuses_a_bad_key_file_in_one_line(tmp_path):
    d = Daemon(tmp_path, settings={"storage": {"key_file": str(tmp_path / "node.key")}})
    (tmp_path / "node.key").write_text("00" * 32 + "\n")
    os.chmod(tmp_path / "node.key", 0o644)
    p = subprocess.run(d.command(), capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert p.returncode == 1, p.stdout
    assert "storage.key_file: %s is readable by group or others" % (
        tmp_path / "node.key") in p.stderr
    assert "Traceback" not in p.stderr + p.stdout

    # a key that does not open the database's keys: a one-line refusal
    os.chmod(tmp_path / "node.key", 0o600)
    d.start().stop()
    (tmp_path / "node.key").write_text("11" * 32 + "\n")
    p = subprocess.run(d.command(), capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert p.returncode == 1, p.stdout
    assert "cannot start: storage.key_file: this key does not open" in p.stdout
    assert "Traceback" not in p.stdout


@pytest.mark.external
@pytest.mark.parametrize("text,mode,problem", [
    ("00" * 32 + "\n", 0o644, "is readable by group or others"),
    ("00" * 31 + "\n", 0o600, "does not hold 64 hex digits"),
    ("zz" * 32 + "\n", 0o600, "does not hold 64 hex digits"),
], ids=["mode-0644", "short", "not-hex"])
def test_check_refuses_the_key_file_the_start_refuses(tmp_path, text, mode, problem):
    # ExecStartPre=... --check must stop what the start would refuse
    key = tmp_path / "node.key"
    d = Daemon(tmp_path, settings={"storage": {"key_file": str(key)}})
    key.write_text(text)
    os.chmod(key, mode)
    for extra in (("--check",), ()):
        p = subprocess.run(d.command(*extra), capture_output=True, text=True, timeout=30,
                           cwd=tmp_path)
        assert p.returncode == 1, (extra, p.stdout, p.stderr)
        lines = [x for x in p.stderr.splitlines() if "storage.key_file" in x]
        assert len(lines) == 1, p.stderr
        assert "overlay.toml: storage.key_file: %s %s" % (key, problem) in lines[0]
        assert "config OK" not in p.stdout
        assert "Traceback" not in p.stderr + p.stdout
    # a missing file passes --check: the start creates it
    key.unlink()
    p = subprocess.run(d.command("--check"), capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    assert not key.exists()
