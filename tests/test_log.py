"""One line per event, text or JSON lines."""

from __future__ import annotations

import io
import json

from twisted.logger import Logger, LogPublisher

from mailserver.log import LineObserver


def _emit(json_lines: bool) -> str:
    out = io.StringIO()
    pub = LogPublisher(LineObserver(out, json_lines))
    log = Logger(namespace="mailserver.smtp", observer=pub)
    log.info("delivered uid={uid} to {address}", uid=7, address="a@example.test")
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        log.failure("delivery failed")
    return out.getvalue()


def test_text_lines_are_greppable():
    text = _emit(False)
    first = text.splitlines()[0]
    assert first.endswith(" info mailserver.smtp: delivered uid=7 to a@example.test")
    # A traceback stays attached to its event: continuation lines are indented.
    assert all(line.startswith("  ") for line in text.splitlines()[2:] if line)


def test_json_lines_have_named_fields():
    lines = _emit(True).splitlines()
    assert len(lines) == 2  # one JSON object per event, even with a multi-line traceback
    ev = json.loads(lines[0])
    assert ev["level"] == "info" and ev["system"] == "mailserver.smtp"
    assert ev["msg"] == "delivered uid=7 to a@example.test" and ev["uid"] == 7 and ev["address"] == "a@example.test"
    err = json.loads(lines[1])
    assert err["level"] == "critical" and "ValueError" in err["msg"]


class _Obj:
    name = "attr"

    def __repr__(self):
        return "<obj>"


def test_event_text_is_what_twisted_formats():
    """format_event's quick path (str.format_map) gives formatEvent's text, and the rest goes to formatEvent."""
    from twisted.logger import formatEvent

    from mailserver.log import format_event

    obj = _Obj()
    events = [
        {"log_format": "delivered uid={uid} to {address}", "uid": 7, "address": "a@example.test"},
        {"log_format": "{n:5d}|{f:.2f}|{s!r}|{o.name}|{d[k]}|{{literal}}", "n": 3, "f": 1.5, "s": "x", "o": obj,
         "d": {"k": "v"}},
        {"log_format": "call {f()} here", "f": lambda: "called"},
        {"log_format": "missing {nothing}"},
        {"log_format": "positional {} {0}"},
        {"log_format": "bad {x:zz}", "x": 1},
        {"log_format": b"bytes {x}", "x": 1},
        {"log_format": None},
        {},
        {"log_format": "{o!r} {o!s}", "o": obj},
    ]
    for ev in events:
        assert format_event(ev) == formatEvent(ev), ev


def test_timestamps_across_seconds():
    import time

    from mailserver.log import _timestamp

    for t in (0.0, 1.9996, 2.0, 1764633600.123, 1764633600.999, 1764633601.0, 1764633599.5):
        assert _timestamp(t) == time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int((t % 1) * 1000):03d}Z"
