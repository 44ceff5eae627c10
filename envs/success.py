"""The success hook: reward and termination of a world-model env come from a detector or judge of its frames.

A hook is any callable `hook(frames, task) -> bool | float`, called with the chunk's new frames
[N, H, W, 3] uint8 and the instruction. A bool is success (reward 1.0, terminated); a float is the
reward, and success when it reaches the hook's `threshold` (default 1.0). Optional attributes let
expensive judges (e.g. the Reasoner, a VLM) run less often or batched:

  every: int = 1           judge every k-th chunk only (the others score 0, not done)
  at_end: bool = False     judge only the last chunk of an episode (when the env truncates)
  episode_frames: bool = False  pass every frame of the episode so far instead of the chunk's
  threshold: float = 1.0   score at or above which a float result counts as success
  batch(frames_list, tasks) -> list   judge several worlds in one call (used by the vector env)

The push simulator's `PixelSuccessDetector` is such a hook (bool on the last frame of the chunk).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class SuccessHook(Protocol):
    """What the env calls to score frames: `hook(frames [N, H, W, 3] uint8, task str) -> bool | float`."""

    def __call__(self, frames: np.ndarray, task: str) -> bool | float: ...


@dataclass(frozen=True)
class Judgement:
    """One world's verdict on one chunk."""

    success: bool
    reward: float


NOT_JUDGED = Judgement(False, 0.0)


class Judge:
    """Wraps a hook: validates its attributes once (at make), decides when it is due, normalises results."""

    def __init__(self, hook: Any):
        if not callable(hook):
            raise ValueError(f"success must be None, 'auto', 'pixel' or a callable(frames, task), got {hook!r}")
        self.hook = hook
        self.every = getattr(hook, "every", 1)
        if not isinstance(self.every, (int, np.integer)) or isinstance(self.every, bool) or self.every < 1:
            raise ValueError(f"success hook's `every` must be a positive int, got {self.every!r}")
        self.at_end = bool(getattr(hook, "at_end", False))
        self.episode_frames = bool(getattr(hook, "episode_frames", False))
        self.threshold = float(getattr(hook, "threshold", 1.0))
        batch = getattr(hook, "batch", None)
        self.batch = batch if callable(batch) else None

    def due(self, elapsed: int, last: bool) -> bool:
        """Whether the chunk that brought the episode to `elapsed` steps is judged (`last`: the episode ends)."""
        if self.at_end:
            return last
        return elapsed % self.every == 0 or last

    def judge(self, frames: Sequence[np.ndarray], tasks: Sequence[str]) -> list[Judgement]:
        """Verdicts for several worlds (one batched call when the hook has `batch`)."""
        if self.batch is not None:
            results = list(self.batch(list(frames), list(tasks)))
            if len(results) != len(frames):
                raise ValueError(f"success hook's batch() returned {len(results)} results for {len(frames)} worlds")
        else:
            results = [self.hook(f, t) for f, t in zip(frames, tasks)]
        return [self._normalise(r) for r in results]

    def _normalise(self, result: Any) -> Judgement:
        if isinstance(result, (bool, np.bool_)):
            return Judgement(bool(result), float(result))
        try:
            score = float(result)
        except (TypeError, ValueError):
            raise ValueError(f"success hook must return a bool or a float, got {result!r}") from None
        if not np.isfinite(score):
            raise ValueError(f"success hook returned a non-finite score {score}")
        return Judgement(score >= self.threshold, score)


def make_judge(success: Any, push_tasks: bool) -> Judge | None:
    """The Judge for the env keyword `success`: None, "auto" (the pixel detector on push-simulator tasks,
    else none), "pixel" (the push pixel detector), or a hook."""
    if success is None:
        return None
    if isinstance(success, str):
        if success not in ("auto", "pixel"):
            raise ValueError(f"success must be None, 'auto', 'pixel' or a callable(frames, task), got {success!r}")
        if success == "auto" and not push_tasks:
            return None
        from cosmos3_world.sim import PixelSuccessDetector

        return Judge(PixelSuccessDetector())
    return Judge(success)
