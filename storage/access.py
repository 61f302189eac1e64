"""How each public ``Store`` method may be called: declared on the method itself, never in a list kept elsewhere.

* ``@reads``: a read-only transaction; runs in the ``db_read`` pool.
* ``@writes``: a write transaction whose result is a plain value; runs in the ``db_write`` pool.
* ``@writes_changes``: a write transaction returning :class:`storage.records.Changed`; runs in the ``db_write`` pool
  and its ``changes`` are published to the change hub after the commit.
* ``@blocking_only``: not a unit of work (e.g. ``Store.transaction``): only for code already on a worker thread.

``mailserver.asyncstore.AsyncStore`` reads these declarations and refuses any method without one, so a new method
cannot silently run in the wrong pool or publish nothing.  tests/test_store_access.py checks every public method
is declared.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, TypeVar

F = TypeVar("F", bound=Callable)


@dataclass(frozen=True)
class Access:
    #: "read" | "write" | "blocking"
    kind: str
    #: The result is a Changed whose changes are published after the commit.
    publishes: bool = False

    @property
    def writes(self) -> bool:
        return self.kind == "write"


READ = Access("read")
WRITE = Access("write")
WRITE_CHANGES = Access("write", publishes=True)
BLOCKING = Access("blocking")

_ATTR = "__store_access__"


def _declare(access: Access) -> Callable[[F], F]:
    def mark(method: F) -> F:
        setattr(method, _ATTR, access)
        return method

    return mark


reads = _declare(READ)
writes = _declare(WRITE)
writes_changes = _declare(WRITE_CHANGES)
blocking_only = _declare(BLOCKING)


def access_of(method) -> Access | None:
    """The declaration of a (bound or plain) method, or None when it has none."""
    return getattr(method, _ATTR, None)
