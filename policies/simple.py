"""Built-in policies that need no model: random (seeded, within the action bounds), replay, scripted."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .base import batch_size, per_env, single_action_space


class RandomPolicy:
    """Uniform random actions within the env's action bounds, from a seeded generator (one stream per env)."""

    def __init__(self, env_or_space: Any, seed: int | None = None):
        self.space = single_action_space(env_or_space)
        if not (np.all(np.isfinite(self.space.low)) and np.all(np.isfinite(self.space.high))):
            raise ValueError("RandomPolicy needs a bounded action space")
        self.seed = seed
        self._rng = np.random.default_rng(seed)

    def reset(self, seed: int | None = None) -> None:
        """Reseed when `seed` is given (else the stream goes on)."""
        if seed is not None:
            self.seed, self._rng = seed, np.random.default_rng(seed)

    def act(self, obs: dict[str, Any]) -> np.ndarray:
        """Actions [*action shape] (single obs) or [N, *action shape] (batched obs), float32."""
        n = batch_size(obs)
        shape = self.space.shape if n is None else (n, *self.space.shape)
        return self._rng.uniform(self.space.low, self.space.high, size=shape).astype(np.float32)


class ReplayPolicy:
    """Replays recorded actions: an array [T, dim] (cut into chunks of the env's chunk size) or [steps, chunk, dim],
    or a .npy / .npz file holding one (key `actions`, or its only array). Every env of a batch gets the same chunk.

    on_end: "raise" (default: a clear error past the recording), "hold" (repeat the last chunk) or "loop".
    """

    def __init__(self, actions: Any, env_or_space: Any, on_end: str = "raise"):
        self.space = single_action_space(env_or_space)
        if on_end not in ("raise", "hold", "loop"):
            raise ValueError(f"on_end must be 'raise', 'hold' or 'loop', got {on_end!r}")
        self.on_end = on_end
        arr = self._load(actions) if isinstance(actions, (str, os.PathLike)) else np.asarray(actions, np.float32)
        shape = self.space.shape  # (chunk, dim) or (dim,)
        if arr.ndim == len(shape) + 1 and arr.shape[1:] == shape:
            chunks = arr
        elif arr.ndim == 2 and arr.shape[1] == shape[-1] and len(shape) == 2 and arr.shape[0] % shape[0] == 0:
            chunks = arr.reshape(-1, *shape)  # [T, dim] -> [T / chunk, chunk, dim]
        else:
            raise ValueError(f"actions of shape {arr.shape} do not make chunks of the action shape {shape}")
        if len(chunks) == 0 or not np.all(np.isfinite(chunks)):
            raise ValueError("actions must be a non-empty array of finite numbers")
        self.chunks = chunks.astype(np.float32)  # [steps, *action shape]
        self.cursor = 0

    @staticmethod
    def _load(path: str | os.PathLike) -> np.ndarray:
        path = Path(path)
        data = np.load(path, allow_pickle=False)
        if isinstance(data, np.lib.npyio.NpzFile):
            with data:
                keys = list(data.keys())
                if "actions" in keys:
                    return np.asarray(data["actions"], np.float32)
                if len(keys) == 1:
                    return np.asarray(data[keys[0]], np.float32)
                raise ValueError(f"{path}: no 'actions' array among {keys}")
        return np.asarray(data, np.float32)

    def reset(self) -> None:
        """Replay from the start."""
        self.cursor = 0

    def act(self, obs: dict[str, Any]) -> np.ndarray:
        if self.cursor >= len(self.chunks):
            if self.on_end == "raise":
                raise IndexError(f"ReplayPolicy: the recording holds {len(self.chunks)} steps; call reset() or "
                                 "pass on_end='hold' / 'loop'")  # fmt: skip
            self.cursor = 0 if self.on_end == "loop" else len(self.chunks) - 1
        chunk = self.chunks[self.cursor]
        self.cursor += 1
        n = batch_size(obs)
        return chunk.copy() if n is None else np.repeat(chunk[None], n, axis=0)


class ScriptedPolicy:
    """Any callable as a policy: `fn(obs) -> actions` for one observation (applied per env to a batch), or for
    a whole batch with `batched=True`. `reset_fn` runs on reset. The push simulator's scripted policies
    (`cosmos3_world.sim.graded_policies`) already follow the protocol and need no wrapper."""

    def __init__(
        self, fn: Callable[[dict[str, Any]], Any], batched: bool = False, reset_fn: Callable[[], None] | None = None
    ):
        if not callable(fn):
            raise ValueError(f"fn must be callable, got {fn!r}")
        self.fn, self.batched, self.reset_fn = fn, bool(batched), reset_fn

    def reset(self) -> None:
        if self.reset_fn is not None:
            self.reset_fn()

    def act(self, obs: dict[str, Any]) -> np.ndarray:
        if self.batched:
            return np.asarray(self.fn(obs), dtype=np.float32)
        return per_env(self.fn, obs)
