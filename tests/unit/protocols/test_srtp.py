"""
mbmsd.protocols.srtp (libsrtp through pylibsrtp) and mbmsd.protocols.rtp
against independent truth: RFC 3711 B.3's key derivation vectors check the
test's own RFC 3711 receiver (tests/support/srtp_reference.py), which then opens
what our Protector produced; RTP headers built by hand from RFC 3550 5.1.
"""

import struct

import pytest

from mbmsd.protocols import rtp, srtp
from tests.support import srtp_reference as ref

# RFC 3711 Appendix B.3 (key derivation test vectors)
B3_MASTER_KEY = bytes.fromhex("E1F97A0D3E018BE0D64FA32C06DE4139")
B3_MASTER_SALT = bytes.fromhex("0EC675AD498AFEEBB6960B3AABE6")
B3_CIPHER_KEY = bytes.fromhex("C61E7A93744F39EE10734AFE3FF7A087")
B3_CIPHER_SALT = bytes.fromhex("30CBBC08863D8C85D49DB34A9AE1")
B3_AUTH_KEY = bytes.fromhex("CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4")

KEY = bytes(range(16))
SALT = bytes(range(100, 114))


def packet(seq, payload=b"payload", ssrc=0x11223344, pt=96, cc=0, ext=None, padding=0):
    """An RTP packet laid out by hand from RFC 3550 5.1."""
    b0 = 0x80 | cc | (0x10 if ext is not None else 0) | (0x20 if padding else 0)
    out = struct.pack("!BBHII", b0, pt, seq, seq * 3000, ssrc) + b"\x00\x00\x00\x01" * cc
    if ext is not None:
        out += struct.pack("!HH", 0xBEDE, len(ext) // 4) + ext
    out += payload
    if padding:
        out += bytes(padding - 1) + bytes([padding])
    return out


def test_reference_key_derivation_is_rfc3711_b3():
    k_e, k_a, k_s = ref.session_keys(B3_MASTER_KEY, B3_MASTER_SALT)
    assert (k_e, k_a, k_s) == (B3_CIPHER_KEY, B3_AUTH_KEY, B3_CIPHER_SALT)


def test_protect_is_opened_by_the_rfc3711_reference():
    p = srtp.Protector(KEY, SALT)
    for seq in (1, 2, 3):
        plain = packet(seq, b"frame %d" % seq * 20)
        protected = p.protect(plain)
        assert len(protected) == len(plain) + 10
        assert protected[12:-10] != plain[12:]  # encrypted
        assert protected[:12] == plain[:12]  # the header stays clear (RFC 3711 3.1)
        assert ref.unprotect(KEY, SALT, protected) == plain
        assert ref.unprotect(bytes(16), SALT, protected) is None


def test_unprotect_authenticates_and_checks_replay():
    p, u = srtp.Protector(KEY, SALT), srtp.Unprotector(KEY, SALT)
    plain = packet(7, b"x" * 100)
    protected = p.protect(plain)
    assert u.unprotect(protected) == plain
    with pytest.raises(srtp.ReplayError):
        u.unprotect(protected)
    altered = protected[:20] + bytes([protected[20] ^ 1]) + protected[21:]
    with pytest.raises(srtp.AuthError):
        srtp.Unprotector(KEY, SALT).unprotect(altered)
    with pytest.raises(srtp.AuthError):
        srtp.Unprotector(bytes(16), SALT).unprotect(protected)
    with pytest.raises(srtp.SrtpError):
        srtp.Unprotector(KEY, SALT).unprotect(b"\x80\x60")


def test_keys_have_the_profile_lengths():
    with pytest.raises(ValueError):
        srtp.Protector(bytes(15), SALT)
    with pytest.raises(ValueError):
        srtp.Unprotector(KEY, bytes(16))
    assert "00" not in repr(srtp.Protector(KEY, SALT))


@pytest.mark.parametrize("kw,length", [
    ({}, 12), ({"cc": 2}, 20), ({"ext": b"\x10\xff\x00\x00"}, 20), ({"padding": 4}, 12),
])
def test_rtp_header_lengths(kw, length):
    h = rtp.parse_header(packet(9, **kw))
    assert (h.header_len, h.seq, h.ssrc, h.payload_type) == (length, 9, 0x11223344, 96)


@pytest.mark.parametrize("data", [
    b"", b"\x80" * 11,
    b"\x40" + packet(1)[1:],  # version 1
    packet(1, pt=72),  # RTCP SR (RFC 5761 4)
    packet(1, payload=b"", cc=3)[:20],  # CSRCs outside the packet
    packet(1, payload=b"", ext=b"\x00" * 8)[:18],  # extension outside the packet
    bytes([0xA0]) + packet(1, payload=b"ab")[1:-1] + b"\x00",  # padding count 0
    bytes([0xA0]) + packet(1, payload=b"ab")[1:-1] + b"\x7f",  # padding longer than the packet
])
def test_rtp_malformed(data):
    with pytest.raises(rtp.RtpError):
        rtp.parse_header(data)
