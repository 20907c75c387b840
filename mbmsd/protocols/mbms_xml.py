"""
The XML bodies of the BM-SC's HTTP interfaces, "mbmsd profile 1":
SCF -> BM-SC authorize/deauthorize (docs/design.md 7.4; TS 26.237 10.2.3 leaves the schema
FFS) and UE -> BM-SC register / deregister / msk-request with their answers
(docs/design.md 7.5; TS 26.346's schemas could not be read). Every element name,
namespace and content type comes from the "BM-SC HTTP bodies" section of
L{mbmsd.profile}, so a correction there is a one-line change.

Parsing takes untrusted bytes: defusedxml refuses DTDs, entity declarations
and external references; bodies over L{MAX_BODY} bytes and lists over
L{MAX_ITEMS} entries are refused; the root element and its namespace must be
exact; unknown child elements (any namespace) are ignored; item text is
stripped of surrounding whitespace. Every problem raises L{MbmsXmlError}
(a ValueError) with a short message that never echoes the input.
Builders validate their input the same way and raise the same error.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal, Optional, Protocol, overload
from xml.etree.ElementTree import ParseError
from xml.sax.saxutils import escape as _escape

import defusedxml
import defusedxml.ElementTree as _det

from mbmsd import profile
from mbmsd.protocols import gba

if TYPE_CHECKING:

    class Element(Protocol):
        """What the readers use of a parsed element (no stdlib parser import)."""

        tag: str
        text: str | None

        def get(self, key: str) -> str | None: ...

        def __len__(self) -> int: ...

        def __iter__(self) -> Iterator[Element]: ...

__all__ = [
    "MbmsXmlError",
    "MAX_BODY",
    "MAX_ITEMS",
    "MAX_SERVICE_ID_LENGTH",
    "MAX_LIFETIME",
    "AuthorizeRequest",
    "build_authorize",
    "parse_authorize",
    "check_authorize",
    "build_authorize_response",
    "parse_authorize_response",
    "build_register",
    "parse_register",
    "build_deregister",
    "parse_deregister",
    "build_register_response",
    "parse_register_response",
    "build_msk_request",
    "parse_msk_request",
    "build_msk_response",
    "parse_msk_response",
    "is_xml_media_type",
    "xml_part",
    "build_btid_document",
    "parse_btid_document",
    "NafKeyInfo",
    "build_naf_key_info",
    "parse_naf_key_info",
    "check_naf_key_info",
]


class MbmsXmlError(ValueError):
    """A BM-SC XML body is malformed, unsafe or outside our limits."""


MAX_BODY = 64 * 1024  # bytes
MAX_ITEMS = 64  # serviceId / mskId entries per body
MAX_SERVICE_ID_LENGTH = 256
MAX_LIFETIME = 86400 * 7  # seconds

_STATUS_RE = re.compile(r"[1-5][0-9]{2}\Z")
_LIFETIME_RE = re.compile(r"[0-9]{1,7}\Z")
_HEX_RE = re.compile(r"[0-9a-fA-F]+\Z")


def _q(ns: str, name: str) -> str:
    return "{%s}%s" % (ns, name)


# ---------------------------------------------------------------------------
# validation shared by builders and parsers


def _service_id(value: object) -> str:
    """1..256 printable, non-space US-ASCII characters (a URI in practice)."""
    if not isinstance(value, str):
        raise MbmsXmlError("serviceId must be a str")
    if not 1 <= len(value) <= MAX_SERVICE_ID_LENGTH:
        raise MbmsXmlError("serviceId must be 1..%d characters" % (MAX_SERVICE_ID_LENGTH,))
    if any(not ("\x21" <= c <= "\x7e") for c in value):
        raise MbmsXmlError("serviceId must be printable US-ASCII without spaces")
    return value


def _status(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 100 <= value <= 599:
        raise MbmsXmlError("status must be an integer 100..599")
    return value


def _count(n: int, at_least_one: bool) -> None:
    if n > MAX_ITEMS:
        raise MbmsXmlError("more than %d items" % (MAX_ITEMS,))
    if at_least_one and n == 0:
        raise MbmsXmlError("at least one item is required")


def _unique(values: Sequence[object], what: str) -> None:
    if len(set(values)) != len(values):
        raise MbmsXmlError("duplicate %s" % (what,))


def _service_ids(values: Iterable[object]) -> list[str]:
    if isinstance(values, (str, bytes)):
        raise MbmsXmlError("serviceIds must be a list of str")
    ids = [_service_id(v) for v in values]
    _count(len(ids), True)
    _unique(ids, "serviceId")
    return ids


def _fixed_bytes(value: object, length: int, what: str) -> bytes:
    if not isinstance(value, (bytes, bytearray)) or len(value) != length:
        raise MbmsXmlError("%s must be %d bytes" % (what, length))
    return bytes(value)


def _ue_address(value: object) -> str:
    if not isinstance(value, str):
        raise MbmsXmlError("ueAddress must be a str")
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        raise MbmsXmlError("ueAddress is not an IP address") from None
    if getattr(address, "scope_id", None):
        raise MbmsXmlError("ueAddress must not carry a scope zone")
    return str(address)


def _lifetime(value: object) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_LIFETIME:
        raise MbmsXmlError("lifetime must be 1..%d seconds" % (MAX_LIFETIME,))
    return value


def _hex_bytes(text: str, length: int, what: str) -> bytes:
    if len(text) != 2 * length or not _HEX_RE.match(text):
        raise MbmsXmlError("%s must be %d hex digits" % (what, 2 * length))
    return bytes.fromhex(text)


# ---------------------------------------------------------------------------
# writing


def _document(ns: str, root: str, lines: Iterable[str]) -> bytes:
    body = "".join("  %s\n" % (line,) for line in lines)
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<%s xmlns="%s">\n%s</%s>\n'
            % (root, _escape(ns, {'"': "&quot;"}), body, root)).encode("utf-8")


def _element(name: str, text: str, status: Optional[int] = None) -> str:
    attr = "" if status is None else ' %s="%d"' % (profile.ATTR_STATUS, status)
    return "<%s%s>%s</%s>" % (name, attr, _escape(text), name)


def _service_statuses(statuses: Iterable[Any]) -> list[tuple[str, int]]:
    if isinstance(statuses, (str, bytes)):
        raise MbmsXmlError("statuses must be a list of (serviceId, status)")
    out: list[tuple[str, int]] = []
    for item in statuses:
        try:
            sid, status = item
        except (TypeError, ValueError):
            raise MbmsXmlError("statuses must be (serviceId, status) pairs") from None
        out.append((_service_id(sid), _status(status)))
    _count(len(out), False)
    _unique([s for s, _ in out], "serviceId")
    return out


def _msk_statuses(statuses: Iterable[Any]) -> list[tuple[bytes, int]]:
    if isinstance(statuses, (str, bytes)):
        raise MbmsXmlError("statuses must be a list of (mskId, status)")
    out: list[tuple[bytes, int]] = []
    for item in statuses:
        try:
            mid, status = item
        except (TypeError, ValueError):
            raise MbmsXmlError("statuses must be (mskId, status) pairs") from None
        out.append((_fixed_bytes(mid, profile.MSK_ID_LEN, "mskId"), _status(status)))
    _count(len(out), False)
    _unique([m for m, _ in out], "mskId")
    return out


# ---------------------------------------------------------------------------
# reading


def _parse(body: object, ns: str, root_name: Optional[str]) -> Element:
    """Parse safely; return the root element after checking its name."""
    if isinstance(body, (bytearray, memoryview)):
        body = bytes(body)
    if not isinstance(body, bytes):
        raise MbmsXmlError("body must be bytes")
    if len(body) > MAX_BODY:
        raise MbmsXmlError("body larger than %d bytes" % (MAX_BODY,))
    try:
        root = _det.fromstring(body, forbid_dtd=True, forbid_entities=True,
                               forbid_external=True)
    except defusedxml.DefusedXmlException:
        raise MbmsXmlError("body uses a DTD, entities or external references") from None
    except (ParseError, SyntaxError, ValueError, UnicodeError, LookupError, TypeError,
            OverflowError, RecursionError, MemoryError):
        raise MbmsXmlError("body is not well-formed XML") from None
    if root_name is not None and root.tag != _q(ns, root_name):
        raise MbmsXmlError("root element is not {%s}%s" % (ns, root_name))
    return root


def _children(root: Element, ns: str, name: str) -> list[Element]:
    """Direct children named {ns}name, at most MAX_ITEMS of them."""
    found = [e for e in root if e.tag == _q(ns, name)]
    _count(len(found), False)
    return found


def _text(elem: Element, what: str) -> str:
    if len(elem):
        raise MbmsXmlError("%s must not contain elements" % (what,))
    return (elem.text or "").strip()


@overload
def _one(root: Element, ns: str, name: str, required: Literal[True] = ...) -> str: ...


@overload
def _one(root: Element, ns: str, name: str, required: bool) -> Optional[str]: ...


def _one(root: Element, ns: str, name: str, required: bool = True) -> Optional[str]:
    found = _children(root, ns, name)
    if len(found) > 1:
        raise MbmsXmlError("more than one %s" % (name,))
    if not found:
        if required:
            raise MbmsXmlError("missing %s" % (name,))
        return None
    return _text(found[0], name)


def _status_attr(elem: Element) -> int:
    raw = elem.get(profile.ATTR_STATUS)
    if raw is None:
        raise MbmsXmlError("item without a status attribute")
    raw = raw.strip()
    if not _STATUS_RE.match(raw):
        raise MbmsXmlError("status must be an integer 100..599")
    return int(raw)


def _parse_service_list(body: object, root_name: str) -> list[str]:
    ns = profile.NS_REGISTER
    root = _parse(body, ns, root_name)
    ids = [_text(e, profile.EL_SERVICE_ID) for e in _children(root, ns, profile.EL_SERVICE_ID)]
    return _service_ids(ids)


def _parse_service_statuses(body: object, ns: str, root_name: str) -> list[tuple[str, int]]:
    root = _parse(body, ns, root_name)
    out = [(_text(e, profile.EL_SERVICE_ID), _status_attr(e))
           for e in _children(root, ns, profile.EL_SERVICE_ID)]
    return _service_statuses(out)


# ---------------------------------------------------------------------------
# authorize / deauthorize (SCF -> BM-SC, docs/design.md 7.4)


@dataclass
class AuthorizeRequest:
    """
    The body of C{requesttype=authorize} and C{requesttype=deauthorize}:
    the MBMS User Service IDs, the UE's IP address (from the INVITE's
    Contact) and an optional lifetime in seconds.
    """

    serviceIds: list[str]
    ueAddress: str
    lifetime: Optional[int] = None


def build_authorize(req: AuthorizeRequest) -> bytes:
    """
    C{<mbmsAuthorize xmlns=NS_AUTHORIZE>} with one C{<serviceId>} per
    service, C{<ueIPaddress>} (normalised) and C{<lifetime>} when set.
    Content type L{profile.CT_AUTHORIZE}.

    @raise MbmsXmlError: invalid service IDs, address or lifetime.
    """
    ids = _service_ids(req.serviceIds)
    lines = [_element(profile.EL_SERVICE_ID, s) for s in ids]
    lines.append(_element(profile.EL_UE_ADDRESS, _ue_address(req.ueAddress)))
    lifetime = _lifetime(req.lifetime)
    if lifetime is not None:
        lines.append(_element(profile.EL_LIFETIME, str(lifetime)))
    return _document(profile.NS_AUTHORIZE, profile.EL_AUTHORIZE, lines)


def parse_authorize(body: bytes) -> AuthorizeRequest:
    """
    Parse an authorize (or deauthorize) body. ueAddress comes back in
    L{ipaddress}'s normal form; lifetime is None when absent.

    @raise MbmsXmlError: unsafe or malformed XML, wrong root/namespace, no
        or too many service IDs, duplicates, a missing/repeated/invalid
        ueIPaddress, a lifetime that is not 1..604800 decimal seconds.
    """
    ns = profile.NS_AUTHORIZE
    root = _parse(body, ns, profile.EL_AUTHORIZE)
    ids = [_text(e, profile.EL_SERVICE_ID) for e in _children(root, ns, profile.EL_SERVICE_ID)]
    address = _ue_address(_one(root, ns, profile.EL_UE_ADDRESS))
    raw = _one(root, ns, profile.EL_LIFETIME, required=False)
    lifetime = None
    if raw is not None:
        if not _LIFETIME_RE.match(raw):
            raise MbmsXmlError("lifetime must be decimal seconds")
        lifetime = _lifetime(int(raw))
    return AuthorizeRequest(_service_ids(ids), address, lifetime)


def check_authorize(req: AuthorizeRequest) -> AuthorizeRequest:
    """
    The request as L{parse_authorize} reads L{build_authorize}'s document
    of it, without the XML: the in-process SCF -> BM-SC path checks and
    normalises what the HTTP one does.

    @raise MbmsXmlError: as L{build_authorize}.
    """
    return AuthorizeRequest(_service_ids(req.serviceIds), _ue_address(req.ueAddress),
                            _lifetime(req.lifetime))


def build_authorize_response(statuses: list[tuple[str, int]]) -> bytes:
    """
    C{<mbmsAuthorizeResponse xmlns=NS_AUTHORIZE>} with
    C{<serviceId status="200">id</serviceId>} per service.
    Content type L{profile.CT_AUTHORIZE_RESPONSE}.
    """
    items = _service_statuses(statuses)
    return _document(profile.NS_AUTHORIZE, profile.EL_AUTHORIZE_RESPONSE,
                     [_element(profile.EL_SERVICE_ID, s, st) for s, st in items])


def parse_authorize_response(body: bytes) -> list[tuple[str, int]]:
    """
    Parse an authorize response into [(serviceId, status)], in document order.

    @raise MbmsXmlError: see the module docstring; also a missing or
        non-numeric status, duplicates.
    """
    return _parse_service_statuses(body, profile.NS_AUTHORIZE, profile.EL_AUTHORIZE_RESPONSE)


# ---------------------------------------------------------------------------
# register / deregister (UE -> BM-SC, docs/design.md 7.5)


def build_register(serviceIds: list[str]) -> bytes:
    """C{<mbmsRegister>} (NS_REGISTER) with one C{<serviceId>} each; L{profile.CT_REGISTER}."""
    return _document(profile.NS_REGISTER, profile.EL_REGISTER,
                     [_element(profile.EL_SERVICE_ID, s) for s in _service_ids(serviceIds)])


def parse_register(body: bytes) -> list[str]:
    """
    The service IDs of a register body, in document order.

    @raise MbmsXmlError: see the module docstring; also none, duplicates.
    """
    return _parse_service_list(body, profile.EL_REGISTER)


def build_deregister(serviceIds: list[str]) -> bytes:
    """C{<mbmsDeregister>} (NS_REGISTER) with one C{<serviceId>} each; L{profile.CT_DEREGISTER}."""
    return _document(profile.NS_REGISTER, profile.EL_DEREGISTER,
                     [_element(profile.EL_SERVICE_ID, s) for s in _service_ids(serviceIds)])


def parse_deregister(body: bytes) -> list[str]:
    """The service IDs of a deregister body. @raise MbmsXmlError: as L{parse_register}."""
    return _parse_service_list(body, profile.EL_DEREGISTER)


def build_register_response(statuses: list[tuple[str, int]]) -> bytes:
    """
    C{<mbmsRegisterResponse>} (NS_REGISTER) with C{<serviceId status="N">};
    answers register and deregister. L{profile.CT_REGISTER_RESPONSE}.
    """
    items = _service_statuses(statuses)
    return _document(profile.NS_REGISTER, profile.EL_REGISTER_RESPONSE,
                     [_element(profile.EL_SERVICE_ID, s, st) for s, st in items])


def parse_register_response(body: bytes) -> list[tuple[str, int]]:
    """[(serviceId, status)] of a register response. @raise MbmsXmlError."""
    return _parse_service_statuses(body, profile.NS_REGISTER, profile.EL_REGISTER_RESPONSE)


# ---------------------------------------------------------------------------
# msk-request (UE -> BM-SC, docs/design.md 7.5)


def build_msk_request(keyDomainId: bytes, mskIds: list[bytes]) -> bytes:
    """
    C{<mbmsMskRequest>} (NS_REGISTER): C{<keyDomainId>} (3 bytes as hex)
    then one C{<mskId>} (4 bytes as hex) each; L{profile.CT_MSK_REQUEST}.
    """
    kd = _fixed_bytes(keyDomainId, profile.KEY_DOMAIN_ID_LEN, "keyDomainId")
    if isinstance(mskIds, (bytes, bytearray, str)):
        raise MbmsXmlError("mskIds must be a list of bytes")
    ids = [_fixed_bytes(m, profile.MSK_ID_LEN, "mskId") for m in mskIds]
    _count(len(ids), True)
    _unique(ids, "mskId")
    lines = [_element(profile.EL_KEY_DOMAIN_ID, kd.hex())]
    lines += [_element(profile.EL_MSK_ID, m.hex()) for m in ids]
    return _document(profile.NS_REGISTER, profile.EL_MSK_REQUEST, lines)


def parse_msk_request(body: bytes) -> tuple[bytes, list[bytes]]:
    """
    (Key Domain ID, [MSK ID, ...]) of an msk-request body; hex is accepted
    in either case.

    @raise MbmsXmlError: see the module docstring; also a missing/repeated
        keyDomainId, wrong lengths, not hex, no MSK ID, duplicates.
    """
    ns = profile.NS_REGISTER
    root = _parse(body, ns, profile.EL_MSK_REQUEST)
    kd = _hex_bytes(_one(root, ns, profile.EL_KEY_DOMAIN_ID), profile.KEY_DOMAIN_ID_LEN,
                    "keyDomainId")
    ids = [_hex_bytes(_text(e, profile.EL_MSK_ID), profile.MSK_ID_LEN, "mskId")
           for e in _children(root, ns, profile.EL_MSK_ID)]
    _count(len(ids), True)
    _unique(ids, "mskId")
    return kd, ids


def build_msk_response(statuses: list[tuple[bytes, int]]) -> bytes:
    """
    C{<mbmsMskResponse>} (NS_MSK_RESPONSE) with C{<mskId status="N">hex</mskId>}
    each; L{profile.CT_MSK_RESPONSE}.
    """
    items = _msk_statuses(statuses)
    return _document(profile.NS_MSK_RESPONSE, profile.EL_MSK_RESPONSE,
                     [_element(profile.EL_MSK_ID, m.hex(), st) for m, st in items])


def parse_msk_response(body: bytes) -> list[tuple[bytes, int]]:
    """[(mskId, status)] of an msk-request answer. @raise MbmsXmlError."""
    ns = profile.NS_MSK_RESPONSE
    root = _parse(body, ns, profile.EL_MSK_RESPONSE)
    out = [(_hex_bytes(_text(e, profile.EL_MSK_ID), profile.MSK_ID_LEN, "mskId"), _status_attr(e))
           for e in _children(root, ns, profile.EL_MSK_ID)]
    return _msk_statuses(out)


# ---------------------------------------------------------------------------
# SIP-based security procedure (TS 26.237 Annex I)

MUK_LENGTH = 32  # Ks_NAF (TS 33.220 B.3)
_BTID_RE = re.compile(r"[!-~]{1,%d}\Z" % (gba.MAX_BTID_LENGTH,))


def is_xml_media_type(mtype: str) -> bool:
    """application/xml or any +xml type (RFC 7303), lower-case, no parameters."""
    return mtype == "application/xml" or mtype.endswith("+xml")


def xml_part(parts: Iterable[tuple[str, bytes]], ns: str) -> Optional[bytes]:
    """
    The body part of a multipart body that holds a document in namespace
    C{ns}: taken by the namespace of its root under an XML media type
    (L{is_xml_media_type}), whatever the type's name.

    @param parts: C{[(media type, bytes)]}, media types lower-case.
    @return: the part's bytes, or None when no XML part is in C{ns}.
    @raise MbmsXmlError: an XML part that is not well-formed or unsafe.
    """
    for mtype, body in parts:
        if is_xml_media_type(mtype):
            root = _parse(body, ns, None)
            if root.tag.startswith("{%s}" % (ns,)):
                return body
    return None


def build_btid_document(btids: Iterable[object]) -> bytes:
    """
    Annex I.1: C{<mbmsAuthorizedSecurityRegister xmlns=NS_BTID>} with one
    C{<btid>} each. @raise MbmsXmlError: no B-TID, or one that is not
    printable US-ASCII of at most 255 characters.
    """
    if isinstance(btids, (str, bytes)):
        raise MbmsXmlError("btids must be a list of str")
    values = [_btid(b) for b in btids]
    _count(len(values), True)
    return _document(profile.NS_BTID, profile.EL_SECURITY_REGISTER,
                     [_element(profile.EL_BTID, b) for b in values])


def _btid(value: object) -> str:
    if not isinstance(value, str) or not _BTID_RE.match(value):
        raise MbmsXmlError("btid must be 1..%d printable characters" % (gba.MAX_BTID_LENGTH,))
    return value


def parse_btid_document(body: bytes) -> list[str]:
    """
    The B-TIDs of an Annex I.1 document, in document order (elements of
    other namespaces ignored, as the schema's xs:any allows).

    @raise MbmsXmlError: unsafe or malformed XML, another root, no btid.
        A btid whose text is no B-TID at all is returned as it is: the
        caller finds it unknown.
    """
    ns = profile.NS_BTID
    root = _parse(body, ns, profile.EL_SECURITY_REGISTER)
    btids = [_text(e, profile.EL_BTID) for e in _children(root, ns, profile.EL_BTID)]
    _count(len(btids), True)
    return btids


@dataclass
class NafKeyInfo:
    """
    Annex I.2: the SCF's Ks_NAF for the UE's B-TID (the MUK), its expiry
    (POSIX seconds), the B-TID, the SCF's NAF FQDN and the UE's address.
    """

    ueAddress: Optional[str]
    muk: bytes = field(repr=False)
    mukExpires: float
    btid: str
    nafFqdn: str


def build_naf_key_info(info: NafKeyInfo) -> bytes:
    """
    C{<mbmsAuthorizedSecurityRegister xmlns=NS_NAF_KEY_INFO>} with, in the
    schema's order, ueIPaddress (when known), muk (base64), mukLifeTime
    (xs:dateTime UTC), btid, nafFqdn (base64 of the FQDN).
    """
    lines = []
    if info.ueAddress is not None:
        lines.append(_element(profile.EL_UE_ADDRESS, _ue_address(info.ueAddress)))
    muk = _fixed_bytes(info.muk, MUK_LENGTH, "muk")
    lines.append(_element(profile.EL_MUK, base64.b64encode(muk).decode("ascii")))
    try:
        expires = gba.format_utc(datetime.fromtimestamp(int(info.mukExpires), timezone.utc))
    except (TypeError, ValueError, OverflowError, OSError):
        raise MbmsXmlError("mukExpires must be POSIX seconds") from None
    lines.append(_element(profile.EL_MUK_LIFETIME, expires))
    lines.append(_element(profile.EL_BTID, _btid(info.btid)))
    lines.append(_element(profile.EL_NAF_FQDN,
                          base64.b64encode(_fqdn(info.nafFqdn).encode("ascii")).decode("ascii")))
    return _document(profile.NS_NAF_KEY_INFO, profile.EL_SECURITY_REGISTER, lines)


_FQDN_RE = re.compile(r"(?=.{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                      r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\Z")


def check_naf_key_info(info: NafKeyInfo) -> NafKeyInfo:
    """
    The information as L{parse_naf_key_info} reads L{build_naf_key_info}'s
    document of it, without the XML (the in-process SCF -> BM-SC path):
    the address normalised, C{mukExpires} in the whole seconds that
    mukLifeTime carries.

    @raise MbmsXmlError: as L{build_naf_key_info}.
    """
    address = _ue_address(info.ueAddress) if info.ueAddress is not None else None
    muk = _fixed_bytes(info.muk, MUK_LENGTH, "muk")
    try:
        expires = datetime.fromtimestamp(int(info.mukExpires), timezone.utc).timestamp()
    except (TypeError, ValueError, OverflowError, OSError):
        raise MbmsXmlError("mukExpires must be POSIX seconds") from None
    return NafKeyInfo(address, muk, expires, _btid(info.btid), _fqdn(info.nafFqdn))


def _fqdn(value: object) -> str:
    if not isinstance(value, str) or not _FQDN_RE.match(value):
        raise MbmsXmlError("nafFqdn must be a host name")
    return value


def _b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise MbmsXmlError("%s must be base64" % (what,)) from None


def parse_naf_key_info(body: bytes) -> NafKeyInfo:
    """
    Parse an Annex I.2 document. The schema allows several of each element
    (one per B-TID); we take exactly one MUK for one B-TID.

    @raise MbmsXmlError: unsafe or malformed XML, another root, an element
        missing or repeated, a MUK that is not base64 of 32 octets, a
        lifetime that is not a UTC xs:dateTime, a nafFqdn that is not
        base64 of a host name, a ueIPaddress that is not an IP address.
    """
    ns = profile.NS_NAF_KEY_INFO
    root = _parse(body, ns, profile.EL_SECURITY_REGISTER)
    address = _one(root, ns, profile.EL_UE_ADDRESS, required=False)
    muk = _b64(_one(root, ns, profile.EL_MUK), "muk")
    if len(muk) != MUK_LENGTH:
        raise MbmsXmlError("muk must be %d octets" % (MUK_LENGTH,))
    try:
        expires = gba.parse_utc(_one(root, ns, profile.EL_MUK_LIFETIME)).timestamp()
    except ValueError:
        raise MbmsXmlError("mukLifeTime must be a UTC xs:dateTime") from None
    btid = _btid(_one(root, ns, profile.EL_BTID))
    try:
        fqdn = _b64(_one(root, ns, profile.EL_NAF_FQDN), "nafFqdn").decode("ascii")
    except UnicodeDecodeError:
        raise MbmsXmlError("nafFqdn must be base64 of a host name") from None
    return NafKeyInfo(_ue_address(address) if address is not None else None, muk, expires,
                      btid, _fqdn(fqdn))
