"""
Shared plumbing of the benchmarks: free ports, RSS, subprocesses (twistd and
the baseline servers), and the result records that bench/run prints.

Every figure is a RATIO against a baseline measured in the same run on the
same machine (the machine is shared, so absolute rates mean little).
"""

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.nodeconfig import node_ports, node_tables, overlay_text, with_demo_services

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

# TS 35.208 test set 1 (public test values; the demo subscriber of etc/mbmsd.toml)
K = bytes.fromhex("465b5ce8b199b49faa5f0a2ee238a6bc")
OP = bytes.fromhex("cdc202d5123e20f62b6d676ac72cb318")
AMF = "b9b9"


@dataclass
class Figure:
    """
    One printed line: C{<name> ratio <x> <a> <b>}; C{a} is the measured
    path, C{b} the baseline, both in C{unit}. C{goal} is a (op, value) pair
    for the table (">=", 0.5) or None; C{notes} go to the table only.
    """

    name: str
    ratio: float
    a: float
    b: float
    unit: str
    goal: tuple = None
    notes: str = ""
    extra: dict = field(default_factory=dict)

    def line(self):
        return "%s ratio %.3f %s %s" % (self.name, self.ratio, _num(self.a), _num(self.b))

    @property
    def met(self):
        if self.goal is None:
            return None
        op, value = self.goal
        return self.ratio >= value if op == ">=" else self.ratio <= value


def metric_lines(figure):
    """
    The single-value lines a figure carries beside its ratio, one
    C{<name> <x>} each (C{extra["metrics"]}, e.g. invite_cpu_ms_per_call).
    """
    metrics = figure.extra.get("metrics") or {}
    return ["%s %s" % (name, _num(value)) for name, value in metrics.items()]


@dataclass
class Skipped:
    name: str
    reason: str

    def line(self):
        return "%s skipped: %s" % (self.name, self.reason)


def _num(x):
    if x == 0 or abs(x) >= 100:
        return "%.0f" % (x,)
    if abs(x) >= 1:
        return "%.2f" % (x,)
    return "%.4g" % (x,)


def rss(pid=None):
    """Resident set size in bytes of C{pid} (default: this process)."""
    path = "/proc/%s/status" % (pid or "self",)
    with open(path) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in " + path)


def cpu_seconds(pid):
    """User + system CPU seconds of C{pid} so far."""
    with open("/proc/%d/stat" % (pid,)) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick


def tool(name):
    path = BIN / name
    if not path.exists():
        raise RuntimeError("%s is not installed next to %s (make venv)" % (name, sys.executable))
    return str(path)


class Daemon:
    """
    One C{twistd -n mbmsd} subprocess: etc/mbmsd.toml plus an overlay that
    moves every listener to a free loopback port and the storage into
    C{workdir} (as tests/support/daemon.py does).
    """

    def __init__(self, workdir, overlay="", base=ROOT / "etc" / "mbmsd.toml", settings=None):
        """
        @param settings: {table: {key: value}} merged over the generated
            tables; a value None drops its key (a table named here must not
            appear in C{overlay}).
        @param overlay: raw TOML appended at the end (it starts with a
            table header of its own).
        """
        self.workdir = Path(workdir)
        self.ports = node_ports()
        self.base = base
        self.overlay = self.workdir / "overlay.toml"
        tables = node_tables(self.workdir, self.ports)
        for table, values in (settings or {}).items():
            tables.setdefault(table, {}).update(values)
        self.overlay.write_text(overlay_text(tables, with_demo_services(Path(base), overlay,
                                                                        self.ports)))
        self.proc = None
        self.logPath = self.workdir / "twistd.log"

    def url(self, key, path="/"):
        return "http://127.0.0.1:%d%s" % (self.ports[key], path)

    def start(self, extra=(), timeout=30, env=None):
        """@param env: variables added to the node's environment."""
        log = open(self.logPath, "w")
        self.proc = subprocess.Popen(
            [tool("twistd"), "-n", "--pidfile=", *extra, "mbmsd", "--config", str(self.base),
             "--config", str(self.overlay)],
            cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent,
            env=dict(os.environ, **env) if env else None)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("twistd exited with %s:\n%s" % (self.proc.returncode, self.log()[-3000:]))
            if "ready (mbmsd" in self.log():
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("twistd did not become ready:\n" + self.log()[-3000:])

    def log(self):
        try:
            return self.logPath.read_text()
        except FileNotFoundError:
            return ""

    @property
    def pid(self):
        return self.proc.pid

    def stop(self, timeout=20):
        stop_process(self.proc, timeout)


def die_with_parent():
    """
    preexec_fn of the servers a benchmark starts (twistd, the sipp UAS, Kamailio):
    SIGTERM when the benchmark process dies, even by SIGKILL (bench/run's
    timeout), so that none is left running.
    """
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def stop_process(proc, timeout=20):
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def start_helper(module, *args, ready=b"READY", timeout=20):
    """
    Run C{python -m bench.<module> args} (from the repository root); wait
    for its first stdout line C{READY ...}. @return: (Popen, the rest of that line).
    """
    proc = subprocess.Popen([sys.executable, "-m", "bench." + module, *map(str, args)],
                            cwd=ROOT, stdout=subprocess.PIPE, stdin=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    line = proc.stdout.readline()
    if not line.startswith(ready) or time.monotonic() > deadline:
        stop_process(proc)
        raise RuntimeError("bench.%s did not start: %r" % (module, line))
    return proc, line[len(ready):].strip().decode()


def bare_entry_bytes(count=200000):
    """
    RSS growth per entry of a plain dict {B-TID-like str: 32-byte key}, the
    memory baseline of the mem_* figures (measured in the calling process).
    """
    import gc

    gc.collect()
    before = rss()
    bare = {"YmVuY2gtJTA4ZA%08d==@bsf.home1.net" % (i,): os.urandom(32) for i in range(count)}
    grown = rss() - before
    del bare
    return max(1, grown) / count


def add_profile_option(ap):
    ap.add_argument("--profile", default=None, help="cProfile the twistd process into this file")


def twistd_profile_args(path):
    """twistd's own options that cProfile the node into C{path}; none without one."""
    return ["--profile", path, "--profiler", "cprofile", "--savestats"] if path else []


def react_and_report(run, args):
    """Run C{run(reactor, args)} (a Deferred of figures) and print its RESULT line."""
    import json

    from twisted.internet import task

    def go(reactor):
        return run(reactor, args).addCallback(
            lambda figures: print("RESULT " + json.dumps(figures), flush=True))

    task.react(go)
