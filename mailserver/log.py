"""Logging: one line per event on stderr, as text or JSON lines (``[log] format``).

Code logs through ``twisted.logger.Logger`` with a short message format and named fields, e.g.
``log.info("delivered uid={uid} to {address}", uid=uid, address=address)``.  The text form is
``2026-11-22T10:00:00.123Z info mailserver.smtp.protocol: delivered uid=7 to a@example.org``; the JSON form has the
keys ``time``, ``level``, ``system``, ``msg`` and every named field.
"""

from __future__ import annotations

import json
import sys
import time
from typing import TextIO

from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    formatEvent,
    globalLogBeginner,
)

LEVELS = {"debug": LogLevel.debug, "info": LogLevel.info, "warn": LogLevel.warn, "error": LogLevel.error}


_last_second: tuple = (None, "")  # the last whole second _timestamp formatted, and its text (one tuple: threads)


def _timestamp(t: float) -> str:
    global _last_second
    whole = int(t // 1)
    last = _last_second
    if last[0] != whole:  # strftime once a second, not once a line
        last = _last_second = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
    return f"{last[1]}.{int((t % 1) * 1000):03d}Z"


def format_event(event: dict) -> str:
    """The event's text, as ``twisted.logger.formatEvent`` gives it.

    Most formats name plain fields (``"delivered uid={uid}"``): those are ``str.format_map`` of the event, the same
    PEP 3101 formatting Twisted does through ``string.Formatter`` in Python, at a fraction of the cost (one line per
    message logged).  Anything else (Twisted's ``{callable()}`` syntax, a flattened event, a format that does not
    apply) goes to ``formatEvent``, which also words the failures."""
    fmt = event.get("log_format")
    if type(fmt) is str and "()" not in fmt and "log_flattened" not in event:
        try:
            return fmt.format_map(event)
        except Exception:
            pass
    return formatEvent(event)


class LineObserver:
    def __init__(self, stream: TextIO, json_lines: bool):
        self.stream = stream
        self.json_lines = json_lines

    def __call__(self, event: dict) -> None:
        level = event.get("log_level", LogLevel.info).name
        system = event.get("log_namespace", "-")
        msg = format_event(event) or ""
        failure = event.get("log_failure")
        if failure is not None:
            msg = f"{msg} | {failure.getErrorMessage()}\n{failure.getTraceback()}"
        if self.json_lines:
            record = {"time": _timestamp(event.get("log_time", time.time())), "level": level, "system": system,
                      "msg": msg}
            for k, v in event.items():
                if not k.startswith("log_") and k not in record and isinstance(v, (str, int, float, bool, type(None))):
                    record[k] = v
            line = json.dumps(record, ensure_ascii=False)
        else:
            line = f"{_timestamp(event.get('log_time', time.time()))} {level} {system}: {msg}".replace("\n", "\n  ")
        try:
            self.stream.write(line + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            pass


_started = False


def start_logging(format: str = "text", level: str = "info", stream: TextIO | None = None) -> None:
    """Route Twisted's log events to ``stream`` (stderr).  Safe to call once per process."""
    global _started
    if _started:
        return
    _started = True
    observer = FilteringLogObserver(LineObserver(stream or sys.stderr, format == "json"),
                                    [LogLevelFilterPredicate(defaultLogLevel=LEVELS.get(level, LogLevel.info))])
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
