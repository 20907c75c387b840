"""
msk_push and rekey: one MSK rotation (L{MskManager.rotate}) of a service with
N registered UEs, through L{MikeyDelivery} on a real UDP socket, to N UE
L{MikeyReceiver}s at N distinct 127.x.y.z addresses served by one UDP socket
in a second process (bench/ue_farm.py), which answer with verification
messages from the UE's own address.

- msk_push: MSK messages built, sent and verified per second during the
  rotation, against the bare crypto of one message in this same process
  (MIKEY-1 PRF for the three PSK keys + AES-CM-128 of the key data +
  HMAC-SHA-1-160 over a message-sized buffer).
- rekey: wall time of the whole rotation (goal: 100 000 UEs in <= 20 s with
  one process; bench/rekey_workers.py measures two workers against 10 s).
- mem_registered_ue: RSS growth of this (BM-SC) process from before the
  registrations to the peak of the rotation, per UE, against the RSS growth
  per entry of a plain dict {B-TID: 32-byte key} of the same size.

The registrations, MSKs and the per-MUK MIKEY counters live in a real
SQLite store (or the memory store with --store memory). The MUK of each
registration stands where L{UaAuthenticator}'s Ks_NAF cache keeps it (a dict
by B-TID): Zn is not part of this figure.

    python -m bench.mikey_push [--quick] [--ues N] [--store sqlite|memory]
"""

import argparse
import gc
import json
import os
import tempfile
import time

from twisted.internet import defer, task
from zope.interface import implementer

from bench import common
from bench.ue_farm import muk_for, ue_ip
from mbmsd import gctune
from mbmsd.interfaces import IMskPush
from mbmsd.metrics import Metrics
from mbmsd.protocols import mikey
from mbmsd.roles.bmsc.counters import CounterReservations
from mbmsd.roles.bmsc.delivery import MikeyDelivery
from mbmsd.roles.bmsc.msk import MskManager
from mbmsd.storage.bmsc import MemoryBmscStore
from mbmsd.storage.sqlite import SqliteStorageFactory

SERVICE = "urn:mbmsd:news"
IDI = b"bmsc.home1.net"
KEY_DOMAIN = bytes.fromhex("00f110")


def btid_for(i):
    return "YmVuY2gtJTA4ZA%08d==@bsf.home1.net" % (i,)


def registration_rows(ues, expires):
    """The N MSK registration rows of the benchmark: (IMPU, service, B-TID, UE IP, expiry)."""
    return [("sip:ue%d@home1.net" % (i,), SERVICE, btid_for(i), ue_ip(i), expires)
            for i in range(ues)]


def insert_registrations(storage, rows):
    """Store the rows in one transaction of the SQL storage (bulk, for the benchmark)."""
    def insert(txn, rows):
        txn.cursor.executemany(
            "INSERT INTO bmsc_registrations (impu, service_id, btid, ue_address, expires) "
            "VALUES (?, ?, ?, ?, ?)", rows)

    return storage.db.runInteraction("bench_registrations", insert, rows)


def crypto_baseline(seconds):
    """
    Messages per second of the bare crypto of one MSK message: the three PSK
    keys (MIKEY-1 PRF), AES-CM-128 of the key data, HMAC-SHA-1-160 over a
    message-sized buffer. Best of three runs.
    """
    muk = os.urandom(32)
    rand = os.urandom(16)
    plain = os.urandom(24)  # the KEMAC key data sub-payload of an MSK message
    body = os.urandom(130)  # HDR .. KEMAC up to the MAC
    best = 0.0
    for _ in range(3):
        n = 0
        start = time.perf_counter()
        deadline = start + seconds / 3
        while True:
            for _ in range(50):
                encr, auth, salt = mikey.derive_psk_keys(muk, 0x12340001, rand)
                mikey.aes_cm(encr, salt, 0x12340001, n, plain)
                mikey._hmac_sha1(auth, body)
            n += 50
            now = time.perf_counter()
            if now >= deadline:
                break
        best = max(best, n / (now - start))
    return best


@defer.inlineCallbacks
def run(reactor, args):
    seed = os.urandom(16)
    farm, farmPort = common.start_helper("ue_farm", 0, seed.hex())
    tmp = tempfile.TemporaryDirectory(prefix="mbmsd-bench-")
    storage = None
    try:
        metrics = Metrics("bench").forRole("bmsc")
        if args.store == "sqlite":
            storage = SqliteStorageFactory().open(
                {"path": os.path.join(tmp.name, "bmsc.sqlite3"), "synchronous": args.synchronous,
                 "key_file": os.path.join(tmp.name, "mbmsd.key")},
                reactor)
            yield storage.open()
            store = storage.bmsc
        else:
            store = MemoryBmscStore()
        # as the node wires it (mbmsd/roles/bmsc/service.py); --counters store:
        # one store transaction per message, for comparison
        counters = (CounterReservations(store, reactor, **({"block": args.block} if args.block else {}))
                    if args.counters == "batched" else store)
        delivery = MikeyDelivery(reactor, counters, IDI, int(farmPort), metrics)
        port = reactor.listenUDP(0, delivery, interface="127.0.0.1")
        baseline = crypto_baseline(args.baseline_seconds)

        gc.collect()
        rss0 = common.rss()
        # N registrations: the MSK registration rows and the MUK cache
        expires = reactor.seconds() + 86400
        rows = registration_rows(args.ues, expires)
        muks = {r[2]: muk_for(seed, r[3]) for r in rows}
        if storage is not None:
            yield insert_registrations(storage, rows)
        else:
            from mbmsd.storage.records import MskRegistration
            for r in rows:
                yield store.putRegistration(MskRegistration(*r))
        del rows
        from mbmsd.roles.bmsc.provisioning import StoredKeyGroups
        from mbmsd.storage.provisioning import MemoryProvisioningStore
        from mbmsd.storage.records import MbmsService
        services = MemoryProvisioningStore()
        services.putService(MbmsService(SERVICE, 0x1234))
        manager = MskManager(store, reactor, KEY_DOMAIN, StoredKeyGroups(services), 86400, 3600,
                             metrics, _Push(delivery, muks))
        yield manager.current(SERVICE)

        if args.gc == "node":
            # the collector as twistd tunes it (mbmsd/tap.py, mbmsd/gctune.py)
            gctune.tuneThresholds()
            gc.collect()
            gc.freeze()
        peak = [common.rss()]

        def sample():
            peak[0] = max(peak[0], common.rss())

        sampler = task.LoopingCall(sample)
        sampler.start(0.05)
        start = time.perf_counter()
        cpu0, farm0 = time.process_time(), common.cpu_seconds(farm.pid)
        pushed, verified = yield manager.rotate(SERVICE)
        wall = time.perf_counter() - start
        cpu = (time.process_time() - cpu0) / wall
        farmCpu = (common.cpu_seconds(farm.pid) - farm0) / wall
        sampler.stop()
        sample()
        sent = delivery.messages.labels("sent")._value.get()
        retransmitted = delivery.messages.labels("retransmitted")._value.get()
        yield port.stopListening()
    finally:
        farm.stdin.close()
        done = farm.stdout.readline().decode().split()
        common.stop_process(farm)
        if storage is not None:
            yield storage.close()
        tmp.cleanup()
    rate = verified / wall if wall else 0.0
    # the same count of bare dict entries {B-TID: 32-byte key}, measured the same way
    perEntry = common.bare_entry_bytes()
    perUe = max(0, peak[0] - rss0) / args.ues
    note = ("%d UEs, store %s%s, counters %s, collector %s; sent %d, retransmitted %d, verified %d; UE farm accepted %s; "
            "CPU BM-SC %.0f%%, UE farm %.0f%%"
            % (args.ues, args.store, "/" + args.synchronous if args.store == "sqlite" else "",
               args.counters, args.gc, sent, retransmitted, verified, done[1] if len(done) > 1 else "?",
               100 * cpu, 100 * farmCpu))
    prefix = args.prefix
    figures = [
        dict(name=prefix + "msk_push", ratio=rate / baseline, a=rate, b=baseline,
             unit="verified MSK msgs/s vs bare crypto msgs/s", goal=(">=", 0.3), notes=note),
        # the goal of one worker (issue 16): 100 000 UEs in <= 20 s; with two,
        # bench/rekey_workers.py's rekey_2_workers against 10 s
        dict(name=prefix + "rekey", ratio=wall / 20.0 * (100000 / args.ues), a=wall, b=float(args.ues),
             unit="s for the rotation, UEs (ratio = time scaled to 100 000 UEs / 20 s)",
             goal=("<=", 1.0), notes=note),
        dict(name=prefix + "mem_registered_ue", ratio=perUe / perEntry, a=perUe, b=perEntry,
             unit="bytes/UE vs bytes/bare dict entry", goal=None,
             notes="RSS growth of the BM-SC process, registrations to rotation peak"),
    ]
    if verified != pushed or pushed != args.ues:
        for f in figures:
            f["notes"] += "; INCOMPLETE: pushed %d of %d, verified %d" % (pushed, args.ues, verified)
    return figures


@implementer(IMskPush)
class _Push:
    """Each UE's MUK from the bench's own table, then the real delivery."""

    def __init__(self, delivery, muks):
        self.delivery, self.muks = delivery, muks

    def pushMsk(self, registration, msk):
        return self.delivery.deliver(registration.ueAddress, registration.btid,
                                     self.muks[registration.btid], msk)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--ues", type=int, default=None)
    ap.add_argument("--store", choices=("sqlite", "memory"), default="sqlite")
    ap.add_argument("--synchronous", choices=("FULL", "NORMAL"), default="FULL")
    ap.add_argument("--prefix", default="")
    ap.add_argument("--counters", choices=("batched", "store"), default="batched",
                    help="MIKEY counters reserved in batches (as the node does) or one store "
                         "transaction per message")
    ap.add_argument("--block", type=int, default=None,
                    help="counters reserved per MUK (default: mbmsd.roles.bmsc.counters.BLOCK)")
    ap.add_argument("--gc", choices=("node", "default"), default="node",
                    help="the collector as twistd tunes it (mbmsd/gctune.py) or Python's defaults")
    ap.add_argument("--profile", default=None, help="cProfile this process into the file")
    args = ap.parse_args()
    args.ues = args.ues or (500 if args.quick else 100000)
    args.baseline_seconds = 0.6 if args.quick else 3.0

    def go(reactor):
        return run(reactor, args).addCallback(
            lambda figures: print("RESULT " + json.dumps(figures), flush=True))

    if args.profile:
        import cProfile
        cProfile.runctx("task.react(go)", globals(), locals(), args.profile)
    else:
        task.react(go)


if __name__ == "__main__":
    main()

