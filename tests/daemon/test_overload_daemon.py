"""
Issue 8, "Done when": a load above capacity gets 503s and the node recovers
when the load stops, with no lost acknowledged state.

The node runs as operators run it (twistd, etc/mbmsd.toml: all four roles,
SQLite) with tiny bounds in the overlay: one Ub request and one P-CSCF
request per listener at a time. Threads of plain Python clients (HTTP Digest
AKA on Ub, SIP Digest AKA REGISTER over UDP) push well past that. Then:
every bootstrap that got 200 is known to Zn with the Ks_NAF the UE derived
(also after a restart), every REGISTER that got 200 is still bound, and new
requests are served again.
"""

import base64
import http.client
import json
import re
import secrets
import socket
import threading
import time
from urllib.parse import urlsplit

import pytest
from twisted.internet.defer import succeed

from mbmsd.protocols import digest, gba, milenage
from mbmsd.sip.message import parse_message
from mbmsd.ue.http import HttpAnswer
from mbmsd.ue.ub import BootstrapFailed, UbClient, Usim
from tests.support.daemon import Daemon
from tests.support.helpers import TEST_SET_1_K as K
from tests.support.helpers import TEST_SET_1_OPC as OPC

IMPI = "user1@home1.net"
IMPU = "sip:user1@home1.net"
NAF_ID = gba.naf_id("bmsc.home1.net", gba.UA_PROTOCOL_26237_HTTP)

# twistd as a subprocess (pyproject's 'external'); the clients are plain sockets
pytestmark = pytest.mark.external

LOAD_SECONDS = 3.0
HTTP_CLIENTS = 12
SIP_CLIENTS = 8


# ---------------------------------------------------------------- HTTP (Ub, Zn)


class Requester:
    """The UE's requester (mbmsd.ue.http's contract), blocking, recording statuses."""

    def __init__(self, seen):
        self.seen = seen

    def __call__(self, method, url, headers, body=None):
        parts = urlsplit(url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        try:
            conn.request(method, parts.path or "/", body=body, headers=headers)
            r = conn.getresponse()
            data = r.read()
            hdrs = {}
            for name, value in r.getheaders():
                hdrs.setdefault(name.lower(), []).append(value)
        finally:
            conn.close()
        self.seen.append((r.status, hdrs.get("retry-after", [None])[-1]))
        return succeed(HttpAnswer(r.status, hdrs, data))


def bootstrap(ub, seen):
    """One Ub bootstrap; the Bootstrapped result, or None when refused."""
    client = UbClient(Requester(seen), ub, IMPI, Usim(K, OPC), realm="bsf.home1.net")
    d = client.bootstrap()
    out = []
    d.addBoth(out.append)
    result = out[0]
    if isinstance(getattr(result, "value", None), BootstrapFailed):
        return None
    if hasattr(result, "raiseException"):
        result.raiseException()
    return result


def zn(daemon, btid):
    conn = http.client.HTTPConnection("127.0.0.1", daemon.ports["zn"], timeout=10)
    try:
        conn.request("POST", "/zn/v1/naf-keys",
                     body=json.dumps({"btid": btid, "nafId": NAF_ID.hex()}),
                     headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


# ---------------------------------------------------------------- SIP (REGISTER)


class SipUe:
    """A UE registering over UDP with Digest AKA (RFC 3310), one socket."""

    def __init__(self, pcscf):
        self.pcscf = pcscf
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(10)
        self.port = self.sock.getsockname()[1]
        self.contact = "sip:user1@127.0.0.1:%d" % (self.port,)
        self.callId = secrets.token_hex(8) + "@overload"
        self.cseq = 0

    def close(self):
        self.sock.close()

    def send(self, authorization=None, contact=True):
        self.cseq += 1
        lines = [
            "REGISTER sip:home1.net SIP/2.0",
            "Via: SIP/2.0/UDP 127.0.0.1:%d;rport;branch=z9hG4bK%s" % (self.port,
                                                                     secrets.token_hex(6)),
            "Max-Forwards: 70",
            "From: <%s>;tag=%s" % (IMPU, secrets.token_hex(4)),
            "To: <%s>" % (IMPU,),
            "Call-ID: " + self.callId,
            "CSeq: %d REGISTER" % (self.cseq,),
            "Expires: 600",
        ]
        if contact:
            lines.append("Contact: <%s>" % (self.contact,))
        if authorization:
            lines.append("Authorization: " + authorization)
        self.sock.sendto(("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode(),
                         self.pcscf)
        while True:
            data, _ = self.sock.recvfrom(65535)
            response = parse_message(data)
            # the response to this very request (a late retransmission is skipped)
            if response.cseq[0] == self.cseq and response.status >= 200:
                return response

    def register(self, seen, contact=True):
        """
        @return: the 200, or None when refused (503) on either round.
        """
        first = self.send(contact=contact)
        seen.append((first.status, first.headers.get("Retry-After")))
        if first.status != 401:
            return None
        ch = digest.parse_challenge(first.headers.get("WWW-Authenticate"))
        raw = base64.b64decode(ch.nonce)
        res = milenage.ue_authenticate(K, OPC, raw[:16], raw[16:32]).res
        cnonce = secrets.token_hex(4)
        response = digest.compute_response(res, IMPI, ch.realm, "REGISTER", "sip:home1.net",
                                           ch.nonce, "00000001", cnonce, "auth",
                                           algorithm="AKAv1-MD5")
        second = self.send(digest.format_authorization(
            IMPI, ch.realm, ch.nonce, "sip:home1.net", response, algorithm="AKAv1-MD5",
            qop="auth", nc="00000001", cnonce=cnonce), contact=contact)
        seen.append((second.status, second.headers.get("Retry-After")))
        return second if second.status == 200 else None


def backoff():
    # a short jitter, well under Retry-After: the load stays above capacity
    time.sleep(0.02 + secrets.randbelow(80) / 1000)


def contacts_of(response):
    return {re.match(r"<([^>]*)>", v).group(1) for v in response.headers.getAll("Contact")}


# ---------------------------------------------------------------- the test


def test_load_above_capacity_gets_503_and_the_node_recovers(tmp_path):
    d = Daemon(tmp_path, settings={
        "bsf": {"max_concurrent": 1, "retry_after": 1},
        "pcscf": {"max_concurrent": 1, "retry_after": 1},
    }).start()
    try:
        httpSeen, sipSeen = [], []
        bootstrapped, registered, errors = [], [], []
        stop = time.monotonic() + LOAD_SECONDS
        pcscf = ("127.0.0.1", d.ports["pcscf"])

        def loading():
            # LOAD_SECONDS, and on until both flows have acknowledged state
            # (bounded): a slow machine still checks what was acknowledged
            now = time.monotonic()
            return now < stop or (now < stop + 20 and not (bootstrapped and registered))

        def httpLoad():
            try:
                while loading():
                    result = bootstrap(d.ub, httpSeen)
                    if result is not None:
                        bootstrapped.append(result)
                    else:
                        backoff()
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(repr(e))

        def sipLoad():
            ue = SipUe(pcscf)
            try:
                while loading():
                    ok = ue.register(sipSeen)
                    if ok is not None:
                        registered.append(ue.contact)
                    else:
                        backoff()
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(repr(e))
            finally:
                ue.close()

        threads = [threading.Thread(target=httpLoad) for _ in range(HTTP_CLIENTS)]
        threads += [threading.Thread(target=sipLoad) for _ in range(SIP_CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == [], errors
        print("Ub answers %s, %d bootstraps; REGISTER answers %s, %d registrations" % (
            _tally(httpSeen), len(bootstrapped), _tally(sipSeen), len(registered)))

        # above capacity: 503 with Retry-After on both sides, while some got through
        assert (503, "1") in httpSeen, sorted(set(httpSeen))
        assert (503, "1") in sipSeen, sorted(set(sipSeen))
        assert {s for s, _ in httpSeen} <= {200, 401, 503}, sorted(set(httpSeen))
        assert {s for s, _ in sipSeen} <= {200, 401, 503}, sorted(set(sipSeen))
        assert bootstrapped and registered

        # the load stops: the node serves again, one request at a time
        time.sleep(1.2)
        after = []
        for _ in range(3):
            result = bootstrap(d.ub, after)
            assert result is not None, after
            bootstrapped.append(result)
        ue = SipUe(pcscf)
        try:
            final = ue.register(after)
        finally:
            ue.close()
        assert final is not None and final.status == 200, after
        assert 503 not in [s for s, _ in after]

        # nothing acknowledged was lost: every 200 REGISTER is still bound ...
        assert set(registered) <= contacts_of(final), (registered, contacts_of(final))
        # ... and every B-TID that got 200 is known to Zn with the UE's Ks_NAF
        for b in bootstrapped:
            status, body = zn(d, b.btid)
            assert status == 200, (b.btid, status, body)
            assert base64.b64decode(json.loads(body)["ksNaf"]) == b.ksNaf(NAF_ID)

        status, _, text = _metrics(d)
        assert status == 200
        assert _value(text, "mbmsd_bsf_overload_rejected_total",
                      'listener="ub"', 'scope="listener"') > 0
        assert _value(text, "mbmsd_pcscf_overload_rejected_total",
                      'listener="udp"', 'scope="listener"') > 0
        assert _value(text, "mbmsd_bsf_requests_in_progress", 'listener="ub"') == 0
        assert _value(text, "mbmsd_pcscf_requests_in_progress", 'listener="udp"') == 0
        # never an identity or an address as a label value
        for line in text.splitlines():
            if "overload" in line or "in_progress" in line or "auth_" in line:
                assert "127.0.0.1" not in line and "user1" not in line, line

        # and it is durable: after a restart Zn still knows every B-TID
        assert d.stop() in (0, -15)  # SIGTERM: a clean stop
        d.start()
        for b in bootstrapped:
            assert zn(d, b.btid)[0] == 200, b.btid
    finally:
        d.stop()


def _tally(seen):
    out = {}
    for status, _ in seen:
        out[status] = out.get(status, 0) + 1
    return dict(sorted(out.items()))


def _metrics(d):
    conn = http.client.HTTPConnection("127.0.0.1", d.ports["metrics"], timeout=10)
    try:
        conn.request("GET", "/metrics")
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read().decode()
    finally:
        conn.close()


def _value(text, name, *labels):
    for line in text.splitlines():
        if line.startswith(name + "{") and all(l in line for l in labels):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError("%s{%s} not in /metrics" % (name, ",".join(labels)))
