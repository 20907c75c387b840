"""
Keys at rest (docs/design.md 5.4): K, OPc, the AKA vectors' XRES/CK/IK, Ks and MSKs
are sealed with AES-256-GCM under the node key before they reach a database
file or server, so a dump or a stolen backup shows no key in clear.

Each sealed value is bound to where it lives (table, column, row key) as
associated data: a value copied to another row or column does not open.
Nodes that share a database share the key file.
"""

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

VERSION = b"\x01"
NONCE_LENGTH = 12
KEY_LENGTH = 32


class SealError(Exception):
    """
    A sealed value does not open under this node key (another key file, or
    the value was altered or moved).
    """


class KeyFileError(ValueError):
    """
    The node key file cannot be used; the message names the config key.
    """


class Sealer:
    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_LENGTH:
            raise ValueError("the node key is %d bytes" % (KEY_LENGTH,))
        self._aead = AESGCM(key)

    def __repr__(self) -> str:
        return "<Sealer>"

    def seal(self, plaintext: bytes, context: str) -> bytes:
        nonce = os.urandom(NONCE_LENGTH)
        return VERSION + nonce + self._aead.encrypt(nonce, plaintext, context.encode("utf-8"))

    def unseal(self, blob: bytes, context: str) -> bytes:
        blob = bytes(blob)
        if len(blob) < 1 + NONCE_LENGTH + 16 or blob[:1] != VERSION:
            raise SealError("not a sealed value (%s)" % (context.split(":", 1)[0],))
        try:
            return self._aead.decrypt(blob[1:1 + NONCE_LENGTH], blob[1 + NONCE_LENGTH:],
                                      context.encode("utf-8"))
        except InvalidTag:
            raise SealError("sealed value does not open under this node key (%s)"
                            % (context.split(":", 1)[0],)) from None


def load_key(path: str, create: bool = True) -> bytes:
    """
    Read the node key file (64 hex digits), creating it with mode 0600 when
    missing and C{create} is true.

    @raise KeyFileError: the file is malformed, readable by others, or
        cannot be read or created; the message names C{storage.key_file}.
    """
    try:
        return _load_key(path, create)
    except KeyFileError:
        raise
    except OSError as e:
        raise KeyFileError("storage.key_file: %s: %s" % (path, e.strerror or e)) from None


def check_key_file(path: str) -> str | None:
    """
    What L{load_key} would refuse at start, for C{--check}: a missing file
    passes (the start creates it).

    @return: None, or the L{KeyFileError} message (naming C{storage.key_file}).
    """
    if not os.path.lexists(path):
        return None
    try:
        load_key(path, create=False)
    except KeyFileError as e:
        return str(e)
    return None


def _load_key(path: str, create: bool) -> bytes:
    try:
        with open(path, "r", encoding="ascii") as f:
            text = f.read().strip()
    except FileNotFoundError:
        if not create:
            raise
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, mode=0o700, exist_ok=True)
        key = os.urandom(KEY_LENGTH)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(key.hex() + "\n")
        return key
    if os.stat(path).st_mode & 0o077:
        raise KeyFileError("storage.key_file: %s is readable by group or others: "
                           "chmod 600 it" % (path,))
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise KeyFileError("storage.key_file: %s does not hold 64 hex digits"
                           % (path,)) from None
    if len(key) != KEY_LENGTH:
        raise KeyFileError("storage.key_file: %s does not hold 64 hex digits" % (path,))
    return key
