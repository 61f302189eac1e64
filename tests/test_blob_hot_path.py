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


def test_a_fresh_store_makes_each_directory_before_the_rename_and_again_when_removed(tmp_path, monkeypatch):
    """New blobs in directories the store has not seen yet are made without a failed rename first; a directory
    removed behind the store's back (after it was remembered) is made again on the failed rename."""
    import os
    import shutil

    store = FileBlobStore(tmp_path / "blobs")
    renames = []
    real_rename = os.rename

    def counting_rename(a, b):
        renames.append(b)
        return real_rename(a, b)

    monkeypatch.setattr(os, "rename", counting_rename)
    refs = [store.put(f"message {i}".encode()) for i in range(20)]
    assert len(renames) == 20  # one rename per blob, none failed
    assert all(store.read(r.id) == f"message {i}".encode() for i, r in enumerate(refs))
    gone = store.path(refs[0].id).parent.parent
    shutil.rmtree(gone)
    again = store.put(b"message 0")
    assert again.id == refs[0].id and store.read(again.id) == b"message 0"
    store.sync_pending()


def test_discard_sees_the_mtime_of_the_file_it_created(tmp_path):
    """The mtime remembered for discard() (taken from the open file) is the stored file's: it is discarded."""
    store = FileBlobStore(tmp_path / "blobs")
    ref = store.put(b"only here")
    assert store.discard([ref.id], lambda ids: set()) == 1
    assert not store.exists(ref.id)
