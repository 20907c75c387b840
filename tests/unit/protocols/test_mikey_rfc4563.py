"""
The MSK and MTK messages against MIKEY bytes assembled here by hand from the
figures of RFC 4563 (the Key ID General Extension, section 4 Figures 1 and 2,
Tables 1 and 2; the empty CS ID map, section 5 Table 3) and the payload
layouts of RFC 3830 section 6, with the KEMAC keys, its encryption and every
MAC computed by this test's own code (the reference PRF and HMAC of
tests/unit/protocols/test_mikey.py, AES-CTR straight from the cryptography library). Our
parser must read these bytes and our builder must reproduce them; RFC 4563's
negative cases must each fail with the MikeyError that names what is wrong.
"""

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from mbmsd.protocols import mikey
from mbmsd.protocols.mikey import MacError, MikeyError
from tests.unit.protocols.test_mikey import _ref_hmac_sha1, _ref_prf

MUK = bytes(range(0x80, 0xA0))
KDID = bytes.fromhex("02f810")  # MCC 208, MNC 01
MSK_ID = bytes.fromhex("00010002")
MSK = bytes.fromhex("a1a2a3a4a5a6a7a8a9aaabacadaeafb0")
MTK_ID = bytes.fromhex("0007")
MTK = bytes.fromhex("c1c2c3c4c5c6c7c8c9cacbcccdcecfd0")
MTK_SALT = bytes.fromhex("e1e2e3e4e5e6e7e8e9eaebecedee")
RAND = bytes(range(0x50, 0x60))
IDI = b"bmsc.home1.net"
IDR = b"YWJjZA==@bsf.home1.net"
MSK_COUNTER = 42
MTK_COUNTER = 7


def h(s):
    return bytes.fromhex("".join(s.split()))


def u16(n):
    return n.to_bytes(2, "big")


# RFC 4563 4 Figure 2: Key ID Type (8 bits) | Key ID Length (8 bits) | Key ID;
# Table 2: 0 MBMS Key Domain ID, 1 MBMS Service Key ID, 2 MBMS Traffic Key ID.
SUB_KDID = h("00 03") + KDID
SUB_MSK_ID = h("01 04") + MSK_ID
SUB_MTK_ID = h("02 02") + MTK_ID


def _kemac(psk, counter, plain):
    """RFC 3830 4.1.4 keys, 4.2.3 AES-CM: the encrypted key data and the auth key."""
    tail = b"\xff" + MSK_ID + RAND  # constant || 0xFF || CSB ID (= MSK ID) || RAND
    encr = _ref_prf(psk, h("150533e1") + tail, 128)
    auth = _ref_prf(psk, h("2d22ac75") + tail, 160)
    salt = _ref_prf(psk, h("29b88916") + tail, 112)
    # IV = (salt XOR (0x0000 || CSB ID || T)) || 0x0000, T the 64-bit TS slot
    mask = b"\x00\x00" + MSK_ID + counter.to_bytes(8, "big")
    iv = bytes(a ^ b for a, b in zip(salt, mask)) + b"\x00\x00"
    enc = Cipher(algorithms.AES(encr), modes.CTR(iv)).encryptor()
    return enc.update(plain) + enc.finalize(), auth


def msk_message_bytes(ext_data=SUB_KDID + SUB_MSK_ID, ext_type=3):
    """An MSK message, field by field; its MAC is right for whatever EXT data."""
    # Key data sub-payload (RFC 3830 6.13), the KEMAC's plaintext
    plain = (
        h("00")  # next payload: last
        + h("01")  # type 0 TGK (high nibble) | KV 1 SPI/MKI (low nibble)
        + u16(len(MSK)) + MSK  # key data length, key data
        + h("04") + MSK_ID  # SPI length, SPI = MSK ID
    )
    encrypted, auth = _kemac(MUK, MSK_COUNTER, plain)
    body = (
        # Common header (RFC 3830 6.1)
        h("01")  # version 1
        + h("00")  # data type 0: Pre-shared key init
        + h("15")  # next payload 21: EXT
        + h("80")  # V = 1 | PRF func 0 (MIKEY-1)
        + MSK_ID  # CSB ID
        + h("00")  # #CS 0
        + h("01")  # CS ID map type 1: Empty map (RFC 4563 5 Table 3), no map info
        # General Extension (RFC 3830 6.15; RFC 4563 4 Figure 1)
        + h("05")  # next payload 5: T
        + bytes([ext_type])  # type 3: Key ID (RFC 4563 4 Table 1)
        + u16(len(ext_data))  # length of the Key ID Information
        + ext_data
        # Timestamp (RFC 3830 6.6)
        + h("0b")  # next payload 11: RAND
        + h("02")  # TS type 2: COUNTER
        + MSK_COUNTER.to_bytes(4, "big")
        # RAND (RFC 3830 6.11)
        + h("06")  # next payload 6: ID
        + bytes([len(RAND)]) + RAND
        # IDi (RFC 3830 6.7)
        + h("06")  # next payload 6: ID
        + h("01")  # ID type 1: URI
        + u16(len(IDI)) + IDI
        # IDr (RFC 3830 6.7)
        + h("01")  # next payload 1: KEMAC
        + h("00")  # ID type 0: NAI
        + u16(len(IDR)) + IDR
        # KEMAC (RFC 3830 6.2)
        + h("00")  # next payload: last
        + h("01")  # encr alg 1: AES-CM-128
        + u16(len(encrypted)) + encrypted
        + h("01")  # MAC alg 1: HMAC-SHA-1-160
    )
    return body + _ref_hmac_sha1(auth, body)  # MAC over all before it (RFC 3830 5.1)


def mtk_message_bytes(ext_data=SUB_KDID + SUB_MSK_ID + SUB_MTK_ID, salted=True):
    """An MTK message, field by field, MACed with keys from the MSK."""
    # Key data sub-payload (RFC 3830 6.13)
    plain = (
        h("00")  # next payload: last
        + (h("31") if salted else h("21"))  # type 3 TEK+SALT or 2 TEK | KV 1 SPI/MKI
        + u16(len(MTK)) + MTK
        + (u16(len(MTK_SALT)) + MTK_SALT if salted else b"")  # salt length, salt
        + h("02") + MTK_ID  # SPI length, SPI = MTK ID
    )
    encrypted, auth = _kemac(MSK, MTK_COUNTER, plain)
    body = (
        # Common header (RFC 3830 6.1)
        h("01 00 15")  # version 1, data type 0, next payload 21: EXT
        + h("00")  # V = 0 | PRF func 0
        + MSK_ID  # CSB ID
        + h("00 01")  # #CS 0, CS ID map type 1: Empty map (RFC 4563 5)
        # General Extension (RFC 3830 6.15; RFC 4563 4 Figure 1)
        + h("05 03")  # next payload 5: T, type 3: Key ID
        + u16(len(ext_data)) + ext_data
        # Timestamp (RFC 3830 6.6): next 11 RAND, COUNTER
        + h("0b 02") + MTK_COUNTER.to_bytes(4, "big")
        # RAND (RFC 3830 6.11): next 1 KEMAC
        + h("01") + bytes([len(RAND)]) + RAND
        # KEMAC (RFC 3830 6.2): last, AES-CM-128, encr data, HMAC-SHA-1-160
        + h("00 01") + u16(len(encrypted)) + encrypted + h("01")
    )
    return body + _ref_hmac_sha1(auth, body)


def test_msk_message_reads_and_rebuilds():
    data = msk_message_bytes()
    # EXT: next T, type 3, length 11, then 00 03 <KDID> 01 04 <MSK ID>
    assert data[10:25] == h("05 03 000b 00 03 02f810 01 04 00010002")
    d = mikey.parse_msk_message(MUK, data)
    assert (d.key_domain_id, d.msk_id, d.msk, d.counter, d.rand) == (KDID, MSK_ID, MSK, 42, RAND)
    assert (d.idi, d.idr, d.csb_id, d.v) == (IDI, IDR, 0x00010002, True)
    assert mikey.peek_key_id(data) == mikey.KeyId(KDID, MSK_ID)
    assert mikey.build_msk_message(MUK, KDID, MSK_ID, MSK, MSK_COUNTER, RAND, IDI, IDR) == data
    template = mikey.MskMessageTemplate(KDID, MSK_ID, MSK, IDI)
    assert template.build(MUK, MSK_COUNTER, RAND, IDR)[0] == data


@pytest.mark.parametrize("salted", [True, False])
def test_mtk_message_reads_and_rebuilds(salted):
    data = mtk_message_bytes(salted=salted)
    # EXT: next T, type 3, length 15, 00 03 <KDID> 01 04 <MSK ID> 02 02 <MTK ID>
    assert data[10:29] == h("05 03 000f 00 03 02f810 01 04 00010002 02 02 0007")
    d = mikey.parse_mtk_message(MSK, data)
    assert (d.key_domain_id, d.msk_id, d.mtk_id, d.mtk) == (KDID, MSK_ID, MTK_ID, MTK)
    assert (d.salt, d.counter, d.rand, d.csb_id) == (MTK_SALT if salted else None, 7, RAND, 0x00010002)
    assert mikey.peek_key_id(data) == mikey.KeyId(KDID, MSK_ID, MTK_ID)
    salt = MTK_SALT if salted else None
    assert mikey.build_mtk_message(MSK, KDID, MSK_ID, MTK_ID, MTK, salt, MTK_COUNTER, RAND) == data


@pytest.mark.parametrize("order", [
    SUB_MSK_ID + SUB_KDID,
])
def test_msk_key_ids_in_another_order(order):
    d = mikey.parse_msk_message(MUK, msk_message_bytes(order))
    assert (d.key_domain_id, d.msk_id, d.msk) == (KDID, MSK_ID, MSK)


@pytest.mark.parametrize("order", [
    SUB_MTK_ID + SUB_KDID + SUB_MSK_ID,
    SUB_MSK_ID + SUB_MTK_ID + SUB_KDID,
    SUB_KDID + SUB_MTK_ID + SUB_MSK_ID,
])
def test_mtk_key_ids_in_another_order(order):
    d = mikey.parse_mtk_message(MSK, mtk_message_bytes(order))
    assert (d.key_domain_id, d.msk_id, d.mtk_id, d.mtk) == (KDID, MSK_ID, MTK_ID, MTK)


MSK_CASES = [
    # RFC 4563 4: each Key ID Type at most once
    (SUB_KDID + SUB_MSK_ID + SUB_MSK_ID, "duplicate MSK ID (Key ID Type 1)"),
    (SUB_KDID + SUB_KDID + SUB_MSK_ID, "duplicate MBMS Key Domain ID (Key ID Type 0)"),
    # only the Key ID Types of RFC 4563 Table 2
    (SUB_KDID + SUB_MSK_ID + h("07 01 aa"), "unknown Key ID Type 7"),
    (h("f1 00") + SUB_KDID + SUB_MSK_ID, "unknown Key ID Type 241"),
    # a Key ID Length beyond the Key ID Information
    (SUB_KDID + h("01 09") + MSK_ID, "MSK ID length 9 overruns the Key ID information"),
    (SUB_KDID + SUB_MSK_ID + h("02"), "Key ID Type 2 sub-payload has no Key ID Length"),
    # the profile's lengths
    (h("00 02 02f8") + SUB_MSK_ID, "MBMS Key Domain ID must be 3 octets, not 2"),
    (SUB_KDID + h("01 05") + MSK_ID + h("00"), "MSK ID must be 4 octets, not 5"),
    # what an MSK message needs, and no more
    (SUB_MSK_ID, "Key ID information has no MBMS Key Domain ID"),
    (SUB_KDID, "Key ID information has no MSK ID"),
    (b"", "Key ID information has no MBMS Key Domain ID"),
    (SUB_KDID + SUB_MSK_ID + SUB_MTK_ID, "Key ID information of an MSK message carries an MTK ID"),
]


@pytest.mark.parametrize("ext_data,error", MSK_CASES, ids=[e for _, e in MSK_CASES])
def test_msk_message_key_id_errors(ext_data, error):
    data = msk_message_bytes(ext_data)
    with pytest.raises(MikeyError) as info:
        mikey.parse_msk_message(MUK, data)
    assert str(info.value) == error
    assert not isinstance(info.value, MacError)  # the MAC was right: the Key ID is what failed


MTK_CASES = [
    (SUB_KDID + SUB_MSK_ID, "Key ID information of an MTK message has no MTK ID"),
    (SUB_KDID + SUB_MTK_ID, "Key ID information has no MSK ID"),
    (SUB_MSK_ID + SUB_MTK_ID, "Key ID information has no MBMS Key Domain ID"),
    (SUB_KDID + SUB_MSK_ID + SUB_MTK_ID + SUB_MTK_ID, "duplicate MTK ID (Key ID Type 2)"),
    (SUB_KDID + SUB_MSK_ID + h("02 03") + MTK_ID, "MTK ID length 3 overruns the Key ID information"),
    (SUB_KDID + SUB_MSK_ID + h("02 01 07"), "MTK ID must be 2 octets, not 1"),
    (SUB_KDID + SUB_MSK_ID + SUB_MTK_ID + h("03 00"), "unknown Key ID Type 3"),
]


@pytest.mark.parametrize("ext_data,error", MTK_CASES, ids=[e for _, e in MTK_CASES])
def test_mtk_message_key_id_errors(ext_data, error):
    with pytest.raises(MikeyError) as info:
        mikey.parse_mtk_message(MSK, mtk_message_bytes(ext_data))
    assert str(info.value) == error
    assert not isinstance(info.value, MacError)


PEEK_CASES = MSK_CASES[:-1] + MTK_CASES[1:]


@pytest.mark.parametrize("ext_data,error", PEEK_CASES, ids=[e for _, e in PEEK_CASES])
def test_peek_key_id_refuses_the_same(ext_data, error):
    with pytest.raises(MikeyError) as info:
        mikey.peek_key_id(msk_message_bytes(ext_data))
    assert str(info.value) == error


def test_an_ext_of_another_type_is_not_key_id_information():
    # RFC 3830 6.15 type 0 (Vendor ID) carrying the same bytes
    with pytest.raises(MikeyError, match="EXT is not Key ID information"):
        mikey.parse_msk_message(MUK, msk_message_bytes(ext_type=0))
    with pytest.raises(MikeyError, match="no single Key ID EXT"):
        mikey.peek_key_id(msk_message_bytes(ext_type=0))


def test_encode_key_id_is_figure_2():
    assert mikey.encode_key_id(KDID, MSK_ID) == SUB_KDID + SUB_MSK_ID
    assert mikey.encode_key_id(KDID, MSK_ID, MTK_ID) == SUB_KDID + SUB_MSK_ID + SUB_MTK_ID
    for bad in [(KDID[:2], MSK_ID), (KDID, MSK_ID + b"\x00"), (KDID, MSK_ID, b"\x07")]:
        with pytest.raises(MikeyError, match="must be"):
            mikey.encode_key_id(*bad)
