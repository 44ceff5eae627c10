"""Cosmos3World-v0: the Cosmos3 world model as a Gymnasium environment.

A policy sends a chunk of actions; the world model imagines the frames that follow them. One
`step` is one chunk: `chunk_size` actions in, `chunk_size` new frames out.

Observation  Dict(pixels: Box(0, 255, (H, W, 3), uint8)
                  [, agent_pos: Box(-1, 1, (2,), float32)]       Push-T: the commanded position (last action)
                  [, latents: Box(-inf, inf, (C, h, w), float32)])  obs_latents=True: the newest latent frame
Action       Box(low, high, (chunk_size, raw_action_dim), float32) within the embodiment's bounds ([-1, 1]
             without stats); with chunk_size=1 a per-step Box((raw_action_dim,)), as LeRobot's eval loop steps.
             Out-of-bounds values are clipped (out_of_bounds="clip", the default, as the push simulator does) or
             rejected (out_of_bounds="reject"); NaN/inf and wrong shapes raise ValueError. A rejected action
             changes nothing: the env goes on as if the call had not happened.
Reward       from the success hook (`success=`, see `success.py`): 0 and never terminated without one;
             truncation at `max_episode_steps`.
Info         frames [chunk, H, W, 3] uint8 (every new frame of the chunk; reset: start_frames [T0, H, W, 3]),
             actions [chunk, dim] float32 (as executed), predicted_actions [chunk, dim] (policy mode only),
             is_success, success_score (the hook's score, when it judged the chunk), task, elapsed_steps,
             timings (`Timings`: model_s, judge_s, step_s; a dict of arrays in the vector env).

With the embedded Push-T world (the default model) and no start image, episodes start from the push
simulator's start states, so the spaces and the first frame after `reset(seed=s)` are exactly those of
`Cosmos3PushSim-v0`. `metadata["render_fps"]` is the step rate (the embodiment's control rate / chunk_size):
`render()` gives one frame per step, so RecordVideo and LeRobot's eval videos play in real time
(render_mode="rgb_array_list" returns every frame since the last call). Policy mode (the world model acting) is
`predict_actions()` then `step(those actions)`: the step commits the chunk imagined with the prediction, so the
pair costs one chunk of denoising.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from .models import DEFAULT_MODEL_CACHE, ModelCache, default_model_path
from .success import NOT_JUDGED, Judge, make_judge
from .tasks import PushSimTasks, Task, TaskList, TaskSource, as_start_frames, check_cameras

if TYPE_CHECKING:
    from cosmos3_world.engine.embodiments import Embodiment
    from cosmos3_world.engine.world import ChunkResult, World, WorldModel

ENV_ID = "Cosmos3World-v0"
ENTRY_POINT = "cosmos3_world.envs.world_env:Cosmos3WorldEnv"
VECTOR_ENTRY_POINT = "cosmos3_world.envs.vector_env:Cosmos3WorldVectorEnv"

DEFAULT_EMBODIMENT = "pusht"  # the embedded world's; pass embodiment= for any other model
DEFAULT_CHUNK_SIZE = 4  # actions per step (a multiple of every codec's temporal factor: 1 or 4)
RENDER_MODES = ("rgb_array", "rgb_array_list")
OUT_OF_BOUNDS = ("clip", "reject")
RESET_OPTIONS = ("instruction", "image", "video", "embodiment", "task")
_PUSHT_DOMAIN = 4


def is_pusht(emb: Embodiment) -> bool:
    """Push-T's domain and width: the embodiment whose state (agent_pos) is its commanded 2-D position."""
    return emb.domain_id == _PUSHT_DOMAIN and emb.action_dim == 2


# ---------------------------------------------------------------------------------------------- settings
@dataclass
class WorldSettings:
    """Everything an env's worlds share, validated once at construction (bad keywords fail at `make`)."""

    model: WorldModel  # the (shared) model, with this env's sampler
    chunk_size: int
    history: int
    tier: Any  # resolution tier passed to WorldModel.reset ("auto": the bundle's default)
    action_dim: int  # the embodiment's raw action width
    action_low: np.ndarray  # [dim] float32
    action_high: np.ndarray  # [dim] float32
    frame_shape: tuple[int, int, int]  # (H, W, 3) of the frames the model imagines (and of the observation)
    cameras: tuple[str, ...] | None  # several views tiled left to right in one frame; None: one camera
    agent_pos: bool  # Push-T: observe the commanded position
    obs_latents: bool
    out_of_bounds: str
    max_episode_steps: int | None
    render_mode: str | None
    judge: Judge | None
    render_fps: float  # env steps per second: one rendered frame per step plays in real time
    observation_space: spaces.Dict
    action_space: spaces.Box

    def validate_action(self, action: Any, name: str = "action") -> np.ndarray:
        """Action as float32 [chunk_size, dim]; ValueError (naming `name`) on a bad shape, NaN/inf, or
        out-of-bounds values with out_of_bounds="reject"; clipped to the bounds otherwise."""
        n, d = self.chunk_size, self.action_dim
        expected = (d,) if n == 1 else (n, d)
        try:
            arr = np.asarray(action, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{name} must be a float array of shape {expected}: {err}") from None
        if arr.shape != expected and not (n == 1 and arr.shape == (1, d)):
            raise ValueError(f"{name} must have shape {expected}, got {arr.shape}")
        arr = arr.reshape(n, d)
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} contains NaN or inf: {arr.tolist()}")
        low, high = self.action_low.astype(np.float64), self.action_high.astype(np.float64)
        if self.out_of_bounds == "reject" and (np.any(arr < low) or np.any(arr > high)):
            raise ValueError(f"{name} is outside the action space [{low.tolist()}, {high.tolist()}]: {arr.tolist()}")
        return np.clip(arr, low, high).astype(np.float32)

    def from_chunk(self, actions: np.ndarray) -> np.ndarray:
        """[chunk, dim] -> the action space's shape ([dim] when chunk_size is 1)."""
        return actions.reshape(self.action_space.shape)


@dataclass
class WorldStart:
    """One world's own settings: its embodiment, where its episodes start, a fixed instruction."""

    embodiment: Embodiment
    source: TaskSource
    instruction: str | None  # overrides the task's instruction (None: the task's)


@dataclass(frozen=True, eq=False)
class Timings:
    """Wall-clock seconds of one step: the batched denoising (model_s), the success judge (judge_s), all (step_s).

    Measurements, not state: any two compare equal, so determinism checks (gymnasium's check_env compares the
    infos of two identical steps) compare what the env computed, not the clock.
    """

    model_s: float
    judge_s: float
    step_s: float

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Timings)

    __hash__ = object.__hash__

    def as_dict(self) -> dict[str, float]:
        return {"model_s": self.model_s, "judge_s": self.judge_s, "step_s": self.step_s}


def _check_int(value: Any, name: str, minimum: int = 1, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}{' or None' if allow_none else ''}, got {value!r}")
    return int(value)


def load_model(model: Any, device: Any, dtype: Any, model_cache: ModelCache | None) -> WorldModel:
    """A loaded WorldModel from the `model` keyword: None (the default model), a path or repo id, or a WorldModel."""
    from cosmos3_world.engine.world import WorldModel

    if isinstance(model, WorldModel):
        if device is not None or dtype is not None:
            raise ValueError("device= and dtype= apply when the env loads the model; a loaded WorldModel is used as is")
        return model
    if model is None:
        model = default_model_path()
    if not isinstance(model, (str, os.PathLike)):
        raise ValueError(f"model must be None, a path, a hub repo id or a WorldModel, got {type(model).__name__}")
    cache = DEFAULT_MODEL_CACHE if model_cache is None else model_cache
    if not isinstance(cache, ModelCache):
        raise ValueError(f"model_cache must be a ModelCache, got {type(model_cache).__name__}")
    return cache.get(model, device=device, dtype=dtype)


def sampler_config(model: WorldModel, sampler: Any, num_steps: Any, guidance_scale: Any, solver: Any):
    """The env's SamplerConfig: the model's, or `sampler` (a SamplerConfig or dict), with the shortcuts applied."""
    from dataclasses import asdict, replace

    from cosmos3_world.engine.sampler import SamplerConfig

    if sampler is None:
        base = model.sampler.config
    elif isinstance(sampler, SamplerConfig):
        base = sampler
    elif isinstance(sampler, dict):
        unknown = sorted(set(sampler) - set(asdict(SamplerConfig())))
        if unknown:
            raise ValueError(
                f"sampler has unknown fields {unknown}; expected some of {sorted(asdict(SamplerConfig()))}"
            )
        base = SamplerConfig(**sampler)
    else:
        raise ValueError(f"sampler must be a SamplerConfig, a dict or None, got {type(sampler).__name__}")
    overrides = {}
    if num_steps is not None:
        overrides["num_steps"] = _check_int(num_steps, "num_steps")
    if guidance_scale is not None:
        if not isinstance(guidance_scale, (int, float, np.floating)) or isinstance(guidance_scale, bool):
            raise ValueError(f"guidance_scale must be a number, got {guidance_scale!r}")
        overrides["guidance_scale"] = float(guidance_scale)
    if solver is not None:
        overrides["solver"] = solver
    return replace(base, **overrides) if overrides else base  # SamplerConfig validates in __post_init__


def bundle_defaults(model: WorldModel) -> dict[str, Any]:
    """The bundle's own defaults (model_index.json `_cosmos3_world`: embodiment, chunk_size, history, tier, sampler)."""
    return dict(getattr(model, "defaults", None) or {})


def resolve_embodiment(model: WorldModel, embodiment: Any) -> Embodiment:
    """The Embodiment for the keyword (a name or an Embodiment; None: the bundle's, else Push-T), checked."""
    from cosmos3_world.engine.embodiments import Embodiment

    emb = bundle_defaults(model).get("embodiment", DEFAULT_EMBODIMENT) if embodiment is None else embodiment
    if not isinstance(emb, (str, Embodiment)):
        raise ValueError(f"embodiment must be a name or an Embodiment, got {type(emb).__name__}")
    emb = emb if isinstance(emb, Embodiment) else model.embodiments.get(emb)  # lists the known names
    cfg = model.generator.config
    if not cfg.action_gen:
        raise ValueError("this model has no action head (action_gen=false): it cannot be driven by actions")
    if emb.action_dim > cfg.action_dim or emb.domain_id >= cfg.num_embodiment_domains:
        raise ValueError(f"embodiment {emb.name!r} (domain {emb.domain_id}, {emb.action_dim} dims) does not fit the "
                         f"model (action_dim={cfg.action_dim}, {cfg.num_embodiment_domains} domains)")  # fmt: skip
    return emb


def make_start(
    emb: Embodiment, instruction: Any, image: Any, video: Any, tasks: Any, cameras: Any = None
) -> WorldStart:
    """Where a world's episodes start: `tasks`, else the start `image`/`video`, else (Push-T) the simulator."""
    cameras = check_cameras(cameras)
    if instruction is not None and not isinstance(instruction, str):
        raise ValueError(f"instruction must be a str, got {type(instruction).__name__}")
    given = [k for k, v in (("image", image), ("video", video), ("tasks", tasks)) if v is not None]
    if len(given) > 1:
        raise ValueError(f"pass at most one of image, video or tasks, got {given}")
    if tasks is not None:
        return WorldStart(emb, TaskList(tasks, cameras), instruction)
    if image is not None or video is not None:
        frames = dict(image=as_start_frames(image, "image", cameras=cameras)) if image is not None else {}
        if video is not None:
            frames = dict(video=as_start_frames(video, "video", True, cameras))
        return WorldStart(emb, TaskList([Task(instruction or "", **frames)]), None)
    if cameras is not None:
        raise ValueError("cameras= needs start frames with every view (image=, video= or tasks=)")
    if is_pusht(emb):
        return WorldStart(emb, PushSimTasks(task=instruction), None)
    raise ValueError(f"embodiment {emb.name!r} needs start frames: pass image=, video= or tasks=")


def make_settings(
    model: WorldModel,
    starts: Sequence[WorldStart],
    *,
    chunk_size: Any,
    history: Any,
    tier: Any,
    cameras: Any,
    obs_latents: Any,
    out_of_bounds: Any,
    max_episode_steps: Any,
    render_mode: Any,
    success: Any,
) -> WorldSettings:
    """Validate the keywords every world shares and derive the spaces (one action space for all worlds)."""
    tf, sf = model.codec.temporal_factor, model.codec.spatial_factor
    defaults = bundle_defaults(model)
    chunk_size = _check_int(defaults.get("chunk_size", DEFAULT_CHUNK_SIZE) if chunk_size is None else chunk_size,
                            "chunk_size")  # fmt: skip
    if chunk_size % tf:
        raise ValueError(f"chunk_size must be a multiple of the codec's temporal factor {tf}, got {chunk_size}")
    history = _check_int(defaults.get("history", 1) if history is None else history, "history")
    if tier != "auto" and tier is not None and (not isinstance(tier, (int, np.integer)) or isinstance(tier, bool)):
        raise ValueError(f"tier must be 'auto' (the model's default), None (frames at their own size) or an int "
                         f"resolution tier, got {tier!r}")  # fmt: skip
    max_episode_steps = _check_int(max_episode_steps, "max_episode_steps", allow_none=True)
    if render_mode is not None and render_mode not in RENDER_MODES:
        raise ValueError(f"render_mode must be None or one of {list(RENDER_MODES)}, got {render_mode!r}")
    if out_of_bounds not in OUT_OF_BOUNDS:
        raise ValueError(f"out_of_bounds must be one of {list(OUT_OF_BOUNDS)}, got {out_of_bounds!r}")
    if not isinstance(obs_latents, (bool, np.bool_)):
        raise ValueError(f"obs_latents must be a bool, got {obs_latents!r}")

    emb = starts[0].embodiment
    for s in starts[1:]:
        e = s.embodiment
        if (e.action_dim, e.action_low, e.action_high) != (emb.action_dim, emb.action_low, emb.action_high):
            raise ValueError(f"every world needs the same action space: embodiment {e.name!r} differs from "
                             f"{emb.name!r} in width or bounds")  # fmt: skip
    shapes = {s.source.frame_shape for s in starts}
    if len(shapes) != 1:
        raise ValueError(f"every world's start frames must have one size (the observation space), got {shapes}")
    # The frames the model imagines: the start frames as it sees them (a resolution tier may downscale them).
    probe = starts[0].source.sample(np.random.default_rng(0), 0)
    tier_kw = {} if tier == "auto" else {"tier": tier}
    world = model.reset(image=probe.image, video=probe.video, instruction=probe.instruction, embodiment=emb, seed=0,
                        chunk_size=chunk_size, history=history, **tier_kw)  # fmt: skip
    frame_shape = tuple(world.last_frame.shape)  # (H, W, 3)
    h, w = frame_shape[:2]

    if emb.normalized:
        low, high = np.asarray(emb.action_low, np.float32), np.asarray(emb.action_high, np.float32)
    else:
        low, high = -np.ones(emb.action_dim, np.float32), np.ones(emb.action_dim, np.float32)
    shape = (emb.action_dim,) if chunk_size == 1 else (chunk_size, emb.action_dim)
    action_space = spaces.Box(np.broadcast_to(low, shape), np.broadcast_to(high, shape), shape, np.float32)
    agent_pos = all(is_pusht(s.embodiment) for s in starts)
    cameras = check_cameras(cameras)
    if cameras is None:
        obs = {"pixels": spaces.Box(0, 255, frame_shape, np.uint8)}
    else:
        if w % len(cameras):
            raise ValueError(f"frames {w} wide do not split into {len(cameras)} camera views")
        view = spaces.Box(0, 255, (h, w // len(cameras), 3), np.uint8)
        obs = {"pixels": spaces.Dict({c: view for c in cameras})}
    if agent_pos:
        obs["agent_pos"] = spaces.Box(-1.0, 1.0, (2,), np.float32)
    if obs_latents:
        obs["latents"] = spaces.Box(-np.inf, np.inf, (model.codec.latent_channels, h // sf, w // sf), np.float32)
    push_tasks = all(isinstance(s.source, PushSimTasks) for s in starts)
    return WorldSettings(
        model=model, chunk_size=chunk_size, history=history, tier=tier, action_dim=emb.action_dim, action_low=low,
        action_high=high, frame_shape=frame_shape, cameras=cameras, agent_pos=agent_pos, obs_latents=bool(obs_latents),
        out_of_bounds=out_of_bounds, max_episode_steps=max_episode_steps, render_mode=render_mode,
        judge=make_judge(success, push_tasks), render_fps=float(emb.control_hz) / chunk_size,
        observation_space=spaces.Dict(obs), action_space=action_space,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------- one world
@dataclass
class _Prediction:
    """A chunk imagined in policy mode, committed if the next step executes exactly its actions."""

    fork: World
    result: ChunkResult
    actions: np.ndarray  # [chunk, dim] float32, validated (clipped) as a step would execute them


class WorldSlot:
    """One world's episode: its World, start source, step counter and latest observation. Shared by the
    single env and the vector env, so a vector env's world i behaves exactly as a single env."""

    def __init__(self, settings: WorldSettings, start: WorldStart):
        self.settings = settings
        self.start = start
        self.embodiment = start.embodiment
        self.world: World | None = None
        self.task: Task | None = None
        self.instruction: str | None = None
        self.elapsed = 0
        self.frame: np.ndarray | None = None  # [H, W, 3] uint8 newest frame
        self.agent_pos: np.ndarray | None = None  # [2] float32 (Push-T)
        self.latent: np.ndarray | None = None  # [C, h, w] float32 (obs_latents)
        self.episode: list[np.ndarray] = []  # chunks of this episode's frames, kept only if the judge needs them
        self.render_list: list[np.ndarray] = []  # frames since the last render() (render_mode="rgb_array_list")
        self.prediction: _Prediction | None = None
        self._source_seeded = False  # whether the task source got a seed yet (its first draw must be seeded)

    # -- reset
    def reset(
        self, np_random: np.random.Generator, seed: int | None, options: dict[str, Any] | None, trial: bool = False
    ):
        """Start an episode (restarting the World in place): (obs, info). `trial`: a start at construction
        that validates the settings and leaves the task source as it was."""
        opts = dict(options or {})
        unknown = sorted(set(opts) - set(RESET_OPTIONS))
        if unknown:
            raise ValueError(f"unknown reset options {unknown}; expected some of {list(RESET_OPTIONS)}")
        model = self.settings.model
        emb = base = self.start.embodiment  # options hold for one episode
        if opts.get("embodiment") is not None:
            emb = resolve_embodiment(model, opts["embodiment"])
            if (emb.action_dim, emb.action_low, emb.action_high) != (
                base.action_dim,
                base.action_low,
                base.action_high,
            ):
                raise ValueError(f"options['embodiment'] {emb.name!r} has another action space than the env's")
        if trial:
            task = self.start.source.sample(np.random.default_rng(0), 0, opts.get("task"))
        else:
            if seed is None and not self._source_seeded:  # a seedless first episode is drawn from np_random
                seed = int(np_random.integers(2**31 - 1))
            self._source_seeded = True
            task = self.start.source.sample(np_random, seed, opts.get("task"))
        if opts.get("image") is not None or opts.get("video") is not None:
            if opts.get("image") is not None and opts.get("video") is not None:
                raise ValueError("pass at most one of options['image'] or options['video']")
            cams = self.settings.cameras
            image = (
                None if opts.get("image") is None else as_start_frames(opts["image"], "options['image']", False, cams)
            )
            video = (
                None if opts.get("video") is None else as_start_frames(opts["video"], "options['video']", True, cams)
            )
            task = Task(task.instruction, image, video, task.agent_pos)
            if task.frame_shape != self.start.source.frame_shape:
                raise ValueError(f"start frames must be {self.start.source.frame_shape}, got {task.frame_shape}")
        instruction = opts.get("instruction", self.start.instruction)
        instruction = task.instruction if instruction is None else instruction
        if not isinstance(instruction, str):
            raise ValueError(f"options['instruction'] must be a str, got {type(instruction).__name__}")
        world_seed = int(np_random.integers(2**63 - 1))
        tier = {} if self.settings.tier == "auto" else {"tier": self.settings.tier}
        self.world = model.reset(
            image=task.image, video=task.video, instruction=instruction, embodiment=emb, seed=world_seed,
            chunk_size=self.settings.chunk_size, history=self.settings.history, world=self.world, **tier,
        )  # fmt: skip
        self.embodiment, self.task, self.instruction = emb, task, instruction
        self.elapsed, self.prediction = 0, None
        frames = task.frames
        self.frame = self.world.last_frame.copy()  # the start as the model sees it (a tier may downscale it)
        if self.settings.agent_pos:
            self.agent_pos = np.zeros(2, np.float32) if task.agent_pos is None else task.agent_pos.astype(np.float32)
        if self.settings.obs_latents:
            self.latent = self._encode(self.frame)
        self.episode = [frames.copy()] if self._keeps_episode else []
        self.render_list = [f for f in frames] if self.settings.render_mode == "rgb_array_list" else []
        info = {"start_frames": frames.copy(), "is_success": False, "task": instruction, "elapsed_steps": 0}
        return self.observation(), info

    @property
    def _keeps_episode(self) -> bool:
        judge = self.settings.judge
        return judge is not None and judge.episode_frames

    def _encode(self, frame: np.ndarray) -> np.ndarray:
        """Newest latent frame [C, h, w] of a start frame (the codec's view of it)."""
        import torch

        codec = self.settings.model.codec
        x = torch.from_numpy(frame).permute(2, 0, 1)[None, :, None].float() / 127.5 - 1.0  # [1, 3, 1, H, W]
        return codec.encode(x.to(codec.device))[0, :, -1].float().cpu().numpy()

    # -- step
    def check_ready(self) -> None:
        if self.world is None:
            raise RuntimeError("call reset() before step()")

    def committed(self, actions: np.ndarray) -> _Prediction | None:
        """The pending policy-mode prediction if `actions` are exactly its actions (else None, and it is dropped)."""
        pred, self.prediction = self.prediction, None
        if pred is not None and np.array_equal(pred.actions, actions):
            return pred
        return None

    def advance(self, result: ChunkResult, actions: np.ndarray, predicted: np.ndarray | None) -> None:
        """Take in the chunk the World produced for `actions` [chunk, dim]."""
        self.elapsed += 1
        self.frame = result.frames[-1].copy()
        if self.settings.agent_pos:
            self.agent_pos = np.clip(actions[-1, :2], -1.0, 1.0).astype(np.float32)
        if self.settings.obs_latents:
            self.latent = result.latents[:, -1].float().cpu().numpy()
        if self._keeps_episode:
            self.episode.append(result.frames)
        if self.settings.render_mode == "rgb_array_list":
            self.render_list.extend(result.frames)

    def judged_frames(self, result: ChunkResult) -> np.ndarray:
        return np.concatenate(self.episode) if self._keeps_episode else result.frames

    def outcome(self, result: ChunkResult, actions: np.ndarray, predicted: np.ndarray | None, verdict, timings):
        """(obs, reward, terminated, truncated, info) after `advance`."""
        limit = self.settings.max_episode_steps
        terminated = verdict.success
        truncated = limit is not None and self.elapsed >= limit and not terminated
        info = {
            "frames": result.frames,  # [chunk, H, W, 3] uint8
            "actions": actions,  # [chunk, dim] float32 as executed
            "is_success": bool(verdict.success),
            "task": self.instruction,
            "elapsed_steps": self.elapsed,
            "timings": timings,
        }
        if predicted is not None:
            info["predicted_actions"] = predicted  # [chunk, dim] float32 raw model prediction
        if verdict is not NOT_JUDGED:
            info["success_score"] = float(verdict.reward)  # the hook's score, kept so runs can be re-thresholded
        return self.observation(), float(verdict.reward), bool(terminated), bool(truncated), info

    def observation(self) -> dict[str, Any]:
        cams = self.settings.cameras
        if cams is None:
            obs: dict[str, Any] = {"pixels": self.frame.copy()}
        else:  # the views, tiled left to right in the frame the model imagines
            obs = {"pixels": {c: v.copy() for c, v in zip(cams, np.split(self.frame, len(cams), axis=1))}}
        if self.settings.agent_pos:
            obs["agent_pos"] = self.agent_pos.copy()
        if self.settings.obs_latents:
            obs["latents"] = self.latent.copy()
        return obs

    def render(self) -> np.ndarray | list[np.ndarray] | None:
        if self.settings.render_mode == "rgb_array_list":
            out, self.render_list = self.render_list, []
            return out
        return None if self.frame is None else self.frame.copy()


def step_slots(settings: WorldSettings, slots: Sequence[WorldSlot], actions: Sequence[np.ndarray]):
    """Advance several worlds by one chunk with one batched `WorldModel.step` (policy-mode predictions whose
    actions are executed unchanged are committed instead of re-imagined). `actions` are validated.
    Returns per slot (obs, reward, terminated, truncated, info)."""
    t0 = time.perf_counter()
    preds = [s.committed(a) for s, a in zip(slots, actions)]
    todo = [i for i, p in enumerate(preds) if p is None]
    results: list[ChunkResult | None] = [p.result if p is not None else None for p in preds]
    if todo:
        stepped = settings.model.step([slots[i].world for i in todo], [actions[i] for i in todo])
        for i, r in zip(todo, stepped):
            results[i] = r
    for i, p in enumerate(preds):
        if p is not None:
            slots[i].world.__dict__.update(p.fork.__dict__)  # the World object stays the same for its owner
    t_model = time.perf_counter() - t0
    predicted = [None if p is None else p.result.actions for p in preds]
    for s, r, a, pa in zip(slots, results, actions, predicted):
        s.advance(r, a, pa)
    verdicts = [NOT_JUDGED] * len(slots)
    judge = settings.judge
    t1 = time.perf_counter()
    if judge is not None:
        limit = settings.max_episode_steps
        due = [i for i, s in enumerate(slots) if judge.due(s.elapsed, limit is not None and s.elapsed >= limit)]
        if due:
            got = judge.judge([slots[i].judged_frames(results[i]) for i in due], [slots[i].instruction for i in due])
            for i, v in zip(due, got):
                verdicts[i] = v
    t_judge = time.perf_counter() - t1
    t_step = time.perf_counter() - t0
    timings = Timings(model_s=t_model, judge_s=t_judge, step_s=t_step)
    return [s.outcome(r, a, pa, v, timings) for s, r, a, pa, v in zip(slots, results, actions, predicted, verdicts)]


def predict_slots(settings: WorldSettings, slots: Sequence[WorldSlot]) -> list[np.ndarray]:
    """Policy mode for several worlds in one batched `WorldModel.predict` on copies of their Worlds: the
    actions [chunk, dim] each world's model would take next, clipped to the action space."""
    for s in slots:
        s.check_ready()
    forks = [s.world.fork() for s in slots]
    results = settings.model.predict(forks)
    out = []
    for s, f, r in zip(slots, forks, results):
        actions = np.clip(r.actions, settings.action_low, settings.action_high).astype(np.float32)
        s.prediction = _Prediction(f, r, actions)
        out.append(actions)
    return out


# ---------------------------------------------------------------------------------------------- the env
class Cosmos3WorldEnv(gym.Env):
    """The Cosmos3 world model as a robot simulator: action chunks in, imagined frames out.

    Keywords (all validated here, so bad ones fail at `gym.make`):
      model          None (the default model: embedded Push-T world, or its tiny stand-in until shipped), a bundle
                     directory or hub repo id (loaded once per (path, device, dtype) in `model_cache`), or a
                     loaded WorldModel (shared as is)
      embodiment     name or Embodiment (default: the bundle's, else "pusht")
      instruction    the instruction (Push-T simulator starts: names the goal, e.g. "... onto the blue target")
      image / video  start frame [H, W, 3] / frames [T, H, W, 3] uint8;  tasks: list of Task or dicts
                     {instruction, image|video[, agent_pos]} drawn per episode. Push-T without any: the simulator's
                     start states
      cameras        names of several views tiled left to right in the model's frame: pixels becomes a dict
                     camera -> [H, W / k, 3] (LeRobot: observation.images.<camera>); start frames may be dicts too
      chunk_size     actions per step; history: latent frames of context; tier: resolution tier of the conditioning
                     canvas (None: frames at their own size). Defaults: the bundle's, else 4, 1 and the engine's
      sampler        SamplerConfig or dict; num_steps, guidance_scale, solver override its fields
      device, dtype  where and in what the model is loaded (paths and repo ids only)
      max_episode_steps  steps (chunks) before truncation (None: never). gym.make takes this keyword for its own
                     TimeLimit, which truncates alike but does not tell the env, so an `at_end` success hook never
                     runs there: for one, build Cosmos3WorldEnv(max_episode_steps=N) or use gym.make_vec
      render_mode    None, "rgb_array" (the newest frame) or "rgb_array_list" (every frame since the last render)
      success        None, "auto" (pixel detector on Push-T simulator tasks, else none), "pixel", or a hook
      obs_latents    add the newest latent frame to the observation
      out_of_bounds  "clip" (default) or "reject"
      model_cache    ModelCache to share loaded models in (default: the process-wide DEFAULT_MODEL_CACHE)
    """

    metadata = {"render_modes": list(RENDER_MODES), "render_fps": 10.0}

    def __init__(
        self,
        *,
        model: Any = None,
        embodiment: Any = None,
        instruction: str | None = None,
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
        wm = load_model(model, device, dtype, model_cache)
        wm = wm.with_sampler(sampler_config(wm, sampler, num_steps, guidance_scale, solver))
        emb = resolve_embodiment(wm, embodiment)
        start = make_start(emb, instruction, image, video, tasks, cameras)
        self.settings = make_settings(
            wm, [start], chunk_size=chunk_size, history=history, tier=tier, cameras=cameras, obs_latents=obs_latents,
            out_of_bounds=out_of_bounds, max_episode_steps=max_episode_steps, render_mode=render_mode,
            success=success,
        )  # fmt: skip
        self.metadata = {**type(self).metadata, "render_fps": self.settings.render_fps}
        self.observation_space = self.settings.observation_space
        self.action_space = self.settings.action_space
        self.render_mode = render_mode
        self._max_episode_steps = self.settings.max_episode_steps
        self._slot = WorldSlot(self.settings, start)
        # A first start now: bad start frames or instructions (e.g. a too long prompt) fail here, not at reset.
        self._slot.reset(np.random.default_rng(0), None, None, trial=True)
        self._started = False

    # -- what LeRobot and users read
    @property
    def model(self) -> WorldModel:
        """The (shared) WorldModel this env runs."""
        return self.settings.model

    @property
    def world(self) -> World | None:
        """The current episode's World (None before the first reset)."""
        return self._slot.world if self._started else None

    @property
    def task(self) -> str | None:
        """The current episode's instruction."""
        return self._slot.instruction if self._started else self._slot.start.instruction

    @property
    def task_description(self) -> str | None:
        """Alias of `task` (LeRobot reads `task_description`)."""
        return self.task

    @property
    def chunk_size(self) -> int:
        return self.settings.chunk_size

    @property
    def elapsed_steps(self) -> int:
        return self._slot.elapsed

    # -- gym API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Start an episode; the world's noise is drawn from `seed`. options: instruction, image, video,
        embodiment (same action space), task (index or instruction of `tasks` / the simulator's tasks)."""
        super().reset(seed=seed)
        obs, info = self._slot.reset(self.np_random, seed, options)
        self._started = True
        return obs, info

    def step(self, action: Any):
        if not self._started:
            raise RuntimeError("call reset() before step()")
        actions = self.settings.validate_action(action)  # raises before anything changes
        return step_slots(self.settings, [self._slot], [actions])[0]

    def predict_actions(self) -> np.ndarray:
        """Policy mode: the actions the world model would take next (action-space shape). Stepping with them
        unchanged commits the chunk imagined with them (one chunk of denoising for the pair)."""
        if not self._started:
            raise RuntimeError("call reset() before predict_actions()")
        return self.settings.from_chunk(predict_slots(self.settings, [self._slot])[0])

    def render(self) -> np.ndarray | list[np.ndarray] | None:
        """The newest frame [H, W, 3] uint8 ("rgb_array") or the frames since the last call ("rgb_array_list")."""
        if self.render_mode is None:
            return None
        return self._slot.render()

    def close(self) -> None:
        """Release this env's world (the shared model stays in its cache); safe to call repeatedly."""
        self._slot.world, self._slot.prediction, self._started = None, None, False
        self._slot.episode, self._slot.render_list = [], []
