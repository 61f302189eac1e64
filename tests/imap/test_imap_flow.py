"""IMAP under a client that pipelines and never reads: 20 MB of CAPABILITY, plain or inflated from a few KB of
COMPRESS=DEFLATE input, stop being read once the replies do not drain (a bounded amount is held unsent), a normal
client logs in meanwhile, and the connection is aborted after limits.output_stall_timeout."""

from __future__ import annotations

import time
import zlib

import pytest
from twisted.internet import task

from tests.hostile import (
    BURST,
    MAX_UNSENT,
    Timed,
    dropped_after_stall,
    flood,
    output_blocked,
    small_send_buffers,
    unsent_output,
)
from tests.imap.imap_client import PASSWORD, Raw, imap_server, new_user
from tests.logins import assert_logs_in_promptly

STALL = 50.0


def _factory(srv, name="imap"):
    return next(lst.factory.wrappedFactory for lst in srv.server.listening if lst.name == name)


def _normal_login(srv, user: str) -> None:
    with Timed() as t:
        assert_logs_in_promptly("imap", srv.port("imap"), user, PASSWORD)
    print(f"normal login in {t.seconds * 1000:.1f} ms")


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "deflate"])
def test_client_that_never_reads_is_not_read_and_is_dropped_after_the_stall_timeout(tmp_path, compress):
    """20 MB of pipelined CAPABILITY (with COMPRESS=DEFLATE: 20 MB inflated from about 40 KB) from a client that
    never reads: the server stops taking commands and reading once its replies do not drain, holds a bounded
    amount unsent, lets a normal client log in, and aborts the connection after the stall timeout."""
    with imap_server(tmp_path, listeners=("imap",), limits={"output_stall_timeout": STALL}) as srv:
        clock = task.Clock()
        _factory(srv).clock = clock
        attacker, normal = new_user(srv), new_user(srv)
        raw = Raw(srv.port("imap"))
        raw.login(attacker)
        unit = b"a CAPABILITY\r\n"
        if compress:
            assert raw.cmd("z", "COMPRESS DEFLATE")[-1].startswith(b"z OK")
            deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
            burst = deflate.compress(unit * (BURST // len(unit))) + deflate.flush(zlib.Z_SYNC_FLUSH)
            assert len(burst) < 100_000
            # Compressed replies to a repeated CAPABILITY are a few octets each: megabytes of kernel buffers
            # would take hundreds of thousands of them to fill.
            small_send_buffers(srv, "imap")
            raw.sock.sendall(burst)
            srv.wait_for(lambda: output_blocked(srv, "imap"), timeout=30)
        else:
            sent = flood(raw.sock, unit)
            print(f"the server took {sent} of {BURST} octets")
            assert sent < BURST // 2
        unsent = unsent_output(srv, "imap")
        assert len(unsent) == 1 and unsent[0] < MAX_UNSENT, unsent
        time.sleep(0.5)  # nothing more is taken while the replies wait
        assert unsent_output(srv, "imap")[0] < MAX_UNSENT
        _normal_login(srv, normal)
        srv.wait_for(lambda: srv.server_sessions("imap") == 1)  # the normal client's session has ended
        dropped_after_stall(srv, "imap", "imap", clock, STALL)
        raw.close()
