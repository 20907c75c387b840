"""
The C{[admin]} section: the admin HTTP API's listener, its bearer token
and its TLS (mutual TLS with C{[admin.tls]} C{ca}).

    [admin]
    listen = "tcp:8089:interface=127.0.0.1"   # "" (the default): no admin API
    token_file = "var/admin.token"             # one line, mode 0600

    [admin.tls]                                # optional: HTTPS, and with ca
    certificate = "..."                        # a client certificate verified
    private_key = "..."                        # against it on every request
    ca = "..."
"""

import os
import stat

from mbmsd import config as c
from mbmsd import tls
from mbmsd.sip.listeners import _stream_endpoint_or_off as endpoint_or_off

ADMIN_SECTION = c.Section(
    fields={
        "listen": c.Field(endpoint_or_off(), "",
                          "admin HTTP API listener (JSON under /admin/v1/); '' turns it off"),
        "token_file": c.Field(c.string(r".+", "a file path"), None,
                              "file holding the API's bearer token (mode 0600); required "
                              "with listen"),
    },
    tables={"tls": tls.TLS_SECTION},
)

MIN_TOKEN = 16


class TokenFileError(ValueError):
    """The token file cannot be used; the message names admin.token_file."""


def read_token(path):
    """
    @return: the bearer token (str), the file's only line.
    @raise TokenFileError: unreadable, readable by group or others, or too
        short a token (the message never shows it).
    """
    try:
        mode = os.stat(path).st_mode
        with open(path, "r", encoding="utf-8") as f:
            token = f.read().strip()
    except (OSError, UnicodeDecodeError) as e:
        raise TokenFileError("admin.token_file: %s: %s"
                             % (path, getattr(e, "strerror", None) or e)) from None
    if stat.S_IMODE(mode) & 0o077:
        raise TokenFileError("admin.token_file: %s is readable by group or others: "
                             "chmod 600 it" % (path,))
    if len(token) < MIN_TOKEN or any(ch.isspace() or not ch.isprintable() for ch in token):
        raise TokenFileError("admin.token_file: %s must hold one token of at least %d "
                             "printable characters, no spaces" % (path, MIN_TOKEN))
    return token


def enabled(config):
    return bool((config.get("admin") or {}).get("listen"))


def check(section):
    """
    The checks across keys and files, as error lines (empty: usable).
    """
    errors = []
    if not section.get("listen"):
        return errors
    if not section.get("token_file"):
        errors.append("admin.token_file: required with admin.listen (the API's bearer token)")
    else:
        try:
            read_token(section["token_file"])
        except TokenFileError as e:
            errors.append(str(e))
    errors.extend(tls.check(section.get("tls") or {}, "admin.tls"))
    return errors
