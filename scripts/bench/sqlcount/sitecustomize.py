"""Counts what a process sends to its database, for the benchmarks (never imported by the server itself).

Put this directory first on ``PYTHONPATH`` and set ``SQLCOUNT_DIR``: every Python process started with that
environment (a `mailserver serve` supervisor, its workers) then writes ``<SQLCOUNT_DIR>/<pid>.json`` every half
second and at exit:

* ``sa``: statements SQLAlchemy executed (``before_cursor_execute``, executemany counted once), by first word, and
  its transactions' ends (``_commit``, ``_rollback``: SQLAlchemy's events, on SQLite too, where BEGIN goes straight
  to the driver); ``sa_detail``: the statements by first word and table;
* ``wire``: with ``PSYCOPG_IMPL=python`` (psycopg's ctypes libpq wrapper, which can be wrapped), every command sent
  to PostgreSQL, by kind: BEGIN/COMMIT/ROLLBACK sent by psycopg itself, the pool's ping, SET, pg_notify,
  PREPARE/DEALLOCATE of server-side prepared statements, SELECT/INSERT/UPDATE/DELETE.  Without pipeline mode each
  is one round trip.

The python implementation of psycopg costs more CPU than the binary one: measure CPU in separate runs without it.
``scripts/bench/sqlcount.py`` sums the files.
"""

import atexit
import collections
import json
import os
import threading

_DIR = os.environ.get("SQLCOUNT_DIR")
#: ``SQLCOUNT_CALLERS=1``: also count each statement by the two innermost server functions it came from
#: (``sa_callers``; costs a frame walk per statement).
_CALLERS = bool(os.environ.get("SQLCOUNT_CALLERS"))


def _install() -> None:
    counts = {"sa": collections.Counter(), "wire": collections.Counter(), "shapes": collections.Counter(),
              "sa_detail": collections.Counter(), "sa_callers": collections.Counter()}
    current: dict[int, list[str]] = {}  # per libpq connection: the commands of its open transaction
    lock = threading.Lock()
    names: dict[tuple[int, bytes], str] = {}  # per connection: prepared statement names are

    def kind(sql) -> str:
        if isinstance(sql, (bytes, bytearray, memoryview)):
            sql = bytes(sql).decode("utf-8", "replace")
        s = sql.lstrip().lstrip("(").lstrip()
        if not s or s == ";":
            return "ping"
        low = s[:200].lower()
        if "pg_notify" in low:
            return "pg_notify"
        if "advisory" in low:
            return "advisory"
        word = low.split(None, 1)[0].rstrip(";")
        return word

    import re

    target = re.compile(r"\b(?:from|into|update)\s+\"?([a-z_]+)", re.I)

    def detail(sql) -> str:
        if isinstance(sql, (bytes, bytearray, memoryview)):
            sql = bytes(sql).decode("utf-8", "replace")
        k = kind(sql)
        m = target.search(sql[:300])
        return f"{k} {m.group(1)}" if m and k in ("select", "insert", "update", "delete") else k

    sqls: dict[tuple[int, bytes], bytes] = {}

    def shape(conn_id: int, sql_text) -> None:
        d = detail(sql_text)
        seq = current.setdefault(conn_id, [])
        seq.append(d)
        if d in ("commit", "rollback") or (d != "begin" and len(seq) == 1):
            # a transaction ended, or an autocommit statement / ping outside one
            with lock:
                counts["shapes"][" | ".join(seq)] += 1
            current[conn_id] = []

    def add(section: str, k: str, n: int = 1) -> None:
        with lock:
            counts[section][k] += n

    import sys

    def caller() -> str:
        """The innermost frames of the server's own code (storage/, mailserver/) that led to a statement."""
        f = sys._getframe(2)
        names = []
        while f is not None and len(names) < 2:
            fn = f.f_code.co_filename
            if ("/storage/" in fn or "/mailserver/" in fn) and not fn.endswith(("/storage/db.py", "/storage/sql.py")):
                names.append(f"{fn.rsplit('/', 1)[-1]}:{f.f_code.co_name}")
            f = f.f_back
        return " < ".join(names) or "?"

    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    @event.listens_for(Engine, "before_cursor_execute")
    def _before(conn, cursor, statement, parameters, context, executemany):
        add("sa", kind(statement))
        add("sa", "_total")
        add("sa_detail", detail(statement))
        if _CALLERS:
            add("sa_callers", f"{detail(statement)} @ {caller()}")

    @event.listens_for(Engine, "commit")
    def _commit(conn):
        add("sa", "_commit")

    @event.listens_for(Engine, "rollback")
    def _rollback(conn):
        add("sa", "_rollback")

    try:
        from psycopg.pq import pq_ctypes
    except Exception:  # no psycopg or not the python implementation
        pq_ctypes = None
    if pq_ctypes is not None and os.environ.get("PSYCOPG_IMPL") == "python":
        P = pq_ctypes.PGconn

        def wrap(meth: str, sql_arg: int | None, label=None):
            orig = getattr(P, meth)

            def wrapper(self, *args, **kw):
                if label is not None:
                    k = label
                elif meth in ("send_query_prepared", "exec_prepared"):
                    k = "exec-prepared:" + names.get((id(self), bytes(args[0])), "?")
                else:
                    k = kind(args[sql_arg])
                if meth in ("send_prepare", "prepare"):
                    names[(id(self), bytes(args[0]))] = kind(args[1])
                    sqls[(id(self), bytes(args[0]))] = bytes(args[1])
                elif meth in ("send_query_prepared", "exec_prepared"):
                    shape(id(self), sqls.get((id(self), bytes(args[0])), b"?"))
                elif sql_arg is not None:
                    shape(id(self), args[sql_arg])
                add("wire", k)
                add("wire", "_total")
                base = k.split(":")[-1]
                if base in ("insert", "update", "delete", "pg_notify") and self.transaction_status == 0:
                    if os.environ.get("SQLCOUNT_STACKS"):
                        import traceback
                        with open(os.environ["SQLCOUNT_STACKS"], "a") as f:
                            f.write(f"---- {bytes(args[0])[:100]!r} conn autocommit={getattr(self, '_x', '?')}\n")
                            traceback.print_stack(file=f)
                    add("wire", "!write outside a transaction: " + detail(args[0] if meth not in ("send_query_prepared", "exec_prepared") else sqls.get((id(self), bytes(args[0])), b"?")))  # 0 = IDLE
                return orig(self, *args, **kw)

            setattr(P, meth, wrapper)

        for meth in ("exec_", "send_query", "exec_params", "send_query_params"):
            wrap(meth, 0)
        for meth in ("send_prepare", "prepare"):
            wrap(meth, None, "prepare")
        for meth in ("send_query_prepared", "exec_prepared"):
            wrap(meth, None)
        for meth in ("send_describe_prepared", "describe_prepared", "send_describe_portal", "describe_portal"):
            wrap(meth, None, "describe")
        for meth in ("send_close_prepared", "send_close_portal"):
            wrap(meth, None, "close")

    path = os.path.join(_DIR, f"{os.getpid()}.json")

    def dump() -> None:
        with lock:
            data = {s: dict(c) for s, c in counts.items()}
        if not any(data.values()):
            return
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(data, f)
        os.replace(tmp, path)

    def loop() -> None:
        ev = threading.Event()
        while not ev.wait(0.5):
            try:
                dump()
            except Exception:
                pass

    threading.Thread(target=loop, name="sqlcount", daemon=True).start()
    atexit.register(dump)


def _wanted() -> bool:
    """Only the processes whose command line has ``SQLCOUNT_MATCH`` (default "serve": the server's, not the
    benchmark's own store)."""
    try:
        with open("/proc/self/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return False
    return os.environ.get("SQLCOUNT_MATCH", "serve").encode() in argv


if _DIR and _wanted():
    try:
        _install()
    except Exception as exc:  # never break the process being measured
        import sys

        print(f"sqlcount: not installed: {exc!r}", file=sys.stderr)
