"""The supervisor prints "ready" only when every worker serves: workers say so on the bus, once per worker, and
that frame goes to the supervisor only (never to the other workers)."""

import json
import struct

from twisted.internet.testing import StringTransport

from mailserver.bus import BusServerFactory


def _frame(obj) -> bytes:
    data = json.dumps(obj).encode()
    return struct.pack("!I", len(data)) + data


def test_ready_frames_reach_the_supervisor_once_per_worker_and_no_other_worker():
    seen = []
    factory = BusServerFactory(on_ready=seen.append)
    a, b = factory.buildProtocol(None), factory.buildProtocol(None)
    ta, tb = StringTransport(), StringTransport()
    a.makeConnection(ta)
    b.makeConnection(tb)
    a.dataReceived(_frame({"t": "ready", "o": "worker0-x"}))
    a.dataReceived(_frame({"t": "ready", "o": "worker0-x"}))  # again after a reconnect: counted once
    b.dataReceived(_frame({"t": "ready", "o": "worker1-y"}))
    assert seen == ["worker0-x", "worker1-y"] and factory.ready == {"worker0-x", "worker1-y"}
    assert tb.value() == b"" and ta.value() == b""  # not broadcast
    a.dataReceived(_frame({"t": "kick"}))  # other frames still go to the others
    assert tb.value() == _frame({"t": "kick"}) and ta.value() == b""
    b.dataReceived(struct.pack("!I", 13) + b'{"t": "ready"')  # a broken ready frame is dropped, nothing else
    assert seen == ["worker0-x", "worker1-y"]
