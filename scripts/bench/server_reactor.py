"""The server's reactor (``mailserver/reactor.py``) for a benchmark's in-process server, as `mailserver serve` runs;
a tree from before that module (``--before`` / ``compare.py``) keeps Twisted's own."""


def install() -> None:
    try:
        from mailserver import reactor as server_reactor
    except ImportError:
        return
    server_reactor.install()
