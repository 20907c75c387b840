"""
Twisted adapters: UDP (a DatagramProtocol) and TCP (a Protocol and its
Factory) that feed the parser and hand messages to a receiver, normally a
L{mbmsd.sip.transaction.TransactionLayer} (anything with
C{receive(message, transport, source)}).

Each adapter is itself the L{ISipTransport} the transactions send through.
Parse errors are answered with their 400/413/416/505 when the message is a
request with enough headers to build a response; otherwise the input is
dropped and logged. No exception escapes into the reactor, so a bad peer
cannot kill a listener.
"""

from __future__ import annotations

import typing
from typing import overload

from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from mbmsd.interfaces import ISipTransport
from mbmsd.logs import Logger
from mbmsd.sip.grammar import SipParseError, Via, parse_cseq, parse_via
from mbmsd.sip.message import (
    DEFAULT_MAX_SIZE,
    Message,
    Request,
    Response,
    SipStreamParser,
    make_response,
    parse_message,
    serialize,
)

__all__ = ["SipDatagramProtocol", "SipStreamProtocol", "SipStreamFactory",
           "error_response", "stamp_via", "response_address"]

log = Logger(namespace="mbmsd.sip.transport")

# (host, port)
Address = tuple[str, int]


class SipReceiver(typing.Protocol):
    """What the adapters hand messages to (L{TransactionLayer.receive})."""

    def receive(
        self, message: Message, transport: ISipTransport, source: Address | None,
    ) -> object: ...


def error_response(error: SipParseError) -> Response | None:
    """
    The response answering a L{SipParseError}, or None when there is none to
    send: the input was a response, an ACK, or lacks the headers a response
    copies (RFC 3261 8.2.6: Via, From, To, Call-ID, CSeq).
    """
    req = error.partial
    if not isinstance(req, Request) or req.method == "ACK":
        return None
    h = req.headers
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        if not (h.get(name) or "").strip():
            return None
    try:
        # both present: checked just above
        parse_via(h.get("Via", ""))
        parse_cseq(h.get("CSeq", ""))
    except SipParseError:
        return None
    return make_response(req, error.status, error.reason, to_tag=True)


@implementer(ISipTransport)
class SipDatagramProtocol(DatagramProtocol):
    """
    SIP over UDP. Listen with C{reactor.listenUDP(port, protocol)} (or an
    endpoint). C{receiver.receive(message, self, (host, port))} gets every
    valid message.
    """

    name = "UDP"
    reliable = False

    def __init__(self, receiver: SipReceiver, max_size: int = DEFAULT_MAX_SIZE) -> None:
        self.receiver = receiver
        self.max_size = max_size
        self.dropped = 0

    def datagramReceived(self, data: bytes, addr: Address) -> None:
        try:
            self._handle(data, addr)
        except Exception:
            log.failure("error handling a datagram from {addr!r}", addr=addr)

    def _handle(self, data: bytes, addr: Address) -> None:
        if not data.strip(b" \t\r\n"):
            return                              # keep-alive
        try:
            message = parse_message(data, self.max_size)
        except SipParseError as e:
            self._answer_error(e, addr)
            return
        self.receiver.receive(message, self, addr)

    def _answer_error(self, error: SipParseError, addr: Address) -> None:
        response = error_response(error)
        if response is None:
            self.dropped += 1
            log.info("dropped a datagram from {addr!r}: {error}",
                     addr=addr, error=error)
            return
        log.info("answered a malformed message from {addr!r}: {error}", addr=addr, error=error)
        via = parse_via(response.headers.get("Via", ""))  # copied from the request
        self.send(response, response_address(via, self, addr))

    def send(self, message: Message, address: Address | None) -> None:
        self.sendBytes(serialize(message), address)

    def sendBytes(self, data: bytes, address: Address | None) -> None:
        """Send an already serialized message (a kept retransmission)."""
        if address is None:
            raise ValueError("a datagram needs a destination address")
        assert self.transport is not None  # connected
        self.transport.write(data, address)


@implementer(ISipTransport)
class SipStreamProtocol(Protocol):
    """
    SIP over one TCP (or TLS) connection: framing by Content-Length, RFC 5626
    CRLFCRLF pings answered with CRLF, responses sent back on the connection.
    After a parse error that loses the framing, the connection is closed.
    """

    name = "TCP"
    reliable = True
    peer: tuple[str, int] | None = None

    def __init__(self, receiver: SipReceiver, max_size: int = DEFAULT_MAX_SIZE) -> None:
        self.receiver = receiver
        self.max_size = max_size
        self.parser = SipStreamParser(self._message, self._error, max_size,
                                      ping_callback=self._ping)
        self.open = False

    def connectionMade(self) -> None:
        self.open = True
        assert self.transport is not None  # set before connectionMade
        peer = self.transport.getPeer()
        # an IPv4Address/IPv6Address on TCP and TLS: host and port both set
        self.peer = typing.cast(
            Address, (getattr(peer, "host", None), getattr(peer, "port", None)))

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.open = False

    def dataReceived(self, data: bytes) -> None:
        try:
            self.parser.feed(data)
        except Exception:
            log.failure("error handling data from {peer!r}", peer=self.peer)

    def _message(self, message: Message) -> None:
        try:
            self.receiver.receive(message, self, self.peer)
        except Exception:
            log.failure("error handling a message from {peer!r}",
                        peer=self.peer)

    def _error(self, error: SipParseError) -> None:
        response = error_response(error)
        if response is not None and self.open:
            log.info("answered a malformed message from {peer!r}: {error}",
                     peer=self.peer, error=error)
            assert self.transport is not None  # connected
            self.transport.write(serialize(response))
        else:
            log.info("dropped a message from {peer!r}: {error}",
                     peer=self.peer, error=error)
        if error.fatal:
            assert self.transport is not None  # connected
            self.transport.loseConnection()

    def _ping(self) -> None:
        if self.open:
            assert self.transport is not None  # connected
            self.transport.write(b"\r\n")

    def send(self, message: Message, address: Address | None = None) -> None:
        """Send on this connection (C{address} is ignored)."""
        if not self.open:
            raise ConnectionError("connection to %r is closed" % (self.peer,))
        assert self.transport is not None  # connected
        self.transport.write(serialize(message))

    def sendBytes(self, data: bytes, address: Address | None = None) -> None:
        """Send an already serialized message on this connection."""
        if not self.open:
            raise ConnectionError("connection to %r is closed" % (self.peer,))
        assert self.transport is not None  # connected
        self.transport.write(data)


class SipStreamFactory(Factory):
    """Builds a L{SipStreamProtocol} per accepted connection."""

    def __init__(self, receiver: SipReceiver, max_size: int = DEFAULT_MAX_SIZE) -> None:
        self.receiver = receiver
        self.max_size = max_size

    def buildProtocol(self, addr: IAddress | None) -> SipStreamProtocol | None:
        protocol = SipStreamProtocol(self.receiver, self.max_size)
        protocol.factory = self
        return protocol


def stamp_via(request: Request, source: Address | None) -> Via:
    """
    Add C{received} (RFC 3261 18.2.1) and fill C{rport} (RFC 3581) in the
    top Via of a received request. Returns the (updated) top L{Via}.
    """
    via = request.topVia
    assert via is not None  # a received request has one (parse_message validates it)
    changed = False
    if source is not None:
        host, port = source[0], source[1]
        if via.params.get("rport", "") is None:
            via.params["rport"] = str(port)
            via.params["received"] = host
            changed = True
        elif via.host != host:
            via.params["received"] = host
            changed = True
    if changed:
        request.headers.setFirst("Via", str(via))
    return via


@overload
def response_address(via: Via, transport: object, source: tuple[str, int]) -> tuple[str, int]: ...


@overload
def response_address(via: Via, transport: object, source: None) -> None: ...


def response_address(
    via: Via, transport: object, source: tuple[str, int] | None,
) -> tuple[str, int] | None:
    """
    Where responses to a request go (RFC 3261 18.2.2, RFC 3581): on a
    reliable transport back to the source; on UDP to the source address and
    the rport, else the sent-by port.
    """
    if getattr(transport, "reliable", False) or source is None:
        return source
    if "rport" in via.params:
        rport = via.params["rport"]
        if not rport:
            # RFC 3581 4: rport without a value (a Via not stamped, as when a
            # malformed request is answered) means the source port
            return source
        try:
            return (source[0], int(rport))
        except ValueError:
            pass
    return (source[0], via.port if via.port is not None else via.defaultPort)

