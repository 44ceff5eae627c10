"""One chunk of many worlds, denoised together: the engine's hot path.

A `ChunkJob` is one sequence to generate (clean conditioning, what is noisy, its prompts). A
`ChunkBatch` packs the jobs of one chunk: it encodes their conditioning clips, draws their noise in
the reference pipeline's order, plans the batch once, and hands the sampler one flat state and one
velocity function, with classifier-free guidance applied there and nowhere else. After sampling it
unpacks each job's latents and actions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..codecs import Codec
from ..model import Cosmos3Generator, GenerationSpec, PrefixCache
from .canvas import Canvas, crop_latents
from .embodiments import Embodiment
from .sampler import flatten, unflatten


@dataclass
class ChunkJob:
    """One sequence to denoise: its clean conditioning and what is generated."""

    clip: torch.Tensor  # [3, Tc, Hc, Wc] conditioning pixels on the canvas, in [-1, 1]
    canvas: Canvas  # where the content sits in the clip; latents are cropped to it
    latent_frames: int  # total latent frames of the chunk
    vision_clean: int  # leading latent frames that are conditioning
    actions: torch.Tensor  # [A, action_dim] clean action values (zeros where noisy)
    action_noisy: tuple[int, ...]  # action tokens being generated
    embodiment: Embodiment
    prompt_ids: list[int]
    negative_ids: list[int]
    fps: float
    rng: torch.Generator  # the world's noise stream
    action_positions: tuple[tuple[float, float], ...] | None = None  # GenerationSpec.action_positions


@dataclass
class ChunkOutput:
    """What denoising made of one job: latents of the whole clip and the action values."""

    latents: torch.Tensor  # [C, T, h, w] float32, conditioning frames first
    actions: torch.Tensor  # [A, action_dim] float32 (model space)


def guided(cond: torch.Tensor, uncond: torch.Tensor | None, scale: float) -> torch.Tensor:
    """Classifier-free guidance: uncond + scale * (cond - uncond), in float32 (cond alone without uncond)."""
    if uncond is None:
        return cond.float()
    return uncond.float() + scale * (cond.float() - uncond.float())


class ChunkBatch:
    """The jobs of one chunk packed for the sampler: flat state in, guided velocity out.

    State layout: every job's vision latents [C, T, h, w], then the actions [A, action_dim] of the
    jobs whose actions are generated (the others' actions are fixed inputs). `mask` is 1 where the
    state may change: all vision entries (clean frames are restored by the model's zero velocity
    there), and only the embodiment's raw action columns.
    """

    def __init__(
        self,
        generator: Cosmos3Generator,
        prefix_cache: PrefixCache,
        codec: Codec,
        jobs: list[ChunkJob],
        guidance_scale: float,
    ) -> None:
        self.generator, self.jobs, self.guidance_scale = generator, jobs, guidance_scale
        self.use_cfg = guidance_scale != 1.0
        clean = _encode(codec, jobs)  # per job [C, t, h, w]
        vision, actions, keep = [], [], []
        for job, x0 in zip(jobs, clean):
            c, _, h, w = x0.shape
            # Same draws, in the same order, as the reference pipeline: vision noise, then action noise.
            v = torch.randn((1, c, job.latent_frames, h, w), generator=job.rng)[0]
            v[:, : job.vision_clean] = x0
            vision.append(v)
            a_noise = torch.randn(job.actions.shape, generator=job.rng)
            noisy = torch.zeros(len(job.actions), dtype=torch.bool)
            noisy[list(job.action_noisy)] = True
            a = torch.where(noisy[:, None], a_noise, job.actions)
            a[noisy, job.embodiment.action_dim :] = 0  # sampled rows: the raw columns only (clean rows keep
            actions.append(a)  # their features: embodiments.action_features)
            k = torch.ones_like(a)
            k[noisy, job.embodiment.action_dim :] = 0
            keep.append(k)
        self.generated = [i for i, job in enumerate(jobs) if job.action_noisy]  # jobs whose actions are sampled
        self._fixed_actions = [a.to(generator.dtype) for a in actions]  # model inputs of the other jobs
        self._actions = actions
        self._like = vision + [actions[i] for i in self.generated]
        self.mask = flatten([torch.ones_like(v) for v in vision] + [keep[i] for i in self.generated])
        prompts = [job.prompt_ids for job in jobs] + ([job.negative_ids for job in jobs] if self.use_cfg else [])
        prefixes = prefix_cache.get_many(prompts)
        tcf = codec.temporal_factor
        specs = [_spec(jobs[i % len(jobs)], vision[i % len(jobs)], p, tcf) for i, p in enumerate(prefixes)]
        self.plan = generator.plan(specs)  # cond rows first, then uncond rows

    def initial_state(self) -> torch.Tensor:
        """The flat float32 state the sampler starts from: noise with the clean conditioning in place."""
        return flatten(self._like)

    def velocity(self, flat: torch.Tensor, t: float) -> torch.Tensor:
        """The guided velocity of the whole state at timestep t, from one batched forward (cond + uncond)."""
        b, dtype = len(self.jobs), self.generator.dtype
        parts = unflatten(flat, self._like)
        vision = [p.to(dtype) for p in parts[:b]]
        action = list(self._fixed_actions)
        for slot, i in enumerate(self.generated):
            action[i] = parts[b + slot].to(dtype)
        reps = 2 if self.use_cfg else 1
        out = self.generator.denoise_step(self.plan, vision * reps, t, action=action * reps)

        def half(r: int) -> torch.Tensor:  # rows of the cond (r = 0) or uncond (r = 1) sequences, flat
            return flatten(out.sample[r * b : (r + 1) * b] + [out.action[r * b + i] for i in self.generated])

        return guided(half(0), half(1) if self.use_cfg else None, self.guidance_scale)

    def project(self, flat: torch.Tensor) -> None:
        """Zero, in place, the entries the state may not hold (padded action columns)."""
        flat.mul_(self.mask)

    def unpack(self, flat: torch.Tensor) -> list[ChunkOutput]:
        """Per job: its latents and its action values (sampled, or the fixed ones)."""
        b = len(self.jobs)
        parts = unflatten(flat, self._like)
        actions = list(self._actions)
        for slot, i in enumerate(self.generated):
            actions[i] = parts[b + slot].clone()
        return [ChunkOutput(latents=parts[i].clone(), actions=actions[i]) for i in range(b)]


def _spec(job: ChunkJob, vision: torch.Tensor, prefix, temporal_compression: int) -> GenerationSpec:
    return GenerationSpec(
        prefix=prefix,
        temporal_compression=temporal_compression,
        vision_shape=tuple(vision.shape[1:]),
        fps=job.fps,
        vision_noisy=tuple(range(job.vision_clean, job.latent_frames)),
        action_len=len(job.actions),
        action_noisy=job.action_noisy,
        domain_id=job.embodiment.domain_id,
        action_positions=job.action_positions,
    )


def _encode(codec: Codec, jobs: list[ChunkJob]) -> list[torch.Tensor]:
    """Encode the jobs' canvas clips (batching clips of equal shape) and crop to the content -> [C, t, h, w]."""
    groups: dict[tuple, list[int]] = {}
    for i, job in enumerate(jobs):
        groups.setdefault(tuple(job.clip.shape), []).append(i)
    out: list[torch.Tensor | None] = [None] * len(jobs)
    for idx in groups.values():
        lat = codec.encode(torch.stack([jobs[i].clip for i in idx]).to(codec.device))
        for i, z in zip(idx, lat.float().cpu()):
            out[i] = crop_latents(z, jobs[i].canvas)
    return out
