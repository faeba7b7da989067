"""How every process reaches the catalog: in-process (tests, the CLI while the platform is down) or via its actor."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from cluster.catalog.db import connect, in_transaction, new_id
from pipelines.errors import InvalidInput

T = TypeVar("T")

CATALOG_MODULE_PREFIX = "cluster.catalog."


# (catalog instance, how many `changes_serving` calls it has run): the instance part changes when the catalog's
# owner restarts, so a count starting again from 0 is still seen as news.
Generation = tuple[str, int]


class Catalog(Protocol):
    """Runs one catalog function `fn(conn, *args, **kwargs)` as one transaction and returns its result."""

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T: ...

    def call_sync(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T: ...


class GenerationCatalog(Catalog, Protocol):
    """A catalog that also says how far its serving-relevant changes have gone (serve/cache.py relies on it)."""

    @property
    def generation(self) -> Generation:
        """The newest generation this client has seen."""
        ...

    async def call_with_generation(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> tuple[T, Generation]:
        """`call`, with the generation the catalog was at right after this call."""
        ...


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
        self._instance = new_id("cat")
        self._changes = 0

    @property
    def generation(self) -> Generation:
        return self._instance, self._changes

    def call_sync(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return self.call_sync_with_generation(fn, *args, **kwargs)[0]

    def call_sync_with_generation(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> tuple[T, Generation]:
        check_catalog_function(fn)
        with self._lock:
            try:
                result = in_transaction(self.conn, fn, *args, **kwargs)
            finally:
                # Counted even when it failed: a change that may have happened is news (a cache only forgets).
                if getattr(fn, "changes_serving", False):
                    self._changes += 1
            return result, self.generation

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.to_thread(self.call_sync, fn, *args, **kwargs)

    async def call_with_generation(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> tuple[T, Generation]:
        return await asyncio.to_thread(self.call_sync_with_generation, fn, *args, **kwargs)

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
