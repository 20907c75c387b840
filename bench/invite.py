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

Beside the ratio, single values of the node (bench/run prints them as
`<name> <x>`): invite_cpu_ms_per_call (twistd CPU over the rate runs),
invite_gc_pause_max_ms (the longest collection, timed in the node through
MBMSD_GC_PAUSE_LOG, mbmsd/gctune.py), invite_p99_ms (INVITE->200 at half the
best rate, open loop, sipp -trace_rtt) and invite_kept_bytes_per_call (RSS
growth over a first run of calls, while their finished transactions wait out
the 32 s timers).

    python -m bench.invite [--quick] [--ues N] [--seconds S] [--limits 10,40]
                           [--bmsc-url local|http]
"""

import argparse
import json
import subprocess
import tempfile
from pathlib import Path

from bench import common, sippload
from tests.support.ports import free_port


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


def measure_mbmsd(folder, names, users, args, metrics=None):
    """@param metrics: a dict that gets the node's single values (L{call_metrics})."""
    pauses = Path(folder) / "gc-pauses.json"
    settings = {"storage": {"synchronous": args.synchronous}}
    if args.bmsc_url == "local":
        settings["scf"] = {"bmsc_url": None}  # etc/mbmsd.toml's "local"
    daemon = common.Daemon(folder, sippload.subscribers_toml(names), settings=settings)
    daemon.start(extra=args.twistd_extra, env=gc_pause_env(pauses))
    try:
        port = free_port()
        target = "127.0.0.1:%d" % (daemon.ports["pcscf"],)
        sippload.register(folder, target, port, names)
        kept = measure_kept(folder, daemon, target, users, port, args)
        cpu0 = common.cpu_seconds(daemon.pid)
        best, runs = sippload.best_rate(
            lambda n, limit: sippload.calls(folder, target, users, n, limit, port=port,
                                            name="mbmsd"),
            args.seconds, args.limits, args.probe)
        cpu = common.cpu_seconds(daemon.pid) - cpu0
        p99 = measure_p99(folder, target, users, port, best, args)
    except Exception:
        print(daemon.log()[-3000:], flush=True)
        raise
    finally:
        daemon.stop()
    if metrics is not None:
        metrics.update(call_metrics(runs, cpu, read_gc_pauses(pauses), p99, kept))
    return best, runs, cpu


# -- the node's single values (issue 16): CPU per call, collector pauses,
#    p99 latency at half the best rate, bytes kept per call

def gc_pause_env(path):
    """The node records its collections (mbmsd/gctune.py) into C{path}."""
    return {"MBMSD_GC_PAUSE_LOG": str(path)}


def read_gc_pauses(path):
    """The longest collection of the node in ms (written at its shutdown), or None."""
    try:
        return json.loads(Path(path).read_text())["max_ms"]
    except (FileNotFoundError, ValueError, KeyError):
        return None


def measure_kept(folder, daemon, target, users, port, args):
    """
    Bytes of RSS the node grows by per call over a first run of
    C{args.kept_calls} calls, read at once (within the 32 s of Timer J/L/D,
    RFC 3261 17), after a warm-up of the same size; None on a failed run.
    """
    warm = sippload.calls(folder, target, users, args.kept_calls, args.limits[0], port=port,
                          name="kept-warm")
    before = common.rss(daemon.pid)
    run = sippload.calls(folder, target, users, args.kept_calls, args.limits[0], port=port,
                         name="kept")
    after = common.rss(daemon.pid)
    if not (warm.clean and run.clean):
        return None
    return max(0, after - before) / run.successful


def measure_p99(folder, target, users, port, best, args):
    """
    The 99th percentile of INVITE -> 200 (sipp's rtd on the 200 of
    bench/sipp/call.xml) in ms, open loop at half the best clean rate for
    about C{args.seconds}; None without a best rate or on a failed run.
    """
    if best is None or best.rate <= 0:
        return None
    rate = max(1.0, best.rate / 2)
    calls = max(20, int(rate * args.seconds))
    folder = Path(folder)
    for old in folder.glob("call_*_rtt.csv"):
        old.unlink()
    cmd = ["timeout", "120", sippload.sipp(), "-sf", str(sippload.SCENARIOS / "call.xml"),
           target, "-i", "127.0.0.1", "-t", "u1", "-nostdin", "-inf", str(users),
           "-m", str(calls), "-r", "%.2f" % (rate,), "-l", "10000", "-recv_timeout", "10000",
           "-trace_rtt", "-rtt_freq", "1", "-p", str(port)]
    rc = subprocess.run(cmd, cwd=folder, stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL).returncode
    times = []
    for path in folder.glob("call_*_rtt.csv"):
        for line in path.read_text(errors="replace").splitlines()[1:]:
            fields = line.split(";")
            try:
                times.append(float(fields[1]))
            except (IndexError, ValueError):
                pass
    if rc != 0 or not times:
        return None
    times.sort()
    return times[min(len(times) - 1, int(0.99 * len(times)))]


def call_metrics(runs, cpu, gcPauseMs, p99, kept):
    calls = sum(r.successful for r in runs)
    values = {"invite_cpu_ms_per_call": 1000 * cpu / calls if calls else None,
              "invite_gc_pause_max_ms": gcPauseMs, "invite_p99_ms": p99,
              "invite_kept_bytes_per_call": kept}
    # a value not measured prints as -1 (bench/run's lines stay numbers)
    return {k: (-1 if v is None else v) for k, v in values.items()}


def run(args):
    names = ["ue%d" % (i,) for i in range(args.ues)]
    with tempfile.TemporaryDirectory(prefix="mbmsd-bench-invite-") as tmp:
        users = sippload.users_file(tmp, names)
        base, baseRuns, baseCpu = measure_baseline(tmp, users, args)
        node = Path(tmp) / "node"
        node.mkdir()
        metrics = {}
        best, runs, cpu = measure_mbmsd(node, names, users, args, metrics)
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
    if args.bmsc_url == "http":  # invite_http_cpu_ms_per_call etc., beside the local path's
        metrics = {k.replace("invite_", "invite_http_", 1): v for k, v in metrics.items()}
    return [dict(name=name, ratio=rate / baseline if baseline else 0.0, a=rate,
                 b=baseline, unit="calls/s (P-CSCF+SCF+BM-SC, %s) vs calls/s (sipp UAS)" % (hop,),
                 goal=(">=", goal), notes=notes, extra={"metrics": metrics})]


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
    args.kept_calls = 20 if args.quick else 500
    figures = run(args)
    for name, value in figures[0]["extra"]["metrics"].items():
        print("%s %s" % (name, value), flush=True)
    print("RESULT " + json.dumps(figures), flush=True)


if __name__ == "__main__":
    main()
