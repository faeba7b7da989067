"""Task history off the request path: classify routes hand their tasks to a `TaskBuffer` and answer at once; the
buffer stores everything that waits in one catalog call every `interval_s` (200 ms) or as soon as `max_rows`
wait, and once more when the API shuts down (FastAPI lifespan, which Serve runs when a replica stops).

Reads of the history (`GET /v1/tasks…`, feedback, stats) call `flush()` first, so a task is found right after
the answer that named it. A failed flush keeps its rows, logs the error and tries again with a growing pause;
rows are only dropped past `max_pending` (the catalog has been failing for a long time), and that is logged as
an error with the count.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from cluster.catalog import tasks as catalog_tasks
from cluster.catalog.client import Catalog
from cluster.catalog.tasks import BufferedTask, NewTask

logger = logging.getLogger("classifly.tasks")

FLUSH_INTERVAL_S = 0.2
FLUSH_ROWS = 256  # a flush starts at once when this many rows wait
MAX_ROWS_PER_CALL = 2048  # rows in one catalog call
MAX_PENDING = 200_000  # ~100 MB of waiting rows at most; beyond, the oldest are dropped (logged)
RETRY_FIRST_S = 0.2
RETRY_MAX_S = 5.0
CLOSE_DEADLINE_S = 10.0


@dataclass
class BufferStats:
    added: int = 0
    stored: int = 0  # rows the catalog took (or skipped: their model was deleted meanwhile)
    flushes: int = 0
    failures: int = 0
    dropped: int = 0
    last_error: str | None = None
    pending_by_owner: dict[str, int] = field(default_factory=dict)


class TaskBuffer:
    """Tasks waiting to be stored, flushed in order by one background asyncio task of the API's event loop."""

    def __init__(
        self,
        catalog: Catalog,
        *,
        interval_s: float = FLUSH_INTERVAL_S,
        flush_rows: int = FLUSH_ROWS,
        max_pending: int = MAX_PENDING,
        retry_first_s: float = RETRY_FIRST_S,
        retry_max_s: float = RETRY_MAX_S,
    ):
        self.catalog = catalog
        self.interval_s = interval_s
        self.flush_rows = flush_rows
        self.max_pending = max_pending
        self.retry_first_s, self.retry_max_s = retry_first_s, retry_max_s
        self.pending: deque[tuple[int, BufferedTask]] = deque()
        self.stats = BufferStats()
        self._added_seq = 0  # sequence number of the last row added
        self._stored_seq = 0  # every row up to this one is stored (or dropped)
        self._waiters: list[tuple[int, asyncio.Future]] = []
        self._wake: asyncio.Event | None = None
        self._urgent = False
        self._flusher: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    # --- the request path -------------------------------------------------------------------------------------

    def add(self, owner_id: str, tasks: dict[str, list[NewTask]]) -> None:
        """Queue an answer's tasks ({model id: tasks}); returns at once. Call from the API's event loop."""
        for model_id, model_tasks in tasks.items():
            for task in model_tasks:
                self._added_seq += 1
                self.pending.append((self._added_seq, BufferedTask(owner_id, model_id, task)))
                self.stats.added += 1
                self.stats.pending_by_owner[owner_id] = self.stats.pending_by_owner.get(owner_id, 0) + 1
        self._drop_overflow()
        self._ensure_flusher()
        if len(self.pending) >= self.flush_rows:
            self._urgent = True
        assert self._wake is not None
        self._wake.set()

    async def flush(self, timeout_s: float = CLOSE_DEADLINE_S) -> bool:
        """Wait until every task added before this call is stored; False if that took longer than `timeout_s`
        (the catalog is failing: the rows stay queued and the flusher keeps trying)."""
        target = self._added_seq
        if self._stored_seq >= target:
            return True
        self._ensure_flusher()
        future = asyncio.get_running_loop().create_future()
        self._waiters.append((target, future))
        self._urgent = True
        assert self._wake is not None
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout_s)
            return True
        except TimeoutError:
            logger.warning("tasks not stored after %.1f s (%d waiting): %s", timeout_s, len(self.pending),
                           self.stats.last_error)  # fmt: skip
            return False

    @property
    def longest_wait_s(self) -> float:
        """How long a task waits here at most while the catalog answers (one interval, one call, margin)."""
        return 2 * self.interval_s + 0.3

    def waiting_for(self, owner_id: str) -> int:
        """How many of this owner's tasks wait to be stored."""
        return self.stats.pending_by_owner.get(owner_id, 0)

    async def flush_for(self, owner_id: str) -> None:
        """Before reading an owner's history: store what waits, if any of it is theirs."""
        if self.waiting_for(owner_id):
            await self.flush()

    async def close(self, timeout_s: float = CLOSE_DEADLINE_S) -> None:
        """Store what waits (at most `timeout_s`), then stop the flusher; rows still waiting are logged."""
        if self.pending:
            await self.flush(timeout_s)
        self._closed = True
        if self._flusher is not None and self._loop is asyncio.get_running_loop():
            self._flusher.cancel()
            try:
                await self._flusher
            except asyncio.CancelledError:
                pass
        self._flusher = None
        if self.pending:
            logger.error("the API stopped with %d classification tasks not stored (%s)", len(self.pending),
                         self.stats.last_error)  # fmt: skip

    # --- the flusher ------------------------------------------------------------------------------------------

    def _ensure_flusher(self) -> None:
        loop = asyncio.get_running_loop()
        if self._flusher is not None and not self._flusher.done() and self._loop is loop:
            return
        self._loop = loop
        self._closed = False
        self._wake = asyncio.Event()
        self._flusher = loop.create_task(self._run(), name="classifly-task-buffer")

    async def _run(self) -> None:
        assert self._wake is not None
        pause = self.retry_first_s
        while not self._closed:
            if not self.pending:
                self._wake.clear()
                await self._wake.wait()
                continue
            # Let the rows of concurrent answers gather for one interval, unless many wait or a reader asks.
            deadline = asyncio.get_running_loop().time() + self.interval_s
            while not self._urgent and len(self.pending) < self.flush_rows:
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    break
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), remaining)
                except TimeoutError:
                    break
            self._urgent = False
            if await self._flush_once():
                pause = self.retry_first_s
            else:
                await asyncio.sleep(pause)
                pause = min(pause * 2, self.retry_max_s)

    async def _flush_once(self) -> bool:
        batch = [self.pending[index] for index in range(min(len(self.pending), MAX_ROWS_PER_CALL))]
        try:
            await self.catalog.call(catalog_tasks.record_buffered_tasks, [item for _, item in batch])
        except Exception as error:  # noqa: BLE001 - whatever failed, the rows stay and we try again
            self.stats.failures += 1
            self.stats.last_error = f"{type(error).__name__}: {error}"
            logger.warning("storing %d classification tasks failed (will retry): %s", len(batch),
                           self.stats.last_error)  # fmt: skip
            return False
        last = batch[-1][0]
        while self.pending and self.pending[0][0] <= last:  # rows dropped meanwhile are already gone
            self._forget(self.pending.popleft()[1])
        self.stats.stored += len(batch)
        self.stats.flushes += 1
        self._stored_seq = max(self._stored_seq, last)
        self._release()
        return True

    def _forget(self, item: BufferedTask) -> None:
        left = self.stats.pending_by_owner.get(item.owner_id, 1) - 1
        if left > 0:
            self.stats.pending_by_owner[item.owner_id] = left
        else:
            self.stats.pending_by_owner.pop(item.owner_id, None)

    def _drop_overflow(self) -> None:
        dropped = 0
        while len(self.pending) > self.max_pending:
            seq, item = self.pending.popleft()
            self._forget(item)
            self._stored_seq = max(self._stored_seq, seq)
            dropped += 1
        if dropped:
            self.stats.dropped += dropped
            logger.error("dropped %d classification tasks: more than %d waited to be stored (%s)", dropped,
                         self.max_pending, self.stats.last_error)  # fmt: skip
            self._release()

    def _release(self) -> None:
        waiting = []
        for target, future in self._waiters:
            if target <= self._stored_seq:
                if not future.done():
                    future.set_result(None)
            else:
                waiting.append((target, future))
        self._waiters = waiting


def get_task_buffer(request: Request) -> TaskBuffer:
    return request.app.state.task_buffer


TaskBufferDep = Annotated[TaskBuffer, Depends(get_task_buffer)]
