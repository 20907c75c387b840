"""
The node's lifecycle as operators drive it, against twistd: a clean stop
(SIGTERM) ends the sessions through the roles that carry them before any
listener closes; SIGHUP reloads the config files (mbmsd.reload).
"""

import json
import re
import signal
import subprocess

import pytest

from tests.support.daemon import Daemon, metric, run_ue, tool, wait_for
from tests.support.nodeconfig import node_tables, overlay_text, toml_value, with_demo_services
from tests.support.ports import free_port

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
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# a second subscriber (TS 35.208 4.3 test set 2 keys), absent from etc/mbmsd.toml
USER2 = {"impi": "user2@home1.net", "impus": ["sip:user2@home1.net"],
         "k": "0396eb317b6d1c36f19c1c84cd6ffd16", "op": "ff53bade17df5d4e793073ce9d7579fa"}


def rewrite(d, settings=None, raw=""):
    """Write the daemon's overlay again (the same free ports), for a SIGHUP."""
    tables = node_tables(d.workdir, d.ports)
    for section, values in (settings or {}).items():
        tables.setdefault(section, {}).update(values)
    d.overlay.write_text(overlay_text(tables, with_demo_services(d.base, raw, d.ports)))


def subscriber_toml(sub):
    return "".join(["\n[[subscriber]]\n"] + ["%s = %s\n" % (k, toml_value(v))
                                             for k, v in sub.items()])


def bootstrap(d, sub=None):
    extra = [] if sub is None else ["--impi", sub["impi"], "--k", sub["k"], "--op", sub["op"]]
    p = run_ue("bootstrap", "--bsf", d.ub, *extra)
    return p.returncode, p.stdout + p.stderr


def reloaded(d, result, n=1):
    return wait_for(lambda: metric(d, "mbmsd_node_reloads_total", result=result) == n)


def mbmsd_debug_lines(text):
    return [line for line in text.splitlines() if re.search(r"\[mbmsd\.[a-z.]+#debug\]", line)]


def test_sighup_applies_a_new_subscriber_and_the_log_level(tmp_path):
    d = Daemon(tmp_path).start()
    try:
        code, out = bootstrap(d, USER2)
        assert code == 1, out      # not provisioned yet
        assert mbmsd_debug_lines(d.log()) == []
        rewrite(d, {"node": {"log_level": "debug"}}, subscriber_toml(USER2))
        d.proc.send_signal(signal.SIGHUP)
        assert reloaded(d, "applied"), d.log()[-3000:]
        assert d.proc.poll() is None
        [line] = [x for x in d.log().splitlines() if "reload" in x]
        assert "reload applied: node.log_level, subscriber (1 subscriber(s) provisioned)" in line
        code, out = bootstrap(d, USER2)
        assert code == 0, out + d.log()[-3000:]
        assert json.loads(out.splitlines()[0])["btid"].endswith("@bsf.home1.net")
        # per-transaction detail is debug: it shows now
        assert mbmsd_debug_lines(d.log()), d.log()[-3000:]
        for result in ("refused", "invalid", "failed"):
            assert metric(d, "mbmsd_node_reloads_total", result=result) == 0.0
    finally:
        assert d.stop() in STOPPED


def test_sighup_refuses_a_bad_config_and_a_listen_change_and_keeps_serving(tmp_path):
    d = Daemon(tmp_path).start()
    try:
        # invalid: nothing changes, every error on the one line
        rewrite(d, {"node": {"log_level": "debug"}, "bsf": {"key_lifetime": "long"}},
                subscriber_toml(USER2))
        d.proc.send_signal(signal.SIGHUP)
        assert reloaded(d, "invalid"), d.log()[-3000:]
        [line] = [x for x in d.log().splitlines() if "reload" in x]
        assert "reload refused, the config is invalid" in line
        assert "overlay.toml: bsf.key_lifetime: must be an integer" in line

        # a new listen address needs a restart: refused naming the key,
        # and the live keys that came with it are not applied either
        moved = "tcp:%d:interface=127.0.0.1" % free_port()
        rewrite(d, {"node": {"log_level": "debug"}, "bsf": {"ub_listen": moved}},
                subscriber_toml(USER2))
        d.proc.send_signal(signal.SIGHUP)
        assert reloaded(d, "refused"), d.log()[-3000:]
        [line] = [x for x in d.log().splitlines() if "reload refused (" in x]
        assert line.endswith("reload refused (the node keeps running with its old config): "
                             "bsf.ub_listen: changing it needs a restart"), line

        # still serving with the old config: the old Ub port, the old
        # subscribers, the old log level
        assert d.proc.poll() is None
        assert bootstrap(d)[0] == 0
        assert bootstrap(d, USER2)[0] == 1
        assert mbmsd_debug_lines(d.log()) == []
        assert metric(d, "mbmsd_node_reloads_total", result="applied") == 0.0
    finally:
        assert d.stop() in STOPPED


def served_serial(port, ca):
    """The serial number of the certificate a new TLS connection to C{port} gets."""
    import socket
    import ssl

    from cryptography import x509

    context = ssl.create_default_context(cafile=ca)
    context.check_hostname = False
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw) as s:
            return x509.load_der_x509_certificate(s.getpeercert(binary_form=True)).serial_number


def test_sighup_reads_renewed_certificates_at_the_same_paths(tmp_path):
    from tests.support.pki import Pki

    pki = Pki(tmp_path / "pki")
    issued = pki.issue("bsf", ["bsf.home1.net"], ["127.0.0.1"], client=False)
    d = Daemon(tmp_path, settings={"bsf.tls": {"certificate": str(issued.cert),
                                               "private_key": str(issued.key)}}).start()
    try:
        before = served_serial(d.ports["ub"], pki.ca)
        # certbot-style renewal: new files at the same paths, then SIGHUP
        pki.issue("bsf", ["bsf.home1.net"], ["127.0.0.1"], client=False)
        assert served_serial(d.ports["ub"], pki.ca) == before  # read at reload only
        d.proc.send_signal(signal.SIGHUP)
        assert reloaded(d, "unchanged"), d.log()[-3000:]
        after = served_serial(d.ports["ub"], pki.ca)
        assert after != before
        assert served_serial(d.ports["zn"], pki.ca) == after
        assert "reload: no key changed (TLS files read again)" in d.log()
    finally:
        assert d.stop() in STOPPED
