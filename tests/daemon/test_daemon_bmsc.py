"""
The BM-SC.UPF as operators run it: twistd with etc/mbmsd.toml (bsf + bmsc),
the SCF's authorize POST from loopback, then `mbms-ue msk-register`: the MSK
arrives over UDP, verifies and decrypts, and the verification reaches the
BM-SC. A restart keeps authorizations, MSKs and the MIKEY counter.
"""

import json

import pytest

from mbmsd.protocols import mbms_xml
from tests.support.daemon import Daemon, http, metric, run_ue

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


def msk_register(daemon, wait=5, *extra):
    p = run_ue("msk-register", "--bsf", daemon.ub, "--bmsc", daemon.url("bmsc", ""),
               "--mikey-port", str(daemon.ports["mikey"]), "--wait", str(wait), *extra)
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


def test_ua_ids_as_configured(tmp_path):
    """
    TS 33.220 H.3: by default the BM-SC accepts only the Ks_NAF of 01 00 00 00 03
    (TS 26.237 HTTP-based), which mbms-ue uses by default; a UE following
    TS 33.246 alone (--ua-id 0100000001) is refused (401) until bmsc.ua_ids
    lists 0100000001 too, and then gets its MSK under that id's MUK.
    """
    d = Daemon(tmp_path).start()
    try:
        assert scf(d)[0] == 200
        code, lines, p = msk_register(d, 1, "--ua-id", "0100000001")
        assert code == 1, p.stdout
        register = step(lines, "register")
        assert (register["result"], register["status"]) == ("failed", 401), register
        code, lines, p = msk_register(d)
        assert code == 0, p.stdout + p.stderr + d.log()[-4000:]
    finally:
        d.stop()
    (tmp_path / "both").mkdir()
    both = Daemon(tmp_path / "both", settings={"bmsc": {"ua_ids": ["0100000003", "0100000001"]}})
    both.start()
    try:
        assert scf(both)[0] == 200
        for uaId in ("0100000001", "0100000003"):
            code, lines, p = msk_register(both, 5, "--ua-id", uaId)
            assert code == 0, uaId + p.stdout + p.stderr + both.log()[-4000:]
            assert step(lines, "register")["services"] == {SERVICE: 200}
            assert step(lines, "msk")["verification"] == "sent"
        assert metric(both, "mbmsd_bmsc_mikey_messages_total", result="verified") == 2.0
    finally:
        both.stop()
