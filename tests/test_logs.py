"""
node.log_level: mbmsd's Loggers drop events below the level before they
reach any observer; Twisted's own events are not touched.
"""

import pytest
from twisted.logger import LogLevel, LogPublisher
from twisted.logger import Logger as TwistedLogger

from mbmsd import logs


@pytest.fixture
def events():
    seen = []
    publisher = LogPublisher(seen.append)
    yield publisher, seen
    logs.setLevel(logs.DEFAULT)


def emit_all(log):
    log.debug("d")
    log.info("i")
    log.warn("w")
    log.error("e")
    log.critical("c")


@pytest.mark.parametrize("name, expected", [
    ("debug", ["d", "i", "w", "e", "c"]),
    ("info", ["i", "w", "e", "c"]),
    ("warn", ["w", "e", "c"]),
    ("error", ["e", "c"]),
])
def test_events_below_the_level_are_dropped(events, name, expected):
    publisher, seen = events
    logs.setLevel(name)
    assert logs.level() == name
    emit_all(logs.Logger(namespace="t", observer=publisher))
    assert [e["log_format"] for e in seen] == expected


def test_failures_pass_every_level(events):
    publisher, seen = events
    logs.setLevel("error")
    try:
        1 / 0
    except ZeroDivisionError:
        logs.Logger(namespace="t", observer=publisher).failure("boom")
    assert [e["log_level"] for e in seen] == [LogLevel.critical]


def test_the_default_is_info_and_twisted_loggers_are_untouched(events):
    publisher, seen = events
    assert logs.level() == "info"
    logs.Logger(namespace="t", observer=publisher).debug("mine")
    TwistedLogger(namespace="t", observer=publisher).debug("twisted's")
    assert [e["log_format"] for e in seen] == ["twisted's"]


def test_class_attribute_loggers_keep_the_level(events):
    publisher, seen = events

    class Thing:
        log = logs.Logger(observer=publisher)

    Thing().log.debug("hidden")
    Thing().log.info("shown")
    assert [e["log_format"] for e in seen] == ["shown"]
    assert isinstance(Thing().log, logs.Logger)
