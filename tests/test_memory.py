"""mailserver/memory.py: freed memory goes back to the system (glibc) once connections have closed."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from twisted.internet import defer, task

from mailserver import memory
from tests.processes import popen

ROOT = Path(__file__).resolve().parents[1]


def test_trim_runs_only_after_a_burst_of_closes_and_one_at_a_time():
    clock = task.Clock()
    closed = [0]
    runs: list[defer.Deferred] = []

    def run(f):
        assert f is memory.trim
        d = defer.Deferred()
        runs.append(d)
        return d

    trim = memory.MemoryTrim(clock, lambda: closed[0], run, interval=10, after=3)
    trim.start()
    clock.advance(10)
    assert runs == []  # nothing closed: nothing to give back
    closed[0] += 2
    clock.advance(10)
    assert runs == []  # fewer than `after`: not a burst
    closed[0] += 1
    clock.advance(10)
    assert len(runs) == 1
    closed[0] += 3
    clock.advance(10)
    assert len(runs) == 1  # the first one is still running
    runs[0].callback(True)
    clock.advance(10)
    assert len(runs) == 2
    trim.stop()
    assert not clock.getDelayedCalls()


def test_trim_and_threshold_on_this_system():
    """On glibc both calls succeed (they only tell the allocator what to do with free memory)."""
    assert memory.return_large_blocks_to_the_system()
    assert memory.trim() in (True, False)  # 1 when it returned pages, 0 when there were none


# A process of its own: this one may have frozen its heap already (a server started by an earlier test).
SETTLE = textwrap.dedent("""
    import gc, sys, tempfile, threading
    from twisted.internet import reactor
    from twisted.internet.threads import blockingCallFromThread
    from mailserver import memory
    from mailserver.config import load_dict
    from mailserver.service import MailServer

    threading.Thread(target=reactor.run, kwargs={"installSignalHandlers": False}, daemon=True).start()
    assert gc.get_freeze_count() == 0
    counts = []
    for _ in range(2):
        cfg = load_dict({"hostname": "mail.example.test", "data_dir": tempfile.mkdtemp(),
                         "listen": {"pop3": ["127.0.0.1:0"]}, "domain": [{"name": "example.test"}]}, "t")
        server = MailServer(cfg, reactor)
        blockingCallFromThread(reactor, server.startService)
        assert server.port("pop3") > 0
        counts.append(gc.get_freeze_count())
        blockingCallFromThread(reactor, server.stopService)
    print(counts[0], counts[1], memory.settle_heap())
    reactor.callFromThread(reactor.stop)
""")


def test_the_first_start_of_a_process_freezes_its_heap_once():
    """The first server started in a process moves the start-up's objects to the collector's permanent
    generation; a second start in the same process (tests start hundreds) freezes nothing more."""
    proc = popen([sys.executable, "-c", SETTLE], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                 cwd=ROOT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    first, second, again = out.split()
    assert int(first) > 10_000  # modules, config, engine, listeners
    assert int(second) <= int(first)  # nothing frozen again; frozen objects freed by reference counting go
    assert again == "False"
