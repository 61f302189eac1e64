"""Change events between server processes sharing one PostgreSQL database (LISTEN/NOTIFY).

Sending: every write transaction of the store sends its change events with ``pg_notify('mailserver_changes',
'<json>')`` *inside that transaction* (``Store.transaction`` calls :func:`notify` just before the commit).
PostgreSQL delivers a notification only when its transaction commits, and never when it rolls back, so the event is
committed atomically with the data (no crash can leave one without the other) and a receiver that reacts by reading
the database sees the new rows.  Each payload names the sending engine's ``origin`` (:func:`origin_for`).

Receiving: a dedicated connection in its own thread LISTENs, drops its own process's notifications (same origin),
and hands the others to the reactor, which publishes them to the local hub: an IMAP session in IDLE on node A sees a
delivery made on node B.

Payloads are limited to 8000 bytes by PostgreSQL; larger batches are split.
"""

from __future__ import annotations

import json
import threading
import uuid
import weakref

from twisted.logger import Logger

from storage.changes import Change, ChangeHub

log = Logger()

CHANNEL = "mailserver_changes"
MAX_PAYLOAD = 7900
_FIELDS = tuple(f for f in Change.__dataclass_fields__ if f != "origin")

_origins: "weakref.WeakKeyDictionary[object, str]" = weakref.WeakKeyDictionary()
_origins_lock = threading.Lock()


def origin_for(engine) -> str:
    """The origin id of everything sent through ``engine``: the store sends with it, the bridge skips it."""
    with _origins_lock:
        origin = _origins.get(engine)
        if origin is None:
            origin = _origins[engine] = uuid.uuid4().hex
        return origin


def notify(conn, changes: list[Change], origin: str) -> None:
    """Send ``changes`` with ``pg_notify`` in ``conn``'s open transaction: delivered only if it commits."""
    for p in encode_batches(changes, origin):
        conn.exec_driver_sql("SELECT pg_notify(%(ch)s, %(p)s)", {"ch": CHANNEL, "p": p})


def _psycopg_dsn(url: str) -> str:
    """SQLAlchemy URL -> libpq connection string (keeps options such as search_path)."""
    from sqlalchemy.engine import make_url

    u = make_url(url)
    parts = []
    if u.host:
        parts.append(f"host={u.host}")
    if u.port:
        parts.append(f"port={u.port}")
    if u.username:
        parts.append(f"user={u.username}")
    if u.password:
        parts.append(f"password={u.password}")
    if u.database:
        parts.append(f"dbname={u.database}")
    for k, v in u.query.items():
        v = v if isinstance(v, str) else v[0]
        parts.append(f"{k}='" + v.replace("\\", "\\\\").replace("'", "\\'") + "'")
    return " ".join(parts)


def encode_batches(changes: list[Change], origin: str) -> list[str]:
    """JSON payloads of at most MAX_PAYLOAD bytes, each ``{"o": origin, "c": [change, ...]}``."""
    out: list[str] = []
    current: list[str] = []
    size = 0
    for c in changes:
        item = {f: getattr(c, f) for f in _FIELDS}
        item["keywords"] = list(c.keywords)
        text = json.dumps(item, separators=(",", ":"))
        if len(text) > MAX_PAYLOAD - 200:
            # A too-long payload would make pg_notify fail, and with it the writing transaction: the data is
            # worth more than the event, so the event goes without its keywords (the rows have them).
            log.warn("change event too long for NOTIFY; sent without its keywords")
            item["keywords"] = []
            text = json.dumps(item, separators=(",", ":"))
        if current and size + len(text) > MAX_PAYLOAD - 100:
            out.append(_payload(origin, current))
            current, size = [], 0
        current.append(text)
        size += len(text) + 1
    if current:
        out.append(_payload(origin, current))
    return out


def _payload(origin: str, items: list[str]) -> str:
    return '{"o":' + json.dumps(origin) + ',"c":[' + ",".join(items) + "]}"


def decode(payload: str) -> tuple[str, list[Change]]:
    d = json.loads(payload)
    changes = []
    for item in d.get("c", ()):
        item["keywords"] = tuple(item.get("keywords") or ())
        changes.append(Change(**item))
    return d.get("o", ""), changes


class PgNotifyBridge:
    """Publishes other processes' changes locally (this process's own are sent by its store's transactions).

    ``send_pool`` is no longer used (sending happens in the writing transaction); it is accepted for callers."""

    def __init__(self, reactor, engine, hub: ChangeHub, send_pool=None):
        self.reactor = reactor
        self.engine = engine
        self.hub = hub
        self.origin = origin_for(engine)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.received = 0
        self.ready = threading.Event()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._listen, name="pg-listen", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # ------------------------------------------------------------------ receiving (thread -> reactor)

    def _listen(self) -> None:
        import psycopg

        dsn = _psycopg_dsn(str(self.engine.url.render_as_string(hide_password=False)))
        while not self._stop.is_set():
            try:
                with psycopg.connect(dsn, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.ready.set()
                    while not self._stop.is_set():
                        for n in conn.notifies(timeout=0.5):
                            self._received(n.payload)
            except Exception:
                if self._stop.is_set():
                    return
                log.failure("LISTEN connection lost; reconnecting")
                self._stop.wait(1.0)

    def _received(self, payload: str) -> None:
        try:
            origin, changes = decode(payload)
        except (ValueError, TypeError):
            log.warn("ignoring a malformed change notification")
            return
        if origin == self.origin or not changes:
            return
        self.received += len(changes)
        self.reactor.callFromThread(self.hub.publish, changes, local=False)
