"""The world model's own policy mode: Cosmos3 imagines the next chunk's actions from the frames and the instruction.

Two ways to run it:
  WorldModelPolicy(env)    acts in the very worlds a Cosmos3World env (single or vector) simulates, through
                           `env.predict_actions()` (one batched `WorldModel.predict` over the env's worlds). The
                           next `env.step(actions)` commits the imagined chunk: one chunk of denoising per step.
  WorldModelPolicy(model=...)  acts from observations alone (any env with `pixels`, e.g. the push simulator):
                           each act restarts one World per env from its newest frame (history 1) and predicts.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import batch_size, single_action_space, split_obs, tasks_of


class WorldModelPolicy:
    """Cosmos3 policy mode, batched over envs (see the module doc)."""

    def __init__(
        self,
        env: Any = None,
        *,
        model: Any = None,
        embodiment: Any = "pusht",
        action_space: Any = None,
        instruction: str = "",
        seed: int = 0,
    ):
        if (env is None) == (model is None):
            raise ValueError("pass either env (act in its worlds) or model= (act from observations)")
        self.env = env
        if env is not None:
            if not callable(getattr(env.unwrapped, "predict_actions", None)):
                raise ValueError("env must be a Cosmos3World env (single or vector) with predict_actions()")
            return
        from cosmos3_world.envs.world_env import load_model, resolve_embodiment

        self.model = load_model(model, None, None, None)
        self.embodiment = resolve_embodiment(self.model, embodiment)
        if action_space is None:
            raise ValueError("model= needs action_space= (the env's) to shape and clip the actions")
        self.space = single_action_space(action_space)
        self.chunk_size = 1 if len(self.space.shape) == 1 else self.space.shape[0]
        self.instruction, self.seed = instruction, int(seed)
        self._worlds: list[Any] = []
        self._calls = 0

    def reset(self, seed: int | None = None) -> None:
        """Nothing to forget in env mode (the env's worlds are the state); restart the seed count otherwise (from
        `seed` when given, as the scripted policies' `reset(seed=)`)."""
        self._calls = 0
        if seed is not None:
            self.seed = int(seed)

    def act(self, obs: dict[str, Any]) -> np.ndarray:
        """The model's next actions: [*action shape] for one env, [N, *action shape] for a vector env."""
        if self.env is not None:
            return self.env.unwrapped.predict_actions()
        n = batch_size(obs)
        singles = [obs] if n is None else split_obs(obs, n)
        tasks = tasks_of(obs, n)
        tasks = [tasks] if n is None else tasks or [None] * n
        while len(self._worlds) < len(singles):
            self._worlds.append(None)
        worlds = []
        for i, (o, task) in enumerate(zip(singles, tasks)):
            self._worlds[i] = self.model.reset(
                image=_frame(o["pixels"]), instruction=task if task is not None else self.instruction,
                embodiment=self.embodiment, seed=self.seed + 7919 * self._calls + i, chunk_size=self.chunk_size,
                world=self._worlds[i],
            )  # fmt: skip
            worlds.append(self._worlds[i])
        self._calls += 1
        results = self.model.predict(worlds)
        low, high = self.space.low.reshape(-1, self.space.shape[-1]), self.space.high.reshape(-1, self.space.shape[-1])
        out = [np.clip(r.actions, low, high).astype(np.float32).reshape(self.space.shape) for r in results]
        return out[0] if n is None else np.stack(out)


def _frame(pixels: Any) -> np.ndarray:
    """The model's frame [H, W, 3]: several cameras' views tiled left to right, as Cosmos3World envs tile them."""
    if isinstance(pixels, dict):
        return np.concatenate([np.asarray(v) for v in pixels.values()], axis=1)
    return np.asarray(pixels)
