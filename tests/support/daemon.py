"""
Start mbmsd as operators do (C{twistd -n mbmsd --config ...}) in a
subprocess, on free loopback ports, with its state in a temporary folder.
"""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support.helpers import missing_external
from tests.support.nodeconfig import node_ports, node_tables, overlay_text, with_demo_services

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def tool(name):
    path = BIN / name
    if not path.exists():
        missing_external("%s is not installed next to %s (pip install -e .)" % (name, sys.executable))
    return str(path)


class Daemon:
    """
    One twistd process running etc/mbmsd.toml plus an overlay.
    """

    def __init__(self, workdir, overlay="", base=ROOT / "etc" / "mbmsd.toml", settings=None):
        """
        @param settings: {section: {key: value}} merged over the generated
            overlay (free ports, a temporary SQLite file); a value None
            drops the key (e.g. storage.path for PostgreSQL); C{overlay} is
            raw TOML appended after it (keys of the last table, [bmsc]).
        @param base: the node config the overlay goes over.
        """
        self.workdir = Path(workdir)
        self.ports = node_ports()
        self.base = base
        self.overlay = self.workdir / "overlay.toml"
        tables = node_tables(self.workdir, self.ports)
        for section, values in (settings or {}).items():
            tables.setdefault(section, {}).update(values)
        self.overlay.write_text(overlay_text(tables, with_demo_services(Path(base), overlay,
                                                                        self.ports)))
        self.proc = None
        self.logs = []

    @property
    def ub(self):
        return "http://127.0.0.1:%d/" % (self.ports["ub"],)

    def url(self, key, path):
        return "http://127.0.0.1:%d%s" % (self.ports[key], path)

    def command(self, *extra):
        return [tool("twistd"), "-n", "--pidfile=", "mbmsd", "--config", str(self.base),
                "--config", str(self.overlay), *extra]

    def start(self, timeout=20):
        log = open(self.workdir / ("twistd-%d.log" % (len(self.logs),)), "w+")
        self.logs.append(log)
        self.proc = subprocess.Popen(self.command(), cwd=self.workdir, stdout=log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail("twistd exited with %s:\n%s" % (self.proc.returncode, self.log()))
            if "ready (mbmsd" in self.log():
                return self
            time.sleep(0.1)
        self.stop()
        pytest.fail("twistd did not become ready:\n" + self.log())

    def log(self):
        if not self.logs:
            return ""
        self.logs[-1].flush()
        return (self.workdir / ("twistd-%d.log" % (len(self.logs) - 1,))).read_text()

    def stop(self, sig=signal.SIGTERM, timeout=20):
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail("twistd did not stop on %s:\n%s" % (sig, self.log()))


def http(method, url, body=None, headers=None, timeout=10):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def run_ue(*args, timeout=30):
    p = subprocess.run([tool("mbms-ue"), *args], capture_output=True, text=True,
                       timeout=timeout, env=dict(os.environ))
    return p


def metric(daemon, name, **labels):
    """One sample of the daemon's /metrics, parsed with prometheus-client."""
    from prometheus_client.parser import text_string_to_metric_families

    _, _, body = http("GET", daemon.url("metrics", "/metrics"))
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


def wait_for(predicate, timeout=15):
    """Poll C{predicate} every 0.1 s until it is true or C{timeout} passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def lines_of(p):
    """The JSON lines an mbms-ue run printed."""
    out = []
    for line in p.stdout.splitlines():
        if line.strip():
            out.append(json.loads(line))
    return out


# TS 26.237 10.1: GBA bootstrapping after a successful IMS registration
RUN_STEPS = ["register", "bootstrap", "invite", "msk-register", "msk", "bye"]


def whole_run(p, report):
    """
    The JSON lines of an `mbms-ue run` that must have gone through: exit
    status 0, the six steps in order, each ok. C{report} explains a failure.
    """
    assert p.returncode == 0, report
    lines = lines_of(p)
    assert [x["step"] for x in lines] == RUN_STEPS, report
    assert all(x["result"] == "ok" for x in lines), report
    return lines
