"""mailserver/memory.py: freed memory goes back to the system (glibc) once connections have closed."""

from __future__ import annotations

from twisted.internet import defer, task

from mailserver import memory


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
