"""
TS 26.237's SIP-based security procedure against twistd as operators run
it (etc/mbmsd.toml, all four roles, on free ports):

  - `mbms-ue run --sip-security` on memory, SQLite and PostgreSQL storage:
    REGISTER, bootstrap, INVITE with the B-TID document, the MSK by MIKEY
    under the SCF's Ks_NAF at once (no Ua request at all), verified, BYE;
  - SIPp as the UE sending the multipart INVITE (SDP offer and the Annex
    I.1 document, written in the scenario by hand), the B-TID from a
    bootstrap the test made first; the test is the UE's MIKEY port: the
    MSK message opens under Ks_NAF(SCF FQDN || 01 00 00 00 04), tshark
    decodes it and its verification without a malformed or expert entry,
    and a B-TID the BSF never issued gets 403.
"""

import base64
import socket

import pytest

from mbmsd.protocols import mikey
from mbmsd.protocols.pcap import write_pcap
from tests.daemon.test_ue_run_daemon import SCENARIO as HTTP_SCENARIO
from tests.interop.test_mikey_tshark import _tshark
from tests.support.daemon import ROOT, Daemon, lines_of, metric, run_ue, wait_for
from tests.support.helpers import require_tool
from tests.support.ports import free_port
from tests.support.sippue import SippUe

pytestmark = pytest.mark.external

SERVICE = "urn:mbmsd:news"
SCF_FQDN = "scf.home1.net"
STEPS = ["register", "bootstrap", "invite", "msk", "bye"]


def node(tmp_path, backend):
    """etc/mbmsd.toml on free ports, its [storage] the backend's."""
    if backend == "sqlite":
        return Daemon(tmp_path)
    text = (ROOT / "etc" / "mbmsd.toml").read_text()
    sqlite = 'backend = "sqlite"\npath = "var/mbmsd.sqlite3"\n'
    assert sqlite in text
    storage = {"path": None}
    if backend == "memory":
        text = text.replace(sqlite, 'backend = "memory"\n')
    else:
        from tests.support import pg

        url = pg.dsn()
        pg.reset(url)
        text = text.replace(sqlite, 'backend = "postgresql"\n')
        storage.update(dsn=url, key_file=pg.key_file(), pool_min=1, pool_max=2)
    base = tmp_path / "mbmsd.toml"
    base.write_text(text)
    return Daemon(tmp_path, base=base, settings={"storage": storage})


@pytest.mark.parametrize("backend", ["memory", "sqlite", "postgresql"])
def test_mbms_ue_run_sip_security(tmp_path, backend):
    d = node(tmp_path, backend).start()
    try:
        p = run_ue("run", "--sip-security", "--bsf", d.ub,
                   "--pcscf", "sip:127.0.0.1:%d" % d.ports["pcscf"],
                   "--mikey-port", str(d.ports["mikey"]), timeout=90)
        report = p.stdout + p.stderr + d.log()[-6000:]
        assert p.returncode == 0, report
        lines = lines_of(p)
        assert [x["step"] for x in lines] == STEPS, report
        assert all(x["result"] == "ok" for x in lines), report
        reg, boot, inv, msk, bye = lines
        assert boot["naf"] == SCF_FQDN
        assert inv["status"] == 200 and inv["service"] == SERVICE
        assert msk["verification"] == "sent" and msk["idi"] == SCF_FQDN
        assert bye["status"] == 200
        for line in lines:
            assert "ksNaf" not in line and "msk" not in line
        # the BM-SC got the verification; no Ua request was made
        assert wait_for(lambda: metric(d, "mbmsd_bmsc_mikey_messages_total",
                                       result="verified") == 1.0), d.log()[-4000:]
        assert metric(d, "mbmsd_bmsc_requests_total", requesttype="authorize",
                      status="200") == 1.0
        assert metric(d, "mbmsd_bmsc_requests_total", requesttype="register",
                      status="200") is None
        assert wait_for(lambda: metric(d, "mbmsd_scf_bmsc_requests_total",
                                       requesttype="deauthorize", result="ok") == 1.0)
        assert "with the MUK of scf.home1.net (SIP-based)" in d.log()
    finally:
        d.stop()


# ---------------------------------------------------------------------------
# SIPp as the UE: the same REGISTER, then the INVITE with a multipart body

OFFER = """v=0
      o=- 1 1 IN IP4 [local_ip]
      s=MBMS
      c=IN IP4 [local_ip]
      t=0 0
      m=video 6000 RTP/AVP 96
"""
SDP_PART = """Content-Type: application/sdp
      Content-Length: [len]

      """ + OFFER

# RFC 2046 5.1.1 multipart/mixed: the offer, then TS 26.237 Annex I.1
MULTIPART = """Content-Type: multipart/mixed;boundary=sipp-b0undary
      Content-Length: [len]

      --sipp-b0undary
      Content-Type: application/sdp

      """ + OFFER + """
      --sipp-b0undary
      Content-Type: application/xml

      <?xml version="1.0" encoding="UTF-8"?>
      <mbmsAuthorizedSecurityRegister xmlns="urn:3GPP:metadata:2005:MBMS:bootstrappingTransactionIdentifier">
      <btid>[btid]</btid>
      </mbmsAuthorizedSecurityRegister>
      --sipp-b0undary--
"""

assert SDP_PART in HTTP_SCENARIO
SCENARIO = HTTP_SCENARIO.replace(SDP_PART, MULTIPART)


def bootstrap_for_the_scf(d):
    """A bootstrap made before sipp starts: the B-TID and the SCF's Ks_NAF (0x04)."""
    p = run_ue("bootstrap", "--bsf", d.ub, "--naf", SCF_FQDN, "--ua-id", "0100000004",
               "--show-keys")
    assert p.returncode == 0, p.stdout + p.stderr
    [line] = lines_of(p)
    assert line["nafId"] == (SCF_FQDN.encode() + bytes([1, 0, 0, 0, 4])).hex()
    return line["btid"], base64.b64decode(line["ksNaf"])


def test_sipp_ue_multipart_invite(tmp_path):
    require_tool("tshark")
    scenario = tmp_path / "ue_sip_security.xml"
    scenario.write_text(SCENARIO, encoding="latin-1")
    d = Daemon(tmp_path).start()
    mikeyPort = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # the UE's
    unknown = known = None
    try:
        mikeyPort.bind(("127.0.0.1", d.ports["mikey"]))
        mikeyPort.settimeout(20)
        btid, muk = bootstrap_for_the_scf(d)

        # a B-TID the BSF never issued: 403, and the BM-SC is not asked
        # (each run its own Call-ID: a REGISTER reusing one with a lower CSeq gets 500)
        unknown = SippUe(d, scenario, tmp_path, free_port(), "sip-sec-unknown",
                         ["-key", "btid", "AAAAAAAAAAAAAAAAAAAAAA==@bsf.home1.net"])
        unknown.run().communicate(timeout=60)
        assert unknown.proc.returncode != 0
        assert "SIP/2.0 403" in unknown.read(unknown.msgs), unknown.report()
        assert metric(d, "mbmsd_scf_invites_total", result="unknown_btid") == 1.0, \
            unknown.report()
        assert metric(d, "mbmsd_bmsc_requests_total", requesttype="authorize",
                      status="200") is None

        known = SippUe(d, scenario, tmp_path, free_port(), "sip-sec-known", ["-key", "btid", btid])
        proc = known.run()
        report = known.report
        assert wait_for(known.answered, timeout=30), report()
        # the MSK arrives at once, under the SCF's Ks_NAF, IDi its FQDN
        data, bmsc = mikeyPort.recvfrom(65535)
        delivery = mikey.parse_msk_message(muk, data)
        assert delivery.idi == SCF_FQDN.encode() and delivery.idr == btid.encode()
        verification = mikey.build_verification(muk, data)
        mikeyPort.sendto(verification, bmsc)
        assert wait_for(lambda: metric(d, "mbmsd_bmsc_mikey_messages_total",
                                       result="verified") == 1.0), report()
        pcap = str(tmp_path / "sip-security.pcap")
        write_pcap(pcap, [(bmsc[0], bmsc[1], "127.0.0.1", 4359, data),
                          ("127.0.0.1", 4359, bmsc[0], bmsc[1], verification)])
        assert _tshark(pcap, "-o", "udp.check_checksum:TRUE",
                       "-Y", "_ws.malformed || _ws.expert").strip() == ""
        ids = _tshark(pcap, "-T", "fields", "-E", "occurrence=a", "-E", "aggregator=,",
                      "-e", "mikey.id.data").split()
        assert ids == ["%s,%s" % (SCF_FQDN, btid)], ids

        # go: sipp sends its BYE; the SCF withdraws the authorization and the MUK
        known.go()
        _, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 0, stderr.decode(errors="replace") + report()
        assert wait_for(lambda: metric(d, "mbmsd_scf_bmsc_requests_total",
                                       requesttype="deauthorize", result="ok") == 1.0), report()
    finally:
        mikeyPort.close()
        for ue in (unknown, known):
            if ue is not None:
                ue.kill()
        d.stop()
