"""
node.workers = 2 as operators run it (twistd, SQLite): both workers serve Ub
bootstraps on the shared port, each exports its own metrics (port + its
number), and a worker killed (SIGKILL) is restarted while the node serves,
its restart counted in the metrics it exports.
SIP over UDP and TCP: each worker's Via, Record-Route (P-CSCF) and Contact
(SCF) name its own port (worker_ports + k), so the responses and in-dialog
requests (ACK, BYE) of its calls reach it.
"""

import os
import re
import signal
import socket
import urllib.request
from urllib.parse import urlsplit

import pytest

from tests.support.daemon import Daemon, lines_of, run_ue, wait_for
from tests.support.helpers import missing_external
from tests.support.ports import free_ports


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


def sip_worker_ports(workers=2):
    """The settings giving each SIP role free ports for its workers' own."""
    return {"pcscf": {"worker_ports": free_ports(workers)},
            "scf": {"worker_ports": free_ports(workers)}}


def test_two_workers_share_ub_and_one_killed_is_restarted(tmp_path):
    if not hasattr(socket, "SO_REUSEPORT"):
        missing_external("SO_REUSEPORT (Linux) is needed for node.workers")
    metrics = free_pair()
    d = Daemon(tmp_path, settings={"node": {"workers": 2},
                                   "metrics.prometheus": {
                                       "listen": "tcp:%d:interface=127.0.0.1" % (metrics,)},
                                   **sip_worker_ports()})
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


def call(d, transport):
    """
    One mbms-ue register, INVITE and BYE through the P-CSCF's shared port
    (a new source port each run, so the kernel picks a worker).
    @return: the invite step's line.
    """
    pcscf = "sip:127.0.0.1:%d" % (d.ports["pcscf"],)
    if transport == "tcp":
        pcscf += ";transport=tcp"
    p = run_ue("invite", "--pcscf", pcscf, "--hold", "0.2", timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr + d.log()[-6000:]
    steps = lines_of(p)
    assert [x["step"] for x in steps] == ["register", "invite", "bye"], p.stdout
    assert steps[2]["status"] == 200, p.stdout  # the 200 to the BYE
    return steps[1]


def worker_of(log, pattern):
    """The worker numbers that logged a line matching C{pattern}."""
    return {int(k) for k in re.findall(r"^\S+ \[worker (\d+)\] \[[^\]]*\] " + pattern, log,
                                       re.MULTILINE)}


def sip_node(tmp_path):
    ports = sip_worker_ports()
    d = Daemon(tmp_path, settings={"node": {"workers": 2}, "scf": {"bmsc_url": None},
                                   "metrics.prometheus": {"listen": "tcp:%d:interface=127.0.0.1"
                                                          % (free_pair(),)},
                                   **{role: dict(v) for role, v in ports.items()}})
    return d, ports["pcscf"]["worker_ports"], ports["scf"]["worker_ports"]


def check_call(d, line, pcscfBase, scfBase):
    """
    The call's route set names the P-CSCF worker that forwarded its INVITE
    (and got the SCF's 200 at its Via), its target the SCF worker that
    answered it, and that SCF worker ended it on the BYE.
    """
    callId, log = line["callId"], d.log()
    # one Record-Route, or two when the UE's transport is not the SCF's
    # (RFC 5658): the worker's own port on both (its UDP and TCP share it)
    rrPorts = {urlsplit(rr.strip("<>").split(";")[0].replace("sip:", "sip://", 1)).port
               for rr in line["routeSet"]}
    assert len(rrPorts) == 1, line["routeSet"]
    [rrPort] = rrPorts
    rr = line["routeSet"]
    pcscf = worker_of(log, r"INVITE %s from .*: 200$" % (re.escape(callId),))
    assert pcscf == {rrPort - pcscfBase}, (rr, pcscf, log[-6000:])
    assert worker_of(log, r"BYE %s from .*: 200$" % (re.escape(callId),)) == pcscf, log[-6000:]
    targetPort = int(line["target"].split(";")[0].rsplit(":", 1)[1])
    scf = worker_of(log, r"INVITE %s: 200" % (re.escape(callId),))
    assert scf == {targetPort - scfBase}, (line["target"], scf, log[-6000:])
    assert worker_of(log, r"%s: session .* ended \(bye\)" % (re.escape(callId),)) == scf
    return rrPort - pcscfBase


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_sip_responses_and_in_dialog_requests_reach_their_worker(tmp_path, transport):
    if not hasattr(socket, "SO_REUSEPORT"):
        missing_external("SO_REUSEPORT (Linux) is needed for node.workers")
    d, pcscfBase, scfBase = sip_node(tmp_path)
    d.start(timeout=60)
    try:
        assert wait_for(lambda: d.log().count("ready (mbmsd") >= 2, 60), d.log()
        for role, base in (("pcscf", pcscfBase), ("scf", scfBase)):
            for k in (0, 1):
                assert "%s: worker %d's own SIP port %d" % (role, k, base + k) in d.log()
        served = set()
        for n in range(16):
            served.add(check_call(d, call(d, transport), pcscfBase, scfBase))
            if served == {0, 1} and n >= 5:
                break
        assert served == {0, 1}, d.log()[-6000:]  # both P-CSCF workers held calls
        # a worker killed is restarted, on the same own port; calls go on
        first = pids(d.log())
        os.kill(first[0], signal.SIGKILL)
        assert wait_for(lambda: len(re.findall(r"worker 0 started", d.log())) == 2, 30), d.log()
        assert wait_for(lambda: d.log().count("ready (mbmsd") >= 3, 60), d.log()
        for _ in range(4):
            check_call(d, call(d, transport), pcscfBase, scfBase)
    finally:
        assert d.stop() in (0, -signal.SIGTERM), d.log()
    assert "Traceback" not in d.log(), d.log()


def options_from(source, pcscf):
    """
    An OPTIONS of the demo service sent from C{source} (a UE's registered
    network path) to the P-CSCF's shared UDP port.
    @return: the final response's status.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(source)
        s.settimeout(10)
        host, port = source
        s.sendto((
            "OPTIONS sip:urn%%3Ambmsd%%3Anews@mbms.home1.net SIP/2.0\r\n"
            "Via: SIP/2.0/UDP %s:%d;branch=z9hG4bK-opt-%d;rport\r\n"
            "Max-Forwards: 70\r\n"
            "From: <sip:user1@home1.net>;tag=opt\r\n"
            "To: <sip:urn%%3Ambmsd%%3Anews@mbms.home1.net>\r\n"
            "Call-ID: options-%s-%d@test\r\n"
            "CSeq: 1 OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n" % (host, port, port, host, port)).encode(), pcscf)
        while True:
            data, _ = s.recvfrom(65535)
            status = int(data.split(b" ", 2)[1])
            if status >= 200:
                return status


def test_ues_of_a_killed_worker_are_served_by_the_other(tmp_path):
    """
    A worker killed takes nothing of its UEs with it: the kernel moves the
    UEs' sources to the other worker (SO_REUSEPORT), which reads their
    bindings from storage on the first request (pcscf/bindings.py), so they
    are served without registering again.
    """
    if not hasattr(socket, "SO_REUSEPORT"):
        missing_external("SO_REUSEPORT (Linux) is needed for node.workers")
    d, _, _ = sip_node(tmp_path)
    d.start(timeout=60)
    try:
        assert wait_for(lambda: d.log().count("ready (mbmsd") >= 2, 60), d.log()
        pcscf = ("127.0.0.1", d.ports["pcscf"])
        holder = {}
        for i in range(8):
            source = ("127.0.0.%d" % (20 + i,), free_ports(1))
            p = run_ue("register", "--pcscf", "sip:%s:%d" % pcscf, "--local-ip", source[0],
                       "--local-port", str(source[1]), timeout=60)
            assert p.returncode == 0, p.stdout + p.stderr + d.log()[-6000:]
            [holder[source]] = worker_of(d.log(), r"REGISTER .* from UDP %s: 200" % (
                re.escape("%s:%d" % source),))
        # the worker holding registrations is killed; the other one had
        # started before them, so it knows none of them
        victim = min(holder.values())
        moved = [s for s, k in holder.items() if k == victim]
        os.kill(pids(d.log())[victim], signal.SIGKILL)
        assert wait_for(lambda: len(re.findall(r"worker %d started" % (victim,), d.log())) == 2,
                        30), d.log()
        assert wait_for(lambda: d.log().count("ready (mbmsd") >= 3, 60), d.log()
        for source in holder:
            assert options_from(source, pcscf) == 200, (source, d.log()[-6000:])
        # the kernel gave the victim's slot to the other worker: its UEs
        # came to a worker without them in memory, which read them once
        recalled = {s for s in moved if worker_of(d.log(), r"P-CSCF: 1 binding\(s\) of UDP %s "
                                                  r"read from storage" % (
                                                      re.escape("%s:%d" % s),))}
        assert recalled, d.log()[-6000:]
        assert "not registered from this address" not in d.log(), d.log()[-6000:]
    finally:
        assert d.stop() in (0, -signal.SIGTERM), d.log()
    assert "Traceback" not in d.log(), d.log()
