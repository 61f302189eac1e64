"""What the supervisor tells a worker process it starts (mailserver/supervisor.py -> mailserver/service.py).

The spec travels in the environment variable :data:`ENV` as JSON: the worker's index, its holder name (leases and
maildrop locks, unique per start), the worker bus's socket path, the key every worker's login success cache uses
(random per ``serve`` start, never written to disk, so that a login verified by one worker is a cache hit in the
others: :mod:`mailserver.auth`), and one inherited file descriptor per listener in the order of ``[listen]`` then
``[listen_proxied]`` (``Config.listen.items()``), each already bound and listening.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

ENV = "MAILSERVER_WORKER"


@dataclass(frozen=True)
class InheritedSocket:
    section: str  # "listen" or "listen_proxied"
    name: str  # the listener ("smtp", "imaps", …)
    fd: int
    family: int  # socket.AF_INET or AF_INET6


@dataclass(frozen=True)
class WorkerSpec:
    index: int
    holder: str
    bus_path: str
    supervisor_pid: int
    sockets: tuple[InheritedSocket, ...]
    #: The login success cache's HMAC key, shared by the workers of one supervisor (b"" = each its own).
    auth_secret: bytes = b""

    def to_env(self) -> str:
        return json.dumps({"index": self.index, "holder": self.holder, "bus": self.bus_path,
                           "supervisor": self.supervisor_pid, "auth_secret": self.auth_secret.hex(),
                           "sockets": [[s.section, s.name, s.fd, s.family] for s in self.sockets]})

    @classmethod
    def from_env(cls, environ=None) -> "WorkerSpec | None":
        text = (environ if environ is not None else os.environ).get(ENV)
        if not text:
            return None
        d = json.loads(text)
        return cls(index=int(d["index"]), holder=str(d["holder"]), bus_path=str(d["bus"]),
                   supervisor_pid=int(d["supervisor"]), auth_secret=bytes.fromhex(d.get("auth_secret", "")),
                   sockets=tuple(InheritedSocket(str(a), str(b), int(c), int(f)) for a, b, c, f in d["sockets"]))

    def socket_for(self, section: str, index: int) -> InheritedSocket:
        """The ``index``-th inherited socket of ``section`` (listeners in config order)."""
        mine = [s for s in self.sockets if s.section == section]
        return mine[index]

