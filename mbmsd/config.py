"""
Node configuration: TOML files (stdlib tomllib), layered, validated as a whole.

C{twistd -n mbmsd --config base.toml --config overlay.toml}: later files
override earlier ones table by table. Every key is declared in a L{Section};
an unknown key is an error, not ignored. All errors are reported at once,
one line each, naming the file and the key::

    etc/mbmsd.toml: bsf.key_lifetime: must be an integer >= 60, got 'x'
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.endpoints import serverFromString
from twisted.internet.testing import MemoryReactor


class ConfigError(Exception):
    """
    One or more configuration errors, each C{"<file>: <key>: <problem>"}.
    """

    def __init__(self, lines: Iterable[str]) -> None:
        self.lines = list(lines)
        Exception.__init__(self, "\n".join(self.lines))


class Invalid(ValueError):
    """
    Raised by a field's check with what is wrong (no file, no key).
    """


# ---------------------------------------------------------------- fields

# a field's check: the TOML value in, the normalised value out, or Invalid
Check = Callable[[Any], Any]
# (key path) -> the file that set it
KeyPath = tuple[str, ...]
Where = Callable[[KeyPath], str]


@dataclass
class Field:
    """
    One key: a check that returns the normalised value, a default, a doc.

    A field with C{default=REQUIRED} must be present.
    """

    check: Check
    default: object = None
    doc: str = ""
    secret: bool = False


REQUIRED = object()


def _show(value: object, secret: bool = False) -> str:
    if secret:
        return "(secret value hidden)"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def string(pattern: str | None = None, what: str | None = None) -> Check:
    rx = re.compile(pattern) if pattern else None

    def check(value: object) -> str:
        if not isinstance(value, str):
            raise Invalid("must be a string")
        if rx is not None and not rx.fullmatch(value):
            raise Invalid("must be %s" % (what or "of the form %s" % (pattern,)))
        return value

    return check


def fqdn() -> Check:
    return string(
        r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
        r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*",
        "a domain name such as 'bsf.home1.net'",
    )


def integer(minimum: int | None = None, maximum: int | None = None) -> Check:
    def check(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid("must be an integer")
        if minimum is not None and value < minimum:
            raise Invalid("must be >= %d" % (minimum,))
        if maximum is not None and value > maximum:
            raise Invalid("must be <= %d" % (maximum,))
        return value

    return check


def number(minimum: float | None = None, maximum: float | None = None) -> Check:
    def check(value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise Invalid("must be a number")
        if minimum is not None and value < minimum:
            raise Invalid("must be >= %s" % (minimum,))
        if maximum is not None and value > maximum:
            raise Invalid("must be <= %s" % (maximum,))
        return float(value)

    return check


def boolean() -> Check:
    def check(value: object) -> bool:
        if not isinstance(value, bool):
            raise Invalid("must be true or false")
        return value

    return check


def choice(*options: object) -> Check:
    def check(value: object) -> object:
        if value not in options:
            raise Invalid("must be one of %s" % (", ".join(map(repr, options)),))
        return value

    return check


def hexbytes(length: int) -> Check:
    def check(value: object) -> bytes:
        if not isinstance(value, str):
            raise Invalid("must be a hex string of %d bytes" % (length,))
        try:
            raw = bytes.fromhex(value)
        except ValueError:
            raise Invalid("must be a hex string of %d bytes" % (length,)) from None
        if len(raw) != length:
            raise Invalid("must be %d bytes (%d hex digits)" % (length, 2 * length))
        return raw

    return check


def endpoint() -> Check:
    """
    A Twisted server endpoint description (tcp:8080:interface=127.0.0.1,
    ssl:..., systemd:...). Parsed, not listened on.
    """

    def check(value: object) -> str:
        if not isinstance(value, str):
            raise Invalid("must be a Twisted endpoint string such as 'tcp:8080'")
        if value.startswith("systemd:"):
            # the socket exists only in the process systemd starts (not in
            # ExecStartPre's --check): check the description, not the socket
            return _systemd_endpoint(value)
        try:
            serverFromString(MemoryReactor(), value)
        except Exception as e:
            raise Invalid(
                "not a valid Twisted endpoint description (%s)" % (str(e) or e.__class__.__name__,)
            ) from None
        return value

    return check


def _systemd_endpoint(value: str) -> str:
    args: dict[str, str] = {}
    for part in value.split(":")[1:]:
        key, sep, val = part.partition("=")
        if not sep or key not in ("domain", "index", "name") or key in args:
            raise Invalid("systemd endpoints take domain= and one of index= or name=")
        args[key] = val
    if args.get("domain") not in ("INET", "INET6", "UNIX"):
        raise Invalid("systemd endpoint domain must be INET, INET6 or UNIX")
    if ("index" in args) == ("name" in args):
        raise Invalid("systemd endpoints take exactly one of index= or name=")
    if "index" in args and not args["index"].isdigit():
        raise Invalid("systemd endpoint index must be a number")
    return value


def ip_address() -> Check:
    def check(value: object) -> str:
        if not isinstance(value, str):
            raise Invalid("must be an IP address string")
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            raise Invalid("must be an IP address") from None

    return check


def array(item: Check, minimum: int = 0) -> Check:
    def check(value: object) -> list[Any]:
        if not isinstance(value, list):
            raise Invalid("must be an array")
        if len(value) < minimum:
            raise Invalid("must have at least %d item(s)" % (minimum,))
        out: list[Any] = []
        for i, v in enumerate(value):
            try:
                out.append(item(v))
            except Invalid as e:
                raise Invalid("item %d: %s" % (i, e)) from None
        return out

    return check


# ---------------------------------------------------------------- sections


@dataclass
class Section:
    """
    A table's whitelist of keys. C{tables} are nested sections;
    C{arrays} are arrays of tables (C{[[x]]}), each item a Section.
    """

    fields: dict[str, Field] = field(default_factory=dict)
    tables: dict[str, Section] = field(default_factory=dict)
    arrays: dict[str, Section] = field(default_factory=dict)
    open_tables: bool = False

    def validate(
        self, data: object, path: KeyPath, errors: list[str], where: Where,
    ) -> dict[str, Any]:
        """
        Check C{data} (a dict) against this section; append error lines to
        C{errors}; return the normalised dict with defaults filled in.
        """
        out: dict[str, Any] = {}
        if not isinstance(data, dict):
            errors.append("%s: %s: must be a table" % (where(path), ".".join(path)))
            return out
        for key in data:
            if key not in self.fields and key not in self.tables and key not in self.arrays:
                if not self.open_tables:
                    errors.append(
                        "%s: %s: unknown key (known: %s)"
                        % (where(path + (key,)), ".".join(path + (key,)), ", ".join(self.known()))
                    )
        for key, f in self.fields.items():
            keypath = path + (key,)
            if key not in data:
                if f.default is REQUIRED:
                    errors.append("%s: %s: missing (required)" % (where(path), ".".join(keypath)))
                else:
                    out[key] = f.default
                continue
            try:
                out[key] = f.check(data[key])
            except Invalid as e:
                errors.append(
                    "%s: %s: %s, got %s"
                    % (where(keypath), ".".join(keypath), e, _show(data[key], f.secret))
                )
        for key, sub in self.tables.items():
            out[key] = sub.validate(data.get(key, {}), path + (key,), errors, where)
        for key, sub in self.arrays.items():
            items = data.get(key, [])
            if not isinstance(items, list):
                errors.append(
                    "%s: %s: must be an array of tables ([[%s]])"
                    % (where(path + (key,)), ".".join(path + (key,)), ".".join(path + (key,)))
                )
                continue
            out[key] = [
                sub.validate(item, path + ("%s[%d]" % (key, i),), errors, where)
                for i, item in enumerate(items)
            ]
        return out

    def known(self) -> list[str]:
        return sorted(list(self.fields) + list(self.tables) + list(self.arrays))


# ---------------------------------------------------------------- loading


def load_files(
    paths: Sequence[str | os.PathLike[str]], selectors: Mapping[KeyPath, str] | None = None,
) -> tuple[dict[str, Any], Where]:
    """
    Read and merge TOML files in order: a later file's table is merged key
    by key into the earlier one's (nested tables alike); any other value,
    arrays and arrays of tables included, replaces the earlier one whole.

    @param selectors: {table path: key}: a table whose keys depend on that
        key's value (C{[storage]} on C{backend}); a later file giving the
        key another value replaces the earlier table whole, so the keys of
        the other choice do not linger.
    @return: (merged dict, origin) where C{origin(keypath)} names the file
        that set the key (or its nearest table).
    @raise ConfigError: unreadable file or TOML syntax error.
    """
    merged: dict[str, Any] = {}
    origins: dict[KeyPath, str] = {}
    errors: list[str] = []
    for path in paths:
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except OSError as e:
            errors.append("%s: cannot read: %s" % (path, e.strerror or e))
            continue
        except tomllib.TOMLDecodeError as e:
            errors.append("%s: TOML syntax error: %s" % (path, e))
            continue
        except UnicodeDecodeError as e:
            errors.append("%s: not UTF-8 text (byte %d)" % (path, e.start))
            continue
        except RecursionError:
            errors.append("%s: TOML nested too deeply" % (path,))
            continue
        try:
            _merge(merged, data, (), os.fspath(path), origins, selectors or {})
        except RecursionError:
            errors.append("%s: TOML nested too deeply" % (path,))
    if errors:
        raise ConfigError(errors)
    first = os.fspath(paths[0]) if paths else "<no config>"

    def where(keypath: KeyPath) -> str:
        keypath = tuple(k.split("[")[0] for k in keypath)
        for n in range(len(keypath), -1, -1):
            if keypath[:n] in origins:
                return origins[keypath[:n]]
        return first

    return merged, where


def _merge(
    into: dict[str, Any], data: Mapping[str, Any], path: KeyPath, source: str,
    origins: dict[KeyPath, str], selectors: Mapping[KeyPath, str],
) -> None:
    for key, value in data.items():
        keypath = path + (key,)
        selector = selectors.get(keypath)
        if (selector is not None and isinstance(value, dict) and isinstance(into.get(key), dict)
                and selector in value and value[selector] != into[key].get(selector)):
            for known in [k for k in origins if k[:len(keypath)] == keypath]:
                del origins[known]
            into[key] = {}
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            origins.setdefault(keypath, source)
            _merge(into[key], value, keypath, source, origins, selectors)
        else:
            into[key] = value
            origins[keypath] = source
            if isinstance(value, dict):
                _note(value, keypath, source, origins)


def _note(
    data: Mapping[str, Any], path: KeyPath, source: str, origins: dict[KeyPath, str],
) -> None:
    for key, value in data.items():
        origins[path + (key,)] = source
        if isinstance(value, dict):
            _note(value, path + (key,), source, origins)
