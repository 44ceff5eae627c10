"""The world engine: autoregressive, action-conditioned rollouts of the Cosmos3 generator.

A `World` is one simulated episode: instruction, embodiment, recent frames and its own random
stream. `WorldModel` owns the generator, codec, tokenizer and sampler and advances any number of
worlds in lockstep, one chunk at a time, with one batched forward per denoising step (cond and
uncond of every world together). Geometry of a chunk of N actions (codec temporal factor tf):
N + 1 pixel frames, N / tf + 1 latent frames; the first latent frame is the last frame of the
previous chunk re-encoded as an image, as the causal VAE requires.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..codecs import Codec, load_codec
from ..model import Cosmos3Generator, GenerationSpec, PrefixCache, parse_dtype
from ..model.checkpoint import resolve_directory
from .embodiments import DEFAULT_EMBODIMENTS, Embodiment, EmbodimentRegistry, prepare_actions, unnormalize_actions
from .pixels import to_pixels, to_uint8
from .prompts import PromptEncoder, check_length, load_tokenizer
from .sampler import FlowSampler, SamplerConfig, flatten, unflatten

_BUNDLE_FOLDERS = ("model_index.json", "transformer/*", "vae/*", "text_tokenizer/*", "scheduler/*")


@dataclass
class ChunkResult:
    """What one chunk produced for one world."""

    frames: np.ndarray  # [N, H, W, 3] uint8: the chunk's new frames (none for inverse dynamics)
    latents: torch.Tensor  # [C, T, h, w] float32: denoised latents of the whole clip, conditioning first
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
    height: int
    width: int
    rng: torch.Generator = field(repr=False)  # this world's noise stream, seeded by reset
    frames: list[torch.Tensor] = field(default_factory=list, repr=False)  # recent [3, H, W] in [-1, 1]
    past_actions: list[torch.Tensor] = field(default_factory=list, repr=False)  # recent [action_dim] model-space
    num_chunks: int = 0

    def step(self, actions: Any) -> ChunkResult:
        """Forward dynamics: the frames that follow `actions` [chunk_size, raw_dim]."""
        return self.model.step([self], [actions])[0]

    def predict(self) -> ChunkResult:
        """Policy mode: the next chunk's frames and actions, imagined jointly."""
        return self.model.predict([self])[0]

    @property
    def last_frame(self) -> np.ndarray:
        """The newest frame, [H, W, 3] uint8."""
        return to_uint8(self.frames[-1][:, None])[0]


@dataclass
class _Job:
    """One sequence to denoise: its clean conditioning and what is generated."""

    clip: torch.Tensor  # [3, Tc, H, W] conditioning pixels in [-1, 1]
    latent_frames: int  # total latent frames of the chunk
    vision_clean: int  # leading latent frames that are conditioning
    actions: torch.Tensor | None  # [A, action_dim] clean action values (zeros where noisy)
    action_noisy: tuple[int, ...]
    embodiment: Embodiment
    prompt_ids: list[int]
    negative_ids: list[int]
    fps: float
    rng: torch.Generator


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
        progress: bool = False,
        compile: bool = False,
    ):
        if codec.latent_channels != generator.config.latent_channel:
            raise ValueError(
                f"codec makes {codec.latent_channels}-channel latents but the generator expects "
                f"latent_channel={generator.config.latent_channel}"
            )
        self.generator = generator.eval()
        if compile:  # ~20 s on the first chunk, then faster steps (see Cosmos3Generator.compile_generation)
            generator.compile_generation()
        self.codec = codec
        self.prefix_cache = PrefixCache(generator)  # the Reasoner K/V of every prompt, encoded once
        self.prompts = PromptEncoder(tokenizer)
        self.sampler = sampler or FlowSampler()
        self.embodiments = embodiments
        self.negative_prompt = negative_prompt
        # Text positions must stay below the generation tokens' (which start at prompt length + margin).
        self.max_prompt_tokens = max_prompt_tokens or generator.config.unified_3d_mrope_temporal_modality_margin
        self.progress = progress

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
        codec's (default: torch_dtype when it names a dtype, else float32). On CPUs with AMX and on
        GPUs, bfloat16 runs the VAE's 3-D convolutions many times faster than float32.
        """
        hub = dict(revision=revision, cache_dir=cache_dir, local_files_only=local_files_only, token=token)
        root = _resolve_bundle(path_or_repo, **hub)
        generator = Cosmos3Generator.from_pretrained(
            root, subfolder="transformer", torch_dtype=torch_dtype, device=device
        )
        codec_dtype = parse_dtype(
            codec_dtype if codec_dtype is not None else torch_dtype if torch_dtype != "auto" else None, "codec_dtype"
        )
        codec = load_codec(root, subfolder="vae", device=device, torch_dtype=codec_dtype or torch.float32)
        tokenizer = load_tokenizer(str(root), subfolder="text_tokenizer")
        sched_file = root / "scheduler" / "scheduler_config.json"
        sched_cfg = json.loads(sched_file.read_text()) if sched_file.is_file() else None
        return cls(generator, codec, tokenizer, FlowSampler(sched_cfg, sampler), **kwargs)

    @property
    def device(self) -> torch.device:
        return self.generator.device

    # ------------------------------------------------------------------ worlds
    def reset(
        self,
        image: Any = None,
        instruction: str = "",
        embodiment: str | Embodiment = "bridge_orig_lerobot",
        seed: int | None = None,
        *,
        video: Any = None,
        chunk_size: int | None = None,
        history: int = 1,
        fps: float | None = None,
        view_point: str | None = None,
        world: World | None = None,
    ) -> World:
        """Start a world from an image [H, W, 3] (or the last frames of a video [T, H, W, 3]).

        Pass `world` to restart an existing world in place (its batch mates go on untouched).
        """
        if (image is None) == (video is None):
            raise ValueError("pass exactly one of image (one frame) or video (several frames)")
        pixels = to_pixels(video if image is None else image, "video" if image is None else "image",
                           self.codec.spatial_factor)  # fmt: skip
        if image is not None and pixels.shape[1] != 1:
            raise ValueError(f"image must be one frame [H, W, 3], got {pixels.shape[1]} frames; use video=")
        if not isinstance(instruction, str):
            raise ValueError(f"instruction must be a str, got {type(instruction).__name__}")
        emb = self._embodiment(embodiment)
        tf = self.codec.temporal_factor
        chunk_size = 3 * tf if chunk_size is None else chunk_size
        self._check_chunk_size(chunk_size)
        if not isinstance(history, int) or history < 1:
            raise ValueError(f"history must be a positive number of latent frames, got {history!r}")
        fps = float(emb.control_hz if fps is None else fps)
        if not np.isfinite(fps) or fps <= 0:
            raise ValueError(f"fps must be a positive number, got {fps}")
        seed = int(np.random.SeedSequence().entropy % (2**63)) if seed is None else int(seed)
        state = dict(
            instruction=instruction, embodiment=emb, seed=seed, chunk_size=chunk_size, history=history, fps=fps,
            view_point=view_point or emb.view_point, height=pixels.shape[2], width=pixels.shape[3],
            rng=torch.Generator().manual_seed(seed), frames=list(pixels.unbind(1)), past_actions=[], num_chunks=0,
        )  # fmt: skip
        if world is None:
            world = World(model=self, **state)
        else:
            if world.model is not self:
                raise ValueError("world belongs to another WorldModel")
            world.__dict__.update(state)
        self._trim(world)
        self._prompt_ids(world, self._clip_frames(world, chunk_size))  # validate the prompt length now
        return world

    def step(self, worlds: Sequence[World], actions: Sequence[Any]) -> list[ChunkResult]:
        """Forward dynamics for several worlds in lockstep: each gets its actions [N, raw_dim]."""
        worlds = list(worlds)
        if len(actions) != len(worlds):
            raise ValueError(f"actions must hold one array per world ({len(worlds)}), got {len(actions)}")
        self._require_action_head()
        jobs, new_actions = [], []
        for i, (w, a) in enumerate(zip(worlds, actions)):
            self._check_world(w)
            try:
                prepared = prepare_actions(a, w.embodiment, self.generator.config.action_dim, chunk_size=w.chunk_size)
            except ValueError as e:
                raise ValueError(f"actions[{i}]: {e}") from None
            new_actions.append(prepared)
            jobs.append(self._world_job(w, prepared))
        results = self._denoise(jobs)
        for w, res, act in zip(worlds, results, new_actions):
            self._advance(w, res, act)
        return [r.public() for r in results]

    def predict(self, worlds: Sequence[World]) -> list[ChunkResult]:
        """Policy mode for several worlds: imagine the next chunk's frames and actions together."""
        worlds = list(worlds)
        self._require_action_head()
        for w in worlds:
            self._check_world(w)
        jobs = [self._world_job(w, None) for w in worlds]
        results = self._denoise(jobs)
        for w, res in zip(worlds, results):
            n = w.chunk_size
            new = res.actions_model[-n:]
            res.actions = unnormalize_actions(new[:, : w.embodiment.action_dim], w.embodiment)
            self._advance(w, res, new)
        return [r.public() for r in results]

    def infer_actions(
        self,
        video: Any,
        instruction: str = "",
        embodiment: str | Embodiment = "bridge_orig_lerobot",
        seed: int | None = None,
        *,
        fps: float | None = None,
        view_point: str | None = None,
    ) -> np.ndarray:
        """Inverse dynamics: the actions [T - 1, raw_dim] that connect the frames of `video` [T, H, W, 3]."""
        self._require_action_head()
        pixels = to_pixels(video, "video", self.codec.spatial_factor)
        emb = self._embodiment(embodiment)
        n = pixels.shape[1] - 1
        if n < 1:
            raise ValueError("video must hold at least 2 frames to infer the actions between them")
        self._check_chunk_size(n, name="video frames - 1")
        fps = float(emb.control_hz if fps is None else fps)
        seed = int(np.random.SeedSequence().entropy % (2**63)) if seed is None else int(seed)
        h, w = pixels.shape[2:]
        prompt = self.prompts.action_prompt_ids(instruction, view_point=view_point or emb.view_point,
                                                num_frames=n + 1, fps=fps, height=h, width=w)  # fmt: skip
        job = _Job(
            clip=pixels, latent_frames=self.codec.latent_frames(n + 1), vision_clean=self.codec.latent_frames(n + 1),
            actions=torch.zeros(n, self.generator.config.action_dim), action_noisy=tuple(range(n)), embodiment=emb,
            prompt_ids=check_length(prompt, self.max_prompt_tokens, name="instruction prompt"),
            negative_ids=self._negative_ids(n + 1), fps=fps, rng=torch.Generator().manual_seed(seed),
        )  # fmt: skip
        res = self._denoise([job], decode=False)[0]
        return unnormalize_actions(res.actions_model[:, : emb.action_dim], emb)

    # ------------------------------------------------------------------ chunk machinery
    def _world_job(self, w: World, new_actions: torch.Tensor | None) -> _Job:
        """The next chunk of world `w`: history frames clean, then chunk_size new frames."""
        tf, n = self.codec.temporal_factor, w.chunk_size
        k = self._history_latents(w)
        clip_frames = (k - 1) * tf + 1
        clip = torch.stack(w.frames[-clip_frames:], dim=1)  # [3, Tc, H, W]
        past = w.past_actions[-(k - 1) * tf :] if k > 1 else []
        d = self.generator.config.action_dim
        fresh = new_actions if new_actions is not None else torch.zeros(n, d)
        actions = torch.cat([torch.stack(past) if past else torch.zeros(0, d), fresh.to(torch.float32)])
        noisy = () if new_actions is not None else tuple(range(len(past), len(past) + n))
        return _Job(
            clip=clip, latent_frames=k + n // tf, vision_clean=k, actions=actions, action_noisy=noisy,
            embodiment=w.embodiment, prompt_ids=self._prompt_ids(w, clip_frames + n),
            negative_ids=self._negative_ids(clip_frames + n), fps=w.fps, rng=w.rng,
        )  # fmt: skip

    def _denoise(self, jobs: list[_Job], decode: bool = True) -> list["_RawResult"]:
        """Denoise one chunk of every job together; returns per-job latents, decoded frames, actions."""
        gen = self.generator
        states = [j.rng.get_state() for j in jobs]
        try:
            x0 = self._encode([j.clip for j in jobs])
            vision, actions, keep = [], [], []
            for j, clean in zip(jobs, x0):
                c, _, h, w = clean.shape
                # Same draws, in the same order, as the reference pipeline: vision noise, then action noise.
                noise = torch.randn((1, c, j.latent_frames, h, w), generator=j.rng)[0]
                noise[:, : j.vision_clean] = clean
                vision.append(noise)
                a_noise = torch.randn(j.actions.shape, generator=j.rng)
                noisy = torch.zeros(len(j.actions), dtype=torch.bool)
                noisy[list(j.action_noisy)] = True
                a = torch.where(noisy[:, None], a_noise, j.actions)
                a[:, j.embodiment.action_dim :] = 0
                actions.append(a)
                raw = torch.zeros(a.shape[1])
                raw[: j.embodiment.action_dim] = 1
                keep.append(raw.expand_as(a))
            specs = self._specs(jobs, [v.shape for v in vision])
            plan = gen.plan(specs)
            stepped = [j for j, _ in enumerate(jobs) if jobs[j].action_noisy]
            state = vision + [actions[j] for j in stepped]
            mask = flatten([torch.ones_like(v) for v in vision] + [keep[j] for j in stepped])
            b, cfg_on = len(jobs), self.sampler.config.uses_cfg

            clean_actions = [a.to(gen.dtype) for a in actions]  # model inputs of jobs whose actions are fixed

            def velocity(flat: torch.Tensor, t: float):
                parts = unflatten(flat, state)
                vis = [p.to(gen.dtype) for p in parts[:b]]
                act = list(clean_actions)
                for slot, j in enumerate(stepped):
                    act[j] = parts[b + slot].to(gen.dtype)
                reps = 2 if cfg_on else 1
                out = gen.denoise_step(plan, vis * reps, t, action=act * reps)
                pick = lambda r: (
                    flatten(out.sample[r * b : (r + 1) * b] + [out.action[r * b + j] for j in stepped]) * mask
                )  # noqa: E731
                return pick(0), pick(1) if cfg_on else None

            flat = self.sampler.sample(flatten(state), velocity, after_step=lambda x: x.mul_(mask),
                                       progress=self.progress)  # fmt: skip
            parts = unflatten(flat, state)
            for slot, j in enumerate(stepped):
                actions[j] = parts[b + slot]
            latents = [p.clone() for p in parts[:b]]
            frames = self._decode(latents) if decode else [None] * b
        except BaseException:
            for j, s in zip(jobs, states):
                j.rng.set_state(s)
            raise
        return [_RawResult(latents=z, pixels=f, actions_model=a) for z, f, a in zip(latents, frames, actions)]

    def _specs(self, jobs: list[_Job], shapes: list[torch.Size]) -> list[GenerationSpec]:
        cache = self.prefix_cache

        def spec(j: _Job, shape, ids) -> GenerationSpec:  # noqa: E306
            return GenerationSpec(
                prefix=cache.get(ids), vision_shape=tuple(shape[1:]), fps=j.fps,
                vision_noisy=tuple(range(j.vision_clean, j.latent_frames)),
                action_len=len(j.actions), action_noisy=j.action_noisy, domain_id=j.embodiment.domain_id,
            )  # fmt: skip

        specs = [spec(j, s, j.prompt_ids) for j, s in zip(jobs, shapes)]
        if self.sampler.config.uses_cfg:
            specs += [spec(j, s, j.negative_ids) for j, s in zip(jobs, shapes)]
        return specs

    def _encode(self, clips: list[torch.Tensor]) -> list[torch.Tensor]:
        """Encode conditioning clips, batching clips of equal shape: -> [C, t, h, w] each."""
        out: list[torch.Tensor | None] = [None] * len(clips)
        for shape, idx in _group_by_shape(clips).items():
            lat = self.codec.encode(torch.stack([clips[i] for i in idx]).to(self.codec.device))
            for i, z in zip(idx, lat.float().cpu()):
                out[i] = z
        return out

    def _decode(self, latents: list[torch.Tensor]) -> list[torch.Tensor]:
        """Decode each world's latents -> [3, T, H, W] float32 in [-1, 1]. One world at a time: a
        clip's decode already fills the device, and batching it measured slower on CPU."""
        return [self.codec.decode(z[None].to(self.codec.device))[0].float().cpu() for z in latents]

    def _advance(self, w: World, res: "_RawResult", actions: torch.Tensor) -> None:
        n = w.chunk_size
        new = res.pixels[:, -n:]  # [3, N, H, W]
        res.frames = to_uint8(new)
        w.frames.extend(new.unbind(1))
        w.past_actions.extend(actions.to(torch.float32).unbind(0))
        w.num_chunks += 1
        self._trim(w)

    def _trim(self, w: World) -> None:
        tf = self.codec.temporal_factor
        del w.frames[: max(0, len(w.frames) - ((w.history - 1) * tf + 1))]
        del w.past_actions[: max(0, len(w.past_actions) - (w.history - 1) * tf)]

    def _history_latents(self, w: World) -> int:
        """Latent frames of context for the next chunk: up to `history`, as many as frames and known
        actions allow (after a reset there is one: the start frame)."""
        tf = self.codec.temporal_factor
        by_frames = (len(w.frames) - 1) // tf + 1
        by_actions = len(w.past_actions) // tf + 1
        return max(1, min(w.history, by_frames, by_actions))

    def _clip_frames(self, w: World, n: int) -> int:
        return (self._history_latents(w) - 1) * self.codec.temporal_factor + 1 + n

    # ------------------------------------------------------------------ prompts and checks
    def _prompt_ids(self, w: World, num_frames: int) -> list[int]:
        ids = self.prompts.action_prompt_ids(w.instruction, view_point=w.view_point, num_frames=num_frames,
                                             fps=w.fps, height=w.height, width=w.width)  # fmt: skip
        return list(check_length(ids, self.max_prompt_tokens, name="instruction prompt"))

    def _negative_ids(self, num_frames: int) -> list[int]:
        ids = self.prompts.negative_prompt_ids(self.negative_prompt, image=num_frames == 1)
        return list(check_length(ids, self.max_prompt_tokens, name="negative prompt"))

    def _embodiment(self, embodiment: str | Embodiment) -> Embodiment:
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
        if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1 or n % tf:
            raise ValueError(
                f"{name} must be a positive multiple of the codec's temporal factor {tf} (a chunk of N actions "
                f"spans N + 1 frames = 1 + {tf} x latent frames), got {n!r}"
            )

    def _check_world(self, w: World) -> None:
        if not isinstance(w, World) or w.model is not self:
            raise ValueError("worlds must be World objects created by this WorldModel's reset()")

    def _require_action_head(self) -> None:
        if not self.generator.config.action_gen:
            raise ValueError("this checkpoint has no action head (action_gen=false): it cannot take or predict actions")


@dataclass
class _RawResult:
    latents: torch.Tensor
    pixels: torch.Tensor | None
    actions_model: torch.Tensor
    frames: np.ndarray | None = None
    actions: np.ndarray | None = None

    def public(self) -> ChunkResult:
        return ChunkResult(frames=self.frames, latents=self.latents, actions=self.actions)


def _group_by_shape(tensors: list[torch.Tensor]) -> dict[tuple, list[int]]:
    groups: dict[tuple, list[int]] = {}
    for i, t in enumerate(tensors):
        groups.setdefault(tuple(t.shape), []).append(i)
    return groups


def _resolve_bundle(path_or_repo: str | os.PathLike, **hub: Any) -> Path:
    return resolve_directory(path_or_repo, None, allow_patterns=list(_BUNDLE_FOLDERS), **hub)
