"""
SIP headers (RFC 3261 7.3, 20): names case-insensitive with their compact
forms (7.3.3), order kept, multi-valued, comma lists split (7.3.1).
"""

from __future__ import annotations

import functools
from typing import Iterable, Iterator, Optional, TypeVar, Union, overload

_D = TypeVar("_D")
Entry = tuple[str, str, str]    # (lower-case key, canonical name, value)

__all__ = ["Headers", "canonical_name", "COMPACT_FORMS", "MULTI_VALUE_HEADERS",
           "EMPTY_ALLOWED_HEADERS"]


COMPACT_FORMS = {
    # RFC 3261 7.3.3 and 20
    "i": "Call-ID", "m": "Contact", "e": "Content-Encoding",
    "l": "Content-Length", "c": "Content-Type", "f": "From", "s": "Subject",
    "k": "Supported", "t": "To", "v": "Via",
    # RFC 6665 (was 3265), RFC 3515, RFC 4028, RFC 3841, RFC 3892
    "o": "Event", "u": "Allow-Events", "r": "Refer-To",
    "x": "Session-Expires", "a": "Accept-Contact", "j": "Reject-Contact",
    "d": "Request-Disposition", "b": "Referred-By",
}

_CANONICAL: dict[str, str] = {}
for _name in (
        "Accept", "Accept-Contact", "Accept-Encoding", "Accept-Language",
        "Alert-Info", "Allow", "Allow-Events", "Authentication-Info",
        "Authorization", "Call-ID", "Call-Info", "Contact",
        "Content-Disposition", "Content-Encoding", "Content-Language",
        "Content-Length", "Content-Type", "CSeq", "Date", "Error-Info",
        "Event", "Expires", "From", "In-Reply-To", "Max-Forwards",
        "MIME-Version", "Min-Expires", "Min-SE", "Organization",
        "P-Access-Network-Info", "P-Asserted-Identity", "P-Associated-URI",
        "P-Called-Party-ID", "P-Charging-Function-Addresses",
        "P-Charging-Vector", "P-Preferred-Identity", "P-Preferred-Service",
        "P-Visited-Network-ID", "Path", "Priority", "Privacy",
        "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Require",
        "RAck", "Reason", "Record-Route", "Refer-To", "Referred-By",
        "Reject-Contact", "Reply-To", "Request-Disposition", "Require",
        "Retry-After", "Route", "RSeq", "Security-Client", "Security-Server",
        "Security-Verify", "Server", "Service-Route", "Session-Expires",
        "SIP-ETag", "SIP-If-Match", "Subject", "Subscription-State",
        "Supported", "Timestamp", "To", "Unsupported", "User-Agent", "Via",
        "Warning", "WWW-Authenticate", "X-3GPP-Asserted-Identity",
        "X-3GPP-Intended-Identity"):
    _CANONICAL[_name.lower()] = _name
del _name

# Headers whose grammar is a comma-separated list (RFC 3261 7.3.1): several
# values on one line are split into separate entries.
MULTI_VALUE_HEADERS = frozenset(n.lower() for n in (
    "Via", "Route", "Record-Route", "Contact", "Allow", "Supported",
    "Require", "Proxy-Require", "Unsupported", "P-Associated-URI",
    "P-Asserted-Identity", "P-Preferred-Identity", "Path", "Service-Route",
    "Accept", "Accept-Encoding", "Accept-Language", "Allow-Events",
    "Content-Encoding", "Content-Language", "In-Reply-To", "Warning",
    "Alert-Info", "Call-Info", "Error-Info", "Accept-Contact",
    "Reject-Contact", "Request-Disposition", "Security-Client",
    "Security-Server", "Security-Verify", "Reason",
))

# Of those, the ones whose ABNF makes the list optional, so that the header
# may be present and empty: RFC 3261 25.1 `Allow = "Allow" HCOLON [Method
# *(COMMA Method)]`, the same [...] for Supported (20.37), Accept (20.1),
# Accept-Encoding (20.2) and Accept-Language (20.3); RFC 7315 4.1 for
# P-Associated-URI. Every other one (Require, Proxy-Require, Unsupported,
# Via, Contact, ...) needs at least one item: empty is a 400.
EMPTY_ALLOWED_HEADERS = frozenset(n.lower() for n in (
    "Allow", "Supported", "Accept", "Accept-Encoding", "Accept-Language",
    "P-Associated-URI",
))


def canonical_name(name: str) -> str:
    """The usual spelling of header C{name}; compact forms expanded."""
    low = name.lower()
    if low in COMPACT_FORMS and len(name) == 1:
        return COMPACT_FORMS[low]
    return _CANONICAL.get(low, name)


# Header names are cached by their text (a handful recur in every message);
# names longer than any real one bypass the cache, so that a peer's made-up
# names cannot fill memory.
_NAME_CACHE_TEXT = 64


def _canonical_pair(name: str) -> tuple[str, str]:
    cname = canonical_name(name)
    return cname.lower(), cname


_cached_pair = functools.lru_cache(maxsize=1024)(_canonical_pair)


def _names(name: str) -> tuple[str, str]:
    """C{(key, canonical name)} of header C{name}: an entry's first two parts."""
    if len(name) > _NAME_CACHE_TEXT:
        return _canonical_pair(name)
    return _cached_pair(name)


def _key(name: str) -> str:
    """The case-insensitive key of header C{name} (compact forms expanded)."""
    return _names(name)[0]


class Headers:
    """
    SIP headers: names case-insensitive, order preserved, multi-valued.

    Each entry is one C{(name, value)} pair; a header given several times (or
    as a comma list that was split) has several entries. Entries keep their
    lower-case key beside them, so lookups compare without re-lowering.
    """

    def __init__(self, items: Iterable[tuple[str, object]] = ()) -> None:
        self._items: list[Entry] = []
        for name, value in items:
            self.add(name, value)

    @staticmethod
    def _entry(name: str, value: object) -> Entry:
        key, name = _names(name)
        return (key, name, str(value))

    def add(self, name: str, value: object) -> None:
        """Append one value of C{name}."""
        self._items.append(self._entry(name, value))

    def prepend(self, name: str, value: object) -> None:
        """
        Insert C{value} as the first value of C{name} (a proxy's own Via or
        Record-Route), before any existing entry of that name, or at the top.
        """
        entry = self._entry(name, value)
        for i, (k, _, _) in enumerate(self._items):
            if k == entry[0]:
                self._items.insert(i, entry)
                return
        self._items.insert(0, entry)

    @overload
    def get(self, name: str) -> Optional[str]: ...

    @overload
    def get(self, name: str, default: _D) -> Union[str, _D]: ...

    def get(self, name: str, default: object = None) -> object:
        """The first value of C{name}, or C{default}."""
        key = _key(name)
        for k, _, v in self._items:
            if k == key:
                return v
        return default

    def getAll(self, name: str) -> list[str]:
        """All values of C{name}, in order (an empty list when absent)."""
        key = _key(name)
        return [v for k, _, v in self._items if k == key]

    def set(self, name: str, value: object) -> None:
        """Replace every value of C{name} by C{value} (at the first's place)."""
        entry = self._entry(name, value)
        for i, (k, _, _) in enumerate(self._items):
            if k == entry[0]:
                self._items = self._items[:i] + [entry] + [
                    e for e in self._items[i + 1:] if e[0] != entry[0]]
                return
        self._items.append(entry)

    def setFirst(self, name: str, value: object) -> None:
        """Replace only the first value of C{name} (or add it)."""
        key = _key(name)
        for i, (k, n, _) in enumerate(self._items):
            if k == key:
                self._items[i] = (k, n, str(value))
                return
        self.add(name, value)

    def remove(self, name: str) -> int:
        """Remove every value of C{name}; return how many were removed."""
        key = _key(name)
        before = len(self._items)
        self._items = [e for e in self._items if e[0] != key]
        return before - len(self._items)

    def popFirst(self, name: str) -> Optional[str]:
        """Remove and return the first value of C{name} (C{None} if absent)."""
        key = _key(name)
        for i, (k, _, v) in enumerate(self._items):
            if k == key:
                del self._items[i]
                return v
        return None

    def __contains__(self, name: str) -> bool:
        return self.get(name) is not None

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __setitem__(self, name: str, value: object) -> None:
        self.set(name, value)

    def __delitem__(self, name: str) -> None:
        if not self.remove(name):
            raise KeyError(name)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self.items())

    def items(self) -> list[tuple[str, str]]:
        return [(n, v) for _, n, v in self._items]

    def __len__(self) -> int:
        return len(self._items)

    def copy(self) -> Headers:
        h = Headers()
        h._items = list(self._items)
        return h

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return ([(k, v) for k, _, v in self._items]
                == [(k, v) for k, _, v in other._items])

    def __repr__(self) -> str:
        return "Headers(%r)" % (self.items(),)
