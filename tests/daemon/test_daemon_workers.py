"""
node.workers = 2 as operators run it (twistd, SQLite): both workers serve Ub
bootstraps on the shared port, each exports its own metrics (port + its
number), and a worker killed (SIGKILL) is restarted while the node serves,
its restart counted in the metrics it exports.
"""

import os
import re
import signal
import socket
import urllib.request

from tests.support.daemon import Daemon, run_ue, wait_for
from tests.support.helpers import missing_external


def free_pair():
    """A TCP port p with p + 1 free too (the second worker's metrics)."""
    for _ in range(50):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            p = a.getsockname()[1]
            try:
                with socket.socket() as b:
                    b.bind(("127.0.0.1", p + 1))
                    return p
            except OSError:
                continue
    raise RuntimeError("no two consecutive free ports")


def pids(log):
    return dict((int(n), int(p)) for n, p in re.findall(r"worker (\d+) started \(pid (\d+)\)", log))


def bootstrap(d):
    p = run_ue("bootstrap", "--bsf", d.ub)
    assert p.returncode == 0, p.stdout + p.stderr
    return p


def restarts(port):
    """mbmsd_worker_restarts_total of the worker exporting on C{port}: {worker: value}."""
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % (port,), timeout=10) as r:
        text = r.read().decode()
    return {w: float(v) for w, v in re.findall(
        r'^mbmsd_worker_restarts_total\{[^}]*worker="(\d+)"[^}]*\} (\S+)$', text, re.M)}


def test_two_workers_share_ub_and_one_killed_is_restarted(tmp_path):
    if not hasattr(socket, "SO_REUSEPORT"):
        missing_external("SO_REUSEPORT (Linux) is needed for node.workers")
    metrics = free_pair()
    d = Daemon(tmp_path, settings={"node": {"workers": 2},
                                   "metrics.prometheus": {
                                       "listen": "tcp:%d:interface=127.0.0.1" % (metrics,)}})
    d.start(timeout=60)
    try:
        assert wait_for(lambda: d.log().count("ready (mbmsd") >= 2, 60), d.log()
        for _ in range(12):
            bootstrap(d)
        # each worker logs its number; both served some bootstraps
        served = set(re.findall(r"\[worker (\d+)\] \[mbmsd\.bsf[^\]]*\] .*200 bootstrapped",
                                d.log()))
        assert served == {"0", "1"}, d.log()
        first = pids(d.log())
        assert set(first) == {0, 1}, d.log()
        os.kill(first[1], signal.SIGKILL)
        assert wait_for(lambda: len(re.findall(r"worker 1 started", d.log())) == 2, 30), d.log()
        assert wait_for(lambda: d.log().count("ready (mbmsd") >= 3, 60), d.log()
        for _ in range(4):
            bootstrap(d)
        # each worker exports its own restarts: worker 1 was restarted once
        assert restarts(metrics) == {"0": 0.0}
        assert wait_for(lambda: restarts(metrics + 1) == {"1": 1.0}, 30)
    finally:
        assert d.stop() in (0, -signal.SIGTERM), d.log()
    assert "Traceback" not in d.log(), d.log()
