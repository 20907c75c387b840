"""
Zn (TS 33.220 4.5.3): a NAF presents a B-TID and its NAF_Id and gets Ks_NAF.

L{ZnLookup} is the logic and the in-process port (L{IBootstrapLookup}) for a
BM-SC on the same node; L{ZnResource} serves it as HTTP/JSON (docs/design.md 7.6)::

    POST /zn/v1/naf-keys {"btid": "...", "nafId": "<hex>"}
    200 {"impi", "ksNaf" (base64), "expiresAt" (RFC 3339), "gbaType"}
    404 unknown or expired B-TID; 403 not a configured NAF; 400 malformed
"""

import base64
import json
from datetime import datetime, timezone

from twisted.internet.defer import inlineCallbacks, maybeDeferred
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from mbmsd.errors import NafNotAuthorized, UnknownBTID
from mbmsd.interfaces import IBootstrapLookup
from mbmsd.logs import Logger
from mbmsd.protocols import gba
from mbmsd.storage.records import NafKey
from mbmsd.tls import Peer, requestPeer
from mbmsd.web import writeAnswer

log = Logger(namespace="mbmsd.bsf.zn")

MAX_BODY = 4096
UA_ID_LENGTH = 5  # TS 33.220 H.1


@implementer(IBootstrapLookup)
class ZnLookup:
    """
    @param nafs: {NAF FQDN: set of allowed peer addresses}. A peer whose
        verified TLS client certificate names the FQDN is allowed too.
    """

    def __init__(self, store, clock, nafs):
        self.store = store
        self.clock = clock
        self.nafs = nafs

    @inlineCallbacks
    def getNafKey(self, btid, nafId, peer):
        fqdn = nafId[:-UA_ID_LENGTH].decode("ascii", "replace") if len(nafId) > UA_ID_LENGTH else ""
        # peer None: the BM-SC of this very node, in-process (trusted by construction)
        if peer is not None:
            address, names = peer if isinstance(peer, Peer) else (peer, ())
            known = fqdn.lower() in self.nafs
            # docs/design.md 7.6: a configured NAF, by address or by its verified
            # TLS client certificate for its FQDN
            if not known or (address not in self.nafs[fqdn.lower()]
                             and fqdn.lower() not in names):
                raise NafNotAuthorized("%s is not a configured NAF for %s"
                                       % (address, fqdn or "?"))
        session = yield self.store.getSession(btid)
        if session is None or session.expires <= self.clock.seconds():
            raise UnknownBTID(btid)
        # TS 33.220 B.3: Ks_NAF = KDF(Ks, "gba-me", RAND, IMPI, NAF_Id)
        ksNaf = gba.derive_ks_naf(session.ks, session.rand, session.impi, nafId)
        return NafKey(btid=btid, impi=session.impi, ksNaf=ksNaf,
                      expires=session.expires, gbaType=session.gbaType)


RESULTS = ("ok", "unknown_btid", "forbidden", "bad_request", "method_not_allowed", "not_found")


class ZnResource(Resource):
    isLeaf = True

    def __init__(self, lookup, metrics, clock):
        Resource.__init__(self)
        self.lookup = lookup
        self.clock = clock
        self.requests = metrics.counter(
            "mbmsd_bsf_zn_requests_total", "Zn requests by result", ["result"],
            initial=[(r,) for r in RESULTS + ("error",)],
        )
        self.latency = metrics.histogram("mbmsd_bsf_zn_request_seconds",
                                         "Time to answer a Zn request")

    def render(self, request):
        start = self.clock.seconds()
        who = requestPeer(request)
        peer = who.address
        gone = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))

        def send(code, result, payload, btid="-", impi=None):
            self.requests.labels(result).inc()
            self.latency.observe(self.clock.seconds() - start)
            (log.info if code == 200 else log.warn)(
                "Zn from {peer}: {code} {result} btid={btid}",
                peer=peer, code=code, result=result, btid=btid, procedure="zn", impi=impi,
            )
            if gone:
                return
            writeAnswer(request, code, [("Allow", "POST")] if code == 405 else [],
                        "application/json", json.dumps(payload).encode("utf-8"))

        if request.path != b"/zn/v1/naf-keys":
            send(404, "not_found", {"error": "no such resource"})
            return NOT_DONE_YET
        if request.method != b"POST":
            send(405, "method_not_allowed", {"error": "POST only"})
            return NOT_DONE_YET
        try:
            btid, nafId = _parse(request.content.read(MAX_BODY + 1))
        except ValueError as e:
            send(400, "bad_request", {"error": str(e)})
            return NOT_DONE_YET

        def ok(key):
            send(200, "ok", {
                "impi": key.impi,
                "ksNaf": base64.b64encode(key.ksNaf).decode("ascii"),
                "expiresAt": gba.format_utc(datetime.fromtimestamp(int(key.expires), timezone.utc)),
                "gbaType": key.gbaType,
            }, btid, key.impi)

        def failed(f):
            if f.check(UnknownBTID):
                send(404, "unknown_btid", {"error": "unknown or expired B-TID"}, btid)
            elif f.check(NafNotAuthorized):
                send(403, "forbidden", {"error": "not a configured NAF"}, btid)
            else:
                log.failure("Zn request failed", f)
                send(500, "error", {"error": "internal error"}, btid)

        maybeDeferred(self.lookup.getNafKey, btid, nafId, who).addCallbacks(ok, failed)
        return NOT_DONE_YET


def _parse(raw):
    if len(raw) > MAX_BODY:
        raise ValueError("body larger than %d bytes" % (MAX_BODY,))
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        # RecursionError: arrays or objects nested deeper than json can follow
        raise ValueError("body is not JSON") from None
    if not isinstance(doc, dict):
        raise ValueError("body must be a JSON object")
    btid, nafId = doc.get("btid"), doc.get("nafId")
    if not isinstance(btid, str) or not btid or len(btid) > 255:
        raise ValueError("btid must be a B-TID string")
    if not isinstance(nafId, str):
        raise ValueError("nafId must be a hex string")
    try:
        raw_naf = bytes.fromhex(nafId)
    except ValueError:
        raise ValueError("nafId must be a hex string") from None
    if not (UA_ID_LENGTH < len(raw_naf) <= 255 + UA_ID_LENGTH):
        raise ValueError("nafId must be a NAF FQDN followed by a 5-octet Ua id")
    return btid, raw_naf
