"""The federated-learning server: ``Server`` (the asyncio driver) and ``python -m clipfl.server``."""

from clipfl.server.cli import main, run_server
from clipfl.server.driver import Server

__all__ = ["Server", "main", "run_server"]
