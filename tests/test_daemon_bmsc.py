"""
The BM-SC.UPF as operators run it: twistd with etc/mbmsd.toml (bsf + bmsc),
the SCF's authorize POST from loopback, then `mbms-ue msk-register`: the MSK
arrives over UDP, verifies and decrypts, and the verification reaches the
BM-SC. A restart keeps authorizations, MSKs and the MIKEY counter.
"""

import json

import pytest

from mbmsd.protocols import mbms_xml
from tests.daemon import Daemon, http, metric, run_ue

pytestmark = pytest.mark.external

IMPU = "sip:user1@home1.net"
SERVICE = "urn:mbmsd:news"


def scf(daemon, requesttype="authorize", ue="127.0.0.1"):
    body = mbms_xml.build_authorize(mbms_xml.AuthorizeRequest([SERVICE], ue, None))
    status, _, answer = http(
        "POST", daemon.url("bmsc", "/keymanagement?requesttype=" + requesttype), body,
        {"X-3GPP-Asserted-Identity": '"%s"' % IMPU,
         "Content-Type": "application/mbms-authorize+xml"})
    return status, answer


def msk_register(daemon, wait=5):
    p = run_ue("msk-register", "--bsf", daemon.ub, "--bmsc", daemon.url("bmsc", ""),
               "--mikey-port", str(daemon.ports["mikey"]), "--wait", str(wait))
    return p.returncode, [json.loads(line) for line in p.stdout.splitlines() if line.strip()], p


def step(lines, name):
    """The first JSON line of a step (a failed step adds a second one)."""
    return next(line for line in lines if line["step"] == name)


def test_authorize_register_deliver_restart(tmp_path):
    d = Daemon(tmp_path).start()
    try:
        status, answer = scf(d)
        assert status == 200
        assert mbms_xml.parse_authorize_response(answer) == [(SERVICE, 200)]

        code, lines, p = msk_register(d)
        assert code == 0, p.stdout + p.stderr + d.log()
        assert step(lines, "register")["services"] == {SERVICE: 200}
        msk = step(lines, "msk")
        assert msk["keyDomainId"] == "00f110"  # MCC 001, MNC 01
        assert "msk" not in msk  # no key without --show-keys
        assert metric(d, "mbmsd_bmsc_mikey_messages_total", result="verified") == 1.0
        assert metric(d, "mbmsd_bmsc_mikey_messages_total", result="unverified") == 0.0

        d.stop()
        d.start()
        # the authorization and the MSK survived; the MUK's counter goes on
        code, lines, p = msk_register(d)
        assert code == 0, p.stdout + p.stderr
        again = step(lines, "msk")
        assert again["mskId"] == msk["mskId"]
        assert "Traceback" not in d.log()
    finally:
        d.stop()


def test_no_authorization_no_key(tmp_path):
    d = Daemon(tmp_path).start()
    try:
        code, lines, p = msk_register(d, wait=1)
        assert code == 1
        assert step(lines, "register")["services"] == {SERVICE: 403}
        assert metric(d, "mbmsd_bmsc_mikey_messages_total", result="sent") == 0.0

        assert scf(d)[0] == 200
        assert scf(d, "deauthorize")[0] == 200
        code, lines, _ = msk_register(d, wait=1)
        assert code == 1
        assert step(lines, "register")["services"] == {SERVICE: 403}
        assert metric(d, "mbmsd_bmsc_mikey_messages_total", result="sent") == 0.0
    finally:
        d.stop()


def test_authorize_only_from_trusted_scf(tmp_path):
    d = Daemon(tmp_path, overlay='trusted_scfs = ["127.0.0.2"]\n').start()
    try:
        status, _ = scf(d)
        assert status == 403
        code, lines, _ = msk_register(d, wait=1)
        assert step(lines, "register")["services"] == {SERVICE: 403}
    finally:
        d.stop()
