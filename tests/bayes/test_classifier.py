"""The built-in classifier on its own: accuracy on generated mail, training once, flipping, the pruning bound, and
hostile input (a 10 MB single token, a flood of distinct tokens) kept within bounded work and memory."""

from __future__ import annotations

import tracemalloc

import pytest

from mailserver.inbound import bayes
from mailserver.inbound.classifier import token_ids, weight_of
from tests import harness
from tests.bayes.corpus import Corpus


@pytest.fixture
def store(tmp_path, database_url):
    with harness.migrated_store(tmp_path, database_url) as s:
        yield s


def _account(store, address="bob@example.test"):
    return store.add_account(address, "x")


def classify(store, account_id: int, raw: bytes) -> float:
    ids = token_ids(raw)
    c = store.bayes_counts([account_id], ids)[account_id]
    return bayes.probability(ids, bayes.Counts(c.spam, c.ham, c.tokens))


def test_trained_on_200_and_200_it_classifies_95_percent_of_held_out_mail_right(store):
    acct = _account(store)
    corpus = Corpus()
    for i in range(200):
        for kind in ("spam", "ham"):
            raw = corpus.message(kind, i)
            assert store.bayes_learn(acct.id, f"{kind}{i}", kind, token_ids(raw)) == "trained"
    assert store.bayes_stats(acct.id)[:2] == (200, 200)
    right = {"spam": 0, "ham": 0}
    for i in range(200, 300):  # held out: never trained
        for kind in ("spam", "ham"):
            p = classify(store, acct.id, corpus.message(kind, i))
            right[kind] += (p > 0.5) == (kind == "spam")
    print(f"accuracy on 100 held-out messages each: spam {right['spam']}%, ham {right['ham']}%")
    assert right["spam"] >= 95 and right["ham"] >= 95, right


def test_an_untrained_account_says_nothing(store):
    acct = _account(store)
    assert classify(store, acct.id, Corpus().message("spam", 1)) == 0.5


def test_a_message_is_trained_once_and_retraining_flips_its_counts(store):
    acct = _account(store)
    raw = Corpus().message("spam", 7)
    ids = token_ids(raw)
    assert store.bayes_learn(acct.id, "k", "spam", ids) == "trained"
    assert store.bayes_learn(acct.id, "k", "spam", ids) == "already"
    assert store.bayes_stats(acct.id)[:2] == (1, 0)
    c = store.bayes_counts([acct.id], ids)[acct.id]
    assert set(c.tokens.values()) == {(1, 0)}
    assert store.bayes_learn(acct.id, "k", "ham", ids) == "retrained"
    assert store.bayes_stats(acct.id)[:2] == (0, 1)
    c = store.bayes_counts([acct.id], ids)[acct.id]
    assert set(c.tokens.values()) == {(0, 1)}
    assert store.bayes_trained_as(acct.id, "k") == "ham"


def test_accounts_learn_apart(store):
    bob, carol = _account(store), _account(store, "carol@example.test")
    raw = Corpus().message("spam", 3)
    store.bayes_learn(bob.id, "k", "spam", token_ids(raw))
    counts = store.bayes_counts([bob.id, carol.id], token_ids(raw))
    assert counts[bob.id].spam == 1 and counts[bob.id].tokens
    assert counts[carol.id].spam == 0 and not counts[carol.id].tokens


def test_tokens_per_account_stay_under_the_bound_and_the_useful_ones_stay(store):
    acct = _account(store)
    corpus = Corpus()
    common = "repeatedword " * 3
    for i in range(60):
        raw = corpus.message("spam" if i % 2 else "ham", i).replace(b"\r\n\r\n", f"\r\n\r\n{common}\r\n".encode(), 1)
        store.bayes_learn(acct.id, f"m{i}", "spam" if i % 2 else "ham", token_ids(raw), max_tokens=1000)
        assert store.bayes_stats(acct.id)[2] <= 1000
    kept = store.bayes_counts([acct.id], [bayes.token_id("repeatedword")])[acct.id].tokens
    assert kept == {bayes.token_id("repeatedword"): (30, 30)}  # seen in every message: never pruned


def test_a_10_mb_single_token_body_is_read_only_up_to_the_input_limit():
    raw = b"Subject: x\r\n\r\n" + b"A" * (10 * 1024 * 1024)
    tracemalloc.start()
    try:
        tokens = bayes.tokenize(raw)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "long:20" in tokens and len(tokens) <= 5
    assert peak < 16 * bayes.MAX_INPUT  # a few copies of the limit (4 MiB), not of the 10 MB


def test_a_flood_of_distinct_tokens_gives_at_most_the_token_limit():
    words = b" ".join(b"w%07d" % i for i in range(400_000))  # 3.2 MB of distinct words
    raw = b"Subject: flood\r\nContent-Type: text/html\r\n\r\n<p>" + words + b"</p>"
    tracemalloc.start()
    try:
        tokens = bayes.tokenize(raw)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(tokens) == bayes.MAX_TOKENS
    assert peak < 16 * bayes.MAX_INPUT


@pytest.mark.parametrize("raw", [
    b"", b"\r\n\r\n", b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n" * 1000,
    b"Content-Type: text/plain; charset=no-such-charset\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!*@@\r\n",
    b"Subject: =?utf-8?b?broken\r\n\r\n\xff\xfe\x00body",
])
def test_malformed_messages_tokenize_without_error(raw):
    assert isinstance(bayes.tokenize(raw), list)


def test_the_symbol_weight_scales_with_the_distance_from_one_half():
    assert weight_of(1.0, 7.0, 3.0) == ("BAYES_SPAM", 7.0)
    assert weight_of(0.0, 7.0, 3.0) == ("BAYES_HAM", -3.0)
    assert weight_of(0.55, 7.0, 3.0) == ("BAYES_UNSURE", 0.0)
    name, w = weight_of(0.75, 7.0, 3.0)
    assert name == "BAYES_SPAM" and w == pytest.approx(3.5)


def test_releasing_a_copy_held_as_spam_records_ham_training(store):
    import time

    from storage.quarantine import HoldSpec

    acct = _account(store)
    raw = Corpus().message("ham", 5)
    now = time.time()
    (item_id,) = store.hold_quarantined([HoldSpec(acct.id, store.blobs.put(raw), {"subject": "x"}, acct.address,
                                                  "s@x.test", {}, {}, "spam", "Spam score 9", [], "Q1", now,
                                                  now + 60)])
    kicked = []
    store.on_training = lambda: kicked.append(1)
    store.release_quarantined(item_id)
    (job,) = store.bayes_pending()
    assert (job.account_id, job.klass) == (acct.id, "ham") and kicked == [1]


def test_a_per_recipient_symbol_counts_for_that_recipient_only():
    from mailserver.inbound.policy import JUNK, ScoreCard, Thresholds, decide, headers_for

    card = ScoreCard()
    card.add("R_SPF_FAIL", 1.0)
    card.add_for("Bob@example.test", "BAYES_SPAM", 6.5, "0.9900", "bayes")
    card.add_for("carol@example.test", "BAYES_HAM", -2.0, "0.1000", "bayes")
    bob = decide(card, Thresholds(), "bob@example.test")
    carol = decide(card, Thresholds(), "carol@example.test")
    assert (bob.action, bob.total) == (JUNK, 7.5)
    assert (carol.action, carol.total) == ("accept", -1.0)
    assert decide(card, Thresholds(), "dave@example.test").total == 1.0
    fields = dict(headers_for(card, bob, symbols_header=True, address="bob@example.test"))
    assert fields["X-Spam-Symbols"] == "BAYES_SPAM(6.50) R_SPF_FAIL(1.00)"
    empty = ScoreCard()
    empty.add_for("bob@example.test", "BAYES_UNSURE", 0.0, "0.5")
    assert not empty.empty and empty.scored_for("bob@example.test") and not empty.scored_for("x@example.test")


def test_the_check_caches_totals_for_a_while_and_forgets_them_when_told(store):
    """Mail to an account that has not trained enough, with no sender to look up, costs no read within
    QUIET_TTL (on the injected clock); a read (a sender to look up) reuses the totals while their version holds
    and shows training at once."""
    from twisted.internet import defer, task

    from mailserver import config as cfgmod
    from mailserver.address import parse_mailbox
    from mailserver.delivery.envelope import ClientInfo, Envelope, Recipient
    from mailserver.delivery.router import LOCAL, Route, RouteResult
    from mailserver.delivery.runner import InlineRunner
    from mailserver.delivery.stages import MessageInfo, Target
    from mailserver.inbound import policy
    from mailserver.inbound.accountstate import QUIET_TTL
    from mailserver.inbound.classifier import BayesCheck

    acct = _account(store)
    cfg = cfgmod.load_dict({"hostname": "x.test", "data_dir": "/tmp/x",
                            "antispam": {"bayes_min_spam": 1, "bayes_min_ham": 1}})
    clock = task.Clock()
    check = BayesCheck(InlineRunner(store), cfg, clock=clock)
    route = Route(LOCAL, acct.address, acct.id)
    raw = Corpus().message("spam", 9)

    def verdict_symbols(needs_auth=True):
        env = Envelope(parse_mailbox("x@remote.test"), (Recipient(parse_mailbox(acct.address),
                                                                  route=RouteResult((route,))),))
        info = MessageInfo("smtp", "Q", env, ClientInfo("192.0.2.1", "h", True), len(raw), "b", None,
                           lambda start=0, end=None: defer.succeed(raw[start:end]))
        if not needs_auth:  # the envelope sender counts as verified: a correspondent lookup, so a read
            info.memo[check.name] = ["x@remote.test"]
        d = defer.ensureDeferred(check.check(info, Target(route)))
        assert d.called
        return [s.name for s in policy.scorecard(info).symbols_for(acct.address)]

    assert verdict_symbols() == [] and check.states.reads == 1  # untrained, and now known to be
    store.bayes_learn(acct.id, "s", "spam", token_ids(raw))
    store.bayes_learn(acct.id, "h", "ham", token_ids(Corpus().message("ham", 9)))
    assert verdict_symbols() == [] and check.states.reads == 1  # within the TTL the totals are not read again
    assert verdict_symbols(needs_auth=False) == ["BAYES_SPAM"]  # a read: the training's version moved on
    assert check.states.held(acct.id).totals == (1, 1)
    clock.advance(QUIET_TTL + 1)
    assert verdict_symbols() == ["BAYES_SPAM"]
    store.bayes_learn(acct.id, "s2", "ham", token_ids(raw))  # (the trainer calls forget after training)
    check.forget(acct.id)
    verdict_symbols()
    assert check.states.held(acct.id).totals == (1, 2)  # read again at once
