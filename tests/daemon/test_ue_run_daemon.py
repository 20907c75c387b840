"""
The whole IMS-based MBMS procedure against twistd as operators run it: one
node with the four roles (BSF, BM-SC, P-CSCF, SCF; etc/mbmsd.toml plus an
overlay on free ports, the demo service and subscription):

  - `mbms-ue run`: bootstrap, REGISTER (AKA at the P-CSCF), INVITE (P-CSCF ->
    SCF -> BM-SC authorize), MSK registration and the MSK over MIKEY, BYE:
    exit 0 with a line per step, no key printed;
  - sipp as the UE for SIP (REGISTER with sipp's own AKA, INVITE of the demo
    service through the P-CSCF): 200 OK with the service's SDP; while the
    session lasts `mbms-ue msk-register` from the same IP gets 200 for the
    service (the BM-SC holds the SCF's authorization) and the MSK; after
    the BYE the registration is refused (403).
"""

import pytest

from tests.support.daemon import Daemon, lines_of, metric, run_ue, wait_for, whole_run
from tests.support.ports import free_port
from tests.support.sippue import SippUe

pytestmark = pytest.mark.external

IMPU = "sip:user1@home1.net"
SERVICE = "urn:mbmsd:news"

def four_roles(tmp_path):
    """
    etc/mbmsd.toml as it is (all four roles) on free ports: the SCF asks the
    BM-SC in-process (its scf.bmsc_url = "local"), not the overlay's URL.
    """
    return Daemon(tmp_path, settings={"scf": {"bmsc_url": None}})


def test_mbms_ue_run(tmp_path):
    d = four_roles(tmp_path).start()
    try:
        p = run_ue("run", "--bsf", d.ub, "--pcscf", "sip:127.0.0.1:%d" % d.ports["pcscf"],
                   "--bmsc", d.url("bmsc", ""), "--mikey-port", str(d.ports["mikey"]),
                   timeout=90)
        lines = whole_run(p, p.stdout + p.stderr + d.log()[-6000:])
        reg, boot, inv, msk_reg, msk, bye = lines
        assert reg["associated"][0] == IMPU
        assert boot["btid"].endswith("@bsf.home1.net")
        assert inv["status"] == 200
        assert inv["uri"] == "sip:urn%3Ambmsd%3Anews@mbms.home1.net"
        assert inv["sdp"]["media"][0]["media"] == "video"
        assert inv["sdp"]["media"][0]["rtpmap"] == ["96 H264/90000"]
        assert msk_reg["services"] == {SERVICE: 200}
        assert msk["verification"] == "sent"
        assert bye["status"] == 200
        for line in lines:
            assert "ksNaf" not in line and "msk" not in line
        # the SCF saw the session and its end, and withdrew the authorization
        assert metric(d, "mbmsd_scf_invites_total", result="ok") == 1.0
        assert wait_for(lambda: metric(d, "mbmsd_scf_sessions_ended_total",
                                       reason="bye") == 1.0), d.log()[-4000:]
        assert wait_for(lambda: metric(d, "mbmsd_scf_bmsc_requests_total",
                                       requesttype="deauthorize", result="ok") == 1.0)
        # in-process: the BM-SC's own series and log line, no HTTP request
        assert metric(d, "mbmsd_bmsc_requests_total", requesttype="authorize",
                      status="200") == 1.0
        assert "authorize from scf (in-process): 200" in d.log()
    finally:
        d.stop()


def test_mbms_ue_register_and_invite_over_tcp(tmp_path):
    d = four_roles(tmp_path).start()
    try:
        pcscf = "sip:127.0.0.1:%d;transport=tcp" % d.ports["pcscf"]
        p = run_ue("register", "--pcscf", pcscf)
        assert p.returncode == 0, p.stdout + p.stderr + d.log()[-4000:]
        [line] = lines_of(p)
        assert line["associated"] == [IMPU] and line["contact"].endswith(";transport=tcp")
        p = run_ue("invite", "--pcscf", pcscf, "--hold", "0.5", timeout=60)
        assert p.returncode == 0, p.stdout + p.stderr + d.log()[-4000:]
        assert [x["step"] for x in lines_of(p)] == ["register", "invite", "bye"]
    finally:
        d.stop()


def test_run_bootstraps_only_after_the_ims_registration(tmp_path):
    """
    TS 26.237 10.1: GBA bootstrapping follows a successful IMS registration.
    A REGISTER that fails (a wrong K: the AUTN does not verify) ends the run
    before the UE asks the BSF anything.
    """
    d = four_roles(tmp_path).start()
    try:
        p = run_ue("run", "--bsf", d.ub, "--pcscf", "sip:127.0.0.1:%d" % d.ports["pcscf"],
                   "--bmsc", d.url("bmsc", ""), "--mikey-port", str(d.ports["mikey"]),
                   "--k", "00" * 16, timeout=60)
        assert p.returncode == 1, p.stdout + p.stderr
        [line] = lines_of(p)
        assert (line["step"], line["result"]) == ("register", "failed"), line
        assert metric(d, "mbmsd_bsf_ub_requests_total", result="challenged") in (None, 0.0)
    finally:
        d.stop()


def test_wrong_key_fails_at_register(tmp_path):
    d = four_roles(tmp_path).start()
    try:
        p = run_ue("register", "--pcscf", "sip:127.0.0.1:%d" % d.ports["pcscf"],
                   "--k", "00" * 16)
        assert p.returncode == 1
        [line] = lines_of(p)
        assert (line["step"], line["result"]) == ("register", "failed")
        assert "not authentic" in line["error"]
    finally:
        d.stop()


# ---------------------------------------------------------------------------
# sipp as the UE's SIP side

SCENARIO = r"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="UE: REGISTER with AKA, INVITE the MBMS service, (go), BYE">
  <send retrans="500"><![CDATA[

      REGISTER sip:home1.net SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      Max-Forwards: 70
      From: <sip:user1@home1.net>;tag=[pid]SIPpTag00[call_number]
      To: <sip:user1@home1.net>
      Call-ID: [call_id]
      CSeq: 1 REGISTER
      Contact: <sip:user1@[local_ip]:[local_port]>
      Expires: 600
      Content-Length: 0

    ]]></send>

  <recv response="401" auth="true"/>

  <send retrans="500"><![CDATA[

      REGISTER sip:home1.net SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      Max-Forwards: 70
      From: <sip:user1@home1.net>;tag=[pid]SIPpTag00[call_number]
      To: <sip:user1@home1.net>
      Call-ID: [call_id]
      CSeq: 2 REGISTER
      Contact: <sip:user1@[local_ip]:[local_port]>
      Expires: 600
      [authentication username=user1@home1.net aka_OP=\xCD\xC2\x02\xD5\x12\x3E\x20\xF6\x2B\x6D\x67\x6A\xC7\x2C\xB3\x18 aka_K=\x46\x5B\x5C\xE8\xB1\x99\xB4\x9F\xAA\x5F\x0A\x2E\xE2\x38\xA6\xBC aka_AMF=\xB9\xB9]
      Content-Length: 0

    ]]></send>

  <recv response="200"/>

  <send retrans="500"><![CDATA[

      INVITE sip:urn%3Ambmsd%3Anews@mbms.home1.net SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      Max-Forwards: 70
      From: <sip:user1@home1.net>;tag=[pid]SIPpTag00[call_number]
      To: <sip:urn%3Ambmsd%3Anews@mbms.home1.net>
      Call-ID: [call_id]
      CSeq: 3 INVITE
      Contact: <sip:user1@[local_ip]:[local_port]>
      P-Preferred-Identity: <sip:user1@home1.net>
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=- 1 1 IN IP4 [local_ip]
      s=MBMS
      c=IN IP4 [local_ip]
      t=0 0
      m=video 6000 RTP/AVP 96

    ]]></send>

  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="200" rrs="true" rtd="true">
    <action>
      <ereg regexp="Content-Type: application/sdp" search_in="msg" check_it="true"
            assign_to="ctype"/>
      <ereg regexp="m=video 5000 RTP/AVP 96" search_in="body" check_it="true"
            assign_to="media"/>
      <ereg regexp="a=rtpmap:96 H264/90000" search_in="body" check_it="true"
            assign_to="rtpmap"/>
      <log message="200 OK with [$ctype], [$media], [$rtpmap]"/>
    </action>
  </recv>

  <send><![CDATA[

      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      [routes]
      Max-Forwards: 70
      From: <sip:user1@home1.net>;tag=[pid]SIPpTag00[call_number]
      To: <sip:urn%3Ambmsd%3Anews@mbms.home1.net>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 3 ACK
      Content-Length: 0

    ]]></send>

  <!-- the test's "go" -->
  <recv request="OPTIONS" timeout="60000"/>

  <send retrans="500"><![CDATA[

      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      [routes]
      Max-Forwards: 70
      From: <sip:user1@home1.net>;tag=[pid]SIPpTag00[call_number]
      To: <sip:urn%3Ambmsd%3Anews@mbms.home1.net>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 4 BYE
      Content-Length: 0

    ]]></send>

  <recv response="200" crlf="true"/>
</scenario>
"""


def msk_register(daemon, wait):
    p = run_ue("msk-register", "--bsf", daemon.ub, "--bmsc", daemon.url("bmsc", ""),
               "--mikey-port", str(daemon.ports["mikey"]), "--wait", str(wait))
    return p.returncode, lines_of(p), p


def ua_statuses(lines):
    return next(line for line in lines if line["step"] == "register")["services"]


def test_sipp_ue_invite_then_msk_register(tmp_path):
    scenario = tmp_path / "ue_register_invite.xml"
    scenario.write_text(SCENARIO, encoding="latin-1")
    d = four_roles(tmp_path).start()
    ue = None
    try:
        # nothing authorized yet
        _, lines, _ = msk_register(d, wait=1)
        assert ua_statuses(lines) == {SERVICE: 403}

        ue = SippUe(d, scenario, tmp_path, free_port(), "ue-run")
        proc = ue.run()
        report = ue.report
        assert wait_for(ue.answered, timeout=30), report()
        assert wait_for(lambda: metric(d, "mbmsd_scf_sessions") == 1.0), report()
        log = ue.read(ue.logs)
        assert "Content-Type: application/sdp" in log and "m=video 5000 RTP/AVP 96" in log

        # the BM-SC holds the authorization: the MSK arrives and verifies
        code, lines, p = msk_register(d, wait=5)
        assert code == 0, p.stdout + p.stderr + report()
        assert ua_statuses(lines) == {SERVICE: 200}
        assert [x["step"] for x in lines] == ["bootstrap", "register", "msk"]

        # go: sipp sends its BYE; the SCF withdraws the authorization
        ue.go()
        _, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 0, stderr.decode(errors="replace") + report()
        assert wait_for(lambda: metric(d, "mbmsd_scf_bmsc_requests_total",
                                       requesttype="deauthorize", result="ok") == 1.0), report()
        _, lines, _ = msk_register(d, wait=1)
        assert ua_statuses(lines) == {SERVICE: 403}
    finally:
        if ue is not None:
            ue.kill()
        d.stop()
