"""
sipp as the load generator of the SIP benchmarks (invite_flow,
pcscf_vs_kamailio): the scenarios in bench/sipp/, a UAS standing in for the
called side, UEs registered with AKA, and closed-loop call runs measured from
sipp's own statistics.

A call run is closed-loop: C{-l LIMIT} calls at most in progress and a rate
far above what any side reaches (C{-r}), so sipp starts a call as soon as
one ends. The rate is sipp's SuccessfulCall(C) over the run's duration
(CurrentTime - StartTime of the last C{-trace_stat} row); a run counts only
with exit code 0 (sipp -h: every call successful) and FailedCall(C) = 0.
"""

import shutil
import signal
import subprocess
import time
from pathlib import Path

from bench import common
from tests.support.ports import free_port

SCENARIOS = Path(__file__).resolve().parent / "sipp"

# calls/s asked of sipp: far above any side, so that -l alone limits the load
OPEN_RATE = "50000"


class SippMissing(RuntimeError):
    pass


def sipp():
    path = shutil.which("sipp")
    if path is None:
        raise SippMissing("sipp is not installed (Debian package sip-tester: scripts/system-deps)")
    return path


def users_file(folder, names):
    """A sipp injection file: field0 = the UE's user part, in turn."""
    path = Path(folder) / "users.csv"
    path.write_text("SEQUENTIAL\n" + "".join("%s;\n" % (n,) for n in names))
    return path


def subscribers_toml(names, services=("urn:mbmsd:news",)):
    """[[subscriber]] (TS 35.208 test set 1 keys) and [[scf.subscription]] for each UE."""
    out = []
    for n in names:
        out.append('[[subscriber]]\nimpi = "%s@home1.net"\nimpus = ["sip:%s@home1.net"]\n'
                   'k = "%s"\nop = "%s"\namf = "%s"\nsqn = "000000000000"\n\n'
                   % (n, n, common.K.hex(), common.OP.hex(), common.AMF))
    for n in names:
        out.append('[[scf.subscription]]\nimpu = "sip:%s@home1.net"\nservices = [%s]\n\n'
                   % (n, ", ".join('"%s"' % s for s in services)))
    return "".join(out)


class Uas:
    """A sipp UAS (bench/sipp/uas.xml) on a free UDP port, until stop()."""

    def __init__(self, folder, name="uas", cpus=None):
        self.folder = Path(folder)
        self.port = free_port()
        cmd = [sipp(), "-sf", str(SCENARIOS / "uas.xml"), "-i", "127.0.0.1",
               "-p", str(self.port), "-nostdin", "-trace_err",
               "-error_file", str(self.folder / ("%s-err.log" % name))]
        self.proc = subprocess.Popen(_pinned(cmd, cpus), cwd=self.folder,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     preexec_fn=common.die_with_parent)
        time.sleep(0.3)
        if self.proc.poll() is not None:
            raise RuntimeError("the sipp UAS exited at once (%s)" % (self.proc.returncode,))

    @property
    def pid(self):
        return self.proc.pid

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _pinned(cmd, cpus):
    if cpus is None or shutil.which("taskset") is None:
        return cmd
    return ["taskset", "-c", cpus] + cmd


def register(folder, target, port, names, timeout=60, attempts=3):
    """
    Register each UE with AKA from 127.0.0.1:C{port} (UDP), one sipp run
    each (sipp 3.6.1 cannot take the Digest username from an injection
    file: C{-au} gives it). A UE whose answer is refused is tried again
    with a fresh challenge: sipp handles RES as a C string, so a RES with a
    zero byte (about 3 in 100 challenges) comes out truncated and wrong.
    @return: the number of retries. @raise RuntimeError: a UE failed
        C{attempts} times.
    """
    folder = Path(folder)
    retries = 0
    for n in names:
        for attempt in range(attempts):
            cmd = ["timeout", str(timeout), sipp(), "-sf", str(SCENARIOS / "register.xml"), target,
                   "-i", "127.0.0.1", "-p", str(port), "-t", "u1", "-m", "1", "-nostdin",
                   "-key", "ue", n, "-au", "%s@home1.net" % (n,), "-auth_uri", "home1.net",
                   "-recv_timeout", "10000", "-trace_err",
                   "-error_file", str(folder / "register-err.log")]
            rc = subprocess.run(cmd, cwd=folder, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL).returncode
            if rc == 0:
                break
            retries += 1
        else:
            raise RuntimeError("REGISTER of %s through %s failed %d times (sipp exit %d): %s"
                               % (n, target, attempts, rc, _tail(folder / "register-err.log")))
    return retries


class CallRun:
    """The outcome of one closed-loop sipp UAC run."""

    def __init__(self, rc, stats, seconds, limit, calls):
        self.rc = rc
        self.limit = limit
        self.calls = calls
        self.successful = int(stats.get("SuccessfulCall(C)", 0))
        self.failed = int(stats.get("FailedCall(C)", 0))
        self.retransmissions = int(stats.get("Retransmissions(C)", 0))
        try:
            self.seconds = (float(stats["CurrentTime"].split()[-1])
                            - float(stats["StartTime"].split()[-1]))
        except (KeyError, ValueError, IndexError):
            self.seconds = seconds
        self.rate = self.successful / self.seconds if self.seconds > 0 else 0.0

    @property
    def clean(self):
        return self.rc == 0 and self.failed == 0 and self.successful == self.calls

    def __repr__(self):
        return ("<%d calls at -l %d: %.1f/s, ok %d, failed %d, retrans %d, rc %d>"
                % (self.calls, self.limit, self.rate, self.successful, self.failed,
                   self.retransmissions, self.rc))


def calls(folder, target, users, calls, limit, port=None, name="uac", cpus=None, timeout=120):
    """
    Run C{calls} calls (bench/sipp/call.xml) at most C{limit} at a time
    against C{target} (host:port), from 127.0.0.1:C{port}. @return: L{CallRun}.
    """
    folder = Path(folder)
    stat = folder / ("%s-stat.csv" % (name,))
    if stat.exists():
        stat.unlink()
    cmd = ["timeout", str(timeout), sipp(), "-sf", str(SCENARIOS / "call.xml"), target,
           "-i", "127.0.0.1", "-t", "u1", "-nostdin", "-inf", str(users),
           "-m", str(calls), "-l", str(limit), "-r", OPEN_RATE, "-recv_timeout", "10000",
           "-trace_stat", "-stf", str(stat), "-fd", "1",
           "-trace_err", "-error_file", str(folder / ("%s-err.log" % (name,)))]
    # a port of our own, never sipp's default 5060 (other SIP software may hold it)
    cmd += ["-p", str(port if port is not None else free_port())]
    start = time.monotonic()
    rc = subprocess.run(_pinned(cmd, cpus), cwd=folder, stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL).returncode
    return CallRun(rc, last_stats(stat), time.monotonic() - start, limit, calls)


def last_stats(path):
    """The last row of a sipp -trace_stat CSV as {column: value}."""
    try:
        lines = [line for line in Path(path).read_text(errors="replace").splitlines() if line]
    except FileNotFoundError:
        return {}
    if len(lines) < 2:
        return {}
    return dict(zip(lines[0].split(";"), lines[-1].split(";")))


def best_rate(run, seconds, limits, probe):
    """
    The highest clean rate over C{limits}: for each limit a probe of
    C{probe} calls sizes a run of about C{seconds}; a limit whose run fails
    is dropped. @param run: C{run(calls, limit)} -> L{CallRun}.
    @return: (best clean L{CallRun} or None, every run in order).
    """
    runs, best = [], None
    for limit in limits:
        first = run(probe, limit)
        runs.append(first)
        if not first.clean:
            continue
        n = max(probe, int(first.rate * seconds))
        main = run(n, limit) if n > probe else first
        if main is not first:
            runs.append(main)
        if main.clean and (best is None or main.rate > best.rate):
            best = main
    return best, runs


def _tail(path, n=600):
    try:
        return Path(path).read_text(errors="replace")[-n:].strip().replace("\n", " | ")
    except FileNotFoundError:
        return "(no error file)"


def error_tail(folder, name="uac"):
    return _tail(Path(folder) / ("%s-err.log" % (name,)))


def cpu_of(pids):
    """CPU seconds so far of the live processes among C{pids}."""
    total = 0.0
    for pid in pids:
        try:
            total += common.cpu_seconds(pid)
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total


def add_closed_loop_options(ap):
    """The options of the closed-loop SIP benchmarks (bench/invite.py, bench/proxy.py)."""
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--ues", type=int, default=None)
    ap.add_argument("--seconds", type=float, default=None, help="length of each measured run")
    ap.add_argument("--limits", default=None, help="calls in progress to try, e.g. 10,40")
    common.add_profile_option(ap)


def closed_loop_values(args):
    """Fill in what L{add_closed_loop_options} left to its defaults."""
    args.ues = args.ues or (2 if args.quick else 16)
    args.seconds = args.seconds or (0.5 if args.quick else 8.0)
    args.limits = [int(x) for x in (args.limits or ("2" if args.quick else "10,40")).split(",")]
    args.twistd_extra = common.twistd_profile_args(args.profile)
    return args
