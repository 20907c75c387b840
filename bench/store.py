"""
store_scale: latency of the BM-SC register path on SQLite (what
L{KeyManagement._register} does per service: getAuthorization twice, then
putRegistration) with a large number of stored authorizations against a
small one, each on its own SQLite file opened by the real storage plugin
(schema, WAL, synchronous = FULL as configured by default). Requests are
serial, for random IMPUs among the stored ones.

    python -m bench.store [--quick] [--large N] [--small N] [--requests R]
"""

import argparse
import os
import random
import tempfile
import time

from twisted.internet import defer

from bench import common
from mbmsd.storage.records import MskRegistration
from mbmsd.storage.sqlite import SqliteStorageFactory

SERVICE = "urn:mbmsd:news"


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100.0 * (len(values) - 1))))]


@defer.inlineCallbacks
def measure(reactor, folder, count, requests, synchronous):
    storage = SqliteStorageFactory().open(
        {"path": os.path.join(folder, "store-%d.sqlite3" % (count,)), "synchronous": synchronous,
         "key_file": os.path.join(folder, "mbmsd.key")}, reactor)
    yield storage.open()
    expires = reactor.seconds() + 86400

    def insert(txn, start, stop):
        txn.cursor.executemany(
            "INSERT INTO bmsc_authorizations (impu, service_id, ue_address, expires) VALUES (?, ?, ?, ?)",
            (("sip:ue%d@home1.net" % (i,), SERVICE, "10.%d.%d.%d" % (i >> 16 & 255, i >> 8 & 255, i & 255),
              expires) for i in range(start, stop)))

    for start in range(0, count, 100000):
        yield storage.db.runInteraction("bench_authorizations", insert, start, min(count, start + 100000))
    store = storage.bmsc
    rng = random.Random(count)
    latencies = []
    for n in range(requests):
        impu = "sip:ue%d@home1.net" % (rng.randrange(count),)
        t0 = time.perf_counter()
        a = yield store.getAuthorization(impu, SERVICE)
        a = yield store.getAuthorization(impu, SERVICE)
        yield store.putRegistration(MskRegistration(impu, SERVICE, "btid%d@bsf.home1.net" % (n,),
                                                    a.ueAddress, a.expires))
        latencies.append(time.perf_counter() - t0)
    yield storage.close()
    return percentile(latencies, 50), percentile(latencies, 99)


@defer.inlineCallbacks
def run(reactor, args):
    with tempfile.TemporaryDirectory(prefix="mbmsd-bench-") as tmp:
        small = yield measure(reactor, tmp, args.small, args.requests, args.synchronous)
        large = yield measure(reactor, tmp, args.large, args.requests, args.synchronous)
    note = "%d vs %d authorizations, %d serial register paths, synchronous=%s" % (
        args.large, args.small, args.requests, args.synchronous)
    return [
        dict(name="store_scale", ratio=large[1] / small[1], a=large[1] * 1e3, b=small[1] * 1e3,
             unit="p99 ms, large vs small", goal=("<=", 2.0), notes=note),
        dict(name="store_scale_p50", ratio=large[0] / small[0], a=large[0] * 1e3, b=small[0] * 1e3,
             unit="p50 ms, large vs small", goal=None, notes=note),
    ]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--large", type=int, default=None)
    ap.add_argument("--small", type=int, default=1000)
    ap.add_argument("--requests", type=int, default=None)
    ap.add_argument("--synchronous", choices=("FULL", "NORMAL"), default="FULL")
    args = ap.parse_args()
    args.large = args.large or (20000 if args.quick else 1000000)
    args.requests = args.requests or (100 if args.quick else 1000)

    common.react_and_report(run, args)


if __name__ == "__main__":
    main()
