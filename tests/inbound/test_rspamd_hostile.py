"""rspamd's reply is input like any other: garbage, a huge or nested reply, an error status, a hang or a closed
port each give a clear verdict (accepted as ``X-Spam-Status: unchecked``, or 451 4.7.0 with ``on_error =
"tempfail"``), never a crash and never a stalled reactor.  One rspamd request per message, however many
recipients."""

from __future__ import annotations

import json
import smtplib
import threading

import pytest
from twisted.internet import defer, reactor

from mailserver.delivery.stages import MessageInfo
from mailserver.inbound import rspamd
from mailserver.inbound.rspamd import MAX_REPLY, RspamdClient, RspamdError, parse_reply
from tests import harness
from tests.harness import running_server
from tests.inbound.daemons import free_port
from tests.inbound.fakes import fake_peer, http_response, read_http_request
from tests.inbound.mail import PW, copies, message, send

GOOD = {"action": "add header", "score": 7.25, "required_score": 15.0,
        "symbols": {"BAYES_SPAM": {"name": "BAYES_SPAM", "score": 5.0, "options": ["99%"]},
                    "R_SPF_FAIL": {"name": "R_SPF_FAIL", "score": 2.25}}}


# ------------------------------------------------------------------------------------------------- the parser


def test_parse_reply_reads_action_score_and_symbols():
    r = parse_reply(json.dumps(GOOD).encode())
    assert (r.action, r.score, r.required_score) == ("add header", 7.25, 15.0)
    assert [(s.name, s.weight, s.detail) for s in r.symbols] == [("BAYES_SPAM", 5.0, "99%"), ("R_SPF_FAIL", 2.25, "")]


@pytest.mark.parametrize("body, problem", [
    (b"", "not JSON"),
    (b"\xff\xfe garbage", "not JSON"),
    (b"[1, 2]", "not a JSON object"),
    (b'{"score": 1}', "no action"),
    (b'{"action": "reject"}', "score is not a number"),
    (b'{"action": "reject", "score": "15"}', "score is not a number"),
    (b'{"action": "reject", "score": NaN}', "score is not a number"),
    (b'{"action": "reject", "score": Infinity}', "score is not a number"),
    (b'{"action": "reject", "score": true}', "score is not a number"),
    (b'{"action": "reject", "score": 1, "symbols": []}', "symbols is not an object"),
    (b"[" * 100000 + b"]" * 100000, "not JSON"),  # nested past the parser's recursion limit
])
def test_parse_reply_refuses_what_is_not_a_reply(body, problem):
    with pytest.raises(RspamdError, match=problem):
        parse_reply(body)


def test_parse_reply_limit_is_max_reply_bytes():
    base = json.dumps({"action": "no action", "score": 0}).encode()
    assert parse_reply(base + b" " * (MAX_REPLY - len(base))).action == "no action"
    with pytest.raises(RspamdError, match="too large"):
        parse_reply(base + b" " * (MAX_REPLY - len(base) + 1))


def test_symbol_names_cannot_inject_header_lines():
    body = json.dumps({"action": "no action", "score": 1,
                       "symbols": {"X\r\nBcc: evil@x.test": {"score": 1.0, "options": ["a\r\nb"]},
                                   "BAD": "not an object", "NAN": {"score": "x"}}}).encode()
    (sym,) = parse_reply(body).symbols
    assert sym.name == "X__Bcc__evil_x.test" and "\r" not in sym.detail and "\n" not in sym.detail


def test_unknown_actions_only_score():
    assert rspamd.FORCED.get("something new") is None
    assert rspamd.FORCED["reject"] == "refuse" and rspamd.FORCED["greylist"] == "defer"


# ------------------------------------------------------------------------------------------------- hostile peers


def _server(tmp_path, port, **antispam):
    return running_server(tmp_path, listeners=("smtp",),
                          antispam={"rspamd": f"http://127.0.0.1:{port}", "timeout": 30.0, **antispam})


def _answer(payload: bytes):
    def behaviour(peer, conn):
        peer.received.append(read_http_request(conn))
        conn.sendall(payload)
    return behaviour


def _flood(peer, conn):
    """A 200 without a length, then JSON-ish bytes for ever (until the client hangs up)."""
    read_http_request(conn)
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{\"a\": \"")
    chunk = b"x" * 65536
    for _ in range(10000):  # 640 MiB at most: the client must stop long before
        conn.sendall(chunk)


def _hang(peer, conn):
    read_http_request(conn)
    peer.hang(conn)


BEHAVIOURS = {
    "garbage instead of HTTP": _answer(b"\x00\xff\x13 this is not HTTP\r\n\r\n"),
    "an HTTP error": _answer(http_response(b'{"error": "boom"}', b"500 Internal Server Error")),
    "text instead of JSON": _answer(http_response(b"hello")),
    "JSON that is not a reply": _answer(http_response(b'{"action": 5, "score": []}')),
    "a declared length one byte over the limit": _answer(http_response(b"{}", length=MAX_REPLY + 1)),
    "a body one byte over the limit": _answer(http_response(b"{" + b" " * MAX_REPLY)),
    "an endless body": _flood,
    "a reply cut off": _answer(http_response(b'{"action": "reject"', length=1000)),
    "no reply, just closing": _answer(b""),
    "a hang past the time limit": _hang,
}


REASONS = {
    "garbage instead of HTTP": "no valid HTTP reply",
    "an HTTP error": "HTTP status 500",
    "text instead of JSON": "not JSON",
    "JSON that is not a reply": "no action",
    "a declared length one byte over the limit": "too large",
    "a body one byte over the limit": "too large",
    "an endless body": "too large",
    "a reply cut off": "cut off",
    "no reply, just closing": "no valid HTTP reply",
    "a hang past the time limit": "timed out",
}


@pytest.mark.parametrize("what", list(BEHAVIOURS))
def test_the_client_names_what_went_wrong(what):
    info = MessageInfo("smtp", "QID", None, None, 5, "blob", None, lambda start=0, end=None: defer.succeed(b"x\r\n"))
    with fake_peer(BEHAVIOURS[what]) as peer:
        client = harness.call(lambda: RspamdClient(reactor, f"http://127.0.0.1:{peer.port}", timeout=1.0,
                                                   hostname="mail.example.test", max_size=1000))
        try:
            with pytest.raises(RspamdError, match=REASONS[what]):
                harness.call(client.check, info)
        finally:
            harness.call(client.close)


@pytest.mark.parametrize("what", list(BEHAVIOURS))
def test_a_hostile_rspamd_means_unchecked_by_default(tmp_path, what):
    with fake_peer(BEHAVIOURS[what]) as peer, _server(tmp_path, peer.port, timeout=1.0) as s:
        s.add_user("bob@example.test", PW)
        code, _ = send(s, message("anything"))
        assert code == 250
        ((msg, keywords),) = copies(s, "bob@example.test")
        assert msg["X-Spam-Status"] == "unchecked (rspamd)"
        assert msg["X-Spam"] is None and keywords == ()


@pytest.mark.parametrize("what", ["garbage instead of HTTP", "an endless body", "a hang past the time limit"])
def test_a_hostile_rspamd_means_451_with_tempfail(tmp_path, what):
    with fake_peer(BEHAVIOURS[what]) as peer, _server(tmp_path, peer.port, timeout=1.0, on_error="tempfail") as s:
        s.add_user("bob@example.test", PW)
        code, text = send(s, message("anything"))
        assert (code, text[:6]) == (451, b"4.7.0 "), text
        assert copies(s, "bob@example.test") == []


def test_a_message_over_max_size_is_not_sent(tmp_path):
    raw = message("big")
    reply = http_response(json.dumps(GOOD).encode())
    with fake_peer(_answer(reply)) as peer, _server(tmp_path, peer.port, max_size=len(raw) - 1) as s:
        s.add_user("bob@example.test", PW)
        assert send(s, raw)[0] == 250
        ((msg, _),) = copies(s, "bob@example.test")
        assert msg["X-Spam-Status"] == "unchecked (rspamd: too large)" and peer.connections == 0


def test_rspamd_not_listening_means_unchecked(tmp_path):
    with _server(tmp_path, free_port()) as s:
        s.add_user("bob@example.test", PW)
        assert send(s, message("anything"))[0] == 250
        ((msg, _),) = copies(s, "bob@example.test")
        assert msg["X-Spam-Status"] == "unchecked (rspamd)"


def test_one_request_per_message_with_the_envelope(tmp_path):
    reply = http_response(json.dumps(GOOD).encode())
    with fake_peer(_answer(reply)) as peer, _server(tmp_path, peer.port) as s:
        for a in ("bob@example.test", "carol@example.test", "dave@example.test"):
            s.add_user(a, PW)
        code, _ = send(s, message("three"), rcpts=("bob@example.test", "carol@example.test", "dave@example.test"),
                       helo="mx.remote.test")
        assert code == 250
        assert peer.connections == 1 and len(peer.received) == 1
        head, _, body = peer.received[0].partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        assert lines[0] == b"POST /checkv2 HTTP/1.1"
        fields = [(k.strip().lower(), v.strip()) for k, _, v in (line.partition(b":") for line in lines[1:])]
        assert (b"ip", b"127.0.0.1") in fields and (b"helo", b"mx.remote.test") in fields  # names: any case
        assert (b"from", b"someone@remote.test") in fields
        assert [v for k, v in fields if k == b"rcpt"] == [b"bob@example.test", b"carol@example.test",
                                                         b"dave@example.test"]
        qid = dict(fields)[b"queue-id"].decode()
        assert qid.isalnum() and qid.upper() == qid
        assert b"Subject: three" in body and b"\r\nReceived: from mx.remote.test" in body  # as stored
        for a in ("bob@example.test", "carol@example.test", "dave@example.test"):
            ((msg, keywords),) = copies(s, a, "Junk")  # 7.25 >= junk 6
            assert msg["X-Spam-Score"] == "7.25" and msg["X-Spam-Symbols"] == "BAYES_SPAM(5.00) R_SPF_FAIL(2.25)"


def test_a_hanging_rspamd_does_not_stall_other_sessions(tmp_path):
    """While one message waits on rspamd, another client's commands are answered; then the first goes on."""
    reply = http_response(json.dumps({"action": "no action", "score": 0.5}).encode())

    def held(peer, conn):
        peer.received.append(read_http_request(conn))
        peer.hang(conn)
        conn.sendall(reply)

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
            assert "reply" not in result  # the first message still waits for rspamd
        finally:
            peer.release.set()
            t.join(60)
        assert result["reply"][0] == 250
        ((msg, _),) = copies(s, "bob@example.test")
        assert msg["X-Spam-Score"] == "0.50"
