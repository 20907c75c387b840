"""
The SIP grammar (RFC 3261 section 25, 19.1, 20): URIs, name-addr, Via, CSeq,
parameters, comma lists and media types, each parsed from and written to
text. L{mbmsd.sip.message} builds messages from these pieces.

Every failure to parse is a L{SipParseError} carrying the status code and the
reason phrase to answer with.
"""

from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING, Callable, Optional, TypeVar, Union
from urllib.parse import unquote

if TYPE_CHECKING:  # the message imports the grammar, never the reverse at run time
    from mbmsd.sip.message import Request, Response

__all__ = [
    "SipParseError", "SipUri", "NameAddr", "Via", "parse_uri",
    "parse_name_addr", "parse_via", "parse_cseq", "parse_params",
    "parse_media_type", "split_comma_list", "unquote_string",
]


class SipParseError(ValueError):
    """
    A message could not be parsed or failed validation.

    @ivar status: the SIP status code to answer with (400, 413, 416, 505).
    @ivar reason: a reason phrase for the response line.
    @ivar partial: the L{mbmsd.sip.message.Request}/C{Response} as far as it
        was parsed (start line and headers), or C{None} when not even that was
        possible.
    @ivar fatal: set by L{mbmsd.sip.message.SipStreamParser} when the stream
        framing is lost and the connection should be closed.
    """

    def __init__(self, status: int, reason: str,
                 partial: Optional[Union[Request, Response]] = None,
                 fatal: bool = False) -> None:
        ValueError.__init__(self, status, reason)
        self.status = status
        self.reason = reason
        self.partial = partial
        self.fatal = fatal

    def __str__(self) -> str:
        return "%d %s" % (self.status, self.reason)


def _bad(what: str, partial: Optional[Union[Request, Response]] = None) -> SipParseError:
    return SipParseError(400, "Bad Request: " + what, partial)


_TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"
_TOKEN_RE = re.compile(_TOKEN + r"\Z")
_SCHEME_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")
_DIGITS_RE = re.compile(r"[0-9]+\Z")


# --------------------------------------------------------------------------
# URIs, name-addr, Via, CSeq
#
# Parsed once per distinct text. The transaction layer and the roles read
# the same From, To, Via, CSeq and URIs of a message many times (and the
# same values recur in every message of a dialog), so parse_uri,
# parse_name_addr, parse_via and parse_cseq remember their result by the
# exact input string (a bounded LRU). Callers see no difference:
#   - parsing is a pure function of the text and the key is the text
#     itself: a header changed with Headers.set/setFirst/prepend is another
#     string, so another entry; nothing can go stale;
#   - callers mutate what they get (stamp_via adds received/rport to the
#     top Via's params, sendRequest a branch): the cache keeps a private
#     template and every call returns a fresh copy (new Via, NameAddr,
#     SipUri and params dicts), as a fresh parse did; CSeq is a tuple;
#   - errors are not cached (lru_cache keeps no exceptions): a malformed
#     value raises a new SipParseError on every call (callers set its
#     partial);
#   - anything but a str of at most _CACHE_TEXT characters bypasses the
#     cache, so its memory stays bounded whatever peers send.

_CACHE_SIZE = 4096
_CACHE_TEXT = 512

_T = TypeVar("_T")
Params = dict[str, Optional[str]]   # ordered; a flag's value is None


def _cached(parse: Callable[[str], _T]) -> Callable[[str], _T]:
    """C{parse} remembered by its exact text; the result must not escape."""
    remember = functools.lru_cache(maxsize=_CACHE_SIZE)(parse)

    def lookup(text: str) -> _T:
        if type(text) is str and len(text) <= _CACHE_TEXT:
            return remember(text)
        return parse(text)

    lookup.cache_clear = remember.cache_clear  # type: ignore[attr-defined]
    lookup.cache_info = remember.cache_info  # type: ignore[attr-defined]
    return lookup


_SPECIALS = {sep: re.compile(r'["<>\\%s]' % (re.escape(sep),)) for sep in ",;"}


def _split_outside_quotes(value: str, sep: str) -> list[str]:
    """Split at C{sep} outside quoted strings and C{<...>}."""
    if '"' not in value and "<" not in value:
        return value.split(sep)
    # visit only the characters that matter (quotes, brackets, escapes, sep)
    out: list[str] = []
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


def parse_params(text: str) -> Params:
    """
    Parse C{;name=value;flag} parameters (C{text} without the leading
    semicolon) into an ordered dict; names lower-cased; a flag's value is
    None; quoted values keep their quotes.
    """
    params: Params = {}
    if not text.strip():
        return params
    for item in _split_outside_quotes(text, ";"):
        name, eq, value = item.partition("=")
        name = name.strip().lower()
        if not _TOKEN_RE.match(name):
            raise _bad("malformed parameter")
        params[name] = value.strip() if eq else None
    return params


def _format_params(params: Params) -> str:
    return "".join(";%s" % (k,) if v is None else ";%s=%s" % (k, v)
                   for k, v in params.items())


def unquote_string(value: Optional[str]) -> Optional[str]:
    """The content of a quoted-string (backslash escapes resolved)."""
    if value is None or len(value) < 2 or value[0] != '"' or value[-1] != '"':
        return value
    return re.sub(r"\\(.)", r"\1", value[1:-1])


_HOST_RE = re.compile(
    r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9\-.]*[A-Za-z0-9.])?)\Z")
_USER_RE = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()&=+$,;?/]|%[0-9A-Fa-f]{2})+\Z")
_PASSWORD_RE = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()&=+$,]|%[0-9A-Fa-f]{2})*\Z")
_TEL_RE = re.compile(r"[0-9A-Fa-f*#+\-.()pPwW]+\Z")


def _parse_hostport(hostport: str) -> tuple[str, Optional[int]]:
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
    if port is None:
        return host, None
    if not _DIGITS_RE.match(port) or int(port) > 65535 or len(port) > 5:
        raise _bad("malformed port")
    return host, int(port)


def _format_host(host: str) -> str:
    return "[%s]" % (host,) if ":" in host else host


class SipUri:
    """
    A sip:, sips: or tel: URI (RFC 3261 19.1, RFC 3966).

    C{user} and C{password} are kept as written (percent-escapes intact) so
    that C{str()} reproduces them; C{userUnquoted} decodes them. C{host} has
    no IPv6 brackets; C{port} is an int or None. For tel: URIs the number is
    in C{user} and C{host} is empty. C{params} is an ordered dict (names
    lower-cased), C{headers} the raw part after C{?} (or None).
    """

    def __init__(self, scheme: str, user: Optional[str] = None,
                 password: Optional[str] = None, host: str = "",
                 port: Optional[int] = None, params: Optional[Params] = None,
                 headers: Optional[str] = None) -> None:
        self.scheme = scheme.lower()
        self.user = user
        self.password = password
        self.host = host
        self.port = port
        self.params = dict(params or {})
        self.headers = headers

    def _copy(self) -> SipUri:
        """A copy sharing nothing mutable (params is the only mutable part)."""
        c = SipUri.__new__(SipUri)
        d = self.__dict__.copy()
        d["params"] = dict(self.params)
        c.__dict__ = d
        return c

    @property
    def userUnquoted(self) -> Optional[str]:
        return None if self.user is None else unquote(self.user)

    def __str__(self) -> str:
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

    def __repr__(self) -> str:
        return "SipUri(%r)" % (str(self),)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SipUri):
            return NotImplemented
        return str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))


def parse_uri(text: str) -> SipUri:
    """Parse a sip:, sips: or tel: URI into a L{SipUri}; SipParseError else."""
    return _uri_template(text)._copy()


def _parse_uri(text: str) -> SipUri:
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
    rest, q, query = rest.partition("?")
    headers = query if q else None
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

    def __init__(self, display_name: Optional[str], uri: SipUri,
                 params: Optional[Params] = None) -> None:
        self.display_name = display_name
        self.uri = uri
        self.params = dict(params or {})

    def _copy(self) -> NameAddr:
        """A copy sharing nothing mutable (the uri and params are copied)."""
        c = NameAddr.__new__(NameAddr)
        d = self.__dict__.copy()
        d["uri"] = self.uri._copy()
        d["params"] = dict(self.params)
        c.__dict__ = d
        return c

    @property
    def tag(self) -> Optional[str]:
        return self.params.get("tag")

    def __str__(self) -> str:
        s = ""
        if self.display_name:
            s = '"%s" ' % (self.display_name.replace("\\", "\\\\")
                           .replace('"', '\\"'),)
        return s + "<%s>%s" % (self.uri, _format_params(self.params))

    def __repr__(self) -> str:
        return "NameAddr(%r)" % (str(self),)


def parse_name_addr(text: str) -> NameAddr:
    """
    Parse C{"Name" <sip:x>;tag=1}, C{Name <sip:x>;tag=1}, C{<sip:x>} or a
    bare C{sip:x;tag=1} (whose parameters are header parameters, RFC 3261
    20.10) into a L{NameAddr}.
    """
    return _name_addr_template(text)._copy()


def _parse_name_addr(text: str) -> NameAddr:
    text = text.strip()
    display = None
    if text.startswith('"'):
        i = 1
        buf: list[str] = []
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

    def __init__(self, transport: str, host: str, port: Optional[int] = None,
                 params: Optional[Params] = None) -> None:
        self.transport = transport.upper()
        self.host = host
        self.port = port
        self.params = dict(params or {})

    def _copy(self) -> Via:
        """A copy sharing nothing mutable (params is the only mutable part)."""
        c = Via.__new__(Via)
        d = self.__dict__.copy()
        d["params"] = dict(self.params)
        c.__dict__ = d
        return c

    @property
    def branch(self) -> Optional[str]:
        return self.params.get("branch")

    @property
    def received(self) -> Optional[str]:
        return self.params.get("received")

    @property
    def rport(self) -> Union[None, bool, int]:
        """None when absent, True when requested (no value), else an int."""
        if "rport" not in self.params:
            return None
        value = self.params["rport"]
        if value is None:
            return True
        return int(value) if _DIGITS_RE.match(value) else True

    @property
    def defaultPort(self) -> int:
        return 5061 if self.transport in ("TLS", "WSS") else 5060

    @property
    def sentBy(self) -> tuple[str, int]:
        """C{(host lower-cased, port)} with the transport's default port."""
        port = self.port if self.port is not None else self.defaultPort
        return (self.host.lower(), port)

    def __str__(self) -> str:
        s = "SIP/2.0/%s %s" % (self.transport, _format_host(self.host))
        if self.port is not None:
            s += ":%d" % (self.port,)
        return s + _format_params(self.params)

    def __repr__(self) -> str:
        return "Via(%r)" % (str(self),)


_VIA_RE = re.compile(r"\s*SIP\s*/\s*2\.0\s*/\s*(%s)\s+(\S[^;]*?)\s*(;.*)?\Z"
                     % (_TOKEN,), re.I | re.S)


def parse_via(text: str) -> Via:
    """Parse one Via value into a L{Via}; SipParseError when malformed."""
    return _via_template(text)._copy()


def _parse_via(text: str) -> Via:
    m = _VIA_RE.match(text)
    if m is None:
        raise _bad("malformed Via")
    host, port = _parse_hostport(re.sub(r"\s+", "", m.group(2)))
    params = parse_params((m.group(3) or ";")[1:])
    if "branch" in params and not params["branch"]:
        raise _bad("empty branch")
    return Via(m.group(1), host, port, params)


_via_template = _cached(_parse_via)


def parse_cseq(text: str) -> tuple[int, str]:
    """Parse a CSeq value into C{(number, method)}; SipParseError else."""
    return _cseq(text)


def _parse_cseq(text: str) -> tuple[int, str]:
    parts = text.split()
    if (len(parts) != 2 or not _DIGITS_RE.match(parts[0])
            or len(parts[0]) > 10 or int(parts[0]) >= 2 ** 31
            or not _TOKEN_RE.match(parts[1])):
        raise _bad("malformed CSeq")
    return int(parts[0]), parts[1]


_cseq = _cached(_parse_cseq)     # a tuple: nothing to copy


def split_comma_list(value: str) -> list[str]:
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


def parse_media_type(text: str) -> tuple[str, Params]:
    """C{"multipart/mixed;boundary=x"} -> C{("multipart/mixed", {...})}."""
    mtype, _, params = text.partition(";")
    mtype = mtype.strip().lower()
    if not re.match(r"%s/%s\Z" % (_TOKEN, _TOKEN), mtype):
        raise _bad("malformed media type")
    return mtype, parse_params(params)
