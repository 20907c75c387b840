"""
ub_bootstrap: complete Ub bootstraps per second (two round trips, Milenage,
KDF, storage writes) against a real C{twistd mbmsd} on a temporary SQLite
file, driven by concurrent simulated UEs (L{mbmsd.ue.ub.UbClient} over
L{mbmsd.ue.http.AgentRequester}); the baseline is the same requester's GETs
per second to the smallest twisted.web resource (bench/baseline_web.py), also
in its own process. Also: memory per bootstrapping session (RSS growth of
the twistd process / sessions made).

    python -m bench.ub [--quick] [--ues N] [--seconds S]  -> one JSON line
"""

import argparse
import json
import tempfile
import time

from twisted.internet import defer, task

from bench import common
from mbmsd.protocols import milenage
from mbmsd.ue.http import AgentRequester
from mbmsd.ue.ub import UbClient, Usim


def subscribers_overlay(n):
    out = []
    for i in range(n):
        out.append('[[subscriber]]\nimpi = "ue%d@home1.net"\nimpus = ["sip:ue%d@home1.net"]\n'
                   'k = "%s"\nop = "%s"\namf = "%s"\nsqn = "000000000000"\n'
                   % (i, i, common.K.hex(), common.OP.hex(), common.AMF))
    return "\n".join(out)


@defer.inlineCallbacks
def drive(reactor, concurrency, seconds, one, warmup=0.5):
    """
    Run C{one(i)} in C{concurrency} loops for C{warmup} + C{seconds};
    @return: (completed operations per second in the measured window, errors).
    """
    state = {"count": 0, "errors": 0, "counting": False, "stop": False}

    @defer.inlineCallbacks
    def loop(i):
        while not state["stop"]:
            try:
                yield one(i)
            except Exception as e:
                state["errors"] += 1
                if state["errors"] <= 3:
                    print("error:", repr(e)[:300], flush=True)
                yield task.deferLater(reactor, 0.01, lambda: None)
                continue
            if state["counting"]:
                state["count"] += 1

    loops = [loop(i) for i in range(concurrency)]
    yield task.deferLater(reactor, warmup, lambda: None)
    state["counting"] = True
    start = time.monotonic()
    yield task.deferLater(reactor, seconds, lambda: None)
    state["counting"] = False
    elapsed = time.monotonic() - start
    count = state["count"]
    state["stop"] = True
    yield defer.DeferredList(loops)
    return count / elapsed, state["errors"]


@defer.inlineCallbacks
def run(reactor, args):
    # --- baseline: the smallest twisted.web resource, its own process
    proc, port = common.start_helper("baseline_web")
    http = AgentRequester(reactor)
    url = "http://127.0.0.1:%s/" % (port,)
    headers = {"Authorization": 'Digest username="ue0@home1.net", realm="bsf.home1.net", '
                                'nonce="", uri="/", response=""',
               "User-Agent": "mbms-ue; 3gpp-gba"}
    try:
        cpu0, me0, t0 = common.cpu_seconds(proc.pid), time.process_time(), time.monotonic()
        baseline, berr = yield drive(reactor, args.ues, args.seconds,
                                     lambda i: http("GET", url, headers))
        wall = time.monotonic() - t0
        bcpu = (common.cpu_seconds(proc.pid) - cpu0) / wall
        bmine = (time.process_time() - me0) / wall
    finally:
        yield http.close()
        common.stop_process(proc)

    # --- mbmsd: twistd with the BSF on a temporary SQLite file
    with tempfile.TemporaryDirectory(prefix="mbmsd-bench-") as tmp:
        overlay = '[node]\nroles = ["bsf"]\n\n' + subscribers_overlay(args.ues)
        daemon = common.Daemon(tmp, overlay, settings={
            "storage": {"synchronous": args.synchronous}})
        daemon.start(extra=args.twistd_extra)
        http = AgentRequester(reactor)
        clients = [UbClient(http, daemon.url("ub"), "ue%d@home1.net" % (i,),
                            Usim(common.K, milenage.compute_opc(common.K, common.OP)))
                   for i in range(args.ues)]
        made = [0]

        def one(i):
            made[0] += 1
            return clients[i].bootstrap()

        try:
            # one bootstrap per UE first, so that the RSS baseline has the caches warm
            yield defer.gatherResults([c.bootstrap() for c in clients])
            rss0 = common.rss(daemon.pid)
            made[0] = 0
            cpu0, me0, t0 = common.cpu_seconds(daemon.pid), time.process_time(), time.monotonic()
            rate, errors = yield drive(reactor, args.ues, args.seconds, one)
            wall = time.monotonic() - t0
            cpu = (common.cpu_seconds(daemon.pid) - cpu0) / wall
            mine = (time.process_time() - me0) / wall
            rss1 = common.rss(daemon.pid)
        finally:
            yield http.close()
            daemon.stop()
    sessions = made[0]
    perSession = max(0, rss1 - rss0) / max(1, sessions)
    perEntry = common.bare_entry_bytes()
    return [
        dict(name="ub_bootstrap", ratio=rate / baseline if baseline else 0.0, a=rate, b=baseline,
             unit="bootstraps/s vs GET/s", goal=(">=", 0.5),
             notes="%d UEs; twistd CPU %.0f%%, client CPU %.0f%% (baseline server %.0f%%, client %.0f%%); errors %d/%d"
             % (args.ues, 100 * cpu, 100 * mine, 100 * bcpu, 100 * bmine, errors, berr)),
        dict(name="mem_bootstrap_session", ratio=perSession / perEntry, a=perSession, b=perEntry,
             unit="bytes/session vs bytes/bare dict entry", goal=None,
             notes="RSS growth of twistd (BSF, SQLite) over %d bootstraps" % (sessions,)),
    ]


def emit(figures):
    print("RESULT " + json.dumps(figures), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--ues", type=int, default=None)
    ap.add_argument("--seconds", type=float, default=None)
    ap.add_argument("--synchronous", default=None, help="storage.synchronous for twistd")
    common.add_profile_option(ap)
    args = ap.parse_args()
    args.ues = args.ues or (4 if args.quick else 32)
    args.seconds = args.seconds or (1.5 if args.quick else 20.0)
    args.twistd_extra = common.twistd_profile_args(args.profile)
    def go(reactor):
        return run(reactor, args).addCallback(emit)

    task.react(go)


if __name__ == "__main__":
    main()
