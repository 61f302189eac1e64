"""The POP3 CPU shortcuts give the same bytes as the general paths: replies written straight into a plain TCP socket
(DirectWriter: partial sends, a transport that still holds output, TLS, the response-latency metric), a whole body
dot-stuffed in one pass (stuff_whole), and RETR/DELE/LIST/UIDL n parsed without the general parser."""

from __future__ import annotations

import itertools
import socket
import time

import pytest

from mailserver.pop3 import wire
from mailserver.pop3.protocol import DirectWriter
from mailserver.pop3.wire import DotStuffer, parse_command, parse_general, stuff_whole
from tests.harness import running_server
from tests.hostile import small_send_buffers
from tests.pop3.test_pop3_server import PW, Raw, message, stuffed

ALICE = "alice@example.test"

# --------------------------------------------------------------------------------------------- stuff_whole


def _streamed(body: bytes) -> bytes:
    enc = DotStuffer()
    return enc.encode(body) + enc.finish()


def test_stuff_whole_is_the_streaming_encoder_for_every_short_body():
    """Every body of up to 6 octets over an alphabet of the octets that matter is encoded as DotStuffer does."""
    for n in range(7):
        for chars in itertools.product(b".\r\nx", repeat=n):
            body = bytes(chars)
            assert stuff_whole(body) == _streamed(body), body


def _by_lines(body: bytes) -> bytes:
    """RFC 1939 section 3 spelled out: every line that starts with "." gets another one; CRLF "." CRLF ends it."""
    if not body:
        return b".\r\n"
    lines = body.split(b"\n")
    out = b"\n".join(b"." + line if line[:1] == b"." else line for line in lines)
    return out + (b".\r\n" if body.endswith(b"\n") else b"\r\n.\r\n")


def test_stuffing_is_rfc_1939_line_by_line():
    """The stuffing regex gives what doubling the dot of each line gives (and what bytes.replace gave), streamed in
    chunks cut anywhere too."""
    for n in range(7):
        for chars in itertools.product(b".\r\nx", repeat=n):
            body = bytes(chars)
            assert stuff_whole(body) == _by_lines(body), body
    body = b"Subject: s\r\n\r\n" + b"line\r\n.dot\r\n..two\n.bare lf\r\n" * 300
    assert stuff_whole(body) == _by_lines(body)
    assert stuff_whole(body)[:-3] == body.replace(b"\n.", b"\n..")
    for cut in (1, 2, 7, 4096):
        enc = DotStuffer()
        streamed = b"".join(enc.encode(body[i:i + cut]) for i in range(0, len(body), cut)) + enc.finish()
        assert streamed == _by_lines(body), cut


@pytest.mark.parametrize("body", [b"", b".", b".\r\n", b"a\r\n.\r\n", b"no end", b"x\n.y", b"..\r\n" * 1000,
                                  b"Subject: s\r\n\r\n" + b"line\r\n.dot\r\n" * 5000])
def test_stuff_whole_examples(body):
    assert stuff_whole(body) == _streamed(body)


# --------------------------------------------------------------------------------------------- parsing

LINES = [
    b"RETR 1", b"retr 12", b"Retr 0001", b"RETR 0", b"RETR 00", b"RETR 1  ", b"RETR  1", b"RETR 1 2", b"RETR",
    b"RETR ", b"RETR x", b"RETR -1", b"RETR 1234567890", b"RETR 12345678901", b"RETR 9999999999", b"DELE 3",
    b"dele 0", b"LIST 7", b"LIST", b"LIST 0", b"UIDL 2", b"UIDL", b"uidl 5 ", b"TOP 1 0", b"TOP 1", b"NOOP 1",
    b"STAT 1", b"RETR 1\t", b"RETR \xd9\xa1", b"RETR 1\x00", b"XXXX 1", b"QUIT", b"PASS 1", b"USER 1",
]


def _outcome(f, line):
    try:
        return f(line)
    except wire.WireError as e:
        return type(e), str(e)


@pytest.mark.parametrize("line", LINES)
def test_numbered_shortcut_parses_as_the_general_path(line):
    assert _outcome(parse_command, line) == _outcome(parse_general, line)


# --------------------------------------------------------------------------------------------- DirectWriter (unit)


class FakeRaw:
    """Just what DirectWriter reads of a tcp.Connection."""

    TLS = False
    connected = True
    disconnecting = False
    _writeDisconnected = False

    def __init__(self, takes):
        self.takes = list(takes)  # what each writeSomeData accepts: an int, or an exception (connection lost)
        self.dataBuffer = b""
        self._tempDataBuffer = []
        self.sent = []

    def writeSomeData(self, data):  # noqa: N802 - twisted's name
        n = self.takes.pop(0)
        if isinstance(n, BaseException):
            return n
        self.sent.append(bytes(data[:n]))
        return min(n, len(data))


class FakeTransport:
    def __init__(self):
        self.written = []

    def write(self, data):
        self.written.append(data)


def _writer(raw):
    w = DirectWriter(FakeTransport())
    w.raw = raw
    answered = []
    w.answered = lambda: answered.append(1)
    return w, answered


def test_direct_write_whole_partial_lost_and_buffered():
    raw = FakeRaw([100, 3, 0, ConnectionError("lost")])
    w, answered = _writer(raw)
    w.write(b"whole reply\r\n")  # taken whole
    assert raw.sent == [b"whole reply\r\n"] and w.transport.written == []
    w.write(b"partial\r\n")  # 3 octets taken: the rest through the transport
    assert raw.sent[-1] == b"par" and w.transport.written == [b"tial\r\n"]
    w.write(b"none\r\n")  # the kernel takes nothing (EAGAIN)
    assert w.transport.written[-1] == b"none\r\n"
    w.write(b"lost\r\n")  # the connection failed: the transport's path finds it
    assert w.transport.written[-1] == b"lost\r\n"
    assert len(answered) == 4
    raw._tempDataBuffer = [b"unsent"]  # the transport holds output: everything after it goes behind it
    w.write(b"after\r\n")
    raw._tempDataBuffer = []
    raw.dataBuffer = b"unsent"
    w.write(b"after 2\r\n")
    raw.dataBuffer = b""
    raw.TLS = True  # STLS: through the TLS layer
    w.write(b"secret\r\n")
    assert w.transport.written[-3:] == [b"after\r\n", b"after 2\r\n", b"secret\r\n"] and raw.takes == []
    assert len(answered) == 4  # the transport's wrapper records those itself


def test_direct_writer_needs_the_listeners_wrapper_over_tcp():
    assert DirectWriter(FakeTransport()).raw is None  # a test transport, or TLS / PROXY layers in between


# --------------------------------------------------------------------------------------------- over sockets


def _protocols(srv, listener="pop3"):
    factory = next(lst.factory for lst in srv.server.listening if lst.name == listener)
    return srv.call(lambda: [t.wrappedProtocol for t in list(factory.protocols)])


def test_plain_connections_write_directly_and_tls_ones_do_not(tmp_path):
    with running_server(tmp_path, listeners=("pop3", "pop3s")) as srv:
        srv.add_user(ALICE, PW)
        srv.deliver(ALICE, message(1))
        r = Raw(srv.port("pop3"))
        r.line()
        srv.wait_for(lambda: len(_protocols(srv)) == 1)
        (proto,) = _protocols(srv)
        assert proto._writer.raw is not None
        r.close()
        import ssl

        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", srv.port("pop3s")), timeout=30))
        assert s.recv(100).startswith(b"+OK")
        srv.wait_for(lambda: len(_protocols(srv, "pop3s")) == 1)
        (proto,) = _protocols(srv, "pop3s")
        assert proto._writer.raw is None
        s.close()


def test_slow_reader_of_pipelined_retrs_gets_every_byte_in_order(tmp_path):
    """40 messages of about 60 KB (dot lines) pipelined in one packet to a server with small socket buffers while the
    client reads slowly: sends are partial, the rest waits in the transport and later replies queue behind it; every
    body arrives byte-exact and in order, and the response-latency metric still counts the replies."""
    with running_server(tmp_path, listeners=("pop3",)) as srv:
        srv.add_user(ALICE, PW)
        raws = [message(n, (b"line %d\r\n.dot\r\n" % n) * (4000 + n)) for n in range(1, 41)]
        for raw in raws:
            srv.deliver(ALICE, raw)
        hist = srv.server.monitor.metrics.responses.labels("pop3")

        def count():
            return next(s.value for m in hist.collect() for s in m.samples if s.name.endswith("_count"))

        before = srv.call(count)
        r = Raw(srv.port("pop3"))
        r.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        r.line()
        srv.wait_for(lambda: len(_protocols(srv)) == 1)
        small_send_buffers(srv, "pop3")
        r.send(f"USER {ALICE}\r\nPASS {PW}\r\n".encode())
        assert r.line().startswith(b"+OK")
        assert r.line().startswith(b"+OK maildrop has 40 messages")
        r.send(b"".join(b"RETR %d\r\n" % n for n in range(1, 41)) + b"NOOP\r\n")
        time.sleep(0.2)  # the server fills the small buffers and must wait for the reader
        for raw in raws:
            assert r.line() == f"+OK {len(raw)} octets".encode()
            assert r.until_terminator() == stuffed(raw)
        assert r.line() == b"+OK"
        r.send(b"QUIT\r\n")
        assert r.line().startswith(b"+OK")
        r.close()
        srv.wait_for(lambda: srv.server_sessions("pop3") == 0)
        assert srv.call(count) - before >= 3  # USER, PASS and the RETR burst each answered a request


def test_blob_ids_is_what_get_messages_says(tmp_path):
    """The narrow uid -> blob id query answers as the full records did: missing uids left out."""
    from mailserver.pop3.protocol import blob_ids

    with running_server(tmp_path, listeners=("pop3",)) as srv:
        srv.add_user(ALICE, PW)
        for n in range(1, 6):
            srv.deliver(ALICE, message(n))
        mb = srv.store.get_mailbox(srv.store.get_account(ALICE).id, "INBOX")
        srv.call(srv.server.astore.delete_messages, mb.id, [2])
        uids = [1, 2, 3, 4, 5, 99]
        want = {m.uid: m.blob_id for m in srv.store.get_messages(mb.id, uids)}
        assert blob_ids(srv.store, mb.id, uids) == want and sorted(want) == [1, 3, 4, 5]
