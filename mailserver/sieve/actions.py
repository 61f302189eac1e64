"""What a script decides: the actions of one run (sans-IO data; the delivery stage carries them out).

``Result.actions`` are in script order, with duplicates merged as RFC 5228 4.2 says (two stores into one mailbox,
two redirects to one address are one).  ``implicit_keep`` is whether the message also goes to INBOX (with
``keep_flags``).  A run that failed (``error`` set: a runtime error or a limit) has no actions and keeps
implicitly: mail is never lost to a broken script.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Keep:
    flags: tuple[str, ...] = ()


@dataclass(frozen=True)
class FileInto:
    mailbox: str
    flags: tuple[str, ...] = ()
    copy: bool = False
    create: bool = False


@dataclass(frozen=True)
class Redirect:
    address: str
    copy: bool = False


@dataclass(frozen=True)
class Reject:
    reason: str
    ereject: bool = False


@dataclass(frozen=True)
class Discard:
    pass


@dataclass(frozen=True)
class Vacation:
    reason: str
    subject: str = ""  # "" = "Auto: " + the original subject
    from_: str = ""  # "" = the recipient's address
    addresses: tuple[str, ...] = ()
    mime: bool = False
    handle: str = ""
    seconds: int = 7 * 86400  # RFC 5230 :days / RFC 6131 :seconds, after the configured bounds


@dataclass
class Result:
    actions: list = field(default_factory=list)
    implicit_keep: bool = True
    keep_flags: tuple[str, ...] = ()
    error: str = ""  # why the run failed (then: no actions, implicit keep)
    #: (handle-hashed id, seconds) the duplicate test asked to remember once the message is delivered
    duplicate_marks: list[tuple[str, int]] = field(default_factory=list)
    #: The top-level header after editheader (None: unchanged): [[name, raw value], ...]
    header_fields: list | None = None
    #: The whole message the recipient stores after replace/enclose (RFC 5703 5, 6); None: not rebuilt (a redirect
    #: always sends the message as it came, with the edited header).
    message: bytes | None = None
    steps: int = 0

    @property
    def stores(self) -> list:
        """Keep/FileInto actions (explicit and implicit) as (mailbox, flags, create)."""
        out = []
        for a in self.actions:
            if isinstance(a, Keep):
                out.append(("INBOX", a.flags, False))
            elif isinstance(a, FileInto):
                out.append((a.mailbox, a.flags, a.create))
        if self.implicit_keep:
            out.append(("INBOX", self.keep_flags, False))
        merged: dict[str, tuple] = {}
        for box, flags, create in out:
            key = "INBOX" if box.upper() == "INBOX" else box
            if key in merged:
                _, f0, c0 = merged[key]
                merged[key] = (key, tuple(dict.fromkeys(f0 + flags)), c0 or create)
            else:
                merged[key] = (key, flags, create)
        return list(merged.values())


def _flags(flags) -> str:
    return f" flags={' '.join(sorted(f.lower() for f in flags))}" if flags else ""


def describe(result: Result) -> list[str]:
    """One line per action, normalised the way the differential tests compare us with Pigeonhole's sieve-test:
    ``store MAILBOX [flags=...]`` (keep is a store into INBOX), ``redirect ADDRESS``, ``reject REASON``,
    ``discard``, ``vacation seconds=N subject=S reason=R``, then ``implicit-keep [flags=...]`` when it applies."""
    if result.error:
        return ["error: runtime", "implicit-keep"]
    lines = []
    for a in result.actions:
        if isinstance(a, Keep):
            lines.append("store INBOX" + _flags(a.flags))
        elif isinstance(a, FileInto):
            lines.append(f"store {a.mailbox}" + _flags(a.flags))
        elif isinstance(a, Redirect):
            lines.append(f"redirect {a.address}")
        elif isinstance(a, Reject):
            lines.append(f"{'ereject' if a.ereject else 'reject'} {' '.join(a.reason.split())}")
        elif isinstance(a, Discard):
            lines.append("discard")
        elif isinstance(a, Vacation):
            lines.append(f"vacation seconds={a.seconds} subject={a.subject} reason={' '.join(a.reason.split())}")
    if result.implicit_keep:
        lines.append("implicit-keep" + _flags(result.keep_flags))
    return lines
