"""The policy protocol: `reset()` and `act(obs) -> actions`, for one env or a batch of envs.

One observation (pixels [H, W, 3]) gives one action in the env's action-space shape ([chunk, dim], or
[dim] with chunk_size 1); a vector env's batched observation (pixels [N, H, W, 3]) gives N of them
([N, chunk, dim]). Observations are the envs' dicts (`pixels`, `agent_pos`, ...) plus, optionally,
`task`: the instruction (a str, or a list of N str), as LeRobot's eval loop adds it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import gymnasium as gym
import numpy as np


@runtime_checkable
class Policy(Protocol):
    """What drives a Cosmos3World env (or the push simulator): reset between episodes, act on observations."""

    def reset(self) -> None: ...

    def act(self, obs: dict[str, Any]) -> np.ndarray: ...


def single_action_space(env_or_space: Any) -> gym.spaces.Box:
    """The per-env action Box of an env, a vector env (its `single_action_space`) or a Box itself."""
    space = getattr(env_or_space, "single_action_space", None) or getattr(env_or_space, "action_space", env_or_space)
    if not isinstance(space, gym.spaces.Box):
        raise ValueError(f"expected an env or a Box action space, got {type(env_or_space).__name__}")
    return space


def batch_size(obs: dict[str, Any]) -> int | None:
    """N for a batched observation (pixels [N, H, W, 3]), None for a single one ([H, W, 3])."""
    if not isinstance(obs, dict) or "pixels" not in obs:
        raise ValueError("obs must be an env observation dict with 'pixels'")
    pixels = obs["pixels"]
    if isinstance(pixels, dict):  # several cameras: look at one
        pixels = next(iter(pixels.values()))
    ndim = np.ndim(pixels)
    if ndim not in (3, 4):
        raise ValueError(f"obs['pixels'] must be [H, W, 3] or [N, H, W, 3], got shape {np.shape(pixels)}")
    return None if ndim == 3 else int(np.shape(pixels)[0])


def split_obs(obs: dict[str, Any], n: int) -> list[dict[str, Any]]:
    """A batched observation as N single ones (arrays indexed on their first axis, task lists by env)."""

    def pick(value: Any, i: int) -> Any:
        if isinstance(value, dict):
            return {k: pick(v, i) for k, v in value.items()}
        if isinstance(value, str) or value is None:
            return value
        return value[i]

    return [{k: pick(v, i) for k, v in obs.items()} for i in range(n)]


def tasks_of(obs: dict[str, Any], n: int | None) -> list[str] | str | None:
    """The instruction(s) in an observation: a str (single), a list of N str (batch), or None."""
    task = obs.get("task")
    if n is None or task is None:
        return task
    tasks = [task] * n if isinstance(task, str) else list(task)
    if len(tasks) != n:
        raise ValueError(f"obs['task'] holds {len(tasks)} instructions for a batch of {n}")
    return tasks


def per_env(act_one: Callable[[dict[str, Any]], np.ndarray], obs: dict[str, Any]) -> np.ndarray:
    """Apply a single-observation policy function to a single or batched observation."""
    n = batch_size(obs)
    if n is None:
        return np.asarray(act_one(obs), dtype=np.float32)
    return np.stack([np.asarray(act_one(o), dtype=np.float32) for o in split_obs(obs, n)])
