"""
The admin HTTP API: JSON under C{/admin/v1/}, the same shape on every node.

    POST   /admin/v1/subscribers                {"impi", "impus": [...], "k",
                                                 "op" or "opc", "amf", "sqn"} -> 201
    GET    /admin/v1/subscribers?after=IMPI&limit=N                          -> 200
    GET    /admin/v1/subscribers/{impi}         (never k, op or opc)         -> 200
    PUT    /admin/v1/subscribers/{impi}         (the fields to change)       -> 200
    DELETE /admin/v1/subscribers/{impi}                                      -> 204
    GET    /admin/v1/subscribers/{impi}/state   (live sessions, never Ks)    -> 200
    GET    /admin/v1/subscriptions/{impu}                                    -> 200
    PUT    /admin/v1/subscriptions/{impu}       {"services": [...]}          -> 200
    POST   /admin/v1/services                   {"id", "key_group", "sdp"}   -> 201
    GET    /admin/v1/services, /admin/v1/services/{id}                       -> 200
    DELETE /admin/v1/services/{id}                                           -> 204

Keys are hex strings. Bad input: 400 {"error", "field"}; unknown: 404;
conflict: 409; no or a wrong bearer token (or, with C{[admin.tls]} C{ca}, no
verified client certificate): 401. Every change is logged once with who made
it and what it was, never a key.

L{AdminOperations} is the logic over storage; L{AdminResource} the HTTP.
"""

import hmac
import json
from urllib.parse import quote, unquote

from twisted.internet.defer import inlineCallbacks, maybeDeferred
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from mbmsd.logs import Logger
from mbmsd.protocols.identity import normalize_impu
from mbmsd.provisioning import (
    FieldError,
    check_key_group,
    check_service_id,
    subscriber_from_fields,
)
from mbmsd.storage.records import MbmsService
from mbmsd.tls import requestPeer
from mbmsd.web import writeAnswer

log = Logger(namespace="mbmsd.admin")

PREFIX = b"/admin/v1/"
MAX_BODY = 64 * 1024
MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
SERVER = b"mbmsd-admin"
SUBSCRIBER_FIELDS = ("impi", "impus", "k", "op", "opc", "amf", "sqn")
SERVICE_FIELDS = ("id", "key_group", "sdp")


def shown(value):
    """A peer's text as it may reach a log line: escaped, bounded."""
    text = str(value)
    if len(text) > 200:
        text = text[:200] + "..."
    return text.encode("unicode_escape").decode("ascii")


class Answer:
    def __init__(self, code, body=None, headers=()):
        self.code = code
        self.body = body
        self.headers = list(headers)


def error(code, message, field=None):
    body = {"error": message}
    if field is not None:
        body["field"] = field
    return Answer(code, body)


def subscriber_view(s):
    """What the API shows of a subscriber: never K, OP or OPc."""
    return {"impi": s.impi, "impus": list(s.impus), "amf": bytes(s.amf).hex(),
            "sqn": s.sqn.to_bytes(6, "big").hex(), "gba_type": s.gbaType}


def service_view(s):
    return {"id": s.serviceId, "key_group": s.keyGroup, "sdp": s.sdp}


def state_view(state):
    return {
        "sessions": [{"btid": v.btid, "created": v.created, "expires": v.expires,
                      "gba_type": v.gbaType} for v in state.sessions],
        "registrations": [{"impu": b.impu, "contact": b.contact, "transport": b.transport,
                           "host": b.host, "port": b.port, "expires": b.expires,
                           "associated": list(b.associated)} for b in state.bindings],
        "authorizations": [{"impu": a.impu, "service": a.serviceId, "ue_address": a.ueAddress,
                            "expires": a.expires} for a in state.authorizations],
        "msk_registrations": [{"impu": r.impu, "service": r.serviceId, "btid": r.btid,
                               "ue_address": r.ueAddress, "expires": r.expires}
                              for r in state.registrations],
    }


def _only(body, fields):
    if not isinstance(body, dict):
        raise FieldError("body", "must be a JSON object")
    for key in body:
        if key not in fields:
            raise FieldError(key, "unknown field (known: %s)" % (", ".join(fields),))


class AdminOperations:
    """
    The provisioning operations over the node's L{IStorage}. Each returns a
    Deferred of an L{Answer}; C{who} names the operator in the change log.
    """

    def __init__(self, storage, clock):
        self.storage = storage
        self.clock = clock

    def _changed(self, who, what, **kw):
        log.info("admin: {who} " + what, who=shown(who), **{k: shown(v) for k, v in kw.items()})

    @inlineCallbacks
    def createSubscriber(self, who, body):
        _only(body, SUBSCRIBER_FIELDS)
        subscriber = subscriber_from_fields(body)
        created = yield self.storage.subscribers.create(subscriber)
        if not created:
            return error(409, "a subscriber with this IMPI exists", "impi")
        self._changed(who, "created subscriber {impi} (IMPUs {impus})",
                      impi=subscriber.impi, impus=" ".join(subscriber.impus))
        return Answer(201, subscriber_view(subscriber),
                      [("Location", "/admin/v1/subscribers/" + quote(subscriber.impi, safe="@"))])

    @inlineCallbacks
    def getSubscriber(self, who, impi):
        subscriber = yield self.storage.subscribers.get(impi)
        if subscriber is None:
            return error(404, "no such subscriber", "impi")
        return Answer(200, subscriber_view(subscriber))

    @inlineCallbacks
    def updateSubscriber(self, who, impi, body):
        _only(body, SUBSCRIBER_FIELDS)
        if "impi" in body and body["impi"] != impi:
            raise FieldError("impi", "differs from the IMPI of the URL")
        old = yield self.storage.subscribers.get(impi)
        if old is None:
            return error(404, "no such subscriber", "impi")
        new = subscriber_from_fields(body, old)
        if not (yield self.storage.subscribers.update(new)):
            return error(404, "no such subscriber", "impi")
        changed = [f for f in SUBSCRIBER_FIELDS if f in body and f != "impi"]
        self._changed(who, "updated subscriber {impi}: {fields}", impi=impi,
                      fields=", ".join(changed) or "nothing")
        new = yield self.storage.subscribers.get(impi)
        return Answer(200, subscriber_view(new))

    @inlineCallbacks
    def deleteSubscriber(self, who, impi):
        if not (yield self.storage.subscribers.remove(impi)):
            return error(404, "no such subscriber", "impi")
        self._changed(who, "deleted subscriber {impi}", impi=impi)
        return Answer(204)

    @inlineCallbacks
    def listSubscribers(self, who, after, limit):
        page = yield self.storage.subscribers.page(after, limit)
        return Answer(200, {"subscribers": [subscriber_view(s) for s in page],
                            "next": page[-1].impi if len(page) == limit else None})

    @inlineCallbacks
    def subscriberState(self, who, impi):
        state = yield self.storage.provisioning.subscriberState(impi, self.clock.seconds())
        if state is None:
            return error(404, "no such subscriber", "impi")
        return Answer(200, state_view(state))

    @inlineCallbacks
    def getSubscriptions(self, who, impu):
        impu = _impu(impu)
        services = yield self.storage.provisioning.subscriptions(impu)
        return Answer(200, {"impu": impu, "services": services})

    @inlineCallbacks
    def setSubscriptions(self, who, impu, body):
        impu = _impu(impu)
        _only(body, ("services",))
        services = body.get("services")
        if not isinstance(services, list):
            raise FieldError("services", "must be a list of MBMS User Service IDs")
        for i, serviceId in enumerate(services):
            check_service_id(serviceId, "services")
            if (yield self.storage.provisioning.getService(serviceId)) is None:
                raise FieldError("services", "item %d: no such service (POST "
                                             "/admin/v1/services first)" % (i,))
        yield self.storage.provisioning.setSubscriptions(impu, services)
        self._changed(who, "set the subscriptions of {impu}: {services}", impu=impu,
                      services=" ".join(sorted(set(services))) or "none")
        return Answer(200, {"impu": impu, "services": sorted(set(services))})

    @inlineCallbacks
    def createService(self, who, body):
        _only(body, SERVICE_FIELDS)
        serviceId = check_service_id(body.get("id"))
        keyGroup = check_key_group(body.get("key_group"))
        sdp = body.get("sdp")
        if sdp is not None:
            sdp = _sdp(serviceId, sdp)
        service = MbmsService(serviceId, keyGroup, sdp)
        if not (yield self.storage.provisioning.addService(service)):
            return error(409, "a service with this ID exists", "id")
        self._changed(who, "created service {service} (key group {group})", service=serviceId,
                      group="from the ID" if keyGroup is None else keyGroup)
        return Answer(201, service_view(service),
                      [("Location", "/admin/v1/services/" + quote(serviceId, safe=":"))])

    @inlineCallbacks
    def getService(self, who, serviceId):
        service = yield self.storage.provisioning.getService(serviceId)
        if service is None:
            return error(404, "no such service", "id")
        return Answer(200, service_view(service))

    @inlineCallbacks
    def listServices(self, who):
        services = yield self.storage.provisioning.services()
        return Answer(200, {"services": [service_view(s) for s in services]})

    @inlineCallbacks
    def deleteService(self, who, serviceId):
        if not (yield self.storage.provisioning.removeService(serviceId)):
            return error(404, "no such service", "id")
        self._changed(who, "deleted service {service}", service=serviceId)
        return Answer(204)


def _impu(text):
    try:
        return normalize_impu(text)
    except ValueError:
        raise FieldError("impu", "must be a SIP or tel URI") from None


def _sdp(serviceId, sdp):
    # the SCF's [[scf.service]] keys, checked as the config checks them
    from mbmsd.provisioning import scf_description
    from mbmsd.roles.scf.config import SERVICE_SECTION

    if not isinstance(sdp, dict) or "id" in sdp:
        raise FieldError("sdp", "must be an object of [[scf.service]] keys (without id)")
    errors = []
    table = SERVICE_SECTION.validate(dict(sdp, id=serviceId), ("sdp",), errors,
                                     lambda path: "request")
    if errors:
        field = errors[0].split(": ")[1]
        raise FieldError(field, errors[0].split(": ", 2)[2])
    return scf_description(table)


class AdminResource(Resource):
    """
    @param token: the bearer token (str).
    @param requireCertificate: a request also needs a verified TLS client
        certificate (C{[admin.tls]} with C{ca}).
    """

    isLeaf = True

    def __init__(self, operations, token, requireCertificate=False):
        Resource.__init__(self)
        self.ops = operations
        self.token = token.encode("utf-8")
        self.requireCertificate = requireCertificate

    def render(self, request):
        gone = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))
        peer = requestPeer(request)
        who = self._who(request, peer)
        if who is None:
            d = maybeDeferred(lambda: Answer(401, {"error": "unauthorized"},
                                             [("WWW-Authenticate", 'Bearer realm="mbmsd-admin"')]))
            log.warn("admin: request from {source} refused: no valid credentials",
                     source=peer.address)
        else:
            d = maybeDeferred(self._route, request, who)
        d.addErrback(self._fieldError)

        def failed(f):
            log.failure("admin: {method} {path} from {source} failed", f,
                        method=shown(request.method.decode("latin-1")),
                        path=shown(request.path.decode("latin-1")), source=peer.address)
            return error(503, "service unavailable, retry later")

        d.addErrback(failed)
        d.addCallback(lambda a: None if gone else self._write(request, a))
        return NOT_DONE_YET

    def _who(self, request, peer):
        values = request.requestHeaders.getRawHeaders(b"authorization") or []
        if len(values) != 1 or not values[0][:7].lower() == b"bearer ":
            return None
        # constant time whatever the token given
        if not hmac.compare_digest(values[0][7:].strip(), self.token):
            return None
        if self.requireCertificate and not peer.names:
            return None
        who = "token"
        if peer.names:
            who += " " + ",".join(sorted(peer.names))
        return "%s from %s" % (who, peer.address)

    @staticmethod
    def _fieldError(f):
        f.trap(FieldError)
        return error(400, f.value.problem, f.value.field)

    def _body(self, request):
        raw = request.content.read(MAX_BODY + 1)
        if len(raw) > MAX_BODY:
            raise FieldError("body", "larger than %d bytes" % (MAX_BODY,))
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise FieldError("body", "must be JSON (UTF-8)") from None

    def _route(self, request, who):
        path = request.path
        if not path.startswith(PREFIX):
            return error(404, "no such resource (the API is under /admin/v1/)")
        try:
            parts = [unquote(p.decode("utf-8"), errors="strict")
                     for p in path[len(PREFIX):].split(b"/")]
        except UnicodeDecodeError:
            return error(404, "no such resource")
        method = request.method.decode("ascii", "replace")
        ops = self.ops
        routes = {}
        if parts == ["subscribers"]:
            routes = {"GET": lambda: self._list(request, who),
                      "POST": lambda: ops.createSubscriber(who, self._body(request))}
        elif len(parts) == 2 and parts[0] == "subscribers" and parts[1]:
            impi = parts[1]
            routes = {"GET": lambda: ops.getSubscriber(who, impi),
                      "PUT": lambda: ops.updateSubscriber(who, impi, self._body(request)),
                      "DELETE": lambda: ops.deleteSubscriber(who, impi)}
        elif len(parts) == 3 and parts[0] == "subscribers" and parts[2] == "state":
            routes = {"GET": lambda: ops.subscriberState(who, parts[1])}
        elif len(parts) == 2 and parts[0] == "subscriptions" and parts[1]:
            routes = {"GET": lambda: ops.getSubscriptions(who, parts[1]),
                      "PUT": lambda: ops.setSubscriptions(who, parts[1], self._body(request))}
        elif parts == ["services"]:
            routes = {"GET": lambda: ops.listServices(who),
                      "POST": lambda: ops.createService(who, self._body(request))}
        elif len(parts) == 2 and parts[0] == "services" and parts[1]:
            routes = {"GET": lambda: ops.getService(who, parts[1]),
                      "DELETE": lambda: ops.deleteService(who, parts[1])}
        if not routes:
            return error(404, "no such resource")
        if method not in routes:
            return Answer(405, {"error": "method not allowed"},
                          [("Allow", ", ".join(sorted(routes)))])
        return routes[method]()

    def _list(self, request, who):
        after = (request.args.get(b"after") or [b""])[0].decode("utf-8", "replace")
        raw = (request.args.get(b"limit") or [b"%d" % (DEFAULT_LIMIT,)])[0]
        try:
            limit = int(raw)
        except ValueError:
            limit = 0
        if not 1 <= limit <= MAX_LIMIT:
            raise FieldError("limit", "must be an integer 1..%d" % (MAX_LIMIT,))
        return self.ops.listSubscribers(who, after, limit)

    @staticmethod
    def _write(request, answer):
        body = b"" if answer.body is None else \
            (json.dumps(answer.body, sort_keys=True) + "\n").encode("utf-8")
        writeAnswer(request, answer.code, answer.headers, "application/json", body, SERVER)
