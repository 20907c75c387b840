"""
Workers (issue 16 item 5): the BSF on PostgreSQL (SQLite when no server is
at hand) with node.workers = 2 against 1, the same Ub load:

  - ub_workers_cpu: CPU per bootstrap with 2 workers / with 1 (what the
    workers cost: the supervisor, the kernel's spreading, two caches);
  - ub_workers_scaling: bootstraps/s with 2 workers / with 1. On a 2-core
    host the load generator (this process) takes a core: the figure is
    printed, not a goal.

Rounds alternate 1 and 2 workers; the best of each is kept.
"""

import argparse
import os
import sys
import tempfile
import time

from twisted.internet import defer, task

from bench import common
from bench.ub import drive, emit, subscribers_overlay
from mbmsd.protocols import milenage
from mbmsd.ue.http import AgentRequester
from mbmsd.ue.ub import UbClient, Usim


def tree_cpu(pid):
    """CPU seconds of C{pid} and of its living children (the workers)."""
    total = common.cpu_seconds(pid)
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            children = [int(c) for c in f.read().split()]
    except OSError:
        children = []
    for child in children:
        try:
            total += common.cpu_seconds(child)
        except OSError:
            pass
    return total


def pg_storage(tmp):
    from bench.provisioning import pg_dsn

    dsn, why = pg_dsn()
    if dsn is None:
        return None, why
    return {"backend": "postgresql", "path": None, "dsn": dsn,
            "key_file": os.path.join(tmp, "pg.key")}, None


@defer.inlineCallbacks
def one_round(reactor, args, workers, storage, tmp):
    work = tempfile.mkdtemp(prefix="w%d-" % (workers,), dir=tmp)
    overlay = ('[node]\nroles = ["bsf"]\nworkers = %d\n\n' % (workers,)
               + subscribers_overlay(args.ues))
    settings = {"storage": dict(storage)} if storage else {}
    if storage and storage.get("backend") == "postgresql":
        base = os.path.join(tmp, "pg.toml")
        text = (common.ROOT / "etc" / "mbmsd.toml").read_text()
        with open(base, "w") as f:
            f.write(text.replace('backend = "sqlite"\npath = "var/mbmsd.sqlite3"\n',
                                 'backend = "postgresql"\n'))
        settings["storage"].pop("backend")
        daemon = common.Daemon(work, overlay, base=common.Path(base), settings=settings)
    else:
        daemon = common.Daemon(work, overlay, settings=settings)
    daemon.start(timeout=60)
    try:
        deadline = time.monotonic() + 60
        while daemon.log().count("ready (mbmsd") < workers and time.monotonic() < deadline:
            yield task.deferLater(reactor, 0.2, lambda: None)
        http = AgentRequester(reactor)
        clients = [UbClient(http, daemon.url("ub"), "ue%d@home1.net" % (i,),
                            Usim(common.K, milenage.compute_opc(common.K, common.OP)))
                   for i in range(args.ues)]
        try:
            yield defer.gatherResults([c.bootstrap() for c in clients])
            made = [0]

            def one(i):
                made[0] += 1
                return clients[i].bootstrap()

            cpu0, t0 = tree_cpu(daemon.pid), time.monotonic()
            rate, errors = yield drive(reactor, args.ues, args.seconds, one)
            wall = time.monotonic() - t0
            cpu = tree_cpu(daemon.pid) - cpu0
        finally:
            yield http.close()
    finally:
        daemon.stop()
    return rate, cpu / max(1, made[0]), cpu / wall, errors


@defer.inlineCallbacks
def run(reactor, args):
    with tempfile.TemporaryDirectory(prefix="mbmsd-bench-workers-") as tmp:
        storage, why = pg_storage(tmp)
        backend = "PostgreSQL" if storage else "SQLite (no PostgreSQL: %s)" % (why,)
        best = {1: None, 2: None}
        for _ in range(args.rounds):
            for workers in (1, 2):
                if storage:
                    from tests.support import pg

                    pg.reset(storage["dsn"])
                r = yield one_round(reactor, args, workers, storage, tmp)
                if best[workers] is None or r[0] > best[workers][0]:
                    best[workers] = r
    (r1, c1, u1, e1), (r2, c2, u2, e2) = best[1], best[2]
    cores = os.cpu_count() or 1
    note = ("%s, %d UEs, best of %d alternating rounds; CPU/bootstrap %.2f ms (1) %.2f ms (2); "
            "node CPU %.0f%% (1) %.0f%% (2); %d cores%s; errors %d/%d"
            % (backend, args.ues, args.rounds, c1 * 1e3, c2 * 1e3, 100 * u1, 100 * u2, cores,
               ": the load generator shares them" if cores < 4 else "", e1, e2))
    return [
        dict(name="ub_workers_cpu", ratio=c2 / c1 if c1 else 0.0, a=c2 * 1e3, b=c1 * 1e3,
             unit="CPU ms/bootstrap, 2 workers vs 1", goal=("<=", 1.15), notes=note),
        dict(name="ub_workers_scaling", ratio=r2 / r1 if r1 else 0.0, a=r2, b=r1,
             unit="bootstraps/s, 2 workers vs 1", goal=(">=", 1.6) if cores >= 4 else None,
             notes=note),
    ]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--ues", type=int, default=None)
    ap.add_argument("--seconds", type=float, default=None)
    ap.add_argument("--rounds", type=int, default=None)
    args = ap.parse_args()
    args.ues = args.ues or (4 if args.quick else 32)
    args.seconds = args.seconds or (1.5 if args.quick else 10.0)
    args.rounds = args.rounds or (1 if args.quick else 2)

    def go(reactor):
        return run(reactor, args).addCallback(emit)

    task.react(go)


if __name__ == "__main__":
    sys.exit(main())
