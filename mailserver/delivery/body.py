"""The stored forms of one message: written once while it arrives, parsed once, copied only when a copy must differ.

A *form* is one blob: its own ``prefix`` (fields only some recipients get: ``Return-Path``/``Delivered-To`` for
local copies, a check's added fields) followed by the rest, which every form shares.  Received mail is streamed into
one form per kind of recipient (local, queued); a message handed over whole is one form.  When a recipient needs a
prefix no form has, :meth:`Body.form` copies an existing one with the new prefix.

When check stages will read the message (``finish(..., keep=True)``), a form small enough to have stayed in memory
(storage.blobs.SPOOL_IN_MEMORY) is *not stored* yet: its bytes are held (``BlobStore.hold``: reads by its id are
answered from memory) while the checks and the filter run, then :meth:`Body.store` writes the forms the recipients
use, once each, with whatever fields the checks added (for a delivered local copy in the group committer's flush:
``Ingest._made``).  A form no recipient uses (the streamed form when every copy
got a check's fields, or a message refused at the end of DATA) is never written.  :meth:`Body.release` ends the
hold once the message is concluded.

The methods marked *blocking* run in the blob pool; ``write`` only appends to spool files (memory, then disk).
"""

from __future__ import annotations

from dataclasses import dataclass

from storage.blobs import SPOOL_IN_MEMORY, BlobRef


@dataclass(slots=True)
class Form:
    prefix: bytes
    writer: object = None  # BlobWriter while streaming
    ref: object = None  # BlobRef once durable
    parsed: dict | None = None  # the parse-once columns (local copies only)
    #: The stored bytes while the message is in progress, when small enough to have stayed in memory
    #: (storage.blobs.SPOOL_IN_MEMORY): parse and copies use them instead of reading the blob back.
    content: bytes | None = None
    #: False while the form exists only in memory (``ref`` names its content, no blob holds it yet).
    stored: bool = True


def parse(raw: bytes) -> dict:
    """The parse-once columns of a stored message (storage.store.PARSED_COLUMNS)."""
    from mailserver.mime import parse_message

    return parse_message(raw).to_json()


class Body:
    __slots__ = ("blobs", "forms", "_raw")

    def __init__(self, blobs, forms: list[Form], raw: bytes | None = None):
        self.blobs = blobs
        self.forms = forms
        self._raw = raw  # a message handed over whole (stored by finish)

    @classmethod
    def streaming(cls, blobs, prefixes: list[bytes], common: bytes) -> "Body":
        """One writer per prefix, each starting with its prefix and then ``common`` (the Received field)."""
        forms = []
        for prefix in dict.fromkeys(prefixes):
            w = blobs.writer()
            w.write(prefix + common)
            forms.append(Form(prefix, w))
        return cls(blobs, forms)

    @classmethod
    def adopt(cls, blobs, writer) -> "Body":
        """A body the producer already streamed into a blob writer (IMAP APPEND literals)."""
        return cls(blobs, [Form(b"", writer)])

    @classmethod
    def whole(cls, blobs, raw: bytes) -> "Body":
        return cls(blobs, [Form(b"")], raw)

    def write(self, data: bytes) -> None:
        for f in self.forms:
            f.writer.write(data)

    def abort(self) -> None:
        for f in self.forms:
            if f.writer is not None and f.ref is None:
                f.writer.abort()
        self.release()

    def drop_contents(self) -> None:
        """Forget the in-memory bytes of the stored forms once every form is made (the blobs hold them); a form not
        stored keeps its bytes until :meth:`release`."""
        for f in self.forms:
            if f.stored:
                f.content = None

    def release(self) -> None:
        """End the hold on the forms never stored (the message is concluded: nothing reads them any more)."""
        for f in self.forms:
            if not f.stored and f.content is not None:
                f.content = None
                self.blobs.unhold(f.ref.id)

    def find(self, prefix: bytes) -> Form | None:
        for f in self.forms:
            if f.prefix == prefix:
                return f
        return None

    # ------------------------------------------------------------------ blocking (blob pool)

    def finish(self, parse_prefix: bytes | None, keep: bool = False) -> None:
        """Make every form durable and parse the one with ``parse_prefix`` (None: no local copy, no parse).

        With ``keep`` (check stages will read the message) a form still in memory is held instead of stored:
        :meth:`store` writes the ones used once the checks have run.  One trip to a worker thread: a message
        handed over whole is stored and parsed from memory.
        """
        if self._raw is not None:
            form = self.forms[0]
            if keep and len(self._raw) <= SPOOL_IN_MEMORY:
                import hashlib

                form.ref = BlobRef(hashlib.sha256(self._raw).hexdigest(), len(self._raw))
                form.content, form.stored = self._raw, False
                self.blobs.hold(form.ref.id, form.content)
            else:
                form.ref = self.blobs.put(self._raw)
            if parse_prefix is not None:
                form.parsed = parse(self._raw)
            self._raw = None
            return
        for f in self.forms:
            if f.ref is None:
                taken = f.writer.take() if keep else None
                if taken is not None:
                    f.ref, f.content = taken
                    f.stored = False
                    self.blobs.hold(f.ref.id, f.content)
                else:
                    f.ref, f.content = f.writer.finish_keeping()
                f.writer = None
        if parse_prefix is not None:
            form = self.find(parse_prefix)
            if form is not None:
                form.parsed = parse(self._content(form))

    def form(self, prefix: bytes, parsed: bool) -> Form:
        """The form with ``prefix``, made from an existing one when missing; parsed when ``parsed`` (a copy that
        only adds trace or authentication fields to a parsed form takes its parse, moved: no second parse)."""
        form = self.find(prefix)
        if form is None:
            source = self.forms[0]
            form = Form(prefix, None, self._copy(source, prefix))
            self.forms.append(form)
            if parsed and source.parsed is not None and prefix.startswith(source.prefix):
                from mailserver.mime.parse import with_inserted_fields

                form.parsed = with_inserted_fields(source.parsed, prefix[len(source.prefix):])
        if parsed and form.parsed is None:
            form.parsed = parse(self._content(form))
        return form

    def store(self, forms) -> None:
        """Write the given forms that are not stored yet (each once; durable at the next flush, which the commit
        naming them waits for)."""
        for f in forms:
            if not f.stored:
                f.ref = self.blobs.put_ref(f.ref, f.content)
                f.stored = True
                self.blobs.unhold(f.ref.id)  # the blob answers reads now; the bytes stay until drop_contents

    def _content(self, form: Form) -> bytes:
        return form.content if form.content is not None else self.blobs.read(form.ref.id)

    def _copy(self, source: Form, prefix: bytes):
        """New blob = ``prefix`` + ``source`` without its own prefix."""
        if source.content is not None:  # still in memory: one write, no read back
            return self.blobs.put(prefix + memoryview(source.content)[len(source.prefix):])
        w = self.blobs.writer()
        try:
            w.write(prefix)
            with self.blobs.open(source.ref.id) as f:
                f.seek(len(source.prefix))
                while chunk := f.read(1 << 20):
                    w.write(chunk)
            return w.finish()
        except BaseException:
            w.abort()
            raise
