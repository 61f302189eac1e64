"""A placement that no check stage applies to (APPEND, drafts, Sent copies, imports) takes the pipeline's short way
(one Deferred chain); one that a check stage sees takes the general steps.  Both give the same outcome for the same
case: delivered (by name, by id, a missing name falling back to INBOX), a mailbox of another account, over quota.
"""

from __future__ import annotations

from mailserver.delivery import envelope as ev
from mailserver.delivery.stages import MAILBOX, QUOTA, ROUTING
from tests import harness
from tests.delivery.stages import Recorder, plugged
from tests.harness import running_server

PW = "correct horse battery"
MSG = b"From: Dave <dave@remote.test>\r\nSubject: placed\r\n\r\nhello\r\n"


def _place(srv, placement: ev.Placement, *, check_quota: bool = True) -> ev.Outcome:
    request = ev.Request(ev.APPEND, placement=placement, check_quota=check_quota)
    result = harness.call(srv.services.pipeline.ingest, request, MSG)
    assert len(result.outcomes) == 1 and result.size == len(MSG) and result.queue_id
    return result.outcomes[0]


def _cases(srv) -> dict[str, ev.Outcome]:
    alice = srv.store.get_account("alice@example.test")
    bob = srv.store.get_account("bob@example.test")
    drafts = srv.store.get_mailbox(alice.id, "Drafts") or srv.store.create_mailbox(alice.id, "Drafts").value
    bob_inbox = srv.store.get_mailbox(bob.id, "INBOX")
    srv.store.set_quota("carol@example.test", 10)
    carol = srv.store.get_account("carol@example.test")
    return {
        "by name": _place(srv, ev.Placement(alice.id, "Drafts", flags=1, keywords=("$Draft",))),
        "by id": _place(srv, ev.Placement(alice.id, mailbox_id=drafts.id)),
        "missing name": _place(srv, ev.Placement(alice.id, "No such folder")),
        "another account's id": _place(srv, ev.Placement(alice.id, mailbox_id=bob_inbox.id)),
        "over quota": _place(srv, ev.Placement(carol.id)),
        "over quota, exempt": _place(srv, ev.Placement(carol.id), check_quota=False),
    }


def _comparable(o: ev.Outcome, recorder: str = "") -> tuple:
    return (o.address, o.kind, o.status, o.text, o.reason, o.mailbox_id, o.uid_validity,
            tuple(s for s in o.stages if s != recorder))


def test_short_and_general_ways_give_the_same_outcomes(tmp_path):
    """Each case twice: without any check stage (the short way) and with one that sees exact mailboxes."""
    with running_server(tmp_path, listeners=()) as srv:
        for who in ("alice", "bob", "carol"):
            srv.add_user(f"{who}@example.test", PW)
        short = _cases(srv)
        rec = Recorder()
        with plugged(srv.server, rec):
            general = _cases(srv)
        assert len(rec.seen) == len(general)  # the general steps ran, with the check stage
        for case, o in short.items():
            assert _comparable(o) == _comparable(general[case], rec.name), case
            assert o.stages[0] == ROUTING
        alice = srv.store.get_account("alice@example.test")
        drafts = srv.store.get_mailbox(alice.id, "Drafts")
        inbox = srv.store.get_mailbox(alice.id, "INBOX")
        assert short["by name"].kind == ev.DELIVERED and short["by name"].mailbox_id == drafts.id
        assert short["by name"].stages == (ROUTING, QUOTA, MAILBOX)
        assert general["by name"].stages == (ROUTING, rec.name, QUOTA, MAILBOX)
        assert short["missing name"].mailbox_id == inbox.id
        assert (short["another account's id"].kind, short["another account's id"].status) == (ev.REFUSED, "5.1.1")
        assert (short["over quota"].kind, short["over quota"].status) == (ev.DEFERRED, "4.2.2")
        assert short["over quota, exempt"].kind == ev.DELIVERED
        uids = [m.uid for m in srv.store.list_messages(drafts.id)]
        assert len(uids) == 4  # two by name, two by id
        metas = srv.store.get_messages(drafts.id, uids)
        assert [m.keywords for m in metas][0] == ("$Draft",)
        assert srv.store.read_blob(metas[0].blob_id) == MSG  # a placement is stored as handed in


def test_the_short_way_defers_with_the_stages_taken_when_a_step_fails(tmp_path, monkeypatch):
    """Storing the body fails: deferred 4.3.0 after routing only; the commit fails: after quota and mailbox too.
    The bodies stored meanwhile stay for the collector (nothing names them)."""
    from twisted.internet import defer

    with running_server(tmp_path, listeners=()) as srv:
        srv.add_user("alice@example.test", PW)
        alice = srv.store.get_account("alice@example.test")
        pipeline = srv.services.pipeline

        def broken_put(data):
            raise OSError("disk gone")

        with monkeypatch.context() as m:
            m.setattr(pipeline.blobs, "put", broken_put)
            o = _place(srv, ev.Placement(alice.id))
        assert (o.kind, o.status, o.reason, o.stages) == (ev.DEFERRED, "4.3.0", ev.ERROR, (ROUTING,))
        with monkeypatch.context() as m:
            m.setattr(pipeline.runner, "deliver", lambda d, make=None: defer.fail(RuntimeError("db gone")))
            o = _place(srv, ev.Placement(alice.id))
        assert (o.kind, o.status, o.reason, o.stages) == (ev.DEFERRED, "4.3.0", ev.ERROR, (ROUTING, QUOTA, MAILBOX))
        assert _place(srv, ev.Placement(alice.id)).kind == ev.DELIVERED
