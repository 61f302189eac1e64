"""Generated training mail for the classifier tests: spam and ham with distinct vocabularies (and words both share),
made from a seeded random generator so every run sees the same messages."""

from __future__ import annotations

import random

_CONSONANTS, _VOWELS = "bcdfghklmnprstvz", "aeiou"


def _words(rng: random.Random, n: int, taken: set[str]) -> list[str]:
    out = []
    while len(out) < n:
        w = "".join(rng.choice(_CONSONANTS) + rng.choice(_VOWELS) for _ in range(rng.randint(2, 4)))
        if w not in taken:
            taken.add(w)
            out.append(w)
    return out


class Corpus:
    """``message(kind, i)`` is message ``i`` of ``kind`` ("spam" or "ham"), RFC 5322 with CRLF line ends."""

    def __init__(self, seed: int = 13, vocabulary: int = 400, shared: int = 300):
        rng = random.Random(seed)
        taken: set[str] = set()
        self.vocab = {"spam": _words(rng, vocabulary, taken), "ham": _words(rng, vocabulary, taken)}
        self.shared = _words(rng, shared, taken)
        self.seed = seed

    def message(self, kind: str, i: int, to: str = "bob@example.test") -> bytes:
        rng = random.Random(f"{self.seed}-{kind}-{i}")
        own, shared = self.vocab[kind], self.shared
        # Mostly shared words: a class's own words are a third of the text, so a message is not trivially one.
        words = [rng.choice(own) if rng.random() < 0.33 else rng.choice(shared) for _ in range(rng.randint(40, 120))]
        subject = " ".join(rng.choice(own) if rng.random() < 0.4 else rng.choice(shared) for _ in range(5))
        sender = f"{rng.choice(shared)}@{rng.choice(shared)}.test"
        lines = [" ".join(words[j:j + 12]) for j in range(0, len(words), 12)]
        return (f"From: <{sender}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n"
                f"Message-ID: <{kind}.{i}.{self.seed}@gen.test>\r\nDate: Tue, 1 Dec 2026 10:00:00 +0000\r\n"
                "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
                + "\r\n".join(lines) + "\r\n").encode()
