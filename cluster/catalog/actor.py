"""The catalog's single owner on a Ray cluster: a named, detached actor holding the DuckDB file.

DuckDB lets one process hold a database file read-write and locks out every other, so all readers and
writers (API replicas, training jobs, the CLI) go through this actor. Its methods run one at a time,
which also makes each call a clean transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import ray
from ray.exceptions import RayActorError, RayTaskError

from cluster.catalog.client import Generation, LocalCatalog
from cluster.catalog.jobs import mark_interrupted
from cluster.catalog.runs import mark_interrupted_runs
from cluster.resources import on_the_head
from pipelines.errors import ClassiflyError, Unavailable

T = TypeVar("T")
CATALOG_ACTOR = "classifly-catalog"


class CatalogActor:
    """Owns the catalog file; `run` executes one catalog function as one transaction."""

    def __init__(self, path: str):
        self.catalog = LocalCatalog(path)
        self.interrupted = self.catalog.call_sync(mark_interrupted) + self.catalog.call_sync(mark_interrupted_runs)

    def run(self, fn: Callable[..., T], args: tuple, kwargs: dict[str, Any]) -> tuple[T, Generation]:
        """The call's result, with the catalog's generation right after it (cluster.catalog.client.Generation)."""
        return self.catalog.call_sync_with_generation(fn, *args, **kwargs)

    def generation(self) -> Generation:
        return self.catalog.generation

    def interrupted_at_start(self) -> list[str]:
        return self.interrupted

    def checkpoint(self) -> None:
        self.catalog.checkpoint()

    def snapshot(self, target: str) -> None:
        """Copy the catalog file into `target` (a backup), between two calls."""
        self.catalog.snapshot(target)

    def ping(self) -> str:
        return self.catalog.path


class RayCatalog:
    """A client of the catalog actor, usable from any process of the cluster (sync or async)."""

    def __init__(self, handle: ray.actor.ActorHandle):
        self.handle = handle
        self._generation: Generation = ("", -1)  # the newest seen in an answer; none yet

    @property
    def generation(self) -> Generation:
        return self._generation

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return (await self.call_with_generation(fn, *args, **kwargs))[0]

    async def call_with_generation(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> tuple[T, Generation]:
        try:
            return self._seen(await self.handle.run.remote(fn, args, kwargs))
        except RayTaskError as error:
            raise _unwrap(error) from None
        except RayActorError:
            raise Unavailable("The catalog is restarting. Try again in a few seconds.") from None

    def call_sync(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        try:
            return self._seen(ray.get(self.handle.run.remote(fn, args, kwargs)))[0]
        except RayTaskError as error:
            raise _unwrap(error) from None
        except RayActorError:
            raise Unavailable("The catalog is restarting. Try again in a few seconds.") from None

    def _seen(self, answer: tuple[T, Generation]) -> tuple[T, Generation]:
        _, generation = answer
        if generation[0] != self._generation[0] or generation[1] > self._generation[1]:
            self._generation = generation  # answers can arrive out of order: keep the newest of an instance
        return answer


def _unwrap(error: RayTaskError) -> BaseException:
    cause = error.cause
    return cause if isinstance(cause, ClassiflyError) else error


def start_catalog_actor(path: str, namespace: str) -> ray.actor.ActorHandle:
    """Get the running catalog actor, or start it (detached, restarted by Ray if its process dies)."""
    remote = ray.remote(CatalogActor).options(
        name=CATALOG_ACTOR,
        namespace=namespace,
        lifetime="detached",
        get_if_exists=True,
        num_cpus=0,
        max_restarts=-1,
        max_task_retries=0,
        **on_the_head(),  # the DuckDB file is on the head's disk
    )
    handle = remote.remote(path)
    ray.get(handle.ping.remote())
    return handle


def get_catalog_actor(namespace: str) -> ray.actor.ActorHandle:
    """The running catalog actor; Unavailable when the platform is not up."""
    try:
        return ray.get_actor(CATALOG_ACTOR, namespace=namespace)
    except ValueError:
        raise Unavailable("The catalog is not running. Start the platform with 'classifly up'.") from None
