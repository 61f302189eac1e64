"""The content checks of received mail, in the order the pipeline runs them: the virus scan (clamd), the spam
scorers (the DNS lists, rspamd, the built-in classifier), then the spam policy that turns the score card into each
recipient's verdict.  (Greylisting after DATA, ``inbound/greylist.py``, is registered before sender authentication: a
deferred message needs no other check.)"""

from __future__ import annotations

from mailserver.inbound.accountstate import AccountStates
from mailserver.inbound.clamd import VirusCheck
from mailserver.inbound.classifier import BayesCheck
from mailserver.inbound.dnsbl import DnsListCheck
from mailserver.inbound.policy import SpamPolicy


def inbound_stages(reactor, config, *, sender_rules=None, dns_lists=None, runner=None) -> list:
    """The check stages the configuration asks for (the policy always: it is silent on an empty score card).
    ``sender_rules(account_id, addresses)`` (a Deferred of the recipient's allow/block rules) feeds the policy
    when there is no ``runner`` (with one, the rules come with the message's one read of its accounts' data);
    ``dns_lists`` is the server's :class:`~mailserver.inbound.dnsbl.DnsLists`; the classifier (``[antispam] bayes``)
    needs the pipeline's ``runner``."""
    stages: list = []
    if config.antivirus.clamd:
        stages.append(VirusCheck(reactor, config))
    if dns_lists is not None and dns_lists.configured:
        stages.append(DnsListCheck(dns_lists, config))
    if config.antispam.rspamd:
        from mailserver.inbound.rspamd import (
            RspamdCheck,  # twisted.web's HTTP client, only where rspamd is used
        )

        stages.append(RspamdCheck(reactor, config))
    # One read per message of the recipients' account data (the classifier's and the policy's), over this
    # process's copies (inbound/accountstate.py); without a runner the policy asks ``sender_rules``.
    states = None
    if runner is not None:
        states = AccountStates(runner, min_spam=config.antispam.bayes_min_spam,
                               min_ham=config.antispam.bayes_min_ham, clock=reactor)
    if config.antispam.bayes and runner is not None:
        stages.append(BayesCheck(runner, config, clock=reactor, states=states))
    stages.append(SpamPolicy(config, rules=sender_rules, states=states))
    return stages
