"""Dynamic batching: requests that arrive together run as one batch on a worker thread, off the event loop.

The worker takes the first waiting request, then gathers more until `max_batch` are in hand or `max_wait_s` has
passed since the first (whatever queued while the previous batch ran is taken at once). `max_batch=1` is serial
serving. A session appears at most once per batch (its world advances one chunk per forward); a second request
for it waits for the next batch, in arrival order.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from .protocol import Request
from .runner import ModelRunner, Result

log = logging.getLogger(__name__)


@dataclass
class Pending:
    """A request waiting for its batch, and where its answer goes."""

    request: Request
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    queued: float = field(default_factory=time.perf_counter)


@dataclass
class Answer:
    """What the worker hands back for one request."""

    result: Result
    queue_s: float  # from submit to the start of its batch
    infer_s: float  # the batch's model time
    batch_size: int


class Batcher:
    """Feeds a `ModelRunner` from a queue on one worker thread (see the module doc)."""

    def __init__(self, runner: ModelRunner, max_batch: int = 16, max_wait_s: float = 0.005):
        if max_batch < 1 or max_wait_s < 0:
            raise ValueError(f"max_batch must be >= 1 and max_wait_s >= 0, got {max_batch} and {max_wait_s}")
        self.runner, self.max_batch, self.max_wait_s = runner, max_batch, max_wait_s
        self._queue: queue.Queue[Pending | None] = queue.Queue()
        self._carry: deque[Pending] = deque()  # deferred to the next batch (a session already in this one)
        self._thread = threading.Thread(target=self._work, name="cosmos3-batcher", daemon=True)
        self._thread.start()
        self.batches = 0  # batches run (for tests and stats)

    async def submit(self, request: Request) -> Answer:
        """Queue `request` and wait for its answer (the caller's event loop stays free meanwhile)."""
        loop = asyncio.get_running_loop()
        pending = Pending(request, loop.create_future(), loop)
        self._queue.put(pending)
        return await pending.future

    def close(self, timeout: float | None = None) -> None:
        """Answer what is queued, then stop the worker."""
        self._queue.put(None)
        self._thread.join(timeout)

    def _work(self) -> None:
        stopping = False
        while not stopping or self._carry:
            batch, stopping = self._gather(stopping)
            if batch:
                self._run(batch)

    def _gather(self, stopping: bool) -> tuple[list[Pending], bool]:
        """The next batch (up to max_batch, within max_wait_s of its first request); True once told to stop."""
        batch: list[Pending] = []
        sessions: set[str] = set()
        carried, self._carry = self._carry, deque()
        deadline = None

        def take(p: Pending) -> None:
            sid = p.request.session_id
            if len(batch) >= self.max_batch or (sid is not None and sid in sessions):
                self._carry.append(p)
                return
            if sid is not None:
                sessions.add(sid)
            batch.append(p)

        for p in carried:
            take(p)
        while len(batch) < self.max_batch and not stopping:
            timeout = None  # nothing in hand: wait for the first request
            if batch:
                deadline = deadline or batch[0].queued + self.max_wait_s
                timeout = max(0.0, deadline - time.perf_counter())
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                break
            if item is None:
                stopping = True
                break
            take(item)
        return batch, stopping

    def _run(self, batch: list[Pending]) -> None:
        start = time.perf_counter()
        try:
            results, infer_s = self.runner.run([p.request for p in batch])
        except Exception as e:  # the runner answers per request; this is a bug, but it must not stop the worker
            log.exception("a batch of %d requests failed", len(batch))
            results, infer_s = [e] * len(batch), time.perf_counter() - start
        self.batches += 1
        for p, result in zip(batch, results):
            answer = Answer(result, start - p.queued, infer_s, len(batch))
            try:
                p.loop.call_soon_threadsafe(_resolve, p.future, answer)
            except RuntimeError:  # that client's event loop is gone
                pass


def _resolve(future: asyncio.Future, answer: Any) -> None:
    if not future.done():  # the client may have gone away meanwhile
        future.set_result(answer)
