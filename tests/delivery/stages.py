"""Real check stages for the pipeline tests (plugged into the running server's pipeline, nothing mocked)."""

from __future__ import annotations

from contextlib import contextmanager

from mailserver.delivery.stages import Verdict
from tests import harness


class Recorder:
    """Accepts everything and notes who handed the message in, for which recipient, after which steps."""

    name = "test-recorder"
    exact_mailbox = True  # also for APPEND, drafts, Sent copies, --mailbox imports

    def __init__(self):
        self.seen: list[tuple[str, str, tuple[str, ...]]] = []

    def check(self, message, target):
        self.seen.append((message.producer, target.address, tuple(target.stages)))
        return None

    def producers(self) -> list[str]:
        return [p for p, _, _ in self.seen]


class RefuseFor:
    """Refuses one recipient (5.7.1), accepts the others."""

    name = "test-refuse"
    exact_mailbox = False

    def __init__(self, address: str, text: str = "Refused by the test stage"):
        self.address = address
        self.text = text

    def check(self, message, target):
        if target.address == self.address:
            return Verdict.refuse("5.7.1", self.text)
        return None


@contextmanager
def plugged(server, *stages):
    """Register ``stages`` in the running server's pipeline for the duration of the block."""
    pipeline = server.provided.pipeline
    for s in stages:
        harness.call(pipeline.register, s)
    try:
        yield pipeline
    finally:
        for s in stages:
            harness.call(pipeline.unregister, s)
