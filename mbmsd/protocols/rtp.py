"""
RTP fixed header checks (RFC 3550 5.1), for the content a BM-SC protects.

Pure functions on bytes; a packet that is not RTP raises L{RtpError}.
"""

import struct

__all__ = ["RtpError", "RtpHeader", "parse_header", "is_plain"]

FIXED_HEADER_LEN = 12


class RtpError(ValueError):
    """The datagram is not a well-formed RTP packet."""


class RtpHeader:
    """What a BM-SC needs of an RTP packet: its length of header, SSRC and sequence number."""

    __slots__ = ("header_len", "payload_type", "seq", "timestamp", "ssrc", "marker")

    def __init__(
        self, header_len: int, payload_type: int, seq: int, timestamp: int, ssrc: int,
        marker: bool,
    ) -> None:
        self.header_len = header_len
        self.payload_type = payload_type
        self.seq = seq
        self.timestamp = timestamp
        self.ssrc = ssrc
        self.marker = marker


def parse_header(data: bytes) -> RtpHeader:
    """
    Check the RTP header of C{data} (RFC 3550 5.1 and 5.3.1): version 2, the
    CSRC list, the header extension and the padding inside the packet, a
    payload type that is not an RTCP packet type (RFC 5761 4). Returns an
    L{RtpHeader}; raises L{RtpError}.
    """
    n = len(data)
    if n < FIXED_HEADER_LEN:
        raise RtpError("shorter than the RTP fixed header")
    b0, b1, seq, timestamp, ssrc = struct.unpack_from("!BBHII", data)
    if b0 >> 6 != 2:
        raise RtpError("RTP version is not 2")
    pt = b1 & 0x7F
    if 72 <= pt <= 76:  # RTCP SR, RR, SDES, BYE, APP with the marker bit read as PT (RFC 5761 4)
        raise RtpError("an RTCP packet, not RTP")
    length = FIXED_HEADER_LEN + 4 * (b0 & 0x0F)
    if b0 & 0x10:  # header extension, RFC 3550 5.3.1
        if n < length + 4:
            raise RtpError("header extension outside the packet")
        length += 4 + 4 * struct.unpack_from("!H", data, length + 2)[0]
    if length > n:
        raise RtpError("header longer than the packet")
    if b0 & 0x20:  # padding: its count is the last octet
        pad = data[-1]
        if pad == 0 or length + pad > n:
            raise RtpError("padding count does not fit the packet")
    return RtpHeader(length, pt, seq, timestamp, ssrc, bool(b1 & 0x80))


def is_plain(data: bytes) -> bool:
    """
    The common case, decided from two octets: version 2, no padding, no
    header extension, no CSRC, a payload type that is not RTCP, and at
    least the fixed header (what L{parse_header} accepts without more).
    """
    return len(data) >= FIXED_HEADER_LEN and data[0] == 0x80 and not 72 <= data[1] & 0x7F <= 76
