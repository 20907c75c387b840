"""
MIKEY (RFC 3830) framing and pre-shared-key crypto, and the MBMS messages of
"mbmsd profile 1" (docs/design.md 7.7): MSK message, verification message, MTK
message.

Pure functions on bytes; no Twisted, no I/O. Every value that TS 33.246 could
not confirm comes from L{mbmsd.profile}.

Parsers of untrusted bytes raise only L{MikeyError} (a C{ValueError}); the
MBMS parsers raise its subclasses L{MacError} (authentication failed) and
L{ReplayError} (counter not fresh). No key ever appears in an exception
message or a repr.
"""

import hashlib
import hmac
import math
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar, Union, cast

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from mbmsd import profile

__all__ = [
    "MikeyError",
    "MacError",
    "ReplayError",
    "Header",
    "Ext",
    "Timestamp",
    "Rand",
    "Id",
    "SecurityPolicy",
    "KeyData",
    "Kemac",
    "Verification",
    "Error",
    "Message",
    "KeyId",
    "MskDelivery",
    "MtkDelivery",
    "encode",
    "parse_message",
    "encode_key_data",
    "parse_key_data",
    "prf",
    "derive_psk_keys",
    "aes_cm_iv",
    "aes_cm",
    "encode_key_id",
    "parse_key_id",
    "peek_key_id",
    "csb_id_for",
    "build_msk_message",
    "MskMessageTemplate",
    "parse_msk_message",
    "build_verification",
    "answer_msk_message",
    "check_verification",
    "build_mtk_message",
    "parse_mtk_message",
    "srtp_policy",
]

# ---------------------------------------------------------------------------
# RFC 3830 numbers (VERIFIED, RFC 3830 6)
# ---------------------------------------------------------------------------

VERSION = 1  # RFC 3830 6.1

# Data types, RFC 3830 6.1 table 6.1.a (+ RFC 4650, RFC 4738).
DATA_PSK_INIT = 0
DATA_PSK_VERIFY = 1
_MAX_DATA_TYPE = 10

# Next payload values, RFC 3830 6.1 table 6.1.b.
PT_LAST = 0
PT_KEMAC = 1
PT_PKE = 2
PT_DH = 3
PT_SIGN = 4
PT_T = 5
PT_ID = 6
PT_CERT = 7
PT_CHASH = 8
PT_V = 9
PT_SP = 10
PT_RAND = 11
PT_ERR = 12
PT_KEY_DATA = 20
PT_EXT = 21

# CS ID map types: 0 SRTP-ID (RFC 3830 6.1), 1 Empty map (RFC 4563 5).
CS_MAP_SRTP_ID = 0
CS_MAP_EMPTY = 1

# TS types, RFC 3830 6.6 (value lengths in bytes).
TS_NTP_UTC = 0
TS_NTP = 1
TS_COUNTER = 2
_TS_LEN = {TS_NTP_UTC: 8, TS_NTP: 8, TS_COUNTER: 4}

# ID types, RFC 3830 6.7 (+ 2 byte string, RFC 6043).
ID_NAI = 0
ID_URI = 1
ID_BYTES = 2

# KEMAC encryption / MAC algorithms, RFC 3830 6.2.
ENCR_NULL = 0
ENCR_AES_CM_128 = 1
ENCR_AES_KW_128 = 2
MAC_NULL = 0
MAC_HMAC_SHA1_160 = 1
_MAC_LEN = {MAC_NULL: 0, MAC_HMAC_SHA1_160: 20}

# Key data types and KV types, RFC 3830 6.13.
KEY_TGK = 0
KEY_TGK_SALT = 1
KEY_TEK = 2
KEY_TEK_SALT = 3
_SALTED = (KEY_TGK_SALT, KEY_TEK_SALT)
KV_NULL = 0
KV_SPI = 1
KV_INTERVAL = 2

# PRF constants for keys derived from a pre-shared / envelope key,
# RFC 3830 4.1.4.
_C_ENCR = 0x150533E1
_C_AUTH = 0x2D22AC75
_C_SALT = 0x29B88916

# Lengths of the KEMAC keys in bits (AES-CM-128, HMAC-SHA-1-160, salt 112).
ENCR_KEY_BITS = 128
AUTH_KEY_BITS = 160
SALT_KEY_BITS = 112
_PSK_CONSTANTS = tuple(struct.pack("!I", c) for c in (_C_ENCR, _C_AUTH, _C_SALT))

# No MIKEY message we handle comes near this; anything larger is refused
# before parsing.
MAX_MESSAGE_SIZE = 4096

_HDR_LEN = 10


class MikeyError(ValueError):
    """A MIKEY message is malformed, unsupported, or does not fit the profile."""


class MacError(MikeyError):
    """The MAC of a MIKEY message (KEMAC or V) did not verify."""


class ReplayError(MikeyError):
    """The message's counter is not larger than the last accepted one."""


# ---------------------------------------------------------------------------
# Payloads
# ---------------------------------------------------------------------------


@dataclass
class Header:
    """Common header, RFC 3830 6.1. C{cs_id_map_info} is the raw map info."""

    version: int
    data_type: int
    v: bool
    prf: int
    csb_id: int
    cs_count: int
    cs_id_map_type: int
    cs_id_map_info: bytes = b""


@dataclass
class Ext:
    """General extension, RFC 3830 6.15."""

    type: int
    data: bytes


@dataclass
class Timestamp:
    """T payload, RFC 3830 6.6; C{value} is the TS value as an integer."""

    ts_type: int
    value: int

    def valueBytes(self) -> bytes:
        """The TS value field as it is on the wire (8 or 4 bytes)."""
        if self.ts_type not in _TS_LEN:
            raise MikeyError("unsupported TS type %r" % (self.ts_type,))
        return self.value.to_bytes(_TS_LEN[self.ts_type], "big")


@dataclass
class Rand:
    """RAND payload, RFC 3830 6.11."""

    value: bytes


@dataclass
class Id:
    """ID payload, RFC 3830 6.7 (the first in a message is IDi, the second IDr)."""

    id_type: int
    data: bytes


@dataclass
class SecurityPolicy:
    """SP payload, RFC 3830 6.10; C{params} is the raw type/length/value list."""

    policy_no: int
    prot_type: int
    params: bytes


@dataclass
class KeyData:
    """
    Key data sub-payload, RFC 3830 6.13 (lives inside the KEMAC encr data).

    C{kv_data}: for KV type SPI, the SPI value (its length byte is added on
    the wire); for KV type Interval, the raw "VF length || VF || VT length ||
    VT" field; for KV NULL, empty.
    """

    key_type: int
    kv_type: int
    key: bytes = field(repr=False)
    salt: bytes | None = field(default=None, repr=False)
    kv_data: bytes = b""


@dataclass
class Kemac:
    """KEMAC payload, RFC 3830 6.2; C{encrypted} is the (encrypted) encr data."""

    encr_alg: int
    encrypted: bytes
    mac_alg: int
    mac: bytes


@dataclass
class Verification:
    """V payload, RFC 3830 6.9."""

    mac_alg: int
    mac: bytes


@dataclass
class Error:
    """ERR payload, RFC 3830 6.12."""

    code: int
    reserved: bytes = b"\x00\x00"


# what a Message carries, in wire order
Payload = Union[Ext, Timestamp, Rand, Id, SecurityPolicy, Kemac, Verification, Error]
_P = TypeVar("_P", Ext, Timestamp, Rand, Id, SecurityPolicy, Kemac, Verification, Error)


@dataclass
class Message:
    """A MIKEY message: the header and the payloads in wire order."""

    header: Header
    payloads: list[Payload]

    def find(self, cls: type[_P]) -> list[_P]:
        """All payloads of class C{cls}, in order."""
        return [p for p in self.payloads if isinstance(p, cls)]


_PAYLOAD_TYPE: dict[type[Payload], int] = {
    Kemac: PT_KEMAC,
    Timestamp: PT_T,
    Id: PT_ID,
    Verification: PT_V,
    SecurityPolicy: PT_SP,
    Rand: PT_RAND,
    Error: PT_ERR,
    Ext: PT_EXT,
}


# ---------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------


def _u8(value: object, what: str) -> int:
    if not isinstance(value, int) or not 0 <= value <= 0xFF:
        raise MikeyError("%s must be 0..255" % (what,))
    return value


def _u16len(data: bytes, what: str) -> int:
    if len(data) > 0xFFFF:
        raise MikeyError("%s longer than 65535 bytes" % (what,))
    return len(data)


def _encode_header(h: Header, next_payload: int) -> bytes:
    # RFC 3830 6.1: version, data type, next payload, V|PRF, CSB ID, #CS,
    # CS ID map type, CS ID map info.
    if not 0 <= h.csb_id <= 0xFFFFFFFF:
        raise MikeyError("CSB ID must be a 32-bit value")
    if not 0 <= h.prf <= 0x7F:
        raise MikeyError("PRF func must be 0..127")
    if h.cs_id_map_type == CS_MAP_EMPTY and h.cs_id_map_info:
        raise MikeyError("the empty CS ID map carries no map info")  # RFC 4563 5
    if h.cs_id_map_type == CS_MAP_SRTP_ID and len(h.cs_id_map_info) != 9 * h.cs_count:
        raise MikeyError("SRTP-ID map info must be 9 bytes per CS")  # RFC 3830 6.1.1
    return (
        struct.pack(
            "!BBBBIBB",
            _u8(h.version, "version"),
            _u8(h.data_type, "data type"),
            next_payload,
            (0x80 if h.v else 0) | h.prf,
            h.csb_id,
            _u8(h.cs_count, "#CS"),
            _u8(h.cs_id_map_type, "CS ID map type"),
        )
        + bytes(h.cs_id_map_info)
    )


def _encode_payload(p: Payload, next_payload: int) -> bytes:
    if isinstance(p, Ext):  # RFC 3830 6.15
        head = struct.pack("!BBH", next_payload, _u8(p.type, "EXT type"),
                           _u16len(p.data, "EXT data"))
        return head + p.data
    if isinstance(p, Timestamp):  # RFC 3830 6.6
        if p.ts_type not in _TS_LEN:
            raise MikeyError("unsupported TS type %r" % (p.ts_type,))
        size = _TS_LEN[p.ts_type]
        if not isinstance(p.value, int) or not 0 <= p.value < (1 << (8 * size)):
            raise MikeyError("TS value does not fit its %d bytes" % (size,))
        return struct.pack("!BB", next_payload, p.ts_type) + p.valueBytes()
    if isinstance(p, Rand):  # RFC 3830 6.11
        if not 1 <= len(p.value) <= 0xFF:
            raise MikeyError("RAND length must be 1..255")
        return struct.pack("!BB", next_payload, len(p.value)) + p.value
    if isinstance(p, Id):  # RFC 3830 6.7
        head = struct.pack("!BBH", next_payload, _u8(p.id_type, "ID type"),
                           _u16len(p.data, "ID data"))
        return head + p.data
    if isinstance(p, SecurityPolicy):  # RFC 3830 6.10
        return (
            struct.pack(
                "!BBBH", next_payload, _u8(p.policy_no, "policy no"), _u8(p.prot_type, "prot type"),
                _u16len(p.params, "SP params"),
            )
            + p.params
        )
    if isinstance(p, Kemac):  # RFC 3830 6.2
        if p.mac_alg not in _MAC_LEN or len(p.mac) != _MAC_LEN[p.mac_alg]:
            raise MikeyError("KEMAC MAC does not match its MAC algorithm")
        return (
            struct.pack("!BBH", next_payload, _u8(p.encr_alg, "encr alg"),
                        _u16len(p.encrypted, "encr data"))
            + p.encrypted
            + bytes([p.mac_alg])
            + p.mac
        )
    if isinstance(p, Verification):  # RFC 3830 6.9
        if p.mac_alg not in _MAC_LEN or len(p.mac) != _MAC_LEN[p.mac_alg]:
            raise MikeyError("V MAC does not match its MAC algorithm")
        return struct.pack("!BB", next_payload, p.mac_alg) + p.mac
    if isinstance(p, Error):  # RFC 3830 6.12
        if len(p.reserved) != 2:
            raise MikeyError("ERR reserved field must be 2 bytes")
        return struct.pack("!BB", next_payload, _u8(p.code, "error no")) + p.reserved
    raise MikeyError("cannot encode payload %s" % (type(p).__name__,))


def encode(message: Message) -> bytes:
    """
    Encode a L{Message}; the next-payload fields are set from the order of
    C{message.payloads}. MAC fields are written as given (see the builders
    below for messages whose MAC covers the message itself).
    """
    types = [_PAYLOAD_TYPE.get(type(p)) for p in message.payloads]
    if None in types:
        raise MikeyError("cannot encode payload of unknown kind")
    codes = cast("list[int]", types)  # no None: refused above
    nexts = codes[1:] + [PT_LAST]
    out = [_encode_header(message.header, codes[0] if codes else PT_LAST)]
    for p, nxt in zip(message.payloads, nexts):
        out.append(_encode_payload(p, nxt))
    data = b"".join(out)
    if len(data) > MAX_MESSAGE_SIZE:
        raise MikeyError("message longer than %d bytes" % (MAX_MESSAGE_SIZE,))
    return data


def encode_key_data(items: Sequence[KeyData]) -> bytes:
    """Encode a list of L{KeyData} sub-payloads (RFC 3830 6.13), chained."""
    out: list[bytes] = []
    for i, k in enumerate(items):
        nxt = PT_KEY_DATA if i + 1 < len(items) else PT_LAST
        if not 0 <= k.key_type <= 0xF or not 0 <= k.kv_type <= 0xF:
            raise MikeyError("key data type and KV must be 4-bit values")
        b = struct.pack("!BBH", nxt, (k.key_type << 4) | k.kv_type,
                        _u16len(k.key, "key data")) + k.key
        if k.key_type in _SALTED:
            if k.salt is None:
                raise MikeyError("key data type with salt needs a salt")
            b += struct.pack("!H", _u16len(k.salt, "salt")) + k.salt
        elif k.salt is not None:
            raise MikeyError("salt given for a key data type without salt")
        if k.kv_type == KV_SPI:
            if len(k.kv_data) > 0xFF:
                raise MikeyError("SPI longer than 255 bytes")
            b += bytes([len(k.kv_data)]) + k.kv_data
        elif k.kv_type == KV_INTERVAL:
            _check_interval(k.kv_data)
            b += k.kv_data
        elif k.kv_type == KV_NULL:
            if k.kv_data:
                raise MikeyError("KV NULL carries no KV data")
        else:
            raise MikeyError("unsupported KV type %r" % (k.kv_type,))
        out.append(b)
    return b"".join(out)


def _check_interval(raw: bytes) -> None:
    r = _Reader(raw, "KV interval")
    r.take(r.u8())
    r.take(r.u8())
    r.done()


# ---------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------


class _Reader:
    """A bounds-checked cursor; every overrun is a MikeyError."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.pos = 0
        self.what = what

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise MikeyError("truncated %s" % (self.what,))
        b = self.data[self.pos : self.pos + n]
        self.pos += n
        return b

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def u32(self) -> int:
        return int.from_bytes(self.take(4), "big")

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def done(self) -> None:
        if self.pos != len(self.data):
            raise MikeyError("%d trailing bytes after %s" % (len(self.data) - self.pos, self.what))


def _parse_header(r: _Reader) -> tuple[Header, int]:
    version = r.u8()
    if version != VERSION:
        raise MikeyError("unsupported MIKEY version %d" % (version,))
    data_type = r.u8()
    if data_type > _MAX_DATA_TYPE:
        raise MikeyError("unknown data type %d" % (data_type,))
    next_payload = r.u8()
    vprf = r.u8()
    csb_id = r.u32()
    cs_count = r.u8()
    map_type = r.u8()
    if map_type == CS_MAP_SRTP_ID:
        # RFC 3830 6.1.1: per CS Policy_no(1) || SSRC(4) || ROC(4).
        info = r.take(9 * cs_count)
    elif map_type == CS_MAP_EMPTY:
        # RFC 4563 5: the empty map carries no map info.
        info = b""
    else:
        raise MikeyError("unsupported CS ID map type %d" % (map_type,))
    hdr = Header(version, data_type, bool(vprf & 0x80), vprf & 0x7F, csb_id, cs_count, map_type,
                 info)
    return hdr, next_payload


def _parse_payload(ptype: int, r: _Reader) -> tuple[Payload, int]:
    """Parse one payload of type C{ptype}; returns (payload, next payload)."""
    nxt = r.u8()
    if ptype == PT_EXT:  # RFC 3830 6.15
        t = r.u8()
        return Ext(t, r.take(r.u16())), nxt
    if ptype == PT_T:  # RFC 3830 6.6
        ts_type = r.u8()
        if ts_type not in _TS_LEN:
            raise MikeyError("unknown TS type %d" % (ts_type,))
        return Timestamp(ts_type, int.from_bytes(r.take(_TS_LEN[ts_type]), "big")), nxt
    if ptype == PT_RAND:  # RFC 3830 6.11
        n = r.u8()
        if n == 0:
            raise MikeyError("empty RAND")
        return Rand(r.take(n)), nxt
    if ptype == PT_ID:  # RFC 3830 6.7
        id_type = r.u8()
        if id_type not in (ID_NAI, ID_URI, ID_BYTES):
            raise MikeyError("unknown ID type %d" % (id_type,))
        return Id(id_type, r.take(r.u16())), nxt
    if ptype == PT_SP:  # RFC 3830 6.10
        policy_no, prot_type = r.u8(), r.u8()
        params = r.take(r.u16())
        pr = _Reader(params, "SP parameters")
        while pr.remaining():
            pr.u8()
            pr.take(pr.u8())
        return SecurityPolicy(policy_no, prot_type, params), nxt
    if ptype == PT_KEMAC:  # RFC 3830 6.2
        encr_alg = r.u8()
        if encr_alg not in (ENCR_NULL, ENCR_AES_CM_128, ENCR_AES_KW_128):
            raise MikeyError("unknown KEMAC encryption algorithm %d" % (encr_alg,))
        encrypted = r.take(r.u16())
        mac_alg = r.u8()
        if mac_alg not in _MAC_LEN:
            raise MikeyError("unknown KEMAC MAC algorithm %d" % (mac_alg,))
        return Kemac(encr_alg, encrypted, mac_alg, r.take(_MAC_LEN[mac_alg])), nxt
    if ptype == PT_V:  # RFC 3830 6.9
        mac_alg = r.u8()
        if mac_alg not in _MAC_LEN:
            raise MikeyError("unknown V MAC algorithm %d" % (mac_alg,))
        return Verification(mac_alg, r.take(_MAC_LEN[mac_alg])), nxt
    if ptype == PT_ERR:  # RFC 3830 6.12
        return Error(r.u8(), r.take(2)), nxt
    raise MikeyError("unsupported payload type %d" % (ptype,))


def parse_message(data: object) -> Message:
    """
    Parse a MIKEY message strictly: walk the next-payload chain from the
    header to a 0, refuse unknown or unsupported payloads, lengths that do
    not fit, bytes after the last payload, and messages over
    L{MAX_MESSAGE_SIZE}. Raises only L{MikeyError}.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MikeyError("MIKEY message must be bytes")
    data = bytes(data)
    if len(data) > MAX_MESSAGE_SIZE:
        raise MikeyError("message longer than %d bytes" % (MAX_MESSAGE_SIZE,))
    r = _Reader(data, "MIKEY message")
    header, nxt = _parse_header(r)
    payloads: list[Payload] = []
    while nxt != PT_LAST:
        if r.remaining() == 0:
            raise MikeyError("payload chain does not end (truncated message)")
        p, nxt = _parse_payload(nxt, r)
        payloads.append(p)
    r.done()
    return Message(header, payloads)


def parse_key_data(data: bytes) -> list[KeyData]:
    """Parse the (decrypted) KEMAC encr data: a chain of Key data sub-payloads."""
    r = _Reader(bytes(data), "key data")
    items: list[KeyData] = []
    nxt = PT_KEY_DATA
    while nxt != PT_LAST:
        if nxt != PT_KEY_DATA:
            raise MikeyError("unexpected sub-payload %d inside KEMAC" % (nxt,))
        nxt = r.u8()
        tkv = r.u8()
        key_type, kv_type = tkv >> 4, tkv & 0x0F
        if key_type > KEY_TEK_SALT:
            raise MikeyError("unknown key data type %d" % (key_type,))
        key = r.take(r.u16())
        salt = r.take(r.u16()) if key_type in _SALTED else None
        if kv_type == KV_NULL:
            kv = b""
        elif kv_type == KV_SPI:
            kv = r.take(r.u8())
        elif kv_type == KV_INTERVAL:
            start = r.pos
            r.take(r.u8())
            r.take(r.u8())
            kv = r.data[start : r.pos]
        else:
            raise MikeyError("unknown KV type %d" % (kv_type,))
        items.append(KeyData(key_type, kv_type, key, salt, kv))
    r.done()
    return items


# ---------------------------------------------------------------------------
# Crypto: RFC 3830 4.1.2 (PRF), 4.1.4 (PSK keys), 4.2.3 (AES-CM), 4.2.4/5.2 (MACs)
# ---------------------------------------------------------------------------


_IPAD = bytes(b ^ 0x36 for b in range(256))
_OPAD = bytes(b ^ 0x5C for b in range(256))


class _HmacSha1:
    """
    HMAC-SHA-1 (RFC 2104) under one key, its two padded key blocks hashed
    once: each MAC then costs two hash copies. OpenSSL 3's one-shot HMAC
    looks its algorithm up on every call (about 3 times the cost here), and
    a message's keys are used 2 to 6 times each (RFC 3830 4.1.2, 5.1, 5.2).
    """

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes):
        if len(key) > 64:
            key = hashlib.sha1(key).digest()
        key = bytes(key).ljust(64, b"\0")
        self._inner = hashlib.sha1(key.translate(_IPAD))
        self._outer = hashlib.sha1(key.translate(_OPAD))

    def __call__(self, data: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(data)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


def _hmac_sha1(key: bytes, data: bytes) -> bytes:
    return _HmacSha1(key)(data)


def _p(mac: _HmacSha1, label: bytes, m: int) -> bytes:
    # RFC 3830 4.1.2: A_0 = label, A_i = HMAC(s, A_{i-1}); output the
    # concatenation of HMAC(s, A_i || label) for i = 1..m.
    a = label
    out: list[bytes] = []
    for _ in range(m):
        a = mac(a)
        out.append(mac(a + label))
    return b"".join(out)


def _prf_macs(inkey: bytes) -> list[_HmacSha1]:
    # RFC 3830 4.1.2: the P-function's keys, C{inkey} in 256-bit blocks (the last may be shorter)
    if not inkey:
        raise MikeyError("PRF input key must not be empty")
    return [_HmacSha1(inkey[i : i + 32]) for i in range(0, len(inkey), 32)]


def _prf(macs: list[_HmacSha1], label: bytes, out_bits: int) -> bytes:
    if out_bits <= 0 or out_bits % 8:
        raise MikeyError("PRF output length must be a positive multiple of 8 bits")
    m = math.ceil(out_bits / 160)
    acc = _p(macs[0], label, m)
    for mac in macs[1:]:
        block = _p(mac, label, m)
        acc = (int.from_bytes(acc, "big") ^ int.from_bytes(block, "big")).to_bytes(20 * m, "big")
    return acc[: out_bits // 8]


def prf(inkey: bytes, label: bytes, out_bits: int) -> bytes:
    """
    The MIKEY-1 PRF (RFC 3830 4.1.2): split C{inkey} into 256-bit blocks
    (the last may be shorter), run the P-function with each and XOR the
    results; return the first C{out_bits} bits (a multiple of 8).
    """
    return _prf(_prf_macs(inkey), label, out_bits)


def derive_psk_keys(psk: bytes, csb_id: int, rand: bytes) -> tuple[bytes, bytes, bytes]:
    """
    The KEMAC keys from a pre-shared key (RFC 3830 4.1.4): label = constant
    || 0xFF || CSB ID || RAND. Returns (encr_key 16 bytes, auth_key 20 bytes,
    salt_key 14 bytes).
    """
    tail = b"\xff" + struct.pack("!I", csb_id) + bytes(rand)
    if 0 < len(psk) <= 32:
        # one 256-bit key block, and each key fits one P block (<= 160 bits):
        # PRF = HMAC(s, A_1 || label), A_1 = HMAC(s, label) (4.1.2)
        mac = _HmacSha1(psk)
        labels = [c + tail for c in _PSK_CONSTANTS]
        encr, auth, salt = (mac(mac(label) + label) for label in labels)
        return encr[: ENCR_KEY_BITS // 8], auth[: AUTH_KEY_BITS // 8], salt[: SALT_KEY_BITS // 8]
    macs = _prf_macs(psk)
    encr = _prf(macs, struct.pack("!I", _C_ENCR) + tail, ENCR_KEY_BITS)
    auth = _prf(macs, struct.pack("!I", _C_AUTH) + tail, AUTH_KEY_BITS)
    salt = _prf(macs, struct.pack("!I", _C_SALT) + tail, SALT_KEY_BITS)
    return encr, auth, salt


def aes_cm_iv(salt_key: bytes, csb_id: int, t_value: int) -> bytes:
    """
    The AES-CM-128 IV of RFC 3830 4.2.3: (salt XOR (0x0000 || CSB ID || T))
    || 0x0000, with T the 8-byte TS value (a 32-bit COUNTER right-aligned).
    """
    if len(salt_key) != 14:
        raise MikeyError("AES-CM salt key must be 14 bytes")
    if not 0 <= t_value < 1 << 64:
        raise MikeyError("T value does not fit 64 bits")
    if not 0 <= csb_id <= 0xFFFFFFFF:
        raise MikeyError("CSB ID must be a 32-bit value")
    mask = (csb_id << 64) | t_value  # 0x0000 || CSB ID || T, as a 14-byte integer
    return (int.from_bytes(salt_key, "big") ^ mask).to_bytes(14, "big") + b"\x00\x00"


def aes_cm(encr_key: bytes, salt_key: bytes, csb_id: int, t_value: int, data: bytes) -> bytes:
    """AES-CM-128 (counter mode) over C{data}; encryption and decryption alike."""
    iv = aes_cm_iv(salt_key, csb_id, t_value)
    ctx = Cipher(algorithms.AES(encr_key), modes.CTR(iv)).encryptor()
    return ctx.update(data) + ctx.finalize()


def _mac_last(unsigned: bytes, auth_key: bytes) -> bytes:
    """
    Replace the trailing 20 placeholder MAC bytes of C{unsigned} by the
    HMAC-SHA-1-160 over everything before them (RFC 3830 5.1, 6.2).
    """
    body = unsigned[:-20]
    return body + _hmac_sha1(auth_key, body)


def _check_mac(expected_input: bytes, auth_key: bytes, mac: bytes) -> None:
    if not hmac.compare_digest(_hmac_sha1(auth_key, expected_input), mac):
        raise MacError("MAC verification failed")


# ---------------------------------------------------------------------------
# mbmsd profile 1 (docs/design.md 7.7; values in mbmsd.profile)
# ---------------------------------------------------------------------------


@dataclass
class KeyId:
    """
    The Key ID information of an MBMS message's EXT payload (RFC 4563 4): the
    MBMS Key Domain ID, the MSK ID and, in an MTK message, the MTK ID.
    """

    key_domain_id: bytes
    msk_id: bytes
    mtk_id: bytes | None = None


@dataclass
class MskDelivery:
    """What a UE learns from a verified MSK message."""

    key_domain_id: bytes
    msk_id: bytes
    msk: bytes = field(repr=False)
    counter: int
    rand: bytes
    idi: bytes
    idr: bytes
    csb_id: int
    v: bool
    # a streaming service's SRTP policy (RFC 4563 7), None for download
    policy: SecurityPolicy | None = None


@dataclass
class MtkDelivery:
    """What a UE learns from a verified MTK message."""

    key_domain_id: bytes
    msk_id: bytes
    mtk_id: bytes
    mtk: bytes = field(repr=False)
    salt: bytes | None = field(repr=False)
    counter: int
    rand: bytes
    csb_id: int


def _need(value: object, size: int, what: str) -> bytes:
    if not isinstance(value, (bytes, bytearray)) or len(value) != size:
        raise MikeyError("%s must be %d bytes" % (what, size))
    return bytes(value)


def _need_counter(counter: object) -> int:
    if not isinstance(counter, int) or not 0 <= counter <= 0xFFFFFFFF:
        raise MikeyError("counter must be a 32-bit value")
    return counter


def csb_id_for(msk_id: bytes) -> int:
    """CSB ID of MSK and MTK messages: the MSK ID as a 32-bit integer (docs/design.md 7.7)."""
    return int.from_bytes(_need(msk_id, profile.MSK_ID_LEN, "MSK ID"), "big")


# RFC 4563 Table 2 Key ID Type -> (its name in errors, its length in octets).
_KEY_IDS = {
    profile.KEY_ID_TYPE_KEY_DOMAIN_ID: ("MBMS Key Domain ID", profile.KEY_DOMAIN_ID_LEN),
    profile.KEY_ID_TYPE_MSK_ID: ("MSK ID", profile.MSK_ID_LEN),
    profile.KEY_ID_TYPE_MTK_ID: ("MTK ID", profile.MTK_ID_LEN),
}


def encode_key_id(key_domain_id: bytes, msk_id: bytes, mtk_id: bytes | None = None) -> bytes:
    """
    The EXT data of Key ID information (RFC 4563 4, Figure 2): a Key ID Type
    sub-payload, Key ID Type (8 bits) || Key ID Length (8 bits) || Key ID,
    for each of the Key Domain ID (type 0), the MSK ID (type 1) and, when
    given, the MTK ID (type 2), in the order of profile.KEY_ID_ORDER.
    """
    values = {
        profile.KEY_ID_TYPE_KEY_DOMAIN_ID: key_domain_id,
        profile.KEY_ID_TYPE_MSK_ID: msk_id,
        profile.KEY_ID_TYPE_MTK_ID: mtk_id,
    }
    out: list[bytes] = []
    for key_id_type in profile.KEY_ID_ORDER:
        value = values[key_id_type]
        if value is None:
            continue
        name, size = _KEY_IDS[key_id_type]
        out.append(bytes([key_id_type, size]) + _need(value, size, name))
    return b"".join(out)


def parse_key_id(data: bytes, need_mtk_id: bool | None = None) -> KeyId:
    """
    Parse the EXT data of Key ID information (RFC 4563 4) into a L{KeyId}:
    Key ID Type sub-payloads in any order, each type at most once, only the
    types of RFC 4563 Table 2, each of its profile length. The Key Domain ID
    and the MSK ID must be there; C{need_mtk_id} True requires the MTK ID
    (an MTK message), False refuses it (an MSK message), None takes either.
    """
    r = _Reader(bytes(data), "Key ID information")
    seen: dict[int, bytes] = {}
    while r.remaining():
        key_id_type = r.u8()
        if r.remaining() == 0:
            raise MikeyError("Key ID Type %d sub-payload has no Key ID Length" % (key_id_type,))
        length = r.u8()
        if key_id_type not in _KEY_IDS:
            raise MikeyError("unknown Key ID Type %d" % (key_id_type,))
        name, size = _KEY_IDS[key_id_type]
        if key_id_type in seen:
            raise MikeyError("duplicate %s (Key ID Type %d)" % (name, key_id_type))
        if length > r.remaining():
            raise MikeyError("%s length %d overruns the Key ID information" % (name, length))
        if length != size:
            raise MikeyError("%s must be %d octets, not %d" % (name, size, length))
        seen[key_id_type] = r.take(length)
    for key_id_type in (profile.KEY_ID_TYPE_KEY_DOMAIN_ID, profile.KEY_ID_TYPE_MSK_ID):
        if key_id_type not in seen:
            raise MikeyError("Key ID information has no %s" % (_KEY_IDS[key_id_type][0],))
    has_mtk_id = profile.KEY_ID_TYPE_MTK_ID in seen
    if need_mtk_id is True and not has_mtk_id:
        raise MikeyError("Key ID information of an MTK message has no MTK ID")
    if need_mtk_id is False and has_mtk_id:
        raise MikeyError("Key ID information of an MSK message carries an MTK ID")
    return KeyId(seen[profile.KEY_ID_TYPE_KEY_DOMAIN_ID], seen[profile.KEY_ID_TYPE_MSK_ID],
                 seen.get(profile.KEY_ID_TYPE_MTK_ID))


def _profile_header(data_type: int, v: bool, csb_id: int, streaming: bool = False) -> Header:
    if streaming:
        # RFC 3830 6.1.1 SRTP-ID map naming the SP payload (profile, UNVERIFIED)
        return Header(VERSION, data_type, v, profile.PRF_FUNC, csb_id, profile.STREAMING_CS_COUNT,
                      profile.STREAMING_CS_ID_MAP_TYPE, _SRTP_MAP_INFO)
    return Header(
        version=VERSION,
        data_type=data_type,
        v=v,
        prf=profile.PRF_FUNC,
        csb_id=csb_id,
        cs_count=profile.CS_COUNT,
        cs_id_map_type=profile.CS_ID_MAP_TYPE,
    )


# Policy_no || SSRC || ROC of the one crypto session (RFC 3830 6.1.1)
_SRTP_MAP_INFO = struct.pack("!BII", profile.SRTP_POLICY_NO, profile.SRTP_MAP_SSRC,
                             profile.SRTP_MAP_ROC)


def srtp_policy() -> SecurityPolicy:
    """
    The SP payload (RFC 3830 6.10) of a streaming service's MSK message:
    protocol type SRTP and the profile's SRTP parameters (RFC 3830 6.10.1,
    each type || length || value).
    """
    params = b"".join(bytes([t, 1, v]) for t, v in profile.SRTP_POLICY_PARAMS)
    return SecurityPolicy(profile.SRTP_POLICY_NO, profile.SRTP_PROT_TYPE, params)


def _protected_message(
    psk: bytes, header: Header, payloads: list[Payload], key_items: Sequence[KeyData],
    counter: int, rand: bytes,
) -> bytes:
    """Encode HDR + payloads + KEMAC(AES-CM-128 of key_items, HMAC-SHA-1-160)."""
    return _protected_message_and_auth(psk, header, payloads, key_items, counter, rand)[0]


def _protected_message_and_auth(
    psk: bytes, header: Header, payloads: list[Payload], key_items: Sequence[KeyData],
    counter: int, rand: bytes,
) -> tuple[bytes, bytes]:
    """L{_protected_message}, and the auth key it was MACed with."""
    encr, auth, salt = derive_psk_keys(psk, header.csb_id, rand)
    plain = encode_key_data(key_items)
    encrypted = aes_cm(encr, salt, header.csb_id, counter, plain)
    kemac = Kemac(profile.ENCR_ALG, encrypted, profile.MAC_ALG, bytes(20))
    return _mac_last(encode(Message(header, payloads + [kemac])), auth), auth


def build_msk_message(
    muk: bytes, key_domain_id: bytes, msk_id: bytes, msk: bytes, counter: int, rand: bytes,
    idi: bytes, idr: bytes, v: bool = profile.MSK_V_DEFAULT, streaming: bool = False,
) -> bytes:
    """
    The MSK message (BM-SC -> UE) of docs/design.md 7.7: HDR, EXT (Key ID: Key
    Domain ID, MSK ID; RFC 4563 4), T (COUNTER), RAND, IDi, IDr, KEMAC
    carrying the MSK as TGK with KV = SPI = MSK ID, protected with keys
    derived from the MUK. With C{streaming}, the SRTP policy (SP, see
    L{srtp_policy}) before the KEMAC and the SRTP-ID map naming it
    (RFC 4563 7).
    """
    return build_msk_message_expecting(muk, key_domain_id, msk_id, msk, counter, rand, idi, idr, v,
                                       streaming)[0]


@dataclass(frozen=True)
class ExpectedVerification:
    """
    What the verification of one MSK message must show (RFC 3830 5.2,
    docs/design.md 7.7), kept by the sender so that L{check_expected_verification}
    neither re-opens its own MSK message nor derives its keys again.

    C{message} is the one byte string that passes: every field of the
    verification message is fixed by the MSK message (header, echoed T, V
    with HMAC-SHA-1-160) and the MAC by its auth key, so a sender may match
    answers by equality (C{check_expected_verification} decides the same).
    """

    csb_id: int
    counter: int
    ids: bytes  # IDi data || IDr data (or b"" when the profile's MAC leaves them out)
    auth_key: bytes = field(repr=False)
    message: bytes = field(default=b"", repr=False)


class MskMessageTemplate:
    """
    The MSK messages of one MSK from one BM-SC (docs/design.md 7.7), with what is the
    same for every UE (HDR, EXT Key ID, IDi, the key data to encrypt) encoded
    once; L{build} fills in T, RAND, IDr and the KEMAC for one UE's MUK. A
    rotation pushes one MSK to every registered UE, so this is its hot path.
    """

    def __init__(
        self, key_domain_id: bytes, msk_id: bytes, msk: bytes, idi: bytes,
        v: bool = profile.MSK_V_DEFAULT, streaming: bool = False,
    ) -> None:
        msk_id = _need(msk_id, profile.MSK_ID_LEN, "MSK ID")
        msk = _need(msk, 16, "MSK")
        self.csb_id = csb_id_for(msk_id)
        header = _profile_header(profile.MSK_DATA_TYPE, bool(v), self.csb_id, streaming)
        ext = Ext(profile.EXT_TYPE_KEY_ID, encode_key_id(key_domain_id, msk_id))
        self._idi = bytes(idi)
        # the payload chain HDR, EXT, T, RAND, IDi, IDr, KEMAC (profile.MSK_MESSAGE_PAYLOADS)
        self._head = _encode_header(header, PT_EXT) + _encode_payload(ext, PT_T)
        self._idiPayload = _encode_payload(Id(profile.IDI_TYPE, self._idi), PT_ID)
        # IDr, then SP (streaming, RFC 4563 7) or KEMAC
        self._afterIdr = PT_SP if streaming else PT_KEMAC
        self._sp = _encode_payload(srtp_policy(), PT_KEMAC) if streaming else b""
        self._plain = encode_key_data(
            [KeyData(profile.MSK_KEY_TYPE, profile.KEY_VALIDITY_TYPE, msk, kv_data=msk_id)])
        # KEMAC up to its encr data (AES-CM keeps the length), and the MAC algorithm after it
        self._kemacHead = struct.pack("!BBH", PT_LAST, profile.ENCR_ALG,
                                      _u16len(self._plain, "encr data"))
        self._macAlg = bytes([_u8(profile.MAC_ALG, "MAC alg")])
        if profile.MAC_ALG != MAC_HMAC_SHA1_160:
            raise MikeyError("MSK messages are protected with HMAC-SHA-1-160")
        # the UE's verification: HDR (data type 1, V=0, same CSB ID), T, V head
        self._answerHead = _encode_header(
            _profile_header(profile.VERIFICATION_DATA_TYPE, False, self.csb_id), PT_T)
        self._answerVHead = struct.pack("!BB", PT_LAST, MAC_HMAC_SHA1_160)
        # the per-UE payloads' heads (RFC 3830 6.6 T, 6.11 RAND, 6.7 IDr), written by hand in build
        if profile.TS_TYPE not in _TS_LEN:
            raise MikeyError("unsupported TS type %r" % (profile.TS_TYPE,))
        self._tsLen = _TS_LEN[profile.TS_TYPE]
        self._tsHead = struct.pack("!BB", PT_RAND, profile.TS_TYPE)
        self._randHead = struct.pack("!BB", PT_ID, profile.RAND_LEN)
        self._idrHead = struct.pack("!BB", self._afterIdr, _u8(profile.IDR_TYPE, "ID type"))
        self._answerTHead = struct.pack("!BB", PT_V, profile.TS_TYPE)

    def build(
        self, muk: bytes, counter: int, rand: bytes, idr: bytes,
    ) -> tuple[bytes, ExpectedVerification]:
        """
        @return: (the MSK message for C{idr} under C{muk}, its
            L{ExpectedVerification}).
        """
        rand = _need(rand, profile.RAND_LEN, "RAND")
        counter = _need_counter(counter)
        if not muk:
            raise MikeyError("MUK must not be empty")
        idr = bytes(idr)
        if len(idr) > 0xFFFF:
            raise MikeyError("ID data longer than 65535 bytes")
        encr, auth, salt = derive_psk_keys(muk, self.csb_id, rand)
        tv = counter.to_bytes(self._tsLen, "big")
        body = b"".join((
            self._head, self._tsHead, tv, self._randHead, rand, self._idiPayload,
            self._idrHead, struct.pack("!H", len(idr)), idr, self._sp, self._kemacHead,
            aes_cm(encr, salt, self.csb_id, counter, self._plain), self._macAlg))
        if len(body) + 20 > MAX_MESSAGE_SIZE:
            raise MikeyError("message longer than %d bytes" % (MAX_MESSAGE_SIZE,))
        ids = self._idi + idr if profile.VERIFICATION_MAC_INCLUDES_IDS else b""
        # RFC 3830 5.2 as docs/design.md 7.7 reads it (see _verification_mac_input)
        answer = self._answerHead + self._answerTHead + tv + self._answerVHead
        mac = _HmacSha1(auth)
        answer += mac(answer + ids + tv)
        return (body + mac(body),
                ExpectedVerification(self.csb_id, counter, ids, auth, answer))


def build_msk_message_expecting(
    muk: bytes, key_domain_id: bytes, msk_id: bytes, msk: bytes, counter: int, rand: bytes,
    idi: bytes, idr: bytes, v: bool = profile.MSK_V_DEFAULT, streaming: bool = False,
) -> tuple[bytes, ExpectedVerification]:
    """
    L{build_msk_message}, and the L{ExpectedVerification} of the UE's answer:
    C{check_expected_verification(expected, data)} then decides exactly as
    C{check_verification(muk, message, data)} does.
    """
    return MskMessageTemplate(key_domain_id, msk_id, msk, idi, v, streaming).build(
        muk, counter, rand, idr)


def _expect_chain(message: Message, chain: Iterable[int], what: str) -> None:
    got = tuple(_PAYLOAD_TYPE[type(p)] for p in message.payloads)
    if got != tuple(chain):
        raise MikeyError("%s payload order %r is not the profile's %r" % (what, got, tuple(chain)))


def _open_protected(
    psk: bytes, data: bytes, chain: Sequence[int], data_type: int, what: str,
    last_counter: int | None, need_mtk_id: bool | None,
    streamingChain: Sequence[int] | None = None,
) -> tuple[Message, KeyId, int, bytes, KeyData, bytes]:
    """
    Common checks of MSK and MTK messages: framing, MAC first, then the
    profile's header and payload chain, the counter, decryption and the
    Key ID EXT. Returns (message, KeyId, counter, rand, key data items).
    """
    if not psk:
        raise MikeyError("key must not be empty")
    msg = parse_message(data)
    data = bytes(data)
    # The MAC needs RAND (key derivation) and the trailing KEMAC.
    rands = msg.find(Rand)
    kemac = msg.payloads[-1] if msg.payloads else None
    if len(rands) != 1 or not isinstance(kemac, Kemac):
        raise MikeyError("%s needs one RAND and a final KEMAC" % (what,))
    if kemac.mac_alg != MAC_HMAC_SHA1_160:
        raise MikeyError("%s must be protected with HMAC-SHA-1-160" % (what,))
    hdr = msg.header
    encr, auth, salt = derive_psk_keys(psk, hdr.csb_id, rands[0].value)
    # RFC 3830 5.1 / 6.2: the MAC covers the whole message up to the MAC.
    _check_mac(data[:-20], auth, kemac.mac)

    if streamingChain is not None and hdr.cs_id_map_type == profile.STREAMING_CS_ID_MAP_TYPE:
        # a streaming service's MSK: the SRTP-ID map and its SP (RFC 4563 7)
        counts = (profile.STREAMING_CS_COUNT, profile.STREAMING_CS_ID_MAP_TYPE)
        chain = streamingChain
        if hdr.cs_id_map_info != _SRTP_MAP_INFO:
            raise MikeyError("%s SRTP-ID map does not follow the profile" % (what,))
    else:
        counts = (profile.CS_COUNT, profile.CS_ID_MAP_TYPE)
    profiled = (data_type, profile.PRF_FUNC) + counts
    if (hdr.data_type, hdr.prf, hdr.cs_count, hdr.cs_id_map_type) != profiled:
        raise MikeyError("%s header does not follow the profile" % (what,))
    _expect_chain(msg, chain, what)
    ext = msg.find(Ext)[0]
    t = msg.find(Timestamp)[0]
    rand = rands[0].value
    if ext.type != profile.EXT_TYPE_KEY_ID:
        raise MikeyError("%s EXT is not Key ID information" % (what,))
    if t.ts_type != profile.TS_TYPE:
        raise MikeyError("%s timestamp is not a COUNTER" % (what,))
    if len(rand) != profile.RAND_LEN:
        raise MikeyError("%s RAND must be %d bytes" % (what, profile.RAND_LEN))
    if kemac.encr_alg != profile.ENCR_ALG:
        raise MikeyError("%s KEMAC is not AES-CM-128" % (what,))
    key_id = parse_key_id(ext.data, need_mtk_id)
    if hdr.csb_id != int.from_bytes(key_id.msk_id, "big"):
        raise MikeyError("%s CSB ID does not match the MSK ID" % (what,))
    # TS 33.246 / RFC 3830 5.4 replay protection, per MUK or per MSK.
    if last_counter is not None and t.value <= last_counter:
        raise ReplayError("%s counter %d is not larger than %d" % (what, t.value, last_counter))
    items = parse_key_data(aes_cm(encr, salt, hdr.csb_id, t.value, kemac.encrypted))
    if len(items) != 1:
        raise MikeyError("%s must carry exactly one key" % (what,))
    return msg, key_id, t.value, rand, items[0], auth


def parse_msk_message(muk: bytes, data: bytes, last_counter: int | None = None) -> MskDelivery:
    """
    Verify and open an MSK message with the MUK. The MAC is checked first
    (L{MacError}); a counter not larger than C{last_counter} raises
    L{ReplayError}; anything else that does not fit the profile raises
    L{MikeyError}. Returns an L{MskDelivery}.
    """
    return _parse_msk_message_and_auth(muk, data, last_counter)[0]


def _parse_msk_message_and_auth(
    muk: bytes, data: bytes, last_counter: int | None = None,
) -> tuple[MskDelivery, bytes]:
    """L{parse_msk_message}, and the auth key derived to check it."""
    msg, key_id, counter, rand, key, auth = _open_protected(
        muk, data, profile.MSK_MESSAGE_PAYLOADS, profile.MSK_DATA_TYPE, "MSK message", last_counter,
        need_mtk_id=False, streamingChain=profile.STREAMING_MSK_MESSAGE_PAYLOADS,
    )
    policies = msg.find(SecurityPolicy)
    if policies and policies[0] != srtp_policy():
        raise MikeyError("MSK message SRTP policy is not the profile's (RFC 3830 6.10.1)")
    idi, idr = msg.find(Id)
    if (idi.id_type, idr.id_type) != (profile.IDI_TYPE, profile.IDR_TYPE):
        raise MikeyError("MSK message ID types do not follow the profile")
    expected = (profile.MSK_KEY_TYPE, profile.KEY_VALIDITY_TYPE, key_id.msk_id)
    if (key.key_type, key.kv_type, key.kv_data) != expected:
        raise MikeyError("MSK key data does not match the Key ID")
    if len(key.key) != 16:
        raise MikeyError("MSK must be 16 bytes")
    return MskDelivery(
        key_domain_id=key_id.key_domain_id,
        msk_id=key_id.msk_id,
        msk=key.key,
        counter=counter,
        rand=rand,
        idi=idi.data,
        idr=idr.data,
        csb_id=msg.header.csb_id,
        v=msg.header.v,
        policy=policies[0] if policies else None,
    ), auth


def _verification_mac_input(unsigned_body: bytes, delivery: MskDelivery, t_bytes: bytes) -> bytes:
    # RFC 3830 5.2 as docs/design.md 7.7 reads it: message up to the MAC || IDi data
    # || IDr data || TS value of the MSK message (UNVERIFIED order, profile).
    ids = delivery.idi + delivery.idr if profile.VERIFICATION_MAC_INCLUDES_IDS else b""
    return unsigned_body + ids + t_bytes


def build_verification(muk: bytes, msk_message: bytes) -> bytes:
    """
    The UE's verification message for C{msk_message} (which is verified
    first): HDR (data type 1, same CSB ID), T (echo), V (HMAC-SHA-1-160).
    """
    return _verification_for(*_parse_msk_message_and_auth(muk, msk_message))


def answer_msk_message(
    muk: bytes, data: bytes, last_counter: int | None = None,
) -> tuple[MskDelivery, bytes | None]:
    """
    What a UE does with an MSK message: L{parse_msk_message}, and, when V
    is set, the verification message that L{build_verification} builds,
    with one parse and one key derivation for both.
    @return: (L{MskDelivery}, the verification message or None).
    """
    delivery, auth = _parse_msk_message_and_auth(muk, data, last_counter)
    return delivery, (_verification_for(delivery, auth) if delivery.v else None)


def _verification_for(delivery: MskDelivery, auth: bytes) -> bytes:
    t = Timestamp(profile.TS_TYPE, delivery.counter)
    header = _profile_header(profile.VERIFICATION_DATA_TYPE, False, delivery.csb_id)
    unsigned = encode(Message(header, [t, Verification(MAC_HMAC_SHA1_160, bytes(20))]))
    body = unsigned[:-20]
    return body + _hmac_sha1(auth, _verification_mac_input(body, delivery, t.valueBytes()))


def check_verification(muk: bytes, msk_message: bytes, verification: bytes) -> None:
    """
    Check the UE's answer to C{msk_message}: L{MacError} when the V MAC is
    wrong, L{MikeyError} when the message is malformed or does not echo the
    MSK message.
    """
    delivery, auth = _parse_msk_message_and_auth(muk, msk_message)
    ids = delivery.idi + delivery.idr if profile.VERIFICATION_MAC_INCLUDES_IDS else b""
    check_expected_verification(ExpectedVerification(delivery.csb_id, delivery.counter, ids, auth),
                                verification)


def check_expected_verification(expected: ExpectedVerification, verification: bytes) -> None:
    """
    L{check_verification} against an L{ExpectedVerification} (from
    L{build_msk_message_expecting}): same checks, same errors.
    """
    msg = parse_message(verification)
    vs = msg.find(Verification)
    if not msg.payloads or not isinstance(msg.payloads[-1], Verification) or len(vs) != 1:
        raise MikeyError("verification message needs a final V payload")
    if vs[0].mac_alg != MAC_HMAC_SHA1_160:
        raise MikeyError("verification message must use HMAC-SHA-1-160")
    sent_t = Timestamp(profile.TS_TYPE, expected.counter).valueBytes()
    verification = bytes(verification)
    # RFC 3830 5.2 as docs/design.md 7.7 reads it (see _verification_mac_input)
    _check_mac(verification[:-20] + expected.ids + sent_t, expected.auth_key, vs[0].mac)
    hdr = msg.header
    want = (
        profile.VERIFICATION_DATA_TYPE,
        expected.csb_id,
        profile.PRF_FUNC,
        False,
        profile.CS_COUNT,
        profile.CS_ID_MAP_TYPE,
    )
    if (hdr.data_type, hdr.csb_id, hdr.prf, hdr.v, hdr.cs_count, hdr.cs_id_map_type) != want:
        raise MikeyError("verification header does not match the MSK message")
    _expect_chain(msg, profile.VERIFICATION_MESSAGE_PAYLOADS, "verification message")
    t = msg.find(Timestamp)[0]
    if (t.ts_type, t.value) != (profile.TS_TYPE, expected.counter):
        raise MikeyError("verification message does not echo the MSK message's T")


def build_mtk_message(
    msk: bytes, key_domain_id: bytes, msk_id: bytes, mtk_id: bytes, mtk: bytes,
    salt: bytes | None, counter: int, rand: bytes,
) -> bytes:
    """
    The MTK message of docs/design.md 7.7 (V=0): HDR, EXT (Key ID: Key Domain ID,
    MSK ID, MTK ID; RFC 4563 4), T (COUNTER per MSK), RAND, KEMAC carrying
    the MTK as TEK (TEK+SALT when C{salt} is given) with KV = SPI = MTK ID,
    protected with keys derived from the MSK.
    """
    msk_id = _need(msk_id, profile.MSK_ID_LEN, "MSK ID")
    mtk_id = _need(mtk_id, profile.MTK_ID_LEN, "MTK ID")
    mtk = _need(mtk, 16, "MTK")
    if salt is not None:
        salt = _need(salt, 14, "MTK salt")
    rand = _need(rand, profile.RAND_LEN, "RAND")
    counter = _need_counter(counter)
    msk = _need(msk, 16, "MSK")
    header = _profile_header(profile.MTK_DATA_TYPE, profile.MTK_V, csb_id_for(msk_id))
    payloads: list[Payload] = [
        Ext(profile.EXT_TYPE_KEY_ID, encode_key_id(key_domain_id, msk_id, mtk_id)),
        Timestamp(profile.TS_TYPE, counter),
        Rand(rand),
    ]
    key_type = profile.MTK_KEY_TYPE if salt is None else profile.MTK_KEY_TYPE_SALT
    key = KeyData(key_type, profile.KEY_VALIDITY_TYPE, mtk, salt, kv_data=mtk_id)
    return _protected_message(msk, header, payloads, [key], counter, rand)


def parse_mtk_message(msk: bytes, data: bytes, last_counter: int | None = None) -> MtkDelivery:
    """
    Verify and open an MTK message with the MSK (errors as in
    L{parse_msk_message}). Returns an L{MtkDelivery}.
    """
    msg, key_id, counter, rand, key, _ = _open_protected(
        msk, data, profile.MTK_MESSAGE_PAYLOADS, profile.MTK_DATA_TYPE, "MTK message", last_counter,
        need_mtk_id=True,
    )
    if msg.header.v != profile.MTK_V:
        raise MikeyError("MTK message must not ask for verification")
    if key.key_type not in (profile.MTK_KEY_TYPE, profile.MTK_KEY_TYPE_SALT):
        raise MikeyError("MTK key data type does not follow the profile")
    if (key.kv_type, key.kv_data) != (profile.KEY_VALIDITY_TYPE, key_id.mtk_id):
        raise MikeyError("MTK key data does not match the Key ID")
    if len(key.key) != 16 or (key.salt is not None and len(key.salt) != 14):
        raise MikeyError("MTK must be 16 bytes, its salt 14")
    assert key_id.mtk_id is not None  # need_mtk_id
    return MtkDelivery(
        key_domain_id=key_id.key_domain_id,
        msk_id=key_id.msk_id,
        mtk_id=key_id.mtk_id,
        mtk=key.key,
        salt=key.salt,
        counter=counter,
        rand=rand,
        csb_id=msg.header.csb_id,
    )


def peek_key_id(data: bytes) -> KeyId:
    """
    The Key ID of an (unverified) MSK or MTK message, so that a receiver can
    pick the MUK or MSK to verify it with. Nothing returned is authenticated.
    """
    msg = parse_message(data)
    exts = [e for e in msg.find(Ext) if e.type == profile.EXT_TYPE_KEY_ID]
    if len(exts) != 1:
        raise MikeyError("message carries no single Key ID EXT")
    return parse_key_id(exts[0].data)
