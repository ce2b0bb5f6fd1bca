"""Operations: the read-only HTTP API, the live dashboard, Prometheus metrics, the event bus.

The server hands a ``ServerView`` and an ``EventBus`` to ``start_api`` (or ``serve_api``) and publishes
``round``, ``stage`` and ``status`` events on the bus; nothing here can change the federation.
"""

from clipfl.ops.api import make_app, parse_http_address, serve_api, start_api
from clipfl.ops.events import BusStatistics, EventBus, Subscription
from clipfl.ops.prometheus import Metrics
from clipfl.ops.view import COUNTER_NAMES, ServerView

__all__ = [
    "COUNTER_NAMES",
    "BusStatistics",
    "EventBus",
    "Metrics",
    "ServerView",
    "Subscription",
    "make_app",
    "parse_http_address",
    "serve_api",
    "start_api",
]
