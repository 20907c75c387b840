"""
The admin HTTP API on the all-in-one node started as operators start it
(twistd, etc/mbmsd.toml plus an overlay with [admin] and a real token file):

  - create, read (never k, op or opc), page, update, delete; 400 naming the
    field, 401 without the token, 404, 409; every change logged once with
    who, no key in the log or in any answer;
  - a subscriber, a service and a subscription made through the API, then
    `mbms-ue run --impi ... --k ...` for that user through the whole
    procedure, without a restart; its live state afterwards (B-TID, never
    Ks);
  - mutual TLS ([admin.tls] with ca): a client certificate of that CA and
    the token get in, the token alone does not, another CA's certificate
    fails the handshake;
  - a token file readable by others stops --check with the key named.
"""

import base64
import json
import os
import re
import ssl
import subprocess
import urllib.error
import urllib.request
from types import SimpleNamespace

import pytest

from mbmsd.protocols.milenage import compute_opc
from tests.daemon.test_secret_hygiene import leaks
from tests.support.daemon import Daemon, http, tool, wait_for, whole_run
from tests.support.ports import free_port

pytestmark = pytest.mark.external

TOKEN = "s3cret-admin-token-0123456789"
# a second USIM (not the demo one): TS 35.208 test set 2
K2 = "0396eb317b6d1c36f19c1c84cd6ffd16"
OP2 = "ff53bade17df5d4e793073ce9d7579fa"
OPC2 = compute_opc(bytes.fromhex(K2), bytes.fromhex(OP2)).hex()
IMPI2 = "user2@home1.net"
IMPU2 = "sip:user2@home1.net"
SPORTS = "urn:mbmsd:sports"


def token_file(tmp_path, mode=0o600):
    path = tmp_path / "admin.token"
    path.write_text(TOKEN + "\n")
    path.chmod(mode)
    return path


def admin_node(tmp_path, tls=None, mode=0o600):
    port = free_port()
    settings = {"admin": {"listen": "tcp:%d:interface=127.0.0.1" % (port,),
                          "token_file": str(token_file(tmp_path, mode))},
                # the most verbose log the node writes: still no key in it
                "node": {"log_level": "debug"}}
    if tls is not None:
        settings["admin.tls"] = tls
    d = Daemon(tmp_path, settings=settings)
    d.admin = "%s://127.0.0.1:%d/admin/v1" % ("https" if tls else "http", port)
    return d


def call(d, method, path, body=None, token=TOKEN, context=None):
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = "Bearer " + token
    data = json.dumps(body).encode() if body is not None and not isinstance(body, bytes) \
        else body
    req = urllib.request.Request(d.admin + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10, context=context) as r:
            raw, code = r.read(), r.status
    except urllib.error.HTTPError as e:
        raw, code = e.read(), e.code
    return code, (json.loads(raw) if raw else None), raw


def test_admin_api_and_a_new_user_runs_without_restart(tmp_path):
    d = admin_node(tmp_path).start()
    answers = []
    try:
        def ok(method, path, body=None, expect=200, **kw):
            code, got, raw = call(d, method, path, body, **kw)
            answers.append(raw)
            assert code == expect, (code, got, d.log()[-3000:])
            return got

        # 401: no token, a wrong one, another scheme
        for token in (None, "wrong-token-wrong-token", TOKEN + "x"):
            assert call(d, "GET", "/subscribers", token=token)[0] == 401
        code, _, _ = call(d, "GET", "/subscribers", token=None)
        status, headers, _ = http("GET", d.admin + "/subscribers",
                                  headers={"Authorization": "Basic " + TOKEN})
        assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")

        # the seed is in storage: the demo subscriber and service
        got = ok("GET", "/subscribers/user1@home1.net")
        assert got == {"impi": "user1@home1.net", "impus": ["sip:user1@home1.net"],
                       "amf": "b9b9", "sqn": got["sqn"], "gba_type": "GBA_ME"}
        assert [s["id"] for s in ok("GET", "/services")["services"]] == ["urn:mbmsd:news"]

        # create: 201, keys never shown; 409 on the same IMPI
        created = ok("POST", "/subscribers", {"impi": IMPI2, "impus": [IMPU2], "k": K2,
                                              "op": OP2, "amf": "8000", "sqn": "000000000000"},
                     expect=201)
        assert created == {"impi": IMPI2, "impus": [IMPU2], "amf": "8000",
                           "sqn": "000000000000", "gba_type": "GBA_ME"}
        code, got, _ = call(d, "POST", "/subscribers", {"impi": IMPI2, "impus": [IMPU2],
                                                        "k": K2, "opc": OPC2})
        assert (code, got["field"]) == (409, "impi")

        # 400 names the field, never echoes a key
        for body, field in (({"impi": "x@h", "impus": ["sip:x@h"], "k": "00", "opc": OPC2}, "k"),
                            ({"impi": "x@h", "impus": ["sip:x@h"], "k": K2}, "opc"),
                            ({"impi": "x@h", "impus": [], "k": K2, "opc": OPC2}, "impus"),
                            ({"impi": "nobody", "impus": ["sip:x@h"], "k": K2, "opc": OPC2},
                             "impi"),
                            ({"impi": "x@h", "impus": ["sip:x@h"], "k": K2, "opc": OPC2,
                              "colour": "red"}, "colour"),
                            (b"{not json", "body")):
            code, got, raw = call(d, "POST", "/subscribers", body)
            assert (code, got["field"]) == (400, field), got
            answers.append(raw)
        code, got, _ = call(d, "GET", "/subscribers?limit=0")
        assert (code, got["field"]) == (400, "limit")

        # 404s
        assert call(d, "GET", "/subscribers/ghost@home1.net")[0] == 404
        assert call(d, "PUT", "/subscribers/ghost@home1.net", {"amf": "0000"})[0] == 404
        assert call(d, "DELETE", "/subscribers/ghost@home1.net")[0] == 404
        assert call(d, "GET", "/nothing-here")[0] == 404

        # paging in IMPI order
        for i in range(3):
            ok("POST", "/subscribers", {"impi": "page%d@home1.net" % i,
                                        "impus": ["sip:page%d@home1.net" % i],
                                        "k": K2, "opc": OPC2}, expect=201)
        first = ok("GET", "/subscribers?limit=2")
        assert [s["impi"] for s in first["subscribers"]] == ["page0@home1.net",
                                                             "page1@home1.net"]
        rest = ok("GET", "/subscribers?limit=10&after=" + first["next"])
        assert [s["impi"] for s in rest["subscribers"]] == ["page2@home1.net",
                                                            "user1@home1.net", IMPI2]
        assert rest["next"] is None

        # update and delete
        got = ok("PUT", "/subscribers/page0@home1.net", {"impus": ["sip:p0@home1.net"],
                                                         "amf": "0001"})
        assert (got["impus"], got["amf"]) == (["sip:p0@home1.net"], "0001")
        ok("DELETE", "/subscribers/page1@home1.net", expect=204)
        assert call(d, "GET", "/subscribers/page1@home1.net")[0] == 404

        # a new service (Key Group 0x0102) and the new user's subscription
        ok("POST", "/services", {"id": SPORTS, "key_group": 0x0102,
                                 "sdp": {"port": 5002, "attributes": ["rtpmap:96 H264/90000"]}},
           expect=201)
        assert call(d, "POST", "/services", {"id": SPORTS})[0] == 409
        code, got, _ = call(d, "POST", "/services", {"id": "urn:x", "key_group": 70000})
        assert (code, got["field"]) == (400, "key_group")
        code, got, _ = call(d, "PUT", "/subscriptions/" + IMPU2, {"services": ["urn:nope"]})
        assert (code, got["field"]) == (400, "services")
        assert ok("PUT", "/subscriptions/" + IMPU2, {"services": [SPORTS]}) == {
            "impu": IMPU2, "services": [SPORTS]}

        # the new user, the new service: the whole procedure, no restart
        ue = subprocess.Popen(
            [tool("mbms-ue"), "run", "--bsf", d.ub,
             "--pcscf", "sip:127.0.0.1:%d" % d.ports["pcscf"], "--bmsc", d.url("bmsc", ""),
             "--mikey-port", str(d.ports["mikey"]), "--impi", IMPI2, "--impu", IMPU2,
             "--k", K2, "--op", OP2, "--service", SPORTS, "--show-keys", "--hold", "3"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            # while the session lasts: the BM-SC's authorization and MSK registration
            def live():
                state = call(d, "GET", "/subscribers/%s/state" % (IMPI2,))[1]
                return state if state["msk_registrations"] else None

            assert wait_for(live, timeout=60), d.log()[-4000:]
            during = live()
            out, err = ue.communicate(timeout=90)
        finally:
            if ue.poll() is None:
                ue.kill()
        answers.append(json.dumps(during).encode())
        p = SimpleNamespace(returncode=ue.returncode, stdout=out, stderr=err)
        lines = whole_run(p, p.stdout + p.stderr + d.log()[-6000:])
        assert [(a["impu"], a["service"]) for a in during["authorizations"]] == [(IMPU2, SPORTS)]
        assert [(r["impu"], r["service"], r["btid"]) for r in during["msk_registrations"]] == [
            (IMPU2, SPORTS, lines[1]["btid"])]  # the bootstrap step
        assert lines[2]["status"] == 200
        assert lines[3]["services"] == {SPORTS: 200}
        # the MSK came under the stored Key Group
        assert lines[4]["mskId"].startswith("0102"), lines[4]
        btid = lines[1]["btid"]  # the bootstrap step
        secrets = {"K": bytes.fromhex(K2), "OP": bytes.fromhex(OP2),
                   "OPc": bytes.fromhex(OPC2), "token": TOKEN.encode(),
                   "Ks_NAF": base64.b64decode(lines[1]["ksNaf"]),
                   "MSK": bytes.fromhex(lines[4]["msk"])}

        state = ok("GET", "/subscribers/%s/state" % (IMPI2,))
        answers.append(json.dumps(state).encode())
        assert [s["btid"] for s in state["sessions"]] == [btid]
        assert set(state["sessions"][0]) == {"btid", "created", "expires", "gba_type"}
        assert "ks" not in json.dumps(state).lower().replace("ks_", "")
        assert call(d, "GET", "/subscribers/ghost@home1.net/state")[0] == 404
        assert [(r["impu"], r["transport"]) for r in state["registrations"]] == [
            (IMPU2, "UDP")]
        # after the BYE the BM-SC holds nothing more for the user
        assert (state["authorizations"], state["msk_registrations"]) == ([], [])
    finally:
        d.stop()
    log = d.log()
    # each change logged once, with who
    assert log.count("admin: token from 127.0.0.1 created subscriber %s" % (IMPI2,)) == 1
    assert log.count("updated subscriber page0@home1.net: impus, amf") == 1
    assert log.count("deleted subscriber page1@home1.net") == 1
    assert log.count("set the subscriptions of %s: %s" % (IMPU2, SPORTS)) == 1
    assert log.count("created service %s" % (SPORTS,)) == 1
    # no key (in hex, base64 or repr), no token, in the log or in any answer
    assert leaks(secrets, log + "".join(a.decode() for a in answers)) == []


def test_admin_mutual_tls(tmp_path):
    from tests.support.pki import Pki

    pki = Pki(tmp_path / "pki")
    server = pki.issue("admin", ["admin.home1.net"], ["127.0.0.1"])
    operator = pki.issue("noc1", ["noc1.home1.net"], server=False)
    stranger = Pki(tmp_path / "other").issue("x", ["x.example"], server=False)
    d = admin_node(tmp_path, tls={"certificate": server.cert, "private_key": server.key,
                                  "ca": pki.ca}).start()
    try:
        def context(client=None):
            ctx = ssl.create_default_context(cafile=pki.ca)
            if client is not None:
                ctx.load_cert_chain(client.cert, client.key)
            return ctx

        code, got, _ = call(d, "GET", "/services", context=context(operator))
        assert code == 200 and got["services"][0]["id"] == "urn:mbmsd:news"
        # the token alone is not enough; a certificate without the token neither
        assert call(d, "GET", "/services", context=context())[0] == 401
        assert call(d, "GET", "/services", token=None, context=context(operator))[0] == 401
        with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
            call(d, "GET", "/services", context=context(stranger))
        code, _, _ = call(d, "POST", "/services", {"id": "urn:mbmsd:tls"},
                          context=context(operator))
        assert code == 201
    finally:
        d.stop()
    assert "admin: token noc1.home1.net from 127.0.0.1 created service urn:mbmsd:tls" in d.log()


def test_token_file_readable_by_others_stops_check(tmp_path):
    d = admin_node(tmp_path, mode=0o644)
    p = subprocess.run(d.command("--check"), capture_output=True, text=True, timeout=30)
    assert p.returncode == 1
    assert re.search(r"admin\.token_file: .* readable by group or others", p.stderr), p.stderr
    assert TOKEN not in p.stderr + p.stdout
    os.chmod(tmp_path / "admin.token", 0o600)
    p = subprocess.run(d.command("--check"), capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
