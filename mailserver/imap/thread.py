"""THREAD=ORDEREDSUBJECT and THREAD=REFERENCES (RFC 5256 3 and 4) and the ``* THREAD`` response, sans-IO.

Public API:

- ``ThreadNode(uid: int | None, children: list[ThreadNode])``: ``uid`` None is a dummy (a message referred to but
  not in the set, or a node joining threads of one subject).
- ``thread_messages(algorithm, messages, *, seq_of=None) -> list[ThreadNode]``: ``algorithm`` ORDEREDSUBJECT or
  REFERENCES (case-insensitive; ValueError otherwise). ``messages`` are MessageInfo-like (``uid``, ``subject``
  (decoded), ``date_sent`` (0 when unknown), ``internal_date``, ``message_id``, ``in_reply_to``, ``references``
  (msg-ids as stored, ``<a@b> <c@d>``)); pass the matches of the search program. ``seq_of`` maps uid -> sequence
  number (callable or mapping; None: ``messages`` are in sequence order).
- ``thread_orderedsubject(messages, *, seq_of=None)``, ``thread_references(messages, *, seq_of=None)``: the two
  algorithms.
- ``thread_response(threads, number=None) -> bytes``: ``* THREAD (2 (3)(4))((5)(6))\\r\\n`` (RFC 5256 4 grammar);
  ``number(uid) -> int`` gives what to print (sequence numbers for THREAD, UIDs for UID THREAD; default the UID).
- ``is_reply_or_forward(subject) -> bool``: whether extracting the base subject removed a reply/forward marker
  (RFC 5256 2.1; used by REFERENCES step 5).

Limits: only the last ``MAX_REFERENCES`` (100) msg-ids of a References field are linked; every tree walk is
iterative, so reply chains thousands deep cost no recursion.

"Sent date" is the Date header (UTC), else the internal date (RFC 5256 2.2); messages with equal dates keep
sequence-number order.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from mailserver.mime.text import base_subject, decode_header_text

from .sort import ascii_casemap, sent_date

__all__ = [
    "MAX_REFERENCES",
    "ThreadNode",
    "thread_messages",
    "thread_orderedsubject",
    "thread_references",
    "thread_response",
    "is_reply_or_forward",
]


# Named limit: only the last MAX_REFERENCES msg-ids of a References field are linked (MUAs truncate the front the
# same way), which bounds the work one message can cause.
MAX_REFERENCES = 100


@dataclass
class ThreadNode:
    uid: int | None
    children: list[ThreadNode] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------------

_MSG_ID = re.compile(r"<[^<>\s]+>")
_WSP_RUN = re.compile(r"[ \t\r\n]+")
_FWD_TRAILER = re.compile(r"[ \t]*\(fwd\)[ \t]*$", re.I)  # RFC 5256 5: subj-trailer = "(fwd)" / WSP
_BLOB = r"\[[^\[\]]*\][ \t]*"
_REFWD = re.compile(r"^(?:" + _BLOB + r")*(?:re|fwd?)[ \t]*(?:" + _BLOB + r")?:", re.I)  # subj-refwd
_LEADING_BLOB = re.compile(r"^" + _BLOB)


def is_reply_or_forward(subject: str) -> bool:
    """RFC 5256 2.1: true when steps 2, 3 or 6 of base-subject extraction removed a (fwd) trailer, a re/fw/fwd
    leader or a [fwd: ...] wrapper."""
    text = _WSP_RUN.sub(" ", decode_header_text(subject or ""))
    found = False
    for _ in range(1000):  # each round removes text, so this ends long before the bound
        text = text.rstrip(" \t")
        m = _FWD_TRAILER.search(text)
        if m:
            text = text[: m.start()]
            found = True
            continue
        changed = True
        while changed:
            changed = False
            stripped = text.lstrip(" \t")
            m = _REFWD.match(stripped)
            if m:
                stripped = stripped[m.end() :]
                found = True
            m = _LEADING_BLOB.match(stripped)
            if m and stripped[m.end() :].strip():
                stripped = stripped[m.end() :]
            if stripped != text:
                text = stripped
                changed = True
        if text[:5].lower() == "[fwd:" and text.endswith("]"):
            text = text[5:-1]
            found = True
            continue
        break
    return found


def _seqs(messages: Sequence, seq_of) -> list[int]:
    if seq_of is None:
        return list(range(1, len(messages) + 1))
    if isinstance(seq_of, Mapping):
        return [seq_of[m.uid] for m in messages]
    return [seq_of(m.uid) for m in messages]


# ---------------------------------------------------------------------------------------------------------------
# ORDEREDSUBJECT (RFC 5256 3)
# ---------------------------------------------------------------------------------------------------------------

def thread_orderedsubject(messages: Sequence, *, seq_of=None) -> list[ThreadNode]:
    seqs = _seqs(messages, seq_of)
    subjects = [ascii_casemap(base_subject(m.subject or "")) for m in messages]
    dates = [sent_date(m) for m in messages]
    # Sort by base subject, then sent date (then sequence number).
    order = sorted(range(len(messages)), key=lambda i: (subjects[i], dates[i], seqs[i]))
    threads: list[tuple[tuple[float, int], ThreadNode]] = []
    current: ThreadNode | None = None
    current_subject = None
    for i in order:
        node = ThreadNode(messages[i].uid)
        if current is not None and subjects[i] == current_subject:
            # The second and later messages are children of the first: no grandchildren.
            current.children.append(node)
            continue
        current, current_subject = node, subjects[i]
        threads.append(((dates[i], seqs[i]), node))
    # Threads sorted by the sent date of their first message.
    threads.sort(key=lambda t: t[0])
    return [node for _key, node in threads]


# ---------------------------------------------------------------------------------------------------------------
# REFERENCES (RFC 5256 4)
# ---------------------------------------------------------------------------------------------------------------

class _Container:
    __slots__ = ("index", "parent", "children")

    def __init__(self, index: int | None = None):
        self.index = index  # position in ``messages``; None for a dummy
        self.parent: _Container | None = None
        self.children: list[_Container] = []

    def is_ancestor_of(self, other: _Container) -> bool:
        if not self.children:
            return other is self  # the common case (a new message) costs nothing, however deep the thread
        node = other
        while node is not None:
            if node is self:
                return True
            node = node.parent
        return False

    def unlink(self) -> None:
        if self.parent is not None:
            self.parent.children.remove(self)
            self.parent = None

    def link(self, child: _Container) -> None:
        child.parent = self
        self.children.append(child)


def _msg_ids(value: str | None) -> list[str]:
    return _MSG_ID.findall(value or "")


def thread_references(messages: Sequence, *, seq_of=None) -> list[ThreadNode]:
    seqs = _seqs(messages, seq_of)
    dates = [sent_date(m) for m in messages]
    order = sorted(range(len(messages)), key=seqs.__getitem__)
    table: dict[str, _Container] = {}
    containers: list[_Container] = []

    def container_for(msg_id: str) -> _Container:
        found = table.get(msg_id)
        if found is None:
            found = table[msg_id] = _Container()  # RFC 5256 4 (1)(A): a dummy for an unknown Message-ID
            containers.append(found)
        return found

    # (1) Link messages by their references.
    for i in order:
        msg = messages[i]
        own_ids = _msg_ids(msg.message_id)
        own = table.get(own_ids[0]) if own_ids else None
        if own is not None and own.index is None:
            own.index = i
        else:
            # A message without a Message-ID, or with one already taken, is unique (RFC 5256 4 (1)).
            own = _Container(i)
            containers.append(own)
            if own_ids and own_ids[0] not in table:
                table[own_ids[0]] = own
        refs = _msg_ids(msg.references)[-MAX_REFERENCES:]
        if not refs:
            refs = _msg_ids(msg.in_reply_to)[:1]  # RFC 5256 4 (1): else the first msg-id of In-Reply-To
        # (1)(A): each reference is the parent of the next, keeping existing links and never making a loop.
        prev: _Container | None = None
        for ref in refs:
            node = container_for(ref)
            if prev is not None and node.parent is None and node is not prev and not node.is_ancestor_of(prev):
                prev.link(node)
            prev = node
        # (1)(B): the last reference is this message's parent, replacing a link a truncated References made.
        own.unlink()
        if prev is not None and prev is not own and not own.is_ancestor_of(prev):
            prev.link(own)

    # (2) The root set: everything without a parent.
    root = _Container()
    for c in containers:
        if c.parent is None:
            root.link(c)

    # (3) Prune dummies.
    _prune(root)

    def date_key(c: _Container) -> tuple[float, int]:
        # A dummy sorts as its first child (its children are sorted first).
        while c.index is None:
            if not c.children:
                return (0.0, 0)
            c = c.children[0]
        return (dates[c.index], seqs[c.index])

    # (4) Sort the top level by sent date; a dummy's children first, then the dummy as its first child.
    for c in root.children:
        if c.index is None:
            c.children.sort(key=date_key)
    root.children.sort(key=date_key)

    # (5) Gather threads of the same base subject.
    subjects: dict[int, str] = {}

    def subject_of(c: _Container) -> str:
        node = c if c.index is not None else (c.children[0] if c.children else None)
        if node is None or node.index is None:
            return ""
        s = subjects.get(node.index)
        if s is None:
            s = subjects[node.index] = ascii_casemap(base_subject(messages[node.index].subject or ""))
        return s

    def is_reply(c: _Container) -> bool:
        return c.index is not None and is_reply_or_forward(messages[c.index].subject or "")

    subject_table: dict[str, _Container] = {}
    for c in root.children:  # (5)(B)
        subject = subject_of(c)
        if not subject:
            continue
        old = subject_table.get(subject)
        if old is None or (old.index is not None and (c.index is None or (is_reply(old) and not is_reply(c)))):
            subject_table[subject] = c
    for c in list(root.children):  # (5)(C)
        subject = subject_of(c)
        if not subject:
            continue
        old = subject_table.get(subject)
        if old is None or old is c:
            continue
        c.unlink()
        if old.index is None and c.index is None:
            for child in list(c.children):  # both dummies: the children become siblings
                child.unlink()
                old.link(child)
        elif old.index is None or (is_reply(c) and not is_reply(old)):
            old.link(c)
        else:
            dummy = _Container()
            position = root.children.index(old)
            old.unlink()
            dummy.link(old)
            dummy.link(c)
            dummy.parent = root
            root.children.insert(position, dummy)
            subject_table[subject] = dummy

    # (6) Sort every set of siblings by sent date, depth first (a dummy as its first child).
    for c in _post_order(root):  # children before parents: a dummy's first child is known when it is sorted
        c.children.sort(key=date_key)
    return _to_nodes(root, messages)


def _post_order(root: _Container) -> list[_Container]:
    """Every container below and including ``root``, children before their parent (no recursion: reply chains
    can be thousands deep)."""
    out: list[_Container] = []
    stack = [root]
    while stack:
        c = stack.pop()
        out.append(c)
        stack.extend(c.children)
    out.reverse()
    return out


def _prune(root: _Container) -> None:
    """RFC 5256 4 (3): drop childless dummies; splice a dummy's children into its place, except that several
    children of a dummy at the top level stay under it."""
    for parent in _post_order(root):
        if not any(c.index is None for c in parent.children):
            continue
        new_children: list[_Container] = []
        for c in parent.children:
            if c.index is not None:
                new_children.append(c)
            elif not c.children:
                c.parent = None
            elif parent is root and len(c.children) > 1:
                new_children.append(c)  # a dummy at the top level with several children stays
            else:
                for child in c.children:
                    child.parent = parent
                    new_children.append(child)
                c.children = []
                c.parent = None
        parent.children = new_children


def _to_nodes(root: _Container, messages: Sequence) -> list[ThreadNode]:
    top = ThreadNode(None)
    stack = [(root, top)]
    while stack:
        c, node = stack.pop()
        for child in c.children:
            child_node = ThreadNode(None if child.index is None else messages[child.index].uid)
            node.children.append(child_node)
            stack.append((child, child_node))
    return top.children


def thread_messages(algorithm: str, messages: Sequence, *, seq_of=None) -> list[ThreadNode]:
    algorithm = algorithm.upper()
    if algorithm == "ORDEREDSUBJECT":
        return thread_orderedsubject(messages, seq_of=seq_of)
    if algorithm == "REFERENCES":
        return thread_references(messages, seq_of=seq_of)
    raise ValueError(f"unknown threading algorithm {algorithm}")


# ---------------------------------------------------------------------------------------------------------------
# response
# ---------------------------------------------------------------------------------------------------------------

def _render(node: ThreadNode, number: Callable[[int], int], out: list[bytes]) -> None:
    """One thread-list: "(" thread-members / thread-nested ")" (RFC 5256 4), written without recursion.

    thread-members = nz-number *(SP nz-number) [SP thread-nested]; thread-nested = 2*thread-list. A chain of only
    children continues in the same list; several children each open a nested list.
    """
    stack: list[ThreadNode | bytes] = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, bytes):
            out.append(item)
            continue
        out.append(b"(")
        numbers: list[bytes] = []
        current = item
        while True:
            if current.uid is not None:
                numbers.append(b"%d" % number(current.uid))
            if len(current.children) == 1:
                current = current.children[0]
                continue
            break
        out.append(b" ".join(numbers))
        if current.children and numbers:
            out.append(b" ")
        stack.append(b")")
        stack.extend(reversed(current.children))


def thread_response(threads: Iterable[ThreadNode], number: Callable[[int], int] | None = None) -> bytes:
    number = number or (lambda uid: uid)
    out: list[bytes] = [b"* THREAD"]
    first = True
    for node in threads:
        if first:
            out.append(b" ")
            first = False
        _render(node, number, out)
    return b"".join(out) + b"\r\n"
