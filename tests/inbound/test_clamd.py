"""clamd (Debian's clamav-daemon, a private instance with the EICAR signature written by the test) scans every
received message at the end of DATA: a virus is refused with 554 5.7.1, as a plain part, in a zip attachment or
base64-encoded; authenticated submission is scanned too; action "quarantine" holds it with the virus's name."""

from __future__ import annotations

import base64
import imaplib
import io
import zipfile

import pytest

from tests.harness import running_server
from tests.inbound.daemons import EICAR, instream
from tests.inbound.mail import PW, copies, message, send


def _zip(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(name, data)
    return buf.getvalue()


def _b64(data: bytes) -> bytes:
    return base64.encodebytes(data).replace(b"\n", b"\r\n")


def _multipart(part: bytes) -> bytes:
    return message("with attachment", extra=b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=XX\r\n",
                   body=b"--XX\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--XX\r\n" + part +
                   b"\r\n--XX--\r\n")


INFECTED = {
    "plain part": message("plain", body=EICAR + b"\r\n"),
    "text part of a multipart": _multipart(b"Content-Type: text/plain\r\n\r\n" + EICAR),
    "zip attachment": _multipart(b"Content-Type: application/zip\r\nContent-Transfer-Encoding: base64\r\n"
                                 b"Content-Disposition: attachment; filename=\"invoice.zip\"\r\n\r\n" +
                                 _b64(_zip("invoice.com", EICAR))),
    "base64 part": message("b64", extra=b"MIME-Version: 1.0\r\nContent-Type: application/octet-stream\r\n"
                                         b"Content-Transfer-Encoding: base64\r\n", body=_b64(EICAR)),
}


@pytest.fixture
def srv(tmp_path, clamd_daemon):
    with running_server(tmp_path, listeners=("smtp", "submission", "imap"),
                        antivirus={"clamd": clamd_daemon.address, "timeout": 60.0}) as s:
        s.add_user("alice@example.test", PW)
        s.add_user("bob@example.test", PW)
        yield s


def test_the_test_signature_finds_eicar(clamd_daemon):
    port = int(clamd_daemon.address.rsplit(":", 1)[1])
    assert instream(port, EICAR).endswith(b"FOUND\0")
    assert instream(port, b"just text") == b"stream: OK\0"


@pytest.mark.parametrize("form", list(INFECTED))
def test_a_virus_is_refused_at_data_with_554(srv, form):
    code, text = send(srv, INFECTED[form])
    assert code == 554, text
    assert text.startswith(b"5.7.1 Message refused: virus found (Eicar-Test-"), text
    assert copies(srv, "bob@example.test") == []


def test_a_clean_message_is_delivered_untouched(srv):
    code, _ = send(srv, message("clean", body=b"EICAR is a test file; this is not it.\r\n"))
    assert code == 250
    ((msg, keywords),) = copies(srv, "bob@example.test")
    assert msg["Subject"] == "clean" and msg["X-Virus"] is None and msg["X-Virus-Status"] is None
    assert keywords == ()


def test_authenticated_submission_is_scanned_too(srv):
    raw = INFECTED["zip attachment"].replace(b"someone@remote.test", b"alice@example.test")
    code, text = send(srv, raw, sender="alice@example.test", submission=True)
    assert code == 554 and b"virus found" in text
    assert copies(srv, "bob@example.test") == []


def test_trusted_networks_are_scanned_too(tmp_path, clamd_daemon):
    with running_server(tmp_path, antivirus={"clamd": clamd_daemon.address},
                        smtp={"trusted_networks": ["127.0.0.0/8"]}) as s:
        s.add_user("bob@example.test", PW)
        assert send(s, INFECTED["plain part"])[0] == 554


def test_one_scan_refuses_every_recipient(srv):
    code, text = send(srv, INFECTED["plain part"], rcpts=("bob@example.test", "alice@example.test"))
    assert code == 554 and b"virus found" in text  # refused for all: nothing accepted, no report to send
    assert copies(srv, "bob@example.test") == [] and copies(srv, "alice@example.test") == []


def test_quarantine_holds_the_virus_with_its_name(tmp_path, clamd_daemon):
    with running_server(tmp_path, antivirus={"clamd": clamd_daemon.address, "action": "quarantine"}) as s:
        s.add_user("bob@example.test", PW)
        code, _ = send(s, INFECTED["base64 part"])
        assert code == 250
        assert copies(s, "bob@example.test") == [] and copies(s, "bob@example.test", "Junk") == []
        total, (item,) = s.store.list_quarantined()
        assert total == 1 and item.reason == "virus" and item.recipient == "bob@example.test"
        assert item.reason_text.startswith("A virus was found: Eicar-Test-")
        assert [f["result"][:11] for f in item.facts if f["name"] == "virus"] == ["Eicar-Test-"]
        held = s.store.read_blob(item.blob_id)
        header = held.partition(b"\r\n\r\n")[0]
        assert b"\r\nX-Virus: Eicar-Test-" in header and held.endswith(INFECTED["base64 part"].partition(b"\r\n\r\n")[2])


def test_clamd_over_its_unix_socket(tmp_path, clamd_daemon):
    with running_server(tmp_path, antivirus={"clamd": clamd_daemon.unix_socket}) as s:
        s.add_user("bob@example.test", PW)
        assert send(s, INFECTED["plain part"])[0] == 554
        assert send(s, message("clean"))[0] == 250
        assert len(copies(s, "bob@example.test")) == 1


def test_a_message_over_max_size_is_not_scanned_but_marked(tmp_path, clamd_daemon):
    raw = INFECTED["plain part"]
    with running_server(tmp_path, antivirus={"clamd": clamd_daemon.address, "max_size": len(raw) - 1}) as s:
        s.add_user("bob@example.test", PW)
        assert send(s, raw)[0] == 250
        ((msg, _),) = copies(s, "bob@example.test")
        assert msg["X-Virus-Status"] == "unchecked (too large)"
    with running_server(tmp_path / "at", antivirus={"clamd": clamd_daemon.address, "max_size": len(raw)}) as s:
        s.add_user("bob@example.test", PW)
        assert send(s, raw)[0] == 554  # exactly max_size: scanned


def test_a_message_larger_than_one_chunk_is_streamed_whole(srv):
    """The virus sits after 2.5 MiB of text: clamd sees every INSTREAM chunk (1 MiB each) of the stored blob."""
    filler = (b"x" * 998 + b"\r\n") * 2600
    code, text = send(srv, message("big", body=filler + EICAR + b"\r\n"))
    assert code == 554, text


@pytest.mark.parametrize("scan_append", [False, True])
def test_imap_append_is_scanned_only_when_configured(tmp_path, clamd_daemon, scan_append):
    with running_server(tmp_path, listeners=("imap",),
                        antivirus={"clamd": clamd_daemon.address, "scan_append": scan_append}) as s:
        s.add_user("bob@example.test", PW)
        im = imaplib.IMAP4("127.0.0.1", s.port("imap"))
        try:
            im.login("bob@example.test", PW)
            typ, data = im.append("INBOX", None, None, INFECTED["zip attachment"])
            im.logout()
        except BaseException:
            im.shutdown()
            raise
        if scan_append:
            assert typ == "NO" and b"virus found" in data[0]
            assert copies(s, "bob@example.test") == []
        else:
            assert typ == "OK"
            assert len(copies(s, "bob@example.test")) == 1
