"""Blob store: message bodies kept byte-exact as received, stored once per content (sha256).

Two backends behind one small interface:

* :class:`FileBlobStore` (default): ``data_dir/blobs/ab/cd/<sha256>``; a blob is written to a temporary file, fsynced,
  renamed into place and its directory fsynced *before* the metadata that points at it commits, so no row ever names a
  missing blob after a crash.
* :class:`DatabaseBlobStore`: bodies in the ``blobs.data`` column, so several nodes sharing one PostgreSQL need no shared
  disk.  The row is committed by :meth:`BlobWriter.finish`; metadata that references it commits afterwards.

Writers are fed from the reactor thread (``write`` only appends to a temporary file); ``finish`` (fsync) and every read of
any size run in a thread pool.  Reference counts live in the ``blobs`` table and are maintained by the store; unreferenced
blobs are removed by :meth:`BlobStore.collect`.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Engine

from storage.models import Blob

#: Bodies up to this size are kept in memory while being written; larger ones spill to a temporary file.
SPOOL_IN_MEMORY = 1024 * 1024


@dataclass(frozen=True)
class BlobRef:
    id: str  # hex sha256 of the content
    size: int


class BlobWriter:
    """Accumulates one body; ``finish()`` makes it durable and returns its :class:`BlobRef`."""

    def __init__(self, store: "BlobStore"):
        self._store = store
        self._hash = hashlib.sha256()
        self._size = 0
        self._spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY, dir=store.tmp_dir)
        self._done = False

    @property
    def size(self) -> int:
        return self._size

    def write(self, data: bytes) -> None:
        if self._done:
            raise ValueError("blob writer already finished")
        self._hash.update(data)
        self._spool.write(data)
        self._size += len(data)

    def finish(self) -> BlobRef:
        """Make the body durable (blocking: call it in a thread pool)."""
        if self._done:
            raise ValueError("blob writer already finished")
        self._done = True
        ref = BlobRef(self._hash.hexdigest(), self._size)
        try:
            self._store._persist(ref, self._spool)
        finally:
            self._spool.close()
        return ref

    def abort(self) -> None:
        if not self._done:
            self._done = True
            self._spool.close()


class BlobStore:
    """Interface shared by both backends."""

    tmp_dir: str | None = None

    def writer(self) -> BlobWriter:
        return BlobWriter(self)

    def put(self, data: bytes) -> BlobRef:
        """Store ``data`` durably (blocking)."""
        w = self.writer()
        w.write(data)
        return w.finish()

    def _persist(self, ref: BlobRef, spool: BinaryIO) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def read(self, blob_id: str, start: int = 0, end: int | None = None) -> bytes:  # pragma: no cover
        raise NotImplementedError

    def open(self, blob_id: str) -> BinaryIO:  # pragma: no cover
        raise NotImplementedError

    def exists(self, blob_id: str) -> bool:  # pragma: no cover
        raise NotImplementedError

    def remove(self, blob_ids: list[str], grace: float = 3600.0) -> None:  # pragma: no cover
        """Delete content whose row was removed (called by the store's collect() after commit)."""
        raise NotImplementedError


def _check_id(blob_id: str) -> str:
    if len(blob_id) != 64 or any(c not in "0123456789abcdef" for c in blob_id):
        raise ValueError(f"bad blob id {blob_id!r}")
    return blob_id


class FileBlobStore(BlobStore):
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.tmp_dir = str(self.root / "tmp")
        os.makedirs(self.tmp_dir, exist_ok=True)

    def path(self, blob_id: str) -> Path:
        _check_id(blob_id)
        return self.root / blob_id[:2] / blob_id[2:4] / blob_id

    def _persist(self, ref: BlobRef, spool: BinaryIO) -> None:
        final = self.path(ref.id)
        try:
            if final.stat().st_size == ref.size:
                # Same content stored once.  Refresh the mtime: collect() never unlinks a file touched within its
                # grace period, so a concurrent garbage collection cannot remove what this delivery relies on.
                os.utime(final)
                return
        except FileNotFoundError:
            pass
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.tmp_dir)
        try:
            spool.seek(0)
            with os.fdopen(fd, "wb", closefd=True) as out:
                while chunk := spool.read(1 << 20):
                    out.write(chunk)
                out.flush()
                os.fdatasync(out.fileno())
            os.rename(tmp, final)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        dfd = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def read(self, blob_id: str, start: int = 0, end: int | None = None) -> bytes:
        with open(self.path(blob_id), "rb") as f:
            if start:
                f.seek(start)
            return f.read() if end is None else f.read(max(0, end - start))

    def open(self, blob_id: str) -> BinaryIO:
        return open(self.path(blob_id), "rb")

    def exists(self, blob_id: str) -> bool:
        return self.path(blob_id).exists()

    def remove(self, blob_ids: list[str], grace: float = 3600.0) -> None:
        now = time.time()
        for blob_id in blob_ids:
            p = self.path(blob_id)
            try:
                if now - p.stat().st_mtime >= grace:
                    p.unlink()
            except FileNotFoundError:
                pass


class DatabaseBlobStore(BlobStore):
    def __init__(self, engine: Engine, tmp_dir: str | None = None):
        self.engine = engine
        self.tmp_dir = tmp_dir

    def _persist(self, ref: BlobRef, spool: BinaryIO) -> None:
        spool.seek(0)
        data = spool.read()
        with self.engine.connect() as conn:
            conn.info["sqlite_begin"] = "IMMEDIATE"
            with conn.begin():
                have = conn.execute(select(Blob.id).where(Blob.id == ref.id)).first()
                if have is None:
                    conn.execute(insert(Blob).values(id=ref.id, size=ref.size, refcount=0, data=data,
                                                     created=time.time()))
                else:
                    # Touch: collect() leaves rows created/touched within its grace period alone.
                    conn.execute(update(Blob).where(Blob.id == ref.id).values(data=data, created=time.time()))
            conn.info.pop("sqlite_begin", None)

    def read(self, blob_id: str, start: int = 0, end: int | None = None) -> bytes:
        with self.engine.connect() as conn:
            data = conn.execute(select(Blob.data).where(Blob.id == blob_id)).scalar()
        if data is None:
            raise FileNotFoundError(blob_id)
        return bytes(data[start:end])

    def open(self, blob_id: str) -> BinaryIO:
        import io

        return io.BytesIO(self.read(blob_id))

    def exists(self, blob_id: str) -> bool:
        with self.engine.connect() as conn:
            return conn.execute(select(Blob.id).where(Blob.id == blob_id, Blob.data.is_not(None))).first() is not None

    def remove(self, blob_ids: list[str], grace: float = 3600.0) -> None:
        # The rows (and so the data) were deleted by the store's collect(); nothing is left on disk.
        return
