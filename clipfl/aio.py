"""Small asyncio helpers shared by the drivers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

__all__ = ["task_group"]


def _sole(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one exception inside (nested) single-member groups, or None when there are several."""
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        if len(exc.exceptions) != 1:
            return None
        exc = exc.exceptions[0]
    return exc


@contextlib.asynccontextmanager
async def task_group() -> AsyncIterator[asyncio.TaskGroup]:
    """``asyncio.TaskGroup`` that re-raises a lone failure as itself rather than in a group.

    In Python 3.11 an exception raised in a TaskGroup's body comes out wrapped in an
    ``ExceptionGroup``; the drivers raise ordinary exceptions to end a session (the server said
    goodbye, the connection was lost), and callers should catch them with a plain ``except``.
    Several simultaneous failures still come out as a group.
    """
    try:
        async with asyncio.TaskGroup() as tg:
            yield tg
    except BaseExceptionGroup as group:
        sole = _sole(group)
        if sole is None:
            raise
        raise sole from None
