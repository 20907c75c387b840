"""
node.log_level: mbmsd's Loggers drop events below the level before they
reach any observer; Twisted's own events are not touched.
"""

import pytest
from twisted.logger import Logger as TwistedLogger
from twisted.logger import LogLevel, LogPublisher

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


# ---------------------------------------------------------------- escaping (issue 12 item 3)

HOSTILE = "a\r\nb\x1b[31mc\x00d\x7fe\x85f\u2028g\x9b"


def test_escape_writes_every_non_printable_character_as_its_escape():
    # written out by hand: C0 controls, ESC, NUL, DEL, C1 (NEL, CSI), U+2028
    assert logs.escape(HOSTILE) == "a\\x0d\\x0ab\\x1b[31mc\\x00d\\x7fe\\x85f\\u2028g\\x9b"
    assert logs.escape("\ud800 \U000e0001 \t") == "\\ud800 \\U000e0001 \\x09"
    # printable text (non-ASCII, a backslash) is left alone, so twice is once
    assert logs.escape("é ü \\x41 日本") == "é ü \\x41 日本"
    assert logs.escape(logs.escape(HOSTILE)) == logs.escape(HOSTILE)


class _Peerish:
    def __init__(self, text):
        self.text = text

    def __str__(self):
        return "str:" + self.text

    def __repr__(self):
        return "repr:" + self.text

    def call(self):
        return "call:" + self.text


def test_every_field_of_an_mbmsd_event_is_escaped_however_it_is_formatted(events):
    from twisted.logger import formatEvent

    publisher, seen = events
    log = logs.Logger(namespace="mbmsd.t", observer=publisher)
    obj = _Peerish("\n\x1b")
    log.info("{s} {o} {o!r} {o.text} {o.call()} {d[k]} {n:03d} {e}",
             s="x\ny", o=obj, d={"k": "\x00"}, n=7, e=ValueError("bad \r\n header"))
    [event] = seen
    assert formatEvent(event) == (
        "x\\x0ay str:\\x0a\\x1b repr:\\x0a\\x1b \\x0a\\x1b call:\\x0a\\x1b \\x00 007 "
        "bad \\x0d\\x0a header")
    assert event["n"] == 7 and event["s"] == "x\\x0ay"


def _failureEvent():
    from twisted.python.failure import Failure

    try:
        raise ValueError("peer said \x1b[2J\nforged line")
    except ValueError:
        return Failure()


def test_the_text_format_escapes_twisted_events_and_tracebacks():
    from twisted.logger import Logger as TwistedLogger
    from twisted.logger import LogPublisher

    out = []
    log = TwistedLogger(namespace="twisted.web.t", observer=LogPublisher(out.append))
    log.info("from twisted: {v}", v="\x1b]0;title\x07\u2028")
    log.failure("oops {v}", _failureEvent(), v="\r")
    texts = [logs.formatText(e) for e in out]
    first, second = texts
    assert first.endswith("] from twisted: \\x1b]0;title\\x07\\u2028\n")
    assert first.count("\n") == 1
    lines = second.split("\n")
    assert lines[0].endswith("] oops \\x0d")
    # the traceback follows on tab-led lines, the exception message on one
    assert all(line.startswith("\t") for line in lines[1:-1]) and lines[-1] == ""
    assert any("peer said \\x1b[2J\\x0aforged line" in line for line in lines)
    for text in texts:
        assert all(ch.isprintable() for ch in text.replace("\n", "").replace("\t", ""))


def test_the_json_format_is_one_valid_object_per_line_with_the_fields_as_keys(events):
    import json

    publisher, seen = events
    log = logs.Logger(namespace="mbmsd.bsf.zn", observer=publisher)
    log.warn("Zn from {peer}: {code} {result} btid={btid}", peer="192.0.2.1", code=404,
             result="unknown_btid", btid=HOSTILE, procedure="zn", impi=None,
             unnamed=_Peerish("hidden"), ratio=float("nan"))
    log.failure("Zn request failed {x}", _failureEvent(), x=b"\x1b")
    fmt = logs.jsonFormatter("node-1")
    lines = [fmt(e) for e in seen]
    for line in lines:
        assert line.endswith("\n") and line.count("\n") == 1
        assert all(ch.isprintable() for ch in line[:-1])
    record = json.loads(lines[0])
    assert record["level"] == "warn" and record["node"] == "node-1"
    assert record["namespace"] == "mbmsd.bsf.zn" and record["role"] == "bsf"
    assert record["procedure"] == "zn" and record["peer"] == "192.0.2.1"
    assert record["result"] == "unknown_btid" and record["code"] == 404
    assert record["impi"] is None
    assert record["btid"] == logs.escape(HOSTILE)
    assert record["message"] == "Zn from 192.0.2.1: 404 unknown_btid btid=" + logs.escape(HOSTILE)
    assert record["ratio"] == "nan"
    # an object the message does not name stays out (it could hold anything)
    assert "unnamed" not in record
    assert record["time"].endswith("Z")
    failed = json.loads(lines[1])
    assert failed["level"] == "critical" and failed["x"] == "b'\\x1b'"
    assert failed["error"] == "ValueError: peer said \\x1b[2J\\x0aforged line"
    assert "Traceback" in failed["traceback"]


def test_timing_out_client_is_debug(events):
    from twisted.logger import Logger as TwistedLogger
    from twisted.logger import LogPublisher

    out = []
    log = TwistedLogger(namespace="twisted.web.http.HTTPChannel", observer=LogPublisher(out.append))
    log.info("Timing out client: {peer}", peer="IPv4Address(TCP, '127.0.0.1', 1)")
    [event] = out
    assert logs.formatText(event) is None
    assert logs.jsonFormatter("n")(event) is None
    logs.setLevel("debug")
    assert "[twisted.web.http.HTTPChannel#debug] Timing out client" in logs.formatText(event)


@pytest.mark.parametrize("when", [1_700_000_000.0, 1_700_000_000.999, 1_700_000_001.25,
                                  1_700_000_000.5, 0.75])
def test_the_text_timestamp_is_twisteds_rfc3339_of_that_second_however_often_it_is_asked(when):
    from twisted.logger import formatTime, timeFormatRFC3339

    # asked twice and after another second: the cached text is the right second's
    for _ in range(2):
        assert logs._time(when) == formatTime(when, timeFormat=timeFormatRFC3339)
        assert logs._time(when + 1) == formatTime(when + 1, timeFormat=timeFormatRFC3339)
    assert logs._time(None) == formatTime(None, timeFormat=timeFormatRFC3339)
    event = {"log_format": "x", "log_time": when, "log_namespace": "mbmsd.t",
             "log_level": LogLevel.info, "log_system": "-"}
    assert logs.formatText(event).startswith(formatTime(when, timeFormat=timeFormatRFC3339))
