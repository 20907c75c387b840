"""
Errors that cross the boundary between roles (the ports of interfaces.py).
"""

from __future__ import annotations


class UnknownBTID(Exception):
    """
    Zn: the B-TID is unknown or its key has expired (TS 29.109
    DIAMETER_ERROR_TRANSACTION_IDENTIFIER_INVALID): the UE must bootstrap again.
    """


class NafNotAuthorized(Exception):
    """
    Zn: the asking peer is not a configured NAF for this NAF_Id.
    """


class StartupError(Exception):
    """
    The node cannot start for a reason the operator fixes (a port in use, a
    bad file): logged as one line without a traceback; the message names
    the config key.
    """


def listenFailed(key: str, description: str, error: BaseException) -> StartupError:
    """
    The L{StartupError} of a listener that could not bind C{description}
    (the value of config key C{key}), from the C{CannotListenError} (or
    other exception) C{error}.
    """
    socketError = getattr(error, "socketError", None)
    reason = getattr(socketError, "strerror", None) or str(socketError or error)
    return StartupError("%s: cannot listen on %s: %s" % (key, description, reason))


class ReloadRefused(Exception):
    """
    A reload (SIGHUP) that the node does not apply: one line naming the key;
    the node keeps running with its old config.
    """
