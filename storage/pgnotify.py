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

Notifications sent while the LISTEN connection is down are lost for good (PostgreSQL keeps them only for listening
sessions).  So each time LISTEN is (re)established, once it is active, the bridge publishes a
:data:`~storage.changes.RESYNC` event to every account that has local subscribers: they read what changed from the
database (whatever happened before the LISTEN is in the database; whatever happens after arrives as a notification).
The connection is named ``mailserver-listen <pid>`` (``application_name``), and is checked every
:data:`PING_INTERVAL` seconds so that a silently dead one is replaced too.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
import weakref

from twisted.logger import Logger

from storage.changes import Change, ChangeHub

log = Logger()

CHANNEL = "mailserver_changes"
MAX_PAYLOAD = 7900
#: Seconds between round trips on an idle LISTEN connection (a dead one is noticed and replaced).
PING_INTERVAL = 30.0
#: Seconds to wait before connecting again after the LISTEN connection failed.
RECONNECT_DELAY = 1.0
#: Client-side TCP keepalives of the LISTEN connection (libpq parameters).
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3}

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


def channel_for(schema: str) -> str:
    """The NOTIFY channel of the installation whose tables are in ``schema``. Channels are per database, not per
    schema: two installations (or parallel test servers) in schemas of one database must not hear each other."""
    if not schema or schema == "public":
        return CHANNEL
    safe = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in schema.lower())
    return f"{CHANNEL}_{safe}"[:63]  # an identifier: at most 63 bytes


_channels: "weakref.WeakKeyDictionary[object, str]" = weakref.WeakKeyDictionary()


def engine_channel(engine, conn=None) -> str:
    """The channel of everything stored through ``engine`` (its connections' current schema, looked up once, on
    ``conn`` when one is open)."""
    with _origins_lock:
        channel = _channels.get(engine)
    if channel is None:
        if conn is not None:
            schema = conn.exec_driver_sql("SELECT current_schema()").scalar()
        else:
            with engine.connect() as c:
                schema = c.exec_driver_sql("SELECT current_schema()").scalar()
        channel = channel_for(schema or "")
        with _origins_lock:
            _channels[engine] = channel
    return channel


def notify(conn, changes: list[Change], origin: str, async_commit: bool = False) -> None:
    """Send ``changes`` with ``pg_notify`` in ``conn``'s open transaction: delivered only if it commits.
    ``async_commit``: the same statement also sets ``synchronous_commit = off`` for the transaction (``SET LOCAL``;
    read at COMMIT), which saves that setting its own round trip."""
    channel = engine_channel(conn.engine, conn)
    for i, p in enumerate(encode_batches(changes, origin)):
        if async_commit and i == 0:
            conn.exec_driver_sql("SELECT pg_notify(%(ch)s, %(p)s), set_config('synchronous_commit', 'off', true)",
                                 {"ch": channel, "p": p})
        else:
            conn.exec_driver_sql("SELECT pg_notify(%(ch)s, %(p)s)", {"ch": channel, "p": p})


def notify_statements(conn, changes: list[Change], origin: str) -> list[tuple[str, dict]]:
    """:func:`notify`'s statements, for a caller that sends them itself on the transaction's own DB-API cursor (the
    delivery batch sends them in the pipeline of its last writes: storage/messages.py)."""
    channel = engine_channel(conn.engine, conn)
    return [("SELECT pg_notify(%(ch)s, %(p)s)", {"ch": channel, "p": p}) for p in encode_batches(changes, origin)]


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
        self._own_prefix = '{"o":' + json.dumps(self.origin) + ","
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.received = 0
        #: Set once LISTEN is active (again after each reconnection).
        self.ready = threading.Event()
        #: How many times LISTEN was established (1 = never lost).
        self.connects = 0
        self.application_name = f"mailserver-listen {os.getpid()}"

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
        channel = None
        while not self._stop.is_set():
            try:
                with psycopg.connect(dsn, autocommit=True, application_name=self.application_name,
                                     **KEEPALIVES) as conn:
                    if channel is None:
                        channel = channel_for(conn.execute("SELECT current_schema()").fetchone()[0] or "")
                    conn.execute(f'LISTEN "{channel}"')
                    # LISTEN is active: everything committed from now on is notified; the rest is in the database.
                    self.connects += 1
                    if self.connects > 1:
                        log.info("LISTEN connection re-established; sessions catch up from the database")
                    self.reactor.callFromThread(self._resync)
                    self.ready.set()
                    pinged = time.monotonic()
                    while not self._stop.is_set():
                        for n in conn.notifies(timeout=0.5):
                            self._received(n.payload)
                        if time.monotonic() - pinged >= PING_INTERVAL:
                            conn.execute("SELECT 1")
                            pinged = time.monotonic()
            except Exception:
                self.ready.clear()
                if self._stop.is_set():
                    return
                log.failure("LISTEN connection lost; reconnecting")
                self._stop.wait(RECONNECT_DELAY)

    def _resync(self) -> None:
        """On the reactor: tell every local subscriber that it may have missed other processes' changes."""
        self.hub.publish_resync()

    def _received(self, payload: str) -> None:
        # Every process hears every notification, its own included: its own are dropped before the JSON is parsed
        # (the payload starts with the origin, _payload), so N processes each parse only the others' events.
        if payload.startswith(self._own_prefix):
            return
        try:
            origin, changes = decode(payload)
        except (ValueError, TypeError):
            log.warn("ignoring a malformed change notification")
            return
        if origin == self.origin or not changes:
            return
        self.received += len(changes)
        self.reactor.callFromThread(self.hub.publish_remote, changes)
