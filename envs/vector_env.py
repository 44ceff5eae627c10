"""The native vector env of Cosmos3World-v0: N worlds advanced in one batched denoising forward per step.

`gym.make_vec("Cosmos3World-v0", num_envs=N, ...)` builds this (not a Sync/AsyncVectorEnv over N copies):
one shared WorldModel, one `WorldModel.step` over all N worlds per step (one forward per denoising step
for all of them, cond and uncond together). World i with seed s + i behaves exactly as a single
`Cosmos3WorldEnv` reset with seed s + i (same `WorldSlot` code), up to float reordering in the batch.

Per-world keywords take a list of N values: `instruction`, `image`, `video`, `embodiment` (one action
space: same width and bounds). `autoreset_mode`: NEXT_STEP (default), SAME_STEP (`final_obs` /
`final_info` with `_final_obs` / `_final_info` masks) or DISABLED (`reset(options={"reset_mask": m})`);
only the worlds that reset are restarted, the others go on untouched. The env truncates itself at
`max_episode_steps` (make_vec takes no wrappers). `call`, `get_attr`, `set_attr`, `render` and `envs`
(per-world views with `task_description` and `render()`) serve LeRobot's eval loop unchanged.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space, concatenate, create_empty_array

from .models import ModelCache
from .world_env import (
    RENDER_MODES,
    WorldSettings,
    WorldSlot,
    load_model,
    make_settings,
    make_start,
    predict_slots,
    resolve_embodiment,
    sampler_config,
    step_slots,
)

_PER_WORLD = ("instruction", "image", "video", "embodiment", "task")  # keywords / reset options given per world


def _batchable(info: dict[str, Any]) -> dict[str, Any]:
    """A world's info with its Timings as a dict, so the vector info holds an array per timing."""
    timings = info.get("timings")
    return info if timings is None else {**info, "timings": timings.as_dict()}


class WorldView:
    """World i of a vector env, seen as an env: what LeRobot's eval loop reads through `envs[i]` and `call`."""

    def __init__(self, parent: Cosmos3WorldVectorEnv, index: int, slot: WorldSlot):
        self._parent, self.index, self._slot = parent, index, slot
        self.np_random, _ = gym.utils.seeding.np_random(None)

    @property
    def unwrapped(self) -> Cosmos3WorldVectorEnv:
        return self._parent

    @property
    def metadata(self) -> dict[str, Any]:
        return self._parent.metadata

    @property
    def render_mode(self) -> str | None:
        return self._parent.render_mode

    @property
    def _max_episode_steps(self) -> int | None:
        return self._parent.settings.max_episode_steps

    @property
    def observation_space(self) -> gym.spaces.Dict:
        return self._parent.single_observation_space

    @property
    def action_space(self) -> gym.spaces.Box:
        return self._parent.single_action_space

    @property
    def task(self) -> str | None:
        """The instruction of this world's episode."""
        return self._slot.instruction if self._slot.instruction is not None else self._slot.start.instruction

    @property
    def task_description(self) -> str | None:
        return self.task

    @property
    def world(self):
        """This world's engine World."""
        return self._slot.world

    @property
    def elapsed_steps(self) -> int:
        return self._slot.elapsed

    def render(self) -> np.ndarray | list[np.ndarray] | None:
        """This world's newest frame [H, W, 3] uint8 (or its frames since the last call, "rgb_array_list")."""
        return None if self.render_mode is None else self._slot.render()

    def get_wrapper_attr(self, name: str) -> Any:
        return getattr(self, name)

    def set_wrapper_attr(self, name: str, value: Any) -> None:
        setattr(self, name, value)


class Cosmos3WorldVectorEnv(gym.vector.VectorEnv):
    """N Cosmos3 worlds stepped together in one batched forward per denoising step (see the module doc).

    Keywords are those of `Cosmos3WorldEnv` (instruction, image, video, embodiment may be lists of N) plus
    `num_envs` and `autoreset_mode`.
    """

    metadata = {"render_modes": list(RENDER_MODES), "render_fps": 10.0, "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(
        self,
        num_envs: int = 1,
        *,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        model: Any = None,
        embodiment: Any = None,
        instruction: Any = None,
        image: Any = None,
        video: Any = None,
        tasks: Sequence[Any] | None = None,
        cameras: Sequence[str] | None = None,
        chunk_size: int | None = None,
        history: int | None = None,
        tier: int | str | None = "auto",
        sampler: Any = None,
        num_steps: int | None = None,
        guidance_scale: float | None = None,
        solver: str | None = None,
        device: Any = None,
        dtype: Any = None,
        max_episode_steps: int | None = None,
        render_mode: str | None = None,
        success: Any = "auto",
        obs_latents: bool = False,
        out_of_bounds: str = "clip",
        model_cache: ModelCache | None = None,
    ):
        if not isinstance(num_envs, (int, np.integer)) or isinstance(num_envs, bool) or num_envs < 1:
            raise ValueError(f"num_envs must be an int >= 1, got {num_envs!r}")
        try:
            self.autoreset_mode = AutoresetMode(autoreset_mode)
        except ValueError:
            modes = [m.value for m in AutoresetMode]
            raise ValueError(
                f"autoreset_mode must be an AutoresetMode or one of {modes}, got {autoreset_mode!r}"
            ) from None
        self.num_envs = int(num_envs)
        wm = load_model(model, device, dtype, model_cache)
        wm = wm.with_sampler(sampler_config(wm, sampler, num_steps, guidance_scale, solver))
        per = {k: self._per_world(k, v) for k, v in
               dict(instruction=instruction, image=image, video=video, embodiment=embodiment).items()}  # fmt: skip
        embs = [resolve_embodiment(wm, e) for e in per["embodiment"]]
        starts = [
            make_start(embs[i], per["instruction"][i], per["image"][i], per["video"][i], tasks, cameras)
            for i in range(self.num_envs)
        ]
        self.settings: WorldSettings = make_settings(
            wm, starts, chunk_size=chunk_size, history=history, tier=tier, cameras=cameras, obs_latents=obs_latents,
            out_of_bounds=out_of_bounds, max_episode_steps=max_episode_steps, render_mode=render_mode,
            success=success,
        )  # fmt: skip
        self.metadata = {**type(self).metadata, "render_fps": self.settings.render_fps,
                         "autoreset_mode": self.autoreset_mode}  # fmt: skip
        self.render_mode = render_mode
        self.single_observation_space = self.settings.observation_space
        self.single_action_space = self.settings.action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._slots = [WorldSlot(self.settings, s) for s in starts]
        for slot in self._slots:  # validate every world's start now, not at the first reset
            slot.reset(np.random.default_rng(0), None, None, trial=True)
        self.envs: tuple[WorldView, ...] = tuple(WorldView(self, i, s) for i, s in enumerate(self._slots))
        self._obs = create_empty_array(self.single_observation_space, self.num_envs)
        self._env_obs: list[dict[str, np.ndarray] | None] = [None] * self.num_envs
        self._autoreset = np.zeros(self.num_envs, dtype=np.bool_)
        self._started = np.zeros(self.num_envs, dtype=np.bool_)

    def _per_world(self, name: str, value: Any) -> list[Any]:
        """A keyword's value for each world: a list/tuple of N values, or one value for all."""
        per_world_list = isinstance(value, (list, tuple)) and (
            name in ("instruction", "embodiment", "task")
            or all(isinstance(v, (np.ndarray, Mapping)) or v is None for v in value)
        )
        if not per_world_list:
            return [value] * self.num_envs
        if len(value) != self.num_envs:
            raise ValueError(f"{name} holds {len(value)} values for num_envs={self.num_envs}")
        return list(value)

    # -- what LeRobot and users read
    @property
    def model(self):
        """The shared WorldModel."""
        return self.settings.model

    @property
    def worlds(self) -> list:
        """The engine Worlds, one per env."""
        return [s.world for s in self._slots]

    @property
    def chunk_size(self) -> int:
        return self.settings.chunk_size

    # -- gym vector API
    def reset(self, *, seed: int | Sequence[int | None] | None = None, options: dict[str, Any] | None = None):
        """Reset every world (or those in options["reset_mask"]); `seed` s gives world i the seed s + i.
        Per-world options (instruction, image, video, embodiment, task) may be lists of N."""
        if seed is None:
            seeds: list[int | None] = [None] * self.num_envs
        elif isinstance(seed, (int, np.integer)):
            seeds = [int(seed) + i for i in range(self.num_envs)]
        else:
            seeds = list(seed)
            if len(seeds) != self.num_envs:
                raise ValueError(f"seed holds {len(seeds)} values for num_envs={self.num_envs}")
        options = dict(options or {})
        mask = options.pop("reset_mask", None)
        if mask is None:
            mask = np.ones(self.num_envs, dtype=np.bool_)
        elif not (isinstance(mask, np.ndarray) and mask.dtype == np.bool_ and mask.shape == (self.num_envs,)):
            raise ValueError(f"options['reset_mask'] must be a bool array of shape ({self.num_envs},), got {mask!r}")
        elif not mask.any():
            raise ValueError("options['reset_mask'] must select at least one env")
        per_opts = self._split_options(options)
        infos: dict[str, Any] = {}
        for i in np.flatnonzero(mask):
            infos = self._add_info(infos, self._reset_world(int(i), seeds[i], per_opts[i]), int(i))
        return self._batched_obs(), infos

    def _split_options(self, options: dict[str, Any]) -> list[dict[str, Any]]:
        """Reset options per world: per-world keys may hold a list of N values, the others apply to all."""
        per = {k: self._per_world(k, v) if k in _PER_WORLD else [v] * self.num_envs for k, v in options.items()}
        return [{k: v[i] for k, v in per.items()} for i in range(self.num_envs)]

    def _reset_world(self, i: int, seed: int | None, options: dict[str, Any] | None) -> dict[str, Any]:
        view = self.envs[i]
        if seed is not None:
            view.np_random, _ = gym.utils.seeding.np_random(seed)
        self._env_obs[i], info = self._slots[i].reset(view.np_random, seed, options)
        self._autoreset[i], self._started[i] = False, True
        return info

    def step(self, actions: Any):
        """One chunk for every world, in one batched WorldModel.step (resetting worlds per autoreset_mode)."""
        if not self._started.all():
            raise RuntimeError(f"reset() envs {np.flatnonzero(~self._started).tolist()} before step()")
        actions = np.asarray(actions, dtype=np.float64) if not isinstance(actions, np.ndarray) else actions
        if actions.shape[:1] != (self.num_envs,):
            raise ValueError(f"actions must have shape {self.action_space.shape}, got {np.shape(actions)}")
        resetting = (
            self._autoreset if self.autoreset_mode == AutoresetMode.NEXT_STEP else np.zeros_like(self._autoreset)
        )
        if self.autoreset_mode == AutoresetMode.DISABLED and self._autoreset.any():
            raise RuntimeError(f"envs {np.flatnonzero(self._autoreset).tolist()} are done: reset them with "
                               "reset(options={'reset_mask': mask}) (autoreset_mode=DISABLED)")  # fmt: skip
        stepping = [i for i in range(self.num_envs) if not resetting[i]]
        # Validate every action before any world moves: a rejected batch changes nothing.
        validated = {i: self.settings.validate_action(actions[i], f"actions[{i}]") for i in stepping}
        rewards = np.zeros(self.num_envs, dtype=np.float64)
        terminated = np.zeros(self.num_envs, dtype=np.bool_)
        truncated = np.zeros(self.num_envs, dtype=np.bool_)
        infos: dict[str, Any] = {}
        outcomes = step_slots(self.settings, [self._slots[i] for i in stepping], [validated[i] for i in stepping])
        for i, (obs, reward, term, trunc, info) in zip(stepping, outcomes):
            self._env_obs[i], rewards[i], terminated[i], truncated[i] = obs, reward, term, trunc
            if self.autoreset_mode == AutoresetMode.SAME_STEP and (term or trunc):
                infos = self._add_info(infos, {"final_obs": obs, "final_info": _batchable(info)}, i)
                info = self._reset_world(i, None, None)
            infos = self._add_info(infos, _batchable(info), i)
        for i in np.flatnonzero(resetting):
            infos = self._add_info(infos, self._reset_world(int(i), None, None), int(i))
        self._autoreset = terminated | truncated
        return self._batched_obs(), rewards, terminated, truncated, infos

    def predict_actions(self) -> np.ndarray:
        """Policy mode for every world in one batched WorldModel.predict: actions (N, *single action shape).
        Stepping with them unchanged commits the imagined chunks (one chunk of denoising for the pair)."""
        if not self._started.all():
            raise RuntimeError("call reset() before predict_actions()")
        chunks = predict_slots(self.settings, self._slots)
        return np.stack([self.settings.from_chunk(a) for a in chunks])

    def _batched_obs(self) -> dict[str, np.ndarray]:
        filled = [o if o is not None else self._blank() for o in self._env_obs]
        self._obs = concatenate(self.single_observation_space, filled, self._obs)
        return copy.deepcopy(self._obs)  # the buffer is reused by the next step

    def _blank(self, space: gym.Space | None = None) -> Any:
        """Zeros for a world that has not started yet (before its first reset)."""
        space = self.single_observation_space if space is None else space
        if isinstance(space, gym.spaces.Dict):
            return {k: self._blank(s) for k, s in space.spaces.items()}
        return np.zeros(space.shape, space.dtype)

    def render(self) -> tuple[Any, ...] | None:
        """Every world's newest frame (as SyncVectorEnv: a tuple of N frames)."""
        if self.render_mode is None:
            return None
        return tuple(view.render() for view in self.envs)

    def call(self, name: str, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
        """Call (or read) `name` on every world's view, as SyncVectorEnv.call does on its envs."""
        out = []
        for view in self.envs:
            attr = getattr(view, name)
            out.append(attr(*args, **kwargs) if callable(attr) else attr)
        return tuple(out)

    def get_attr(self, name: str) -> tuple[Any, ...]:
        return self.call(name)

    def set_attr(self, name: str, values: list[Any] | tuple[Any, ...] | Any) -> None:
        """Set `name` on every world's view: one value for all, or a list/tuple of N values."""
        if not isinstance(values, (list, tuple)):
            values = [values] * self.num_envs
        if len(values) != self.num_envs:
            raise ValueError(f"set_attr needs {self.num_envs} values, got {len(values)}")
        for view, value in zip(self.envs, values):
            setattr(view, name, value)

    def close_extras(self, **kwargs: Any) -> None:
        """Release the worlds (the shared model stays in its cache); safe to call repeatedly."""
        for slot in self._slots:
            slot.world, slot.prediction, slot.episode, slot.render_list = None, None, [], []
        self._started[:] = False
