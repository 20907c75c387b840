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

Every failure to parse is a L{SipParseError} carrying the status code and the
reason phrase to answer with, and, when the start line and headers could be
read, the partially parsed message (C{partial}) so that a transport can build
the error response.
"""

import functools
import re
import secrets
from urllib.parse import unquote

__all__ = [
    "SipParseError", "Headers", "Request", "Response", "SipUri", "NameAddr",
    "Via", "parse_message", "SipStreamParser", "serialize", "parse_uri",
    "parse_name_addr", "parse_via", "parse_cseq", "parse_params",
    "parse_media_type", "parse_multipart", "build_multipart", "make_branch",
    "make_tag", "make_response", "make_ack", "make_cancel", "reason_phrase",
    "REASON_PHRASES", "MAGIC_COOKIE", "COMPACT_FORMS", "MULTI_VALUE_HEADERS",
    "EMPTY_ALLOWED_HEADERS",
]

MAGIC_COOKIE = "z9hG4bK"
DEFAULT_MAX_SIZE = 65535


class SipParseError(ValueError):
    """
    A message could not be parsed or failed validation.

    @ivar status: the SIP status code to answer with (400, 413, 416, 505).
    @ivar reason: a reason phrase for the response line.
    @ivar partial: the L{Request}/L{Response} as far as it was parsed (start
        line and headers), or C{None} when not even that was possible.
    @ivar fatal: set by L{SipStreamParser} when the stream framing is lost and
        the connection should be closed.
    """

    def __init__(self, status, reason, partial=None, fatal=False):
        ValueError.__init__(self, status, reason)
        self.status = status
        self.reason = reason
        self.partial = partial
        self.fatal = fatal

    def __str__(self):
        return "%d %s" % (self.status, self.reason)


def _bad(what, partial=None):
    return SipParseError(400, "Bad Request: " + what, partial)


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


def reason_phrase(status):
    """The standard reason phrase of C{status}, or a generic one by class."""
    try:
        return REASON_PHRASES[status]
    except KeyError:
        return _CLASS_REASONS.get(status // 100, "Unknown")


# --------------------------------------------------------------------------
# Headers

COMPACT_FORMS = {
    # RFC 3261 7.3.3 and 20
    "i": "Call-ID", "m": "Contact", "e": "Content-Encoding",
    "l": "Content-Length", "c": "Content-Type", "f": "From", "s": "Subject",
    "k": "Supported", "t": "To", "v": "Via",
    # RFC 6665 (was 3265), RFC 3515, RFC 4028, RFC 3841, RFC 3892
    "o": "Event", "u": "Allow-Events", "r": "Refer-To",
    "x": "Session-Expires", "a": "Accept-Contact", "j": "Reject-Contact",
    "d": "Request-Disposition", "b": "Referred-By",
}

_CANONICAL = {}
for _name in (
        "Accept", "Accept-Contact", "Accept-Encoding", "Accept-Language",
        "Alert-Info", "Allow", "Allow-Events", "Authentication-Info",
        "Authorization", "Call-ID", "Call-Info", "Contact",
        "Content-Disposition", "Content-Encoding", "Content-Language",
        "Content-Length", "Content-Type", "CSeq", "Date", "Error-Info",
        "Event", "Expires", "From", "In-Reply-To", "Max-Forwards",
        "MIME-Version", "Min-Expires", "Min-SE", "Organization",
        "P-Access-Network-Info", "P-Asserted-Identity", "P-Associated-URI",
        "P-Called-Party-ID", "P-Charging-Function-Addresses",
        "P-Charging-Vector", "P-Preferred-Identity", "P-Preferred-Service",
        "P-Visited-Network-ID", "Path", "Priority", "Privacy",
        "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Require",
        "RAck", "Reason", "Record-Route", "Refer-To", "Referred-By",
        "Reject-Contact", "Reply-To", "Request-Disposition", "Require",
        "Retry-After", "Route", "RSeq", "Security-Client", "Security-Server",
        "Security-Verify", "Server", "Service-Route", "Session-Expires",
        "SIP-ETag", "SIP-If-Match", "Subject", "Subscription-State",
        "Supported", "Timestamp", "To", "Unsupported", "User-Agent", "Via",
        "Warning", "WWW-Authenticate", "X-3GPP-Asserted-Identity",
        "X-3GPP-Intended-Identity"):
    _CANONICAL[_name.lower()] = _name
del _name

# Headers whose grammar is a comma-separated list (RFC 3261 7.3.1): several
# values on one line are split into separate entries.
MULTI_VALUE_HEADERS = frozenset(n.lower() for n in (
    "Via", "Route", "Record-Route", "Contact", "Allow", "Supported",
    "Require", "Proxy-Require", "Unsupported", "P-Associated-URI",
    "P-Asserted-Identity", "P-Preferred-Identity", "Path", "Service-Route",
    "Accept", "Accept-Encoding", "Accept-Language", "Allow-Events",
    "Content-Encoding", "Content-Language", "In-Reply-To", "Warning",
    "Alert-Info", "Call-Info", "Error-Info", "Accept-Contact",
    "Reject-Contact", "Request-Disposition", "Security-Client",
    "Security-Server", "Security-Verify", "Reason",
))

# Of those, the ones whose ABNF makes the list optional, so that the header
# may be present and empty: RFC 3261 25.1 `Allow = "Allow" HCOLON [Method
# *(COMMA Method)]`, the same [...] for Supported (20.37), Accept (20.1),
# Accept-Encoding (20.2) and Accept-Language (20.3); RFC 7315 4.1 for
# P-Associated-URI. Every other one (Require, Proxy-Require, Unsupported,
# Via, Contact, ...) needs at least one item: empty is a 400.
EMPTY_ALLOWED_HEADERS = frozenset(n.lower() for n in (
    "Allow", "Supported", "Accept", "Accept-Encoding", "Accept-Language",
    "P-Associated-URI",
))


def canonical_name(name):
    """The usual spelling of header C{name}; compact forms expanded."""
    low = name.lower()
    if low in COMPACT_FORMS and len(name) == 1:
        return COMPACT_FORMS[low]
    return _CANONICAL.get(low, name)


# Header names are cached by their text (a handful recur in every message);
# names longer than any real one bypass the cache, so that a peer's made-up
# names cannot fill memory.
_NAME_CACHE_TEXT = 64


def _canonical_pair(name):
    cname = canonical_name(name)
    return cname.lower(), cname


_cached_pair = functools.lru_cache(maxsize=1024)(_canonical_pair)


def _names(name):
    """C{(key, canonical name)} of header C{name}: an entry's first two parts."""
    if len(name) > _NAME_CACHE_TEXT:
        return _canonical_pair(name)
    return _cached_pair(name)


def _key(name):
    """The case-insensitive key of header C{name} (compact forms expanded)."""
    return _names(name)[0]


class Headers:
    """
    SIP headers: names case-insensitive, order preserved, multi-valued.

    Each entry is one C{(name, value)} pair; a header given several times (or
    as a comma list that was split) has several entries. Entries keep their
    lower-case key beside them, so lookups compare without re-lowering.
    """

    def __init__(self, items=()):
        self._items = []  # (key, name, value)
        for name, value in items:
            self.add(name, value)

    @staticmethod
    def _entry(name, value):
        key, name = _names(name)
        return (key, name, str(value))

    def add(self, name, value):
        """Append one value of C{name}."""
        self._items.append(self._entry(name, value))

    def prepend(self, name, value):
        """
        Insert C{value} as the first value of C{name} (a proxy's own Via or
        Record-Route), before any existing entry of that name, or at the top.
        """
        entry = self._entry(name, value)
        for i, (k, _, _) in enumerate(self._items):
            if k == entry[0]:
                self._items.insert(i, entry)
                return
        self._items.insert(0, entry)

    def get(self, name, default=None):
        """The first value of C{name}, or C{default}."""
        key = _key(name)
        for k, _, v in self._items:
            if k == key:
                return v
        return default

    def get_all(self, name):
        """All values of C{name}, in order (an empty list when absent)."""
        key = _key(name)
        return [v for k, _, v in self._items if k == key]

    def set(self, name, value):
        """Replace every value of C{name} by C{value} (at the first's place)."""
        entry = self._entry(name, value)
        for i, (k, _, _) in enumerate(self._items):
            if k == entry[0]:
                self._items = self._items[:i] + [entry] + [
                    e for e in self._items[i + 1:] if e[0] != entry[0]]
                return
        self._items.append(entry)

    def set_first(self, name, value):
        """Replace only the first value of C{name} (or add it)."""
        key = _key(name)
        for i, (k, n, _) in enumerate(self._items):
            if k == key:
                self._items[i] = (k, n, str(value))
                return
        self.add(name, value)

    def remove(self, name):
        """Remove every value of C{name}; return how many were removed."""
        key = _key(name)
        before = len(self._items)
        self._items = [e for e in self._items if e[0] != key]
        return before - len(self._items)

    def pop_first(self, name):
        """Remove and return the first value of C{name} (C{None} if absent)."""
        key = _key(name)
        for i, (k, _, v) in enumerate(self._items):
            if k == key:
                del self._items[i]
                return v
        return None

    def __contains__(self, name):
        return self.get(name) is not None

    def __getitem__(self, name):
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __setitem__(self, name, value):
        self.set(name, value)

    def __delitem__(self, name):
        if not self.remove(name):
            raise KeyError(name)

    def __iter__(self):
        return iter(self.items())

    def items(self):
        return [(n, v) for _, n, v in self._items]

    def __len__(self):
        return len(self._items)

    def copy(self):
        h = Headers()
        h._items = list(self._items)
        return h

    def __eq__(self, other):
        if not isinstance(other, Headers):
            return NotImplemented
        return ([(k, v) for k, _, v in self._items]
                == [(k, v) for k, _, v in other._items])

    def __repr__(self):
        return "Headers(%r)" % (self.items(),)


def split_comma_list(value):
    """
    Split C{value} at top-level commas: commas inside quoted strings (with
    backslash escapes) or inside C{<...>} do not split. Empty items dropped.
    Raises SipParseError on an unterminated quoted string.
    """
    if "," not in value and '"' not in value:
        # one item (the usual case): nothing to split, nothing unterminated
        value = value.strip()
        return [value] if value else []
    return [item.strip() for item in _split_outside_quotes(value, ",")
            if item.strip()]


# --------------------------------------------------------------------------
# Messages

class _Message:
    version = "SIP/2.0"

    def __init__(self, headers=None, body=b""):
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
    def call_id(self):
        return self.headers.get("Call-ID")

    @property
    def cseq(self):
        """C{(number, method)} of the CSeq header."""
        return parse_cseq(self.headers.get("CSeq", ""))

    @property
    def vias(self):
        return [parse_via(v) for v in self.headers.get_all("Via")]

    @property
    def top_via(self):
        value = self.headers.get("Via")
        return None if value is None else parse_via(value)

    @property
    def from_(self):
        return parse_name_addr(self.headers.get("From", ""))

    @property
    def to(self):
        return parse_name_addr(self.headers.get("To", ""))

    # read-only uses below look at the cached template (no copy to make)
    @property
    def from_tag(self):
        return _name_addr_template(self.headers.get("From", "")).params.get("tag")

    @property
    def to_tag(self):
        return _name_addr_template(self.headers.get("To", "")).params.get("tag")

    def __bytes__(self):
        return serialize(self)


class Request(_Message):
    """A SIP request. C{uri} is the Request-URI as a string."""

    def __init__(self, method, uri, headers=None, body=b""):
        _Message.__init__(self, headers, body)
        self.method = method
        self.uri = str(uri)

    @property
    def request_uri(self):
        """The Request-URI parsed into a L{SipUri}."""
        return parse_uri(self.uri)

    def start_line(self):
        return "%s %s %s" % (self.method, self.uri, self.version)

    def copy(self):
        return Request(self.method, self.uri, self.headers.copy(), self.body)

    def __repr__(self):
        return "<Request %s %s Call-ID=%s>" % (self.method, self.uri,
                                              self.call_id)


class Response(_Message):
    """
    A SIP response. C{local} is True for the responses the transaction layer
    makes up itself (408 on a timeout, 503 on a transport error).
    """

    local = False

    def __init__(self, status, reason=None, headers=None, body=b""):
        _Message.__init__(self, headers, body)
        self.status = int(status)
        self.reason = reason_phrase(self.status) if reason is None else reason

    def start_line(self):
        return "%s %d %s" % (self.version, self.status, self.reason)

    def copy(self):
        return Response(self.status, self.reason, self.headers.copy(),
                        self.body)

    def __repr__(self):
        return "<Response %d %s Call-ID=%s>" % (self.status, self.reason,
                                               self.call_id)


def serialize(msg):
    """
    The wire form of C{msg}: start line, headers one value per line, a
    Content-Length equal to the body's length in bytes (replacing any given
    one, at its place), an empty line and the body.
    """
    lines = [msg.start_line()]
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

_TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"
_TOKEN_RE = re.compile(_TOKEN + r"\Z")
_HEAD_END_RE = re.compile(rb"\r?\n\r?\n")
_LINE_RE = re.compile(r"\r?\n")
_VERSION_RE = re.compile(r"SIP/(\d+)\.(\d+)\Z", re.I)
_SCHEME_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")
_DIGITS_RE = re.compile(r"[0-9]+\Z")
_RAW_CL_RE = re.compile(rb"^(?:content-length|l)[ \t]*:[ \t]*([0-9]+)[ \t]*\r?$",
                        re.I | re.M)


def _parse_head(head):
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


def _unfold(lines):
    """Join continuation lines (starting with a space or tab) to their header."""
    unfolded = []
    for line in lines:
        if line[:1] in (" ", "\t"):
            if not unfolded:
                raise _bad("continuation line before any header")
            unfolded[-1] = unfolded[-1].rstrip(" \t") + " " + line.strip(" \t")
        else:
            unfolded.append(line)
    return unfolded


def _parse_start_line(line):
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


def _check_version(version):
    m = _VERSION_RE.match(version)
    if m is None:
        raise _bad("malformed SIP version")
    if (int(m.group(1)), int(m.group(2))) != (2, 0):
        return SipParseError(505, "Version Not Supported")
    return None


def _content_length(msg):
    """The Content-Length of C{msg} as an int, or None when absent."""
    values = msg.headers.get_all("Content-Length")
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


def _validate(msg):
    """RFC 3261 8.2.2 / 16.3 sanity checks of a parsed message."""
    # one pass over the headers collects what the checks look at
    seen = {"to": [], "from": [], "cseq": [], "call-id": [],
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
    if request and method != msg.method:
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


def _strip_leading_crlf(data):
    i = 0
    n = len(data)
    while i < n and data[i] in (13, 10):
        i += 1
    return data[i:]


def parse_message(data, max_size=DEFAULT_MAX_SIZE):
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

    def __init__(self, callback, error_callback, max_size=DEFAULT_MAX_SIZE,
                 ping_callback=None):
        self.callback = callback
        self.error_callback = error_callback
        self.ping_callback = ping_callback
        self.max_size = max_size
        self.broken = False
        self._buf = b""
        self._scan = 0          # where to resume looking for the head's end
        self._skip = 0          # body bytes of a refused message to drop
        self._crlfs = 0         # consecutive CRLFs between messages

    def feed(self, data):
        """Give the parser more bytes from the stream."""
        if self.broken:
            return
        self._buf += bytes(data)
        while self._step():
            pass

    dataReceived = feed

    def _fail(self, error):
        error.fatal = True
        self.broken = True
        self._buf = b""
        self.error_callback(error)
        return False

    def _step(self):
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

    def _consume_refused(self, head_len, length):
        self._buf = self._buf[head_len:]
        self._scan = 0
        self._skip = length


# --------------------------------------------------------------------------
# URIs, name-addr, Via, CSeq
#
# Parsed once per distinct text. The transaction layer and the roles read
# the same From, To, Via, CSeq and URIs of a message many times (and the
# same values recur in every message of a dialog), so parse_uri,
# parse_name_addr, parse_via and parse_cseq remember their result by the
# exact input string (a bounded LRU). Callers see no difference:
#   - parsing is a pure function of the text and the key is the text
#     itself: a header changed with Headers.set/set_first/prepend is another
#     string, so another entry; nothing can go stale;
#   - callers mutate what they get (stamp_via adds received/rport to the
#     top Via's params, send_request a branch): the cache keeps a private
#     template and every call returns a fresh copy (new Via, NameAddr,
#     SipUri and params dicts), as a fresh parse did; CSeq is a tuple;
#   - errors are not cached (lru_cache keeps no exceptions): a malformed
#     value raises a new SipParseError on every call (callers set its
#     partial);
#   - anything but a str of at most _CACHE_TEXT characters bypasses the
#     cache, so its memory stays bounded whatever peers send.

_CACHE_SIZE = 4096
_CACHE_TEXT = 512


def _cached(parse):
    """C{parse} remembered by its exact text; the result must not escape."""
    remember = functools.lru_cache(maxsize=_CACHE_SIZE)(parse)

    def lookup(text):
        if type(text) is str and len(text) <= _CACHE_TEXT:
            return remember(text)
        return parse(text)

    lookup.cache_clear = remember.cache_clear
    lookup.cache_info = remember.cache_info
    return lookup

_SPECIALS = {sep: re.compile(r'["<>\\%s]' % (re.escape(sep),)) for sep in ",;"}


def _split_outside_quotes(value, sep):
    """Split at C{sep} outside quoted strings and C{<...>}."""
    if '"' not in value and "<" not in value:
        return value.split(sep)
    # visit only the characters that matter (quotes, brackets, escapes, sep)
    out = []
    start = 0
    in_quote = False
    angle = 0
    skip = -1
    for m in _SPECIALS[sep].finditer(value):
        i = m.start()
        if i == skip:
            continue
        ch = value[i]
        if in_quote:
            if ch == "\\":
                skip = i + 1
            elif ch == '"':
                in_quote = False
            continue
        if ch == '"':
            in_quote = True
        elif ch == "<":
            angle += 1
        elif ch == ">" and angle:
            angle -= 1
        elif ch == sep and not angle:
            out.append(value[start:i])
            start = i + 1
    if in_quote:
        raise _bad("unterminated quoted string")
    out.append(value[start:])
    return out


def parse_params(text):
    """
    Parse C{;name=value;flag} parameters (C{text} without the leading
    semicolon) into an ordered dict; names lower-cased; a flag's value is
    None; quoted values keep their quotes.
    """
    params = {}
    if not text.strip():
        return params
    for item in _split_outside_quotes(text, ";"):
        name, eq, value = item.partition("=")
        name = name.strip().lower()
        if not _TOKEN_RE.match(name):
            raise _bad("malformed parameter")
        params[name] = value.strip() if eq else None
    return params


def _format_params(params):
    return "".join(";%s" % (k,) if v is None else ";%s=%s" % (k, v)
                   for k, v in params.items())


def unquote_string(value):
    """The content of a quoted-string (backslash escapes resolved)."""
    if value is None or len(value) < 2 or value[0] != '"' or value[-1] != '"':
        return value
    return re.sub(r"\\(.)", r"\1", value[1:-1])


_HOST_RE = re.compile(
    r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9\-.]*[A-Za-z0-9.])?)\Z")
_USER_RE = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()&=+$,;?/]|%[0-9A-Fa-f]{2})+\Z")
_PASSWORD_RE = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()&=+$,]|%[0-9A-Fa-f]{2})*\Z")
_TEL_RE = re.compile(r"[0-9A-Fa-f*#+\-.()pPwW]+\Z")


def _parse_hostport(hostport):
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise _bad("malformed IPv6 reference")
        host, rest = hostport[1:end], hostport[end + 1:]
        if not host or not re.match(r"[0-9A-Fa-f:.]+\Z", host) or ":" not in host:
            raise _bad("malformed IPv6 reference")
        if rest and not rest.startswith(":"):
            raise _bad("malformed host")
        port = rest[1:] if rest else None
    else:
        host, colon, port = hostport.partition(":")
        if not colon:
            port = None
        if not _HOST_RE.match(host):
            raise _bad("malformed host")
    if port is not None:
        if not _DIGITS_RE.match(port) or int(port) > 65535 or len(port) > 5:
            raise _bad("malformed port")
        port = int(port)
    return host, port


def _format_host(host):
    return "[%s]" % (host,) if ":" in host else host


class SipUri:
    """
    A sip:, sips: or tel: URI (RFC 3261 19.1, RFC 3966).

    C{user} and C{password} are kept as written (percent-escapes intact) so
    that C{str()} reproduces them; C{user_unquoted} decodes them. C{host} has
    no IPv6 brackets; C{port} is an int or None. For tel: URIs the number is
    in C{user} and C{host} is empty. C{params} is an ordered dict (names
    lower-cased), C{headers} the raw part after C{?} (or None).
    """

    def __init__(self, scheme, user=None, password=None, host="", port=None,
                 params=None, headers=None):
        self.scheme = scheme.lower()
        self.user = user
        self.password = password
        self.host = host
        self.port = port
        self.params = dict(params or {})
        self.headers = headers

    def _copy(self):
        """A copy sharing nothing mutable (params is the only mutable part)."""
        c = SipUri.__new__(SipUri)
        d = self.__dict__.copy()
        d["params"] = dict(self.params)
        c.__dict__ = d
        return c

    @property
    def user_unquoted(self):
        return None if self.user is None else unquote(self.user)

    def __str__(self):
        if self.scheme == "tel":
            s = "tel:" + (self.user or "")
        else:
            s = self.scheme + ":"
            if self.user is not None:
                s += self.user
                if self.password is not None:
                    s += ":" + self.password
                s += "@"
            s += _format_host(self.host)
            if self.port is not None:
                s += ":%d" % (self.port,)
        s += _format_params(self.params)
        if self.headers is not None:
            s += "?" + self.headers
        return s

    def __repr__(self):
        return "SipUri(%r)" % (str(self),)

    def __eq__(self, other):
        if not isinstance(other, SipUri):
            return NotImplemented
        return str(self) == str(other)

    def __hash__(self):
        return hash(str(self))


def parse_uri(text):
    """Parse a sip:, sips: or tel: URI into a L{SipUri}; SipParseError else."""
    return _uri_template(text)._copy()


def _parse_uri(text):
    text = text.strip()
    m = _SCHEME_RE.match(text)
    if m is None:
        raise _bad("malformed URI")
    scheme = m.group(1).lower()
    rest = text[m.end():]
    if scheme == "tel":
        number, _, params = rest.partition(";")
        if not _TEL_RE.match(number):
            raise _bad("malformed tel URI")
        return SipUri("tel", number, params=parse_params(params))
    if scheme not in ("sip", "sips"):
        raise SipParseError(416, "Unsupported URI Scheme")
    if any(c in rest for c in " \t<>\"") or not rest:
        raise _bad("malformed URI")
    user = password = None
    # '@' is allowed neither in parameters nor in headers: the last one
    # ends the userinfo (whose user part may hold ';' and '?').
    at = rest.rfind("@")
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1:]
        user, colon, password = userinfo.partition(":")
        if not colon:
            password = None
        if not _USER_RE.match(user):
            raise _bad("malformed user part")
        if password is not None and not _PASSWORD_RE.match(password):
            raise _bad("malformed password")
    rest, q, headers = rest.partition("?")
    if not q:
        headers = None
    hostport, _, params = rest.partition(";")
    host, port = _parse_hostport(hostport)
    return SipUri(scheme, user, password, host, port, parse_params(params),
                  headers)


_uri_template = _cached(_parse_uri)


class NameAddr:
    """
    A name-addr or addr-spec with header parameters (From, To, Contact,
    Route, P-Asserted-Identity...). C{display_name} is unquoted (or None);
    C{uri} a L{SipUri}; C{params} the header parameters (C{tag}...).
    """

    def __init__(self, display_name, uri, params=None):
        self.display_name = display_name
        self.uri = uri
        self.params = dict(params or {})

    def _copy(self):
        """A copy sharing nothing mutable (the uri and params are copied)."""
        c = NameAddr.__new__(NameAddr)
        d = self.__dict__.copy()
        d["uri"] = self.uri._copy()
        d["params"] = dict(self.params)
        c.__dict__ = d
        return c

    @property
    def tag(self):
        return self.params.get("tag")

    def __str__(self):
        s = ""
        if self.display_name:
            s = '"%s" ' % (self.display_name.replace("\\", "\\\\")
                           .replace('"', '\\"'),)
        return s + "<%s>%s" % (self.uri, _format_params(self.params))

    def __repr__(self):
        return "NameAddr(%r)" % (str(self),)


def parse_name_addr(text):
    """
    Parse C{"Name" <sip:x>;tag=1}, C{Name <sip:x>;tag=1}, C{<sip:x>} or a
    bare C{sip:x;tag=1} (whose parameters are header parameters, RFC 3261
    20.10) into a L{NameAddr}.
    """
    return _name_addr_template(text)._copy()


def _parse_name_addr(text):
    text = text.strip()
    display = None
    if text.startswith('"'):
        i = 1
        buf = []
        while i < len(text):
            ch = text[i]
            if ch == "\\" and i + 1 < len(text):
                buf.append(text[i + 1])
                i += 2
                continue
            if ch == '"':
                break
            buf.append(ch)
            i += 1
        else:
            raise _bad("unterminated display name")
        display = "".join(buf)
        text = text[i + 1:].lstrip()
        if not text.startswith("<"):
            raise _bad("display name without <URI>")
    lt = text.find("<")
    if lt >= 0:
        if display is None:
            display = text[:lt].strip() or None
            if display is not None and not re.match(
                    r"%s(?:[ \t]+%s)*\Z" % (_TOKEN, _TOKEN), display):
                raise _bad("malformed display name")
        gt = text.find(">", lt)
        if gt < 0:
            raise _bad("unterminated <URI>")
        uri = parse_uri(text[lt + 1:gt])
        rest = text[gt + 1:].strip()
        if rest and not rest.startswith(";"):
            raise _bad("junk after <URI>")
        return NameAddr(display, uri, parse_params(rest[1:]))
    if not text:
        raise _bad("empty address")
    uri_text, _, params = text.partition(";")
    return NameAddr(None, parse_uri(uri_text), parse_params(params))


_name_addr_template = _cached(_parse_name_addr)


class Via:
    """
    One Via value (RFC 3261 20.42, RFC 3581). C{port} is None when absent;
    C{params} is an ordered dict (branch, received, rport, maddr, ttl...).
    """

    def __init__(self, transport, host, port=None, params=None):
        self.transport = transport.upper()
        self.host = host
        self.port = port
        self.params = dict(params or {})

    def _copy(self):
        """A copy sharing nothing mutable (params is the only mutable part)."""
        c = Via.__new__(Via)
        d = self.__dict__.copy()
        d["params"] = dict(self.params)
        c.__dict__ = d
        return c

    branch = property(lambda self: self.params.get("branch"))
    received = property(lambda self: self.params.get("received"))

    @property
    def rport(self):
        """None when absent, True when requested (no value), else an int."""
        if "rport" not in self.params:
            return None
        value = self.params["rport"]
        if value is None:
            return True
        return int(value) if _DIGITS_RE.match(value) else True

    @property
    def default_port(self):
        return 5061 if self.transport in ("TLS", "WSS") else 5060

    @property
    def sent_by(self):
        """C{(host lower-cased, port)} with the transport's default port."""
        port = self.port if self.port is not None else self.default_port
        return (self.host.lower(), port)

    def __str__(self):
        s = "SIP/2.0/%s %s" % (self.transport, _format_host(self.host))
        if self.port is not None:
            s += ":%d" % (self.port,)
        return s + _format_params(self.params)

    def __repr__(self):
        return "Via(%r)" % (str(self),)


_VIA_RE = re.compile(r"\s*SIP\s*/\s*2\.0\s*/\s*(%s)\s+(\S[^;]*?)\s*(;.*)?\Z"
                     % (_TOKEN,), re.I | re.S)


def parse_via(text):
    """Parse one Via value into a L{Via}; SipParseError when malformed."""
    return _via_template(text)._copy()


def _parse_via(text):
    m = _VIA_RE.match(text)
    if m is None:
        raise _bad("malformed Via")
    host, port = _parse_hostport(re.sub(r"\s+", "", m.group(2)))
    params = parse_params((m.group(3) or ";")[1:])
    if "branch" in params and not params["branch"]:
        raise _bad("empty branch")
    return Via(m.group(1), host, port, params)


_via_template = _cached(_parse_via)


def parse_cseq(text):
    """Parse a CSeq value into C{(number, method)}; SipParseError else."""
    return _cseq(text)


def _parse_cseq(text):
    parts = text.split()
    if (len(parts) != 2 or not _DIGITS_RE.match(parts[0])
            or len(parts[0]) > 10 or int(parts[0]) >= 2 ** 31
            or not _TOKEN_RE.match(parts[1])):
        raise _bad("malformed CSeq")
    return int(parts[0]), parts[1]


_cseq = _cached(_parse_cseq)     # a tuple: nothing to copy


# --------------------------------------------------------------------------
# Building messages

def make_branch():
    """A new RFC 3261 branch: the magic cookie and 64 random bits in hex."""
    return MAGIC_COOKIE + secrets.token_hex(8)


def make_tag():
    """A new From/To tag (48 random bits in hex)."""
    return secrets.token_hex(6)


def make_response(request, status, reason=None, to_tag=None):
    """
    A response to C{request} (RFC 3261 8.2.6): Via (all values, in order),
    From, To, Call-ID and CSeq copied; Timestamp copied into a 100. When
    C{to_tag} is given (a string, or True for a fresh one) and the To has no
    tag yet, the tag is added.
    """
    resp = Response(status, reason)
    # one pass over the request's headers: every Via, the first of the others
    vias, first = [], {}
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


def make_ack(invite, response):
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
    for value in h.get_all("Route"):
        ack.headers.add("Route", value)
    return ack


def make_cancel(invite):
    """The CANCEL of C{invite} (RFC 3261 9.1)."""
    cancel = Request("CANCEL", invite.uri)
    h = invite.headers
    cancel.headers.add("Via", h.get("Via"))
    cancel.headers.add("Max-Forwards", "70")
    cancel.headers.add("From", h.get("From"))
    cancel.headers.add("To", h.get("To"))
    cancel.headers.add("Call-ID", h.get("Call-ID"))
    cancel.headers.add("CSeq", "%d CANCEL" % (invite.cseq[0],))
    for value in h.get_all("Route"):
        cancel.headers.add("Route", value)
    return cancel


# --------------------------------------------------------------------------
# Bodies

def parse_media_type(text):
    """C{"multipart/mixed;boundary=x"} -> C{("multipart/mixed", {...})}."""
    mtype, _, params = text.partition(";")
    mtype = mtype.strip().lower()
    if not re.match(r"%s/%s\Z" % (_TOKEN, _TOKEN), mtype):
        raise _bad("malformed media type")
    return mtype, parse_params(params)


def parse_multipart(content_type, body):
    """
    Split a multipart (RFC 2046) C{body} into a list of C{(Headers, bytes)}
    parts. Preamble and epilogue are ignored. Raises SipParseError(400).
    """
    mtype, params = parse_media_type(content_type)
    if not mtype.startswith("multipart/"):
        raise _bad("not a multipart body")
    boundary = unquote_string(params.get("boundary"))
    if not boundary or len(boundary) > 70:
        raise _bad("multipart without boundary")
    delim = b"--" + boundary.encode("utf-8")
    # A delimiter starts the body or follows a line end (RFC 2046 5.1.1).
    if body.startswith(delim):
        pos = 0
    else:
        pos = body.find(b"\n" + delim)
        if pos < 0:
            raise _bad("multipart boundary not found")
        pos += 1
    parts = []
    while not body.startswith(b"--", pos + len(delim)):
        eol = body.find(b"\n", pos + len(delim))
        if eol < 0:
            raise _bad("truncated multipart body")
        start = eol + 1
        nxt = body.find(b"\n" + delim, eol)
        if nxt < 0:
            raise _bad("unterminated multipart body")
        end = nxt - 1 if body[nxt - 1:nxt] == b"\r" else nxt
        parts.append(_parse_part(body[start:max(start, end)]))
        pos = nxt + 1
    return parts


def _parse_part(part):
    m = _HEAD_END_RE.search(part)
    if part.startswith(b"\r\n") or part.startswith(b"\n"):
        return Headers(), part[2 if part.startswith(b"\r\n") else 1:]
    if m is None:
        raise _bad("multipart part without headers end")
    try:
        text = part[:m.start()].decode("utf-8")
    except UnicodeDecodeError:
        raise _bad("invalid UTF-8 in part headers")
    headers = Headers()
    for line in _LINE_RE.split(text):
        if line[:1] in (" ", "\t") and len(headers):
            key, name, value = headers._items[-1]
            headers._items[-1] = (key, name, value + " " + line.strip())
            continue
        name, sep, value = line.partition(":")
        if not sep or not _TOKEN_RE.match(name.strip()):
            raise _bad("malformed part header")
        headers.add(name.strip(), value.strip())
    return headers, part[m.end():]


def build_multipart(parts, boundary=None, subtype="mixed"):
    """
    Build a multipart body from C{(content_type, bytes)} pairs (or
    C{(Headers, bytes)}). Returns C{(content_type, body)}.
    """
    if boundary is None:
        boundary = "mbmsd-" + secrets.token_hex(8)
    delim = b"--" + boundary.encode("ascii")
    out = []
    for head, data in parts:
        if isinstance(head, str):
            head = Headers([("Content-Type", head)])
        if isinstance(data, str):
            data = data.encode("utf-8")
        if delim in data:
            raise ValueError("boundary occurs in a part")
        lines = "".join("%s: %s\r\n" % (n, v) for n, v in head)
        out.append(delim + b"\r\n" + lines.encode("utf-8") + b"\r\n" + data)
    body = b"\r\n".join(out) + b"\r\n" + delim + b"--\r\n"
    return "multipart/%s;boundary=%s" % (subtype, boundary), body
