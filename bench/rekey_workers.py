"""
rekey_2_workers (issue 16 item 5): one MSK rotation of a service with N
registered UEs pushed by two BM-SC worker processes that share one SQLite
database (WAL, the node's busy timeout) and the rotation's two shards
(C{bmsc.rotation_shards = 2}, L{mbmsd.roles.bmsc.msk.MskManager} as the
node runs it: a lease per shard, the holder of shard 0 makes the MSK, each
pushes its shard), to the same UE farm as bench/mikey_push.py.

The first MSK is stored as made an hour minus a start-up allowance ago, so
the rotation falls due at a known time T once both workers hold one shard
each; the figure is the wall time from T until both shards are marked
pushed (each worker polls its mark), scaled to 100 000 UEs, against 10 s.
CPU per message is the two workers' CPU over the rotation per message.
On a 2-core host the UE farm takes a core of its own, so the workers share
the other: the figure is printed with that note.

    python -m bench.rekey_workers [--quick] [--ues N]
    python -m bench.rekey_workers --worker K --db PATH --farm PORT --seed HEX --due T
"""

import argparse
import os
import sys
import tempfile
import time

from twisted.internet import defer, task

from bench import common
from bench.mikey_push import (
    IDI,
    KEY_DOMAIN,
    SERVICE,
    _Push,
    btid_for,
    insert_registrations,
    registration_rows,
)
from bench.ue_farm import muk_for, ue_ip
from mbmsd.metrics import Metrics
from mbmsd.roles.bmsc.counters import CounterReservations
from mbmsd.roles.bmsc.delivery import MikeyDelivery
from mbmsd.roles.bmsc.msk import MskManager, shard_lease
from mbmsd.roles.bmsc.provisioning import StoredKeyGroups
from mbmsd.storage.records import MbmsService, Msk
from mbmsd.storage.sqlite import SqliteStorageFactory

SHARDS = 2
ROTATION = 3600.0
LIFETIME = 86400.0


def storage_config(db):
    return {"path": db, "synchronous": "NORMAL",
            "key_file": os.path.join(os.path.dirname(db), "mbmsd.key")}


# ---------------------------------------------------------------- a worker


@defer.inlineCallbacks
def worker(reactor, args):
    """One worker: hold one shard, push it when the rotation comes, report."""
    seed = bytes.fromhex(args.seed)
    storage = SqliteStorageFactory().open(storage_config(args.db), reactor)
    yield storage.open()
    metrics = Metrics("bench-w%d" % (args.worker,)).forRole("bmsc")
    delivery = MikeyDelivery(reactor, CounterReservations(storage.bmsc, reactor), IDI,
                             args.farm, metrics)
    port = reactor.listenUDP(0, delivery, interface="127.0.0.1")
    muks = {btid_for(i): muk_for(seed, ue_ip(i)) for i in range(args.ues)}
    manager = MskManager(storage.bmsc, reactor, KEY_DOMAIN, StoredKeyGroups(storage.provisioning),
                         LIFETIME, ROTATION, metrics, _Push(delivery, muks),
                         leases=storage.leases, holder="w%d" % (args.worker,),
                         leaseDuration=5.0, leaseRenewal=0.2, shards=SHARDS)
    yield manager.start()
    # ready once it holds one shard of the two, for a second in a row
    stable = 0
    while stable < 5:
        yield task.deferLater(reactor, 0.2, lambda: None)
        held = [k for k, lease in enumerate(manager.leases.get(SERVICE, ())) if lease.held]
        stable = stable + 1 if len(held) == 1 else 0
    shard = held[0]
    print("READY %d %.3f" % (shard, time.time()), flush=True)
    if time.time() >= args.due:
        print("LATE", flush=True)
    current = yield storage.bmsc.currentMsk(SERVICE, reactor.seconds())
    cpu0 = None
    while True:
        if cpu0 is None and time.time() >= args.due:
            cpu0 = time.process_time()
        mark = yield storage.leases.marked(shard_lease(SERVICE, shard, SHARDS))
        if mark is not None and mark != current.mskId.hex():
            break
        yield task.deferLater(reactor, 0.05, lambda: None)
    done = time.time()
    cpu = time.process_time() - (cpu0 if cpu0 is not None else time.process_time())
    # what this worker sent once both shards are pushed (a worker that lost
    # its leases under load hands its shard to the other: the split says so)
    while True:
        marks = yield defer.gatherResults([storage.leases.marked(shard_lease(SERVICE, k, SHARDS))
                                           for k in range(SHARDS)])
        if all(m is not None and m != current.mskId.hex() for m in marks):
            break
        yield task.deferLater(reactor, 0.05, lambda: None)
    cpu = max(cpu, time.process_time() - cpu0) if cpu0 is not None else cpu
    sent = delivery.messages.labels("sent")._value.get()
    held = [k for k, lease in enumerate(manager.leases.get(SERVICE, ())) if lease.held]
    print("DONE %d %.3f %.3f %d %s" % (shard, done, cpu, sent,
                                       ",".join(map(str, held)) or "-"), flush=True)
    yield manager.stop()
    yield port.stopListening()
    yield storage.close()


# ---------------------------------------------------------------- the run


@defer.inlineCallbacks
def setup(reactor, db, ues, due):
    """The shared database: the service, N registrations, the first MSK due at C{due}."""
    storage = SqliteStorageFactory().open(storage_config(db), reactor)
    yield storage.open()
    try:
        yield storage.provisioning.putService(MbmsService(SERVICE, 0x1234))
        yield insert_registrations(storage, registration_rows(ues, time.time() + 86400))
        created = due - ROTATION
        yield storage.bmsc.putMsk(Msk(serviceId=SERVICE, keyDomainId=KEY_DOMAIN,
                                      mskId=(0x1234).to_bytes(2, "big") + (1).to_bytes(2, "big"),
                                      key=os.urandom(16), created=created,
                                      expires=created + LIFETIME))
    finally:
        yield storage.close()


def read_line(proc, prefix):
    while True:
        line = proc.stdout.readline().decode()
        if not line:
            raise RuntimeError("a worker ended early")
        if line.startswith(prefix):
            return line.split()
        if line.startswith("LATE"):
            raise RuntimeError("a worker was ready only after the rotation was due")


@defer.inlineCallbacks
def run(reactor, args):
    import subprocess

    seed = os.urandom(16)
    allowance = 6.0 if args.quick else 20.0
    farm, farmPort = common.start_helper("ue_farm", 0, seed.hex())
    tmp = tempfile.TemporaryDirectory(prefix="mbmsd-bench-rekey-")
    procs = []
    try:
        db = os.path.join(tmp.name, "bmsc.sqlite3")
        due = time.time() + allowance + (args.ues / 20000.0)
        yield setup(reactor, db, args.ues, due)
        for k in range(2):
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "bench.rekey_workers", "--worker", str(k), "--db", db,
                 "--farm", farmPort, "--seed", seed.hex(), "--due", "%.3f" % (due,),
                 "--ues", str(args.ues)],
                cwd=common.ROOT, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL))
        shards = sorted(int(read_line(p, "READY")[1]) for p in procs)
        if shards != [0, 1]:
            raise RuntimeError("the workers hold shards %r, not one each" % (shards,))
        results = [read_line(p, "DONE") for p in procs]
        for p in procs:
            p.wait(30)  # each stops its manager and storage, then exits
    finally:
        for p in procs:
            common.stop_process(p)
        farm.stdin.close()
        farm.stdout.readline()  # its DONE line: it stops by itself
        common.stop_process(farm)
        tmp.cleanup()
    wall = max(float(r[2]) for r in results) - due
    cpu = sum(float(r[3]) for r in results)
    sent = sum(int(r[4]) for r in results)
    moved = any(r[5] != r[1] for r in results)
    note = ("%d UEs, 2 workers on one SQLite database (WAL, synchronous NORMAL), 2 shards; "
            "%d messages sent (%s by the two); CPU of both workers %.2f s, %.0f us per message; "
            "%d cores here, the UE farm takes one of them%s"
            % (args.ues, sent, " and ".join(r[4] for r in results), cpu,
               1e6 * cpu / max(1, sent), os.cpu_count() or 0,
               "; SHARDS MOVED: a worker lost a lease under load (shards held at the end: %s)"
               % (" and ".join(r[5] for r in results),) if moved else ""))
    return [dict(name="rekey_2_workers", ratio=wall / 10.0 * (100000 / args.ues), a=wall,
                 b=float(args.ues),
                 unit="s for the rotation with 2 workers, UEs (ratio = time scaled to "
                      "100 000 UEs / 10 s)", goal=("<=", 1.0), notes=note,
                 extra={"metrics": {"rekey_2_workers_cpu_us_per_msg": 1e6 * cpu / max(1, sent)}})]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--ues", type=int, default=None)
    ap.add_argument("--worker", type=int, default=None)
    ap.add_argument("--db")
    ap.add_argument("--farm", type=int)
    ap.add_argument("--seed")
    ap.add_argument("--due", type=float)
    args = ap.parse_args()
    args.ues = args.ues or (500 if args.quick else 100000)
    if args.worker is not None:
        task.react(lambda reactor: worker(reactor, args))
    else:
        common.react_and_report(run, args)


if __name__ == "__main__":
    main()
