"""A COMPRESS=DEFLATE command bomb (23 KB of deflated input inflating to 2,000,000 NOOPs) must not stall the
server: the session runs a bounded number of commands per reactor turn and reads nothing more meanwhile, so a
normal client on another connection logs in (within a second: tests/logins.py) while the bomb is still being
answered."""

from __future__ import annotations

import socket
import threading
import zlib

from tests.imap.imap_client import PASSWORD, Raw, imap_server, new_user
from tests.logins import assert_logs_in_promptly

NOOPS = 2_000_000


def test_deflate_noop_bomb_does_not_stall_other_clients(tmp_path):
    with imap_server(tmp_path) as srv:
        user = new_user(srv)
        raw = Raw(srv.port("imap"))
        assert raw.cmd("l", f'LOGIN {user} "{PASSWORD}"')[-1].startswith(b"l OK")
        assert raw.cmd("z", "COMPRESS DEFLATE")[-1].startswith(b"z OK")
        deflate, inflate = zlib.compressobj(9, zlib.DEFLATED, -15), zlib.decompressobj(-15)
        bomb = deflate.compress(b"a NOOP\r\n" * NOOPS) + deflate.flush(zlib.Z_SYNC_FLUSH)
        assert len(bomb) < 40_000
        done = threading.Event()
        answered = [0]

        def drain():  # the attacker reads its answers (so this is about CPU, not buffered output)
            raw.sock.settimeout(120)
            tail = b""
            while answered[0] < NOOPS:
                data = raw.sock.recv(1 << 20)
                if not data:
                    break
                text = tail + inflate.decompress(data)
                answered[0] += text.count(b"a OK")
                tail = text[-8:]
            done.set()

        reader = threading.Thread(target=drain)
        reader.start()
        raw.sock.sendall(bomb)
        try:
            assert_logs_in_promptly("imap", srv.port("imap"), user, PASSWORD)
            # The other client was served while the bomb was still being answered: turns interleave.
            assert not done.is_set(), "the normal login only got through after the whole bomb"
            assert answered[0] < NOOPS, answered[0]
            print("answered before the login finished:", answered[0])
        finally:
            raw.sock.shutdown(socket.SHUT_RDWR)
            reader.join(120)
            raw.close()
