"""The content checks of received mail, in the order the pipeline runs them: the virus scan (clamd), the spam
scorers (rspamd), then the spam policy that turns the score card into each recipient's verdict."""

from __future__ import annotations

from mailserver.inbound.clamd import VirusCheck
from mailserver.inbound.policy import SpamPolicy
from mailserver.inbound.rspamd import RspamdCheck


def inbound_stages(reactor, config, *, sender_rules=None) -> list:
    """The check stages the configuration asks for (the policy always: it is silent on an empty score card).
    ``sender_rules(account_id, addresses)`` (a Deferred of the recipient's allow/block rules) feeds the policy."""
    stages: list = []
    if config.antivirus.clamd:
        stages.append(VirusCheck(reactor, config))
    if config.antispam.rspamd:
        stages.append(RspamdCheck(reactor, config))
    stages.append(SpamPolicy(config, rules=sender_rules))
    return stages
