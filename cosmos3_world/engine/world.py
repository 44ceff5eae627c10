"""The world engine: autoregressive, action-conditioned rollouts of the Cosmos3 generator.

A `World` is one simulated episode: instruction, embodiment, recent frames and its own random
stream. `WorldModel` owns the generator, codec, tokenizer, sampler and the Reasoner prefix cache,
and advances any number of worlds in lockstep, one chunk at a time (`ChunkBatch`: one batched
forward per denoising step, cond and uncond of every world together). Geometry of a chunk of N
actions (codec temporal factor tf): N + 1 pixel frames, N / tf + 1 latent frames; the first latent
frame is the last frame of the previous chunk re-encoded as an image, as the causal VAE requires.
Frames are conditioned on the resolution tier's canvas exactly as the reference pipeline does
(`canvas.py`) and returned at the content size.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import numbers
import os
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from ..codecs import Codec, load_codec
from ..model import Cosmos3Generator, PrefixCache, parse_dtype
from ..model.checkpoint import resolve_directory
from .canvas import CANVAS_BINS, Canvas, content_frames, make_canvas, to_canvas
from .chunk import ChunkBatch, ChunkJob, ChunkOutput
from .embodiments import (
    DEFAULT_EMBODIMENTS,
    Embodiment,
    EmbodimentRegistry,
    action_features,
    action_token_positions,
    featurize_actions,
    fourier_width,
    prepare_actions,
    rotary_action_features,
    unnormalize_actions,
)
from .pixels import to_pixels, to_uint8
from .prompts import VIEW_POINT_FRAMING, PromptEncoder, check_length, load_tokenizer
from .sampler import FlowSampler, SamplerConfig

_BUNDLE_FOLDERS = ("model_index.json", "transformer/*", "vae/*", "text_tokenizer/*", "scheduler/*")

# model_index.json may carry this block: the bundle's own defaults for reset() and the sampler.
BUNDLE_DEFAULTS_KEY = "_cosmos3_world"
_DEFAULT_KEYS = (
    "tier", "embodiment", "chunk_size", "history", "sampler", "action_fourier_octaves", "action_rotary_features",
    "action_target_positions",
)  # fmt: skip
_NO_TIER = object()  # "use the model's default tier" (None itself means native size)


@dataclass
class ChunkResult:
    """What one chunk produced for one world."""

    frames: np.ndarray | None  # [N, h, w, 3] uint8: the chunk's new frames at the content size
    latents: torch.Tensor  # [C, T, h', w'] float32: denoised latents of the whole clip, conditioning first
    actions: np.ndarray | None = None  # [N, raw_dim] float32 in the embodiment's raw units (policy / inverse)


@dataclass(eq=False)
class World:
    """One simulated episode. Create with `WorldModel.reset`; advance with `step` / `predict`."""

    model: "WorldModel"
    instruction: str
    embodiment: Embodiment
    seed: int
    chunk_size: int
    history: int  # latent frames of context each chunk is conditioned on (grows to this after reset)
    fps: float
    view_point: str
    tier: int | None  # resolution tier of the conditioning canvas (None: native size)
    canvas: Canvas  # the canvas the next chunk is conditioned on
    rng: torch.Generator = field(repr=False)  # this world's noise stream, seeded by reset
    frames: list[torch.Tensor] = field(default_factory=list, repr=False)  # recent [3, h, w] in [-1, 1]
    past_actions: list[torch.Tensor] = field(default_factory=list, repr=False)  # recent [action_dim] model-space
    start_clip: torch.Tensor | None = field(default=None, repr=False)  # the raw start frames, until chunk 1
    num_chunks: int = 0

    def step(self, actions: Any) -> ChunkResult:
        """Forward dynamics: the frames that follow `actions` [chunk_size, raw_dim]."""
        return self.model.step([self], [actions])[0]

    def predict(self) -> ChunkResult:
        """Policy mode: the next chunk's frames and actions, imagined jointly."""
        return self.model.predict([self])[0]

    def fork(self) -> "World":
        """An independent copy (same frames, past actions and noise-stream state) to imagine ahead in.

        The model, its weights and its prefix cache are shared; stepping the fork leaves this world unchanged.
        """
        fork = dataclasses.replace(self, frames=list(self.frames), past_actions=list(self.past_actions))
        fork.rng = torch.Generator(device=self.rng.device)
        fork.rng.set_state(self.rng.get_state())
        return fork

    @property
    def last_frame(self) -> np.ndarray:
        """The newest frame, [h, w, 3] uint8 at the content size."""
        return to_uint8(self.frames[-1][:, None])[0]

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        """(h, w, 3) of the frames this world returns."""
        return (*self.frames[-1].shape[1:], 3)


class WorldModel:
    """Generator + codec + tokenizer + sampler: rolls worlds forward chunk after chunk."""

    def __init__(
        self,
        generator: Cosmos3Generator,
        codec: Codec,
        tokenizer: Any,
        sampler: FlowSampler | None = None,
        *,
        embodiments: EmbodimentRegistry = DEFAULT_EMBODIMENTS,
        negative_prompt: str = "",
        max_prompt_tokens: int | None = None,
        defaults: dict[str, Any] | None = None,
        progress: bool = False,
        compile: bool = False,
    ):
        if codec.latent_channels != generator.config.latent_channel:
            raise ValueError(
                f"codec makes {codec.latent_channels}-channel latents but the generator expects "
                f"latent_channel={generator.config.latent_channel}"
            )
        if not isinstance(negative_prompt, str):
            raise ValueError(f"negative_prompt must be a str, got {type(negative_prompt).__name__}")
        self.generator = generator.eval()
        if compile:  # slow first chunk, then faster steps (see Cosmos3Generator.compile_generation)
            generator.compile_generation()
        self.codec = codec
        self.prefix_cache = PrefixCache(generator)  # the Reasoner K/V of every prompt, encoded once
        self.prompts = PromptEncoder(tokenizer)
        self.sampler = sampler or FlowSampler()
        self.embodiments = embodiments
        self.negative_prompt = negative_prompt
        # Text positions must stay below the generation tokens' (which start at prompt length + margin).
        self.max_prompt_tokens = max_prompt_tokens or generator.config.unified_3d_mrope_temporal_modality_margin
        self.defaults = _check_defaults(defaults or {})
        try:  # the octaves must fit the model's action columns (each embodiment's width is checked per step)
            action_features(torch.zeros(1, generator.config.action_dim), 1, self.action_octaves)
        except ValueError as e:
            raise ValueError(f"{BUNDLE_DEFAULTS_KEY}.action_fourier_octaves: {e}") from None
        if self.action_rotary:  # room for a 2-D position's Fourier and rotary columns
            inv_freq, axis = generator.rotary.spatial_slots()
            try:
                start = fourier_width(2, self.action_octaves)
                rotary_action_features(torch.zeros(1, generator.config.action_dim), start, inv_freq, axis, (1, 1))
            except ValueError as e:
                raise ValueError(f"{BUNDLE_DEFAULTS_KEY}.action_rotary_features: {e}") from None
        self.progress = progress
        self.source: dict[str, Any] | None = None  # where from_pretrained loaded it from

    @property
    def action_rotary(self) -> bool:
        """Whether the clean actions of `image_position` embodiments carry rotary features
        (embodiments.rotary_action_features), as the bundle was trained: its defaults' `action_rotary_features`."""
        return bool(self.defaults.get("action_rotary_features", False))

    @property
    def action_target_positions(self) -> bool:
        """Whether the clean action tokens of `image_position` embodiments sit where their targets point
        (embodiments.action_token_positions), as the bundle was trained: its defaults' `action_target_positions`."""
        return bool(self.defaults.get("action_target_positions", False))

    def _token_grid(self, canvas: Canvas) -> tuple[float, float]:
        """(rows, columns) of tokens over `canvas`'s content."""
        tokens = canvas.spatial_factor * self.generator.config.latent_patch_size  # pixels per token, per side
        return (canvas.content_height / tokens, canvas.content_width / tokens)

    def featurize_actions(self, actions: torch.Tensor, embodiment: Embodiment, canvas: Canvas) -> torch.Tensor:
        """Clean model-space actions [T, D] featurised as the model was trained: Fourier features of the raw columns,
        then (rotary bundles, image-position embodiments) the target token's rotary phases on `canvas`'s content."""
        if not self.action_rotary:
            return featurize_actions(actions, embodiment, self.action_octaves)
        grid = self._token_grid(canvas)
        return featurize_actions(
            actions, embodiment, self.action_octaves, (*self.generator.rotary.spatial_slots(), grid)
        )

    @property
    def action_octaves(self) -> int:
        """Octaves of Fourier features the clean actions carry (embodiments.action_features), as the bundle was
        trained: its defaults' `action_fourier_octaves`, 0 = none."""
        return self.defaults.get("action_fourier_octaves", 0)

    def with_sampler(self, config: SamplerConfig | None) -> "WorldModel":
        """This model denoising with `config`: itself when the settings match, else a view that shares the
        generator, codec, tokenizer and prefix cache and differs only in the sampler."""
        if config is None or config == self.sampler.config:
            return self
        view = copy.copy(self)
        view.sampler = FlowSampler(self.sampler.scheduler_config, config)
        return view

    def weights_sha256(self) -> str:
        """sha256 over the generator's tensors (names, dtypes, shapes, bytes): identifies the weights a run used."""
        digest = hashlib.sha256()
        for name, tensor in sorted(self.generator.state_dict().items()):
            t = tensor.detach().cpu().contiguous()
            digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
            digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        return digest.hexdigest()

    def describe(self) -> dict[str, Any]:
        """What a run's manifest records of this model: source, weights hash, dtype, sampler, defaults."""
        return {
            "source": self.source, "weights_sha256": self.weights_sha256(), "dtype": str(self.generator.dtype),
            "device": str(self.device), "sampler": dataclasses.asdict(self.sampler.config),
            "negative_prompt": self.negative_prompt, "defaults": self.defaults,
        }  # fmt: skip

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(
        cls,
        path_or_repo: str | os.PathLike,
        *,
        device: str | torch.device | None = None,
        torch_dtype: torch.dtype | str | None = None,
        codec_dtype: torch.dtype | str | None = None,
        sampler: SamplerConfig | None = None,
        revision: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        local_files_only: bool | None = None,
        token: str | bool | None = None,
        **kwargs: Any,
    ) -> "WorldModel":
        """Load a bundle (model_index.json with transformer, vae, text_tokenizer, scheduler folders).

        torch_dtype is the generator's dtype (None -> float32, "auto" -> as stored); codec_dtype the
        codec's (default: torch_dtype when it names a dtype, else float32). sampler defaults to the
        bundle's own settings (model_index.json's `_cosmos3_world.sampler`), else `SamplerConfig()`.
        """
        if sampler is not None and not isinstance(sampler, SamplerConfig):
            raise ValueError(f"sampler must be a SamplerConfig, got {type(sampler).__name__}")
        if torch_dtype != "auto":
            parse_dtype(torch_dtype, "torch_dtype")
        codec_dtype = parse_dtype(codec_dtype, "codec_dtype")
        if codec_dtype is None and torch_dtype != "auto":
            codec_dtype = parse_dtype(torch_dtype)
        hub = dict(revision=revision, cache_dir=cache_dir, local_files_only=local_files_only, token=token)
        root = resolve_directory(path_or_repo, None, allow_patterns=list(_BUNDLE_FOLDERS), **hub)
        index_file = root / "model_index.json"
        index = json.loads(index_file.read_text()) if index_file.is_file() else {}
        defaults = dict(index.get(BUNDLE_DEFAULTS_KEY) or {})
        generator = Cosmos3Generator.from_pretrained(
            root, subfolder="transformer", torch_dtype=torch_dtype, device=device
        )
        codec = load_codec(root, subfolder="vae", device=device, torch_dtype=codec_dtype or torch.float32)
        tokenizer = load_tokenizer(str(root), subfolder="text_tokenizer")
        sched_file = root / "scheduler" / "scheduler_config.json"
        sched_cfg = json.loads(sched_file.read_text()) if sched_file.is_file() else None
        if sampler is None:
            sampler = SamplerConfig(**defaults.get("sampler", {}))
        wm = cls(generator, codec, tokenizer, FlowSampler(sched_cfg, sampler), defaults=defaults, **kwargs)
        wm.source = {"path": str(path_or_repo), "revision": revision, "resolved": str(root)}
        return wm

    @property
    def device(self) -> torch.device:
        return self.generator.device

    # ------------------------------------------------------------------ worlds
    def reset(
        self,
        image: Any = None,
        instruction: str = "",
        embodiment: str | Embodiment | None = None,
        seed: int | None = None,
        *,
        video: Any = None,
        chunk_size: int | None = None,
        history: int | None = None,
        fps: float | None = None,
        view_point: str | None = None,
        tier: int | None = _NO_TIER,
        world: World | None = None,
    ) -> World:
        """Start a world from an image [H, W, 3] (or the last frames of a video [T, H, W, 3]).

        tier: the resolution tier (256, 480, 704, 720) whose canvas the frames are conditioned on, as
        in the reference pipeline; None conditions on frames at their own size; default: the bundle's
        (else 480). Pass `world` to restart an existing world in place (its batch mates go on
        untouched). Everything is validated before anything changes.
        """
        if (image is None) == (video is None):
            raise ValueError("pass exactly one of image (one frame [H, W, 3]) or video (frames [T, H, W, 3])")
        pixels = to_pixels(video if image is None else image, "video" if image is None else "image")
        if image is not None and pixels.shape[1] != 1:
            raise ValueError(f"image must be one frame [H, W, 3], got {pixels.shape[1]} frames; use video=")
        if not isinstance(instruction, str):
            raise ValueError(f"instruction must be a str, got {type(instruction).__name__}")
        emb = self._embodiment(
            self.defaults.get("embodiment", "bridge_orig_lerobot") if embodiment is None else embodiment
        )
        tf = self.codec.temporal_factor
        chunk_size = self.defaults.get("chunk_size", 3 * tf) if chunk_size is None else chunk_size
        self._check_chunk_size(chunk_size)
        history = self.defaults.get("history", 1) if history is None else history
        if not _is_int(history) or history < 1:
            raise ValueError(f"history must be a positive int (latent frames of context), got {history!r}")
        fps = emb.control_hz if fps is None else fps
        if not isinstance(fps, numbers.Real) or isinstance(fps, bool) or not np.isfinite(fps) or fps <= 0:
            raise ValueError(f"fps must be a positive number, got {fps!r}")
        view_point = emb.view_point if view_point is None else view_point
        if view_point not in VIEW_POINT_FRAMING:
            raise ValueError(f"view_point must be one of {sorted(VIEW_POINT_FRAMING)}, got {view_point!r}")
        tier = self.defaults.get("tier", 480) if tier is _NO_TIER else tier
        if tier is not None and (not _is_int(tier) or tier not in CANVAS_BINS):
            raise ValueError(f"tier must be one of {sorted(CANVAS_BINS)} or None (native size), got {tier!r}")
        seed = _check_seed(seed)
        if world is not None:
            self._check_world(world, "world")
        canvas = make_canvas(pixels.shape[2], pixels.shape[3], tier, self.codec.spatial_factor)
        start = content_frames(to_canvas(pixels, canvas), canvas)  # [3, T, h, w]: the start as the model sees it
        fresh = World(
            model=self, instruction=instruction, embodiment=emb, seed=seed, chunk_size=int(chunk_size),
            history=int(history), fps=float(fps), view_point=view_point, tier=tier, canvas=canvas,
            rng=torch.Generator().manual_seed(seed), frames=list(start.unbind(1)), start_clip=pixels,
        )  # fmt: skip
        self._trim(fresh)
        self._prompt_ids(fresh, self._clip_frames(fresh) + fresh.chunk_size)  # a too-long instruction fails here
        if world is None:
            return fresh
        world.__dict__.update({k: v for k, v in fresh.__dict__.items() if k != "model"})
        return world

    def step(self, worlds: Sequence[World], actions: Sequence[Any]) -> list[ChunkResult]:
        """Forward dynamics for several worlds in lockstep: each gets its actions [N, raw_dim]."""
        worlds = self._check_worlds(worlds)
        if isinstance(actions, (np.ndarray, torch.Tensor)) and actions.ndim == 3:
            actions = list(actions)
        if not isinstance(actions, Sequence) or len(actions) != len(worlds):
            got = len(actions) if isinstance(actions, Sequence) else type(actions).__name__
            raise ValueError(f"actions must hold one [chunk_size, raw_dim] array per world ({len(worlds)}), got {got}")
        self._require_action_head()
        prepared = []
        for i, (w, a) in enumerate(zip(worlds, actions)):
            try:
                raw = prepare_actions(a, w.embodiment, self.generator.config.action_dim, w.chunk_size)
                prepared.append(self.featurize_actions(raw, w.embodiment, w.canvas))
            except ValueError as e:
                raise ValueError(f"actions[{i}]: {e}") from None
        outputs = self._run([self._world_job(w, a) for w, a in zip(worlds, prepared)])
        return [self._advance(w, out, a, pixels) for w, (out, pixels), a in zip(worlds, outputs, prepared)]

    def predict(self, worlds: Sequence[World]) -> list[ChunkResult]:
        """Policy mode for several worlds: imagine the next chunk's frames and actions together."""
        worlds = self._check_worlds(worlds)
        self._require_action_head()
        outputs = self._run([self._world_job(w, None) for w in worlds])
        results = []
        for w, (out, pixels) in zip(worlds, outputs):
            new = out.actions[-w.chunk_size :]
            d = w.embodiment.action_dim  # later chunks condition on the generated actions, featurised as given ones
            result = self._advance(w, out, self.featurize_actions(new, w.embodiment, w.canvas), pixels)
            result.actions = unnormalize_actions(new[:, :d], w.embodiment)
            results.append(result)
        return results

    def infer_actions(
        self,
        video: Any,
        instruction: str = "",
        embodiment: str | Embodiment | None = None,
        seed: int | None = None,
        *,
        fps: float | None = None,
        view_point: str | None = None,
        tier: int | None = _NO_TIER,
    ) -> np.ndarray:
        """Inverse dynamics: the actions [T - 1, raw_dim] that connect the frames of `video` [T, H, W, 3]."""
        self._require_action_head()
        frames = to_pixels(video, "video")
        n = frames.shape[1] - 1
        if n < 1:
            raise ValueError("video must hold at least 2 frames to infer the actions between them")
        self._check_chunk_size(n, name="video frames - 1")
        # A world holding the whole video as history: every latent frame clean, every action noisy.
        w = self.reset(
            video=frames.permute(1, 2, 3, 0).add(1).mul(0.5), instruction=instruction, embodiment=embodiment,
            seed=seed, chunk_size=n, history=self.codec.latent_frames(n + 1), fps=fps, view_point=view_point, tier=tier,
        )  # fmt: skip
        latent_frames = self.codec.latent_frames(n + 1)
        job = ChunkJob(
            clip=to_canvas(frames, w.canvas), canvas=w.canvas, latent_frames=latent_frames, vision_clean=latent_frames,
            actions=torch.zeros(n, self.generator.config.action_dim), action_noisy=tuple(range(n)),
            embodiment=w.embodiment, prompt_ids=self._prompt_ids(w, n + 1, w.canvas),
            negative_ids=self._negative_ids(n + 1), fps=w.fps, rng=w.rng,
        )  # fmt: skip
        out, _ = self._run([job], decode=False)[0]
        return unnormalize_actions(out.actions[:, : w.embodiment.action_dim], w.embodiment)

    # ------------------------------------------------------------------ chunk machinery
    def _world_job(self, w: World, new_actions: torch.Tensor | None) -> ChunkJob:
        """The next chunk of world `w`: history frames clean, then chunk_size new frames."""
        tf, n = self.codec.temporal_factor, w.chunk_size
        k = self._history_latents(w)
        clip_frames = (k - 1) * tf + 1
        if w.start_clip is not None:  # the first chunk conditions on the raw start frames, as the reference
            clip, canvas = to_canvas(w.start_clip[:, -clip_frames:], w.canvas), w.canvas
        else:
            clip, canvas = to_canvas(torch.stack(w.frames[-clip_frames:], dim=1), w.canvas), w.canvas
        past = w.past_actions[-(k - 1) * tf :] if k > 1 else []
        d = self.generator.config.action_dim
        fresh = new_actions if new_actions is not None else torch.zeros(n, d)
        actions = torch.cat([torch.stack(past) if past else torch.zeros(0, d), fresh.to(torch.float32)])
        noisy = () if new_actions is not None else tuple(range(len(past), len(past) + n))
        positions = None
        if self.action_target_positions and w.embodiment.image_position:
            positions = action_token_positions(actions, noisy, self._token_grid(canvas))
        return ChunkJob(
            clip=clip, canvas=canvas, latent_frames=k + n // tf, vision_clean=k, actions=actions, action_noisy=noisy,
            embodiment=w.embodiment, prompt_ids=self._prompt_ids(w, clip_frames + n, canvas),
            negative_ids=self._negative_ids(clip_frames + n), fps=w.fps, rng=w.rng, action_positions=positions,
        )  # fmt: skip

    def _run(self, jobs: list[ChunkJob], decode: bool = True) -> list[tuple[ChunkOutput, torch.Tensor | None]]:
        """Denoise one chunk of every job together; per job its outputs and decoded pixels [3, T, h, w].

        On any error the worlds' noise streams are rewound, so a failed chunk changes nothing."""
        states = [j.rng.get_state() for j in jobs]
        try:
            batch = ChunkBatch(self.generator, self.prefix_cache, self.codec, jobs, self.sampler.config.guidance_scale)
            flat = self.sampler.sample(batch.initial_state(), batch.velocity, after_step=batch.project,
                                       progress=self.progress)  # fmt: skip
            outputs = batch.unpack(flat)
            # One world at a time: a clip's decode already fills the device, and batching measured slower on CPU.
            pixels = [self._decode(o.latents, j.canvas) if decode else None for o, j in zip(outputs, jobs)]
        except BaseException:
            for j, s in zip(jobs, states):
                j.rng.set_state(s)
            raise
        return list(zip(outputs, pixels))

    def _decode(self, latents: torch.Tensor, canvas: Canvas) -> torch.Tensor:
        """Latents [C, T, h, w] -> frames [3, T', h*s, w*s] float32 in [-1, 1], at the content size."""
        frames = self.codec.decode(latents[None].to(self.codec.device))[0].float().cpu()
        return content_frames(frames, canvas)

    def _advance(self, w: World, out: ChunkOutput, actions: torch.Tensor, pixels: torch.Tensor) -> ChunkResult:
        """Append the chunk's new frames and actions to `w`; later chunks condition on the content-size frames."""
        new = pixels[:, -w.chunk_size :]  # [3, N, h, w]
        if w.start_clip is not None:
            w.start_clip = None
            h, wd = new.shape[2:]
            if tuple(w.frames[-1].shape[1:]) != (h, wd):  # start frames cut to what the model returns
                w.frames = [f[:, :h, :wd] for f in w.frames]
            w.canvas = make_canvas(h, wd, w.tier, self.codec.spatial_factor)
        w.frames.extend(new.unbind(1))
        w.past_actions.extend(actions.to(torch.float32).unbind(0))
        w.num_chunks += 1
        self._trim(w)
        return ChunkResult(frames=to_uint8(new), latents=out.latents, actions=None)

    def _trim(self, w: World) -> None:
        tf = self.codec.temporal_factor
        keep_frames = (w.history - 1) * tf + 1
        del w.frames[: max(0, len(w.frames) - keep_frames)]
        del w.past_actions[: max(0, len(w.past_actions) - (w.history - 1) * tf)]
        if w.start_clip is not None and w.start_clip.shape[1] > keep_frames:
            w.start_clip = w.start_clip[:, -keep_frames:]

    def _history_latents(self, w: World) -> int:
        """Latent frames of context for the next chunk: up to `history`, as many as frames and known
        actions allow (after a reset from one image there is one: the start frame)."""
        tf = self.codec.temporal_factor
        by_frames = (len(w.frames) - 1) // tf + 1
        by_actions = len(w.past_actions) // tf + 1
        return max(1, min(w.history, by_frames, by_actions))

    def _clip_frames(self, w: World) -> int:
        return (self._history_latents(w) - 1) * self.codec.temporal_factor + 1

    # ------------------------------------------------------------------ prompts and checks
    def _prompt_ids(self, w: World, num_frames: int, canvas: Canvas | None = None) -> list[int]:
        canvas = canvas or w.canvas
        ids = self.prompts.action_prompt_ids(w.instruction, view_point=w.view_point, num_frames=num_frames,
                                             fps=w.fps, height=canvas.height, width=canvas.width)  # fmt: skip
        return list(check_length(ids, self.max_prompt_tokens, name="instruction prompt"))

    def _negative_ids(self, num_frames: int) -> list[int]:
        ids = self.prompts.negative_prompt_ids(self.negative_prompt, image=num_frames == 1)
        return list(check_length(ids, self.max_prompt_tokens, name="negative prompt"))

    def _embodiment(self, embodiment: str | Embodiment) -> Embodiment:
        if not isinstance(embodiment, (str, Embodiment)):
            raise ValueError(f"embodiment must be a name or an Embodiment, got {type(embodiment).__name__}")
        emb = embodiment if isinstance(embodiment, Embodiment) else self.embodiments.get(embodiment)
        cfg = self.generator.config
        if cfg.action_gen and emb.action_dim > cfg.action_dim:
            raise ValueError(f"embodiment {emb.name!r} has {emb.action_dim} action dims, more than the model's "
                             f"action_dim={cfg.action_dim}")  # fmt: skip
        if emb.domain_id >= cfg.num_embodiment_domains:
            raise ValueError(f"embodiment {emb.name!r} has domain_id {emb.domain_id}, but the model has "
                             f"{cfg.num_embodiment_domains} domains")  # fmt: skip
        return emb

    def _check_chunk_size(self, n: Any, name: str = "chunk_size") -> None:
        tf = self.codec.temporal_factor
        if not _is_int(n) or n < 1 or n % tf:
            raise ValueError(
                f"{name} must be a positive multiple of the codec's temporal factor {tf} (a chunk of N actions "
                f"spans N + 1 frames = 1 + {tf} x latent frames), got {n!r}"
            )

    def _check_world(self, w: Any, name: str) -> None:
        if not isinstance(w, World) or w.model is not self:
            raise ValueError(f"{name} must be a World created by this WorldModel's reset(), got {type(w).__name__}")

    def _check_worlds(self, worlds: Sequence[World]) -> list[World]:
        if isinstance(worlds, World) or not isinstance(worlds, Sequence) or not worlds:
            raise ValueError("worlds must be a non-empty list of World objects (use world.step for one world)")
        for i, w in enumerate(worlds):
            self._check_world(w, f"worlds[{i}]")
        if len({id(w) for w in worlds}) != len(worlds):
            raise ValueError("worlds holds the same World more than once: each world advances one chunk per call")
        return list(worlds)

    def _require_action_head(self) -> None:
        if not self.generator.config.action_gen:
            raise ValueError("this checkpoint has no action head (action_gen=false): it cannot take or predict actions")


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_seed(seed: Any) -> int:
    """A seed for the world's noise: an int in [0, 2**63), or None for a fresh random one."""
    if seed is None:
        return int(np.random.SeedSequence().entropy % (2**63))
    if not _is_int(seed) or not 0 <= seed < 2**63:
        raise ValueError(f"seed must be an int in [0, 2**63) or None, got {seed!r}")
    return int(seed)


def _check_defaults(defaults: dict[str, Any]) -> dict[str, Any]:
    """The bundle's defaults (model_index.json `_cosmos3_world`), keys checked; values are checked where used."""
    unknown = sorted(set(defaults) - set(_DEFAULT_KEYS))
    if unknown:
        raise ValueError(f"{BUNDLE_DEFAULTS_KEY} holds unknown keys {unknown}; expected some of {list(_DEFAULT_KEYS)}")
    return dict(defaults)
