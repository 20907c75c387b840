"""
Multipart bodies (RFC 2046 5.1) of SIP messages: a MIKEY body beside an SDP
one (TS 33.246), read into and built from C{(Headers, bytes)} parts.
"""

from __future__ import annotations

import secrets
from typing import Iterable, Optional, Union

from mbmsd.sip.grammar import _TOKEN_RE, _bad, parse_media_type, unquote_string
from mbmsd.sip.headers import Headers
from mbmsd.sip.message import _HEAD_END_RE, _LINE_RE

__all__ = ["parse_multipart", "build_multipart"]


def parse_multipart(content_type: str, body: bytes) -> list[tuple[Headers, bytes]]:
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
    parts: list[tuple[Headers, bytes]] = []
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


def _parse_part(part: bytes) -> tuple[Headers, bytes]:
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


def build_multipart(parts: Iterable[tuple[Union[str, Headers], Union[str, bytes]]],
                    boundary: Optional[str] = None, subtype: str = "mixed") -> tuple[str, bytes]:
    """
    Build a multipart body from C{(content_type, bytes)} pairs (or
    C{(Headers, bytes)}). Returns C{(content_type, body)}.
    """
    if boundary is None:
        boundary = "mbmsd-" + secrets.token_hex(8)
    delim = b"--" + boundary.encode("ascii")
    out: list[bytes] = []
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
