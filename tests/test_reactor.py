"""The server's reactor (mailserver/reactor.py): events dispatched without the legacy log context, and a transport
whose handler raises is still logged and dropped while the other connections go on."""

from __future__ import annotations

import socket
import subprocess
import sys

from twisted.internet import protocol, reactor
from twisted.logger import globalLogPublisher

from mailserver.reactor import ServerReactor
from tests import harness


def test_the_suite_and_the_cli_run_on_the_server_reactor():
    assert type(reactor) is ServerReactor
    out = subprocess.run([sys.executable, "-c", (
        "import sys\n"
        "from mailserver import reactor as r\n"
        "assert r.install()\n"
        "from twisted.internet import reactor\n"
        "print(type(reactor).__name__)\n"
        "assert not r.install()\n")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ServerReactor"


class _Echo(protocol.Protocol):
    def dataReceived(self, data):
        if b"boom" in data:
            raise RuntimeError("handler failed on purpose")
        self.transport.write(data)


def _recv_until_closed(s: socket.socket) -> bytes:
    got = b""
    while chunk := s.recv(4096):
        got += chunk
    return got


def test_a_handler_that_raises_is_logged_and_its_connection_dropped_the_others_go_on():
    harness.ensure_reactor()
    factory = protocol.Factory.forProtocol(_Echo)
    port = harness.call(reactor.listenTCP, 0, factory, interface="127.0.0.1")
    seen = []

    def observer(event):
        f = event.get("log_failure") or event.get("failure")  # (Twisted logs it with the legacy log.err)
        if f is not None and f.check(RuntimeError):
            seen.append(event)

    globalLogPublisher.addObserver(observer)
    try:
        with socket.create_connection(("127.0.0.1", port.getHost().port), timeout=10) as good, \
                socket.create_connection(("127.0.0.1", port.getHost().port), timeout=10) as bad:
            good.sendall(b"one")
            assert good.recv(16) == b"one"
            bad.sendall(b"boom")
            assert _recv_until_closed(bad) == b""  # dropped by the reactor after the failure
            good.sendall(b"two")
            assert good.recv(16) == b"two"  # the other connection is served on
        assert any("handler failed on purpose" in str((e.get("log_failure") or e["failure"]).value) for e in seen)
    finally:
        globalLogPublisher.removeObserver(observer)
        harness.call(port.stopListening)
