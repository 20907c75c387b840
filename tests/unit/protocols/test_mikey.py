"""
Tests for mbmsd.protocols.mikey: RFC 3830 framing byte for byte against the
payload tables of RFC 3830 6, the MIKEY-1 PRF (RFC 3830 4.1.2-4.1.4) against a
self-computed example and against an independent
re-implementation below, the MBMS profile messages, and the parsers' promise
to raise only MikeyError on hostile input.
"""

import hashlib
import random
import struct

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given
from hypothesis import strategies as st

from mbmsd import profile
from mbmsd.protocols import mikey
from mbmsd.protocols.mikey import (
    Error,
    Ext,
    Header,
    Id,
    Kemac,
    KeyData,
    MacError,
    Message,
    MikeyError,
    Rand,
    ReplayError,
    SecurityPolicy,
    Timestamp,
    Verification,
)

MUK = bytes.fromhex("00112233445566778899aabbccddeeff0123456789abcdeffedcba9876543210")
KDID = bytes.fromhex("02f810")  # MCC 208, MNC 01
MSK_ID = bytes.fromhex("00010002")
MSK = bytes.fromhex("a1a2a3a4a5a6a7a8a9aaabacadaeafb0")
RAND = bytes(range(0x50, 0x60))
IDI = b"bmsc.home1.net"
IDR = b"YWJjZA==@bsf.home1.net"
MTK_ID = bytes.fromhex("0007")
MTK = bytes.fromhex("c1c2c3c4c5c6c7c8c9cacbcccdcecfd0")
MTK_SALT = bytes.fromhex("e1e2e3e4e5e6e7e8e9eaebecedee")


def h(s):
    return bytes.fromhex("".join(s.split()))


def msk_message(counter=42, v=True, muk=MUK):
    return mikey.build_msk_message(muk, KDID, MSK_ID, MSK, counter, RAND, IDI, IDR, v=v)


def mtk_message(counter=7, salt=MTK_SALT):
    return mikey.build_mtk_message(MSK, KDID, MSK_ID, MTK_ID, MTK, salt, counter, RAND)


# ---------------------------------------------------------------------------
# An independent MIKEY-1 PRF, written from RFC 3830 4.1.2 only:
# HMAC-SHA-1 built by hand from SHA-1 (RFC 2104), the P-function by its
# recurrence, the XOR over 256-bit slices of the input key.
# ---------------------------------------------------------------------------


def _ref_hmac_sha1(key, msg):
    if len(key) > 64:
        key = hashlib.sha1(key).digest()
    key = key.ljust(64, b"\x00")
    inner = hashlib.sha1(bytes(k ^ 0x36 for k in key) + msg).digest()
    return hashlib.sha1(bytes(k ^ 0x5C for k in key) + inner).digest()


def _ref_p(s, label, m):
    out = b""
    a = label  # A_0
    for _ in range(m):
        a = _ref_hmac_sha1(s, a)  # A_i = HMAC(s, A_{i-1})
        out += _ref_hmac_sha1(s, a + label)
    return out


def _ref_prf(inkey, label, outkey_len_bits):
    n = -(-len(inkey) * 8 // 256)
    m = -(-outkey_len_bits // 160)
    slices = [inkey[32 * i : 32 * (i + 1)] for i in range(n)]
    result = bytearray(20 * m)
    for s in slices:
        for j, byte in enumerate(_ref_p(s, label, m)):
            result[j] ^= byte
    return bytes(result[: outkey_len_bits // 8])


# ---------------------------------------------------------------------------
# PRF and key derivation (RFC 3830 4.1.2, 4.1.4)
# ---------------------------------------------------------------------------

EXAMPLE_PSK = h("9e7f591d867c2c51bcf388beffa209771eed795d08db4a470895468faff293cb")
EXAMPLE_CSB_ID = 0x01020304
EXAMPLE_RAND = h("000102030405060708090a0b0c0d0e0f")


def test_psk_keys_match_self_computed_example():
    """RFC 3830 4.1.4: encr_key, auth_key, salt_key, computed outside mbmsd."""
    encr, auth, salt = mikey.derive_psk_keys(EXAMPLE_PSK, EXAMPLE_CSB_ID, EXAMPLE_RAND)
    assert encr == h("6b53aec4239482a44bc783c525627f50")
    assert auth == h("e53f515ef1bf87086a5f8227d523eb07bb429eff")
    assert salt == h("75877ef442312542614e68c2057a")


def test_example_label_layout():
    """label(encr) = 150533e1 ff 01020304 RAND (RFC 3830 4.1.4)."""
    label = h("150533e1 ff 01020304 000102030405060708090a0b0c0d0e0f")
    assert mikey.prf(EXAMPLE_PSK, label, 128) == h("6b53aec4239482a44bc783c525627f50")
    assert _ref_prf(EXAMPLE_PSK, label, 128) == h("6b53aec4239482a44bc783c525627f50")


# RFC 2202 section 3: HMAC-SHA-1 test cases 1, 2, 3, 6 and 7 (key, data, digest)
RFC2202_HMAC_SHA1 = [
    (b"\x0b" * 20, b"Hi There", "b617318655057264e28bc0b6fb378c8ef146be00"),
    (b"Jefe", b"what do ya want for nothing?", "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"),
    (b"\xaa" * 20, b"\xdd" * 50, "125d7342b9ac11cd91a39af48aa17b4f63f175d3"),
    (b"\xaa" * 80, b"Test Using Larger Than Block-Size Key - Hash Key First",
     "aa4ae5e15272d00e95705637ce8a3b55ed402112"),
    (b"\xaa" * 80,
     b"Test Using Larger Than Block-Size Key and Larger Than One Block-Size Data",
     "e8e99d0f45237d786d6bbaa7965c7808bbff1a91"),
]


@pytest.mark.parametrize("key,data,digest", RFC2202_HMAC_SHA1)
def test_hmac_sha1_rfc2202(key, data, digest):
    """The keyed HMAC-SHA-1 (pads hashed once) against RFC 2202's vectors, reused."""
    mac = mikey._HmacSha1(key)
    assert mac(data) == h(digest)
    assert mac(data) == h(digest)  # the key's state is copied, not consumed
    assert mikey._hmac_sha1(key, data) == h(digest)


@pytest.mark.parametrize("key_len", [0, 1, 20, 32, 63, 64, 65, 200])
def test_hmac_sha1_matches_the_standard_library(key_len):
    import hmac

    key = bytes((5 * i + 1) & 0xFF for i in range(key_len))
    mac = mikey._HmacSha1(key)
    for data in (b"", b"x", bytes(range(64)), bytes(range(256)) * 3):
        assert mac(data) == hmac.digest(key, data, "sha1")


@pytest.mark.parametrize("key_len", [1, 16, 20, 32, 33, 48, 64, 65, 100])
@pytest.mark.parametrize("out_bits", [8, 112, 128, 160, 168, 336, 512])
def test_prf_matches_independent_reimplementation(key_len, out_bits):
    """Includes 2- and 3-block input keys (> 256 bits) and 2-4 P blocks."""
    inkey = bytes((7 * i + key_len) & 0xFF for i in range(key_len))
    label = h("2d22ac75 ff cafebabe") + bytes(range(16))
    assert mikey.prf(inkey, label, out_bits) == _ref_prf(inkey, label, out_bits)


@pytest.mark.parametrize("key_len", [1, 16, 31, 32, 33, 64, 65])
def test_psk_keys_are_the_prf_of_each_label(key_len):
    """derive_psk_keys (one-block keys take a shorter path) is the reference PRF per label."""
    psk = bytes((3 * i + key_len) & 0xFF for i in range(key_len))
    tail = h("ff") + EXAMPLE_CSB_ID.to_bytes(4, "big") + EXAMPLE_RAND
    assert mikey.derive_psk_keys(psk, EXAMPLE_CSB_ID, EXAMPLE_RAND) == (
        _ref_prf(psk, h("150533e1") + tail, 128),
        _ref_prf(psk, h("2d22ac75") + tail, 160),
        _ref_prf(psk, h("29b88916") + tail, 112))


def test_prf_two_block_key_is_xor_of_slices():
    """A 48-byte key: PRF = P(first 32 bytes) XOR P(last 16 bytes)."""
    inkey = bytes(range(48))
    label = b"label"
    a = _ref_p(inkey[:32], label, 2)
    b = _ref_p(inkey[32:], label, 2)
    expected = bytes(x ^ y for x, y in zip(a, b))[:40]
    assert mikey.prf(inkey, label, 320) == expected
    assert mikey.prf(inkey, label, 320) != _ref_p(inkey[:32], label, 2)


def test_prf_rejects_bad_lengths():
    with pytest.raises(MikeyError):
        mikey.prf(b"", b"x", 128)
    with pytest.raises(MikeyError):
        mikey.prf(b"k", b"x", 12)
    with pytest.raises(MikeyError):
        mikey.prf(b"k", b"x", 0)


def test_aes_cm_iv_layout():
    """RFC 3830 4.2.3: (salt XOR (0000 || CSB ID || T)) || 0000, COUNTER right-aligned."""
    salt = h("75877ef442312542614e68c2057a")
    iv = mikey.aes_cm_iv(salt, 0x01020304, 42)
    mask = h("0000 01020304 000000000000002a")
    assert iv == bytes(a ^ b for a, b in zip(salt, mask)) + b"\x00\x00"
    assert len(iv) == 16


# ---------------------------------------------------------------------------
# Framing, byte for byte (RFC 3830 6 tables)
# ---------------------------------------------------------------------------


def test_header_layout_empty_map():
    hdr = Header(1, 0, True, 0, 0x00010002, 0, 1)
    data = mikey.encode(Message(hdr, [Rand(b"\xaa" * 16)]))
    # version 01, data type 00, next payload 0b (RAND), V|PRF 80, CSB ID,
    # #CS 00, CS ID map type 01 (empty), no map info.
    assert data[:10] == h("01 00 0b 80 00010002 00 01")


def test_header_layout_srtp_id_map():
    info = h("00 12345678 00000000")  # Policy_no || SSRC || ROC
    hdr = Header(1, 1, False, 0, 0xCAFEBABE, 1, 0, info)
    data = mikey.encode(Message(hdr, []))
    assert data == h("01 01 00 00 cafebabe 01 00") + info
    assert mikey.parse_message(data) == Message(hdr, [])


def test_payload_layouts():
    hdr = Header(1, 0, False, 0, 1, 0, 1)
    payloads = [
        Ext(3, h("00 03 02f810 01 04 00010002")),
        Timestamp(2, 42),
        Timestamp(0, 0xEEB4BD8000000000),
        Rand(bytes(range(16))),
        Id(1, b"bmsc.home1.net"),
        Id(0, b"u@h"),
        SecurityPolicy(0, 0, h("00 01 01 01 01 10")),
        Verification(1, b"\x11" * 20),
        Error(5),
        Kemac(0, h("00 00 0004 01020304"), 0, b""),
    ]
    data = mikey.encode(Message(hdr, payloads))
    expected = (
        h("01 00 15 00 00000001 00 01")  # HDR, next 21 (EXT)
        + h("05 03 000b 00 03 02f810 01 04 00010002")  # EXT: next T, Key ID (3), len 11, data
        + h("05 02 0000002a")  # T: next T, COUNTER, 4 bytes
        + h("0b 00 eeb4bd8000000000")  # T: next RAND, NTP-UTC, 8 bytes
        + h("06 10 000102030405060708090a0b0c0d0e0f")  # RAND: next ID, len 16
        + h("06 01 000e") + b"bmsc.home1.net"  # ID: next ID, URI, len 14
        + h("0a 00 0003") + b"u@h"  # ID: next SP, NAI, len 3
        + h("09 00 00 0006 000101010110")  # SP: next V, policy 0, SRTP, len 6
        + h("0c 01") + b"\x11" * 20  # V: next ERR, HMAC-SHA-1-160
        + h("01 05 0000")  # ERR: next KEMAC, error no 5, reserved
        + h("00 00 0008 00000004 01020304 00")  # KEMAC: last, NULL, len 8, MAC NULL
    )
    assert data == expected
    assert mikey.parse_message(data) == Message(hdr, payloads)


def test_key_data_layouts():
    items = [
        KeyData(0, 1, b"\x11" * 16, kv_data=h("00010002")),  # TGK, SPI
        KeyData(3, 0, b"\x22" * 16, salt=b"\x33" * 14),  # TEK+SALT, NULL
        KeyData(2, 2, b"\x44" * 4, kv_data=h("01 aa 02 bbcc")),  # TEK, Interval
    ]
    data = mikey.encode_key_data(items)
    assert data == (
        h("14 01 0010") + b"\x11" * 16 + h("04 00010002")
        + h("14 30 0010") + b"\x22" * 16 + h("000e") + b"\x33" * 14
        + h("00 22 0004 44444444 01 aa 02 bbcc")
    )
    assert mikey.parse_key_data(data) == items


def test_msk_message_layout():
    """The profile-1 MSK message of docs/design.md 7.7, checked field by field."""
    data = msk_message()
    ext_data = h("00 03") + KDID + h("01 04") + MSK_ID
    prefix = (
        h("01 00 15 80 00010002 00 01")
        + h("05 03 000b") + ext_data
        + h("0b 02 0000002a")
        + h("06 10") + RAND
        + h("06 01") + struct.pack("!H", len(IDI)) + IDI
        + h("01 00") + struct.pack("!H", len(IDR)) + IDR
        + h("00 01 0019")
    )
    assert data[: len(prefix)] == prefix
    encrypted = data[len(prefix) : len(prefix) + 25]
    assert data[len(prefix) + 25] == 1  # MAC alg HMAC-SHA-1-160
    assert len(data) == len(prefix) + 25 + 1 + 20
    # Decrypt independently: keys from the reference PRF, AES-CTR by hand.
    tail = b"\xff" + MSK_ID + RAND
    encr = _ref_prf(MUK, h("150533e1") + tail, 128)
    auth = _ref_prf(MUK, h("2d22ac75") + tail, 160)
    salt = _ref_prf(MUK, h("29b88916") + tail, 112)
    iv = bytes(a ^ b for a, b in zip(salt, b"\x00\x00" + MSK_ID + (42).to_bytes(8, "big"))) + b"\x00\x00"
    dec = Cipher(algorithms.AES(encr), modes.CTR(iv)).decryptor()
    plain = dec.update(encrypted) + dec.finalize()
    # Key data: last, TGK|SPI, len 16, MSK, SPI len 4, SPI = MSK ID.
    assert plain == h("00 01 0010") + MSK + h("04") + MSK_ID
    assert data[-20:] == _ref_hmac_sha1(auth, data[:-20])


def test_parse_rejects_bad_framing():
    good_hdr = h("01 00 0b 00 00000001 00 01")
    rand = h("00 10") + bytes(16)
    assert mikey.parse_message(good_hdr + rand).payloads == [Rand(bytes(16))]
    bad = [
        h("02 00 00 00 00000001 00 01"),  # version 2
        h("01 0b 00 00 00000001 00 01"),  # data type 11
        h("01 00 00 00 00000001 00 07"),  # CS ID map type 7
        h("01 00 02 00 00000001 00 01") + bytes(40),  # PKE: unsupported
        h("01 00 63 00 00000001 00 01") + bytes(40),  # type 99: unknown
        h("01 00 14 00 00000001 00 01") + bytes(40),  # Key data at top level
        good_hdr + h("00 00"),  # RAND of length 0
        good_hdr + rand + b"\x00",  # trailing garbage
        h("01 00 05 00 00000001 00 01 00 02 0000002a 00000000"),  # COUNTER given 8 bytes
        h("01 00 05 00 00000001 00 01 00 00 0000002a"),  # NTP-UTC given 4 bytes
        h("01 00 05 00 00000001 00 01 00 07 0000002a"),  # unknown TS type
        h("01 00 05 00 00000001 00 01 0b 02 0000002a"),  # chain does not end
        h("01 00 06 00 00000001 00 01 00 05 0001 41"),  # unknown ID type
        h("01 00 09 00 00000001 00 01 00 02") + bytes(20),  # unknown V MAC alg
        h("01 00 01 00 00000001 00 01 00 09 0000 00"),  # unknown encr alg
        h("01 00 01 00 00000001 00 01 00 01 0000 07"),  # unknown MAC alg
        h("01 00 01 00 00000001 00 01 00 01 0000 01") + bytes(19),  # short MAC
        h("01 00 0a 00 00000001 00 01 00 00 00 0003 01 05 00"),  # SP param overruns
        b"",
        b"\x01",
        "text",
        None,
    ]
    for data in bad:
        with pytest.raises(MikeyError):
            mikey.parse_message(data)


def test_size_limit():
    big = h("01 00 15 00 00000001 00 01 00 00 1000") + bytes(4096)
    with pytest.raises(MikeyError):
        mikey.parse_message(big)
    with pytest.raises(MikeyError):
        mikey.encode(Message(Header(1, 0, False, 0, 1, 0, 1), [Ext(0, bytes(5000))]))


def test_key_data_rejects_bad_input():
    for data in [
        h("14 01 0010") + bytes(16) + h("04 00010002"),  # claims a next sub-payload
        h("00 41 0000"),  # key type 4
        h("00 03 0000"),  # KV type 3
        h("00 10 0001 aa 0005 bb"),  # salt overruns
        h("00 02 0000 05 aa"),  # interval overruns
        h("00 00 0000 00"),  # trailing byte
        h("07 00 0000"),  # a sub-payload other than key data
    ]:
        with pytest.raises(MikeyError):
            mikey.parse_key_data(data)


# ---------------------------------------------------------------------------
# The profile messages
# ---------------------------------------------------------------------------


def test_msk_round_trip():
    d = mikey.parse_msk_message(MUK, msk_message(counter=1000), last_counter=999)
    assert (d.key_domain_id, d.msk_id, d.msk) == (KDID, MSK_ID, MSK)
    assert (d.counter, d.rand, d.idi, d.idr) == (1000, RAND, IDI, IDR)
    assert d.csb_id == mikey.csb_id_for(MSK_ID) == 0x00010002
    assert d.v is True
    assert mikey.parse_msk_message(MUK, msk_message(v=False)).v is False
    assert mikey.peek_key_id(msk_message()) == mikey.KeyId(KDID, MSK_ID)


def test_msk_message_header_values_come_from_profile():
    msg = mikey.parse_message(msk_message())
    hdr = msg.header
    assert (hdr.version, hdr.data_type, hdr.prf, hdr.cs_count, hdr.cs_id_map_type) == (
        1,
        profile.MSK_DATA_TYPE,
        profile.PRF_FUNC,
        profile.CS_COUNT,
        profile.CS_ID_MAP_TYPE,
    )
    chain = tuple(mikey._PAYLOAD_TYPE[type(p)] for p in msg.payloads)
    assert chain == profile.MSK_MESSAGE_PAYLOADS


def test_msk_wrong_muk_is_mac_error():
    with pytest.raises(MacError):
        mikey.parse_msk_message(bytes(32), msk_message())


def test_msk_every_flipped_bit_is_rejected():
    data = msk_message()
    # Offsets whose change leaves the framing intact: the MAC must catch them.
    ext_at = 10 + 4
    t_at = ext_at + 11 + 2
    rand_at = t_at + 4 + 2
    idi_at = rand_at + 16 + 4
    idr_at = idi_at + len(IDI) + 4
    enc_at = idr_at + len(IDR) + 4
    mac_only = (
        set(range(3, 8))  # V|PRF, CSB ID
        | set(range(ext_at, ext_at + 11))
        | set(range(t_at, t_at + 4))
        | set(range(rand_at, rand_at + 16))
        | set(range(idi_at, idi_at + len(IDI)))
        | set(range(idr_at, idr_at + len(IDR)))
        | set(range(enc_at, enc_at + 25))
        | set(range(len(data) - 20, len(data)))
    )
    for i in range(len(data)):
        for bit in range(8):
            bad = bytearray(data)
            bad[i] ^= 1 << bit
            with pytest.raises(MikeyError) as info:
                mikey.parse_msk_message(MUK, bytes(bad))
            if i in mac_only:
                assert isinstance(info.value, MacError), (i, bit)


def test_replay_rejected():
    data = msk_message(counter=42)
    mikey.parse_msk_message(MUK, data, last_counter=41)
    mikey.parse_msk_message(MUK, data, last_counter=None)
    for last in (42, 43, 0xFFFFFFFF):
        with pytest.raises(ReplayError):
            mikey.parse_msk_message(MUK, data, last_counter=last)
    # The MAC is checked before the counter.
    bad = bytearray(data)
    bad[-1] ^= 1
    with pytest.raises(MacError):
        mikey.parse_msk_message(MUK, bytes(bad), last_counter=100)


def test_mtk_replay_rejected():
    with pytest.raises(ReplayError):
        mikey.parse_mtk_message(MSK, mtk_message(counter=7), last_counter=7)
    assert mikey.parse_mtk_message(MSK, mtk_message(counter=8), last_counter=7).counter == 8


def test_mtk_round_trip():
    d = mikey.parse_mtk_message(MSK, mtk_message())
    assert (d.key_domain_id, d.msk_id, d.mtk_id, d.mtk, d.salt) == (KDID, MSK_ID, MTK_ID, MTK, MTK_SALT)
    assert (d.counter, d.rand, d.csb_id) == (7, RAND, 0x00010002)
    d = mikey.parse_mtk_message(MSK, mtk_message(salt=None))
    assert d.salt is None and d.mtk == MTK
    msg = mikey.parse_message(mtk_message())
    assert msg.header.v is False
    assert tuple(mikey._PAYLOAD_TYPE[type(p)] for p in msg.payloads) == profile.MTK_MESSAGE_PAYLOADS
    assert msg.find(Ext)[0].data == h("00 03") + KDID + h("01 04") + MSK_ID + h("02 02") + MTK_ID
    assert mikey.peek_key_id(mtk_message()) == mikey.KeyId(KDID, MSK_ID, MTK_ID)
    with pytest.raises(MacError):
        mikey.parse_mtk_message(bytes(16), mtk_message())


def test_mtk_message_asking_for_verification_is_refused():
    header = mikey._profile_header(0, True, 0x00010002)
    payloads = mikey.parse_message(mtk_message()).payloads[:-1]
    key = KeyData(3, 1, MTK, MTK_SALT, MTK_ID)
    forged = mikey._protected_message(MSK, header, payloads, [key], 7, RAND)
    with pytest.raises(MikeyError, match="verification"):
        mikey.parse_mtk_message(MSK, forged)
    header.v = False
    ok = mikey._protected_message(MSK, header, payloads, [key], 7, RAND)
    assert ok == mtk_message()


def test_msk_and_mtk_messages_are_not_interchangeable():
    """An MTK message under the MSK is not an MSK message under that key."""
    with pytest.raises(MikeyError):
        mikey.parse_msk_message(MSK, mtk_message())
    with pytest.raises(MikeyError):
        mikey.parse_mtk_message(MUK, msk_message())


def _resign(data, key):
    """Re-MAC a tampered profile message the way a key holder would."""
    msg = mikey.parse_message(data)
    rand = msg.find(Rand)[0].value
    _, auth, _ = mikey.derive_psk_keys(key, msg.header.csb_id, rand)
    return data[:-20] + _ref_hmac_sha1(auth, data[:-20])


def test_validly_macd_but_inconsistent_messages_are_mikey_errors():
    data = msk_message()
    # CSB ID no longer equal to the MSK ID of the EXT.
    bad = bytearray(data)
    bad[7] ^= 1
    with pytest.raises(MikeyError, match="CSB ID") as info:
        mikey.parse_msk_message(MUK, _resign(bytes(bad), MUK))
    assert not isinstance(info.value, MacError)
    # The MSK ID sub-payload's Key ID Type (EXT data byte 5) made unknown.
    bad = bytearray(data)
    bad[14 + 5] = 9
    with pytest.raises(MikeyError, match="unknown Key ID Type 9") as info:
        mikey.parse_msk_message(MUK, _resign(bytes(bad), MUK))
    assert not isinstance(info.value, MacError)
    # ID types swapped.
    idi_type_at = 10 + 15 + 6 + 18 + 1
    bad = bytearray(data)
    bad[idi_type_at] = 0
    with pytest.raises(MikeyError, match="ID types") as info:
        mikey.parse_msk_message(MUK, _resign(bytes(bad), MUK))
    assert not isinstance(info.value, MacError)
    # Key data whose SPI is not the MSK ID of the EXT (built by a MUK holder).
    header = mikey._profile_header(0, True, 0x00010002)
    payloads = mikey.parse_message(data).payloads[:-1]
    for key in [
        KeyData(0, 1, MSK, kv_data=h("00010003")),  # SPI != MSK ID
        KeyData(2, 1, MSK, kv_data=MSK_ID),  # TEK, not TGK
        KeyData(0, 0, MSK),  # KV NULL
        KeyData(0, 1, MSK[:8], kv_data=MSK_ID),  # short MSK
    ]:
        forged = mikey._protected_message(MUK, header, payloads, [key], 42, RAND)
        with pytest.raises(MikeyError, match="MSK") as info:
            mikey.parse_msk_message(MUK, forged)
        assert not isinstance(info.value, MacError)
    two = mikey._protected_message(MUK, header, payloads, [KeyData(0, 1, MSK, kv_data=MSK_ID)] * 2, 42, RAND)
    with pytest.raises(MikeyError, match="exactly one key"):
        mikey.parse_msk_message(MUK, two)
    assert mikey.parse_msk_message(
        MUK, mikey._protected_message(MUK, header, payloads, [KeyData(0, 1, MSK, kv_data=MSK_ID)], 42, RAND)
    ).msk == MSK


def test_verification_round_trip_and_layout():
    data = msk_message(counter=42)
    ver = mikey.build_verification(MUK, data)
    mikey.check_verification(MUK, data, ver)
    # HDR (data type 1, V=0, same CSB ID, empty map) -> T (echo) -> V.
    body = h("01 01 05 00 00010002 00 01") + h("09 02 0000002a") + h("00 01")
    assert ver[:-20] == body
    # V MAC = HMAC(auth_key, body || IDi data || IDr data || T of the MSK message).
    auth = _ref_prf(MUK, h("2d22ac75 ff") + MSK_ID + RAND, 160)
    assert ver[-20:] == _ref_hmac_sha1(auth, body + IDI + IDR + h("0000002a"))


def test_verification_failures():
    data = msk_message(counter=42)
    ver = mikey.build_verification(MUK, data)
    for i in range(len(ver)):
        bad = bytearray(ver)
        bad[i] ^= 0x01
        with pytest.raises(MikeyError):
            mikey.check_verification(MUK, data, bytes(bad))
    with pytest.raises(MacError):
        mikey.check_verification(MUK, msk_message(counter=43), ver)
    with pytest.raises(MacError):
        mikey.check_verification(bytes(32), data, ver)
    # A correctly MAC'd answer that does not echo the MSK message's T.
    auth = _ref_prf(MUK, h("2d22ac75 ff") + MSK_ID + RAND, 160)
    body = h("01 01 05 00 00010002 00 01") + h("09 02 0000002b") + h("00 01")
    forged = body + _ref_hmac_sha1(auth, body + IDI + IDR + h("0000002a"))
    with pytest.raises(MikeyError) as info:
        mikey.check_verification(MUK, data, forged)
    assert not isinstance(info.value, MacError)
    # The answer to a tampered MSK message is not built.
    bad = bytearray(data)
    bad[-3] ^= 4
    with pytest.raises(MacError):
        mikey.build_verification(MUK, bytes(bad))


def test_builders_validate_input():
    with pytest.raises(MikeyError):
        mikey.build_msk_message(MUK, KDID, MSK_ID[:3], MSK, 1, RAND, IDI, IDR)
    with pytest.raises(MikeyError):
        mikey.build_msk_message(MUK, KDID[:2], MSK_ID, MSK, 1, RAND, IDI, IDR)
    with pytest.raises(MikeyError):
        mikey.build_msk_message(MUK, KDID, MSK_ID, MSK[:15], 1, RAND, IDI, IDR)
    with pytest.raises(MikeyError):
        mikey.build_msk_message(MUK, KDID, MSK_ID, MSK, 1 << 32, RAND, IDI, IDR)
    with pytest.raises(MikeyError):
        mikey.build_msk_message(MUK, KDID, MSK_ID, MSK, -1, RAND, IDI, IDR)
    with pytest.raises(MikeyError):
        mikey.build_msk_message(MUK, KDID, MSK_ID, MSK, 1, RAND[:8], IDI, IDR)
    with pytest.raises(MikeyError):
        mikey.build_msk_message(b"", KDID, MSK_ID, MSK, 1, RAND, IDI, IDR)
    with pytest.raises(MikeyError):
        mikey.build_mtk_message(MSK, KDID, MSK_ID, b"\x00", MTK, None, 1, RAND)
    with pytest.raises(MikeyError):
        mikey.build_mtk_message(MSK, KDID, MSK_ID, MTK_ID, MTK, b"\x00" * 13, 1, RAND)
    with pytest.raises(MikeyError):
        mikey.csb_id_for(b"\x00\x01")
    assert issubclass(MikeyError, ValueError)


def test_counter_limits():
    for counter in (0, 0xFFFFFFFF):
        assert mikey.parse_msk_message(MUK, msk_message(counter=counter)).counter == counter


def test_retransmit_schedule():
    assert profile.verification_waits() == (1.0, 2.0, 4.0, 8.0, 16.0)
    assert profile.MSK_UDP_PORT == 4359


# ---------------------------------------------------------------------------
# Hostile input: only MikeyError, never IndexError / struct.error / ...
# ---------------------------------------------------------------------------


def _all_parsers(data):
    return [
        lambda: mikey.parse_message(data),
        lambda: mikey.parse_msk_message(MUK, data, last_counter=0),
        lambda: mikey.parse_mtk_message(MSK, data),
        lambda: mikey.check_verification(MUK, MSK_MESSAGE, data),
        lambda: mikey.build_verification(MUK, data),
        lambda: mikey.peek_key_id(data),
        lambda: mikey.parse_key_data(data),
        lambda: mikey.parse_key_id(data),
    ]


MSK_MESSAGE = msk_message()


@pytest.mark.parametrize(
    "valid",
    [MSK_MESSAGE, mtk_message(), mtk_message(salt=None), mikey.build_verification(MUK, MSK_MESSAGE)],
    ids=["msk", "mtk", "mtk-nosalt", "verification"],
)
def test_every_truncation_raises_mikey_error(valid):
    for n in range(len(valid)):
        for call in _all_parsers(valid[:n]):
            with pytest.raises(MikeyError):
                call()
    for call in _all_parsers(valid + b"\x00"):
        with pytest.raises(MikeyError):
            call()


def _only_mikey_errors(data):
    for call in _all_parsers(data):
        try:
            call()
        except MikeyError:
            pass
        except Exception as e:  # pragma: no cover - the failure being tested for
            pytest.fail("%s on %s: %r" % (type(e).__name__, data.hex(), e))


def test_random_garbage_raises_only_mikey_error():
    rng = random.Random(0x4D494B45)
    seeds = [MSK_MESSAGE, mtk_message(), mikey.build_verification(MUK, MSK_MESSAGE)]
    for i in range(3000):
        kind = i % 4
        if kind == 0:  # pure noise
            data = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 160)))
        elif kind == 1:  # a plausible header, then noise
            data = h("01") + bytes([rng.randrange(12), rng.choice([1, 5, 6, 9, 10, 11, 12, 20, 21, 0])])
            data += bytes(rng.getrandbits(8) for _ in range(5)) + bytes([rng.randrange(3), rng.randrange(3)])
            data += bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 120)))
        else:  # a valid message with a few byte edits, inserts or deletes
            data = bytearray(rng.choice(seeds))
            for _ in range(rng.randrange(1, 4)):
                op, pos = rng.randrange(3), rng.randrange(len(data) + 1)
                if op == 0 and pos < len(data):
                    data[pos] = rng.getrandbits(8)
                elif op == 1:
                    data[pos:pos] = bytes([rng.getrandbits(8)])
                elif pos < len(data):
                    del data[pos]
            data = bytes(data)
        _only_mikey_errors(data)


# ---------------------------------------------------------------------------
# Secrets stay out of reprs and error messages
# ---------------------------------------------------------------------------


def _secret_forms(*keys):
    forms = []
    for k in keys:
        forms += [k.hex(), repr(k), k.hex().upper()]
    return forms


def test_reprs_hide_keys():
    d = mikey.parse_msk_message(MUK, msk_message())
    t = mikey.parse_mtk_message(MSK, mtk_message())
    k = KeyData(3, 1, MTK, MTK_SALT, MTK_ID)
    for text in (repr(d), str(d), repr(t), repr(k), repr(mikey.parse_message(msk_message()))):
        for form in _secret_forms(MUK, MSK, MTK, MTK_SALT):
            assert form not in text
    assert "msk_id=" in repr(d) and "msk=" not in repr(d)
    assert "mtk=" not in repr(t) and "salt=" not in repr(t)


def test_error_messages_hide_keys():
    messages = []
    data = msk_message()
    bad = bytearray(data)
    bad[-1] ^= 1
    for call in [
        lambda: mikey.parse_msk_message(MUK, bytes(bad)),
        lambda: mikey.parse_msk_message(MUK, data, last_counter=50),
        lambda: mikey.parse_msk_message(bytes(32), data),
        lambda: mikey.check_verification(MUK, data, b"\x01" * 40),
        lambda: mikey.build_msk_message(MUK, KDID, MSK_ID, MSK + b"\x00", 1, RAND, IDI, IDR),
        lambda: mikey.build_mtk_message(MSK, KDID, MSK_ID, MTK_ID, MTK, MTK_SALT[:3], 1, RAND),
    ]:
        with pytest.raises(MikeyError) as info:
            call()
        messages.append(str(info.value) + repr(info.value))
    derived = mikey.derive_psk_keys(MUK, 0x00010002, RAND)
    for text in messages:
        for form in _secret_forms(MUK, MSK, MTK, MTK_SALT, *derived):
            assert form not in text


# ---------------------------------------------------------------------------
# The BM-SC's template (one MSK, many UEs) against the generic encoder and
# against the UE's own verification builder.


def _generic_msk_message(muk, kdid, msk_id, msk, counter, rand, idi, idr, v):
    """The MSK message of docs/design.md 7.7 through the generic payload encoder."""
    csb_id = int.from_bytes(msk_id, "big")
    header = Header(1, profile.MSK_DATA_TYPE, v, profile.PRF_FUNC, csb_id, profile.CS_COUNT,
                    profile.CS_ID_MAP_TYPE)
    encr, auth, salt = mikey.derive_psk_keys(muk, csb_id, rand)
    plain = mikey.encode_key_data([KeyData(profile.MSK_KEY_TYPE, profile.KEY_VALIDITY_TYPE, msk,
                                           kv_data=msk_id)])
    payloads = [Ext(profile.EXT_TYPE_KEY_ID, mikey.encode_key_id(kdid, msk_id)),
                Timestamp(profile.TS_TYPE, counter), Rand(rand), Id(profile.IDI_TYPE, idi),
                Id(profile.IDR_TYPE, idr),
                Kemac(profile.ENCR_ALG, mikey.aes_cm(encr, salt, csb_id, counter, plain),
                      profile.MAC_ALG, bytes(20))]
    unsigned = mikey.encode(Message(header, payloads))
    return unsigned[:-20] + _ref_hmac_sha1(auth, unsigned[:-20])


msk_inputs = st.fixed_dictionaries(dict(
    muk=st.binary(min_size=1, max_size=80), kdid=st.binary(min_size=3, max_size=3),
    msk_id=st.binary(min_size=4, max_size=4), msk=st.binary(min_size=16, max_size=16),
    counter=st.integers(0, 0xFFFFFFFF), rand=st.binary(min_size=16, max_size=16),
    idi=st.binary(max_size=64), idr=st.binary(max_size=120), v=st.booleans()))


@given(msk_inputs)
def test_template_builds_what_the_generic_encoder_builds(m):
    template = mikey.MskMessageTemplate(m["kdid"], m["msk_id"], m["msk"], m["idi"], m["v"])
    message, expected = template.build(m["muk"], m["counter"], m["rand"], m["idr"])
    assert message == _generic_msk_message(**m)
    # the expected answer is exactly what the UE builds from the message
    assert expected.message == mikey.build_verification(m["muk"], message)


def test_one_template_serves_many_ues():
    template = mikey.MskMessageTemplate(KDID, MSK_ID, MSK, IDI)
    for i in range(5):
        muk, idr = bytes([i]) * 32, b"ue-%d@bsf.home1.net" % (i,)
        message, _ = template.build(muk, 42 + i, RAND, idr)
        assert message == mikey.build_msk_message(muk, KDID, MSK_ID, MSK, 42 + i, RAND, IDI, idr)
        assert mikey.parse_msk_message(muk, message).idr == idr


@given(st.data())
def test_only_the_expected_answer_passes_the_check(data):
    # the BM-SC matches answers by equality with expected.message: the full
    # check must accept that one string and nothing else
    _, expected = mikey.build_msk_message_expecting(MUK, KDID, MSK_ID, MSK, 42, RAND, IDI, IDR)
    good = expected.message
    mikey.check_expected_verification(expected, good)
    i = data.draw(st.integers(0, len(good) - 1))
    how = data.draw(st.sampled_from(["flip", "cut", "append", "replace"]))
    if how == "flip":
        bad = good[:i] + bytes([good[i] ^ data.draw(st.integers(1, 255))]) + good[i + 1:]
    elif how == "cut":
        bad = good[:i]
    elif how == "append":
        bad = good + data.draw(st.binary(min_size=1, max_size=8))
    else:
        bad = good[:i] + data.draw(st.binary(max_size=30))
    if bad != good:
        with pytest.raises(MikeyError):
            mikey.check_expected_verification(expected, bad)


@given(msk_inputs)
def test_answer_msk_message_is_parse_then_build_verification(m):
    message = mikey.build_msk_message(m["muk"], m["kdid"], m["msk_id"], m["msk"], m["counter"],
                                      m["rand"], m["idi"], m["idr"], v=m["v"])
    delivery, verification = mikey.answer_msk_message(m["muk"], message)
    assert delivery == mikey.parse_msk_message(m["muk"], message)
    assert verification == (mikey.build_verification(m["muk"], message) if m["v"] else None)


def test_aes_cm_iv_rejects_a_csb_id_over_32_bits():
    with pytest.raises(MikeyError):
        mikey.aes_cm_iv(bytes(14), 1 << 32, 0)


# --- a streaming service's MSK message: the SRTP policy (RFC 4563 7) --------


def _streaming_msk_message(counter=5):
    return mikey.build_msk_message(MUK, KDID, MSK_ID, MSK, counter, RAND, IDI, IDR, streaming=True)


def test_streaming_msk_message_layout_by_hand():
    """HDR with the SRTP-ID map and the SP payload, as RFC 3830 6.1, 6.1.1, 6.10, 6.10.1 lay them out."""
    data = _streaming_msk_message()
    # HDR: version 1, data type 0, next 21 (EXT), V=1|PRF 0, CSB ID, #CS 1, map type 0,
    # then Policy_no 0 || SSRC 0 || ROC 0
    assert data[:19] == bytes([1, 0, 21, 0x80]) + MSK_ID + bytes([1, 0]) + bytes(9)
    sp = bytes([1, 0, 0, 0, 30]) + bytes.fromhex(  # next 1 (KEMAC), policy 0, SRTP, length 30
        "000101" "010110" "020101" "030114" "04010e" "050100" "070101" "080101" "0a0101" "0b010a")
    idr = bytes([10, 0]) + struct.pack("!H", len(IDR)) + IDR  # IDr: next 10 (SP), NAI
    assert idr + sp in data
    delivery = mikey.parse_msk_message(MUK, data)
    assert delivery.policy == mikey.srtp_policy() and delivery.msk == MSK
    mikey.check_verification(MUK, data, mikey.build_verification(MUK, data))


def test_download_msk_message_has_no_policy():
    assert mikey.parse_msk_message(MUK, mikey.build_msk_message(
        MUK, KDID, MSK_ID, MSK, 5, RAND, IDI, IDR)).policy is None


def test_streaming_msk_message_with_another_policy_is_refused():
    data = _streaming_msk_message()
    tag = bytes.fromhex("0b010a")
    altered = _resign(data.replace(tag, bytes.fromhex("0b0104")), MUK)  # a 32-bit tag
    with pytest.raises(mikey.MikeyError, match="SRTP policy"):
        mikey.parse_msk_message(MUK, altered)
    ssrc = bytearray(data)
    ssrc[14] = 1  # the map's SSRC
    with pytest.raises(mikey.MikeyError, match="SRTP-ID map"):
        mikey.parse_msk_message(MUK, _resign(bytes(ssrc), MUK))
