"""
Provisioning at carrier scale (issue 13):

  - import_sqlite, import_postgresql: `mbmsd-admin import subscribers` of a
    CSV of N subscribers (1 000 000 by default) into a node's SQLite file and
    into PostgreSQL, rows/s against the same rows written by a bare
    executemany of the same driver (no validation, no sealing: the floor);
  - import_rss_sqlite, import_rss_postgresql: the import's peak RSS for N
    rows against N/10 rows (flat in the file's size: goal <= 1.25);
  - ub_at_scale, register_at_scale: the p99 of a Ub bootstrap and of a
    P-CSCF REGISTER (Digest AKA, two round trips) against twistd (bsf and
    pcscf roles, SQLite) with N subscribers stored, against the same with
    1 000 stored (goal <= 1.5), serial requests for random stored users.

    python -m bench.provisioning [--quick] [--rows N] [--requests R]
"""

import argparse
import json
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from twisted.internet import defer

from bench import common
from mbmsd.protocols import milenage

OPC = milenage.compute_opc(common.K, common.OP).hex()
SMALL = 1000


def write_csv(path, count):
    with open(path, "w") as f:
        f.write("impi,impus,k,op,opc,amf,sqn\n")
        for i in range(count):
            f.write("ue%07d@home1.net,sip:ue%07d@home1.net,%s,,%s,%s,000000000000\n"
                    % (i, i, common.K.hex(), OPC, common.AMF))


def rows(count):
    k = bytes(28)  # a sealed value's size in the table
    for i in range(count):
        yield ("ue%07d@home1.net" % (i,), "sip:ue%07d@home1.net" % (i,), k + bytes(16),
               k + bytes(16), bytes.fromhex(common.AMF), 0, "GBA_ME")


def node(folder, roles, storage=None, base=None):
    folder.mkdir(parents=True, exist_ok=True)
    settings = {"node": {"roles": roles}}
    if storage:
        settings["storage"] = storage
    return common.Daemon(folder, settings=settings, **({"base": base} if base else {}))


def measured_import(daemon, csvPath):
    """The import in a child of its own, so that its peak RSS is its alone."""
    cmd = [sys.executable, "-m", "bench.provisioning", "--import-one", str(daemon.base),
           str(daemon.overlay), str(csvPath)]
    p = subprocess.run(cmd, cwd=common.ROOT, capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=str(common.ROOT)))
    if p.returncode != 0:
        raise RuntimeError("import failed: %s" % (p.stderr[-800:],))
    got = json.loads(p.stdout.strip().splitlines()[-1])
    return got["seconds"], got["peak"], got["summary"]


def import_one(base, overlay, csvPath):
    import resource

    cmd = [common.tool("mbmsd-admin"), "--config", base, "--config", overlay, "import",
           "subscribers", csvPath, "--batch", "2000"]
    start = time.monotonic()
    p = subprocess.run(cmd, cwd=os.path.dirname(overlay), capture_output=True, text=True)
    elapsed = time.monotonic() - start
    if p.returncode != 0:
        sys.stderr.write(p.stderr[-800:])
        return 1
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    print(json.dumps({"seconds": elapsed, "peak": peak, "summary": p.stdout.strip()}))
    return 0


def bare_sqlite(path, count):
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE subscribers (impi TEXT PRIMARY KEY, impus TEXT NOT NULL, "
                 "k BLOB NOT NULL, opc BLOB NOT NULL, amf BLOB NOT NULL, sqn BIGINT NOT NULL, "
                 "gba_type TEXT NOT NULL)")
    start = time.monotonic()
    batch = []
    for row in rows(count):
        batch.append(row)
        if len(batch) == 2000:
            conn.executemany("INSERT INTO subscribers VALUES (?, ?, ?, ?, ?, ?, ?)", batch)
            conn.commit()
            batch = []
    if batch:
        conn.executemany("INSERT INTO subscribers VALUES (?, ?, ?, ?, ?, ?, ?)", batch)
        conn.commit()
    conn.close()
    return count / (time.monotonic() - start)


def bare_postgresql(dsn, count):
    import psycopg

    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE TABLE bare_subscribers (impi TEXT PRIMARY KEY, impus TEXT NOT NULL, "
                     "k BYTEA NOT NULL, opc BYTEA NOT NULL, amf BYTEA NOT NULL, "
                     "sqn BIGINT NOT NULL, gba_type TEXT NOT NULL)")
        conn.commit()
        start = time.monotonic()
        batch = []
        cur = conn.cursor()
        for row in rows(count):
            batch.append(row)
            if len(batch) == 2000:
                cur.executemany("INSERT INTO bare_subscribers VALUES (%s, %s, %s, %s, %s, %s, %s)",
                                batch)
                conn.commit()
                batch = []
        if batch:
            cur.executemany("INSERT INTO bare_subscribers VALUES (%s, %s, %s, %s, %s, %s, %s)",
                            batch)
            conn.commit()
        rate = count / (time.monotonic() - start)
        conn.execute("DROP TABLE bare_subscribers")
        conn.commit()
    return rate


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100.0 * (len(values) - 1))))]


@defer.inlineCallbacks
def latencies(reactor, nodes, requests):
    """
    p99 of serial Ub bootstraps and REGISTERs for random stored users, one
    request to each node in turn (so that both see the same machine load).

    @param nodes: [(daemon, subscribers stored)].
    @return: [(Ub p99, REGISTER p99)] in the order of C{nodes}.
    """
    from mbmsd.ue.http import AgentRequester
    from mbmsd.ue.sip import ImsRegistration, open_udp
    from mbmsd.ue.ub import UbClient, Usim

    rng = random.Random(requests)
    usim = Usim(common.K, bytes.fromhex(OPC))
    http = AgentRequester(reactor)
    times = [([], []) for _ in nodes]
    sockets = [open_udp(reactor, ("127.0.0.1", d.ports["pcscf"]), "127.0.0.1", 0)
               for d, _ in nodes]
    try:
        for n in range(requests + 10):        # the first ten warm up
            for (daemon, count), (ua, _), (ub, sip) in zip(nodes, sockets, times):
                i = rng.randrange(count)
                impi = "ue%07d@home1.net" % (i,)
                t0 = time.perf_counter()
                yield UbClient(http, daemon.url("ub"), impi, usim).bootstrap()
                t1 = time.perf_counter()
                yield ImsRegistration(ua, impi, "sip:ue%07d@home1.net" % (i,), usim,
                                      domain="home1.net").register()
                t2 = time.perf_counter()
                if n >= 10:
                    ub.append(t1 - t0)
                    sip.append(t2 - t1)
    finally:
        for _, close in sockets:
            close()
        yield http.close()
    return [(percentile(ub, 99), percentile(sip, 99)) for ub, sip in times]


def pg_dsn():
    if os.environ.get("MBMSD_TEST_PG_DSN"):
        return os.environ["MBMSD_TEST_PG_DSN"], None
    try:
        from tests.support import pg

        url = pg.dsn()
        pg.reset(url)
        return url, None
    except BaseException as e:  # pytest's skip outcome is a BaseException
        if isinstance(e, KeyboardInterrupt):
            raise
        return None, str(e) or e.__class__.__name__


def import_figures(backend, rate, floor, peak, peakTenth, summary, note):
    return [
        dict(name="import_" + backend, ratio=rate / floor, a=rate, b=floor,
             unit="rows/s vs bare executemany", goal=None,
             notes=note + "; " + summary.split(": ", 1)[-1]),
        dict(name="import_rss_" + backend, ratio=peak / peakTenth, a=peak / 2 ** 20,
             b=peakTenth / 2 ** 20, unit="peak RSS MiB, N vs N/10 rows",
             goal=("<=", 1.25), notes=note),
    ]


@defer.inlineCallbacks
def run(reactor, args):
    figures = []
    with tempfile.TemporaryDirectory(prefix="mbmsd-bench-") as tmp:
        tmp = Path(tmp)
        big, tenth, small = tmp / "big.csv", tmp / "tenth.csv", tmp / "small.csv"
        write_csv(big, args.rows)
        write_csv(tenth, max(1, args.rows // 10))
        write_csv(small, SMALL)
        note = "%d subscribers from CSV, batches of 2000" % (args.rows,)

        # --- SQLite
        lite = node(tmp / "lite", ["bsf", "pcscf"])
        seconds, peak, summary = measured_import(lite, big)
        _, peakTenth, _ = measured_import(node(tmp / "lite10", ["bsf", "pcscf"]), tenth)
        floor = bare_sqlite(str(tmp / "bare.sqlite3"), args.rows)
        figures += import_figures("sqlite", args.rows / seconds, floor, peak, peakTenth,
                                  summary, note)

        # --- Ub and REGISTER with N stored against 1 000
        few = node(tmp / "few", ["bsf", "pcscf"])
        measured_import(few, small)
        few.start()
        try:
            lite.start()
            try:
                (ubFew, sipFew), (ubMany, sipMany) = yield latencies(
                    reactor, [(few, SMALL), (lite, args.rows)], args.requests)
            finally:
                lite.stop()
        finally:
            few.stop()
        scale = "%d vs %d subscribers stored (SQLite), %d serial requests each, in turn" % (
            args.rows, SMALL, args.requests)
        figures += [
            dict(name="ub_at_scale", ratio=ubMany / ubFew, a=ubMany * 1e3, b=ubFew * 1e3,
                 unit="Ub bootstrap p99 ms", goal=("<=", 1.5), notes=scale),
            dict(name="register_at_scale", ratio=sipMany / sipFew, a=sipMany * 1e3,
                 b=sipFew * 1e3, unit="REGISTER p99 ms", goal=("<=", 1.5), notes=scale),
        ]

        # --- PostgreSQL
        dsn, why = pg_dsn()
        if dsn is None:
            figures += [{"skipped": "no PostgreSQL: %s" % (why,)}] * 2
        else:
            base = tmp / "pg.toml"
            text = (common.ROOT / "etc" / "mbmsd.toml").read_text()
            base.write_text(text.replace('backend = "sqlite"\npath = "var/mbmsd.sqlite3"\n',
                                         'backend = "postgresql"\n'))
            storage = {"path": None, "dsn": dsn, "key_file": str(tmp / "pg.key")}
            seconds, peak, summary = measured_import(
                node(tmp / "pg", ["bsf"], storage, base), big)
            from tests.support import pg

            pg.reset(dsn)
            _, peakTenth, _ = measured_import(node(tmp / "pg10", ["bsf"], storage, base), tenth)
            pg.reset(dsn)
            floor = bare_postgresql(dsn, args.rows)
            figures += import_figures("postgresql", args.rows / seconds, floor, peak,
                                      peakTenth, summary, note)
    return figures


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rows", type=int, default=None)
    ap.add_argument("--requests", type=int, default=None)
    ap.add_argument("--import-one", nargs=3, metavar=("BASE", "OVERLAY", "CSV"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.import_one:
        sys.exit(import_one(*args.import_one))
    args.rows = args.rows or (5000 if args.quick else 1000000)
    args.requests = args.requests or (20 if args.quick else 500)

    common.react_and_report(run, args)


if __name__ == "__main__":
    main()
