"""Task suites: which tasks an evaluation runs, how many episodes each, and where their episodes start.

A suite is a small JSON or YAML file (paths relative to it)::

    name: pusht                 # the suite's name
    episodes: 10                # episodes per task (a task may override it)
    max_episode_steps: 25       # optional: steps (chunks) before an episode is truncated
    tasks:
      - name: green             # unique within the suite
        instruction: push the red block onto the green target
        task: 0                 # the push simulator's task index: start frames from the simulator, per seed
      - name: cup
        instruction: put the cup on the plate
        image: frames/cup.png   # or video: clip.mp4 (its last frames); a fixed start frame for every seed
        embodiment: droid_lerobot   # optional, the env's by default (must share its action space)
        episodes: 5

Each task becomes the `reset(options=...)` of its episodes. The default model ships `DEFAULT_SUITE`
(`cosmos3_world/assets/suites/pusht.json`: the simulator's instructions).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import cosmos3_world

DEFAULT_SUITE = Path(cosmos3_world.__file__).resolve().parent / "assets" / "suites" / "pusht.json"
_TASK_KEYS = ("name", "instruction", "task", "image", "video", "embodiment", "episodes")
_SUITE_KEYS = ("name", "episodes", "max_episode_steps", "tasks")


@dataclass(frozen=True)
class SuiteTask:
    """One task of a suite: what reset() gets for each of its episodes."""

    name: str
    episodes: int
    instruction: str | None = None
    task: int | str | None = None  # the simulator's task (index or instruction), start frames per seed
    image: np.ndarray | None = field(default=None, repr=False, compare=False)  # [H, W, 3] uint8
    video: np.ndarray | None = field(default=None, repr=False, compare=False)  # [T, H, W, 3] uint8
    embodiment: str | None = None
    source: str | None = None  # the start file, as written in the suite

    def reset_options(self) -> dict[str, Any]:
        """The options of `env.reset` that start an episode of this task."""
        opts: dict[str, Any] = {}
        for key in ("instruction", "task", "image", "video", "embodiment"):
            value = getattr(self, key)
            if value is not None:
                opts[key] = value
        return opts

    def start_hash(self) -> str | None:
        """sha256 of the fixed start frames (None for simulator tasks, whose start depends on the seed)."""
        frames = self.image if self.image is not None else self.video
        return None if frames is None else hashlib.sha256(np.ascontiguousarray(frames).tobytes()).hexdigest()

    def describe(self) -> dict[str, Any]:
        """A JSON-able description (start frames as a file name and a hash)."""
        out = {"name": self.name, "episodes": self.episodes}
        for key in ("instruction", "task", "embodiment", "source"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.start_hash() is not None:
            out["start_sha256"] = self.start_hash()
        return out


@dataclass(frozen=True)
class TaskSuite:
    """A named list of tasks."""

    name: str
    tasks: tuple[SuiteTask, ...]
    max_episode_steps: int | None = None
    path: str | None = None

    @property
    def episodes(self) -> int:
        return sum(t.episodes for t in self.tasks)

    def with_episodes(self, episodes: int) -> TaskSuite:
        """The same suite with `episodes` per task."""
        _check_count(episodes, "episodes")
        tasks = tuple(SuiteTask(**{**t.__dict__, "episodes": episodes}) for t in self.tasks)
        return TaskSuite(self.name, tasks, self.max_episode_steps, self.path)

    def with_episodes_per_task(self, episodes: Mapping[str, int]) -> TaskSuite:
        """The same suite with the episodes of each task given by name."""
        tasks = tuple(
            SuiteTask(**{**t.__dict__, "episodes": _check_count(episodes[t.name], t.name)}) for t in self.tasks
        )
        return TaskSuite(self.name, tasks, self.max_episode_steps, self.path)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "path": self.path, "max_episode_steps": self.max_episode_steps,
                "tasks": [t.describe() for t in self.tasks]}  # fmt: skip


def _check_count(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _read_frames(path: Path, video: bool, where: str) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"{where}: start file {path} does not exist")
    if video:
        from cosmos3_world.video import read_video

        return read_video(path)
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"))


def load_suite(path: str | os.PathLike | None = None, episodes: int | None = None) -> TaskSuite:
    """Read a suite file (JSON, or YAML by extension); None reads the default suite. `episodes` overrides."""
    path = Path(DEFAULT_SUITE if path is None else path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"suite file {path} does not exist")
    text = path.read_text()
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as e:  # json and yaml raise their own error types
        raise ValueError(f"{path}: not a valid {path.suffix.lstrip('.').upper() or 'JSON'} suite file: {e}") from e
    suite = suite_from_dict(data, base=path.parent, where=str(path))
    suite = TaskSuite(suite.name, suite.tasks, suite.max_episode_steps, str(path))
    return suite if episodes is None else suite.with_episodes(episodes)


def suite_from_dict(data: Any, base: str | os.PathLike = ".", where: str = "suite") -> TaskSuite:
    """A suite from its parsed file (paths relative to `base`), every field checked with its place named."""
    if not isinstance(data, dict):
        raise ValueError(f"{where}: a suite must be a mapping with a 'tasks' list")
    unknown = sorted(set(data) - set(_SUITE_KEYS))
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; expected some of {list(_SUITE_KEYS)}")
    default_episodes = _check_count(data.get("episodes", 10), f"{where}: episodes")
    max_steps = data.get("max_episode_steps")
    if max_steps is not None:
        max_steps = _check_count(max_steps, f"{where}: max_episode_steps")
    entries = data.get("tasks")
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{where}: 'tasks' must be a non-empty list")
    tasks, names = [], set()
    for i, entry in enumerate(entries):
        at = f"{where}: tasks[{i}]"
        if not isinstance(entry, dict):
            raise ValueError(f"{at} must be a mapping")
        unknown = sorted(set(entry) - set(_TASK_KEYS))
        if unknown:
            raise ValueError(f"{at}: unknown keys {unknown}; expected some of {list(_TASK_KEYS)}")
        name = entry.get("name", f"task{i}")
        if not isinstance(name, str) or not name or name in names:
            raise ValueError(f"{at}: name must be a unique non-empty str, got {name!r}")
        names.add(name)
        instruction = entry.get("instruction")
        if instruction is not None and not isinstance(instruction, str):
            raise ValueError(f"{at}: instruction must be a str")
        if sum(entry.get(k) is not None for k in ("task", "image", "video")) > 1:
            raise ValueError(f"{at}: give at most one of task (simulator), image or video")
        image = video = None
        source = entry.get("image") or entry.get("video")
        if entry.get("image") is not None:
            image = _read_frames(Path(base) / entry["image"], False, at)
        if entry.get("video") is not None:
            video = _read_frames(Path(base) / entry["video"], True, at)
        tasks.append(SuiteTask(
            name=name, episodes=_check_count(entry.get("episodes", default_episodes), f"{at}: episodes"),
            instruction=instruction, task=entry.get("task"), image=image, video=video,
            embodiment=entry.get("embodiment"), source=source,
        ))  # fmt: skip
    return TaskSuite(str(data.get("name", "suite")), tuple(tasks), max_steps)


def resolve_suite(suite: TaskSuite | str | os.PathLike | None, episodes: int | None = None) -> TaskSuite:
    """A TaskSuite as given, or read from a file (None: the default suite); `episodes` per task overrides."""
    if not isinstance(suite, TaskSuite):
        return load_suite(suite, episodes)
    return suite if episodes is None else suite.with_episodes(episodes)
