"""Interop with real ManageSieve clients: Debian's sieve-connect (over STARTTLS, checking our certificate) and
sievelib's client: upload, activate, list, a broken script refused with its line; SMTP deliveries then follow the
script (checked over IMAP)."""

import imaplib
import os
import smtplib
import subprocess
from pathlib import Path

import pytest
from sievelib.managesieve import Client

from tests.harness import running_server

BOB = "bob@example.test"
PW = "interop pass"
SIEVE_CONNECT = "/usr/bin/sieve-connect"

SCRIPT = '''require ["fileinto", "imap4flags"];
# invoices go to their folder, flagged
if header :contains "subject" "invoice" {
  fileinto :flags "\\\\Flagged" "Invoices";
  stop;
}
'''
BROKEN = '''require "fileinto";

if header :contains "subject" "invoice" {
  fileinto "Invoices"
}
'''


@pytest.fixture
def srv(tmp_path):
    with running_server(tmp_path, listeners=("smtp", "imap", "managesieve")) as s:
        acct = s.add_user(BOB, PW)
        s.store.create_mailbox(acct.id, "Invoices")
        yield s


def send(srv, subject: str) -> None:
    with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as c:
        c.sendmail("billing@remote.test", [BOB],
                   f"From: billing@remote.test\r\nTo: {BOB}\r\nSubject: {subject}\r\n\r\nhello\r\n".encode())


def subjects_over_imap(srv, mailbox: str) -> list[tuple[str, bytes]]:
    im = imaplib.IMAP4("127.0.0.1", srv.port("imap"))
    try:
        im.login(BOB, PW)
        typ, data = im.select(mailbox, readonly=True)
        assert typ == "OK", data
        if int(data[0]) == 0:
            return []
        typ, data = im.fetch("1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        out = []
        for part in data:
            if isinstance(part, tuple):
                out.append((part[1].decode().split(":", 1)[1].strip(), part[0]))
        return out
    finally:
        im.logout()


def deliveries_follow_the_script(srv) -> None:
    send(srv, "Your invoice 42")
    send(srv, "lunch?")
    srv.wait_for(lambda: len(subjects_over_imap(srv, "Invoices")) == 1)
    (subject, meta), = subjects_over_imap(srv, "Invoices")
    assert subject == "Your invoice 42" and b"\\Flagged" in meta
    srv.wait_for(lambda: [s for s, _ in subjects_over_imap(srv, "INBOX")] == ["lunch?"])


# --------------------------------------------------------------------------------------------- sieve-connect


def sieve_connect(srv, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    cert = Path(srv.config.data_dir) / "tls" / "selfsigned-cert.pem"
    cmd = [SIEVE_CONNECT, "--server", "127.0.0.1", "--port", str(srv.port("managesieve")), "--user", BOB,
           "--passwordfd", "0", "--tlscafile", str(cert), "--tlshostname", "localhost", "--noclearauth", *args]
    return subprocess.run(cmd, input=PW + "\n", capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, HOME=str(tmp_path)))


def test_sieve_connect(srv, tmp_path):
    local = tmp_path / "invoices.sieve"
    local.write_text(SCRIPT)
    p = sieve_connect(srv, tmp_path, "--localsieve", str(local), "--remotesieve", "invoices", "--upload")
    assert p.returncode == 0, p.stderr
    p = sieve_connect(srv, tmp_path, "--remotesieve", "invoices", "--activate")
    assert p.returncode == 0, p.stderr
    p = sieve_connect(srv, tmp_path, "--list")
    assert p.returncode == 0, p.stderr
    assert p.stdout.split("\n")[0].strip() == '"invoices" ACTIVE'
    broken = tmp_path / "broken.sieve"
    broken.write_text(BROKEN)
    p = sieve_connect(srv, tmp_path, "--localsieve", str(broken), "--remotesieve", "broken", "--upload")
    assert p.returncode != 0
    assert 'NO "line 5, column 1: ' in p.stderr, p.stderr
    p = sieve_connect(srv, tmp_path, "--remotesieve", "invoices", "--localsieve", str(tmp_path / "back.sieve"),
                      "--download")
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "back.sieve").read_text() == SCRIPT
    deliveries_follow_the_script(srv)


# --------------------------------------------------------------------------------------------- sievelib


def test_sievelib(srv, monkeypatch):
    # sievelib verifies the certificate against the default CA store: make that our self-signed certificate.
    monkeypatch.setenv("SSL_CERT_FILE", str(Path(srv.config.data_dir) / "tls" / "selfsigned-cert.pem"))
    c = Client("127.0.0.1", srv.port("managesieve"))
    assert c.connect(BOB, PW, starttls=True, authmech="PLAIN")
    assert "fileinto" in c.get_sieve_capabilities()
    assert c.havespace("invoices", len(SCRIPT))
    assert c.putscript("invoices", SCRIPT)
    assert c.checkscript(SCRIPT)
    assert not c.putscript("broken", BROKEN)
    assert c.errmsg.startswith(b"line 5, column 1: "), c.errmsg
    assert c.setactive("invoices")
    assert c.listscripts() == ("invoices", [])
    # sievelib sends LF as CRLF and drops the final line end of what it gets back
    assert c.getscript("invoices").replace("\r\n", "\n") == SCRIPT.rstrip("\n")
    assert c.putscript("spare", "keep;\n")
    assert c.renamescript("spare", "other")
    assert c.listscripts() == ("invoices", ["other"])
    assert not c.deletescript("invoices")  # the active one
    assert c.deletescript("other")
    c.logout()
    deliveries_follow_the_script(srv)
