"""A batch of validated requests -> one `WorldModel.predict` and one `WorldModel.step` over all their worlds.

Each request first gets its world on its own (a fresh one from its image and seed, or its session's), so any
problem the model itself finds (a prompt too many tokens long, say) fails that request alone. Then all policy
requests share one batched forward and all world requests another. Should a batched forward still fail, its
requests are retried one by one (the engine rewinds the worlds' noise on failure), so only the culprit fails.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import numpy as np
import torch

from ..engine.world import World, WorldModel
from .protocol import Request, RequestError, check_actions
from .sessions import SessionStore

log = logging.getLogger(__name__)

Result = dict[str, Any] | BaseException


class ModelRunner:
    """Runs batches of requests on one WorldModel; only the batcher's worker thread calls it."""

    def __init__(self, model: WorldModel, sessions: SessionStore, chunk_size: int, tier: Any = None):
        self.model, self.sessions, self.chunk_size = model, sessions, chunk_size
        self._tier = {} if tier is None else {"tier": tier}

    def run(self, requests: list[Request]) -> tuple[list[Result], float]:
        """A reply payload or an exception per request, and the seconds the model took."""
        start = time.perf_counter()
        results: list[Result | None] = [None] * len(requests)
        policy: list[tuple[int, World]] = []
        world: list[tuple[int, World, np.ndarray]] = []
        with torch.no_grad():
            for i, r in enumerate(requests):
                try:
                    if r.endpoint == "reset":
                        results[i] = self._reset_session(r)
                        continue
                    w = self.sessions.get(r.session_id) if r.session_id is not None else self._new_world(r)
                    if r.mode == "world":
                        check_actions(r.actions, w.embodiment, w.chunk_size)
                        world.append((i, w, r.actions))
                    else:
                        policy.append((i, w))
                except ValueError as e:  # the engine's checks of user input: this request's mistake
                    results[i] = e if isinstance(e, RequestError) else RequestError(str(e))
            self._batched(policy, lambda items: self.model.predict([w for _, w in items]), results, requests)
            self._batched(world, lambda items: self.model.step([w for _, w, _ in items], [a for *_, a in items]),
                          results, requests)  # fmt: skip
        return results, time.perf_counter() - start  # type: ignore[return-value]

    def _batched(self, items: list, forward, results: list, requests: list[Request]) -> None:
        """One forward for all `items`; on failure, each alone."""
        if not items:
            return
        try:
            outputs = forward(items)
        except Exception as e:
            if len(items) == 1:  # the engine's ValueErrors name a mistake in the request; anything else is ours
                results[items[0][0]] = RequestError(str(e)) if type(e) is ValueError else e
                return
            log.exception("a batched forward of %d requests failed: retrying them one by one", len(items))
            for item in items:
                self._batched([item], forward, results, requests)
            return
        for item, out in zip(items, outputs):
            i, r = item[0], requests[item[0]]
            reply: dict[str, Any] = {"actions": out.actions} if r.mode == "policy" else {"frames": out.frames}
            if r.session_id is not None:
                reply["session_id"] = r.session_id
            results[i] = reply

    def _new_world(self, r: Request) -> World:
        return self.model.reset(r.image, r.prompt, r.embodiment, seed=r.seed, chunk_size=self.chunk_size, **self._tier)

    def _reset_session(self, r: Request) -> dict[str, Any]:
        w = self._new_world(r)
        session_id = r.session_id or uuid.uuid4().hex
        self.sessions.put(session_id, w)
        return {"session_id": session_id, "frame": w.last_frame, "embodiment": w.embodiment.name,
                "chunk_size": w.chunk_size}  # fmt: skip
