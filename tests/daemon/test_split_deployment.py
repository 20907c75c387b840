"""
Issue 6, "Done when": a split deployment as operators run it survives the
loss of a core node.

PostgreSQL (tests/support/pg.py), the edge node (P-CSCF + SCF, etc/nodes/edge.toml)
and two core nodes (BSF + BM-SC.UPF, etc/nodes/core-1.toml and core-2.toml)
run as separate twistd processes, each config with an overlay for free
loopback ports, the test database, one shared key file and short leases.
Several UEs (`mbms-ue run`, each on its own loopback address) bootstrap on
either core node and INVITE through the edge, whose SCF authorizes them at
the first BM-SC node that answers. In the middle of that load core-1, the
holder of the MSK rotation lease, is killed with SIGKILL. Then core-2:

  - answers Zn for every B-TID acknowledged before the kill, with the
    Ks_NAF the UE derived (core-1's B-TIDs included: the sessions are in
    PostgreSQL);
  - serves key delivery (Ua register with the UE's B-TID, MSK over MIKEY,
    verified) for every authorization acknowledged before the kill;
  - takes over the rotation lease and rotates the service's MSK;
  - serves new UEs, the edge's SCF failing over to it.
"""

import json
import os
import signal
import subprocess
import threading
import time

import pytest

from tests.support.daemon import ROOT, Daemon, http, metric, tool
from tests.support.helpers import missing_external
from tests.support.ports import free_port

pytestmark = pytest.mark.external

SERVICE = "urn:mbmsd:news"
LEASE = "bmsc.msk-rotation:" + SERVICE
K = "465b5ce8b199b49faa5f0a2ee238a6bc"
OP = "cdc202d5123e20f62b6d676ac72cb318"
WAVE_A, WAVE_B = 6, 2  # UEs before the kill (alternating cores), then on core-2
# seconds each UE keeps its session after its MSK step: longer than the kill,
# the Zn checks and the MSK steps of the others take on a loaded machine, so
# that every authorization checked after the kill is still in force
HOLD = 40


def ue_ip(i):
    return "127.0.0.%d" % (20 + i)


def impi(i):
    return "user%d@home1.net" % (i,)


def impu(i):
    return "sip:user%d@home1.net" % (i,)


def subscribers(n):
    return "".join(
        '\n[[subscriber]]\nimpi = "%s"\nimpus = ["%s"]\nk = "%s"\nop = "%s"\namf = "b9b9"\n'
        % (impi(i), impu(i), K, OP) for i in range(1, n + 1))


def subscriptions(n):
    return "".join('\n[[scf.subscription]]\nimpu = "%s"\nservices = ["%s"]\n'
                   % (impu(i), SERVICE) for i in range(1, n + 1))


class Ue:
    """One `mbms-ue run`, its JSON lines collected with their arrival time."""

    def __init__(self, i, core, edge, mikeyPort):
        self.i, self.core = i, core
        self.lines = []
        self.proc = subprocess.Popen(
            [tool("mbms-ue"), "run", "--bsf", core.ub, "--bmsc", core.url("bmsc", ""),
             "--pcscf", "sip:127.0.0.1:%d" % edge.ports["pcscf"], "--impi", impi(i),
             "--impu", impu(i), "--local-ip", ue_ip(i), "--mikey-port", str(mikeyPort),
             "--show-keys", "--hold", str(HOLD), "--wait", "4", "--timeout", "8"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            if line.strip():
                self.lines.append((time.time(), json.loads(line)))

    def step(self, name, before=None, result="ok"):
        """The first line of C{name} with C{result} (arrived before C{before})."""
        for at, line in list(self.lines):
            if line["step"] == name and line["result"] == result and (
                    before is None or at < before):
                return line
        return None

    def mskStepOver(self):
        return self.step("msk") or self.step("msk-register", result="failed") or \
            self.step("msk", result="failed")

    def finish(self, timeout):
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.reader.join(5)
        return self.proc.returncode

    def report(self):
        return "UE %d (%s): rc=%s\n%s\n%s" % (
            self.i, self.core.name, self.proc.returncode,
            "\n".join(json.dumps(line) for _, line in self.lines),
            self.proc.stderr.read()[-2000:] if self.proc.poll() is not None else "")


def wait_for(predicate, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    return None


def test_twistd_check_accepts_the_node_configs():
    for name in ("edge", "core-1", "core-2"):
        p = subprocess.run([tool("twistd"), "mbmsd", "--config",
                            str(ROOT / "etc" / "nodes" / (name + ".toml")), "--check"],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stdout + p.stderr
        assert "config OK: node %s" % (name,) in p.stdout


def test_core_node_killed_under_load(tmp_path):
    try:
        import psycopg
    except ImportError:
        missing_external("psycopg is not installed (pip install 'psycopg[binary]')")
    from tests.support import pg

    url = pg.dsn()
    pg.reset(url)
    key = tmp_path / "mbmsd.key"  # one key for every node, made before any starts
    key.write_text(os.urandom(32).hex() + "\n")
    key.chmod(0o600)
    mikey = free_port()  # the UEs' MIKEY port (one for all: each UE has its own IP)
    n = WAVE_A + WAVE_B
    storage = {"path": None, "dsn": url, "key_file": str(key), "pool_min": 1, "pool_max": 4}

    def core(name):
        folder = tmp_path / name
        folder.mkdir()
        d = Daemon(folder, base=ROOT / "etc" / "nodes" / (name + ".toml"), settings={
            "storage": storage,
            "bmsc": {"ue_mikey_port": mikey, "mikey_interface": "127.0.0.1",
                     "trusted_scfs": ["127.0.0.1"], "msk_rotation": 10,
                     "lease_duration": 2.0, "lease_renewal": 0.5},
        }, overlay='\n[[bsf.naf]]\nfqdn = "bmsc.home1.net"\naddresses = ["127.0.0.1"]\n'
                   + subscribers(n))
        d.name = name
        return d

    core1, core2 = core("core-1"), core("core-2")
    (tmp_path / "edge").mkdir()
    edge = Daemon(tmp_path / "edge", base=ROOT / "etc" / "nodes" / "edge.toml", settings={
        "storage": storage,
        "scf": {"bmsc_url": [core1.url("bmsc", ""), core2.url("bmsc", "")],
                "trusted_pcscfs": ["127.0.0.1"]},
    }, overlay=subscriptions(n))
    daemons = [core1, core2, edge]
    ues = []

    def logs():
        return "\n\n".join(["%s:\n%s" % (getattr(d, "name", "edge"), d.log()[-5000:])
                            for d in daemons] + [u.report() for u in ues])

    def holder():
        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT holder, expires FROM leases WHERE name = %s",
                               (LEASE,)).fetchone()
        return row[0].split("/")[0] if row and row[1] > time.time() else None

    try:
        core1.start()
        assert wait_for(lambda: holder() == "core-1", 10), logs()
        core2.start()
        edge.start()

        # the load: UEs alternating between the core nodes
        for i in range(1, WAVE_A + 1):
            ues.append(Ue(i, core1 if i % 2 else core2, edge, mikey))
            time.sleep(0.3)
        done = lambda: [u for u in ues if u.step("msk")]  # noqa: E731
        assert wait_for(lambda: any(u.core is core1 for u in done()) and len(done()) >= 3,
                        40), logs()
        core1.stop(signal.SIGKILL)
        killed = time.time()
        assert core1.proc.returncode == -signal.SIGKILL
        inFlight = [u for u in ues if not u.step("msk")]
        assert inFlight, "the kill came after the load: " + logs()

        # after the kill: new UEs on the surviving core node
        for i in range(WAVE_A + 1, n + 1):
            ues.append(Ue(i, core2, edge, mikey))

        booted = [(u, u.step("bootstrap", before=killed)) for u in ues]
        booted = [(u, line) for u, line in booted if line is not None]
        authorized = [u for u in ues if u.step("invite", before=killed)]
        assert any(u.core is core1 for u, _ in booted), logs()
        assert any(u.core is core1 for u in authorized), logs()
        print("before the kill: %d B-TIDs (%d on core-1), %d authorizations; %d UEs in flight"
              % (len(booted), len([1 for u, _ in booted if u.core is core1]), len(authorized),
                 len(inFlight)))

        # Zn from core-2 for every B-TID acknowledged before the kill
        for u, line in booted:
            code, _, body = http("POST", core2.url("zn", "/zn/v1/naf-keys"), json.dumps(
                {"btid": line["btid"], "nafId": line["nafId"]}).encode(),
                {"Content-Type": "application/json"})
            assert code == 200, "UE %d: %s\n%s" % (u.i, body, logs())
            assert json.loads(body)["ksNaf"] == line["ksNaf"], u.i
            assert json.loads(body)["impi"] == impi(u.i)

        # key delivery from core-2 for every authorization acknowledged before
        # the kill, with the UE's own B-TID (made on either core node)
        for u in authorized:
            assert wait_for(u.mskStepOver, 15), u.report()  # its MIKEY port is free again
        checks = []
        for u in authorized:
            boot = u.step("bootstrap")
            checks.append((u, subprocess.Popen(
                [tool("mbms-ue"), "msk-register", "--bmsc", core2.url("bmsc", ""),
                 "--btid", boot["btid"], "--ks-naf", boot["ksNaf"], "--impi", impi(u.i),
                 "--impu", impu(u.i), "--listen", ue_ip(u.i), "--mikey-port", str(mikey),
                 "--wait", "5"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
        for u, p in checks:
            out, err = p.communicate(timeout=30)
            assert p.returncode == 0, "UE %d:\n%s\n%s\n%s" % (u.i, out, err, logs())
            lines = [json.loads(x) for x in out.splitlines() if x.strip()]
            assert [x["step"] for x in lines][:2] == ["register", "msk"], out
            assert lines[0]["services"] == {SERVICE: 200}
            assert lines[1]["verification"] == "sent"

        # the rotation lease moved to core-2, which rotates the MSK
        assert wait_for(lambda: holder() == "core-2", 5), logs()
        assert metric(core2, "mbmsd_bmsc_rotation_leases_held") == 1.0

        def rotated():
            with psycopg.connect(url) as conn:
                return conn.execute("SELECT count(*) FROM bmsc_msks WHERE service_id = %s "
                                    "AND created > %s", (SERVICE, killed)).fetchone()[0]

        assert wait_for(rotated, 15), logs()
        assert "MSK rotation of %s runs on this node (core-2/" % (SERVICE,) in core2.log()

        # every UE of core-2, and every UE whose MSK arrived before the kill,
        # ends well: its BYE's deauthorize reached core-2 through the SCF
        for u in ues:
            code = u.finish(HOLD + 30)
            if u.core is core2 or u.step("msk", before=killed):
                assert code == 0, u.report() + logs()
        byes = len([u for u in ues if u.step("bye")])
        assert byes >= len(authorized), logs()
        assert wait_for(lambda: metric(edge, "mbmsd_scf_bmsc_requests_total",
                                       requesttype="deauthorize", result="ok") >= byes, 10)

        # a clean stop (SIGTERM) hands the lease back at once, not at its expiry
        assert core2.stop() in (0, -signal.SIGTERM)  # twistd re-raises SIGTERM
        assert "node core-2 stopped" in core2.log()
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT count(*) FROM leases").fetchone()[0] == 0
    finally:
        for u in ues:
            if u.proc.poll() is None:
                u.proc.kill()
                u.proc.wait()
        for d in daemons:
            d.stop()
