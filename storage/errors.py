"""The store's expected failures: each has a short machine-readable ``code`` that protocols map to their replies."""

from __future__ import annotations


class StoreError(Exception):
    """Base of the store's expected failures; ``code`` is a short machine-readable reason."""

    code = "error"


class NotFound(StoreError):
    code = "nonexistent"


class AlreadyExists(StoreError):
    code = "alreadyexists"


class QuotaExceeded(StoreError):
    code = "overquota"


class HasChildren(StoreError):
    code = "haschildren"


class Invalid(StoreError):
    code = "invalid"
