"""Routing, local delivery, submission and outbound delivery."""


def submit(server, account_id, mail_from, recipients, raw, *, client_ip="", via="webmail"):
    """Submit a complete message through the SMTP submission path (see :mod:`mailserver.delivery.submit`)."""
    from mailserver.delivery.submit import submit as _submit

    return _submit(server, account_id, mail_from, recipients, raw, client_ip=client_ip, via=via)
