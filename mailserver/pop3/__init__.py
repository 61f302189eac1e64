"""POP3 server (RFC 1939 with RFC 2449 CAPA, RFC 2595 STLS, RFC 5034 SASL AUTH).

``wire`` (framing, parsing, dot-stuffing; sans-IO), ``session`` (the state machine; sans-IO) and
``protocol`` (the thin Twisted glue and ``build_factory(services, listener_name)``).
"""
