"""ManageSieve (RFC 5804): ``wire.py`` (sans-IO parser and replies), ``session.py`` (sans-IO state machine, the
command table), ``scripts.py`` (the script commands on the store), ``protocol.py`` (the Twisted glue)."""
