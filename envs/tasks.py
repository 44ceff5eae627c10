"""Where episodes start: an instruction and start frames, drawn per reset from a fixed list or the push simulator.

A `Task` is what `reset` needs to start a world. A task source hands one out per episode:
`TaskList` draws from given tasks with the env's seeded generator; `PushSimTasks` draws start states
from the ground-truth push simulator, so `Cosmos3World-v0` and `Cosmos3PushSim-v0` reset with the same
seed show the same first frame (and the world env's `agent_pos` starts at the simulator's).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True)
class Task:
    """One episode start: the instruction and a start image [H, W, 3] or video [T, H, W, 3] (uint8)."""

    instruction: str
    image: np.ndarray | None = None  # [H, W, 3] uint8
    video: np.ndarray | None = None  # [T, H, W, 3] uint8: the world is conditioned on its last frames
    agent_pos: np.ndarray | None = None  # [2] float32 start position, for embodiments that observe one

    @property
    def frames(self) -> np.ndarray:
        """Start frames [T, H, W, 3] uint8 (T = 1 for an image)."""
        return self.image[None] if self.image is not None else self.video

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        return tuple(self.frames.shape[1:])


def as_frames(value: Any, name: str, video: bool = False) -> np.ndarray:
    """Validate an image [H, W, 3] (or video [T, H, W, 3]) as uint8, or float in [0, 1] converted to uint8."""
    arr = np.asarray(value)
    want = 4 if video else 3
    if arr.ndim != want or arr.shape[-1] != 3 or (video and arr.shape[0] < 1):
        shape = "[T, H, W, 3]" if video else "[H, W, 3]"
        raise ValueError(f"{name} must be an RGB array {shape}, got shape {arr.shape}")
    if arr.dtype == np.uint8:
        return arr.copy()
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or arr.min() < 0 or arr.max() > 1:
            raise ValueError(f"{name} as floats must be finite and within [0, 1]")
        return (arr * 255).round().astype(np.uint8)
    raise ValueError(f"{name} must be uint8 (or float in [0, 1]), got dtype {arr.dtype}")


def check_cameras(cameras: Any) -> tuple[str, ...] | None:
    """The `cameras` keyword: None (one camera) or distinct camera names, the views tiled left to right."""
    if cameras is None:
        return None
    if isinstance(cameras, str) or not isinstance(cameras, Sequence) or not cameras:
        raise ValueError(f"cameras must be None or a non-empty list of camera names, got {cameras!r}")
    if not all(isinstance(c, str) and c for c in cameras) or len(set(cameras)) != len(cameras):
        raise ValueError(f"cameras must be distinct non-empty names, got {list(cameras)}")
    return tuple(cameras)


def as_start_frames(value: Any, name: str, video: bool = False, cameras: tuple[str, ...] | None = None) -> np.ndarray:
    """Start frames from an array, or from a dict camera -> array tiled left to right in `cameras` order."""
    if not isinstance(value, Mapping):
        return as_frames(value, name, video)
    if cameras is None or set(value) != set(cameras):
        raise ValueError(f"{name} as a dict needs cameras= naming exactly its keys {sorted(value)}, got {cameras}")
    views = [as_frames(value[c], f"{name}[{c!r}]", video) for c in cameras]
    if len({v.shape for v in views}) != 1:
        raise ValueError(f"{name}: every camera's frames must have one shape, got {[v.shape for v in views]}")
    return np.concatenate(views, axis=-2)  # [.., H, k W, 3]


def as_task(value: Any, name: str = "task", cameras: tuple[str, ...] | None = None) -> Task:
    """A Task from a Task or a mapping with `instruction` and `image` or `video` (and optional `agent_pos`);
    with several cameras, image/video may be dicts camera -> frames."""
    if isinstance(value, Task):
        return value
    if not isinstance(value, Mapping):
        raise ValueError(
            f"{name} must be a Task or a dict with instruction and image/video, got {type(value).__name__}"
        )
    unknown = sorted(set(value) - {"instruction", "image", "video", "agent_pos"})
    if unknown:
        raise ValueError(f"{name} has unknown keys {unknown}; expected instruction, image or video, agent_pos")
    instruction = value.get("instruction", "")
    if not isinstance(instruction, str):
        raise ValueError(f"{name}['instruction'] must be a str, got {type(instruction).__name__}")
    if ("image" in value) == ("video" in value):
        raise ValueError(f"{name} must hold exactly one of image or video")
    image = as_start_frames(value["image"], f"{name}['image']", cameras=cameras) if "image" in value else None
    video = as_start_frames(value["video"], f"{name}['video']", True, cameras) if "video" in value else None
    pos = value.get("agent_pos")
    pos = None if pos is None else np.asarray(pos, np.float32).reshape(-1)
    return Task(instruction, image, video, pos)


class TaskSource(Protocol):
    """Hands out one Task per reset."""

    frame_shape: tuple[int, int, int]  # (H, W, 3) of every start frame

    def sample(self, np_random: np.random.Generator, seed: int | None, task: Any = None) -> Task:
        """The next episode's start; `task` (index or instruction) picks one instead of drawing it."""
        ...


class TaskList:
    """Draws one of a fixed list of tasks per episode (uniformly, from the env's seeded generator)."""

    def __init__(self, tasks: Sequence[Any], cameras: tuple[str, ...] | None = None):
        if isinstance(tasks, (str, bytes, Mapping, Task)) or not isinstance(tasks, Sequence) or not tasks:
            raise ValueError("tasks must be a non-empty list of Task or dicts with instruction and image/video")
        self.tasks = [as_task(t, f"tasks[{i}]", cameras) for i, t in enumerate(tasks)]
        shapes = {t.frames.shape for t in self.tasks}
        if len(shapes) != 1:  # one size for the observation space, one length so that vector infos batch
            raise ValueError(f"every task's start frames must have one shape [T, H, W, 3], got {sorted(shapes)}")
        self.frame_shape = self.tasks[0].frame_shape

    def sample(self, np_random: np.random.Generator, seed: int | None, task: Any = None) -> Task:
        if task is None:
            return self.tasks[int(np_random.integers(len(self.tasks))) if len(self.tasks) > 1 else 0]
        if isinstance(task, (int, np.integer)) and not isinstance(task, bool):
            if not 0 <= task < len(self.tasks):
                raise ValueError(f"task index {task} out of range [0, {len(self.tasks)})")
            return self.tasks[int(task)]
        if isinstance(task, str):
            for t in self.tasks:
                if t.instruction == task:
                    return t
            raise ValueError(f"no task has the instruction {task!r}; known: {[t.instruction for t in self.tasks]}")
        return as_task(task, "options['task']")

    @property
    def instructions(self) -> list[str]:
        return [t.instruction for t in self.tasks]


class PushSimTasks:
    """Start states of the ground-truth push simulator (same seed -> same first frame as Cosmos3PushSim-v0)."""

    def __init__(self, image_size: int = 64, task: int | str | None = None):
        from cosmos3_world.sim import PushSimEnv, task_index

        self.fixed_task = None if task is None else task_index(task)  # ValueError names the known tasks
        self.sim = PushSimEnv(chunk_size=1, image_size=image_size)
        self.frame_shape = (image_size, image_size, 3)

    def sample(self, np_random: np.random.Generator, seed: int | None, task: Any = None) -> Task:
        task = self.fixed_task if task is None else task
        obs, info = self.sim.reset(seed=seed, options=None if task is None else {"task": task})
        return Task(info["task"], image=obs["pixels"], agent_pos=obs["agent_pos"].astype(np.float32))

    @property
    def instructions(self) -> list[str]:
        from cosmos3_world.sim import TASKS

        return list(TASKS)
