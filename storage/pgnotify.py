"""Change events between server processes sharing one PostgreSQL database (LISTEN/NOTIFY).

Every batch of changes published in this process is sent with ``NOTIFY mailserver_changes, '<json>'`` (after the
commit that made them, so a receiver that reacts by reading the database sees the new rows).  A dedicated connection
in its own thread LISTENs, drops its own process's notifications (``origin``), and hands the others to the reactor,
which publishes them to the local hub: an IMAP session in IDLE on node A sees a delivery made on node B.

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
    current: list[dict] = []
    size = 0
    for c in changes:
        item = json.loads(c.to_json())
        item.pop("origin", None)
        n = len(json.dumps(item, separators=(",", ":")))
        if current and size + n > MAX_PAYLOAD - 100:
            out.append(json.dumps({"o": origin, "c": current}, separators=(",", ":")))
            current, size = [], 0
        current.append(item)
        size += n + 1
    if current:
        out.append(json.dumps({"o": origin, "c": current}, separators=(",", ":")))
    return out


def decode(payload: str) -> tuple[str, list[Change]]:
    d = json.loads(payload)
    changes = []
    for item in d.get("c", ()):
        item["keywords"] = tuple(item.get("keywords") or ())
        changes.append(Change(**item))
    return d.get("o", ""), changes


class PgNotifyBridge:
    """Sends local changes to other processes and publishes theirs locally."""

    def __init__(self, reactor, engine, hub: ChangeHub, send_pool):
        self.reactor = reactor
        self.engine = engine
        self.hub = hub
        self.send_pool = send_pool
        self.origin = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._unsubscribe = None
        self.received = 0
        #: Set once LISTEN is active (again after each reconnection).
        self.ready = threading.Event()
        #: How many times LISTEN was established (1 = never lost).
        self.connects = 0
        self.application_name = f"mailserver-listen {os.getpid()}"

    def start(self) -> None:
        self._unsubscribe = self.hub.subscribe_all(self._local_changes)
        self._thread = threading.Thread(target=self._listen, name="pg-listen", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # ------------------------------------------------------------------ sending (reactor -> pool)

    def _local_changes(self, changes: list[Change]) -> None:
        payloads = encode_batches(changes, self.origin)
        self.send_pool.callInThread(self._send, payloads)

    def _send(self, payloads: list[str]) -> None:
        try:
            with self.engine.begin() as conn:
                for p in payloads:
                    conn.exec_driver_sql("SELECT pg_notify(%(ch)s, %(p)s)", {"ch": CHANNEL, "p": p})
        except Exception:
            log.failure("NOTIFY of change events failed")

    # ------------------------------------------------------------------ receiving (thread -> reactor)

    def _listen(self) -> None:
        import psycopg

        dsn = _psycopg_dsn(str(self.engine.url.render_as_string(hide_password=False)))
        while not self._stop.is_set():
            try:
                with psycopg.connect(dsn, autocommit=True, application_name=self.application_name,
                                     **KEEPALIVES) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
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
        try:
            origin, changes = decode(payload)
        except (ValueError, TypeError):
            log.warn("ignoring a malformed change notification")
            return
        if origin == self.origin or not changes:
            return
        self.received += len(changes)
        self.reactor.callFromThread(self.hub.publish, changes, local=False)
