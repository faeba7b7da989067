"""Short-lived answers to the two catalog questions every classification asks — which user this token opens, and
which version answers for this model — so a classify request needs no catalog call of its own (two round trips
to the catalog's single actor were most of an answer's time and its throughput limit).

Never stale for what this replica has seen: the catalog counts the calls of its `@changes_serving` functions
(revoking a token, a new password, publishing or activating a version, changing or deleting a model …) as its
*generation* and returns it with every answer (cluster/catalog/client.py). Whenever this API sees a newer
generation — through any catalog call: its own routes, the task buffer's flush every 0.2 s under traffic, the
client reading the job that published a version — everything cached is forgotten before the next lookup, and a
value is kept only when it was read at the newest generation seen. So a change made through this replica is in
force for the next request, and a change made elsewhere (a model update, another replica) within moments under
traffic. Every entry also expires after `ttl_s` (5 s): the longest a replica that has seen nothing since could
answer from before a change. Token expiry is checked on every hit; errors (unknown token, missing model) are
never cached.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, TypeVar

from cluster.catalog import tasks as catalog_tasks
from cluster.catalog import users as catalog_users
from cluster.catalog.client import Catalog, Generation
from cluster.catalog.db import utcnow
from cluster.catalog.runs import VersionRecord
from cluster.catalog.users import TokenRecord, UserRecord

T = TypeVar("T")

TTL_S = 5.0
MAX_ENTRIES = 10_000  # a (user, token) or (model, version) entry is well under 1 KB


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    forgotten: int = 0  # times everything was dropped because the catalog changed


class ServingCache:
    """Token and version lookups of the API, answered from memory while the catalog has not changed."""

    def __init__(
        self,
        catalog: Catalog,
        *,
        ttl_s: float = TTL_S,
        max_entries: int = MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.catalog = catalog
        # A catalog that cannot say its generation (a test's stand-in) is asked every time.
        self.enabled = ttl_s > 0 and hasattr(catalog, "call_with_generation")
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.clock = clock
        self.generation: Generation = ("", -1)
        self.entries: OrderedDict[Hashable, tuple[float, Any]] = OrderedDict()
        self.stats = CacheStats()

    async def user_of_token(self, token_hash: str) -> tuple[UserRecord, TokenRecord]:
        """The user and token for a presented token hash (Unauthorized from the catalog when it is not valid)."""
        cached = self._lookup(("token", token_hash))
        if cached is not None:
            _, token = cached
            if token.expires_at is None or token.expires_at > utcnow():
                return cached
        return await self._load(("token", token_hash), catalog_users.authenticate_token, token_hash)

    async def version_to_serve(self, owner_id: str, model_id: str, version: int | None = None) -> VersionRecord:
        """`cluster.catalog.tasks.version_to_serve`, from memory while nothing changed."""
        key = ("version", owner_id, model_id, version)
        cached = self._lookup(key)
        if cached is not None:
            return cached
        return await self._load(key, catalog_tasks.version_to_serve, owner_id, model_id, version)

    def forget(self) -> None:
        self.entries.clear()
        self.stats.forgotten += 1

    def _lookup(self, key: Hashable) -> Any | None:
        if not self.enabled:
            return None
        self._observe(self.catalog.generation)  # type: ignore[attr-defined]
        entry = self.entries.get(key)
        if entry is None or self.clock() - entry[0] >= self.ttl_s:
            return None
        self.entries.move_to_end(key)
        self.stats.hits += 1
        return entry[1]

    async def _load(self, key: Hashable, fn: Callable[..., T], *args: Any) -> T:
        self.stats.misses += 1
        if not self.enabled:
            return await self.catalog.call(fn, *args)
        read_at = self.clock()
        value, generation = await self.catalog.call_with_generation(fn, *args)  # type: ignore[attr-defined]
        self._observe(generation)
        if generation == self.generation:  # read at the newest state seen: safe to keep
            self.entries[key] = (read_at, value)
            self.entries.move_to_end(key)
            while len(self.entries) > self.max_entries:
                self.entries.popitem(last=False)
        return value

    def _observe(self, generation: Generation) -> None:
        if generation == self.generation:
            return
        newer = generation[0] != self.generation[0] or generation[1] > self.generation[1]
        if newer:
            self.generation = generation
            if self.entries:
                self.forget()
