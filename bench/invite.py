"""
invite_flow: MBMS user service calls per second through a real twistd node
running etc/mbmsd.toml (all four roles) on free ports, with N subscribers
(TS 35.208 test set 1 keys) subscribed to the demo service: sipp UEs
register once with AKA through the P-CSCF (sipp's own Milenage), then each
call is INVITE / 200 / ACK / BYE / 200 through P-CSCF -> SCF, where the SCF
authorizes the user at the BM-SC.UPF (stored in SQLite) before its 200 and
deauthorizes after the BYE: in-process with --bmsc-url local (etc/mbmsd.toml's
scf.bmsc_url, figure invite_flow), or over HTTP to the node's own key
management listener with --bmsc-url http (as a split deployment does,
figure invite_flow_http). Every call of a run must succeed (sipp exit 0,
FailedCall 0).

Baseline, in the same run: the same sipp UAC scenario straight to a sipp UAS
(bench/sipp/uas.xml). Both sides are closed-loop at the same limits of calls
in progress; the best clean rate of each side is compared.

    python -m bench.invite [--quick] [--ues N] [--seconds S] [--limits 10,40]
                           [--bmsc-url local|http]
"""

import argparse
import json
import tempfile
from pathlib import Path

from bench import common, sippload
from tests.ports import free_port


def measure_baseline(folder, users, args):
    uas = sippload.Uas(folder, "base-uas")
    try:
        cpu0 = sippload.cpu_of([uas.pid])
        best, runs = sippload.best_rate(
            lambda n, limit: sippload.calls(folder, "127.0.0.1:%d" % (uas.port,), users, n, limit,
                                            name="base"),
            args.seconds, args.limits, args.base_probe)
        cpu = sippload.cpu_of([uas.pid]) - cpu0
    finally:
        uas.stop()
    return best, runs, cpu


def measure_mbmsd(folder, names, users, args):
    settings = {"storage": {"synchronous": args.synchronous}}
    if args.bmsc_url == "local":
        settings["scf"] = {"bmsc_url": None}  # etc/mbmsd.toml's "local"
    daemon = common.Daemon(folder, sippload.subscribers_toml(names), settings=settings)
    daemon.start(extra=args.twistd_extra)
    try:
        port = free_port()
        target = "127.0.0.1:%d" % (daemon.ports["pcscf"],)
        sippload.register(folder, target, port, names)
        cpu0 = common.cpu_seconds(daemon.pid)
        best, runs = sippload.best_rate(
            lambda n, limit: sippload.calls(folder, target, users, n, limit, port=port,
                                            name="mbmsd"),
            args.seconds, args.limits, args.probe)
        cpu = common.cpu_seconds(daemon.pid) - cpu0
    except Exception:
        print(daemon.log()[-3000:], flush=True)
        raise
    finally:
        daemon.stop()
    return best, runs, cpu


def run(args):
    names = ["ue%d" % (i,) for i in range(args.ues)]
    with tempfile.TemporaryDirectory(prefix="mbmsd-bench-invite-") as tmp:
        users = sippload.users_file(tmp, names)
        base, baseRuns, baseCpu = measure_baseline(tmp, users, args)
        node = Path(tmp) / "node"
        node.mkdir()
        best, runs, cpu = measure_mbmsd(node, names, users, args)
        problems = ""
        if best is None:
            problems = "; NO CLEAN RUN: %s; sipp errors: %s" % (
                runs, sippload.error_tail(node, "mbmsd"))
        if base is None:
            problems += "; NO CLEAN BASELINE RUN: %s" % (baseRuns,)
    rate = best.rate if best else 0.0
    baseline = base.rate if base else 0.0
    busy = sum(r.seconds for r in runs) or 1.0
    baseBusy = sum(r.seconds for r in baseRuns) or 1.0
    notes = ("%d UEs registered with AKA; closed loop at -l %s; best clean: mbmsd %s, baseline %s; "
             "twistd CPU %.0f%%, sipp UAS CPU %.0f%%%s"
             % (args.ues, "/".join(map(str, args.limits)), best and "-l %d" % best.limit,
                base and "-l %d" % base.limit, 100 * cpu / busy, 100 * baseCpu / baseBusy,
                problems))
    name, goal, hop = FIGURES[args.bmsc_url]
    return [dict(name=name, ratio=rate / baseline if baseline else 0.0, a=rate,
                 b=baseline, unit="calls/s (P-CSCF+SCF+BM-SC, %s) vs calls/s (sipp UAS)" % (hop,),
                 goal=(">=", goal), notes=notes)]


# --bmsc-url: (figure, goal, how the SCF reaches the BM-SC)
FIGURES = {"local": ("invite_flow", 0.06, "authorize in-process"),
           "http": ("invite_flow_http", 0.03, "authorize over HTTP")}


def main():
    ap = argparse.ArgumentParser()
    sippload.add_closed_loop_options(ap)
    ap.add_argument("--synchronous", default=None, help="storage.synchronous for twistd")
    ap.add_argument("--bmsc-url", choices=sorted(FIGURES), default="local",
                    help="SCF -> BM-SC in-process (invite_flow) or over HTTP (invite_flow_http)")
    args = sippload.closed_loop_values(ap.parse_args())
    args.probe = 10 if args.quick else 60
    args.base_probe = 20 if args.quick else 1000
    print("RESULT " + json.dumps(run(args)), flush=True)


if __name__ == "__main__":
    main()
