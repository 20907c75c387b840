"""
SIP messages (RFC 3261 section 7, 18.3, 20), parsed from and written to bytes.

Unlike C{twisted.protocols.sip} (Twisted 26.10 decodes a body as UTF-8 and
counts its Content-Length in characters), everything here counts in
bytes: the start line and headers are decoded as UTF-8, the body is kept as
C{bytes} and framed by its Content-Length in bytes.

Entry points:
  - L{parse_message}: one UDP datagram -> L{Request} or L{Response}.
  - L{SipStreamParser}: a TCP byte stream -> messages, by Content-Length.
  - L{serialize}: message -> bytes, always with a correct Content-Length.

The grammar of the pieces (URIs, name-addr, Via, CSeq, parameters) is in
L{mbmsd.sip.grammar}, the header container in L{mbmsd.sip.headers}, multipart
bodies in L{mbmsd.sip.multipart}.

Every failure to parse is a L{mbmsd.sip.grammar.SipParseError} carrying the
status code and the reason phrase to answer with, and, when the start line and
headers could be read, the partially parsed message (C{partial}) so that a
transport can build the error response.
"""

from __future__ import annotations

import re
import secrets
from typing import Callable, Iterable, Optional, Union, cast

from mbmsd.sip.grammar import (
    _DIGITS_RE,
    _SCHEME_RE,
    _TOKEN_RE,
    NameAddr,
    SipParseError,
    SipUri,
    Via,
    _bad,
    _name_addr_template,
    _uri_template,
    _via_template,
    parse_cseq,
    parse_name_addr,
    parse_uri,
    parse_via,
    split_comma_list,
)
from mbmsd.sip.headers import EMPTY_ALLOWED_HEADERS, MULTI_VALUE_HEADERS, Entry, Headers, _names

__all__ = [
    "Request", "Response", "parse_message", "SipStreamParser", "serialize",
    "make_branch", "make_tag", "make_response", "make_ack", "make_cancel",
    "reason_phrase", "REASON_PHRASES", "MAGIC_COOKIE", "DEFAULT_MAX_SIZE",
]

BytesLike = Union[bytes, bytearray, memoryview]

MAGIC_COOKIE = "z9hG4bK"
DEFAULT_MAX_SIZE = 65535


# --------------------------------------------------------------------------
# Reason phrases (RFC 3261 21 and later RFCs)

REASON_PHRASES = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded",
    182: "Queued", 183: "Session Progress", 199: "Early Dialog Terminated",
    200: "OK", 202: "Accepted", 204: "No Notification",
    300: "Multiple Choices", 301: "Moved Permanently",
    302: "Moved Temporarily", 305: "Use Proxy", 380: "Alternative Service",
    400: "Bad Request", 401: "Unauthorized", 402: "Payment Required",
    403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    406: "Not Acceptable", 407: "Proxy Authentication Required",
    408: "Request Timeout", 410: "Gone", 412: "Conditional Request Failed",
    413: "Request Entity Too Large", 414: "Request-URI Too Long",
    415: "Unsupported Media Type", 416: "Unsupported URI Scheme",
    417: "Unknown Resource-Priority", 420: "Bad Extension",
    421: "Extension Required", 422: "Session Interval Too Small",
    423: "Interval Too Brief", 428: "Use Identity Header",
    429: "Provide Referrer Identity", 433: "Anonymity Disallowed",
    436: "Bad Identity-Info", 437: "Unsupported Certificate",
    438: "Invalid Identity Header", 439: "First Hop Lacks Outbound Support",
    440: "Max-Breadth Exceeded", 469: "Bad Info Package",
    470: "Consent Needed", 480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist", 482: "Loop Detected",
    483: "Too Many Hops", 484: "Address Incomplete", 485: "Ambiguous",
    486: "Busy Here", 487: "Request Terminated", 488: "Not Acceptable Here",
    489: "Bad Event", 491: "Request Pending", 493: "Undecipherable",
    494: "Security Agreement Required",
    500: "Server Internal Error", 501: "Not Implemented",
    502: "Bad Gateway", 503: "Service Unavailable", 504: "Server Time-out",
    505: "Version Not Supported", 513: "Message Too Large",
    555: "Push Notification Service Not Supported",
    580: "Precondition Failure",
    600: "Busy Everywhere", 603: "Decline", 604: "Does Not Exist Anywhere",
    606: "Not Acceptable", 607: "Unwanted", 608: "Rejected",
}

_CLASS_REASONS = {1: "Provisional", 2: "Success", 3: "Redirection",
                  4: "Client Error", 5: "Server Error", 6: "Global Failure"}


def reason_phrase(status: int) -> str:
    """The standard reason phrase of C{status}, or a generic one by class."""
    try:
        return REASON_PHRASES[status]
    except KeyError:
        return _CLASS_REASONS.get(status // 100, "Unknown")



# --------------------------------------------------------------------------
# Messages

class _Message:
    version = "SIP/2.0"

    def __init__(self, headers: Optional[Union[Headers, Iterable[tuple[str, object]]]] = None,
                 body: Union[str, BytesLike] = b"") -> None:
        if headers is None:
            headers = Headers()
        elif not isinstance(headers, Headers):
            headers = Headers(headers)
        self.headers = headers
        if isinstance(body, str):
            body = body.encode("utf-8")
        self.body = bytes(body)

    # Convenience accessors; they parse on demand and raise SipParseError.
    @property
    def callId(self) -> Optional[str]:
        return self.headers.get("Call-ID")

    @property
    def cseq(self) -> tuple[int, str]:
        """C{(number, method)} of the CSeq header."""
        return parse_cseq(self.headers.get("CSeq", ""))

    @property
    def vias(self) -> list[Via]:
        return [parse_via(v) for v in self.headers.getAll("Via")]

    @property
    def topVia(self) -> Optional[Via]:
        value = self.headers.get("Via")
        return None if value is None else parse_via(value)

    @property
    def from_(self) -> NameAddr:
        return parse_name_addr(self.headers.get("From", ""))

    @property
    def to(self) -> NameAddr:
        return parse_name_addr(self.headers.get("To", ""))

    # read-only uses below look at the cached template (no copy to make)
    @property
    def fromTag(self) -> Optional[str]:
        return _name_addr_template(self.headers.get("From", "")).params.get("tag")

    @property
    def toTag(self) -> Optional[str]:
        return _name_addr_template(self.headers.get("To", "")).params.get("tag")

    def __bytes__(self) -> bytes:
        return serialize(cast("Message", self))


class Request(_Message):
    """A SIP request. C{uri} is the Request-URI as a string."""

    _uri_error: Optional[SipParseError]     # set by the parser only

    def __init__(self, method: str, uri: object,
                 headers: Optional[Union[Headers, Iterable[tuple[str, object]]]] = None,
                 body: Union[str, BytesLike] = b"") -> None:
        _Message.__init__(self, headers, body)
        self.method = method
        self.uri = str(uri)

    @property
    def requestUri(self) -> SipUri:
        """The Request-URI parsed into a L{SipUri}."""
        return parse_uri(self.uri)

    def startLine(self) -> str:
        return "%s %s %s" % (self.method, self.uri, self.version)

    def copy(self) -> Request:
        return Request(self.method, self.uri, self.headers.copy(), self.body)

    def __repr__(self) -> str:
        return "<Request %s %s Call-ID=%s>" % (self.method, self.uri,
                                              self.callId)


class Response(_Message):
    """
    A SIP response. C{local} is True for the responses the transaction layer
    makes up itself (408 on a timeout, 503 on a transport error).
    """

    local = False

    def __init__(self, status: int, reason: Optional[str] = None,
                 headers: Optional[Union[Headers, Iterable[tuple[str, object]]]] = None,
                 body: Union[str, BytesLike] = b"") -> None:
        _Message.__init__(self, headers, body)
        self.status = int(status)
        self.reason = reason_phrase(self.status) if reason is None else reason

    def startLine(self) -> str:
        return "%s %d %s" % (self.version, self.status, self.reason)

    def copy(self) -> Response:
        return Response(self.status, self.reason, self.headers.copy(),
                        self.body)

    def __repr__(self) -> str:
        return "<Response %d %s Call-ID=%s>" % (self.status, self.reason,
                                               self.callId)


Message = Union[Request, Response]


def serialize(msg: Message) -> bytes:
    """
    The wire form of C{msg}: start line, headers one value per line, a
    Content-Length equal to the body's length in bytes (replacing any given
    one, at its place), an empty line and the body.
    """
    lines = [msg.startLine()]
    wrote_length = False
    length = len(msg.body)
    for _, name, value in msg.headers._items:
        if name == "Content-Length":
            if wrote_length:
                continue
            value = str(length)
            wrote_length = True
        lines.append("%s: %s" % (name, value))
    if not wrote_length:
        lines.append("Content-Length: %d" % (length,))
    head = "\r\n".join(lines) + "\r\n\r\n"
    return head.encode("utf-8") + msg.body


# --------------------------------------------------------------------------
# Parsing

_HEAD_END_RE = re.compile(rb"\r?\n\r?\n")
_LINE_RE = re.compile(r"\r?\n")
_VERSION_RE = re.compile(r"SIP/(\d+)\.(\d+)\Z", re.I)
_RAW_CL_RE = re.compile(rb"^(?:content-length|l)[ \t]*:[ \t]*([0-9]+)[ \t]*\r?$",
                        re.I | re.M)


def _parse_head(head: bytes) -> Message:
    """
    Parse the start line and the headers (C{head}: bytes up to, excluding,
    the empty line). Returns a L{Request} or L{Response} with no body.
    Raises L{SipParseError}; it carries C{partial} when the start line was
    readable but a later check failed.
    """
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        raise _bad("invalid UTF-8 in headers")
    lines = _LINE_RE.split(text)
    start = lines[0]
    msg, version_error = _parse_start_line(start)

    if "\n " in text or "\n\t" in text:
        unfolded = _unfold(lines[1:])
    else:
        unfolded = lines[1:]        # no line starts with a space or a tab
    items = msg.headers._items      # entries as Headers.add makes them
    for line in unfolded:
        name, sep, value = line.partition(":")
        name = name.rstrip(" \t")
        if not sep or not _TOKEN_RE.match(name):
            raise _bad("malformed header line", msg)
        value = value.strip(" \t")
        low, cname = _names(name)
        if low in MULTI_VALUE_HEADERS and value != "*":
            try:
                values = split_comma_list(value)
            except SipParseError as e:
                raise _bad(e.reason[len("Bad Request: "):] + " in " + cname,
                           msg)
            if not values:
                if value or low not in EMPTY_ALLOWED_HEADERS:
                    raise _bad("empty %s" % (cname,), msg)
                values = [""]  # present and empty: not the same as absent (20.1)
            for v in values:
                items.append((low, cname, v))
        else:
            items.append((low, cname, value))
    if version_error is not None:
        version_error.partial = msg
        raise version_error
    if isinstance(msg, Request) and msg._uri_error is not None:
        err = msg._uri_error
        err.partial = msg
        raise err
    return msg


def _unfold(lines: list[str]) -> list[str]:
    """Join continuation lines (starting with a space or tab) to their header."""
    unfolded: list[str] = []
    for line in lines:
        if line[:1] in (" ", "\t"):
            if not unfolded:
                raise _bad("continuation line before any header")
            unfolded[-1] = unfolded[-1].rstrip(" \t") + " " + line.strip(" \t")
        else:
            unfolded.append(line)
    return unfolded


def _parse_start_line(line: str) -> tuple[Message, Optional[SipParseError]]:
    """Returns (message, deferred error) for one start line."""
    if not line:
        raise _bad("empty start line")
    if line[:4].upper() == "SIP/":
        parts = line.split(" ", 2)
        if len(parts) < 2:
            raise _bad("malformed status line")
        version_error = _check_version(parts[0])
        if not re.match(r"[1-6][0-9][0-9]\Z", parts[1]):
            raise _bad("malformed status code")
        reason = parts[2] if len(parts) == 3 else ""
        return Response(int(parts[1]), reason), version_error
    parts = line.split(" ")
    if len(parts) != 3 or not parts[1]:
        raise _bad("malformed request line")
    method, uri, version = parts
    if not _TOKEN_RE.match(method):
        raise _bad("malformed method")
    version_error = _check_version(version)
    req = Request(method, uri)
    req._uri_error = None
    m = _SCHEME_RE.match(uri)
    if m is None:
        req._uri_error = _bad("malformed Request-URI")
    elif m.group(1).lower() not in ("sip", "sips", "tel"):
        req._uri_error = SipParseError(416, "Unsupported URI Scheme")
    else:
        try:
            _uri_template(uri)
        except SipParseError:
            req._uri_error = _bad("malformed Request-URI")
    return req, version_error


def _check_version(version: str) -> Optional[SipParseError]:
    m = _VERSION_RE.match(version)
    if m is None:
        raise _bad("malformed SIP version")
    if (int(m.group(1)), int(m.group(2))) != (2, 0):
        return SipParseError(505, "Version Not Supported")
    return None


def _content_length(msg: Message) -> Optional[int]:
    """The Content-Length of C{msg} as an int, or None when absent."""
    values = msg.headers.getAll("Content-Length")
    if not values:
        return None
    lengths = set()
    for v in values:
        v = v.strip()
        if not _DIGITS_RE.match(v) or len(v) > 10:
            raise _bad("invalid Content-Length", msg)
        lengths.add(int(v))
    if len(lengths) != 1:
        raise _bad("conflicting Content-Length", msg)
    return lengths.pop()


def _validate(msg: Message) -> None:
    """RFC 3261 8.2.2 / 16.3 sanity checks of a parsed message."""
    # one pass over the headers collects what the checks look at
    seen: dict[str, list[str]] = {"to": [], "from": [], "cseq": [], "call-id": [],
            "max-forwards": [], "via": []}
    for key, _, value in msg.headers._items:
        if key in seen:
            seen[key].append(value)
    request = isinstance(msg, Request)
    required = ["To", "From", "CSeq", "Call-ID"]
    if request:
        required.append("Max-Forwards")
    required.append("Via")
    for name in required:
        if not seen[name.lower()]:
            raise _bad("missing " + name, msg)
    for name in ("To", "From", "CSeq", "Call-ID", "Max-Forwards"):
        if len(seen[name.lower()]) > 1:
            raise _bad("multiple " + name, msg)
    call_id = seen["call-id"][0]
    if not call_id.strip() or any(c in call_id for c in " \t<>\""):
        raise _bad("malformed Call-ID", msg)
    try:
        number, method = parse_cseq(seen["cseq"][0])
    except SipParseError as e:
        e.partial = msg
        raise
    if isinstance(msg, Request) and method != msg.method:
        raise _bad("CSeq method does not match the request method", msg)
    if request:
        mf = seen["max-forwards"][0].strip()
        if not _DIGITS_RE.match(mf) or int(mf) > 255:
            raise _bad("invalid Max-Forwards", msg)
    for name in ("From", "To"):
        try:
            _name_addr_template(seen[name.lower()][0])
        except SipParseError:
            raise _bad("malformed " + name, msg)
    for value in seen["via"]:
        try:
            _via_template(value)
        except SipParseError:
            raise _bad("malformed Via", msg)


def _strip_leading_crlf(data: bytes) -> bytes:
    i = 0
    n = len(data)
    while i < n and data[i] in (13, 10):
        i += 1
    return data[i:]


def parse_message(data: BytesLike, max_size: int = DEFAULT_MAX_SIZE) -> Message:
    """
    Parse one datagram (RFC 3261 18.3, unreliable transport) into a
    L{Request} or L{Response}.

    The body is the rest of the datagram, truncated to Content-Length when
    that is given; a Content-Length larger than the rest is an error.
    Raises L{SipParseError} (and nothing else) for any malformed input.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError("parse_message wants bytes")
    data = _strip_leading_crlf(bytes(data))
    if not data:
        raise _bad("empty message")
    m = _HEAD_END_RE.search(data)
    if len(data) > max_size:
        partial = None
        if m is not None:
            try:
                partial = _parse_head(data[:m.start()])
            except SipParseError as e:
                partial = e.partial
        raise SipParseError(413, reason_phrase(413), partial)
    if m is None:
        partial = None
        try:
            partial = _parse_head(data.rstrip(b"\r\n"))
        except SipParseError as e:
            partial = e.partial
        raise _bad("no empty line after the headers", partial)
    msg = _parse_head(data[:m.start()])
    rest = data[m.end():]
    length = _content_length(msg)
    if length is None:
        msg.body = rest
    elif length > len(rest):
        raise _bad("Content-Length larger than the message", msg)
    else:
        msg.body = rest[:length]
    _validate(msg)
    return msg


class SipStreamParser:
    """
    Frame SIP messages out of a byte stream (TCP, TLS) by Content-Length
    (RFC 3261 18.3: mandatory on streams).

    @param callback: called with each valid L{Request}/L{Response}.
    @param error_callback: called with a L{SipParseError} for each message
        that could not be parsed or validated. When its C{fatal} is true the
        framing is lost: the parser drops all further input (C{broken}) and
        the connection should be closed after answering.
    @param ping_callback: called (no arguments) for each RFC 5626 CRLFCRLF
        keep-alive ping seen between messages; the answer is one CRLF.

    CRLFs before a start line are skipped (RFC 3261 7.5). The callbacks are
    called after the message's bytes were consumed, so a callback may raise
    without corrupting the parser (the exception propagates to C{feed}'s
    caller; the remaining bytes are processed on the next C{feed}).
    """

    def __init__(self, callback: Callable[[Message], object],
                 error_callback: Callable[[SipParseError], object],
                 max_size: int = DEFAULT_MAX_SIZE,
                 ping_callback: Optional[Callable[[], object]] = None) -> None:
        self.callback = callback
        self.error_callback = error_callback
        self.ping_callback = ping_callback
        self.max_size = max_size
        self.broken = False
        self._buf = b""
        self._scan = 0          # where to resume looking for the head's end
        self._skip = 0          # body bytes of a refused message to drop
        self._crlfs = 0         # consecutive CRLFs between messages

    def feed(self, data: BytesLike) -> None:
        """Give the parser more bytes from the stream."""
        if self.broken:
            return
        self._buf += bytes(data)
        while self._step():
            pass

    dataReceived = feed

    def _fail(self, error: SipParseError) -> bool:
        error.fatal = True
        self.broken = True
        self._buf = b""
        self.error_callback(error)
        return False

    def _step(self) -> bool:
        """Handle what the buffer holds; return True to be called again."""
        if self._skip:
            n = min(self._skip, len(self._buf))
            self._buf = self._buf[n:]
            self._skip -= n
            if self._skip:
                return False
        buf = self._buf
        # Keep-alives and stray line ends between messages.
        i = 0
        while i < len(buf):
            if buf.startswith(b"\r\n", i):
                i += 2
                self._crlfs += 1
                if self._crlfs == 2:
                    self._crlfs = 0
                    if self.ping_callback is not None:
                        self._buf = buf = buf[i:]
                        i = 0
                        self.ping_callback()
            elif buf[i:i + 1] == b"\n":
                i += 1
            elif buf[i:] == b"\r":
                break
            else:
                break
        if i:
            self._buf = buf = buf[i:]
            self._scan = 0
        if not buf or buf == b"\r":
            return False
        self._crlfs = 0
        m = _HEAD_END_RE.search(buf, self._scan)
        if m is None:
            self._scan = max(0, len(buf) - 3)
            if len(buf) > self.max_size:
                return self._fail(SipParseError(413, reason_phrase(413)))
            return False
        head_len = m.end()
        try:
            msg = _parse_head(buf[:m.start()])
            length = _content_length(msg)
        except SipParseError as e:
            # Try to keep the framing with a plain look at Content-Length.
            raw = _RAW_CL_RE.findall(buf[:m.start()])
            if len(set(raw)) != 1 or len(raw[0]) > 10:
                return self._fail(e)
            self._consume_refused(head_len, int(raw[0]))
            self.error_callback(e)
            return True
        if length is None:
            return self._fail(_bad("missing Content-Length", msg))
        if head_len + length > self.max_size:
            self._consume_refused(head_len, length)
            self.error_callback(SipParseError(413, reason_phrase(413), msg))
            return True
        if len(buf) < head_len + length:
            return False
        msg.body = buf[head_len:head_len + length]
        self._buf = buf[head_len + length:]
        self._scan = 0
        try:
            _validate(msg)
        except SipParseError as e:
            self.error_callback(e)
            return True
        self.callback(msg)
        return True

    def _consume_refused(self, head_len: int, length: int) -> None:
        self._buf = self._buf[head_len:]
        self._scan = 0
        self._skip = length




# --------------------------------------------------------------------------
# Building messages

def make_branch() -> str:
    """A new RFC 3261 branch: the magic cookie and 64 random bits in hex."""
    return MAGIC_COOKIE + secrets.token_hex(8)


def make_tag() -> str:
    """A new From/To tag (48 random bits in hex)."""
    return secrets.token_hex(6)


def make_response(request: Request, status: int, reason: Optional[str] = None,
                  to_tag: Union[None, bool, str] = None) -> Response:
    """
    A response to C{request} (RFC 3261 8.2.6): Via (all values, in order),
    From, To, Call-ID and CSeq copied; Timestamp copied into a 100. When
    C{to_tag} is given (a string, or True for a fresh one) and the To has no
    tag yet, the tag is added.
    """
    resp = Response(status, reason)
    # one pass over the request's headers: every Via, the first of the others
    vias: list[Entry] = []
    first: dict[str, str] = {}
    for key, _, value in request.headers._items:
        if key == "via":
            vias.append(("via", "Via", value))
        elif key not in first:
            first[key] = value
    to = first.get("to", "")
    if to_tag and status != 100:
        try:
            has_tag = _name_addr_template(to).tag is not None
        except SipParseError:
            has_tag = True
        if not has_tag:
            to += ";tag=" + (make_tag() if to_tag is True else to_tag)
    items = resp.headers._items
    items += vias
    items += [("from", "From", first.get("from", "")), ("to", "To", to),
              ("call-id", "Call-ID", first.get("call-id", "")),
              ("cseq", "CSeq", first.get("cseq", ""))]
    if status == 100 and "timestamp" in first:
        items.append(("timestamp", "Timestamp", first["timestamp"]))
    return resp


def make_ack(invite: Request, response: Response) -> Request:
    """
    The ACK of a non-2xx final C{response} to C{invite}, as the INVITE
    client transaction sends it (RFC 3261 17.1.1.3): same Request-URI,
    Call-ID, From, CSeq number and top Via, the response's To, the
    INVITE's Route headers.
    """
    ack = Request("ACK", invite.uri)
    h = invite.headers
    ack.headers.add("Via", h.get("Via"))
    ack.headers.add("Max-Forwards", "70")
    ack.headers.add("From", h.get("From"))
    ack.headers.add("To", response.headers.get("To"))
    ack.headers.add("Call-ID", h.get("Call-ID"))
    ack.headers.add("CSeq", "%d ACK" % (invite.cseq[0],))
    for value in h.getAll("Route"):
        ack.headers.add("Route", value)
    return ack


def make_cancel(invite: Request) -> Request:
    """The CANCEL of C{invite} (RFC 3261 9.1)."""
    cancel = Request("CANCEL", invite.uri)
    h = invite.headers
    cancel.headers.add("Via", h.get("Via"))
    cancel.headers.add("Max-Forwards", "70")
    cancel.headers.add("From", h.get("From"))
    cancel.headers.add("To", h.get("To"))
    cancel.headers.add("Call-ID", h.get("Call-ID"))
    cancel.headers.add("CSeq", "%d CANCEL" % (invite.cseq[0],))
    for value in h.getAll("Route"):
        cancel.headers.add("Route", value)
    return cancel
