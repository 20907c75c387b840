"""
Secret hygiene (issue "Hardening" 5): the all-in-one node, started as
operators start it (twistd, etc/mbmsd.toml: bsf, bmsc, pcscf and scf), runs
the whole procedure with `mbms-ue run --show-keys` (and again with
--sip-security, whose MUK the SCF sends the BM-SC), then a bootstrap that
needs an AUTS resynchronisation, and answers a Ub challenge with a wrong
RES (the failure path); afterwards neither the daemon's log nor
/metrics holds any key, and no subscriber identifier is a metric label.

Log level: the node runs with node.log_level = "debug", the most verbose
log it can write (the test checks that debug lines are there), once in each
node.log_format: text, and json (where the JSON lines are also decoded, so
that a key spelled inside a JSON string is looked for as it was logged).

The keys looked for, each in hex (either case), in base64 (standard and
URL-safe, at any byte alignment inside a longer value) and as a Python bytes
repr:
  - K, OP and OPc of the demo subscriber (TS 35.208 test set 1);
  - for every RAND the UE's USIM was challenged with (Ub, and REGISTER at
    the P-CSCF; the UE is mbms-ue's own main(), with the USIM's
    authenticate() wrapped to print each RAND) and the one answered
    wrongly: RES (= XRES), CK, IK, and
    for the Ub RAND Ks = CK || IK and Ks_NAF, all computed here with our
    Milenage and the TS 33.220 KDF (Ks_NAF checked against the UE's
    --show-keys output);
  - the MSKs the UE received (from --show-keys);
  - the MTKs and their salts of the demo streaming service, from the MTK
    messages on the bearer's key port, opened here with that MSK;
  - the node's key file (storage.key_file), which seals keys at rest.
"""

import base64
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from mbmsd.protocols import digest, gba, mikey, milenage
from tests.support.daemon import Daemon, http, lines_of, whole_run
from tests.support.helpers import TEST_SET_1_K as K
from tests.support.helpers import TEST_SET_1_OP as OP
from tests.support.helpers import TEST_SET_1_OPC as OPC

pytestmark = pytest.mark.external

IMPI = "user1@home1.net"
IMPU = "sip:user1@home1.net"
REALM = "bsf.home1.net"

UE = """
import sys
from mbmsd.ue import ub
from mbmsd.ue.cli import main

_authenticate = ub.Usim.authenticate

def authenticate(self, rand, autn):
    sys.stderr.write("usim-rand %s\\n" % (rand.hex(),))
    sys.stderr.flush()
    return _authenticate(self, rand, autn)

ub.Usim.authenticate = authenticate
main(sys.argv[1:])
"""


def forms(secret):
    """Every spelling of C{secret} looked for: hex, base64 at 3 alignments, repr."""
    out = {secret.hex(), secret.hex().upper(), repr(secret)[2:-1]}
    for pad in range(3):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            text = encode(b"\0" * pad + secret + b"\0\0").decode("ascii")
            # the characters made of the secret's bits only
            first = -(-8 * pad // 6)
            last = (8 * (pad + len(secret))) // 6
            out.add(text[first:last])
    return out


def leaks(secrets, text):
    return sorted(name for name, secret in secrets.items()
                  if any(f in text for f in forms(secret)))


def test_the_detector_finds_every_spelling():
    # the search below can fail: each spelling of a key inside other text is found
    key = bytes(range(100, 116))
    for pad in range(3):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            blob = encode(b"x" * pad + key + b"yz").decode()
            assert leaks({"key": key}, "value=" + blob + ";") == ["key"]
    assert leaks({"key": key}, "K=" + key.hex().upper()) == ["key"]
    assert leaks({"key": key}, "k=%r" % (key,)) == ["key"]
    assert leaks({"key": key}, "k=" + key[:15].hex()) == []


def run_ue(workdir, *args, timeout=90):
    script = Path(workdir) / "ue.py"
    script.write_text(UE)
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True,
                          timeout=timeout)


def decoded(log):
    """The log, and for JSON lines every string in them as it was logged."""
    out = [log]
    for line in log.splitlines():
        if line.startswith("{"):
            out.extend(str(v) for v in json.loads(line).values())
    return "\n".join(out)


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_no_key_in_log_or_metrics(tmp_path, fmt):
    from prometheus_client.parser import text_string_to_metric_families

    d = Daemon(tmp_path, settings={"node": {"log_level": "debug", "log_format": fmt}})
    keyPort = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    keyPort.bind(("127.0.0.1", d.ports["bearer_key"]))  # the MTK messages of the demo service
    keyPort.settimeout(5)
    d.start()
    try:
        common = ["--bsf", d.ub, "--pcscf", "sip:127.0.0.1:%d" % d.ports["pcscf"]]
        run = run_ue(tmp_path, "run", "--show-keys", *common, "--bmsc", d.url("bmsc", ""),
                     "--mikey-port", str(d.ports["mikey"]))
        report = run.stdout + run.stderr + d.log()[-6000:]
        steps = whole_run(run, report)
        # the SIP-based security procedure: the SCF's Ks_NAF travels to the BM-SC as the MUK
        sip = run_ue(tmp_path, "run", "--sip-security", "--show-keys", *common,
                     "--mikey-port", str(d.ports["mikey"]))
        assert sip.returncode == 0, sip.stdout + sip.stderr + d.log()[-6000:]
        sipSteps = lines_of(sip)
        assert "401 challenged" in d.log() and "authorizing at the BM-SC" in d.log()  # debug
        # an AUTS resynchronisation: the USIM claims an SQN ahead of the BSF's
        resync = run_ue(tmp_path, "bootstrap", "--show-keys", "--bsf", d.ub,
                        "--sqn-ms", "fffffff00000")
        assert resync.returncode == 0, resync.stdout + resync.stderr + d.log()[-4000:]
        [again] = lines_of(resync)
        assert again["resynchronised"] is True
        # a wrong RES at Ub: the failure path, where the BSF holds XRES
        status, headers, _ = http("GET", d.ub, headers={
            "Authorization": digest.format_authorization(IMPI, REALM, "", "/", "")})
        assert status == 401
        nonce = digest.parse_challenge(
            {k.lower(): v for k, v in headers.items()}["www-authenticate"]).nonce
        wrong = digest.format_authorization(IMPI, REALM, nonce, "/", "0" * 32, "AKAv1-MD5",
                                            "auth-int", "00000001", "c0ffee")
        assert http("GET", d.ub, headers={"Authorization": wrong})[0] in (401, 403)
        mtkMessages = [keyPort.recv(4096) for _ in range(3)]
        _, _, metrics = http("GET", d.url("metrics", "/metrics"))
        metrics = metrics.decode("utf-8")
    finally:
        d.stop()
        keyPort.close()
    log = decoded(d.log())
    if fmt == "json":
        assert all(json.loads(line) for line in d.log().splitlines())

    # the keys, computed here
    secrets = {"K": K, "OP": OP, "OPc": OPC}
    rands = [bytes.fromhex(line.split()[1])
             for line in (run.stderr + sip.stderr + resync.stderr).splitlines()
             if line.startswith("usim-rand ")]
    assert len(rands) >= 6, run.stderr  # Ub and REGISTER twice, then Ub twice (resync)
    rands.append(gba.decode_nonce(nonce)[0])  # the challenge answered wrongly
    m = milenage.Milenage(K, OPC)
    for i, rand in enumerate(rands):
        res, ck, ik, _ = m.f2345(rand)
        secrets.update({"RES%d" % i: res, "CK%d" % i: ck, "IK%d" % i: ik})
    boot = next(s for s in steps if s["step"] == "bootstrap")
    # TS 33.220 H.3: the HTTP-based procedure of TS 26.237 by default
    assert boot["nafId"] == (b"bmsc.home1.net" + bytes.fromhex("0100000003")).hex()
    for name, line in (("run", boot), ("resync", again)):
        rand, _ = gba.parse_btid(line["btid"])
        assert rand in rands
        res, ck, ik, _ = m.f2345(rand)
        ksNaf = gba.derive_ks_naf(ck + ik, rand, IMPI, bytes.fromhex(line["nafId"]))
        # our KDF agrees with what the UE derived and used at the BM-SC
        assert base64.b64decode(line["ksNaf"]) == ksNaf
        secrets.update({"Ks-" + name: ck + ik, "Ks_NAF-" + name: ksNaf})
    rand, _ = gba.parse_btid(next(s for s in sipSteps if s["step"] == "bootstrap")["btid"])
    _, ck, ik, _ = m.f2345(rand)
    secrets["MUK-sip"] = gba.derive_ks_naf(
        ck + ik, rand, IMPI, gba.naf_id("scf.home1.net", gba.UA_PROTOCOL_26237_SIP))
    secrets["Ks-sip"] = ck + ik
    msks = [bytes.fromhex(s["msk"]) for s in steps + sipSteps if s["step"] == "msk"]
    assert len(msks) == 2
    secrets.update({"MSK%d" % i: msk for i, msk in enumerate(msks)})
    for i, message in enumerate(mtkMessages):
        delivery = mikey.parse_mtk_message(msks[0], message)
        secrets.update({"MTK%d" % i: delivery.mtk, "MTK salt%d" % i: delivery.salt})
    secrets["node key"] = bytes.fromhex((tmp_path / "var" / "mbmsd.key").read_text().strip())

    # the log is the daemon's, and it saw the whole procedure
    assert "ready (mbmsd" in log and "Ub GET" in log and "register" in log, log[-3000:]
    assert leaks(secrets, log) == [], "keys in the daemon's log"
    assert leaks(secrets, metrics) == [], "keys in /metrics"

    # no subscriber identifier as a label value
    sipBoot = next(s for s in sipSteps if s["step"] == "bootstrap")
    btids = [boot["btid"], again["btid"], sipBoot["btid"]]
    identifiers = [IMPI, IMPU] + btids + [b.split("@")[0] for b in btids]
    labelled = []
    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            for label, value in sample.labels.items():
                if any(i in value for i in identifiers):
                    labelled.append((sample.name, label, value))
    assert labelled == []
    # the counters moved, so the labels looked at are the ones the procedure set
    assert "mbmsd_bsf_ub_requests_total" in metrics and "mbmsd_bmsc_requests_total" in metrics
