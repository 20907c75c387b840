"""
The SCF's SDP (RFC 4566, offer/answer RFC 3264): the answer to the UE's
offer, built from the service's configuration ([[scf.service]]).

One m= line of the offer is accepted: the first with the service's media
type and transport protocol and (for RTP) a format in common; it gets the
service's port, connection address, formats and attributes, and
C{a=sendonly} unless the configuration names a direction (the network
sends, the UE receives). Every other m= line is refused with port 0, as
RFC 3264 6 requires an answer to keep the offer's m= lines in order. When
nothing fits there is no answer (the SCF says 488). An INVITE without an
offer gets the service's description as the offer in the 200 (RFC 3264 5).
"""

import ipaddress
import re
import secrets

from mbmsd.sip.message import SipParseError, parse_media_type, parse_multipart

__all__ = ["SdpError", "MediaLine", "offer_from_body", "parse_media", "answer", "offer"]

DIRECTIONS = ("sendonly", "recvonly", "sendrecv", "inactive")
MAX_SDP = 16 * 1024


class SdpError(ValueError):
    """
    The INVITE's body cannot be used: C{status} is the SIP answer (400, 415).
    """

    def __init__(self, status, reason):
        ValueError.__init__(self, reason)
        self.status = status
        self.reason = reason


class MediaLine:
    """One C{m=} line: media, port, protocol, formats."""

    def __init__(self, media, port, protocol, formats):
        self.media = media
        self.port = port
        self.protocol = protocol
        self.formats = list(formats)

    def __str__(self):
        return "m=%s %d %s %s" % (self.media, self.port, self.protocol, " ".join(self.formats))

    def __repr__(self):
        return "MediaLine(%r)" % (str(self),)


def offer_from_body(content_type, body):
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
        mtype, _ = parse_media_type(content_type or "application/sdp")
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


def parse_media(sdp):
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
    for line in lines:
        if not line.startswith("m="):
            continue
        parts = line[2:].split()
        if len(parts) < 4:
            raise SdpError(400, "Bad Request: malformed m= line")
        port = parts[1].split("/", 1)[0]
        if not port.isdigit() or int(port) > 65535:
            raise SdpError(400, "Bad Request: malformed m= port")
        out.append(MediaLine(parts[0].lower(), int(port), parts[2], parts[3:]))
    return out


def _formats(service, offered):
    ours = list(service["formats"])
    if not service["protocol"].startswith("RTP/"):
        return ours
    return [f for f in ours if f in offered.formats]


def answer(service, offered, host, sessionId=None):
    """
    The SDP answer to the offered m= lines.

    @param service: an [[scf.service]] config table.
    @param offered: the offer's L{MediaLine}s.
    @param host: our address for the o= line.
    @return: the answer (bytes), or None when no m= line can be accepted.
    """
    chosen = None
    media = []
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


def offer(service, host, sessionId=None):
    """The service's description as an offer (an INVITE without SDP)."""
    return _session(service, host, sessionId, [_accepted(service, service["formats"])])


def _accepted(service, formats):
    lines = ["m=%s %d %s %s" % (service["media"], service["port"], service["protocol"],
                                " ".join(formats)),
             "c=" + _connection(service["address"])]
    attributes = list(service["attributes"])
    if not any(a.split(":", 1)[0] in DIRECTIONS for a in attributes):
        attributes.append("sendonly")
    lines += ["a=" + a for a in attributes]
    return lines


def _connection(address):
    ip = address.split("/", 1)[0]
    family = "IP6" if ipaddress.ip_address(ip).version == 6 else "IP4"
    return "IN %s %s" % (family, address)


def _session(service, host, sessionId, media):
    if sessionId is None:
        sessionId = secrets.randbelow(2 ** 31)
    family = "IP6" if ":" in host else "IP4"
    lines = ["v=0",
             "o=mbmsd %d %d IN %s %s" % (sessionId, sessionId, family, host),
             "s=%s" % (service["name"] or service["id"],),
             "t=0 0"]
    for block in media:
        lines += block
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")
