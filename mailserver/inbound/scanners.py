"""The content checks of received mail, in the order the pipeline runs them: the virus scan (clamd), the spam
scorers (the DNS lists, rspamd, the built-in classifier), then the spam policy that turns the score card into each
recipient's verdict.  (Greylisting after DATA, ``inbound/greylist.py``, is registered before sender authentication: a
deferred message needs no other check.)"""

from __future__ import annotations

from mailserver.inbound.clamd import VirusCheck
from mailserver.inbound.classifier import BayesCheck
from mailserver.inbound.dnsbl import DnsListCheck
from mailserver.inbound.policy import SpamPolicy
from mailserver.inbound.rspamd import RspamdCheck


def inbound_stages(reactor, config, *, sender_rules=None, dns_lists=None, runner=None) -> list:
    """The check stages the configuration asks for (the policy always: it is silent on an empty score card).
    ``sender_rules(account_id, addresses)`` (a Deferred of the recipient's allow/block rules) feeds the policy;
    ``dns_lists`` is the server's :class:`~mailserver.inbound.dnsbl.DnsLists`; the classifier (``[antispam] bayes``)
    needs the pipeline's ``runner``."""
    stages: list = []
    if config.antivirus.clamd:
        stages.append(VirusCheck(reactor, config))
    if dns_lists is not None and dns_lists.configured:
        stages.append(DnsListCheck(dns_lists, config))
    if config.antispam.rspamd:
        stages.append(RspamdCheck(reactor, config))
    if config.antispam.bayes and runner is not None:
        stages.append(BayesCheck(runner, config, clock=reactor))
    stages.append(SpamPolicy(config, rules=sender_rules))
    return stages
