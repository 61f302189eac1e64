"""Interop with a real IMAP client from Debian: mbsync (package isync) syncing both ways over STARTTLS and imaps."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from mailserver.tls import SELF_SIGNED_CERT
from tests.imap.imap_client import PASSWORD, imap_server, login, message, new_user

MBSYNC = "/usr/bin/mbsync"


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    with imap_server(tmp_path_factory.mktemp("imap-interop")) as s:
        yield s


def _config(tmp: Path, srv, user: str, *, tls: str) -> Path:
    maildir = tmp / "mail"
    maildir.mkdir(exist_ok=True)
    port = srv.port("imaps" if tls == "IMAPS" else "imap")
    cfg = tmp / "mbsyncrc"
    cfg.write_text(f"""
IMAPAccount test
Host 127.0.0.1
Port {port}
User {user}
Pass {PASSWORD}
SSLType {tls}
CertificateFile {Path(srv.config.data_dir) / SELF_SIGNED_CERT}
SystemCertificates no
AuthMechs LOGIN PLAIN

IMAPStore remote
Account test

MaildirStore local
Path {maildir}/
Inbox {maildir}/INBOX
SubFolders Verbatim

Channel sync
Far :remote:
Near :local:
Patterns *
Create Both
Expunge Both
SyncState *
""")
    return cfg


def _run(cfg: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, HOME=str(cfg.parent))
    proc = subprocess.run([MBSYNC, "-c", str(cfg), "-a"], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def _maildir_files(root: Path, folder: str) -> list[Path]:
    base = root / "mail" / folder
    return sorted(p for sub in ("cur", "new") for p in (base / sub).glob("*") if p.is_file())


@pytest.mark.parametrize("tls", ["STARTTLS", "IMAPS"])
def test_mbsync_two_way(srv, tmp_path, tls):
    """Server -> maildir (download, folders), maildir -> server (upload, flags, deletion), then a no-op resync."""
    user = new_user(srv)
    for i in range(3):
        srv.deliver(user, message(f"mbsync {i}", body=f"text {i}"))
    cfg = _config(tmp_path, srv, user, tls=tls)
    _run(cfg)
    inbox = _maildir_files(tmp_path, "INBOX")
    assert len(inbox) == 3
    assert (tmp_path / "mail" / "Sent").is_dir() and (tmp_path / "mail" / "Archive").is_dir()
    # Upload: a new local message, a local flag change, a local deletion.
    new_path = tmp_path / "mail" / "INBOX" / "new" / "1700000000.local1.host"
    new_path.write_bytes(message("from maildir", body="uploaded").replace(b"\r\n", b"\n"))
    first = inbox[0]
    flagged = first.with_name(first.name.split(":2,")[0] + ":2,FS") if ":2," in first.name else \
        first.with_name(first.name + ":2,FS")
    if first.parent.name == "new":
        flagged = first.parent.parent / "cur" / flagged.name
    first.rename(flagged)
    inbox[1].unlink()
    _run(cfg)
    c = login(srv, user, select="INBOX")
    typ, data = c.uid("SEARCH", None, "ALL")
    uids = data[0].split()
    assert len(uids) == 3  # 3 delivered - 1 deleted + 1 uploaded
    typ, data = c.search(None, "FLAGGED")
    assert len(data[0].split()) == 1
    typ, data = c.search(None, 'SUBJECT "from maildir"')
    assert len(data[0].split()) == 1
    # Server-side change flows back: delete one on the server, resync, the maildir follows.
    c.store(b"1", "+FLAGS", "(\\Deleted)")
    c.expunge()
    c.logout()
    _run(cfg)
    assert len(_maildir_files(tmp_path, "INBOX")) == 2
    _run(cfg)  # idempotent
