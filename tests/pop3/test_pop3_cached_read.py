"""RETR/TOP of a body that is in memory (the page cache) are answered on the reactor thread, with no blob-pool trip;
one that is not goes through the pool as before (FileBlobStore.read_cached decides, without waiting for a disk)."""

from __future__ import annotations

import os
import threading

import pytest

from storage.blobs import FileBlobStore
from tests.harness import running_server
from tests.pop3.test_pop3_server import PW, Raw, message, stuffed

ALICE = "alice@example.test"


def test_read_cached_gives_the_whole_body_only_when_it_is_the_size_listed(tmp_path):
    store = FileBlobStore(tmp_path / "blobs")
    ref = store.put(b"Subject: s\r\n\r\n" + b"x" * 5000)
    body = store.read(ref.id)
    assert store.read_cached(ref.id, ref.size) == body  # just written: in the page cache
    assert store.read_cached(ref.id, ref.size - 1) is None  # the file is longer than listed
    assert store.read_cached(ref.id, ref.size + 1) is None  # shorter
    assert store.read_cached("0" * 64, 10) is None  # no such file
    empty = store.put(b"")
    assert store.read_cached(empty.id, 0) == b""


def test_read_cached_does_not_wait_for_a_body_that_is_not_in_memory(tmp_path):
    """A body whose pages were dropped from the page cache is not read (EAGAIN from preadv2 RWF_NOWAIT): None, so
    RETR reads it in the blob pool; once read there it is in memory again."""
    store = FileBlobStore(tmp_path / "blobs")
    ref = store.put(b"y" * 20000)
    store.sync_pending()
    fd = os.open(store.path(ref.id), os.O_RDONLY)
    try:
        os.fsync(fd)  # clean pages can be dropped
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    got = store.read_cached(ref.id, ref.size)
    if got is not None:
        pytest.skip("this file system keeps the pages (tmpfs) or cannot drop them")
    assert store.read(ref.id) == b"y" * 20000
    assert store.read_cached(ref.id, ref.size) == b"y" * 20000


def test_read_cached_answers_held_content(tmp_path):
    store = FileBlobStore(tmp_path / "blobs")
    blob_id = "a" * 64
    store.hold(blob_id, b"held body")
    assert store.read_cached(blob_id, 9) == b"held body"
    assert store.read_cached(blob_id, 8) is None
    store.unhold(blob_id)
    assert store.read_cached(blob_id, 9) is None


def test_retr_and_top_of_cached_bodies_need_no_blob_pool(tmp_path):
    """With every thread of the blob pool busy, every RETR and TOP of freshly delivered messages is still answered byte-exact
    (dot lines included): they were read on the reactor thread."""
    with running_server(tmp_path, listeners=("pop3",)) as srv:
        srv.add_user(ALICE, PW)
        raws = [message(n, (b"line %d\r\n.dot\r\n" % n) * (20 + n)) for n in range(1, 8)]
        for raw in raws:
            srv.deliver(ALICE, raw)
        pool = srv.server.pools.blob
        release = threading.Event()
        for _ in range(pool.max):
            srv.call(pool.callInThread, release.wait, 60)
        try:
            r = Raw(srv.port("pop3"))
            r.line()
            r.send(f"USER {ALICE}\r\nPASS {PW}\r\n".encode())
            assert r.line().startswith(b"+OK")
            assert r.line().startswith(b"+OK maildrop has 7 messages")
            for n in (1, 4, 2):  # out of order: nothing read ahead to fall back on
                r.send(b"RETR %d\r\n" % n)
                assert r.line() == f"+OK {len(raws[n - 1])} octets".encode()
                assert r.until_terminator() == stuffed(raws[n - 1])
            r.send(b"TOP 7 0\r\nRETR 6\r\n")
            assert r.line() == b"+OK top of message follows"
            head = raws[6].split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
            assert r.until_terminator() == head + b".\r\n"
            assert r.line() == f"+OK {len(raws[5])} octets".encode()
            assert r.until_terminator() == stuffed(raws[5])
            r.send(b"QUIT\r\n")
            assert r.line().startswith(b"+OK")
            r.close()
        finally:
            release.set()


def test_the_open_on_the_reactor_thread_never_reads_a_directory_from_the_disk(tmp_path):
    """read_cached opens with openat2(RESOLVE_CACHED) (Linux 5.12+), which fails instead of waiting for a lookup
    that is not in the dentry cache: a missing name is None, a cached one an fd; without it nothing is opened."""
    from storage import blobs

    assert blobs._open_cached is not None  # this kernel has it (CI's too)
    (tmp_path / "f").write_bytes(b"x")
    fd = blobs._open_cached(str(tmp_path / "f"))
    assert fd is not None
    assert os.read(fd, 10) == b"x"
    os.close(fd)
    assert blobs._open_cached(str(tmp_path / "missing")) is None
