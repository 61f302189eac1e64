"""SMTP framing (sans-IO, no Twisted): command lines, the DATA body and BDAT chunks.

All three readers work on the session's one input ``bytearray``: they consume what they can and leave the rest, so a
client's pipelined bytes are never lost between modes and never read in the wrong mode.

Smuggling defence (RFC 5321 2.3.8, 4.1.1.4): lines end with CRLF only.  The DATA body ends at the first
``<CRLF>.<CRLF>`` and nowhere else; a bare CR or LF anywhere in the body marks the message as rejected (it is read to
its real end and answered with :data:`codes.BARE_NEWLINE_DATA`), so ``<LF>.<LF>``, ``<LF>.<CRLF>``, ``<CR>.<CR>`` and
friends can never end a message early or start a command.
"""

from __future__ import annotations

from mailserver.smtp import codes
from mailserver.smtp.codes import Reply

CRLF = b"\r\n"
END_OF_DATA = b"\r\n.\r\n"


class LineTooLong:
    """Marker returned by :meth:`CommandFramer.next_line` for a discarded over-long line."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "LINE_TOO_LONG"


LINE_TOO_LONG = LineTooLong()


class CommandFramer:
    """Splits command lines at CRLF.

    ``max_line`` counts the CRLF, as RFC 5321 4.5.3.1.4 does (minimum 512).  A longer line is discarded up to its
    CRLF and reported once as :data:`LINE_TOO_LONG`, in order with the lines around it (so pipelined replies stay in
    order).
    """

    def __init__(self, max_line: int):
        self.max_line = max_line
        self._skipping = False

    def next_line(self, buf: bytearray) -> bytes | LineTooLong | None:
        """Remove and return the next line without its CRLF; None when no complete line is buffered."""
        idx = buf.find(CRLF)
        if self._skipping:
            if idx < 0:
                keep = 1 if buf.endswith(b"\r") else 0
                del buf[: len(buf) - keep]
                return None
            del buf[: idx + 2]
            self._skipping = False
            return LINE_TOO_LONG
        if idx < 0:
            if len(buf) >= self.max_line:
                # Already at least max_line + 1 octets once its CRLF arrives: drop what we have, remember to skip.
                keep = 1 if buf.endswith(b"\r") else 0
                del buf[: len(buf) - keep]
                self._skipping = True
            return None
        if idx + 2 > self.max_line:
            del buf[: idx + 2]
            return LINE_TOO_LONG
        line = bytes(buf[:idx])
        del buf[: idx + 2]
        return line


def has_bare_newline(line: bytes) -> bool:
    return b"\r" in line or b"\n" in line


#: DataReader reports one problem per refused body: a bare line end (a smuggling attempt), else an over-long line,
#: else the size.
_SEVERITY = {codes.BARE_NEWLINE_DATA: 3, codes.TEXT_LINE_TOO_LONG: 2, codes.MESSAGE_TOO_BIG: 1}


class DataReader:
    """The DATA body: finds the end marker, removes dot-stuffing (RFC 5321 4.5.2), checks limits.

    ``feed(buf)`` consumes whole lines from ``buf`` and returns ``(chunks, done)``: the unstuffed body bytes to hand
    on and whether ``<CRLF>.<CRLF>`` was reached (the bytes after it stay in ``buf``).  An incomplete last line stays
    in ``buf`` until its CRLF arrives, so dot-unstuffing and the end marker are right at any read boundary; at most
    ``max_line`` bytes are held back.  After the first problem ``error`` holds the reply to give at the end (the
    gravest found, see _SEVERITY, so the reply does not depend on the reads) and no more chunks are returned, but
    the body is still read to its real end.
    """

    def __init__(self, max_size: int, max_line: int):
        self.max_size = max_size
        self.max_line = max_line  # octets including CRLF (RFC 5321 4.5.3.1.6)
        self.size = 0  # unstuffed octets so far (RFC 1870 message size)
        self.error: Reply | None = None
        self._skip_line = False  # inside an over-long line, waiting for its CRLF

    def _fail(self, reply: Reply) -> None:
        # The gravest problem wins, not the first seen: where the reads end decides which is seen first.
        if self.error is None or _SEVERITY[reply] > _SEVERITY[self.error]:
            self.error = reply

    def feed(self, buf: bytearray) -> tuple[list[bytes], bool]:
        chunks: list[bytes] = []
        if self._skip_line:
            idx = buf.find(CRLF)
            if idx < 0:
                keep = 1 if buf.endswith(b"\r") else 0
                if b"\n" in buf or b"\r" in buf[: len(buf) - keep]:
                    self._fail(codes.BARE_NEWLINE_DATA)  # no CRLF here: every CR or LF is bare
                del buf[: len(buf) - keep]
                return chunks, False
            if b"\r" in buf[:idx] or b"\n" in buf[:idx]:
                self._fail(codes.BARE_NEWLINE_DATA)
            del buf[: idx + 2]
            self._skip_line = False
        # buf now starts at the beginning of a line.
        if buf[:3] == b".\r\n":
            end = 0
        else:
            idx = buf.find(END_OF_DATA)
            end = idx + 2 if idx >= 0 else -1
        if end >= 0:
            region = bytes(buf[:end])
            del buf[: end + 3]
            done = True
        else:
            last = buf.rfind(CRLF)
            region = b""
            if last >= 0:
                region = bytes(buf[: last + 2])
                del buf[: last + 2]
            done = False
            if len(buf) >= self.max_line:
                # The incomplete line can no longer fit (RFC 5321 4.5.3.1.6): stop holding it.
                self._fail(codes.TEXT_LINE_TOO_LONG)
                if b"\n" in buf or b"\r" in buf[:-1]:
                    self._fail(codes.BARE_NEWLINE_DATA)
                keep = 1 if buf.endswith(b"\r") else 0
                del buf[: len(buf) - keep]
                self._skip_line = True
        if region:
            chunk = self._process(region)
            if chunk and self.error is None:
                chunks.append(chunk)
        return chunks, done

    def _process(self, region: bytes) -> bytes:
        """Check and unstuff complete lines (``region`` starts at a line start and ends with CRLF)."""
        n = region.count(CRLF)
        if region.count(b"\r") != n or region.count(b"\n") != n:
            self._fail(codes.BARE_NEWLINE_DATA)  # RFC 5321 2.3.8
        if len(region) > self.max_line and max(map(len, region.split(CRLF))) + 2 > self.max_line:
            self._fail(codes.TEXT_LINE_TOO_LONG)
        # RFC 5321 4.5.2: a line starting with "." had one more "." added by the client; remove it.
        if region[:1] == b".":
            region = region[1:]
        region = region.replace(b"\r\n.", CRLF)
        self.size += len(region)
        if self.size > self.max_size:
            self._fail(codes.MESSAGE_TOO_BIG)  # RFC 1870 6.3
        return region


class BdatReader:
    """BDAT chunks of one message (RFC 3030): exact octet counts, no dot-stuffing, no end marker.

    ``start_chunk(size)`` then ``feed(buf)`` until it reports the chunk complete.  The whole message is checked for
    bare CR/LF across chunk and read boundaries (the same rule as DATA: the body is kept canonical CRLF, so nothing
    we relay later can be read as a line end by another server) and for the size limit.
    """

    def __init__(self, max_size: int):
        self.max_size = max_size
        self.size = 0
        self.remaining = 0
        self.error: Reply | None = None
        self._prev_cr = False

    def _fail(self, reply: Reply) -> None:
        if self.error is None:
            self.error = reply

    def start_chunk(self, size: int) -> None:
        self.remaining = size
        if self.size + size > self.max_size:
            self._fail(codes.MESSAGE_TOO_BIG)  # RFC 3030 2: exceeding SIZE fails the transaction

    def feed(self, buf: bytearray) -> tuple[bytes, bool]:
        """Consume up to the rest of the current chunk; returns (data, chunk_complete)."""
        n = min(self.remaining, len(buf))
        data = bytes(buf[:n])
        del buf[:n]
        self.remaining -= n
        self.size += n
        if data:
            self._check(data)
        return (data if self.error is None else b""), self.remaining == 0

    def _check(self, data: bytes) -> None:
        start = 0
        if self._prev_cr:
            if data[:1] != b"\n":
                self._fail(codes.BARE_NEWLINE_DATA)
            else:
                start = 1
        elif data[:1] == b"\n":
            self._fail(codes.BARE_NEWLINE_DATA)
        self._prev_cr = data.endswith(b"\r") and start < len(data)
        end = len(data) - 1 if self._prev_cr else len(data)
        body = data[start:end]
        n = body.count(CRLF)
        if body.count(b"\r") != n or body.count(b"\n") != n:
            self._fail(codes.BARE_NEWLINE_DATA)

    def finish_message(self) -> None:
        """Called after the LAST chunk: a trailing lone CR is a bare CR."""
        if self._prev_cr:
            self._fail(codes.BARE_NEWLINE_DATA)
