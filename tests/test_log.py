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
