"""clamd's reply is input like any other: garbage, silence, a hang, an endless reply or an early error each give a
clear verdict (451 4.7.0 by default, ``X-Virus-Status: unchecked`` with ``on_error = "accept"``), never a crash and
never a stalled reactor; the INSTREAM framing carries the stored message exactly."""

from __future__ import annotations

import smtplib
import threading

import pytest
from twisted.internet import defer, reactor

from mailserver import config as cfgmod
from mailserver.inbound.clamd import CHUNK, MAX_REPLY, ClamdClient, ClamdError, parse_reply
from tests import harness
from tests.harness import running_server
from tests.inbound.daemons import free_port
from tests.inbound.fakes import fake_peer, read_instream
from tests.inbound.mail import PW, copies, message, send


@pytest.mark.parametrize("reply, virus", [
    (b"stream: OK", ""),
    (b"stream: Eicar-Test-Signature FOUND", "Eicar-Test-Signature"),
    (b"stream: Win.Test\r\nX: y FOUND", "Win.Test??X: y"),  # no line break reaches a header or a reply
])
def test_parse_reply_reads_clean_and_found(reply, virus):
    assert parse_reply(reply).virus == virus


@pytest.mark.parametrize("reply", [
    b"", b"PONG", b"stream: ", b"stream: FOUND", b"stream:OK", b"INSTREAM size limit exceeded. ERROR",
    b"stream: lstat() failed ERROR", b"\xff\xfe",
])
def test_parse_reply_refuses_everything_else(reply):
    with pytest.raises(ClamdError):
        parse_reply(reply)


def test_parse_reply_limit_is_max_reply_bytes():
    ok = b"stream: " + b"N" * (MAX_REPLY - len(b"stream:  FOUND")) + b" FOUND"
    assert len(ok) == MAX_REPLY and parse_reply(ok).virus
    with pytest.raises(ClamdError, match="too long"):
        parse_reply(ok + b" ")


@pytest.mark.parametrize("table, key", [
    ({"clamd": "nowhere"}, "antivirus.clamd"),
    ({"clamd": "127.0.0.1:99999"}, "antivirus.clamd"),
    ({"action": "delete"}, "antivirus.action"),
    ({"on_error": "ignore"}, "antivirus.on_error"),
    ({"timeout": 0}, "antivirus.timeout"),
])
def test_bad_antivirus_settings_are_refused_at_start(table, key):
    with pytest.raises(cfgmod.ConfigError, match=key.replace(".", r"\.")):
        cfgmod.load_dict({"hostname": "x.test", "data_dir": "/x", "antivirus": table})


def _server(tmp_path, port, **antivirus):
    return running_server(tmp_path, antivirus={"clamd": f"127.0.0.1:{port}", "timeout": 30.0, **antivirus})


def _scan_then(payload: bytes):
    def behaviour(peer, conn):
        peer.received.append(read_instream(conn))
        conn.sendall(payload)
    return behaviour


def _hang(peer, conn):
    read_instream(conn)
    peer.hang(conn)


def _endless(peer, conn):
    read_instream(conn)
    for _ in range(10000):
        conn.sendall(b"stream: " + b"x" * 65536)


def _early_error(peer, conn):
    conn.recv(65536)
    conn.sendall(b"INSTREAM size limit exceeded. ERROR\0")


BEHAVIOURS = {
    "garbage": _scan_then(b"\x00garbage\0"),
    "silence, then closing": _scan_then(b""),
    "a hang past the time limit": _hang,
    "an endless reply without its NUL": _endless,
    "an error before the end of the stream": _early_error,
    "closing at once": lambda peer, conn: None,
}


REASONS = {
    "garbage": "unexpected reply",
    "silence, then closing": "closed without a reply",
    "a hang past the time limit": "timed out",
    "an endless reply without its NUL": "reply too long",
    "an error before the end of the stream": "INSTREAM size limit exceeded. ERROR",
    "closing at once": "closed without a reply",
}


@pytest.mark.parametrize("what", list(BEHAVIOURS))
def test_the_client_names_what_went_wrong(what):
    data = b"y" * (CHUNK + 10)

    def read(start=0, end=None):
        return defer.succeed(data[start:end])

    with fake_peer(BEHAVIOURS[what]) as peer:
        client = harness.call(lambda: ClamdClient(reactor, f"127.0.0.1:{peer.port}", timeout=1.0))
        with pytest.raises(ClamdError, match=REASONS[what]):
            harness.call(client.scan, read)


@pytest.mark.parametrize("what", list(BEHAVIOURS))
def test_a_hostile_clamd_means_451_by_default(tmp_path, what):
    raw = message("big", body=(b"y" * 998 + b"\r\n") * 1200)  # more than one chunk
    with fake_peer(BEHAVIOURS[what]) as peer, _server(tmp_path, peer.port, timeout=1.0) as s:
        s.add_user("bob@example.test", PW)
        code, text = send(s, raw)
        assert (code, text[:6]) == (451, b"4.7.0 "), text
        assert copies(s, "bob@example.test") == []


@pytest.mark.parametrize("what", ["garbage", "a hang past the time limit"])
def test_a_hostile_clamd_means_unchecked_with_accept(tmp_path, what):
    with fake_peer(BEHAVIOURS[what]) as peer, _server(tmp_path, peer.port, timeout=1.0, on_error="accept") as s:
        s.add_user("bob@example.test", PW)
        assert send(s, message("anything"))[0] == 250
        ((msg, _),) = copies(s, "bob@example.test")
        assert msg["X-Virus-Status"] == "unchecked"


def test_clamd_not_listening_means_451(tmp_path):
    with _server(tmp_path, free_port()) as s:
        s.add_user("bob@example.test", PW)
        code, text = send(s, message("anything"))
        assert (code, text[:6]) == (451, b"4.7.0 ")


def test_a_reply_without_its_nul_before_closing_counts(tmp_path):
    with fake_peer(_scan_then(b"stream: OK")) as peer, _server(tmp_path, peer.port) as s:
        s.add_user("bob@example.test", PW)
        assert send(s, message("anything"))[0] == 250


def test_one_scan_per_message_whatever_the_recipients(tmp_path):
    with fake_peer(_scan_then(b"stream: OK\0")) as peer, _server(tmp_path, peer.port) as s:
        for a in ("bob@example.test", "carol@example.test", "dave@example.test"):
            s.add_user(a, PW)
        assert send(s, message("three"), rcpts=("bob@example.test", "carol@example.test", "dave@example.test"))[0] == 250
        assert peer.connections == 1
        assert all(len(copies(s, a)) == 1 for a in ("bob@example.test", "carol@example.test", "dave@example.test"))


def test_instream_carries_the_stored_message_exactly_in_chunks(tmp_path):
    raw = message("chunks", body=(b"z" * 998 + b"\r\n") * (2 * CHUNK // 1000 + 7))
    with fake_peer(_scan_then(b"stream: OK\0")) as peer, _server(tmp_path, peer.port) as s:
        s.add_user("bob@example.test", PW)
        assert send(s, raw)[0] == 250
        (scanned,) = peer.received
        acct = s.store.get_account("bob@example.test")
        (m,) = s.store.get_messages(s.store.get_mailbox(acct.id, "INBOX").id, [1])
        assert scanned == s.store.read_blob(m.blob_id)
        assert len(scanned) > 2 * CHUNK


def test_a_hanging_clamd_does_not_stall_other_sessions(tmp_path):
    def held(peer, conn):
        peer.received.append(read_instream(conn))
        peer.hang(conn)
        conn.sendall(b"stream: OK\0")

    with fake_peer(held) as peer, _server(tmp_path, peer.port, timeout=120.0) as s:
        s.add_user("bob@example.test", PW)
        result = {}
        t = threading.Thread(target=lambda: result.update(reply=send(s, message("waiting"))))
        t.start()
        try:
            assert peer.arrived.wait(60)
            with smtplib.SMTP("127.0.0.1", s.port("smtp"), timeout=30) as other:
                assert other.ehlo("other.test")[0] == 250
                assert other.noop()[0] == 250
            assert "reply" not in result
        finally:
            peer.release.set()
            t.join(60)
        assert result["reply"][0] == 250
