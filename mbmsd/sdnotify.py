"""
The service manager notification protocol of sd_notify(3): under a
C{Type=notify} unit systemd puts the address of an AF_UNIX datagram socket
in C{$NOTIFY_SOCKET}, and the service sends it newline-separated
C{VARIABLE=value} assignments: C{READY=1} once it serves, C{STOPPING=1} when
it begins to stop. An address starting with '@' is in the abstract
namespace (the '@' stands for a leading NUL byte).

Without C{$NOTIFY_SOCKET} (not under systemd) nothing is sent. A failure to
send is logged and never stops the node: the service manager's timeouts
handle a notification that did not arrive.
"""

import os
import socket

from mbmsd.logs import Logger

log = Logger(namespace="mbmsd.sdnotify")


def address(environ=None):
    """
    @return: the socket address named by C{$NOTIFY_SOCKET} (str for a path,
        bytes with a leading NUL for the abstract namespace), or None.
    """
    value = (os.environ if environ is None else environ).get("NOTIFY_SOCKET", "")
    if value.startswith("@") and len(value) > 1:
        return b"\0" + value[1:].encode("utf-8")
    if value.startswith("/"):
        return value
    # unset, empty, or a form this module does not speak (vsock:): nothing
    return None


def notify(*assignments, environ=None):
    """
    Send one notification, e.g. C{notify("READY=1", "STATUS=serving")}.

    @return: True when the datagram was sent, False when there is no
        notification socket or sending failed (logged).
    """
    target = address(environ)
    if target is None:
        return False
    message = "\n".join(assignments).encode("utf-8")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(target)
            s.sendall(message)
    except OSError as e:
        log.warn("cannot notify the service manager ({what}): {error}",
                 what=", ".join(a.split("=", 1)[0] for a in assignments), error=e)
        return False
    return True
