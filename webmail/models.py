"""The webmail's own tables.  They are part of the one schema (``storage/models.py``, migration 0003_webmail), so that
the store's webmail aggregate (``storage/webmail.py``) can reach them without importing the webmail."""

from storage.models import WebmailContact, WebmailIdentity, WebmailSession

__all__ = ["WebmailContact", "WebmailIdentity", "WebmailSession"]
