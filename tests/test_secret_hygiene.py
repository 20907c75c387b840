"""
Secret hygiene (issue "Hardening" 5): the all-in-one node, started as
operators start it (twistd, etc/mbmsd.toml: bsf, bmsc, pcscf and scf), runs
the whole procedure with `mbms-ue run --show-keys`, then a bootstrap that
needs an AUTS resynchronisation, and answers a Ub challenge with a wrong
RES (the failure path); afterwards neither the daemon's log nor
/metrics holds any key, and no subscriber identifier is a metric label.

Log level: the node runs with node.log_level = "debug", the most verbose
log it can write (the test checks that debug lines are there).

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
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from mbmsd.protocols import digest, gba, mikey, milenage
from tests.daemon import Daemon, http, lines_of, whole_run
from tests.helpers import TEST_SET_1_K as K, TEST_SET_1_OP as OP, TEST_SET_1_OPC as OPC

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


def test_no_key_in_log_or_metrics(tmp_path):
    from prometheus_client.parser import text_string_to_metric_families

    d = Daemon(tmp_path, settings={"node": {"log_level": "debug"}})
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
    log = d.log()

    # the keys, computed here
    secrets = {"K": K, "OP": OP, "OPc": OPC}
    rands = [bytes.fromhex(line.split()[1]) for line in (run.stderr + resync.stderr).splitlines()
             if line.startswith("usim-rand ")]
    assert len(rands) >= 4, run.stderr  # Ub and REGISTER, then Ub twice (resync)
    rands.append(gba.decode_nonce(nonce)[0])  # the challenge answered wrongly
    m = milenage.Milenage(K, OPC)
    for i, rand in enumerate(rands):
        res, ck, ik, _ = m.f2345(rand)
        secrets.update({"RES%d" % i: res, "CK%d" % i: ck, "IK%d" % i: ik})
    for name, line in (("run", steps[0]), ("resync", again)):
        rand, _ = gba.parse_btid(line["btid"])
        assert rand in rands
        res, ck, ik, _ = m.f2345(rand)
        ksNaf = gba.derive_ks_naf(ck + ik, rand, IMPI, bytes.fromhex(line["nafId"]))
        # our KDF agrees with what the UE derived and used at the BM-SC
        assert base64.b64decode(line["ksNaf"]) == ksNaf
        secrets.update({"Ks-" + name: ck + ik, "Ks_NAF-" + name: ksNaf})
    msks = [bytes.fromhex(s["msk"]) for s in steps if s["step"] == "msk"]
    assert msks
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
    btids = [steps[0]["btid"], again["btid"]]
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
