"""Routing, the ingest pipeline (every producer of local mail), submission and outbound delivery.

Nothing here imports a protocol package: producers build delivery types (``envelope.py``) and map the outcomes back
to their own answers.
"""
