"""Blob store: message bodies kept byte-exact as received, stored once per content (sha256).

Two backends behind one small interface:

* :class:`FileBlobStore` (default): ``data_dir/blobs/ab/cd/<sha256>``; a blob is written to a temporary file and
  renamed into place; it is made durable *before* the metadata that points at it commits, so no row ever names a
  missing blob after a crash.  Durability is group-committed too: ``finish()`` leaves the file pending and
  :meth:`BlobStore.sync_pending` (called by the store at the start of every write transaction) flushes every pending
  file with one ``syncfs(2)`` of the blob file system (falling back to fsync of each file and directory where syncfs
  is unavailable).  One flush then covers a whole batch of deliveries.
* :class:`DatabaseBlobStore`: bodies in the ``blobs.data`` column, so several nodes sharing one PostgreSQL need no shared
  disk.  The row is committed by :meth:`BlobWriter.finish`; metadata that references it commits afterwards.

Writers are fed from the reactor thread (``write`` only appends to a temporary file); ``finish`` (fsync) and every read of
any size run in a thread pool (but :meth:`BlobStore.read_cached`, which never waits for a disk).  Reference counts live in the ``blobs`` table and are maintained by the store; unreferenced
blobs are removed by :meth:`storage.store.Store.collect_blobs` (which calls :meth:`BlobStore.remove`).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, Sequence

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Engine

from storage.db import write_lock
from storage.models import Blob
from storage.sql import chunks

#: Bodies up to this size are kept in memory while being written; larger ones spill to a temporary file.
SPOOL_IN_MEMORY = 1024 * 1024
#: preadv2's "fail rather than wait for the disk" flag (Linux 4.14+), None where the platform has none.
_RWF_NOWAIT = getattr(os, "RWF_NOWAIT", None) if hasattr(os, "preadv") else None
_O_READ = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)


def _load_open_cached():
    """``open_cached(path) -> fd | None``: openat2(2) with RESOLVE_CACHED, which fails with EAGAIN where the path's
    lookup would have to read a directory from the disk (Linux 5.12+; the syscall number is the same on every
    architecture).  None when the kernel or libc has no such call: then nothing is opened on the reactor thread."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        syscall = libc.syscall
        syscall.restype = ctypes.c_long
        syscall.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t]
    except (OSError, AttributeError):
        return None

    class OpenHow(ctypes.Structure):
        _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]

    how = OpenHow(_O_READ, 0, 0x20)  # RESOLVE_CACHED
    how_ref, how_size = ctypes.addressof(how), ctypes.sizeof(how)

    def open_cached(path: str) -> int | None:
        fd = syscall(437, -100, path.encode(), how_ref, how_size)  # openat2(AT_FDCWD, path, &how, sizeof how)
        return fd if fd >= 0 else None

    open_cached.how = how  # kept alive with the function
    try:
        fd = open_cached("/")
    except Exception:  # noqa: BLE001 - any failure of the probe: no reactor-thread opens
        return None
    if fd is None:
        return None  # ENOSYS (old kernel), EINVAL (no RESOLVE_CACHED), or a sandbox refusing the call
    os.close(fd)
    return open_cached


_open_cached = _load_open_cached() if _RWF_NOWAIT is not None else None
#: How many files a FileBlobStore remembers having created, for :meth:`BlobStore.discard`.
FRESH_KEPT = 4096


@dataclass(frozen=True)
class BlobRef:
    id: str  # hex sha256 of the content
    size: int
    #: Finish order number within this process: durable once the store's synced sequence reaches it.
    seq: int = field(default=0, compare=False)


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
        return self.finish_keeping()[0]

    def finish_keeping(self) -> tuple[BlobRef, bytes | None]:
        """:meth:`finish`, and the content when it was still in memory (up to :data:`SPOOL_IN_MEMORY`), so a
        caller that parses or copies it next need not read it back."""
        if self._done:
            raise ValueError("blob writer already finished")
        self._done = True
        ref = BlobRef(self._hash.hexdigest(), self._size)
        try:
            data = self._in_memory()
            seq = self._store._persist(ref, self._spool) if data is None else self._store._persist_bytes(ref, data)
        finally:
            self._spool.close()
        return replace(ref, seq=seq or 0), data

    def _in_memory(self) -> bytes | None:
        """The content while the spool has not rolled over to a file, else None."""
        buf = getattr(self._spool, "_file", None)  # SpooledTemporaryFile: a BytesIO until it rolls over
        getvalue = getattr(buf, "getvalue", None)
        return getvalue() if getvalue is not None else None

    def take(self) -> tuple[BlobRef, bytes] | None:
        """End the writer *without storing*: its ref (no finish sequence) and content, when it was still in memory;
        None (and the writer still open) when it spilled to a file.  The caller stores the content later with
        :meth:`BlobStore.put_ref`, or never (a message refused, or every copy made from it with added fields)."""
        if self._done:
            raise ValueError("blob writer already finished")
        data = self._in_memory()
        if data is None:
            return None
        self._done = True
        self._spool.close()
        return BlobRef(self._hash.hexdigest(), self._size), data

    def abort(self) -> None:
        if not self._done:
            self._done = True
            self._spool.close()


class BlobStore:
    """Interface shared by both backends."""

    tmp_dir: str | None = None

    def __init__(self):
        #: Content not stored (yet) that reads by id are answered from: id -> [bytes, holders] (:meth:`hold`).
        self._held: dict[str, list] = {}
        self._held_lock = threading.Lock()

    def hold(self, blob_id: str, data: bytes) -> None:
        """Answer :meth:`read`/:meth:`open` of ``blob_id`` from ``data`` until :meth:`unhold` (a message whose
        checks read it before any copy of it is stored); holders are counted."""
        with self._held_lock:
            entry = self._held.get(blob_id)
            if entry is None:
                self._held[blob_id] = [data, 1]
            else:
                entry[1] += 1

    def unhold(self, blob_id: str) -> None:
        with self._held_lock:
            entry = self._held.get(blob_id)
            if entry is not None:
                entry[1] -= 1
                if entry[1] <= 0:
                    del self._held[blob_id]

    def _held_read(self, blob_id: str, start: int, end: int | None) -> bytes | None:
        entry = self._held.get(blob_id) if self._held else None
        if entry is None:
            return None
        data = entry[0]
        return data[start:] if end is None else data[start:max(start, end)]

    def sync_pending(self) -> None:
        """Make every blob finished so far durable (blocking)."""

    def ensure_synced(self, refs) -> None:
        """Make the given blobs durable (blocking).  Call before committing metadata that names them."""
        self.sync_pending()

    def writer(self) -> BlobWriter:
        return BlobWriter(self)

    def put(self, data: bytes) -> BlobRef:
        """Store ``data`` (blocking; durable at the next :meth:`sync_pending`)."""
        ref = BlobRef(hashlib.sha256(data).hexdigest(), len(data))
        seq = self._persist_bytes(ref, data)
        return replace(ref, seq=seq or 0)

    def put_ref(self, ref: BlobRef, data: bytes) -> BlobRef:
        """:meth:`put` of content whose ref is known (:meth:`BlobWriter.take`): no second hash."""
        return replace(ref, seq=self._persist_bytes(ref, data) or 0)

    def _persist_bytes(self, ref: BlobRef, data: bytes) -> int | None:
        import io

        return self._persist(ref, io.BytesIO(data))

    def _persist(self, ref: BlobRef, spool: BinaryIO) -> int | None:  # pragma: no cover - interface
        """Store the content; returns the finish sequence number (file backend) or None."""
        raise NotImplementedError

    def read(self, blob_id: str, start: int = 0, end: int | None = None) -> bytes:  # pragma: no cover
        raise NotImplementedError

    def open(self, blob_id: str) -> BinaryIO:  # pragma: no cover
        raise NotImplementedError

    def read_whole(self, wanted: Sequence[tuple[str, int]]) -> list[bytes]:
        """The whole contents of ``wanted`` ((blob id, size) pairs), in order, as far as each is there and is that
        size: the list ends before the first that is not (blocking; POP3's read-ahead).  Here one read each; the
        database backend reads them in one statement."""
        out = []
        for blob_id, size in wanted:
            try:
                data = self.read(blob_id, 0, size + 1)
            except OSError:
                break
            if len(data) != size:
                break
            out.append(data)
        return out

    def read_cached(self, blob_id: str, size: int) -> bytes | None:
        """The whole content of ``blob_id`` if it is ``size`` octets and can be had without waiting for a disk (held,
        or every page in the page cache); None otherwise, and always here: read it in a pool.  Safe on the reactor
        thread."""
        return None

    def exists(self, blob_id: str) -> bool:  # pragma: no cover
        raise NotImplementedError

    def remove(self, blob_ids: list[str], grace: float = 3600.0, now: float | None = None) -> int:  # pragma: no cover
        """Delete content whose row was removed (called by the store's collect() after commit); returns how many
        were removed (a file touched within ``grace`` seconds of ``now`` is kept)."""
        raise NotImplementedError

    def discard(self, blob_ids, is_referenced: Callable[[list[str]], set[str]]) -> int:
        """Delete at once blobs a delivery stored and then referenced nowhere (after its commit); returns how many.

        Only content this store created and nobody stored again since is deleted, and only when
        ``is_referenced`` (ids -> the ones some row names) says no row names it: a blob identical to one kept
        elsewhere, or being de-duplicated into another delivery right now, stays.  Anything else is left to the
        collector's orphan sweep (:meth:`orphans`)."""
        return 0

    def orphans(self, older_than: float) -> Iterator[str]:
        """Ids of stored content last written or touched before ``older_than`` (epoch seconds) that has no row of
        its own (file backend: every file; the database backend keeps a row per blob, so none)."""
        return iter(())

    def forget(self, blob_ids) -> None:
        """These blobs are referenced now: :meth:`discard` need not remember them."""


def _check_id(blob_id: str) -> str:
    if len(blob_id) != 64 or any(c not in "0123456789abcdef" for c in blob_id):
        raise ValueError(f"bad blob id {blob_id!r}")
    return blob_id


def _load_syncfs():
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        f = libc.syncfs
        f.argtypes = [ctypes.c_int]
        return f
    except (OSError, AttributeError):
        return None


_syncfs = _load_syncfs()


class FileBlobStore(BlobStore):
    def __init__(self, root: str | os.PathLike, *, use_syncfs: bool = True):
        super().__init__()
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.tmp_dir = str(self.root / "tmp")
        os.makedirs(self.tmp_dir, exist_ok=True)
        self._root_str = str(self.root)
        self._pending: set = set()
        self._lock = threading.Lock()
        self._sync_lock = threading.Lock()  # one flush at a time; waiters re-check whether it covered them
        self._use_syncfs = use_syncfs and _syncfs is not None
        self._finished = 0  # sequence number of the last finish()
        self._synced = 0  # every blob with seq <= this is durable
        self.syncs = 0
        self.created = 0  # files written (content not already stored)
        #: Files this store created and nobody stored again since: id -> st_mtime_ns after the rename (discard()).
        #: Bounded: the oldest entries are forgotten (their files then wait for the collector's orphan sweep).
        self._fresh: dict[str, int] = {}
        #: The two-level directories ("ab/cd") known to exist: a new blob in one is renamed into it at once, and
        #: one missing is made before the rename instead of after a failed one (at most 65,536 entries).
        self._dirs: set[str] = set()

    def _mark_pending(self, path: Path, blob_id: str = "", created: bool = False, mtime_ns: int | None = None) -> int:
        if created and mtime_ns is None:
            mtime_ns = os.stat(path).st_mtime_ns
        with self._lock:
            if created:
                self.created += 1
                self._fresh[blob_id] = mtime_ns
                if len(self._fresh) > FRESH_KEPT:
                    del self._fresh[next(iter(self._fresh))]
            else:
                self._fresh.pop(blob_id, None)  # stored twice: shared content, never discarded at once
            self._pending.add(path)
            self._finished += 1
            return self._finished

    def ensure_synced(self, refs) -> None:
        """Flush unless a flush that started after these blobs were finished already completed.

        Deliveries are committed in batches while the next batch's blobs are flushed (the group committer calls
        this in the blob pool first), so the flush and the database commit overlap.
        """
        need = max((r.seq for r in refs), default=0)
        if need <= self._synced:
            return
        with self._sync_lock:
            if need <= self._synced:
                return  # a flush finished while we waited for the lock
            self._flush()

    def sync_pending(self) -> None:
        with self._sync_lock:
            self._flush()

    def _flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, set()
            upto = self._finished
        if not pending:
            self._synced = max(self._synced, upto)
            return
        self.syncs += 1
        self._flush_paths(pending)
        self._synced = max(self._synced, upto)

    def _flush_paths(self, pending: set[Path]) -> None:
        if self._use_syncfs:
            fd = os.open(self.root, os.O_RDONLY)
            try:
                if _syncfs(fd) == 0:
                    return
            finally:
                os.close(fd)
        dirs = set()
        for path in pending:
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                os.fdatasync(fd)
            finally:
                os.close(fd)
            parent = os.path.dirname(path)
            dirs.add(parent)
            dirs.add(os.path.dirname(parent))
        for d in dirs:
            fd = os.open(d, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def path(self, blob_id: str) -> Path:
        _check_id(blob_id)
        return self.root / blob_id[:2] / blob_id[2:4] / blob_id

    def _fast_path(self, blob_id: str) -> str:
        """path() as a plain string for the hot write path (ids made here are hex sha256 already)."""
        return os.path.join(self._root_str, blob_id[:2], blob_id[2:4], blob_id)

    def _persist_bytes(self, ref: BlobRef, data: bytes) -> int:
        """put() fast path: no spool, one write, plain string paths."""
        final = self._fast_path(ref.id)
        try:
            if os.stat(final).st_size == ref.size:
                os.utime(final)
                return self._mark_pending(final, ref.id)
        except FileNotFoundError:
            pass
        tmp = os.path.join(self.tmp_dir, f"{ref.id}.{os.getpid()}.{threading.get_ident()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            # The file's mtime, for discard(): a rename keeps it, so no stat of the final path after it.
            mtime_ns = os.fstat(fd).st_mtime_ns
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
        os.close(fd)
        try:
            self._rename_into_place(tmp, final, ref.id)
        except BaseException:
            os.unlink(tmp)
            raise
        return self._mark_pending(final, ref.id, created=True, mtime_ns=mtime_ns)

    def _persist(self, ref: BlobRef, spool: BinaryIO) -> int:
        final = self._fast_path(ref.id)
        try:
            if os.stat(final).st_size == ref.size:
                # Same content stored once.  Refresh the mtime: collect() never unlinks a file touched within its
                # grace period, so a concurrent garbage collection cannot remove what this delivery relies on.
                # (Its first writer may not have flushed it yet: it counts as pending again.)
                os.utime(final)
                return self._mark_pending(final, ref.id)
        except FileNotFoundError:
            pass
        fd, tmp = tempfile.mkstemp(dir=self.tmp_dir)
        try:
            spool.seek(0)
            with os.fdopen(fd, "wb", closefd=True) as out:
                while chunk := spool.read(1 << 20):
                    out.write(chunk)
            self._rename_into_place(tmp, final, ref.id)  # durable at the next flush, before any metadata naming it commits
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        return self._mark_pending(final, ref.id, created=True)

    def _rename_into_place(self, tmp: str, final: str, blob_id: str) -> None:
        """``rename(tmp, final)``, making the two directory levels first when they are not known to exist (a
        fresh store has a new directory for nearly every blob: a failed rename, a check and a retry each cost as
        much as the mkdir).  A directory removed behind the store's back is made again on the failed rename."""
        sub = blob_id[:2] + "/" + blob_id[2:4]
        if sub not in self._dirs:
            self._make_dirs(os.path.dirname(final))
            self._dirs.add(sub)
            os.rename(tmp, final)
            return
        try:
            os.rename(tmp, final)
        except FileNotFoundError:
            if not os.path.exists(tmp):
                raise
            self._make_dirs(os.path.dirname(final))
            os.rename(tmp, final)

    @staticmethod
    def _make_dirs(leaf: str) -> None:
        """``root/ab/cd`` (``leaf``) and its parent, whichever is missing."""
        try:
            os.mkdir(leaf)
        except FileExistsError:
            pass
        except FileNotFoundError:
            try:
                os.mkdir(os.path.dirname(leaf))
            except FileExistsError:
                pass
            try:
                os.mkdir(leaf)
            except FileExistsError:
                pass

    def read(self, blob_id: str, start: int = 0, end: int | None = None) -> bytes:
        held = self._held_read(blob_id, start, end)
        if held is not None:
            return held
        if end is not None and start >= 0:
            # A range (FETCH's headers and sections): open, pread, close, without a file object's fstat, isatty
            # ioctl and lseek (three syscalls a read instead of six).  A range past the end is cut there, as read().
            want = max(0, end - start)
            fd = os.open(self.path(blob_id), os.O_RDONLY | os.O_CLOEXEC)
            try:
                data = os.pread(fd, want, start)
                while 0 < len(data) < want:  # a short read before the end (not seen on local files)
                    more = os.pread(fd, want - len(data), start + len(data))
                    if not more:
                        break
                    data += more
                return data
            finally:
                os.close(fd)
        with open(self.path(blob_id), "rb") as f:
            if start:
                f.seek(start)
            return f.read() if end is None else f.read(max(0, end - start))

    def read_cached(self, blob_id: str, size: int) -> bytes | None:
        # preadv2(RWF_NOWAIT) copies what the page cache holds and fails with EAGAIN where it would have to wait
        # for the disk (EOPNOTSUPP where the file system cannot tell): the body is read only if all of it is there.
        # The open goes through openat2(RESOLVE_CACHED), which fails rather than read a directory from the disk.
        held = self._held_read(blob_id, 0, None)
        if held is not None:
            return held if len(held) == size else None
        if _open_cached is None:
            return None
        fd = _open_cached(f"{self._root_str}/{blob_id[:2]}/{blob_id[2:4]}/{blob_id}")  # (no os.path.join)
        if fd is None:
            return None
        try:
            buf = bytearray(size + 1)  # one octet more: a file longer than listed is not taken
            n = os.preadv(fd, (buf,), 0, _RWF_NOWAIT)
        except OSError:
            return None
        finally:
            os.close(fd)
        if n != size:
            return None
        del buf[size:]
        return bytes(buf)

    def open(self, blob_id: str) -> BinaryIO:
        held = self._held_read(blob_id, 0, None)
        if held is not None:
            import io

            return io.BytesIO(held)
        return open(self.path(blob_id), "rb")

    def exists(self, blob_id: str) -> bool:
        return self.path(blob_id).exists()

    def remove(self, blob_ids: list[str], grace: float = 3600.0, now: float | None = None) -> int:
        now = time.time() if now is None else now
        removed = 0
        for blob_id in blob_ids:
            p = self.path(blob_id)
            try:
                if now - p.stat().st_mtime >= grace:
                    p.unlink()
                    removed += 1
            except FileNotFoundError:
                pass
            with self._lock:
                self._fresh.pop(blob_id, None)
        return removed

    def discard(self, blob_ids, is_referenced: Callable[[list[str]], set[str]]) -> int:
        with self._lock:
            mine = {i: self._fresh.pop(i) for i in dict.fromkeys(blob_ids) if i in self._fresh}
        if not mine:
            return 0
        mine = {i: m for i, m in mine.items() if self._mtime_ns(self._fast_path(i)) == m}  # not stored again since
        if not mine:
            return 0
        keep = is_referenced(list(mine))
        removed = 0
        for blob_id, mtime_ns in mine.items():
            if blob_id in keep:
                continue
            final = self._fast_path(blob_id)
            # Moved aside first: a delivery storing the same content now either finds no file (and writes its
            # own) or touched it before the move (its mtime changed: put back).
            aside = os.path.join(self.tmp_dir, f"{blob_id}.discard.{os.getpid()}.{threading.get_ident()}")
            try:
                os.rename(final, aside)
            except FileNotFoundError:
                continue
            if self._mtime_ns(aside) == mtime_ns:
                os.unlink(aside)
                removed += 1
            else:
                os.rename(aside, final)  # same content by its name, whoever wrote final meanwhile
        return removed

    def forget(self, blob_ids) -> None:
        with self._lock:
            for blob_id in blob_ids:
                self._fresh.pop(blob_id, None)

    @staticmethod
    def _mtime_ns(path: str) -> int | None:
        try:
            return os.stat(path).st_mtime_ns
        except FileNotFoundError:
            return None

    def orphans(self, older_than: float) -> Iterator[str]:
        """Every file under the two directory levels (the temporary directory is never listed)."""
        try:
            tops = sorted(os.scandir(self.root), key=lambda e: e.name)
        except FileNotFoundError:
            return
        for top in tops:
            if len(top.name) != 2 or not top.is_dir(follow_symlinks=False):
                continue
            for mid in sorted(os.scandir(top.path), key=lambda e: e.name):
                if not mid.is_dir(follow_symlinks=False):
                    continue
                for entry in os.scandir(mid.path):
                    name = entry.name
                    if len(name) != 64 or not name.startswith(top.name + mid.name):
                        continue
                    try:
                        if entry.stat(follow_symlinks=False).st_mtime < older_than:
                            yield name
                    except FileNotFoundError:
                        continue


#: DatabaseBlobStore._persist on PostgreSQL: the upsert, in a transaction of its own whose commit is not flushed.
_PG_PERSIST = ("INSERT INTO blobs (id, size, refcount, data, created) "
               "SELECT %(id)s, %(size)s, 0, %(data)s, %(created)s "
               "FROM (SELECT set_config('synchronous_commit', 'off', true)) AS unflushed "
               "ON CONFLICT (id) DO UPDATE SET data = coalesce(blobs.data, excluded.data), created = excluded.created")


class DatabaseBlobStore(BlobStore):
    def __init__(self, engine: Engine, tmp_dir: str | None = None):
        super().__init__()
        self.engine = engine
        self.tmp_dir = tmp_dir

    def _persist(self, ref: BlobRef, spool: BinaryIO) -> None:
        """Committed here, before any metadata naming the blob (SQLite: durable at once; PostgreSQL: see below)."""
        spool.seek(0)
        data = spool.read()
        if self.engine.dialect.name == "postgresql":
            # One statement committed on its own (AUTOCOMMIT): one round trip instead of SELECT, BEGIN, INSERT or
            # UPDATE, COMMIT.  A row already there (the same content, or a row the file backend's ref() made) gets
            # its data if it had none and is touched, as below.
            #
            # Its commit is not flushed on its own (synchronous_commit off for this statement's transaction, set in
            # the statement: no round trip of its own).  It needs no flush of its own: PostgreSQL's WAL is one
            # sequence, flushed in order, and every transaction naming the blob begins after this commit returned,
            # so its commit record comes later in the WAL and a durable metadata commit (the one before an SMTP 250)
            # flushes the blob's row with it; after a crash the server recovers a prefix of the WAL, which never
            # holds a row naming the blob without the blob.  This was one WAL flush per message, on top of the
            # group commit's one per batch (docs/benchmarks.md, branch pgsmtp).
            with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql(_PG_PERSIST, {"id": ref.id, "size": ref.size, "data": data,
                                                   "created": time.time()})
            return
        with write_lock(self.engine), self.engine.connect() as conn:
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
        held = self._held_read(blob_id, start, end)
        if held is not None:
            return held
        # A range is cut by the database (substr counts from 1 on SQLite BLOBs and PostgreSQL bytea alike), so
        # reading a large message piece by piece moves each piece once, not the whole message per piece.
        start = max(start, 0)
        if end is not None and end <= start:
            column = func.substr(Blob.data, 1, 0)
        elif end is not None:
            column = func.substr(Blob.data, start + 1, end - start)
        elif start:
            column = func.substr(Blob.data, start + 1)
        else:
            column = Blob.data
        with self.engine.connect() as conn:
            data = conn.execute(select(column).where(Blob.id == blob_id)).scalar()
        if data is None:
            raise FileNotFoundError(blob_id)
        return bytes(data)

    def open(self, blob_id: str) -> BinaryIO:
        import io

        return io.BytesIO(self.read(blob_id))

    def read_whole(self, wanted: Sequence[tuple[str, int]]) -> list[bytes]:
        """One statement for all of ``wanted`` (a round trip and SQLAlchemy's machinery once, not per body); bodies
        larger than listed are not fetched whole (only their first octets past the listed size)."""
        wanted = list(wanted)
        if not wanted:
            return []
        longest = max(size for _, size in wanted) + 1
        found: dict[str, bytes] = {}
        ids = list(dict.fromkeys(blob_id for blob_id, _ in wanted if self._held_read(blob_id, 0, None) is None))
        if ids:
            conn = self.engine.connect()
            with conn:
                for chunk in chunks(ids):
                    for blob_id, data in conn.execute(select(Blob.id, func.substr(Blob.data, 1, longest)).where(
                            Blob.id.in_(chunk), Blob.data.is_not(None))):
                        found[blob_id] = bytes(data)
        out = []
        for blob_id, size in wanted:
            data = found.get(blob_id)
            if data is None:
                data = self._held_read(blob_id, 0, size + 1)
            if data is None or len(data) != size:
                break
            out.append(data)
        return out

    def exists(self, blob_id: str) -> bool:
        with self.engine.connect() as conn:
            return conn.execute(select(Blob.id).where(Blob.id == blob_id, Blob.data.is_not(None))).first() is not None

    def remove(self, blob_ids: list[str], grace: float = 3600.0, now: float | None = None) -> int:
        # The rows (and so the data) were deleted by the store's collect(); nothing is left on disk.  A body no
        # delivery referenced keeps its row with refcount 0 (written by _persist), which collect() removes.
        return len(blob_ids)
