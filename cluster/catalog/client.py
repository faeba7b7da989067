"""How every process reaches the catalog: in-process (tests, the CLI while the platform is down) or via its actor."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from cluster.catalog.db import connect, in_transaction
from pipelines.errors import InvalidInput

T = TypeVar("T")

CATALOG_MODULE_PREFIX = "cluster.catalog."


class Catalog(Protocol):
    """Runs one catalog function `fn(conn, *args, **kwargs)` as one transaction and returns its result."""

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T: ...

    def call_sync(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T: ...


def check_catalog_function(fn: Callable[..., Any]) -> None:
    """Only functions of the catalog package may run against the database."""
    if not getattr(fn, "__module__", "").startswith(CATALOG_MODULE_PREFIX):
        raise InvalidInput(f"{getattr(fn, '__qualname__', fn)!r} is not a catalog function")


class LocalCatalog:
    """The catalog database opened in this process; calls are serialised, each one a transaction."""

    def __init__(self, path: str = ":memory:"):
        self.path = path
        self.conn = connect(path)
        self._lock = threading.Lock()

    def call_sync(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        check_catalog_function(fn)
        with self._lock:
            return in_transaction(self.conn, fn, *args, **kwargs)

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.to_thread(self.call_sync, fn, *args, **kwargs)

    def checkpoint(self) -> None:
        with self._lock:
            self.conn.execute("CHECKPOINT")

    def snapshot(self, target: str) -> None:
        """Copy the catalog file as it is now (checkpointed, no call running meanwhile): a consistent backup."""
        from pathlib import Path

        from cluster.ops import checkpoint_and_copy

        with self._lock:
            checkpoint_and_copy(self.conn, self.path, Path(target))

    def close(self) -> None:
        with self._lock:
            self.conn.close()
