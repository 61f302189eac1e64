"""One score, one policy: symbols with weights add up on the message's score card; each recipient's thresholds
(account -> domain -> [antispam]) turn the total into accept, tag, junk, quarantine, defer or refuse; an engine's
own decision is honoured; a refusal of only some recipients becomes quarantine (no backscatter)."""

from __future__ import annotations

import pytest

from mailserver import config as cfgmod
from mailserver.delivery import envelope as ev
from mailserver.delivery.stages import MessageInfo
from mailserver.inbound import policy
from mailserver.inbound.policy import (
    ACCEPT,
    DEFER,
    JUNK,
    QUARANTINE,
    REFUSE,
    TAG,
    ScoreCard,
    Thresholds,
    decide,
    thresholds_for,
)
from tests.harness import running_server
from tests.inbound.mail import PW, copies, message, send


def _antispam(**table) -> cfgmod.AntispamConfig:
    return cfgmod.load_dict({"hostname": "x.test", "data_dir": "/tmp/x", "antispam": table}).antispam


@pytest.mark.parametrize("total, action", [
    (-3.0, ACCEPT), (0.0, ACCEPT), (4.99, ACCEPT), (5.0, TAG), (5.99, TAG), (6.0, JUNK), (14.99, JUNK),
    (15.0, REFUSE), (1e9, REFUSE),
])
def test_default_thresholds_at_and_just_under_each_limit(total, action):
    assert Thresholds().action_for(total) == action


def test_a_zero_threshold_turns_its_action_off():
    t = Thresholds(tag=0.0, junk=0.0, quarantine=9.0, refuse=0.0)
    assert [t.action_for(x) for x in (5.0, 8.9, 9.0, 100.0)] == [ACCEPT, ACCEPT, QUARANTINE, QUARANTINE]


def test_thresholds_resolve_account_then_domain_then_defaults_key_by_key():
    cfg = _antispam(tag=4.0, domain={"Example.ORG": {"junk": 8.0, "refuse": 20.0}},
                    account={"ALICE@example.org": {"refuse": 0.0}})
    assert thresholds_for(cfg, "Alice@Example.org") == Thresholds(tag=4.0, junk=8.0, quarantine=0.0, refuse=0.0)
    assert thresholds_for(cfg, "bob@example.org") == Thresholds(tag=4.0, junk=8.0, quarantine=0.0, refuse=20.0)
    assert thresholds_for(cfg, "carol@other.test") == Thresholds(tag=4.0, junk=6.0, quarantine=0.0, refuse=15.0)


def test_per_domain_thresholds_are_validated_like_every_key():
    with pytest.raises(cfgmod.ConfigError, match="antispam.domain.x.test.junk: must not be negative"):
        _antispam(domain={"x.test": {"junk": -1}})
    with pytest.raises(cfgmod.ConfigError, match="unknown key"):
        _antispam(domain={"x.test": {"junkk": 1.0}})
    with pytest.raises(cfgmod.ConfigError, match="antispam.on_error"):
        _antispam(on_error="maybe")


def test_the_total_adds_our_symbols_to_the_engines_score_once():
    card = ScoreCard()
    card.set_engine_score(4.0, [policy.Symbol("BAYES_SPAM", 3.0, "", "rspamd"), policy.Symbol("X", 1.0)])
    card.add("SPF_FAIL", 2.5, "softfail")
    assert card.total == 6.5  # rspamd's 4 (its symbols are inside it) + ours
    assert card.symbols_text() == "BAYES_SPAM(3.00) SPF_FAIL(2.50) X(1.00)"


def test_an_engines_own_decision_wins_when_more_severe():
    card = ScoreCard()
    card.add("LOW", 1.0)
    card.force(REFUSE, "Gtube pattern")
    assert decide(card, Thresholds()) == policy.Decision(REFUSE, 1.0, "Gtube pattern", forced=True)
    card = ScoreCard()
    card.add("HIGH", 7.0)
    card.force(TAG)
    assert decide(card, Thresholds()).action == JUNK  # our thresholds say more than the engine's tag
    card.force(DEFER, "greylisted")
    card.force(TAG)  # a milder decision later does not undo a severe one
    assert decide(card, Thresholds()).action == DEFER


def test_the_verdicts_of_each_action():
    card = ScoreCard()
    card.add("BAD", 7.0)
    junk = policy.verdict_for(card, policy.Decision(JUNK, 7.0), symbols_header=True)
    assert (junk.mailbox, junk.keywords) == ("Junk", ("$Junk",))
    assert dict(junk.add_headers) == {"X-Spam": "yes", "X-Spam-Score": "7.00", "X-Spam-Symbols": "BAD(7.00)"}
    quarantine = policy.verdict_for(card, policy.Decision(QUARANTINE, 7.0), symbols_header=False)
    assert (quarantine.action, quarantine.reason, quarantine.text) == ("quarantine", "spam", "Spam score 7.00 (BAD)")
    assert [(f.name, f.score) for f in quarantine.facts] == [("score", 7.0), ("BAD", 7.0)]
    assert "X-Spam-Symbols" not in dict(quarantine.add_headers)
    refuse = policy.verdict_for(card, policy.Decision(REFUSE, 17.0), symbols_header=True)
    assert (refuse.action, refuse.status, refuse.text) == ("refuse", "5.7.1", "Message refused as spam (BAD)")
    defer = policy.verdict_for(card, policy.Decision(DEFER, 0.0, "try\r\nlater"), symbols_header=True)
    assert (defer.status, defer.text) == ("4.7.1", "Message deferred by the spam filter (try??later), try again later")


def test_the_symbols_header_is_folded_and_bounded():
    card = ScoreCard()
    for i in range(policy.MAX_SYMBOLS + 10):
        card.add(f"SYMBOL_NUMBER_{i}", 1.0 + i / 1000)
    assert len(card.symbols) == policy.MAX_SYMBOLS
    value = dict(policy.headers_for(card, policy.Decision(TAG, card.total), symbols_header=True))["X-Spam-Symbols"]
    lines = value.split("\r\n\t")
    assert all(len(line) <= 76 for line in lines) and value.endswith("...")
    assert len(value.replace("\r\n\t", " ")) <= policy.MAX_SYMBOLS_HEADER + 4


def test_who_is_not_spam_scored():
    nets = policy.trusted_networks(cfgmod.load_dict({"hostname": "x.test", "data_dir": "/x",
                                                     "smtp": {"trusted_networks": ["192.0.2.0/24"]}}))

    def info(client):
        return MessageInfo("smtp", "Q", None, client, 1, "b", None, lambda *a: None)

    assert policy.spam_exempt(info(None), nets)  # reports, imports
    assert policy.spam_exempt(info(ev.ClientInfo("198.51.100.7", "h", True, submission=True, account_id=1)), nets)
    assert policy.spam_exempt(info(ev.ClientInfo("192.0.2.9", "h", True)), nets)
    assert not policy.spam_exempt(info(ev.ClientInfo("198.51.100.7", "h", True)), nets)


# ------------------------------------------------------------------------------------------------- through SMTP


class HeaderScorer:
    """A real scorer for these tests: adds the symbol ``TEST_HEADER`` with the weight of ``X-Score:``."""

    name = "test-header-scorer"
    exact_mailbox = False

    async def check(self, message, target):
        if self.name not in message.memo:
            head = await message.read(0, 4096)
            weight = float(head.split(b"X-Score: ", 1)[1].split(b"\r\n", 1)[0]) if b"X-Score: " in head else 0.0
            policy.scorecard(message).add("TEST_HEADER", weight, "from X-Score")
            message.memo[self.name] = True
        return None


def _plug_scorer(srv):
    """Our scorer before the server's policy stage (it is registered after every scorer)."""
    pipeline = srv.server.provided.pipeline
    policy_stage = next(s for s in pipeline.checks if s.name == "spam-policy")
    scorer = HeaderScorer()

    def reorder():
        pipeline.unregister(policy_stage)
        pipeline.register(scorer)
        pipeline.register(policy_stage)

    srv.call(reorder)


@pytest.fixture
def srv(tmp_path):
    with running_server(tmp_path, domains=("example.test", "strict.test"),
                        antispam={"domain": {"strict.test": {"refuse": 8.0}},
                                  "account": {"bob@example.test": {"junk": 0.0}}}) as s:
        for a in ("alice@example.test", "bob@example.test", "sue@strict.test"):
            s.add_user(a, PW)
        _plug_scorer(s)
        yield s


def test_a_threshold_refusal_of_all_recipients_is_a_550(srv):
    code, text = send(srv, message("pills", extra=b"X-Score: 9\r\n"), rcpts=("sue@strict.test",))
    assert (code, text) == (550, b"5.7.1 Message refused as spam (TEST_HEADER)")
    assert copies(srv, "sue@strict.test") == []


def test_a_refusal_of_some_recipients_becomes_quarantine_not_a_bounce(srv):
    """sue's domain refuses at 8, alice's files into Junk at 6: sue's copy is held, alice's is in Junk, and no
    failure report goes to the (likely forged) sender."""
    code, text = send(srv, message("pills", extra=b"X-Score: 9\r\n"), rcpts=("sue@strict.test", "alice@example.test"))
    assert code == 250 and b"not delivered" not in text
    ((msg, keywords),) = copies(srv, "alice@example.test", "Junk")
    assert msg["X-Spam"] == "yes" and keywords == ("$Junk",)
    assert copies(srv, "sue@strict.test") == copies(srv, "sue@strict.test", "Junk") == []
    total, (held,) = srv.store.list_quarantined()
    assert (total, held.recipient, held.reason) == (1, "sue@strict.test", "spam")


def test_a_refusal_of_some_targets_of_one_alias_becomes_quarantine_too(srv):
    srv.store.add_alias("team@strict.test", "sue@strict.test")
    srv.store.add_alias("team@strict.test", "alice@example.test")
    code, text = send(srv, message("pills", extra=b"X-Score: 9\r\n"), rcpts=("team@strict.test",))
    assert code == 250 and b"not delivered" not in text
    assert len(copies(srv, "alice@example.test", "Junk")) == 1
    assert [i.recipient for i in srv.store.list_quarantined()[1]] == ["sue@strict.test"]


def test_an_accounts_own_threshold(srv):
    """bob turned Junk off: his copy is tagged in INBOX; alice's goes to Junk."""
    code, _ = send(srv, message("pills", extra=b"X-Score: 7\r\n"), rcpts=("bob@example.test", "alice@example.test"))
    assert code == 250
    ((bob, bob_kw),) = copies(srv, "bob@example.test")
    assert bob["X-Spam"] == "yes" and bob_kw == ()
    assert len(copies(srv, "alice@example.test", "Junk")) == 1


def test_a_low_score_is_delivered_with_its_score(srv):
    assert send(srv, message("hello", extra=b"X-Score: -1.5\r\n"))[0] == 250
    ((msg, _),) = copies(srv, "bob@example.test")
    assert msg["X-Spam"] is None and msg["X-Spam-Score"] == "-1.50" and msg["X-Spam-Symbols"] == "TEST_HEADER(-1.50)"


def test_nothing_scored_adds_nothing(tmp_path):
    """Without any scorer the policy stage stays out of the way (no headers, not among the stages)."""
    with running_server(tmp_path) as s:
        s.add_user("bob@example.test", PW)
        assert send(s, message("plain"))[0] == 250
        ((msg, _),) = copies(s, "bob@example.test")
        assert msg["X-Spam-Score"] is None and msg["X-Spam-Status"] is None
