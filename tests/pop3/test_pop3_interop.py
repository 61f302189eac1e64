"""Interop with real POP3 clients: Debian's fetchmail and getmail6, with keep and without keep."""

import os
import subprocess
from pathlib import Path

import pytest

from tests.harness import running_server

ALICE = "alice@example.test"
PW = "interop pass"

FETCHMAIL = "/usr/bin/fetchmail"
GETMAIL = "/usr/bin/getmail"


def messages() -> list[bytes]:
    out = []
    for i in range(1, 4):
        body = b"Line one of %d\r\n.starts with a dot\r\n..two dots\r\n.\r\nlast\r\n" % i
        out.append(b"From: sender@example.org\r\nTo: alice@example.test\r\nSubject: interop %d\r\n"
                   b"Message-ID: <interop%d@example.org>\r\n\r\n" % (i, i) + body)
    return out


@pytest.fixture
def srv(tmp_path):
    with running_server(tmp_path, listeners=("pop3", "pop3s")) as s:
        s.add_user(ALICE, PW)
        for m in messages():
            s.deliver(ALICE, m)
        yield s


def inbox_count(s) -> int:
    acct = s.store.get_account(ALICE)
    return len(s.store.list_messages(s.store.get_mailbox(acct.id, "INBOX").id))


def cert_path(s) -> str:
    return str(Path(s.config.data_dir) / "tls" / "selfsigned-cert.pem")


def contains_all(fetched: list[bytes]) -> None:
    """Each message arrived unstuffed and complete (clients hand LF line ends to their MDA)."""
    want = [m.replace(b"\r\n", b"\n") for m in messages()]
    got = [f.replace(b"\r\n", b"\n") for f in fetched]
    for w in want:
        body = w.split(b"\n\n", 1)[1]
        assert any(g.endswith(body) and b"Subject: interop" in g and w.split(b"\n")[2] in g for g in got), w


# --------------------------------------------------------------------------------------------- fetchmail


def run_fetchmail(s, tmp_path: Path, *, keep: bool, implicit: bool) -> tuple[int, list[bytes], str]:
    out_dir = tmp_path / "fetched"
    out_dir.mkdir(exist_ok=True)
    mda = tmp_path / "mda.sh"
    mda.write_text(f'#!/bin/sh\ncat > "$(mktemp {out_dir}/msg.XXXXXX)"\n')
    mda.chmod(0o755)
    port = s.port("pop3s" if implicit else "pop3")
    tls = "ssl" if implicit else "sslproto tls1.2+"
    rc = tmp_path / "fetchmailrc"
    rc.write_text(
        "set no syslog\n"
        f"poll 127.0.0.1 service {port} protocol pop3 uidl\n"
        f'  user "{ALICE}" there with password "{PW}" is "nobody" here\n'
        f"  {'keep' if keep else 'nokeep'} {tls} sslcertck sslcertfile \"{cert_path(s)}\" sslcommonname localhost\n"
        f'  mda "{mda}"\n')
    rc.chmod(0o600)
    env = dict(os.environ, HOME=str(tmp_path), FETCHMAILHOME=str(tmp_path))
    p = subprocess.run([FETCHMAIL, "-f", str(rc), "--idfile", str(tmp_path / "fetchids"), "--nodetach", "-v"],
                       capture_output=True, text=True, env=env, timeout=60)
    fetched = [f.read_bytes() for f in sorted(out_dir.iterdir())]
    for f in out_dir.iterdir():
        f.unlink()
    return p.returncode, fetched, p.stdout + p.stderr


def test_fetchmail_keep_over_stls(srv, tmp_path):
    """fetchmail with keep over STLS: downloads all, leaves them; a second run finds nothing new (UIDL)."""
    code, fetched, log = run_fetchmail(srv, tmp_path, keep=True, implicit=False)
    assert code == 0, log
    assert "STLS" in log or "TLS" in log, log
    assert len(fetched) == 3, log
    contains_all(fetched)
    assert inbox_count(srv) == 3
    code, fetched, log = run_fetchmail(srv, tmp_path, keep=True, implicit=False)
    assert code == 1 and fetched == [], log  # 1 = no new mail
    assert inbox_count(srv) == 3


def test_fetchmail_nokeep_over_implicit_tls(srv, tmp_path):
    """fetchmail without keep over pop3s: downloads all and the server's copies are removed."""
    code, fetched, log = run_fetchmail(srv, tmp_path, keep=False, implicit=True)
    assert code == 0, log
    assert len(fetched) == 3, log
    contains_all(fetched)
    assert inbox_count(srv) == 0


# --------------------------------------------------------------------------------------------- getmail6


def run_getmail(s, tmp_path: Path, *, delete: bool, implicit: bool) -> tuple[int, list[bytes], str]:
    maildir = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    gdir = tmp_path / "getmail"
    gdir.mkdir(exist_ok=True)
    if implicit:
        retriever = (f"type = SimplePOP3SSLRetriever\nserver = 127.0.0.1\nport = {s.port('pop3s')}\n"
                     f"ca_certs = {cert_path(s)}\nssl_cert_hostname = localhost\n")
    else:
        retriever = f"type = SimplePOP3Retriever\nserver = 127.0.0.1\nport = {s.port('pop3')}\n"
    rc = gdir / "getmailrc"
    rc.write_text(
        "[retriever]\n" + retriever + f"username = {ALICE}\npassword = {PW}\n\n"
        # MDA_external (not Maildir): getmail refuses Maildir delivery as root, which CI containers may be.
        f"[destination]\ntype = MDA_external\npath = /bin/sh\n"
        f"arguments = (\"-c\", \"cat > $(mktemp {maildir}/new/msg.XXXXXX)\")\nallow_root_commands = true\n\n"
        f"[options]\nverbose = 2\nread_all = false\ndelete = {'true' if delete else 'false'}\n"
        "message_log_syslog = false\n")
    p = subprocess.run([GETMAIL, f"--getmaildir={gdir}", f"--rcfile={rc}"], capture_output=True, text=True,
                       timeout=60, env=dict(os.environ, HOME=str(tmp_path)))
    new = sorted((maildir / "new").iterdir())
    fetched = [f.read_bytes() for f in new]
    for f in new:
        f.unlink()
    return p.returncode, fetched, p.stdout + p.stderr


def test_getmail_keep_over_plain_pop3(srv, tmp_path):
    """getmail6 leaving mail on the server: all three once, nothing new on the next run (UIDL stable)."""
    code, fetched, log = run_getmail(srv, tmp_path, delete=False, implicit=False)
    assert code == 0, log
    assert len(fetched) == 3, log
    contains_all(fetched)
    assert inbox_count(srv) == 3
    code, fetched, log = run_getmail(srv, tmp_path, delete=False, implicit=False)
    assert code == 0 and fetched == [], log
    assert inbox_count(srv) == 3


def test_getmail_delete_over_implicit_tls(srv, tmp_path):
    """getmail6 with delete over pop3s (certificate verified): downloads all, the server keeps none."""
    code, fetched, log = run_getmail(srv, tmp_path, delete=True, implicit=True)
    assert code == 0, log
    assert len(fetched) == 3, log
    contains_all(fetched)
    assert inbox_count(srv) == 0
