"""Change events on the worker bus: a worker's committed changes leave in one frame per
:data:`mailserver.bus.COALESCE` seconds (not one per group commit), in order, before any later kick; a worker that
has no listener drops changes frames unread; frames of the earlier (named) format are still read."""

from __future__ import annotations

import json

from twisted.internet import task

from mailserver import bus
from mailserver.bus import BusClient, decode_changes, encode_changes
from storage.changes import EXISTS, FLAGS, Change, ChangeHub
from tests.test_auth_shared import Wire


def _pair():
    clock = task.Clock()
    a = BusClient(clock, "/nonexistent", ChangeHub(), "worker0")
    b = BusClient(clock, "/nonexistent", ChangeHub(), "worker1")
    a.hub.forward = a.send_changes
    b.hub.forward = b.send_changes
    return clock, a, b, Wire(a, b)


def test_changes_of_several_commits_travel_in_one_frame_after_the_coalescing_delay():
    clock, a, b, wire = _pair()
    seen = []
    b.hub.subscribe(1, seen.extend)
    wire.server.frames = 0
    a.hub.publish([Change(EXISTS, 1, 2, uid=1, modseq=1)])
    a.hub.publish([Change(EXISTS, 1, 2, uid=2, modseq=2), Change(FLAGS, 1, 2, uid=1, modseq=3, flags=1)])
    wire.pump()
    assert seen == [] and wire.server.frames == 0  # still collecting
    clock.advance(bus.COALESCE)
    wire.pump()
    assert [(c.kind, c.uid, c.modseq) for c in seen] == [(EXISTS, 1, 1), (EXISTS, 2, 2), (FLAGS, 1, 3)]
    assert wire.server.frames == 1
    assert b.received == 3
    clock.advance(10)
    wire.pump()
    assert wire.server.frames == 1  # nothing more to send


def test_a_kick_flushes_the_collected_changes_first_and_stop_sends_them():
    clock, a, b, wire = _pair()
    order = []
    b.hub.subscribe(1, lambda changes: order.append(("changes", len(changes))))
    b.on_kick = lambda: order.append(("kick",))
    a.hub.publish([Change(EXISTS, 1, 2, uid=1, modseq=1)])
    a.kick()
    wire.pump()
    assert order == [("changes", 1), ("kick",)]
    a.hub.publish([Change(EXISTS, 1, 2, uid=2, modseq=2)])
    a.stop()
    wire.pump()
    assert order[-1] == ("changes", 1)
    assert not clock.getDelayedCalls()


def test_a_worker_without_listeners_drops_changes_frames_and_still_takes_kicks():
    clock, a, b, wire = _pair()
    kicks = []
    b.on_kick = lambda: kicks.append(1)
    a.hub.publish([Change(EXISTS, 1, 2, uid=1, modseq=1)])
    clock.advance(bus.COALESCE)
    a.kick()
    wire.pump()
    assert b.received == 0 and kicks == [1]
    seen = []
    unsubscribe = b.hub.subscribe_mailbox(2, seen.extend)  # a mailbox listener counts too
    a.hub.publish([Change(EXISTS, 1, 2, uid=2, modseq=2)])
    clock.advance(bus.COALESCE)
    wire.pump()
    assert [c.uid for c in seen] == [2]
    unsubscribe()
    assert not b.hub.listening


def test_frames_in_the_named_format_of_earlier_versions_are_read():
    frame = {"t": "changes", "o": "w0", "c": [{"kind": FLAGS, "account_id": 1, "mailbox_id": 2, "uid": 7,
                                                 "modseq": 9, "flags": 3, "keywords": ["$Junk"], "name": "",
                                                 "old_name": "", "size": 0, "reader": 0}]}
    assert decode_changes(frame) == [Change(FLAGS, 1, 2, uid=7, modseq=9, flags=3, keywords=("$Junk",))]


def test_every_field_of_a_change_survives_the_frame():
    c = Change("rename", 5, 6, uid=1, modseq=2, flags=4, keywords=("a", "b"), name="New", old_name="Old", size=9,
               reader=3, origin="elsewhere")
    (frame,) = encode_changes("w0", [c])
    assert frame.startswith(bus.CHANGES_PREFIX)
    (back,) = decode_changes(json.loads(frame))
    assert back == c and back.keywords == ("a", "b") and back.origin == ""
