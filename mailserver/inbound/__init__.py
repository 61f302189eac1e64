"""Inbound protection: checks of received mail (sender authentication, spam and virus scanning, policy)."""
