"""
Log injection (issue 12 item 3), on a node started as operators start it
(twistd, etc/mbmsd.toml with every role, node.log_level = "debug" so that the
most lines are written): each interface gets values holding control
characters, and the log holds none of them raw, holds their escaped form
where the value is logged, and one line per event; in the json format each
line is one JSON object.

The characters: CR, LF, ESC [ (a CSI sequence), NUL, DEL, the C1 controls
NEL (U+0085) and CSI (U+009B), and LINE SEPARATOR (U+2028). Each interface
gets what its syntax can carry: a JSON or XML body all of them (XML 1.0
forbids NUL and ESC, so the XML body uses the rest), an HTTP or SIP header
everything but CR and LF (they end the header line; a bare CR or LF inside
one is sent too and must be refused or escaped).
"""

import json
import re
import socket
import threading
from pathlib import Path

import pytest

from tests.support.daemon import ROOT, Daemon, run_ue, wait_for

pytestmark = pytest.mark.external

CONTROLS = "\r\n\x1b[31m\x00\x7f\u0085\u009b\u2028"
# what a header carries (Twisted refuses NUL, CR, LF in one; so does our SIP parser)
IN_HEADER = "\x1b[31m\x7f\u0085\u009b\u2028"
ASCII_CONTROLS = "\x1b[31m\x7f\x1b]0;t\x07"
# the escaped forms, written out by hand
ESCAPED_HEADER = r"\x1b[31m\x7f\x85\x9b\u2028"
NAF_ID = "626d73632e686f6d65312e6e65740100000001"  # bmsc.home1.net, Ua id 01 00 00 00 01
# the Zn request of the README's Logs section, whose log lines it shows
README_BTID = "x\r\ny\x1b[31mz@bsf.home1.net"
STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} \[[^\]]+\] ")


def raw_http(port, head, body=b""):
    """One request, as bytes; the status code of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % (len(body),) + body)
        answer = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            answer += chunk
    return int(answer.split(b" ", 2)[1])


class HostileBmsc:
    """An HTTP server as the SCF's BM-SC that answers with control characters."""

    ANSWER = (
        b"HTTP/1.1 200 \x1b[31mOK\x85\r\n"
        b"Content-Type: application/mbms-authorize-response+xml\r\n"
        b"X-Note: \x1b]0;owned\x07\x7f\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n%s")
    BODY = ('<mbmsAuthorizeResponse xmlns="urn:mbmsd:xml:ns:mbms-authorize:1">'
            '<serviceId status="200">urn:mbmsd:news\r\n\x7f\u0085\u2028</serviceId>'
            '</mbmsAuthorizeResponse>').encode("utf-8")

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.asked = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                self.asked += 1
                conn.sendall(self.ANSWER % (len(self.BODY), self.BODY))

    def close(self):
        self.sock.close()


def sip_request(method, uri, port, call_id, extra=""):
    return ("%s %s SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:%d;branch=z9hG4bK%s\r\n"
            "Max-Forwards: 70\r\nFrom: <sip:user1@home1.net>;tag=1\r\n"
            "To: <sip:user1@home1.net>\r\nCall-ID: %s\r\nCSeq: 1 %s\r\n"
            "Contact: <sip:user1@127.0.0.1:%d>\r\n%sContent-Length: 0\r\n\r\n"
            % (method, uri, port, abs(hash((method, call_id, extra))), call_id, method,
               port, extra)).encode("utf-8")


def entries(log, fmt):
    """(message, whole line) of each log entry; asserts one line per event."""
    out = []
    for line in log.splitlines():
        if fmt == "json":
            record = json.loads(line)  # every line is one JSON object
            assert set(record) >= {"time", "level", "node", "namespace", "message"}, line
            out.append((record["message"], line))
        else:
            assert STAMP.match(line), "not an event's own line: %r" % (line,)
            out.append((line, line))
    return out


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_no_peer_control_character_reaches_the_log(tmp_path, fmt):
    bmsc = HostileBmsc()
    d = Daemon(tmp_path, settings={
        "node": {"log_level": "debug", "log_format": fmt},
        # the SCF's HTTP client asks the hostile BM-SC; the node's own BM-SC still serves Ua
        "scf": {"bmsc_url": "http://127.0.0.1:%d" % (bmsc.port,)},
    }).start()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        udp.bind(("127.0.0.1", 0))
        udp.settimeout(10)
        port = udp.getsockname()[1]
        # Zn: a JSON body carries every control character
        assert raw_http(d.ports["zn"], b"POST /zn/v1/naf-keys HTTP/1.1\r\nHost: bsf\r\n",
                        json.dumps({"btid": "x" + CONTROLS + "@bsf.home1.net",
                                    "nafId": NAF_ID}).encode()) == 404
        assert raw_http(d.ports["zn"], b"POST /zn/v1/naf-keys HTTP/1.1\r\nHost: bsf\r\n",
                        json.dumps({"btid": README_BTID, "nafId": NAF_ID}).encode()) == 404
        # Ub: in the Digest username (refused: a control character in a quoted-string)
        digest = (b'Authorization: Digest username="u%s@home1.net", realm="bsf.home1.net", '
                  b'nonce="", uri="/", response=""\r\n')
        assert raw_http(d.ports["ub"], b"GET / HTTP/1.1\r\nHost: bsf\r\n"
                        + digest % (ASCII_CONTROLS.encode(),)) == 400
        # ... and with NUL, which Twisted's HTTP parser refuses before mbmsd sees it
        assert raw_http(d.ports["ub"], b"GET / HTTP/1.1\r\nHost: bsf\r\n"
                        + digest % (b"\x00",)) == 400
        # BM-SC key management: the SCF's asserted identity and the XML body ...
        assert raw_http(
            d.ports["bmsc"],
            b"POST /keymanagement?requesttype=authorize HTTP/1.1\r\nHost: bmsc\r\n"
            b'X-3GPP-Asserted-Identity: "sip:a' + IN_HEADER.encode() + b'@home1.net"\r\n'
            b"Content-Type: application/mbms-authorize+xml\r\n",
            ('<mbmsAuthorize xmlns="urn:mbmsd:xml:ns:mbms-authorize:1"><serviceId>urn:x\r\n'
             '\x7f\u0085\u2028</serviceId><ueIPaddress>127.0.0.1</ueIPaddress></mbmsAuthorize>'
             ).encode()) == 400
        # ... and a UE's Digest at Ua
        assert raw_http(
            d.ports["bmsc"],
            b"POST /keymanagement?requesttype=register HTTP/1.1\r\nHost: bmsc\r\n"
            b'Authorization: Digest username="b' + ASCII_CONTROLS.encode()
            + b'@bsf.home1.net", realm="bmsc.home1.net", nonce="", '
            b'uri="/keymanagement?requesttype=register", response=""\r\n'
            b"Content-Type: application/mbms-register+xml\r\n", b"<x/>") == 400
        # P-CSCF and SCF over SIP: the Call-ID
        call_id = "i" + IN_HEADER
        udp.sendto(sip_request("INVITE", "sip:urn%3Ambmsd%3Anews@mbms.home1.net", port, call_id),
                   ("127.0.0.1", d.ports["pcscf"]))
        udp.sendto(sip_request("INVITE", "sip:urn%3Ax%0D%0A%1B%5B31m@mbms.home1.net", port,
                               call_id), ("127.0.0.1", d.ports["scf"]))
        udp.sendto(sip_request("REGISTER", "sip:home1.net", port, "r" + IN_HEADER,
                               'Authorization: Digest username="u%s@home1.net", realm="home1.net",'
                               ' nonce="", uri="sip:home1.net", response=""\r\n'
                               % (ASCII_CONTROLS,)), ("127.0.0.1", d.ports["pcscf"]))
        # a message the SIP parser cannot read, with a bare CR and LF in its first line
        udp.sendto(b"\x1b[2J\rINVITE\n\x00 sip:x SIP/2.0\r\n\r\n", ("127.0.0.1", d.ports["scf"]))
        # MIKEY: a forged verification to the BM-SC's MSK socket
        mikey = int(re.search(r"MikeyDelivery starting on (\d+)", d.log()).group(1))
        udp.sendto(b"\x01\x00\x1b[31m\r\n" + CONTROLS.encode(), ("127.0.0.1", mikey))
        # the SCF's HTTP client reads the hostile BM-SC's answer
        invite = run_ue("invite", "--pcscf",
                        "sip:127.0.0.1:%d" % (d.ports["pcscf"],), "--hold", "0")
        assert invite.returncode != 0, invite.stdout + invite.stderr + d.log()[-3000:]
        assert bmsc.asked >= 1, invite.stdout + invite.stderr + d.log()[-3000:]
        assert wait_for(lambda: "unmatched, forged or replayed" in d.log()
                        and d.log().count("from UDP 127.0.0.1:%d" % (port,)) >= 2
                        and "dropped a datagram" in d.log())
    finally:
        udp.close()
        d.stop()
        bmsc.close()
    log = d.log()
    # no raw control character anywhere (a line ends with its own LF only)
    for line in log.splitlines():
        bad = [ch for ch in line if not ch.isprintable()]
        assert bad == [], "raw %r in the log line %r" % (bad, line)
    assert "Traceback" not in log
    messages = [m for m, _ in entries(log, fmt)]

    def logged(*parts):
        found = [m for m in messages if all(p in m for p in parts)]
        assert found, "no log line with %r:\n%s" % (parts, "\n".join(messages[-40:]))
        return found

    # the escaped forms, where the value is logged
    logged(r"Zn from 127.0.0.1: 404 unknown_btid btid=x\x0d\x0a\x1b[31m\x00\x7f\x85\x9b\u2028"
           "@bsf.home1.net")
    logged("authorize from 127.0.0.1: 400", r"user=sip:a\x1b[31m\x7f")
    logged("INVITE i" + ESCAPED_HEADER + " from UDP 127.0.0.1:%d: 403" % (port,))    # P-CSCF
    logged("INVITE i" + ESCAPED_HEADER + ": 403 (no_identity)")                       # SCF
    # refused where a protocol's syntax forbids them (logged without the value)
    logged("Ub GET from 127.0.0.1: 400 bad_request", "control character")
    logged("register from 127.0.0.1: 400", "control character")
    logged("REGISTER sip:user1@home1.net (-) from UDP 127.0.0.1:%d: 400" % (port,))
    logged("dropped a datagram from", "400 Bad Request")
    logged("MIKEY: unmatched, forged or replayed verification from 127.0.0.1")
    # the HTTP client's answer: the reason phrase, headers and body stay out of the log
    logged("the BM-SC refused", "malformed acknowledgement")
    assert "owned" not in log and "OK" + "\\x85" not in log
    readme_sample_is_logged(log, fmt)
    if fmt == "json":
        zn = [json.loads(l) for _, l in entries(log, fmt) if '"procedure": "zn"' in l]
        assert zn and zn[0]["btid"].startswith("x" + r"\x0d\x0a\x1b[31m")
        assert zn[0]["peer"] == "127.0.0.1" and zn[0]["result"] == "unknown_btid"
        assert zn[0]["role"] == "bsf" and zn[0]["node"] == "mbmsd-1"


def readme_sample_is_logged(log, fmt):
    """The README's Logs section shows the lines the node wrote (but the time)."""
    readme = (Path(ROOT) / "README.md").read_text()
    logs = readme[readme.index("\n## Logs\n"):]
    text, js = re.findall(r"```(?:json)?\n(.*?)```", logs, re.S)[:2]
    btid = "btid=" + README_BTID.replace("\r", "\\x0d").replace("\n", "\\x0a").replace(
        "\x1b", "\\x1b")
    if fmt == "text":
        [line] = [l for l in log.splitlines() if l.endswith(btid)]
        assert STAMP.sub("", line) == STAMP.sub("", text.strip())
        assert STAMP.match(text.strip())
    else:
        [line] = [json.loads(l) for l in log.splitlines() if json.loads(l).get("btid") == btid[5:]]
        shown = json.loads(js)
        assert list(shown) == list(line)
        assert {k: v for k, v in shown.items() if k != "time"} == \
            {k: v for k, v in line.items() if k != "time"}
