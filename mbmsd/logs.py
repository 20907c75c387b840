"""
The node's log level (C{node.log_level}).

twistd's log observer writes every event it gets, so the level is applied
where mbmsd's events are made: L{Logger} drops an event below the level
before it is built or formatted, which is also what makes per-transaction
detail at debug free on a busy node. Events of Twisted itself are not
filtered.
"""

from twisted.logger import Logger as _TwistedLogger
from twisted.logger import LogLevel

LEVELS = ("debug", "info", "warn", "error")
DEFAULT = "info"

_RANK = {LogLevel.debug: 0, LogLevel.info: 1, LogLevel.warn: 2, LogLevel.error: 3,
         LogLevel.critical: 4}
_minimum = _RANK[LogLevel.levelWithName(DEFAULT)]


def setLevel(name):
    """Emit events of level C{name} (one of L{LEVELS}) and above from now on."""
    global _minimum
    _minimum = _RANK[LogLevel.levelWithName(name)]


def level():
    return LEVELS[_minimum]


class Logger(_TwistedLogger):
    """A twisted.logger.Logger that honours the node's log level."""

    def emit(self, level, format=None, **kwargs):
        if _RANK.get(level, 4) < _minimum:
            return
        _TwistedLogger.emit(self, level, format, **kwargs)
