"""
The node's lifecycle as operators drive it, against twistd: a clean stop
(SIGTERM) ends the sessions through the roles that carry them before any
listener closes; SIGHUP reloads the config files (mbmsd.reload).
"""

import signal
import subprocess

import pytest

from tests.daemon import Daemon, metric, tool, wait_for

pytestmark = pytest.mark.external

STOPPED = (0, -signal.SIGTERM)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_sigterm_byes_the_ue_through_the_pcscf_and_deauthorizes(tmp_path, transport):
    d = Daemon(tmp_path).start()
    pcscf = "sip:127.0.0.1:%d%s" % (d.ports["pcscf"],
                                    ";transport=tcp" if transport == "tcp" else "")
    ue = subprocess.Popen([tool("mbms-ue"), "invite", "--pcscf", pcscf, "--hold", "120"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: metric(d, "mbmsd_scf_sessions") == 1.0, timeout=30), d.log()
        assert d.stop(signal.SIGTERM) in STOPPED
        # the UE (which only talks to the P-CSCF) got the SCF's BYE and
        # answered it, well before its 120 s hold ran out
        out, err = ue.communicate(timeout=30)
    finally:
        if ue.poll() is None:
            ue.kill()
            ue.communicate()
    log = d.log()
    assert ue.returncode == 0, out + err + log[-4000:]
    bye = [x for x in _lines(out) if x["step"] == "bye"]
    assert len(bye) == 1, out
    assert (bye[0]["result"], bye[0]["endedBy"], bye[0]["reason"]) == ("ok", "network", "bye from the network"), out
    # the BM-SC answered the SCF's deauthorize before its listener closed
    assert "session of sip:user1@home1.net for urn:mbmsd:news ended (shutdown)" in log
    assert "deauthorize from 127.0.0.1: 200" in log, log[-4000:]
    assert log.index("deauthorize from 127.0.0.1: 200") < log.index("node mbmsd-1 stopped")
    assert "not drained" not in log and "Traceback" not in log


def _lines(text):
    import json

    return [json.loads(line) for line in text.splitlines() if line.strip()]
