"""
Public and private user identities (TS 23.003 13.3, 13.4): their patterns,
and the one rule every role compares and keys a public identity (IMPU) by.

An IMPU is a SIP URI or a tel URI (TS 23.003 13.4, RFC 3261, RFC 3966). Its
comparable form, L{normalize_impu}, is the address-of-record of RFC 3261
10.3 step 5 compared as RFC 3261 19.1.4 compares URIs:

  - sip: and sips: are different identities (19.1.4: a SIP and a SIPS URI
    are never equivalent); the scheme is case-insensitive (written lower);
  - the user part is case-sensitive, and an escaped unreserved character is
    the same as the character (19.1.4): it is written unescaped, any other
    escape with upper-case hex;
  - the host is case-insensitive (written lower);
  - the port counts, and no port is NOT the default port (19.1.4:
    C{sip:a@h} and C{sip:a@h:5060} differ);
  - the password, the URI parameters and the headers are no part of the
    address-of-record (10.3 step 5 removes all URI parameters);
  - a tel URI is its number: visual separators do not count and hex digits
    are case-insensitive (RFC 3966 4, 5.1.1), its parameters are dropped.

Pure functions, no I/O; they know no role, storage or node.
"""

from __future__ import annotations

import re
from typing import Union

from mbmsd.sip.grammar import SipParseError, SipUri, parse_uri

__all__ = ["NAI", "PUBLIC_ID", "is_impi", "is_impu", "normalize_impu", "same_impu"]

# IMPI: an NAI, username@realm (TS 23.003 13.3, RFC 4282)
NAI = r"[^@\s]+@[A-Za-z0-9.-]+"
# IMPU: a SIP or tel URI (TS 23.003 13.4), the scheme in any case (RFC 3261 19.1.4)
PUBLIC_ID = r"((?i:sips?):[^\s]+|(?i:tel):\+?[0-9A-Fa-f.()-]+)"

_NAI = re.compile(NAI)
_PUBLIC_ID = re.compile(PUBLIC_ID)
# RFC 3261 25.1 unreserved = alphanum / mark
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.!~*'()")
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
# RFC 3966 5.1.1 visual-separator
_VISUAL_SEPARATORS = str.maketrans("", "", "-.()")


def is_impi(value: object) -> bool:
    """True when C{value} is a string of the IMPI's NAI form."""
    return isinstance(value, str) and _NAI.fullmatch(value) is not None


def is_impu(value: object) -> bool:
    """True when C{value} is a string of the IMPU's form (a sip:, sips: or tel: URI)."""
    return isinstance(value, str) and _PUBLIC_ID.fullmatch(value) is not None


def _unescape(match: re.Match[str]) -> str:
    char = chr(int(match.group(1), 16))
    return char if char in _UNRESERVED else "%" + match.group(1).upper()


def normalize_impu(value: Union[str, SipUri]) -> str:
    """
    The comparable form of a public identity (the rule in the module's
    docstring), e.g. C{sip:User1@home1.net:5070} for
    C{SIP:User1@HOME1.net:5070;transport=tcp} and C{tel:+4912345} for
    C{tel:+49-123-45;phone-context=x}.

    @param value: a URI string or an L{mbmsd.sip.grammar.SipUri}.
    @return: the normalized IMPU.
    @raise ValueError: not a sip:, sips: or tel: URI.
    """
    if isinstance(value, SipUri):
        uri = value
    else:
        try:
            uri = parse_uri(value)
        except SipParseError as e:
            raise ValueError(str(e)) from None
    if uri.scheme == "tel":
        number: str = uri.user or ""
        return "tel:" + number.translate(_VISUAL_SEPARATORS).upper()
    text: str = uri.scheme + ":"
    if uri.user is not None:
        text += _ESCAPE.sub(_unescape, uri.user) + "@"
    host: str = uri.host.lower()
    text += "[%s]" % (host,) if ":" in host else host
    if uri.port is not None:
        text += ":%d" % (uri.port,)
    return text


def same_impu(a: Union[str, SipUri], b: Union[str, SipUri]) -> bool:
    """
    Whether two public identities are the same (L{normalize_impu} of
    both); a value that is no SIP or tel URI is the same as nothing.
    """
    try:
        return normalize_impu(a) == normalize_impu(b)
    except ValueError:
        return False
