"""The group committer's count of messages on their way (``GroupCommitter.expect`` / ``arrived``): every producer
announces a message when it begins and takes it back exactly once, whatever becomes of it, so the collection
window never waits for a message that will not come.  A real server, real SMTP and IMAP clients."""

from __future__ import annotations

import imaplib
import smtplib
import socket

from tests import harness

RAW = b"From: a@example.net\r\nTo: u@example.test\r\nSubject: s\r\n\r\nbody\r\n"


def _expecting(srv) -> int:
    return harness.call(lambda: srv.server.astore.committer.expecting)


def _line(f) -> bytes:
    while True:
        line = f.readline()
        if line[3:4] != b"-":
            return line


def test_every_way_a_message_ends_takes_it_back(tmp_path):
    with harness.running_server(tmp_path, listeners=("smtp", "imap"),
                                limits={"message_size": 10_000}) as srv:
        srv.add_user("u@example.test", "pw")
        with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as c:  # delivered
            c.sendmail("a@example.net", ["u@example.test"], RAW)
        assert _expecting(srv) == 0
        with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as c:  # refused at the end of DATA: too large
            try:
                c.sendmail("a@example.net", ["u@example.test"], RAW + b"x" * 20_000 + b"\r\n")
            except smtplib.SMTPException:
                pass
        assert _expecting(srv) == 0
        with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as c:  # BDAT (CHUNKING)
            c.ehlo()
            c.mail("a@example.net")
            c.rcpt("u@example.test")
            c.send(b"BDAT %d LAST\r\n" % len(RAW) + RAW)
            assert c.getreply()[0] == 250
        assert _expecting(srv) == 0

        s = socket.create_connection(("127.0.0.1", srv.port("smtp")))  # the client goes away in DATA
        f = s.makefile("rb")
        _line(f)
        s.sendall(b"EHLO x\r\n")
        _line(f)
        s.sendall(b"MAIL FROM:<a@example.net>\r\nRCPT TO:<u@example.test>\r\nDATA\r\n")
        for _ in range(3):
            _line(f)
        s.sendall(b"Subject: half\r\n\r\nsome of it")
        srv.wait_for(lambda: _expecting(srv) == 1)  # on its way while its body arrives
        f.close()
        s.close()
        srv.wait_for(lambda: _expecting(srv) == 0)

        imap = imaplib.IMAP4("127.0.0.1", srv.port("imap"))  # APPEND, and MULTIAPPEND (committed by append_many)
        imap.login("u@example.test", "pw")
        assert imap.append("INBOX", None, None, RAW)[0] == "OK"
        tag = imap._new_tag().decode()
        imap.send(f"{tag} APPEND INBOX {{{len(RAW)}+}}\r\n".encode() + RAW
                  + f" {{{len(RAW)}+}}\r\n".encode() + RAW + b"\r\n")
        while True:
            line = imap.readline()
            if line.startswith(tag.encode()):
                assert b" OK " in line, line
                break
        imap.logout()
        assert _expecting(srv) == 0
        # DATA, BDAT and the single APPEND went through the committer (MULTIAPPEND through append_many)
        assert harness.call(lambda: srv.server.astore.committer.delivered) == 3
