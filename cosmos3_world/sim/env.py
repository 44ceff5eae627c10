"""Gymnasium env of the ground-truth push simulator (``Cosmos3PushSim-v0``).

Spaces (shared with the world-model env ``Cosmos3World-v0`` through ``push_spaces``):
  observation  Dict(pixels: Box(0, 255, (H, W, 3), uint8), agent_pos: Box(-1, 1, (2,), float32))
  action       Box(-1, 1, (chunk_size, 2), float32): target agent positions, one per control step;
               with chunk_size=1 a per-step Box(-1, 1, (2,), float32) (LeRobot's eval loop steps this way).

One ``step`` executes a chunk of ``chunk_size`` control steps; each control step renders one frame. Out-of-bounds
actions are clipped to [-1, 1]; NaN/inf or wrongly shaped actions raise ``ValueError`` before anything changes.
Success is checked on the state after the chunk (= its last frame, as the pixel success detector does): reward 1.0
and ``terminated`` then, else 0.0. ``info``: ``frames`` [chunk, H, W, 3] uint8, ``is_success``, ``task``,
``task_index``, ``goal_distance`` and ``score`` (dense, in [0, 1]), and the ground truth per frame:
``agent_positions`` [chunk, 2] and ``block_poses`` [chunk, 3] (x, y, angle) float32.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from .push import CONTROL_FPS, MAX_CONTROL_STEPS, TASKS, PushConfig, PushSim, goal_score, task_index

ENV_ID = "Cosmos3PushSim-v0"
ENTRY_POINT = "cosmos3_world.sim.env:PushSimEnv"


def push_spaces(chunk_size: int = 4, image_size: int = 64) -> tuple[spaces.Dict, spaces.Box]:
    """(observation_space, action_space) of the push task, for the simulator and the world-model env alike."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if image_size <= 0 or image_size % 16:
        raise ValueError(f"image_size must be a positive multiple of 16, got {image_size}")
    observation_space = spaces.Dict(
        {
            "pixels": spaces.Box(0, 255, (image_size, image_size, 3), np.uint8),
            "agent_pos": spaces.Box(-1.0, 1.0, (2,), np.float32),
        }
    )
    shape = (2,) if chunk_size == 1 else (chunk_size, 2)
    action_space = spaces.Box(-1.0, 1.0, shape, np.float32)
    return observation_space, action_space


def default_max_episode_steps(chunk_size: int) -> int:
    """Env steps (chunks) that cover the default horizon of ``MAX_CONTROL_STEPS`` control steps."""
    return -(-MAX_CONTROL_STEPS // chunk_size)


def validate_action(action: Any, chunk_size: int) -> np.ndarray:
    """Action as float64 [chunk_size, 2], clipped to [-1, 1]; ValueError on a wrong shape or non-finite values.

    Accepts the action space's shape, and [1, 2] as well when chunk_size is 1.
    """
    expected = (2,) if chunk_size == 1 else (chunk_size, 2)
    try:
        arr = np.asarray(action, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"action must be a float array of shape {expected}: {err}") from None
    if arr.shape != expected and not (chunk_size == 1 and arr.shape == (1, 2)):
        raise ValueError(f"action must have shape {expected}, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"action of shape {expected} contains NaN or inf: {arr.tolist()}")
    return np.clip(arr.reshape(chunk_size, 2), -1.0, 1.0)


class PushSimEnv(gym.Env):
    """The push task with exact physics: the ground truth the Cosmos3 world model imitates.

    Keywords: ``chunk_size`` (actions per step), ``image_size`` (multiple of 16), ``render_mode`` (None or
    "rgb_array"), ``max_episode_steps`` (env steps before truncation; None leaves it to a TimeLimit wrapper),
    ``task`` (index or instruction; None draws one per episode from the seed), ``config`` (PushConfig),
    ``supersample`` (internal render scale).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": CONTROL_FPS}

    def __init__(
        self,
        chunk_size: int = 4,
        image_size: int = 64,
        render_mode: str | None = None,
        max_episode_steps: int | None = None,
        task: int | str | None = None,
        config: PushConfig | None = None,
        supersample: int = 4,
    ):
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or one of {self.metadata['render_modes']}, got {render_mode!r}")
        self.observation_space, self.action_space = push_spaces(chunk_size, image_size)
        self.chunk_size = int(chunk_size)
        self.image_size = int(image_size)
        self.render_mode = render_mode
        self._max_episode_steps = max_episode_steps
        self._fixed_task = None if task is None else task_index(task)
        self.sim = PushSim(config or PushConfig(), image_size, supersample)
        self.task_index: int | None = None
        self._frame: np.ndarray | None = None  # latest frame [H, W, 3] uint8
        self._elapsed = 0

    @property
    def task(self) -> str | None:
        """The instruction of the current episode."""
        return None if self.task_index is None else TASKS[self.task_index]

    @property
    def task_description(self) -> str | None:
        """Alias of ``task`` (LeRobot reads ``task_description``)."""
        return self.task

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Start an episode; ``options={"task": index_or_instruction}`` fixes the instruction for this episode."""
        super().reset(seed=seed)
        task = (options or {}).get("task", self._fixed_task)
        state = self.sim.reset(self.np_random, None if task is None else task_index(task))
        self.task_index = state.task
        self._elapsed = 0
        self._frame = self.sim.render()
        agent, block = state.agent[None].astype(np.float32), state.block[None].astype(np.float32)
        return self._observation(), self._info(self._frame[None].copy(), False, agent, block)

    def step(self, action):
        if self.sim.state is None:
            raise RuntimeError("call reset() before step()")
        targets = validate_action(action, self.chunk_size)  # [chunk, 2]; raises before any change
        frames = np.empty((self.chunk_size, self.image_size, self.image_size, 3), np.uint8)
        agent = np.empty((self.chunk_size, 2), np.float32)
        block = np.empty((self.chunk_size, 3), np.float32)
        for i, target in enumerate(targets):
            self.sim.step(target)
            frames[i] = self.sim.render()
            agent[i], block[i] = self.sim.state.agent, self.sim.state.block
        self._frame = frames[-1].copy()
        self._elapsed += 1
        success = self.sim.is_success()
        truncated = self._max_episode_steps is not None and self._elapsed >= self._max_episode_steps
        info = self._info(frames, success, agent, block)
        return self._observation(), float(success), success, bool(truncated and not success), info

    def render(self) -> np.ndarray | None:
        """The latest frame, RGB uint8 [H, W, 3] (None before the first reset)."""
        return None if self._frame is None else self._frame.copy()

    def close(self) -> None:
        """Nothing to release; safe to call repeatedly."""

    def _observation(self) -> dict[str, np.ndarray]:
        return {"pixels": self._frame.copy(), "agent_pos": self.sim.state.agent.astype(np.float32)}

    def _info(self, frames: np.ndarray, success: bool, agent: np.ndarray, block: np.ndarray) -> dict[str, Any]:
        distance = self.sim.goal_distance()
        return {
            "frames": frames,  # [chunk, H, W, 3] uint8 (the start frame [1, H, W, 3] on reset)
            "agent_positions": agent,  # [chunk, 2] float32 ground truth per frame
            "block_poses": block,  # [chunk, 3] float32 (x, y, angle) ground truth per frame
            "is_success": bool(success),
            "task": self.task,
            "task_index": self.task_index,
            "goal_distance": distance,
            "score": goal_score(distance, self.sim.config.tolerance),
        }
