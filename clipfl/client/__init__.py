"""The federated-learning client: ``Client`` (the asyncio session) and ``python -m clipfl.client``."""

from clipfl.client.cli import main, transport_factory
from clipfl.client.session import Client

__all__ = ["Client", "main", "transport_factory"]
