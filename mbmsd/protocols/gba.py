"""
GBA building blocks: the TS 33.220 Annex B key derivation function, NAF_Id
(Annex H), B-TID (clause 4.5.2), the Ub nonce (TS 24.109 Annex A.4) and the
BootstrappingInfo XML body of the Ub 200 OK (TS 24.109 Annex C.1).

Pure functions, no policy. Every parser raises ValueError with a short
message that never echoes the (possibly huge or hostile) input, nor a key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from datetime import datetime, timezone
from xml.etree.ElementTree import ParseError
from xml.sax.saxutils import escape as _xml_escape

import defusedxml
import defusedxml.ElementTree as _det

__all__ = [
    "kdf",
    "FC_KS_NAF",
    "UA_PROTOCOL_33221",
    "UA_PROTOCOL_MBMS",
    "UA_PROTOCOL_HTTP_DIGEST",
    "UA_PROTOCOL_26237_HTTP",
    "UA_PROTOCOL_26237_SIP",
    "naf_id",
    "derive_ks_naf",
    "derive_ks_ext_naf",
    "derive_ks_int_naf",
    "make_btid",
    "parse_btid",
    "encode_nonce",
    "decode_nonce",
    "BSF_XML_NS",
    "BSF_CONTENT_TYPE",
    "bootstrapping_info_xml",
    "parse_bootstrapping_info",
    "format_utc",
    "parse_utc",
]

# ---------------------------------------------------------------------------
# TS 33.220 Annex B.2: generic key derivation function


def kdf(key: bytes, fc: int, *params: bytes) -> bytes:
    """
    derived key = HMAC-SHA-256(Key, S), S = FC || P0 || L0 || ... || Pn || Ln
    (TS 33.220 B.2); Li is the 2-octet big-endian length of Pi in octets.
    A str parameter is UTF-8 encoded first (B.2.1). Returns 32 octets.

    @raise ValueError: FC not one octet, or a parameter longer than 65535.
    """
    if not isinstance(fc, int) or isinstance(fc, bool) or not 0 <= fc <= 0xFF:
        raise ValueError("FC must be one octet")
    s = bytearray((fc,))
    for p in params:
        if isinstance(p, str):
            p = p.encode("utf-8")
        elif not isinstance(p, (bytes, bytearray, memoryview)):
            raise TypeError("KDF parameters must be bytes or str")
        p = bytes(p)
        if len(p) > 0xFFFF:
            raise ValueError("KDF parameter longer than 65535 octets")
        s += p
        s += len(p).to_bytes(2, "big")
    return hmac.new(bytes(key), bytes(s), hashlib.sha256).digest()


# TS 33.220 B.3: FC for NAF-specific key derivation.
FC_KS_NAF = 0x01

# TS 33.220 Annex H.3: Ua security protocol identifiers (organisation 0x01 =
# 3GPP, then 4 octets of protocol).
UA_PROTOCOL_33221 = bytes.fromhex("0100000000")  # TS 33.221 (certificates)
UA_PROTOCOL_MBMS = bytes.fromhex("0100000001")  # TS 33.246 MBMS
UA_PROTOCOL_HTTP_DIGEST = bytes.fromhex("0100000002")  # TS 24.109 HTTP Digest
UA_PROTOCOL_26237_HTTP = bytes.fromhex("0100000003")  # TS 26.237 HTTP-based
UA_PROTOCOL_26237_SIP = bytes.fromhex("0100000004")  # TS 26.237 SIP-based


def naf_id(fqdn: str, ua_protocol_id: bytes) -> bytes:
    """
    NAF_Id = FQDN of the NAF (UTF-8) || Ua security protocol id (5 octets)
    (TS 33.220 Annex H).
    """
    if not isinstance(fqdn, str) or not fqdn:
        raise ValueError("NAF FQDN must be a non-empty str")
    if not isinstance(ua_protocol_id, (bytes, bytearray)) or len(ua_protocol_id) != 5:
        raise ValueError("Ua security protocol id must be 5 octets")
    return fqdn.encode("utf-8") + bytes(ua_protocol_id)


def _derive(label: bytes, ks: bytes, rand: bytes, impi: str, naf_id: bytes) -> bytes:
    if not isinstance(ks, (bytes, bytearray)) or len(ks) != 32:
        raise ValueError("Ks must be 32 octets (CK || IK)")
    if not isinstance(rand, (bytes, bytearray)) or len(rand) != 16:
        raise ValueError("RAND must be 16 octets")
    if not isinstance(impi, str) or not impi:
        raise ValueError("IMPI must be a non-empty str")
    if not isinstance(naf_id, (bytes, bytearray)) or len(naf_id) < 6:
        raise ValueError("NAF_Id must be FQDN || 5-octet Ua id")
    # TS 33.220 B.3: FC = 0x01, P0 = label, P1 = RAND, P2 = IMPI, P3 = NAF_Id
    return kdf(ks, FC_KS_NAF, label, bytes(rand), impi.encode("utf-8"), bytes(naf_id))


def derive_ks_naf(ks: bytes, rand: bytes, impi: str, naf_id: bytes) -> bytes:
    """
    Ks_NAF (GBA_ME) = KDF(Ks, "gba-me", RAND, IMPI, NAF_Id) (TS 33.220 B.3);
    the same derivation yields Ks_ext_NAF in GBA_U. 32 octets.
    """
    return _derive(b"gba-me", ks, rand, impi, naf_id)


derive_ks_ext_naf = derive_ks_naf


def derive_ks_int_naf(ks: bytes, rand: bytes, impi: str, naf_id: bytes) -> bytes:
    """Ks_int_NAF (GBA_U) = KDF(Ks, "gba-u", RAND, IMPI, NAF_Id) (TS 33.220 B.3)."""
    return _derive(b"gba-u", ks, rand, impi, naf_id)


# ---------------------------------------------------------------------------
# B-TID (TS 33.220 4.5.2): base64(RAND) "@" BSF_servers_domain_name

MAX_BTID_LENGTH = 255

# LDH labels separated by dots (RFC 1035/1123 host name syntax).
_DOMAIN_RE = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?\Z"
)


def _b64decode_strict(s: str) -> bytes:
    """Standard base64 with padding; non-canonical encodings refused."""
    try:
        raw = base64.b64decode(s.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise ValueError("not valid base64") from None
    if base64.b64encode(raw).decode("ascii") != s:
        raise ValueError("not canonical base64")
    return raw


def _check_domain(domain: str) -> None:
    if not isinstance(domain, str) or not domain:
        raise ValueError("BSF domain must be a non-empty str")
    if not _DOMAIN_RE.match(domain):
        raise ValueError("BSF domain is not a valid host name")


def make_btid(rand: bytes, bsf_domain: str) -> str:
    """
    B-TID = base64(RAND) "@" BSF_servers_domain_name (TS 33.220 4.5.2),
    standard base64 with padding (24 characters for a 16-octet RAND).
    """
    if not isinstance(rand, (bytes, bytearray)) or len(rand) != 16:
        raise ValueError("RAND must be 16 octets")
    _check_domain(bsf_domain)
    btid = base64.b64encode(bytes(rand)).decode("ascii") + "@" + bsf_domain
    if len(btid) > MAX_BTID_LENGTH:
        raise ValueError("B-TID longer than %d characters" % (MAX_BTID_LENGTH,))
    return btid


def parse_btid(btid: str) -> tuple[bytes, str]:
    """
    Split a B-TID into (RAND, BSF domain).

    @raise ValueError: not a str, over 255 characters, no "@", RAND part not
        canonical base64 of 16 octets, or an empty/invalid domain.
    """
    if not isinstance(btid, str):
        raise ValueError("B-TID must be a str")
    if len(btid) > MAX_BTID_LENGTH:
        raise ValueError("B-TID longer than %d characters" % (MAX_BTID_LENGTH,))
    rand_b64, sep, domain = btid.partition("@")
    if not sep:
        raise ValueError("B-TID has no '@'")
    try:
        rand = _b64decode_strict(rand_b64)
    except ValueError:
        raise ValueError("B-TID RAND part is not valid base64") from None
    if len(rand) != 16:
        raise ValueError("B-TID RAND part is not 16 octets")
    _check_domain(domain)
    return rand, domain


# ---------------------------------------------------------------------------
# Ub nonce (TS 24.109 Annex A.4): base64(RAND || AUTN || server specific data)

MAX_NONCE_LENGTH = 4096


def encode_nonce(rand: bytes, autn: bytes) -> str:
    """nonce = base64(RAND || AUTN) (TS 24.109 A.4; RFC 3310 3.2)."""
    if not isinstance(rand, (bytes, bytearray)) or len(rand) != 16:
        raise ValueError("RAND must be 16 octets")
    if not isinstance(autn, (bytes, bytearray)) or len(autn) != 16:
        raise ValueError("AUTN must be 16 octets")
    return base64.b64encode(bytes(rand) + bytes(autn)).decode("ascii")


def decode_nonce(nonce: str) -> tuple[bytes, bytes]:
    """
    Return (RAND, AUTN) from a Ub nonce; trailing server-specific data
    (TS 24.109 A.4) is accepted and ignored.

    @raise ValueError: not base64, or shorter than 32 octets decoded.
    """
    if not isinstance(nonce, str):
        raise ValueError("nonce must be a str")
    if len(nonce) > MAX_NONCE_LENGTH:
        raise ValueError("nonce too long")
    try:
        raw = base64.b64decode(nonce.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise ValueError("nonce is not valid base64") from None
    if len(raw) < 32:
        raise ValueError("nonce shorter than RAND || AUTN (32 octets)")
    return raw[:16], raw[16:32]


# ---------------------------------------------------------------------------
# Times: RFC 3339 / xs:dateTime in UTC with a trailing "Z"

_UTC_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?Z\Z", re.ASCII
)


def format_utc(dt: datetime) -> str:
    """Aware datetime -> "YYYY-MM-DDTHH:MM:SSZ" in UTC (fraction dropped)."""
    if not isinstance(dt, datetime):
        raise ValueError("expected a datetime")
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError("datetime must be timezone-aware")
    u = dt.astimezone(timezone.utc)
    return "%04d-%02d-%02dT%02d:%02d:%02dZ" % (
        u.year, u.month, u.day, u.hour, u.minute, u.second)


def parse_utc(s: str) -> datetime:
    """
    "YYYY-MM-DDTHH:MM:SS[.fraction]Z" -> aware UTC datetime (fraction kept to
    microseconds). Offsets other than "Z" are refused.
    """
    if not isinstance(s, str) or len(s) > 40:
        raise ValueError("not a UTC date-time")
    m = _UTC_RE.match(s)
    if not m:
        raise ValueError("not a UTC date-time of the form YYYY-MM-DDTHH:MM:SSZ")
    y, mo, d, hh, mm, ss, frac = m.groups()
    micro = int((frac or "0")[:6].ljust(6, "0"))
    try:
        return datetime(int(y), int(mo), int(d), int(hh), int(mm), int(ss), micro,
                        tzinfo=timezone.utc)
    except ValueError:
        raise ValueError("date-time out of range") from None


# ---------------------------------------------------------------------------
# BootstrappingInfo (TS 24.109 Annex C.1)

BSF_XML_NS = "uri:3gpp-gba"
BSF_CONTENT_TYPE = "application/vnd.3gpp.bsf+xml"
MAX_XML_LENGTH = 65536

_ROOT = "{%s}BootstrappingInfo" % (BSF_XML_NS,)
_BTID = "{%s}btid" % (BSF_XML_NS,)
_LIFETIME = "{%s}lifetime" % (BSF_XML_NS,)

# Characters XML 1.0 cannot carry, even escaped.
_XML_BAD_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def bootstrapping_info_xml(btid: str, lifetime: datetime) -> bytes:
    """
    The Ub 200 OK body (TS 24.109 C.1): <BootstrappingInfo xmlns="uri:3gpp-gba">
    with <btid> and <lifetime> (UTC, trailing Z, second precision). UTF-8.
    """
    if not isinstance(btid, str) or not btid:
        raise ValueError("B-TID must be a non-empty str")
    if _XML_BAD_CHARS.search(btid):
        raise ValueError("B-TID contains characters not allowed in XML")
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<BootstrappingInfo xmlns="%s">\n'
        "  <btid>%s</btid>\n"
        "  <lifetime>%s</lifetime>\n"
        "</BootstrappingInfo>\n"
        % (BSF_XML_NS, _xml_escape(btid), format_utc(lifetime))
    ).encode("utf-8")


def parse_bootstrapping_info(body: bytes) -> tuple[str, datetime]:
    """
    Parse a BootstrappingInfo body into (B-TID, lifetime). DTDs and entity
    declarations are refused (defusedxml); unknown elements such as
    <Extension> are ignored (TS 24.109 C.1).

    @raise ValueError: malformed XML, DTD/entities, wrong root or namespace,
        btid/lifetime missing or repeated, an invalid B-TID, or a lifetime
        that is not UTC with a trailing "Z".
    """
    if isinstance(body, str):
        body = body.encode("utf-8")
    if not isinstance(body, (bytes, bytearray)):
        raise ValueError("body must be bytes")
    if len(body) > MAX_XML_LENGTH:
        raise ValueError("BootstrappingInfo body too large")
    try:
        root = _det.fromstring(bytes(body), forbid_dtd=True,
                               forbid_entities=True, forbid_external=True)
    except defusedxml.DefusedXmlException:
        raise ValueError("BootstrappingInfo body uses a DTD or entities") from None
    except (ParseError, SyntaxError, ValueError, UnicodeError, LookupError):
        # LookupError: an XML declaration naming an unknown encoding
        raise ValueError("BootstrappingInfo body is not well-formed XML") from None
    if root.tag != _ROOT:
        raise ValueError("root element is not {uri:3gpp-gba}BootstrappingInfo")
    btids = [e for e in root if e.tag == _BTID]
    lifetimes = [e for e in root if e.tag == _LIFETIME]
    if len(btids) != 1 or len(lifetimes) != 1:
        raise ValueError("BootstrappingInfo needs exactly one btid and one lifetime")
    if len(btids[0]) or len(lifetimes[0]):
        raise ValueError("btid and lifetime must be simple text")
    btid = (btids[0].text or "").strip()
    parse_btid(btid)
    lifetime = parse_utc((lifetimes[0].text or "").strip())
    return btid, lifetime
