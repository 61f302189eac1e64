"""The blob store's and the body's in-memory hot path stores the same bytes as the spooled way."""

from mailserver.delivery.body import Body
from storage import blobs as blobs_mod
from storage.blobs import FileBlobStore


def test_finish_keeping_hands_back_small_bodies_and_stores_them_byte_exact(tmp_path):
    store = FileBlobStore(tmp_path / "blobs")
    w = store.writer()
    w.write(b"Subject: a\r\n\r\n")
    w.write(b"body\r\n")
    ref, data = w.finish_keeping()
    assert data == b"Subject: a\r\n\r\nbody\r\n"
    assert store.read(ref.id) == data and ref.size == len(data)
    store.sync_pending()


def test_a_body_past_the_memory_spool_is_spooled_and_not_handed_back(tmp_path):
    store = FileBlobStore(tmp_path / "blobs")
    w = store.writer()
    big = b"x" * (blobs_mod.SPOOL_IN_MEMORY + 1)
    w.write(big)
    ref, data = w.finish_keeping()
    assert data is None
    assert store.read(ref.id) == big


def test_the_same_content_twice_is_one_file(tmp_path):
    store = FileBlobStore(tmp_path / "blobs")
    a, b = store.put(b"same"), store.put(b"same")
    assert a.id == b.id and store.read(a.id) == b"same"


def test_a_copy_with_a_prefix_from_memory_equals_the_copy_from_disk(tmp_path):
    store = FileBlobStore(tmp_path / "blobs")
    body = Body.streaming(store, [b"Return-Path: <a@x>\r\n"], b"Received: by us\r\n")
    body.write(b"Subject: s\r\n\r\nhello\r\n")
    body.finish(None)
    source = body.forms[0]
    assert source.content is not None
    from_memory = body._copy(source, b"Authentication-Results: us; none\r\n")
    source.content = None
    from_disk = body._copy(source, b"Authentication-Results: us; none\r\n")
    assert from_memory.id == from_disk.id
    assert store.read(from_memory.id) == b"Authentication-Results: us; none\r\nReceived: by us\r\nSubject: s\r\n\r\nhello\r\n"
    body.drop_contents()
    assert all(f.content is None for f in body.forms)
