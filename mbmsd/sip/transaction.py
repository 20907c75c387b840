"""
SIP transactions (RFC 3261 17, with the RFC 6026 'Accepted' states) on an
injected C{IReactorTime}.

The L{TransactionLayer} sits between the transports (anything providing
L{ISipTransport}: the UDP/TCP adapters of L{mbmsd.sip.transport}, or a fake)
and a transaction user (L{ITransactionUser}). Transports call
C{layer.receive(message, transport, source)}; the user answers requests with
C{transaction.respond(response)} and sends requests with
C{layer.sendRequest(request, transport, address, user)}.

No socket, no global reactor: tests drive every timer with
C{twisted.internet.task.Clock}.

Once a transaction only waits out a long timer (J, L, I, D, K), its entry in
the layer's table is replaced by a L{_Finished} record: the key, the
serialized answer to resend (RFC 3261 17.2.1, 17.2.2, 17.1.1.2) and where to
send it, nothing else; one sweep per layer ends them.
"""

from __future__ import annotations

import collections
import weakref
from collections.abc import Callable, Hashable
from typing import Protocol, Union, final

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from mbmsd.interfaces import IClientTransactionUser, ISipTransport, ITransactionUser
from mbmsd.logs import Logger
from mbmsd.sip.grammar import Via, parse_via
from mbmsd.sip.message import (
    MAGIC_COOKIE,
    Message,
    Request,
    Response,
    make_ack,
    make_branch,
    make_response,
    parse_message,
    serialize,
)
from mbmsd.sip.transport import response_address, stamp_via

__all__ = [
    "TimerSettings", "TransactionLayer", "ClientInviteTransaction",
    "ClientNonInviteTransaction", "ServerInviteTransaction",
    "ServerNonInviteTransaction", "TransactionError",
]

log = Logger(namespace="mbmsd.sip.transaction")

# States
CALLING = "Calling"
TRYING = "Trying"
PROCEEDING = "Proceeding"
ACCEPTED = "Accepted"
COMPLETED = "Completed"
CONFIRMED = "Confirmed"
TERMINATED = "Terminated"


# (host, port)
Address = tuple[str, int]
# RFC 3261 17.1.3 / 17.2.3 matching keys: (branch, ..., method)
_Key = tuple[Hashable, ...]


class _Slot(Protocol):
    """An L{mbmsd.overload.Slot}: held until the final response."""

    def release(self) -> None: ...


class _Admission(Protocol):
    """What the layer asks of an L{mbmsd.overload.SipAdmission}."""

    retryAfter: int

    def roomFor(self, held: int) -> bool: ...

    def admit(self, transport: ISipTransport, source: Address | None) -> _Slot | None: ...


class TransactionError(Exception):
    """A transaction was used against its state machine (a TU bug)."""


class TimerSettings:
    """
    RFC 3261 timer values (17.1.1.1, table 4), in seconds.

    @ivar trying_delay: when an INVITE server transaction sends its own
        100 Trying: 0 right away (a proxy, RFC 3261 16.2), 0.2 if the TU has
        not answered within 200 ms (a UAS, 17.2.1), None never.
    """

    def __init__(self, t1: float = 0.5, t2: float = 4.0, t4: float = 5.0,
                 timer_d: float = 32.0, trying_delay: float | None = 0.2) -> None:
        self.t1 = t1
        self.t2 = t2
        self.t4 = t4
        self.timer_d = timer_d
        self.trying_delay = trying_delay

    @property
    def timer_b(self) -> float:
        return 64 * self.t1

    timer_f = timer_h = timer_j = timer_l = timer_m = timer_b


class _Transaction:
    """Timers, sending and termination shared by the four machines."""

    state: str | None = None
    slot: _Slot | None = None     # an mbmsd.overload.Slot held until the final response

    def __init__(
        self, layer: TransactionLayer, key: _Key, request: Request,
        transport: ISipTransport, address: Address | None,
    ) -> None:
        self.layer = layer
        self.clock = layer.clock
        self.timers = layer.timers
        self.key = key
        self.request = request
        self.transport = transport
        self.address = address
        self.reliable = bool(getattr(transport, "reliable", False))
        self._calls: dict[str, IDelayedCall] = {}

    @property
    def branch(self) -> Hashable:
        return self.key[0]

    def _start_timer(self, name: str, delay: float, fn: Callable[[], object]) -> None:
        self._cancel_timer(name)
        self._calls[name] = self.clock.callLater(delay, self._fire, name, fn)

    def _fire(self, name: str, fn: Callable[[], object]) -> None:
        self._calls.pop(name, None)
        if self.state != TERMINATED:
            fn()

    def _cancel_timer(self, name: str) -> None:
        call = self._calls.pop(name, None)
        if call is not None and call.active():
            call.cancel()

    def _send(self, message: Message) -> bool:
        """Hand C{message} to the transport; False on a transport error."""
        try:
            # None only from a source-less hop (connection-bound: it ignores the address)
            self.transport.send(message, self.address)
        except Exception:
            log.failure("transport error sending {msg!r} to {address!r}",
                        msg=message, address=self.address)
            return False
        return True

    def _release_slot(self) -> None:
        slot, self.slot = self.slot, None
        if slot is not None:
            slot.release()

    def _terminate(self) -> None:
        self._release_slot()
        if self.state == TERMINATED:
            return
        self.state = TERMINATED
        for name in list(self._calls):
            self._cancel_timer(name)
        self.layer._remove(self)

    def _wait_then_terminate(
        self, name: str, delay: float, resend: Message | None = None, accepted: bool = False,
    ) -> None:
        """
        Enter a wait state: terminate after C{delay} (now if zero). Until
        then the layer keeps only a L{_Finished} record that answers
        retransmissions with C{resend} (a message, kept serialized).
        """
        if delay <= 0:
            self._terminate()
            return
        self._release_slot()
        for name in list(self._calls):
            self._cancel_timer(name)
        self.layer._retire(self, delay, resend, accepted)

    def __repr__(self) -> str:
        return "<%s %s %s %s>" % (self.__class__.__name__, self.request.method,
                                  self.key[0], self.state)


# --------------------------------------------------------------------------
# Client transactions

class _ClientTransaction(_Transaction):

    def __init__(
        self, layer: TransactionLayer, key: _Key, request: Request,
        transport: ISipTransport, address: Address | None, user: IClientTransactionUser,
    ) -> None:
        _Transaction.__init__(self, layer, key, request, transport, address)
        self.user = user

    def _deliver(self, response: Response) -> None:
        self.layer._call_user(self.user.responseReceived, response, self)

    def _fail(self, status: int) -> None:
        """Terminate and tell the TU with a locally generated response."""
        self._terminate()
        response = make_response(self.request, status)
        response.local = True
        self._deliver(response)


class ClientInviteTransaction(_ClientTransaction):
    """RFC 3261 17.1.1 (figure 5) with RFC 6026's Accepted state."""

    _interval_a: float
    ack: Request

    def start(self) -> None:
        self.state = CALLING
        if not self._send(self.request):
            return self._fail(503)
        if not self.reliable:
            self._interval_a = self.timers.t1
            self._start_timer("A", self._interval_a, self._timer_a)
        self._start_timer("B", self.timers.timer_b, self._timer_b)

    def _timer_a(self) -> None:
        if self.state != CALLING:
            return
        if not self._send(self.request):
            return self._fail(503)
        self._interval_a *= 2
        self._start_timer("A", self._interval_a, self._timer_a)

    def _timer_b(self) -> None:
        if self.state == CALLING:
            self._fail(408)

    def receiveResponse(self, response: Response) -> None:
        status = response.status
        if self.state in (CALLING, PROCEEDING):
            self._cancel_timer("A")
            self._cancel_timer("B")
            if status < 200:
                self.state = PROCEEDING
            elif status < 300:
                self.state = ACCEPTED
                self._start_timer("M", self.timers.timer_m, self._terminate)
            else:
                self.state = COMPLETED
                self.ack = make_ack(self.request, response)
                if not self._send(self.ack):
                    return self._fail(503)
                self._deliver(response)
                # RFC 3261 17.1.1.2: a retransmitted final gets the ACK again
                self._wait_then_terminate(
                    "D", 0 if self.reliable else self.timers.timer_d,
                    resend=self.ack)
                return
            self._deliver(response)
        elif self.state == ACCEPTED:
            if 200 <= status < 300:
                self._deliver(response)
        elif self.state == COMPLETED:
            if status >= 300:
                self._send(self.ack)


class ClientNonInviteTransaction(_ClientTransaction):
    """RFC 3261 17.1.2 (figure 6)."""

    _interval_e: float

    def start(self) -> None:
        self.state = TRYING
        if not self._send(self.request):
            return self._fail(503)
        if not self.reliable:
            self._interval_e = self.timers.t1
            self._start_timer("E", self._interval_e, self._timer_e)
        self._start_timer("F", self.timers.timer_f, self._timer_f)

    def _timer_e(self) -> None:
        if self.state not in (TRYING, PROCEEDING):
            return
        if not self._send(self.request):
            return self._fail(503)
        if self.state == TRYING:
            self._interval_e = min(2 * self._interval_e, self.timers.t2)
        else:
            self._interval_e = self.timers.t2
        self._start_timer("E", self._interval_e, self._timer_e)

    def _timer_f(self) -> None:
        if self.state in (TRYING, PROCEEDING):
            self._fail(408)

    def receiveResponse(self, response: Response) -> None:
        if self.state not in (TRYING, PROCEEDING):
            return          # Completed: retransmissions absorbed
        if response.status < 200:
            self.state = PROCEEDING
            self._deliver(response)
            return
        self.state = COMPLETED
        self._cancel_timer("E")
        self._cancel_timer("F")
        self._deliver(response)
        self._wait_then_terminate("K", 0 if self.reliable else self.timers.t4)


# --------------------------------------------------------------------------
# Server transactions

class _ServerTransaction(_Transaction):

    last_response: Response | None = None
    source: Address | None      # set by the layer when it creates the transaction

    def _transport_error(self) -> None:
        self._terminate()
        self.layer._call_user(self.layer.tu.transactionFailed, self,
                              "transport")


class ServerInviteTransaction(_ServerTransaction):
    """RFC 3261 17.2.1 (figure 7) with RFC 6026's Accepted state."""

    _interval_g: float

    def start(self, trying: bool = True) -> None:
        self.state = PROCEEDING
        delay = self.layer.trying_delay
        if delay is None or not trying:
            return
        if delay <= 0:
            self._send_trying()
        else:
            self._start_timer("Trying", delay, self._send_trying)

    def _send_trying(self) -> None:
        if self.state == PROCEEDING and self.last_response is None:
            self.respond(make_response(self.request, 100))

    def respond(self, response: Response) -> None:
        """
        Send C{response} (built with L{make_response}) for this INVITE.
        Raises L{TransactionError} when the state allows no response.
        """
        status = response.status
        if self.state == ACCEPTED and 200 <= status < 300:
            self._send(response)     # the TU's own 2xx retransmissions
            return
        if self.state != PROCEEDING:
            raise TransactionError("%r cannot send %d" % (self, status))
        self._cancel_timer("Trying")
        self.last_response = response
        if status >= 200:
            self._release_slot()
        if status < 200:
            if not self._send(response):
                self._transport_error()
            return
        if status < 300:
            self.state = ACCEPTED
            if not self._send(response):
                return self._transport_error()
            # RFC 6026 7.1: Accepted absorbs INVITEs, passes ACKs up
            self._wait_then_terminate("L", self.timers.timer_l, accepted=True)
            return
        self.state = COMPLETED
        if not self._send(response):
            return self._transport_error()
        if not self.reliable:
            self._interval_g = self.timers.t1
            self._start_timer("G", self._interval_g, self._timer_g)
        self._start_timer("H", self.timers.timer_h, self._timer_h)

    def _timer_g(self) -> None:
        if self.state != COMPLETED:
            return
        assert self.last_response is not None  # Completed: the final answer was sent
        if not self._send(self.last_response):
            return self._transport_error()
        self._interval_g = min(2 * self._interval_g, self.timers.t2)
        self._start_timer("G", self._interval_g, self._timer_g)

    def _timer_h(self) -> None:
        if self.state == COMPLETED:
            self._terminate()
            self.layer._call_user(self.layer.tu.transactionFailed, self,
                                  "timeout")

    def receiveRequest(self, request: Request, source: Address | None) -> None:
        """A retransmitted INVITE or the ACK of a non-2xx answer."""
        if request.method == "ACK":
            if self.state == COMPLETED:
                self.state = CONFIRMED
                self._cancel_timer("G")
                self._cancel_timer("H")
                self._wait_then_terminate(
                    "I", 0 if self.reliable else self.timers.t4)
            elif self.state == ACCEPTED:
                self.layer._call_user(self.layer.tu.ackReceived, request,
                                      self.transport, source)
            return
        if self.state == PROCEEDING:
            if self.last_response is not None:
                if not self._send(self.last_response):
                    self._transport_error()
        elif self.state == COMPLETED:
            assert self.last_response is not None  # Completed: the final answer was sent
            if not self._send(self.last_response):
                self._transport_error()
        # Accepted, Confirmed: absorbed


class ServerNonInviteTransaction(_ServerTransaction):
    """RFC 3261 17.2.2 (figure 8)."""

    def start(self, trying: bool = True) -> None:
        self.state = TRYING

    def respond(self, response: Response) -> None:
        """
        Send C{response} for this request. Raises L{TransactionError} once
        a final response was sent.
        """
        if self.state not in (TRYING, PROCEEDING):
            raise TransactionError("%r cannot send %d"
                                   % (self, response.status))
        self.last_response = response
        if response.status >= 200:
            self._release_slot()
        if response.status < 200:
            self.state = PROCEEDING
            if not self._send(response):
                self._transport_error()
            return
        self.state = COMPLETED
        if not self._send(response):
            return self._transport_error()
        # RFC 3261 17.2.2: Completed resends the final answer until Timer J
        self._wait_then_terminate("J", 0 if self.reliable
                                  else self.timers.timer_j, resend=response)

    def receiveRequest(self, request: Request, source: Address | None) -> None:
        """A retransmission: absorbed in Trying, else the last answer."""
        if self.state in (PROCEEDING, COMPLETED):
            assert self.last_response is not None  # Proceeding, Completed: an answer was sent
            if not self._send(self.last_response):
                self._transport_error()


# --------------------------------------------------------------------------
# Finished transactions

@final  # never subclassed: the layer matches it with type() is
class _Finished:
    """
    What the layer keeps of a transaction waiting out Timer J, L, I, D or K:
    the serialized answer to resend (or None: absorb), the transport and the
    address to resend it to. C{txn} is a weak reference, so the transaction
    (its Request, Response and timers) lives only as long as its TU keeps it;
    when the record expires a transaction still alive is told Terminated.
    """

    __slots__ = ("key", "data", "transport", "address", "state", "invite",
                 "accepted", "txn")

    def __init__(self, txn: _Transaction, resend: Message | None, accepted: bool) -> None:
        self.key = txn.key
        self.data = None if resend is None else serialize(resend)
        self.transport = txn.transport
        self.address = txn.address
        self.state = txn.state
        self.invite = isinstance(txn, (ServerInviteTransaction,
                                       ClientInviteTransaction))
        self.accepted = accepted
        self.txn = weakref.ref(txn)

    def resend(self) -> bool:
        """Send the kept bytes again; False on a transport error."""
        send = getattr(self.transport, "sendBytes", None)
        try:
            assert self.data is not None  # the callers resend only kept bytes
            if send is not None:
                send(self.data, self.address)
            else:
                # None only from a source-less hop, as in _Transaction._send
                self.transport.send(parse_message(self.data), self.address)
        except Exception:
            log.failure("transport error resending to {address!r}",
                        address=self.address)
            return False
        return True

    def __repr__(self) -> str:
        return "<_Finished %s %s>" % (self.key[0], self.state)


# --------------------------------------------------------------------------
# The layer

_ServerEntry = Union[ServerInviteTransaction, ServerNonInviteTransaction, _Finished]
_ClientEntry = Union[ClientInviteTransaction, ClientNonInviteTransaction, _Finished]
# the table a transaction or record lives in
_Table = Union[dict[_Key, _ServerEntry], dict[_Key, _ClientEntry]]

def _server_key(request: Request, via: Via) -> _Key:
    """RFC 3261 17.2.3; the RFC 2543 fallback is approximate."""
    method = "INVITE" if request.method == "ACK" else request.method
    branch = via.branch
    if branch and branch.startswith(MAGIC_COOKIE):
        host, port = via.sentBy
        return (branch, host, port, method)
    return ("rfc2543", request.uri if request.method != "ACK" else None,
            request.callId, request.cseq[0], request.fromTag,
            via.sentBy, method)


def _client_key(message_branch: str | None, method: str) -> _Key:
    return (message_branch, method)


class TransactionLayer:
    """
    Matches messages to transactions (RFC 3261 17.1.3, 17.2.3) and creates
    server transactions for new requests.

    @param clock: an C{IReactorTime} (the reactor, or a C{Clock} in tests).
    @param tu: the L{ITransactionUser}.
    @param timers: L{TimerSettings}; defaults to T1=0.5 s, T2=4 s, T4=5 s.
    @param admission: an L{mbmsd.overload.SipAdmission} bounding the server
        transactions awaiting a final response, or None.
    """

    # not bounded: they end work (RFC 3261 9.2, 15.1.2) or get no answer
    UNBOUNDED = ("ACK", "CANCEL", "BYE")

    # the long timers end in one sweep, at most this late (seconds)
    SWEEP_INTERVAL = 0.5

    def __init__(
        self, clock: IReactorTime, tu: ITransactionUser, timers: TimerSettings | None = None,
        admission: _Admission | None = None,
    ) -> None:
        self.clock = clock
        self.tu = tu
        self.admission = admission
        self.timers = timers if timers is not None else TimerSettings()
        self.server_transactions: dict[_Key, _ServerEntry] = {}
        self.client_transactions: dict[_Key, _ClientEntry] = {}
        # per timer length, a time-ordered deque of (deadline, table, record)
        self._expiries: dict[float, collections.deque[tuple[float, _Table, _Finished]]] = {}
        self._sweep: IDelayedCall | None = None
        self._lastSweep: float | None = None

    @property
    def trying_delay(self) -> float | None:
        return self.timers.trying_delay

    def _call_user(self, fn: Callable[..., object], *args: object) -> None:
        """Call up into a TU, never letting its exception break a machine."""
        try:
            fn(*args)
        except Exception:
            log.failure("transaction user {fn!r} raised", fn=fn)

    def _remove(self, txn: _Transaction) -> None:
        table: _Table = (self.server_transactions
                 if isinstance(txn, _ServerTransaction)
                 else self.client_transactions)
        if table.get(txn.key) is txn:
            del table[txn.key]

    # -- finished transactions: one sweep for the long timers

    def _retire(
        self, txn: _Transaction, delay: float, resend: Message | None, accepted: bool,
    ) -> None:
        """Replace C{txn} in its table by a L{_Finished} for C{delay} s."""
        server = isinstance(txn, _ServerTransaction)
        table: _Table = self.server_transactions if server else self.client_transactions
        if table.get(txn.key) is not txn:
            return
        record = _Finished(txn, resend, accepted)
        table[txn.key] = record
        deadline = self.clock.seconds() + delay
        queue = self._expiries.get(delay)
        if queue is None:
            queue = self._expiries[delay] = collections.deque()
        queue.append((deadline, table, record))
        self._scheduleSweep()

    def _scheduleSweep(self) -> None:
        heads = [q[0][0] for q in self._expiries.values() if q]
        if not heads:
            return
        due = min(heads)
        if self._lastSweep is not None:
            due = max(due, self._lastSweep + self.SWEEP_INTERVAL)
        delay = max(0, due - self.clock.seconds())
        if self._sweep is None:
            self._sweep = self.clock.callLater(delay, self._sweepFinished)
        elif due < self._sweep.getTime():
            self._sweep.reset(delay)

    def _sweepFinished(self) -> None:
        self._sweep = None
        now = self._lastSweep = self.clock.seconds()
        for delay, queue in list(self._expiries.items()):
            while queue and queue[0][0] <= now:
                _, table, record = queue.popleft()
                if table.get(record.key) is record:
                    del table[record.key]
                self._expire(record)
            if not queue:
                del self._expiries[delay]
        self._scheduleSweep()

    def _expire(self, record: _Finished) -> None:
        txn = record.txn()
        if txn is not None:
            txn.state = TERMINATED

    def _dropFinished(self, record: _Finished, table: _Table) -> None:
        """A transport error on a resend: end the record now."""
        if table.get(record.key) is record:
            del table[record.key]
        txn = record.txn()
        if txn is not None:
            txn.state = TERMINATED
            self._call_user(self.tu.transactionFailed, txn, "transport")

    def _finishedRequest(
        self, record: _Finished, request: Request, source: Address | None,
    ) -> None:
        """RFC 3261 17.2.1 (Confirmed), 17.2.2 (Completed), RFC 6026 7.1."""
        if request.method == "ACK":
            if record.accepted:
                self._call_user(self.tu.ackReceived, request,
                                record.transport, source)
            return
        if record.data is not None and not record.resend():
            self._dropFinished(record, self.server_transactions)

    def _finishedResponse(self, record: _Finished, response: Response) -> None:
        """RFC 3261 17.1.1.2 (Completed: ACK again), 17.1.2.2 (absorbed)."""
        if record.data is not None and response.status >= 300:
            record.resend()

    # -- incoming

    def receive(
        self, message: Message, transport: ISipTransport, source: Address | None,
    ) -> None:
        """
        A parsed message arrived on C{transport} from C{source}
        (C{(host, port)}). Dispatches it to its transaction or the TU.
        """
        if isinstance(message, Request):
            self._receive_request(message, transport, source)
        else:
            self._receive_response(message, transport, source)

    def _receive_request(
        self, request: Request, transport: ISipTransport, source: Address | None,
    ) -> None:
        via = stamp_via(request, source)
        key = _server_key(request, via)
        txn = self.server_transactions.get(key)
        if txn is not None:
            if type(txn) is _Finished:
                self._finishedRequest(txn, request, source)
            else:
                txn.receiveRequest(request, source)
            return
        if request.method == "ACK":
            self._call_user(self.tu.ackReceived, request, transport, source)
            return
        if self.admission is not None and not self.admission.roomFor(
                len(self.server_transactions)):
            # memory is bounded: past max_transactions a new request is lost
            return
        address = response_address(via, transport, source)
        cls: type[ServerInviteTransaction] | type[ServerNonInviteTransaction] = (
            ServerInviteTransaction if request.method == "INVITE"
            else ServerNonInviteTransaction)
        txn = cls(self, key, request, transport, address)
        txn.source = source
        self.server_transactions[key] = txn
        if self.admission is not None and request.method not in self.UNBOUNDED:
            txn.slot = self.admission.admit(transport, source)
            if txn.slot is None:
                # saturated: 503 with Retry-After (RFC 3261 21.5.4), kept in
                # the transaction so retransmissions get it again, TU untouched
                txn.start(trying=False)
                response = make_response(request, 503, to_tag=True)
                response.headers.add("Retry-After", str(self.admission.retryAfter))
                txn.respond(response)
                return
        txn.start()
        self._call_user(self.tu.requestReceived, request, txn)

    def _receive_response(
        self, response: Response, transport: ISipTransport, source: Address | None,
    ) -> None:
        via = response.topVia
        key = _client_key(via.branch if via else None, response.cseq[1])
        txn = self.client_transactions.get(key)
        if txn is None:
            self._call_user(self.tu.strayResponseReceived, response,
                            transport, source)
            return
        if type(txn) is _Finished:
            self._finishedResponse(txn, response)
        else:
            txn.receiveResponse(response)

    # -- outgoing

    def sendRequest(
        self, request: Request, transport: ISipTransport, address: Address | None,
        user: IClientTransactionUser,
    ) -> ClientInviteTransaction | ClientNonInviteTransaction:
        """
        Send C{request} to C{address} through a new client transaction.

        The request's top Via is the sender's own; a branch is added when it
        has none. C{user} provides L{IClientTransactionUser}. ACK is never
        sent this way (the ACK of a 2xx is the TU's: L{sendStateless}).
        Returns the transaction.
        """
        if request.method == "ACK":
            raise ValueError("an ACK has no client transaction")
        top = request.headers.get("Via")
        if top is None:
            raise ValueError("the request needs its own top Via")
        via = parse_via(top)
        if not via.branch:
            via.params["branch"] = make_branch()
            request.headers.setFirst("Via", str(via))
        key = _client_key(via.branch, request.method)
        if key in self.client_transactions:
            raise ValueError("a client transaction with branch %s exists"
                             % (via.branch,))
        cls: type[ClientInviteTransaction] | type[ClientNonInviteTransaction] = (
            ClientInviteTransaction if request.method == "INVITE"
            else ClientNonInviteTransaction)
        txn = cls(self, key, request, transport, address, user)
        self.client_transactions[key] = txn
        txn.start()
        return txn

    def sendStateless(
        self, message: Message, transport: ISipTransport, address: Address,
    ) -> None:
        """Send outside any transaction (ACK of a 2xx, stateless forwarding)."""
        transport.send(message, address)

    def findInvite(self, cancel: Request) -> _Transaction | _Finished | None:
        """The INVITE server transaction a CANCEL refers to (RFC 3261 9.2)."""
        via = cancel.topVia
        assert via is not None  # a received request has one (parse_message validates it)
        key = _server_key(cancel, via)
        key = key[:-1] + ("INVITE",)
        txn = self.server_transactions.get(key)
        if type(txn) is _Finished:
            # answered already: the TU sees its state (CANCEL has no effect)
            return (txn.txn() or txn) if txn.invite else None
        return txn if isinstance(txn, ServerInviteTransaction) else None

