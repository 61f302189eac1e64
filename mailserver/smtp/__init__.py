"""SMTP server: sans-IO wire framing and session (no Twisted), plus a thin Twisted protocol (``protocol.py``)."""
