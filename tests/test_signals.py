"""Signals sent to a running `mailserver serve` (a real process): SIGHUP is logged and ignored, SIGTERM stops it."""

from __future__ import annotations

import imaplib
import os
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.processes import popen

ROOT = Path(__file__).resolve().parents[1]
HUP_LINE = "SIGHUP received; reload is not supported yet, ignoring"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Lines:
    """Collects a stream's lines in a thread, so the test can wait for one without blocking on a read."""

    def __init__(self, stream):
        self.lines: list[str] = []
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            with self.cond:
                self.lines.append(line)
                self.cond.notify_all()
        with self.cond:
            self.lines.append("")  # end of stream
            self.cond.notify_all()

    def count(self, text: str) -> int:
        with self.cond:
            return sum(text in line for line in self.lines)

    def wait_for(self, text: str, count: int = 1, timeout: float = 60) -> bool:
        """True once ``count`` lines contain ``text``; False when the stream ends (the process died) or on timeout."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                if sum(text in line for line in self.lines) >= count:
                    return True
                if self.lines and self.lines[-1] == "":
                    return False
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(left)

    def text(self) -> str:
        with self.cond:
            return "".join(self.lines)


def test_sighup_is_logged_and_ignored(tmp_path):
    """`kill -HUP` (systemctl reload, log rotation) leaves the server running: one warning line per signal, SMTP and
    IMAP still answer afterwards, and SIGTERM still stops it cleanly."""
    smtp_port, imap_port = _free_port(), _free_port()
    conf = tmp_path / "m.toml"
    conf.write_text(f'hostname = "mail.example.test"\ndata_dir = "data"\n[server]\nworkers = 1\n'
                    f'[listen]\nsmtp = ["127.0.0.1:{smtp_port}"]\nimap = ["127.0.0.1:{imap_port}"]\n'
                    f'[[domain]]\nname = "example.test"\n')
    proc = popen([sys.executable, "-m", "mailserver", "--config", str(conf), "serve"],
                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        out, err = _Lines(proc.stdout), _Lines(proc.stderr)
        assert out.wait_for("Stop with Ctrl-C"), out.text() + err.text()
        assert err.wait_for(f"listening imap on 127.0.0.1:{imap_port}"), err.text()
        for n in (1, 2):
            os.kill(proc.pid, signal.SIGHUP)
            assert err.wait_for(HUP_LINE, count=n), (proc.poll(), err.text())
        assert proc.poll() is None, err.text()
        assert err.count(HUP_LINE) == 2
        line = next(x for x in err.text().splitlines() if HUP_LINE in x)
        assert " warn mailserver.cli.serve: " in line, line
        # Still serving: an SMTP session and an IMAP greeting.
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=30) as s:
            assert s.ehlo("client.example.test")[0] == 250
            assert s.noop()[0] == 250
        with imaplib.IMAP4("127.0.0.1", imap_port, timeout=30) as im:
            assert im.noop()[0] == "OK"
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert err.wait_for("stopped"), err.text()
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
