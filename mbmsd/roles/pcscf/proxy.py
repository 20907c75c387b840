"""
The P-CSCF's proxy core (RFC 3261 16, RFC 3325, TS 24.229 5.2.6-5.2.7), a
transaction user over L{mbmsd.sip.transaction.TransactionLayer}: stateful,
no socket of its own (it reaches the network through an L{IConnections}-like
object: C{transportFor(name, host, port)} -> Deferred of an ISipTransport).

Per request (RFC 3261 16.3 to 16.6):
  - REGISTER goes to the L{Registrar};
  - who sent it: the network path of a live binding is a UE (originating);
    the SCF (its UDP address, or a TCP connection we opened) is the network
    side; anything else is refused with 403;
  - Max-Forwards 0 -> 483; a loop (our own Via with this request's loop
    hash) -> 482; Max-Forwards decremented;
  - from a UE: every P-Asserted-Identity removed; the P-Preferred-Identity
    picks one of the IMPUs registered on that path (else the default one);
    P-Asserted-Identity inserted, P-Preferred-Identity removed;
  - Route entries naming us are removed (loose routing, 16.4); initial
    requests are Record-Routed (twice when the two sides use different
    transports, RFC 5658) and go to the configured SCF; the others follow
    Route, else the Request-URI;
  - towards a peer outside the trust domain (not the SCF, not in
    C{trustedPeers}), C{Privacy: id} removes P-Asserted-Identity (RFC 3325
    9.3), in requests and in responses;
  - our Via goes on top; responses come back through the client and server
    transactions (the top Via removed, 16.7); the ACK of a 2xx and strays
    are forwarded statelessly (16.11).

The bindings are the in-memory L{BindingTable} (no storage read per
request). The identity asserted for a UE's INVITE is kept with the dialog
(Call-ID and the UE's tag, bound to its network path), so the UE's later
requests in that dialog reuse it without reading the registration set. The
state is a table here rather than a token in our Record-Route URI (which
RFC 3261 16.6 step 4 and 16.12 would allow): the Record-Route goes to both
ends, the remote one possibly outside the trust domain, where RFC 3325 9.3
forbids the identity, and a token would need a key shared across restarts.
The table is bounded (oldest dropped) and swept; an entry lost (restart,
limit) falls back to the registration set, as before.
"""

import hashlib
import ipaddress
from collections import OrderedDict

from twisted.internet.defer import inlineCallbacks, maybeDeferred
from zope.interface import implementer

from mbmsd.interfaces import IClientTransactionUser, ITransactionUser
from mbmsd.logs import Logger
from mbmsd.roles.aka import CHALLENGED
from mbmsd.roles.pcscf.bindings import BindingLimitReached
from mbmsd.roles.pcscf.registrar import RegisterAnswer, aor
from mbmsd.sip.grammar import SipParseError, parse_name_addr, parse_uri, parse_via
from mbmsd.sip.message import MAGIC_COOKIE, make_branch, make_cancel, make_response, reason_phrase
from mbmsd.sip.transaction import TimerSettings, TransactionError, TransactionLayer

__all__ = ["PcscfProxy", "METHODS"]

log = Logger(namespace="mbmsd.pcscf")

# how long a dialog's asserted identity is remembered, seconds (beyond it
# the registration set answers, as for a dialog never seen)
DIALOG_LIFETIME = 12 * 3600
# REGISTER refused at pcscf.max_bindings: its outcome label and Retry-After
BINDING_LIMIT = "binding_limit"
RETRY_AFTER_FULL = 60

# Method label values (bounded); anything else counts as "other".
METHODS = ("REGISTER", "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "MESSAGE", "UPDATE",
           "PRACK", "INFO", "SUBSCRIBE", "NOTIFY", "REFER", "PUBLISH")


def method_label(method):
    return method if method in METHODS else "other"


def status_class(status):
    return "%dxx" % (status // 100,)


def _is_ip(host):
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def loop_hash(request):
    """
    RFC 3261 16.6 step 8: what identifies this request for loop detection
    (Request-URI, tags, Call-ID, CSeq number, Route, Proxy-Require) as
    received, before we change anything.
    """
    h = request.headers
    try:
        to_tag = request.toTag or ""
        from_tag = request.fromTag or ""
    except SipParseError:
        to_tag = from_tag = ""
    parts = [request.uri, to_tag, from_tag, h.get("Call-ID", ""), h.get("CSeq", "").split()[0]
             if h.get("CSeq") else ""]
    parts += h.getAll("Route") + h.getAll("Proxy-Require")
    return hashlib.md5("\n".join(parts).encode("utf-8")).hexdigest()[:10]


class _Target:
    """Where a request goes: C{(transport, host, port)}, and whether trusted."""

    def __init__(self, transport, host, port, trusted):
        self.transport = transport
        self.host = host
        self.port = port
        self.trusted = trusted

    @property
    def address(self):
        return (self.host, self.port)


class ForwardFailed(Exception):
    """The request cannot be forwarded: C{status} is what to answer."""

    def __init__(self, status, reason=None):
        Exception.__init__(self, status, reason)
        self.status = status
        self.reason = reason


@implementer(ITransactionUser)
class PcscfProxy:
    """
    @param clock: IReactorTime.
    @param registrar: the L{Registrar}.
    @param store: the L{mbmsd.roles.pcscf.bindings.BindingTable} (live
        bindings by IMPU and by network path, in memory).
    @param connections: C{transportFor(name, host, port)} -> Deferred of an
        ISipTransport; C{isOutbound(transport)} -> bool.
    @param scf: C{(host, port, transport)} of the next hop.
    @param advertised: our IP address in Via and Record-Route.
    @param ports: C{{'UDP': port, 'TCP': port}} we listen on, put in our Via
        and Record-Route: a worker's own ports (node.workers > 1).
    @param sharedPorts: in a worker, the ports it shares with the node's
        other workers: ours too (a Route or Via naming them is us).
    @param scfPorts: the SCF's ports besides the one in C{scf}: its
        workers' own (C{scf.worker_ports} + k), from which a multi-worker
        SCF of this node sends its requests over UDP.
    @param metrics: a L{mbmsd.metrics.RoleMetrics}.
    @param trustedPeers: IP addresses inside the trust domain besides the SCF.
    @param maxDialogs: the most dialog identities remembered.
    @param recall: read a UE source missing from memory from storage
        (L{BindingTable.recallFrom}): with node.workers > 1, where another
        worker may hold the registration.
    """

    def __init__(self, clock, registrar, store, connections, scf, advertised, ports, metrics,
                 trustedPeers=(), timers=None, onRegistration=None, maxDialogs=100_000,
                 sharedPorts=None, scfPorts=(), recall=False):
        self.clock = clock
        self.registrar = registrar
        self.store = store
        self.connections = connections
        self.scf = scf
        self.advertised = advertised
        self.ports = dict(ports)
        self.sharedPorts = dict(sharedPorts or {})
        self.scfPorts = frozenset(scfPorts) | {scf[1]}
        self.ownHosts = {advertised}
        self.trustedPeers = set(trustedPeers)
        self.onRegistration = onRegistration
        self.maxDialogs = maxDialogs
        self.recall = recall
        # (Call-ID, UE's tag) -> (network path, asserted IMPU, expiry), oldest first
        self._dialogs = OrderedDict()
        if timers is None:
            timers = TimerSettings(trying_delay=0)
        self.layer = TransactionLayer(clock, self, timers)
        self.requests = metrics.counter(
            "mbmsd_pcscf_requests_total",
            "SIP requests answered by the P-CSCF, by method and final response class",
            ["method", "response_class"])
        self.registrations = metrics.counter(
            "mbmsd_pcscf_registrations_total", "REGISTER requests by outcome", ["result"])
        self.rejected = metrics.counter(
            "mbmsd_pcscf_rejected_total",
            "Requests the P-CSCF answered itself with an error, by reason", ["reason"])
        self.latency = metrics.histogram(
            "mbmsd_pcscf_request_seconds",
            "Time from a request to its final response, by method", ["method"])
        self.stateless = metrics.counter(
            "mbmsd_pcscf_stateless_total",
            "Messages forwarded outside a transaction (ACK of 2xx, stray responses)",
            ["kind"])
        self.recalls = metrics.counter(
            "mbmsd_pcscf_binding_recalls_total",
            "Requests from a source missing from a worker's memory, read from storage, "
            "by outcome (node.workers > 1)", ["result"])
        self._started = {}

    # ------------------------------------------------------------ addresses

    def isMe(self, uri):
        """Does C{uri} (a SipUri) name this P-CSCF (RFC 3261 16.4)?"""
        if uri.host.lower() not in self.ownHosts:
            return False
        port = uri.port if uri.port is not None else 5060
        return self._isMyPort(port)

    def _isMyPort(self, port):
        return port in self.ports.values() or port in self.sharedPorts.values()

    def _myPort(self, transport):
        return self.ports.get(transport) or next(iter(self.ports.values()))

    def recordRouteUri(self, transport):
        return "<sip:%s:%d;transport=%s;lr>" % (
            self._host(), self._myPort(transport), transport.lower())

    def _host(self):
        return "[%s]" % (self.advertised,) if ":" in self.advertised else self.advertised

    def _via(self, transport, branch):
        return "SIP/2.0/%s %s:%d;branch=%s" % (transport, self._host(), self._myPort(transport),
                                                branch)

    def _isOurVia(self, via):
        return via.host.lower() in self.ownHosts and self._isMyPort(via.sentBy[1])

    def _trusted(self, host, port=None):
        scf_host, scf_port, _ = self.scf
        return host in self.trustedPeers or (host == scf_host
                                             and (port is None or port in self.scfPorts))

    # ------------------------------------------------------------ TU: requests

    def requestReceived(self, request, transaction):
        self._started[transaction] = self.clock.seconds()
        d = maybeDeferred(self._request, request, transaction)
        d.addErrback(self._internalError, transaction)

    def _internalError(self, failure, transaction):
        log.failure("P-CSCF: handling {method} failed", failure,
                    method=transaction.request.method)
        self._answer(transaction, 500, "internal_error")

    @inlineCallbacks
    def _request(self, request, txn):
        method = request.method
        if method == "REGISTER":
            yield self._register(request, txn)
            return
        if method == "CANCEL":
            self._cancel(request, txn)
            return
        mf = int(request.headers.get("Max-Forwards").strip())
        if mf == 0:
            self._answer(txn, 483, "too_many_hops")
            return
        side, bindings = self._classify(request, txn.transport, txn.source)
        if side is None and self.recall and txn.source is not None:
            side, bindings = yield self._recallFrom(txn.transport, txn.source)
        if side is None:
            self._answer(txn, 403, "not_registered", "Forbidden: not registered from this address")
            return
        mine = loop_hash(request)
        for value in request.headers.getAll("Via")[1:]:
            try:
                via = parse_via(value)
            except SipParseError:
                continue
            if self._isOurVia(via) and (via.branch or "").endswith("." + mine):
                self._answer(txn, 482, "loop_detected")
                return
        try:
            fwd, target = self._prepare(request, side, bindings, txn.transport, mine,
                                        txn.source)
            transport = yield self.connections.transportFor(
                target.transport, target.host, target.port)
        except ForwardFailed as e:
            self._answer(txn, e.status, "unroutable", e.reason)
            return
        except Exception as e:
            # the 503's line below is the outcome at info
            log.debug("P-CSCF: cannot reach the next hop for {method}: {e}", method=method, e=e)
            self._answer(txn, 503, "next_hop_unreachable")
            return
        self._fixVia(fwd, transport.name, mine)
        if txn.state == "Terminated":
            return
        ctx = _Forward(self, txn, target)
        txn.forward = ctx
        ctx.client = self.layer.sendRequest(fwd, transport, target.address, ctx)

    @inlineCallbacks
    def _register(self, request, txn):
        try:
            answer = yield self.registrar.register(request, txn.transport.name, txn.source)
        except BindingLimitReached:
            # RFC 3261 21.5.4: a capacity condition of this P-CSCF
            answer = RegisterAnswer(503, BINDING_LIMIT, None,
                                    [("Retry-After", str(RETRY_AFTER_FULL))])
        self.registrations.labels(answer.outcome).inc()
        response = make_response(request, answer.status, answer.reason, to_tag=True)
        for name, value in answer.headers:
            response.headers.add(name, value)
        # one info line per registration: its first 401 is only the challenge
        level = log.debug if answer.outcome == CHALLENGED else log.info
        level("REGISTER {impu} ({impi}) from {transport} {source}: {status} {outcome}",
              impu=answer.impu or "-", impi=answer.impi or "-",
              transport=txn.transport.name, source=_show(txn.source),
              status=answer.status, outcome=answer.outcome,
              procedure="register", peer=_show(txn.source), result=answer.outcome)
        self._respond(txn, response)
        if self.onRegistration is not None and answer.status == 200:
            self.onRegistration()

    def _cancel(self, cancel, txn):
        invite = self.layer.findInvite(cancel)
        if invite is None:
            self._answer(txn, 481, "no_such_transaction")
            return
        self._respond(txn, make_response(cancel, 200))
        ctx = getattr(invite, "forward", None)
        if ctx is None or ctx.final or ctx.client is None:
            if invite.state == "Proceeding":
                self._respond(invite, make_response(invite.request, 487, to_tag=True))
            return
        ctx.cancel()

    def _classify(self, request, transport, source):
        """
        @return: C{('ue', bindings)}, C{('network', None)} or C{(None, None)}
            when the sender is neither.
        """
        if source is not None:
            bindings = self.store.liveFrom(transport.name, source[0], source[1],
                                           self.clock.seconds())
            if bindings:
                return "ue", bindings
        scf_host, scf_port, scf_transport = self.scf
        if self.connections.isOutbound(transport):
            return "network", None
        if source is not None and source[0] == scf_host:
            if transport.name == "UDP" and source[1] in self.scfPorts:
                return "network", None
            if transport.name != "UDP" and request.toTag and self._topRouteIsMe(request):
                # an in-dialog request of the SCF on a connection it opened
                return "network", None
        return None, None

    @inlineCallbacks
    def _recallFrom(self, transport, source):
        """A UE source missing from memory, read from storage (another worker's)."""
        outcome, bindings = yield self.store.recallFrom(
            transport.name, source[0], source[1], self.clock.seconds())
        self.recalls.labels(outcome).inc()
        if outcome == "recalled":
            log.info("P-CSCF: {n} binding(s) of {transport} {source} read from storage",
                     n=len(bindings), transport=transport.name, source=_show(source))
            return "ue", bindings
        return None, None

    def _topRouteIsMe(self, request):
        value = request.headers.get("Route")
        if value is None:
            return False
        try:
            return self.isMe(parse_name_addr(value).uri)
        except SipParseError:
            return False

    def _prepare(self, request, side, bindings, ingress, mine, source=None):
        """
        The copy to forward and its L{_Target}. Raises L{ForwardFailed}.
        """
        fwd = request.copy()
        h = fwd.headers
        h.set("Max-Forwards", str(int(h.get("Max-Forwards").strip()) - 1))
        if side == "ue":
            path = (ingress.name,) + tuple(source) if source is not None else None
            self._assertIdentity(fwd, bindings, path)
        if fwd.method == "BYE":
            self._forgetDialog(fwd)
        # RFC 3261 16.4: remove the Route entries that name us
        while True:
            value = h.get("Route")
            if value is None:
                break
            try:
                uri = parse_name_addr(value).uri
            except SipParseError:
                raise ForwardFailed(400, "Bad Request: malformed Route")
            if not self.isMe(uri):
                break
            h.popFirst("Route")
        initial = fwd.toTag is None
        route = h.get("Route")
        if route is not None:
            target = self._targetOf(parse_name_addr(route).uri)
        elif initial and side == "ue":
            host, port, transport = self.scf
            target = _Target(transport, host, port, True)
        elif initial and side == "network":
            # a request for a registered user: to its binding (RFC 3261 16.5)
            try:
                impu = aor(fwd.requestUri)
            except SipParseError:
                raise ForwardFailed(416)
            live = self.store.liveOf(impu, self.clock.seconds())
            if not live:
                raise ForwardFailed(404, "Not Found: not registered")
            b = live[-1]
            fwd.uri = b.contact
            target = _Target(b.transport, b.host, b.port, self._trusted(b.host, b.port))
        else:
            target = self._targetOf(fwd.requestUri)
            if side == "network":
                # towards a UE: over the path it registered from (its TCP
                # connection, its NAT binding), not to the Contact's address
                flow = self._flowTo(fwd)
                if flow is not None:
                    target = flow
        if initial and fwd.method not in ("ACK", "CANCEL"):
            rr_in = self.recordRouteUri(ingress.name)
            rr_out = self.recordRouteUri(target.transport)
            if rr_in != rr_out:
                h.prepend("Record-Route", rr_in)
            h.prepend("Record-Route", rr_out)
        if not target.trusted and _privacy_id(fwd):
            h.remove("P-Asserted-Identity")
        return fwd, target

    def _flowTo(self, request):
        """
        The registered network path of the UE a request is for: the live
        binding of the To IMPU whose contact has the Request-URI's address.
        """
        try:
            impu = aor(request.to.uri)
            uri = request.requestUri
        except SipParseError:
            return None
        live = self.store.liveOf(impu, self.clock.seconds())
        for b in reversed(live):
            try:
                contact = parse_uri(b.contact)
            except SipParseError:
                continue
            if (contact.host.lower(), contact.port or 5060) == (uri.host.lower(), uri.port or 5060):
                return _Target(b.transport, b.host, b.port, self._trusted(b.host, b.port))
        return None

    def _targetOf(self, uri):
        if uri.scheme != "sip":
            raise ForwardFailed(416)
        if not _is_ip(uri.host):
            raise ForwardFailed(404, "Not Found: no route to %s" % (uri.host,))
        transport = (uri.params.get("transport") or "udp").upper()
        if transport not in ("UDP", "TCP", "TLS"):
            raise ForwardFailed(503, "Service Unavailable: transport not supported")
        port = uri.port if uri.port is not None else (5061 if transport == "TLS" else 5060)
        return _Target(transport, uri.host, port, self._trusted(uri.host, port))

    def _assertIdentity(self, fwd, bindings, path=None):
        """RFC 3325 5 and TS 24.229 5.2.6.3: the asserted identity of a UE."""
        h = fwd.headers
        h.remove("P-Asserted-Identity")
        if fwd.method in ("ACK", "CANCEL"):
            h.remove("P-Preferred-Identity")
            return
        inDialog = fwd.toTag is not None
        if inDialog and path is not None and h.get("P-Preferred-Identity") is None:
            # the identity this dialog was set up with, when it was ours
            known = self._dialogs.get((fwd.callId, fwd.fromTag))
            if known is not None and known[0] == path:
                h.add("P-Asserted-Identity", "<%s>" % (known[1],))
                return
        registered = []
        for b in bindings:
            for impu in b.associated:
                if impu not in registered:
                    registered.append(impu)
        chosen = registered[0]
        for value in h.getAll("P-Preferred-Identity"):
            try:
                wanted = aor(parse_name_addr(value).uri)
            except SipParseError:
                continue
            match = [i for i in registered if i.lower() == wanted.lower()]
            if match:
                chosen = match[0]
                break
        h.remove("P-Preferred-Identity")
        h.add("P-Asserted-Identity", "<%s>" % (chosen,))
        if fwd.method == "INVITE" and not inDialog and path is not None:
            self._rememberDialog(fwd, path, chosen)

    # ------------------------------------------------------------ dialogs

    def _rememberDialog(self, invite, path, impu):
        key = (invite.callId, invite.fromTag)
        self._dialogs.pop(key, None)
        while len(self._dialogs) >= self.maxDialogs:
            self._dialogs.popitem(last=False)
        self._dialogs[key] = (path, impu, self.clock.seconds() + DIALOG_LIFETIME)

    def _forgetDialog(self, request):
        """A BYE (either side) or a refused INVITE ends what we kept."""
        try:
            tags = (request.fromTag, request.toTag)
        except SipParseError:
            return
        for tag in tags:
            if tag is not None:
                self._dialogs.pop((request.callId, tag), None)

    def sweepDialogs(self, now):
        """Drop the dialog identities that expired (the service's sweep)."""
        while self._dialogs:
            key, (_, _, expires) = next(iter(self._dialogs.items()))
            if expires > now:
                break
            del self._dialogs[key]

    def _fixVia(self, fwd, transport, mine, branch=None):
        if branch is None:
            branch = make_branch() + "." + mine
        fwd.headers.prepend("Via", self._via(transport, branch))

    # ------------------------------------------------------------ TU: ACK, strays

    def ackReceived(self, request, transport, source):
        d = maybeDeferred(self._ack, request, transport, source)
        d.addErrback(lambda f: log.failure("P-CSCF: forwarding an ACK failed", f))

    @inlineCallbacks
    def _ack(self, request, transport, source):
        if int(request.headers.get("Max-Forwards").strip()) == 0:
            return
        side, bindings = self._classify(request, transport, source)
        if side is None and self.recall and source is not None:
            side, bindings = yield self._recallFrom(transport, source)
        if side is None:
            log.info("P-CSCF: ACK from an unknown source {source} dropped", source=_show(source))
            return
        mine = loop_hash(request)
        try:
            fwd, target = self._prepare(request, side, bindings, transport, mine, source)
        except ForwardFailed as e:
            log.info("P-CSCF: ACK not routable ({status})", status=e.status)
            return
        out = yield self.connections.transportFor(target.transport, target.host, target.port)
        # 16.11: a stateless branch, the same for a retransmitted ACK
        top = request.topVia
        stable = hashlib.md5(("%s|%s|%s" % (top.branch, top.sentBy, mine)).encode()).hexdigest()
        self._fixVia(fwd, out.name, mine, MAGIC_COOKIE + stable[:16] + "." + mine)
        self.layer.sendStateless(fwd, out, target.address)
        self.stateless.labels("ack").inc()

    def strayResponseReceived(self, response, transport, source):
        d = maybeDeferred(self._stray, response)
        d.addErrback(lambda f: log.failure("P-CSCF: forwarding a stray response failed", f))

    @inlineCallbacks
    def _stray(self, response):
        vias = response.headers.getAll("Via")
        if len(vias) < 2 or not self._isOurVia(parse_via(vias[0])):
            return                      # not ours to forward (RFC 3261 16.7 step 1)
        up = response.copy()
        up.headers.popFirst("Via")
        via = parse_via(vias[1])
        host = via.received or via.host
        port = via.rport if isinstance(via.rport, int) else via.sentBy[1]
        out = yield self.connections.transportFor(via.transport, host, port)
        if not self._trusted(host, port) and _privacy_id(up):
            up.headers.remove("P-Asserted-Identity")
        self.layer.sendStateless(up, out, (host, port))
        self.stateless.labels("response").inc()

    def transactionFailed(self, transaction, reason):
        self._started.pop(transaction, None)
        log.info("P-CSCF: {method} transaction ended without delivery ({reason})",
                 method=transaction.request.method, reason=reason)

    # ------------------------------------------------------------ answering

    def _answer(self, txn, status, outcome, reason=None):
        self.rejected.labels(outcome).inc()
        self._respond(txn, make_response(txn.request, status, reason, to_tag=True))

    def _respond(self, txn, response):
        """Send C{response} on the server transaction; count and log finals."""
        try:
            txn.respond(response)
        except TransactionError:
            self._started.pop(txn, None)
            return False
        if response.status >= 200 and txn in self._started:
            self._final(txn, response)
        return True

    def _final(self, txn, response):
        start = self._started.pop(txn, None)
        method = method_label(txn.request.method)
        self.requests.labels(method, status_class(response.status)).inc()
        if start is not None:
            self.latency.labels(method).observe(max(0.0, self.clock.seconds() - start))
        if txn.request.method != "REGISTER":
            # one info line per procedure outcome: a session set up or
            # refused (INVITE), released (BYE), any failure; the rest at debug
            level = (log.info if txn.request.method in ("INVITE", "BYE")
                     or response.status >= 300 else log.debug)
            level("{method} {callid} from {transport} {source}: {status}",
                  method=txn.request.method, callid=txn.request.callId,
                  transport=txn.transport.name, source=_show(txn.source),
                  status=response.status, procedure=txn.request.method.lower(),
                  peer=_show(txn.source), result=response.status)


@implementer(IClientTransactionUser)
class _Forward:
    """One forwarded request: its server and client transactions (16.7)."""

    def __init__(self, proxy, server, target):
        self.proxy = proxy
        self.server = server
        self.target = target
        self.client = None
        self.final = False
        self.cancelled = False

    def responseReceived(self, response, transaction):
        if response.status == 100:
            return                              # hop by hop (16.7 step 3)
        up = response.copy()
        up.headers.popFirst("Via")
        if not up.headers.get("Via"):
            return
        if _privacy_id(up) and not self._upstreamTrusted():
            up.headers.remove("P-Asserted-Identity")
        if response.status == 503:
            # RFC 3261 16.7 step 6: the next hop's 503 says nothing of this
            # P-CSCF; the UE gets 500 (its Retry-After kept, RFC 3261 20.33)
            up.status, up.reason = 500, reason_phrase(500)
        if response.status >= 300 and self.server.request.method == "INVITE":
            self.proxy._forgetDialog(self.server.request)
        if response.status >= 200:
            first = not self.final
            self.final = True
            if not first:
                # a 2xx retransmission in the Accepted state (RFC 6026)
                try:
                    self.server.respond(up)
                except TransactionError:
                    pass
                return
        self.proxy._respond(self.server, up)

    def _upstreamTrusted(self):
        source = getattr(self.server, "source", None) or (None, None)
        if self.proxy.connections.isOutbound(self.server.transport):
            return True
        return self.proxy._trusted(source[0], source[1])

    def cancel(self):
        """Send CANCEL for the forwarded INVITE (RFC 3261 16.10)."""
        if self.cancelled or self.client is None:
            return
        self.cancelled = True
        cancel = make_cancel(self.client.request)
        self.proxy.layer.sendRequest(cancel, self.client.transport, self.client.address,
                                      _Ignore())


@implementer(IClientTransactionUser)
class _Ignore:
    def responseReceived(self, response, transaction):
        pass


def _privacy_id(message):
    for value in message.headers.getAll("Privacy"):
        for item in value.replace(";", ",").split(","):
            if item.strip().lower() == "id":
                return True
    return False


def _show(source):
    if not source:
        return "-"
    return "%s:%s" % (source[0], source[1])
