"""
The node's log: its level (C{node.log_level}), its format
(C{node.log_format}) and the escaping of every value a peer sent.

Level: twistd's log observer writes every event it gets, so the level is
applied where mbmsd's events are made: L{Logger} drops an event below the
level before it is built or formatted, which is also what makes
per-transaction detail at debug free on a busy node. L{setLevel} changes it
at run time. Events of Twisted itself are not filtered, except the few
L{DEMOTED} ones the node's observer treats as debug.

Escaping: L{Logger} wraps every field of an mbmsd event, so whatever formats
it (the node's observer, twistd's own, a test's C{formatEvent}) gets text in
which each non-printable character (C0 and C1 controls, DEL, U+2028, lone
surrogates, ...) is written as C{\\xNN}, C{\\uNNNN} or C{\\UNNNNNNNN}: a peer
cannot end a line, start a forged one, or send a terminal escape sequence.
The node's observer (L{nodeObserver}) applies the same L{escape} to the
text of Twisted's own events and to tracebacks, so that no raw control
character reaches the log, and writes one line per event (a traceback's
lines follow, each starting with a tab, as twistd writes them) or, in the
C{json} format, one JSON object per line.
"""

import json
import math
import signal
import string
import sys
from datetime import datetime, timezone

from twisted.logger import (
    FileLogObserver,
    LogLevel,
    formatEvent,
    formatEventAsClassicLogText,
    formatTime,
    timeFormatRFC3339,
)
from twisted.logger import Logger as _TwistedLogger

LEVELS = ("debug", "info", "warn", "error")
DEFAULT = "info"
FORMATS = ("text", "json")

_RANK = {LogLevel.debug: 0, LogLevel.info: 1, LogLevel.warn: 2, LogLevel.error: 3,
         LogLevel.critical: 4}
_minimum = _RANK[LogLevel.levelWithName(DEFAULT)]

# twisted.web's notes about idle clients: routine, so debug
DEMOTED = frozenset({"Timing out client: {peer}", "Forcibly timing out client: {peer}"})

ROLES = ("bsf", "pcscf", "scf", "bmsc")


def setLevel(name):
    """Emit events of level C{name} (one of L{LEVELS}) and above from now on."""
    global _minimum
    _minimum = _RANK[LogLevel.levelWithName(name)]


def level():
    return LEVELS[_minimum]


# ---------------------------------------------------------------- escaping


def _escapeChar(ch):
    n = ord(ch)
    if n < 0x100:
        return "\\x%02x" % (n,)
    if n < 0x10000:
        return "\\u%04x" % (n,)
    return "\\U%08x" % (n,)


def escape(text):
    """
    C{text} with every non-printable character (str.isprintable: controls,
    separators other than the space, surrogates, unassigned) written as its
    Python escape. Printable text, the backslash included, is left as it is,
    so escaping twice changes nothing.
    """
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else _escapeChar(ch) for ch in text)


class _Escaped:
    """
    A field of an mbmsd event: formats, converts (C{!s}, C{!r}) and hands
    out attributes, items and call results (C{{a.b}}, C{{a[0]}}, C{{a()}})
    escaped.
    """

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def __format__(self, spec):
        return escape(format(self.value, spec))

    def __str__(self):
        return escape(str(self.value))

    def __repr__(self):
        return escape(repr(self.value))

    def __getattr__(self, name):
        return _escaped(getattr(self.value, name))

    def __getitem__(self, key):
        return _escaped(self.value[key])

    def __call__(self, *args, **kwargs):
        return _escaped(self.value(*args, **kwargs))


def _escaped(value):
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return escape(value)
    return _Escaped(value)


class Logger(_TwistedLogger):
    """
    A twisted.logger.Logger that honours the node's log level and escapes
    every field of its events (the C{log_*} keys are Twisted's own).
    """

    def emit(self, level, format=None, **kwargs):
        if _RANK.get(level, 4) < _minimum:
            return
        for key, value in kwargs.items():
            if not key.startswith("log_"):
                kwargs[key] = _escaped(value)
        _TwistedLogger.emit(self, level, format, **kwargs)


# ---------------------------------------------------------------- the node's observer


def _demoted(event):
    """The event as the node logs it, or None when it is not logged."""
    if event.get("log_format") in DEMOTED and \
            str(event.get("log_namespace", "")).startswith("twisted.web"):
        if _minimum > 0:
            return None
        event = dict(event, log_level=LogLevel.debug)
    return event


# the last second's text: every line of one second shares its timestamp, so
# strftime and the time-zone lookup run once a second, not once a line (they
# were a quarter of a log line's cost under the invite load, README Performance)
_lastSecond = [None, ""]


def _time(when):
    if when is None:
        return formatTime(when, timeFormat=timeFormatRFC3339)
    second = math.floor(when)
    if second != _lastSecond[0]:
        _lastSecond[:] = [second, formatTime(second, timeFormat=timeFormatRFC3339)]
    return _lastSecond[1]


def _traceback(failure):
    """The traceback's lines, escaped; the exception's message is one line."""
    from twisted.python.reflect import qual, safe_str

    text = failure.getTraceback()
    tail = "%s: %s\n" % (qual(failure.type), safe_str(failure.value))
    last = []
    if text.endswith(tail):
        text, last = text[:-len(tail)], [escape(tail[:-1])]
    return [escape(line) for line in text.rstrip("\n").split("\n") if line] + last


def formatText(event):
    """
    twistd's line (C{timestamp [namespace#level] message}), escaped, so one
    line per event; a traceback follows on lines that start with a tab.
    """
    event = _demoted(event)
    if event is None:
        return None
    failure = event.get("log_failure")
    plain = {k: v for k, v in event.items() if k != "log_failure"}
    text = formatEventAsClassicLogText(plain, formatTime=_time)
    if failure is None:
        return None if not text else escape(text[:-1]) + "\n"
    if not text:
        text = formatEventAsClassicLogText(dict(plain, log_format="Unhandled error"),
                                           formatTime=_time)
    try:
        lines = _traceback(failure)
    except Exception:
        lines = ["(the traceback could not be formatted)"]
    return "\n\t".join([escape(text[:-1])] + lines) + "\n"


def _role(namespace):
    parts = namespace.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "mbmsd" and parts[1] in ROLES else None


def _referenced(format):
    names = set()
    try:
        for _, field, _, _ in string.Formatter().parse(format or ""):
            if field:
                names.add(field.split(".")[0].split("[")[0].rstrip("()"))
    except ValueError:
        pass
    return names


def _jsonValue(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return escape(str(value))


def workerText(worker):
    """L{formatText} with C{[worker k]} after the timestamp (C{node.workers} > 1)."""
    tag = " [worker %d] [" % (worker,)

    def format(event):
        text = formatText(event)
        return text.replace(" [", tag, 1) if text else text

    return format


def jsonFormatter(node, worker=None):
    """
    A formatter of one JSON object per line: C{time} (RFC 3339, UTC),
    C{level}, C{node}, C{namespace}, C{role} (for a role's events),
    C{message} (the text line's message), and for mbmsd's events their
    fields (C{procedure}, C{peer}, C{result}, C{impi}, ...): each field the
    message names, and the other fields holding a string, number or
    boolean. A failure adds C{error} and C{traceback}. Every string is
    escaped as in the text format, so a line is always valid JSON.
    C{worker}: the worker number (C{node.workers} > 1), a C{worker} key.
    """

    def format(event):
        event = _demoted(event)
        if event is None:
            return None
        namespace = str(event.get("log_namespace", "-"))
        when = event.get("log_time")
        level = event.get("log_level")
        record = {
            "time": (datetime.fromtimestamp(when, timezone.utc).isoformat(timespec="milliseconds")
                     .replace("+00:00", "Z") if when is not None else None),
            "level": getattr(level, "name", "info"),
            "node": node,
            "namespace": escape(namespace),
        }
        if worker is not None:
            record["worker"] = worker
        role = _role(namespace)
        if role is not None:
            record["role"] = role
        record["message"] = escape(formatEvent(event))
        if namespace.startswith("mbmsd"):
            named = _referenced(event.get("log_format"))
            for key, value in event.items():
                if not isinstance(key, str) or key.startswith("log_") or key in record:
                    continue
                if key in named or value is None or isinstance(value, (str, int, float)):
                    record[escape(key)] = _jsonValue(value)
        failure = event.get("log_failure")
        if failure is not None:
            try:
                record["error"] = escape("%s: %s" % (failure.type.__name__,
                                                     failure.getErrorMessage()))
                record["traceback"] = "\n".join(_traceback(failure))
            except Exception:
                record["error"] = "(the failure could not be formatted)"
        return json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n"

    return format


def _logFile(options):
    # where twistd itself would write (twisted.scripts._twistd_unix
    # UnixAppLogger): stdout under --nodaemon without --logfile, or "-";
    # else a LogFile that SIGUSR1 rotates
    name = options.get("logfile") or ""
    if name == "-" or (not name and options.get("nodaemon")):
        return sys.stdout
    from twisted.python.logfile import LogFile

    logFile = LogFile.fromFullPath(name or "twistd.log")
    if not signal.getsignal(signal.SIGUSR1):
        def rotate(signum, frame):
            from twisted.internet import reactor

            reactor.callFromThread(logFile.rotate)

        signal.signal(signal.SIGUSR1, rotate)
    return logFile


_installed = {}


def nodeObserver():
    """
    twistd's C{--logger} (a dotted name, resolved by twistd after our
    options): the node's observer in the format L{installObserver} chose,
    writing where twistd would (C{--logfile}, C{--nodaemon}).
    """
    from mbmsd.workerid import worker_number

    options = _installed["options"]
    worker = worker_number()
    if _installed["format"] == "json":
        formatter = jsonFormatter(_installed["node"], worker)
    elif worker is not None:
        formatter = workerText(worker)
    else:
        formatter = formatText
    return FileLogObserver(_logFile(options), formatter)


def installObserver(serverOptions, node, format):
    """
    Make twistd log through L{nodeObserver}, unless its operator chose
    another (C{--logger}, C{--syslog}) or a daemon would log to stdout
    (twistd refuses that itself). mbmsd's events are escaped either way.

    @param serverOptions: twistd's options.
    @param node: the node's name (C{node.name}), a key of every JSON line.
    @param format: one of L{FORMATS}.
    @return: whether the node's observer was installed.
    """
    if serverOptions is None or serverOptions.get("logger") or serverOptions.get("syslog"):
        return False
    if serverOptions.get("logfile") == "-" and not serverOptions.get("nodaemon"):
        return False
    _installed.update(options=serverOptions, node=node, format=format)
    serverOptions["logger"] = __name__ + ".nodeObserver"
    return True
