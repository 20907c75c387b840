"""
SDP (RFC 4566) and its offer/answer (RFC 3264) for an MBMS user service
(TS 26.237 8.2.2), one reading for the SCF and the UE.

The SCF's answer to the UE's offer is built from the service's
configuration ([[scf.service]] table, a mapping). One m= line of the
offer is accepted: the first with the service's media type and transport
protocol and (for RTP) a format in common; it gets the service's port,
connection address, formats and attributes, and C{a=sendonly} unless the
configuration names a direction (the network sends, the UE receives).
Every other m= line is refused with port 0, as RFC 3264 6 requires an
answer to keep the offer's m= lines in order. When nothing fits there is
no answer (the SCF says 488). An INVITE without an offer gets the
service's description as the offer in the 200 (RFC 3264 5).

The UE's side: L{receive_offer} (the offer to receive a service) and
L{summary} (a lenient reading of the answer for display).

Pure functions, no I/O; they know no role, storage or node.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
from typing import Any, Iterator, Mapping, Optional, Sequence, Union

from mbmsd.sip.grammar import SipParseError, parse_media_type
from mbmsd.sip.multipart import parse_multipart

__all__ = ["SdpError", "MediaLine", "offer_from_body", "parse_media", "answer", "offer",
           "receive_offer", "summary"]

DIRECTIONS = ("sendonly", "recvonly", "sendrecv", "inactive")
MAX_SDP = 16 * 1024


class SdpError(ValueError):
    """
    The INVITE's body cannot be used: C{status} is the SIP answer (400, 415).
    """

    def __init__(self, status: int, reason: str) -> None:
        ValueError.__init__(self, reason)
        self.status = status
        self.reason = reason


class MediaLine:
    """One C{m=} line: media, port, protocol, formats."""

    def __init__(self, media: str, port: int, protocol: str, formats: Sequence[str]) -> None:
        self.media = media
        self.port = port
        self.protocol = protocol
        self.formats = list(formats)

    def __str__(self) -> str:
        return "m=%s %d %s %s" % (self.media, self.port, self.protocol, " ".join(self.formats))

    def __repr__(self) -> str:
        return "MediaLine(%r)" % (str(self),)


def offer_from_body(content_type: Optional[str], body: bytes) -> Optional[bytes]:
    """
    The SDP offer of an INVITE: the body itself (application/sdp), or the
    application/sdp part of a multipart/mixed body (TS 26.237 puts the
    Annex I.1 B-TID XML next to it).

    @return: the SDP bytes, or None when there is no offer (empty body).
    @raise SdpError: a body we cannot read (415 for other types, 400 for
        malformed ones).
    """
    if not body:
        return None
    if len(body) > 4 * MAX_SDP:
        raise SdpError(413, "Request Entity Too Large")
    try:
        content_type = content_type or "application/sdp"
        mtype, _ = parse_media_type(content_type)
    except SipParseError:
        raise SdpError(400, "Bad Request: malformed Content-Type") from None
    if mtype == "application/sdp":
        return body
    if mtype.startswith("multipart/"):
        try:
            parts = parse_multipart(content_type, body)
        except SipParseError:
            raise SdpError(400, "Bad Request: malformed multipart body") from None
        for headers, data in parts:
            try:
                ptype, _ = parse_media_type(headers.get("Content-Type", "text/plain"))
            except SipParseError:
                continue
            if ptype == "application/sdp":
                return data
        raise SdpError(415, "Unsupported Media Type: no application/sdp part")
    raise SdpError(415, "Unsupported Media Type")


def _lines(text: str) -> Iterator[tuple[str, str]]:
    """The C{<type>=<value>} lines of an SDP text (RFC 4566 5), others skipped."""
    for line in re.split(r"\r?\n", text):
        line = line.strip()
        if len(line) >= 2 and line[1] == "=":
            yield line[0], line[2:]


def _media(value: str) -> Optional[tuple[str, int, str, list[str]]]:
    """
    An C{m=} value (RFC 4566 5.14: media port[/count] proto fmt...), or
    None when malformed.
    """
    parts = value.split()
    if len(parts) < 4:
        return None
    port = parts[1].split("/", 1)[0]
    if not port.isdigit() or int(port) > 65535:
        return None
    return parts[0].lower(), int(port), parts[2], parts[3:]


def parse_media(sdp: bytes) -> list[MediaLine]:
    """
    The m= lines of an SDP body, in order.

    @raise SdpError: (400) not an SDP session description.
    """
    if len(sdp) > MAX_SDP:
        raise SdpError(400, "Bad Request: SDP too large")
    try:
        text = sdp.decode("utf-8")
    except UnicodeDecodeError:
        raise SdpError(400, "Bad Request: SDP is not UTF-8") from None
    lines = [line.strip() for line in re.split(r"\r?\n", text) if line.strip()]
    if not lines or not lines[0].startswith("v="):
        raise SdpError(400, "Bad Request: SDP must start with v=")
    out = []
    for kind, value in _lines(text):
        if kind != "m":
            continue
        m = _media(value)
        if m is None:
            if len(value.split()) < 4:
                raise SdpError(400, "Bad Request: malformed m= line")
            raise SdpError(400, "Bad Request: malformed m= port")
        out.append(MediaLine(*m))
    return out


def _formats(service: Mapping[str, Any], offered: MediaLine) -> list[str]:
    ours = list(service["formats"])
    if not service["protocol"].startswith("RTP/"):
        return ours
    return [f for f in ours if f in offered.formats]


def answer(service: Mapping[str, Any], offered: Sequence[MediaLine], host: str,
           sessionId: Optional[int] = None) -> Optional[bytes]:
    """
    The SDP answer to the offered m= lines.

    @param service: an [[scf.service]] config table.
    @param offered: the offer's L{MediaLine}s.
    @param host: our address for the o= line.
    @return: the answer (bytes), or None when no m= line can be accepted.
    """
    chosen = None
    media: list[list[str]] = []
    for i, m in enumerate(offered):
        formats = _formats(service, m) if chosen is None else []
        if (chosen is None and m.port != 0 and m.media == service["media"]
                and m.protocol.upper() == service["protocol"].upper() and formats):
            chosen = i
            media.append(_accepted(service, formats))
        else:
            media.append(["m=%s 0 %s %s" % (m.media, m.protocol, " ".join(m.formats))])
    if chosen is None:
        return None
    return _session(service, host, sessionId, media)


def offer(service: Mapping[str, Any], host: str, sessionId: Optional[int] = None) -> bytes:
    """The service's description as an offer (an INVITE without SDP)."""
    return _session(service, host, sessionId, [_accepted(service, service["formats"])])


def _accepted(service: Mapping[str, Any], formats: Sequence[str]) -> list[str]:
    lines = ["m=%s %d %s %s" % (service["media"], service["port"], service["protocol"],
                                " ".join(formats)),
             "c=" + _connection(service["address"])]
    attributes = list(service["attributes"])
    if not any(a.split(":", 1)[0] in DIRECTIONS for a in attributes):
        attributes.append("sendonly")
    lines += ["a=" + a for a in attributes]
    return lines


def _connection(address: str) -> str:
    ip = address.split("/", 1)[0]
    family = "IP6" if ipaddress.ip_address(ip).version == 6 else "IP4"
    return "IN %s %s" % (family, address)


def _family(host: str) -> str:
    # RFC 4566 5.2 / 5.7 addrtype
    return "IP6" if ":" in host else "IP4"


def _session(service: Mapping[str, Any], host: str, sessionId: Optional[int],
             media: Sequence[Sequence[str]]) -> bytes:
    if sessionId is None:
        sessionId = secrets.randbelow(2 ** 31)
    lines = ["v=0",
             "o=mbmsd %d %d IN %s %s" % (sessionId, sessionId, _family(host), host),
             "s=%s" % (service["name"] or service["id"],),
             "t=0 0"]
    for block in media:
        lines += block
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


# ------------------------------------------------------------ the UE's side


def receive_offer(ip: str, media: Sequence[str] = ("video 5000 RTP/AVP 96",),
                  sessionId: Optional[int] = None) -> bytes:
    """
    An SDP offer (RFC 4566, RFC 3264) to receive an MBMS user service: the
    UE's address in o= and c=, one m= line per C{media} entry
    (C{"<media> <port> <proto> <fmt> ..."}), each C{a=recvonly}.
    """
    family = _family(ip)
    sessionId = sessionId if sessionId is not None else secrets.randbelow(2 ** 31)
    lines = ["v=0", "o=mbms-ue %d 1 IN %s %s" % (sessionId, family, ip), "s=MBMS user service",
             "c=IN %s %s" % (family, ip), "t=0 0"]
    for m in media:
        lines.append("m=" + m.strip())
        lines.append("a=recvonly")
    return ("\r\n".join(lines) + "\r\n").encode("ascii")


def summary(body: Union[bytes, bytearray, str]) -> dict[str, Any]:
    """
    The essentials of an SDP body for display: the session's connection
    address and, per m= line, media, port, protocol, formats, its own c=
    address, the direction and the rtpmap attributes. Lenient: unreadable
    lines are skipped.
    """
    out: dict[str, Any] = {"connection": None, "media": []}
    current: Optional[dict[str, Any]] = None
    text = (body.decode("utf-8", "replace") if isinstance(body, (bytes, bytearray))
            else str(body))
    for kind, value in _lines(text):
        if kind == "s" and current is None:
            out["name"] = value
        elif kind == "c":
            parts = value.split()
            address = parts[2] if len(parts) >= 3 else value
            if current is None:
                out["connection"] = address
            else:
                current["connection"] = address
        elif kind == "m":
            parts = value.split()
            if len(parts) < 3:
                continue
            port: Union[int, str]
            try:
                port = int(parts[1].split("/")[0])
            except ValueError:
                port = parts[1]
            current = {"media": parts[0], "port": port, "protocol": parts[2],
                       "formats": parts[3:]}
            out["media"].append(current)
        elif kind == "a" and current is not None:
            name, _, rest = value.partition(":")
            if name in DIRECTIONS:
                current["direction"] = name
            elif name == "rtpmap":
                current.setdefault("rtpmap", []).append(rest)
    return out
