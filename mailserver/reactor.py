"""The server's reactor: Twisted's epoll reactor, dispatching each ready descriptor without the legacy log context.

Twisted's ``EPollReactor.doPoll`` runs every read or write event through ``log.callWithLogger``: it asks the
transport for its ``logPrefix()``, copies the legacy logging context (a dict), pushes it on the context stack and
pops it again, only so that a legacy ``log.msg`` made inside could be tagged with that "system" prefix.  Our log
(``mailserver/log.py``) names the emitter by ``log_namespace`` and never reads that context, and the work costs
about 1.4 us per event: 5 % of the user-space instructions of a POP3 RETR (``docs/benchmarks.md``).

:class:`ServerReactor` dispatches the event directly.  What Twisted's wrapper guarantees still holds: an exception
from a transport's ``doRead``/``doWrite`` is logged and disconnects that transport (``_doReadOrWrite`` does that
itself); anything that escapes even that is logged here and the loop goes on with the next descriptor.
"""

from __future__ import annotations

import errno
import sys

from twisted.internet.epollreactor import EPollReactor
from twisted.logger import Logger

log = Logger()


class ServerReactor(EPollReactor):
    """``EPollReactor`` whose poll loop calls ``_doReadOrWrite`` without ``log.callWithLogger``."""

    def doPoll(self, timeout):
        if timeout is None:
            timeout = -1  # wait until something happens
        try:
            events = self._poller.poll(timeout, len(self._selectables))
        except OSError as err:
            if err.errno == errno.EINTR:
                return
            raise
        selectables = self._selectables
        dispatch = self._doReadOrWrite
        for fd, event in events:
            selectable = selectables.get(fd)
            if selectable is None:
                continue  # removed by an earlier event of this round
            try:
                dispatch(selectable, fd, event)
            except KeyboardInterrupt:
                raise
            except BaseException:
                log.failure("reactor: handling an event of {selectable!r} failed", selectable=selectable)

    doIteration = doPoll


def install() -> bool:
    """Make :class:`ServerReactor` the global reactor; False (nothing changed) when one is installed already
    (something imported ``twisted.internet.reactor`` first)."""
    if "twisted.internet.reactor" in sys.modules:
        return False
    from twisted.internet.main import installReactor

    installReactor(ServerReactor())
    return True
