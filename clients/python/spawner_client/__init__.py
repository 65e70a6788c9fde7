"""Spawner's client for Python: session-lived backends for web apps (docs/api.md).

`Spawner` blocks, `AsyncSpawner` is the same for asyncio; both on httpx. Every failure is
a `SpawnerError` with the API's `code`, `status` and message.
"""

from ._async import AsyncSpawner
from ._common import (
    METHODS,
    ROUTES,
    BackendRecord,
    Event,
    Expiring,
    ListChange,
    ListPage,
    PoolStatus,
    SpawnerError,
    SpawnResponse,
    StatusEvent,
    StatusItem,
)
from ._sync import Spawner

__all__ = [
    "AsyncSpawner",
    "BackendRecord",
    "Event",
    "Expiring",
    "ListChange",
    "ListPage",
    "METHODS",
    "PoolStatus",
    "ROUTES",
    "Spawner",
    "SpawnerError",
    "SpawnResponse",
    "StatusEvent",
    "StatusItem",
]
