"""Interop: Debian's swaks submits over STARTTLS with AUTH, and delivers to the MX with pipelining."""

from __future__ import annotations

import shutil
import subprocess

from tests.harness import running_server

SWAKS = shutil.which("swaks") or "/usr/bin/swaks"


def _swaks_has_tls() -> bool:
    """swaks needs Net::SSLeay (Debian libnet-ssleay-perl) for --tls; without it, AUTH runs in plaintext, which
    our submission listener allows from loopback only."""
    return subprocess.run(["perl", "-MNet::SSLeay", "-e", "1"], capture_output=True).returncode == 0


TLS = ["--tls"] if _swaks_has_tls() else []


def run_swaks(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([SWAKS, "--server", "127.0.0.1", "--helo", "client.example", "--timeout", "20", *args],
                          capture_output=True, text=True, timeout=60)


def test_swaks_submission_starttls_auth(tmp_path):
    with running_server(tmp_path, listeners=("submission", "smtp")) as s:
        s.add_user("alice@example.test", "secret")
        s.add_user("bob@example.test", "pw")
        r = run_swaks("--port", str(s.port("submission")), *TLS, "--auth", "PLAIN",
                      "--auth-user", "alice@example.test", "--auth-password", "secret",
                      "--from", "alice@example.test", "--to", "bob@example.test",
                      "--header", "Subject: from swaks", "--body", "hello from swaks")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "250 2.0.0 Message accepted" in r.stdout
        r = run_swaks("--port", str(s.port("smtp")), "--pipeline", "--from", "x@example.net",
                      "--to", "bob@example.test", "--body", "pipelined")
        assert r.returncode == 0, r.stdout + r.stderr
        acct = s.store.get_account("bob@example.test")
        mb = s.store.get_mailbox(acct.id, "INBOX")
        assert mb.message_count == 2
        # swaks reports a refused sender with a non-zero exit code.
        r = run_swaks("--port", str(s.port("submission")), *TLS, "--auth", "LOGIN",
                      "--auth-user", "alice@example.test", "--auth-password", "secret",
                      "--from", "ceo@example.test", "--to", "bob@example.test")
        assert r.returncode != 0 and "553 5.7.1" in r.stdout
