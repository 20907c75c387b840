"""
HTTP Digest access authentication: header syntax (RFC 7235 2.1 auth-param
lists, RFC 7230 3.2.6 token / quoted-string), the RFC 2617 / RFC 7616 MD5
computations, and AKAv1-MD5 (RFC 3310) where the password is RES as raw
octets. Shared by Ub (TS 24.109 4), Ua (TS 24.109 5) and SIP REGISTER.

Parsers raise DigestError with a short reason; they never echo the header
(which may be huge or hostile) nor any secret. Only US-ASCII headers are
accepted.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass, field
from typing import Iterable, Optional, Union

__all__ = [
    "DigestError",
    "MAX_HEADER_LENGTH",
    "parse_auth_params",
    "DigestCredentials",
    "parse_authorization",
    "DigestChallenge",
    "parse_challenge",
    "format_challenge",
    "compute_response",
    "compute_rspauth",
    "format_authorization",
    "format_authentication_info",
    "parse_authentication_info",
    "check_response",
    "decode_auts",
]


class DigestError(ValueError):
    """A Digest header could not be parsed or a computation was refused."""


MAX_HEADER_LENGTH = 8192

# RFC 7230 3.2.6: tchar
_TCHARS = frozenset("!#$%&'*+-.^_`|~0123456789"
                    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_WS = " \t"
# RFC 7230 3.2.4: obs-fold is replaced by SP before interpretation.
_OBS_FOLD = re.compile(r"\r?\n[ \t]+")
_HEX8 = re.compile(r"[0-9a-fA-F]{8}\Z")
_HEX32 = re.compile(r"[0-9a-fA-F]{32}\Z")


def _to_text(value: Union[str, bytes]) -> str:
    """Length-check, decode (ASCII only) and unfold a header value."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        value = bytes(value)
        if len(value) > MAX_HEADER_LENGTH:
            raise DigestError("header too long")
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            raise DigestError("header is not US-ASCII") from None
    elif not isinstance(value, str):
        raise DigestError("header must be str or bytes")
    if len(value) > MAX_HEADER_LENGTH:
        raise DigestError("header too long")
    if not value.isascii():
        raise DigestError("header is not US-ASCII")
    return _OBS_FOLD.sub(" ", value)


# The same rules as regular expressions, matched at a position: one C call
# instead of a Python loop per character (input is US-ASCII by now).
_TCHAR = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]"  # _TCHARS
# RFC 7230 3.2.6: DQUOTE *( qdtext / quoted-pair ) DQUOTE; group 1 is the inside
_QUOTED = r'"((?:[\t\x20\x21\x23-\x5b\x5d-\x7e]|\\[\t\x20-\x7e])*)"'
_WS_AT = re.compile(r"[ \t]*")
_TOKEN_AT = re.compile(_TCHAR + "*")
_QUOTED_AT = re.compile(_QUOTED)
_QUOTED_PAIR = re.compile(r"\\(.)")


def _skip_ws(s: str, i: int) -> int:
    m = _WS_AT.match(s, i)
    assert m is not None  # "*": matches the empty string
    return m.end()


def _token(s: str, i: int) -> tuple[str, int]:
    m = _TOKEN_AT.match(s, i)
    assert m is not None  # "*": matches the empty string
    j = m.end()
    return s[i:j], j


def _quoted_string(s: str, i: int) -> tuple[str, int]:
    """s[i] is the opening DQUOTE; return (unescaped value, index after)."""
    m = _QUOTED_AT.match(s, i)
    if m is not None:
        value = m.group(1)
        if "\\" in value:
            value = _QUOTED_PAIR.sub(r"\1", value)
        return value, m.end()
    return _quoted_string_error(s, i)


def _quoted_string_error(s: str, i: int) -> tuple[str, int]:
    """Walk a quoted-string that the expression refused, to name the fault."""
    out: list[str] = []
    i += 1
    n = len(s)
    while i < n:
        c = s[i]
        if c == '"':
            return "".join(out), i + 1
        if c == "\\":
            # RFC 7230 3.2.6: quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text )
            if i + 1 >= n:
                break
            c = s[i + 1]
            if not (c == "\t" or " " <= c <= "~"):
                raise DigestError("invalid escape in quoted-string")
            out.append(c)
            i += 2
            continue
        # qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E
        if not (c == "\t" or " " <= c <= "~"):
            raise DigestError("control character in quoted-string")
        out.append(c)
        i += 1
    raise DigestError("unterminated quoted-string")


_SEPARATORS_AT = re.compile(r"[ \t,]*")
# one auth-param and what follows it: separators, or the end
_PARAM_AT = re.compile(r"(%s+)[ \t]*=[ \t]*(?:%s|(%s+))[ \t]*(?:,[ \t,]*|\Z)"
                       % (_TCHAR, _QUOTED, _TCHAR))


def _parse_params(s: str, i: int) -> dict[str, str]:
    # RFC 7235 2.1: auth-param = token BWS "=" BWS ( token / quoted-string ),
    # in a #rule list (RFC 7230 7: empty elements tolerated). One expression
    # per well-formed auth-param; anything else is left to the walk below,
    # which decides the same and names the fault.
    params: dict[str, str] = {}
    n = len(s)
    sep = _SEPARATORS_AT.match(s, i)
    assert sep is not None  # "*": matches the empty string
    i = sep.end()
    while i < n:
        m = _PARAM_AT.match(s, i)
        if m is None:
            return _parse_params_walk(s, i, params)
        name, quoted, token = m.groups()
        if quoted is not None and "\\" in quoted:
            quoted = _QUOTED_PAIR.sub(r"\1", quoted)
        key = name.lower()
        if key in params:
            raise DigestError("duplicate auth-param")
        params[key] = token if quoted is None else quoted
        i = m.end()
    return params


def _parse_params_walk(s: str, i: int, params: dict[str, str]) -> dict[str, str]:
    # RFC 7235 2.1: auth-param = token BWS "=" BWS ( token / quoted-string ),
    # in a #rule list (RFC 7230 7: empty elements tolerated).
    n = len(s)
    expect_sep = False
    while True:
        i = _skip_ws(s, i)
        if i >= n:
            return params
        if s[i] == ",":
            i += 1
            expect_sep = False
            continue
        if expect_sep:
            raise DigestError("expected ',' between auth-params")
        name, i = _token(s, i)
        if not name:
            raise DigestError("expected an auth-param name")
        i = _skip_ws(s, i)
        if i >= n or s[i] != "=":
            raise DigestError("auth-param without '='")
        i = _skip_ws(s, i + 1)
        if i < n and s[i] == '"':
            val, i = _quoted_string(s, i)
        else:
            val, i = _token(s, i)
            if not val:
                raise DigestError("auth-param without a value")
        key = name.lower()
        if key in params:
            raise DigestError("duplicate auth-param")
        params[key] = val
        expect_sep = True


def parse_auth_params(value: str) -> dict[str, str]:
    """
    Parse the auth-param list that follows the scheme (RFC 7235 2.1):
    name=token or name="quoted-string", comma separated. Names are
    lowercased; quoted values are unescaped.

    @raise DigestError: too long, non-ASCII, duplicates, unterminated quotes
        or any other syntax error.
    """
    return _parse_params(_to_text(value), 0)


def _split_scheme(value: Union[str, bytes]) -> tuple[str, str]:
    s = _to_text(value)
    i = _skip_ws(s, 0)
    scheme, j = _token(s, i)
    if not scheme:
        raise DigestError("missing auth-scheme")
    if scheme.lower() != "digest":
        raise DigestError("auth-scheme is not Digest")
    if j < len(s) and s[j] not in _WS:
        raise DigestError("malformed auth-scheme")
    return scheme, s[j:]


# ---------------------------------------------------------------------------
# Authorization (RFC 2617 3.2.2, RFC 3310 3.4)


@dataclass
class DigestCredentials:
    """A parsed Authorization: Digest header. Optional fields are None when absent."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: Optional[str] = None
    qop: Optional[str] = None
    nc: Optional[str] = None
    cnonce: Optional[str] = None
    opaque: Optional[str] = None
    auts: Optional[str] = None  # RFC 3310 3.4: base64(AUTS), resync only
    params: dict[str, str] = field(default_factory=dict)  # every param, names lowercased


def parse_authorization(value: Union[str, bytes]) -> DigestCredentials:
    """
    Parse an Authorization (or Proxy-Authorization) header value.

    Required: username, realm, nonce, uri, response. response is 32 hex
    digits, or empty (the initial Ub request, TS 24.109 A.2). With qop,
    nc (8 hex digits) and cnonce are required (RFC 2617 3.2.2).

    @raise DigestError: on any syntax or content problem.
    """
    _, rest = _split_scheme(value)
    p = _parse_params(rest, 0)
    for name in ("username", "realm", "nonce", "uri", "response"):
        if name not in p:
            raise DigestError("missing %s" % (name,))
    response = p["response"]
    if response and not _HEX32.match(response):
        raise DigestError("response is not 32 hex digits")
    qop = p.get("qop")
    nc = p.get("nc")
    cnonce = p.get("cnonce")
    if qop is not None:
        if not qop or any(c not in _TCHARS for c in qop):
            raise DigestError("qop is not a token")
        if nc is None or cnonce is None:
            raise DigestError("qop given without nc and cnonce")
        if not cnonce:
            raise DigestError("empty cnonce")
    if nc is not None and not _HEX8.match(nc):
        raise DigestError("nc is not 8 hex digits")
    return DigestCredentials(
        username=p["username"],
        realm=p["realm"],
        nonce=p["nonce"],
        uri=p["uri"],
        response=response,
        algorithm=p.get("algorithm"),
        qop=qop,
        nc=nc,
        cnonce=cnonce,
        opaque=p.get("opaque"),
        auts=p.get("auts"),
        params=p,
    )


def decode_auts(auts: str) -> bytes:
    """
    Decode the RFC 3310 3.4 auts parameter (base64 of the 14-octet AUTS).

    @raise DigestError: not base64 or not 14 octets.
    """
    try:
        raw = base64.b64decode(auts.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError, AttributeError):
        raise DigestError("auts is not base64") from None
    if len(raw) != 14:
        raise DigestError("auts is not 14 octets")
    return raw


# ---------------------------------------------------------------------------
# WWW-Authenticate challenge (RFC 2617 3.2.1, RFC 3310 3.1)


@dataclass
class DigestChallenge:
    """A parsed WWW-Authenticate: Digest challenge (a single challenge)."""

    realm: str
    nonce: str
    algorithm: Optional[str] = None  # None: absent (RFC 2617 default MD5)
    qop: list[str] = field(default_factory=list)  # offered qop-options
    opaque: Optional[str] = None
    stale: bool = False
    params: dict[str, str] = field(default_factory=dict)


def parse_challenge(value: Union[str, bytes]) -> DigestChallenge:
    """
    Parse one Digest challenge. realm and nonce are required; qop is the
    quoted comma-separated list of options; stale is TRUE/true or not.

    @raise DigestError: on any syntax or content problem.
    """
    _, rest = _split_scheme(value)
    p = _parse_params(rest, 0)
    for name in ("realm", "nonce"):
        if name not in p:
            raise DigestError("missing %s" % (name,))
    qop: list[str] = []
    if "qop" in p:
        for opt in p["qop"].split(","):
            opt = opt.strip(_WS)
            if not opt:
                continue
            if any(c not in _TCHARS for c in opt):
                raise DigestError("qop option is not a token")
            qop.append(opt)
    return DigestChallenge(
        realm=p["realm"],
        nonce=p["nonce"],
        algorithm=p.get("algorithm"),
        qop=qop,
        opaque=p.get("opaque"),
        stale=p.get("stale", "").lower() == "true",
        params=p,
    )


def _quote(value: str, name: str) -> str:
    if not isinstance(value, str):
        raise DigestError("%s must be a str" % (name,))
    if not value.isascii() or any(not (c == "\t" or " " <= c <= "~") for c in value):
        # CR/LF here would be header injection.
        raise DigestError("%s contains characters not allowed in a header" % (name,))
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _tok(value: str, name: str) -> str:
    if not isinstance(value, str) or not value or any(c not in _TCHARS for c in value):
        raise DigestError("%s must be a token" % (name,))
    return value


def format_challenge(
    realm: str,
    nonce: str,
    algorithm: Optional[str] = "MD5",
    qop: Optional[Iterable[str]] = ("auth-int",),
    opaque: Optional[str] = None,
    stale: bool = False,
) -> str:
    """
    Build a WWW-Authenticate value, e.g. (TS 24.109 A.4)::

        Digest realm="bsf.home1.net", nonce="...", algorithm=AKAv1-MD5,
            qop="auth-int", opaque="..."

    (on one line). qop empty or None omits the directive.
    """
    parts = ["realm=" + _quote(realm, "realm"), "nonce=" + _quote(nonce, "nonce")]
    if algorithm is not None:
        parts.append("algorithm=" + _tok(algorithm, "algorithm"))
    if qop:
        if isinstance(qop, str):
            qop = (qop,)
        parts.append('qop="%s"' % (",".join(_tok(q, "qop") for q in qop),))
    if opaque is not None:
        parts.append("opaque=" + _quote(opaque, "opaque"))
    if stale:
        parts.append("stale=true")
    return "Digest " + ", ".join(parts)


def format_authorization(
    username: str,
    realm: str,
    nonce: str,
    uri: str,
    response: str,
    algorithm: Optional[str] = None,
    qop: Optional[str] = None,
    nc: Optional[str] = None,
    cnonce: Optional[str] = None,
    opaque: Optional[str] = None,
    auts: Optional[str] = None,
) -> str:
    """
    Build an Authorization value. qop, nc and algorithm are tokens (unquoted,
    RFC 2617 3.2.2); everything else is a quoted-string.
    """
    parts = [
        "username=" + _quote(username, "username"),
        "realm=" + _quote(realm, "realm"),
        "nonce=" + _quote(nonce, "nonce"),
        "uri=" + _quote(uri, "uri"),
    ]
    if qop is not None:
        parts.append("qop=" + _tok(qop, "qop"))
        if nc is None or cnonce is None:
            raise DigestError("qop needs nc and cnonce")
    if nc is not None:
        if not isinstance(nc, str) or not _HEX8.match(nc):
            raise DigestError("nc must be 8 hex digits")
        parts.append("nc=" + nc)
    if cnonce is not None:
        parts.append("cnonce=" + _quote(cnonce, "cnonce"))
    parts.append("response=" + _quote(response, "response"))
    if opaque is not None:
        parts.append("opaque=" + _quote(opaque, "opaque"))
    if algorithm is not None:
        parts.append("algorithm=" + _tok(algorithm, "algorithm"))
    if auts is not None:
        parts.append("auts=" + _quote(auts, "auts"))
    return "Digest " + ", ".join(parts)


# ---------------------------------------------------------------------------
# Authentication-Info (RFC 2617 3.2.3)


def format_authentication_info(
    qop: Optional[str],
    rspauth: str,
    cnonce: Optional[str],
    nc: Optional[str],
    nextnonce: Optional[str] = None,
) -> str:
    """
    Build an Authentication-Info value, e.g.
    qop=auth-int, rspauth="...", cnonce="...", nc=00000001 (TS 24.109 A.5).
    """
    parts = []
    if qop is not None:
        parts.append("qop=" + _tok(qop, "qop"))
    parts.append("rspauth=" + _quote(rspauth, "rspauth"))
    if cnonce is not None:
        parts.append("cnonce=" + _quote(cnonce, "cnonce"))
    if nc is not None:
        if not isinstance(nc, str) or not _HEX8.match(nc):
            raise DigestError("nc must be 8 hex digits")
        parts.append("nc=" + nc)
    if nextnonce is not None:
        parts.append("nextnonce=" + _quote(nextnonce, "nextnonce"))
    return ", ".join(parts)


def parse_authentication_info(value: Union[str, bytes]) -> dict[str, str]:
    """
    Parse an Authentication-Info value (no scheme) into lowercased params.

    @raise DigestError: syntax error, or nc / rspauth malformed.
    """
    p = _parse_params(_to_text(value), 0)
    if "nc" in p and not _HEX8.match(p["nc"]):
        raise DigestError("nc is not 8 hex digits")
    if "rspauth" in p and p["rspauth"] and not _HEX32.match(p["rspauth"]):
        raise DigestError("rspauth is not 32 hex digits")
    return p


# ---------------------------------------------------------------------------
# Computations (RFC 2617 3.2.2.1-3.2.2.3, RFC 7616 3.4, RFC 3310 3.4)

_ALGORITHMS = {
    # name (lowercase) -> session variant?
    "md5": False,
    "md5-sess": True,
    # RFC 3310 3.3: AKAv1-MD5 is MD5 Digest with RES as the password.
    "akav1-md5": False,
    "akav1-md5-sess": True,
}


def _md5hex(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _b(s: str, name: str) -> bytes:
    if not isinstance(s, str):
        raise DigestError("%s must be a str" % (name,))
    return s.encode("utf-8")


def _digest(
    password: bytes,
    username: str,
    realm: str,
    method: str,
    uri: str,
    nonce: str,
    nc: Optional[str],
    cnonce: Optional[str],
    qop: Optional[str],
    body: bytes,
    algorithm: Optional[str],
) -> str:
    if algorithm is None:
        algorithm = "MD5"  # RFC 2617 3.2.1: absent means MD5
    alg = algorithm.lower() if isinstance(algorithm, str) else None
    if alg not in _ALGORITHMS:
        raise DigestError("unsupported algorithm")
    if not isinstance(password, (bytes, bytearray)):
        raise DigestError("password must be bytes")
    # RFC 2617 3.2.2.2: A1 = username ":" realm ":" passwd
    ha1 = _md5hex(_b(username, "username") + b":" + _b(realm, "realm") + b":" + bytes(password))
    if _ALGORITHMS[alg]:
        # RFC 7616 3.4.2: -sess A1 = H(user:realm:pw) ":" nonce ":" cnonce
        if cnonce is None:
            raise DigestError("session algorithm needs cnonce")
        ha1 = _md5hex(ha1.encode() + b":" + _b(nonce, "nonce") + b":" + _b(cnonce, "cnonce"))
    # RFC 2617 3.2.2.3: A2
    a2 = _b(method, "method") + b":" + _b(uri, "uri")
    q = qop.lower() if isinstance(qop, str) else qop
    if q == "auth-int":
        if not isinstance(body, (bytes, bytearray)):
            raise DigestError("body must be bytes")
        a2 += b":" + _md5hex(bytes(body)).encode()
    elif q not in (None, "auth"):
        raise DigestError("unsupported qop")
    ha2 = _md5hex(a2)
    if q is None:
        # RFC 2069 compatibility (RFC 2617 3.2.2.1)
        return _md5hex(ha1.encode() + b":" + _b(nonce, "nonce") + b":" + ha2.encode())
    if nc is None or cnonce is None:
        raise DigestError("qop needs nc and cnonce")
    assert qop is not None  # q is qop, lowercased
    # RFC 2617 3.2.2.1: KD(H(A1), nonce:nc:cnonce:qop:H(A2))
    return _md5hex(
        ha1.encode() + b":" + _b(nonce, "nonce") + b":" + _b(nc, "nc") + b":"
        + _b(cnonce, "cnonce") + b":" + _b(qop, "qop") + b":" + ha2.encode()
    )


def compute_response(
    password: bytes,
    username: str,
    realm: str,
    method: str,
    uri: str,
    nonce: str,
    nc: Optional[str],
    cnonce: Optional[str],
    qop: Optional[str],
    body: bytes = b"",
    algorithm: str = "MD5",
) -> str:
    """
    The request-digest (RFC 2617 3.2.2.1), 32 lowercase hex digits.

    algorithm: MD5, MD5-sess, AKAv1-MD5, AKAv1-MD5-sess (case-insensitive).
    For AKAv1-MD5 pass RES as raw octets in password (RFC 3310 3.4); for a
    resync or MAC failure answer, pass b"". qop: None (RFC 2069 form),
    "auth" or "auth-int" (body is the request entity-body).

    @raise DigestError: unknown algorithm or qop, or nc/cnonce missing.
    """
    return _digest(password, username, realm, method, uri, nonce, nc, cnonce, qop,
                   body, algorithm)


def compute_rspauth(
    password: bytes,
    username: str,
    realm: str,
    uri: str,
    nonce: str,
    nc: Optional[str],
    cnonce: Optional[str],
    qop: Optional[str],
    body: bytes = b"",
    algorithm: str = "MD5",
) -> str:
    """
    The response-digest for Authentication-Info rspauth (RFC 2617 3.2.3):
    as compute_response with an empty method; for auth-int, body is the
    response entity-body.
    """
    return _digest(password, username, realm, "", uri, nonce, nc, cnonce, qop,
                   body, algorithm)


def check_response(creds: DigestCredentials, password: bytes, method: str, body: bytes) -> bool:
    """
    Recompute the request-digest from creds and compare in constant time.

    Does not check that nonce, realm, opaque, algorithm or uri are the ones
    the server issued/expects, nor nc replay: that is the caller's job.
    An empty response never matches.

    @raise DigestError: the credentials name an unsupported algorithm or qop.
    """
    expected = _digest(password, creds.username, creds.realm, method, creds.uri,
                       creds.nonce, creds.nc, creds.cnonce, creds.qop, body,
                       creds.algorithm)
    got = creds.response
    if not isinstance(got, str) or not got.isascii():
        return False
    ok = hmac.compare_digest(expected.encode("ascii"), got.lower().encode("ascii"))
    return ok and bool(got)
