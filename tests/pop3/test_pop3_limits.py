"""POP3 sessions per client address (limits.pop3_max_sessions_per_ip), shared by pop3 and pop3s."""

from __future__ import annotations

import socket

from tests.harness import running_server


def test_sessions_per_ip_limit_and_release(tmp_path):
    with running_server(tmp_path, listeners=("pop3",), limits={"pop3_max_sessions_per_ip": 2}) as srv:
        port = srv.port("pop3")
        first = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(2)]
        for s in first:
            assert s.recv(200).startswith(b"+OK")
        extra = socket.create_connection(("127.0.0.1", port), timeout=10)
        assert extra.recv(200) == b"-ERR [SYS/TEMP] too many connections from your address\r\n"
        assert extra.recv(10) == b""  # closed
        extra.close()
        first[0].sendall(b"QUIT\r\n")
        assert first[0].recv(200).startswith(b"+OK")
        first[0].close()
        import time

        deadline = time.time() + 5
        while True:
            again = socket.create_connection(("127.0.0.1", port), timeout=10)
            greeting = again.recv(200)
            again.close()
            if greeting.startswith(b"+OK") or time.time() > deadline:
                break
            time.sleep(0.05)
        assert greeting.startswith(b"+OK")
        first[1].close()
