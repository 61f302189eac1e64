"""The webmail and client auto-configuration, served by ``twisted.web`` in the server's reactor."""
