"""Flow-matching training of the Cosmos3 generator on push-simulator episodes (forward, policy, inverse modes).

Every example is a window laid out as the engine lays out a chunk (see `data.py`), noised with the sampler's
convention x_t = (1 - sigma) x0 + sigma noise at timestep sigma * 1000, and the loss is the MSE between the
generator's velocity and noise - x0 at the noisy positions. The forward is the generator's own `training_forward`
(the inference computation with autograd), so the trained weights run unchanged through `WorldModel`.

A run directory holds `base/` (the bundle the run starts from: codec, tokenizer, scheduler, initial weights),
`checkpoint/` (model/ and ema/ in the published transformer layout, plus trainer_state.pt with the optimizer and
step), `bundle/` (the latest EMA export, a complete bundle), `log.jsonl` and `loss.png`. Batches and noise are
drawn from generators seeded by (seed, step), so a resumed run continues exactly as an uninterrupted one.
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..codecs import load_codec
from ..engine.embodiments import (
    action_token_positions,
    featurize_actions,
    fourier_width,
    get_embodiment,
    prepare_actions,
)
from ..engine.prompts import PromptEncoder, load_tokenizer
from ..engine.sampler import FlowSampler, SamplerConfig, flatten, unflatten
from ..kernels import native_bf16
from ..model import Cosmos3Generator, GenerationSpec
from .config import (
    DEFAULT_SAMPLER,
    DEFAULTS_KEY,
    EMBEDDED_MODEL_CONFIG,
    EMBODIMENT,
    TrainConfig,
    add_train_arguments,
    config_from_args,
)
from .data import FORWARD, INVERSE, MODES, EpisodeStore, Window, WindowSampler

# A latent (= pixel in [-1, 1], space-to-depth codec) counts as moved when it changes by more than this (~13 levels).
MOTION_THRESHOLD = 0.1


def _shifted_sigmas(u: torch.Tensor, shift: float) -> torch.Tensor:
    return shift * u / (1 + (shift - 1) * u)


def write_base_bundle(
    directory: str | Path, model_config: dict[str, Any], seed: int = 0, qk_norm_init: float = 1.0
) -> Path:
    """A bundle in the published layout with freshly initialised weights of `model_config` (the run's start);
    the generation pathway's query/key RMSNorm weights start at `qk_norm_init` (see TrainConfig.qk_norm_init)."""
    from ..testing.tiny import build_tiny_bundle

    if not (isinstance(qk_norm_init, (int, float)) and math.isfinite(qk_norm_init) and qk_norm_init > 0):
        raise ValueError(f"qk_norm_init must be a positive finite number, got {qk_norm_init!r}")
    root = build_tiny_bundle(directory, codec="space_to_depth", seed=seed, **model_config)
    # The per-domain action tables are embeddings (N(0, 1) init): scale them like linear layers instead.
    model = Cosmos3Generator.from_pretrained(root, subfolder="transformer")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for proj, std in ((model.action_proj_in, model.config.action_dim**-0.5), (model.action_proj_out, 0.02)):
            proj.fc.weight.copy_(torch.randn(proj.fc.weight.shape, generator=g) * std)
            proj.bias.weight.zero_()
        for layer in model.layers:
            layer.self_attn.norm_added_q.weight.fill_(qk_norm_init)
            layer.self_attn.norm_added_k.weight.fill_(qk_norm_init)
    model.save_pretrained(root / "transformer")
    return root


class Trainer:
    """Model, EMA, optimizer and the loss over the three modes. Create, then `train_step` / `save` / `export`."""

    def __init__(self, config: TrainConfig):
        self.config = cfg = config
        torch.set_num_threads(cfg.threads)
        self.run_dir = Path(cfg.run_dir)
        base = self.run_dir / "base"
        if not (base / "model_index.json").is_file():
            if cfg.init_from:
                self.config = cfg = config_from_bundle(cfg)
                shutil.copytree(cfg.init_from, base, dirs_exist_ok=True)
            else:
                write_base_bundle(base, cfg.model, seed=cfg.seed, qk_norm_init=cfg.qk_norm_init)
        self.base = base
        self.model = (
            Cosmos3Generator.from_pretrained(base, subfolder="transformer").float().train().requires_grad_(True)
        )
        self.ema = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.codec = load_codec(base, subfolder="vae")
        self.prompts = PromptEncoder(load_tokenizer(str(base), subfolder="text_tokenizer"))
        self.embodiment = get_embodiment(EMBODIMENT)
        if not cfg.train_understanding:
            for p in self.model.understanding_parameters():
                p.requires_grad_(False)
        self.optimizer = torch.optim.AdamW([{"params": g} for g in self._param_groups()], lr=cfg.lr,
                                           betas=(0.9, 0.99), weight_decay=cfg.weight_decay)  # fmt: skip
        self._scheduler_config = json.loads((base / "scheduler" / "scheduler_config.json").read_text())
        # The sigmas a rollout with the exported default sampler evaluates the velocity at, e.g. [1.0, 0.834].
        sched = FlowSampler(self._scheduler_config, SamplerConfig(**DEFAULT_SAMPLER)).make_scheduler()
        self.sampler_sigmas = sched.sigmas[:-1].float()
        self.bf16 = native_bf16() if cfg.bf16 is None else cfg.bf16
        self.step = 0
        self._prompt_cache: dict[tuple[str, int], list[int]] = {}
        self._frozen_prefixes: dict[tuple[int, ...], Any] = {}

    # ------------------------------------------------------------------ layout of one window
    def prompt_ids(self, instruction: str | None, num_frames: int) -> list[int]:
        """The engine's prompt for a chunk of `num_frames` frames (None: the negative prompt, "" as the engine's)."""
        key = (instruction, num_frames)
        if key not in self._prompt_cache:
            emb = self.embodiment
            if instruction is None:
                ids = self.prompts.negative_prompt_ids("", image=num_frames == 1)
            else:
                h, w = 64, 64
                ids = self.prompts.action_prompt_ids(instruction, view_point=emb.view_point, num_frames=num_frames,
                                                     fps=float(emb.control_hz), height=h, width=w)  # fmt: skip
            self._prompt_cache[key] = list(ids)
        return self._prompt_cache[key]

    def encode_frames(self, frames: Sequence[np.ndarray]) -> list[torch.Tensor]:
        """uint8 [T, H, W, 3] clips -> latents [C, T, h, w] (clips of equal length batched)."""
        out: list[torch.Tensor | None] = [None] * len(frames)
        groups: dict[int, list[int]] = {}
        for i, f in enumerate(frames):
            groups.setdefault(len(f), []).append(i)
        for idx in groups.values():
            px = torch.from_numpy(np.stack([frames[i] for i in idx])).permute(0, 4, 1, 2, 3).float() / 127.5 - 1
            for i, z in zip(idx, self.codec.encode(px)):
                out[i] = z
        return out

    def clean_actions(self, windows: Sequence[Window], action_dim: int) -> list[torch.Tensor]:
        """Model-space actions [A, action_dim] per window, featurised as the engine's `featurize_actions` does."""
        cfg, rotary = self.config, None
        if cfg.action_rotary_features:
            rotary = (*self.model.rotary.spatial_slots(), self.token_grid)
        return [featurize_actions(prepare_actions(w.actions, self.embodiment, action_dim), self.embodiment,
                                  cfg.action_fourier_octaves, rotary) for w in windows]  # fmt: skip

    def specs(self, gen: Cosmos3Generator, windows: Sequence[Window], ids: Sequence[Sequence[int]]):
        """The GenerationSpec of each window, as the engine's `_world_job` / `_spec` build them for a chunk."""
        emb, prefixes = self.embodiment, {}
        for i in ids:
            if tuple(i) not in prefixes:
                prefixes[tuple(i)] = self._prefix(gen, tuple(i))
        place = self.config.action_target_positions and emb.image_position
        positions = [action_token_positions(torch.as_tensor(w.actions), w.action_noisy, self.token_grid) if place
                     else None for w in windows]  # fmt: skip
        return [
            GenerationSpec(prefix=prefixes[tuple(i)], vision_shape=(len(w.frames), *self.latent_hw),
                           vision_noisy=w.vision_noisy, fps=float(emb.control_hz), action_len=len(w.actions),
                           action_noisy=w.action_noisy, domain_id=emb.domain_id,
                           temporal_compression=self.codec.temporal_factor, action_positions=pos)
            for w, i, pos in zip(windows, ids, positions)
        ]  # fmt: skip

    def velocity(
        self,
        gen: Cosmos3Generator,
        windows: Sequence[Window],
        ids: Sequence[Sequence[int]],
        vision: list[torch.Tensor],
        actions: list[torch.Tensor],
        timesteps: torch.Tensor,
    ):
        """The generator's training forward on noised inputs (vision [C, T, h, w], actions [A, d] per window)."""
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            plan = gen.plan(self.specs(gen, windows, ids))
            return gen.training_forward(plan, vision, timesteps, action=actions)

    @property
    def latent_hw(self) -> tuple[int, int]:
        return (64 // self.codec.spatial_factor, 64 // self.codec.spatial_factor)

    @property
    def token_grid(self) -> tuple[float, float]:
        """(rows, columns) of vision tokens per frame, as the engine's `_token_grid` of a native-size canvas."""
        p = self.model.config.latent_patch_size
        return (self.latent_hw[0] / p, self.latent_hw[1] / p)

    # ------------------------------------------------------------------ loss
    def batch_loss(
        self,
        windows: list[Window],
        g: torch.Generator,
        rng: np.random.Generator,
        model: Cosmos3Generator | None = None,
        store: EpisodeStore | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Flow-matching loss of a batch of windows; noise, sigmas and instruction dropout drawn from g / rng (with
        `store`, the windows' own episodes, and `self_forcing`, some histories are the model's imagination)."""
        cfg, gen = self.config, model or self.model
        emb, d = self.embodiment, gen.config.action_dim
        b = len(windows)
        x0 = self.encode_frames([w.frames for w in windows])
        cond, imagined = self.conditioning(gen, windows, x0, store, rng, g)
        if cfg.train_sigmas == "sampler":  # [B] drawn from the default sampler's own evaluation sigmas
            sigma = self.sampler_sigmas[torch.randint(len(self.sampler_sigmas), (b,), generator=g)]
        else:
            sigma = _shifted_sigmas(torch.sigmoid(torch.randn(b, generator=g)), cfg.sigma_shift)  # [B]
        drop = rng.random(b) < cfg.uncond_prob
        a0 = self.clean_actions(windows, d)
        vision, actions, targets = [], [], []
        for w, z, c, a, s in zip(windows, x0, cond, a0, sigma.tolist()):
            v_in, a_in, target = self.noised(w, z, a, s, g, history=c)
            vision.append(v_in)
            actions.append(a_in)
            targets.append(target)
        ids = [self.prompt_ids(None if drop[i] else w.instruction, len(w.frames)) for i, w in enumerate(windows)]
        out = self.velocity(gen, windows, ids, vision, actions, sigma * 1000.0)
        v_err, v_cnt, a_err, a_cnt = 0.0, 0, 0.0, 0
        per_mode: dict[str, list[float]] = {m: [] for m in MODES}
        for i, (w, (tv, ta)) in enumerate(zip(windows, targets)):
            ex = 0.0
            if tv.numel():
                e = (out.sample[i][:, list(w.vision_noisy)].float() - tv).pow(2)
                weight = self.motion_weights(w, x0[i], gen.config.latent_patch_size)
                e = (e if weight is None else e * weight).sum()
                v_err, v_cnt = v_err + e, v_cnt + tv.numel()
                ex += float(e.detach()) / tv.numel()
            if ta.numel():
                e = (out.action[i][list(w.action_noisy), : emb.action_dim].float() - ta).pow(2).sum()
                a_err, a_cnt = a_err + e, a_cnt + ta.numel()
                ex += cfg.action_weight * float(e.detach()) / ta.numel()
            per_mode[w.mode].append(ex)
        v_loss = v_err / max(v_cnt, 1)
        a_loss = a_err / max(a_cnt, 1)
        loss = v_loss + cfg.action_weight * a_loss
        stats = {
            "loss": float(loss.detach()),
            "vision": float(torch.as_tensor(v_loss).detach()),
            "action": float(torch.as_tensor(a_loss).detach()),
        }
        stats.update({f"loss_{m}": float(np.mean(v)) for m, v in per_mode.items() if v})
        if imagined:
            stats["self_forced"] = imagined
        return loss, stats

    def conditioning(
        self,
        gen: Cosmos3Generator,
        windows: Sequence[Window],
        x0: Sequence[torch.Tensor],
        store: EpisodeStore | None,
        rng: np.random.Generator,
        g: torch.Generator,
    ) -> tuple[list[torch.Tensor], int]:
        """The latents each window is conditioned on, and how many were self-forced. With probability
        `self_forcing`, a forward / policy window whose history follows a whole chunk of its episode gets as
        history the last frames of that chunk imagined by `gen` from the recorded frames before it; the others
        (and every target) keep the recorded frames."""
        cfg, n = self.config, self.config.chunk_size
        cond = list(x0)
        if cfg.self_forcing <= 0 or store is None:
            return cond, 0
        picks, chunks = [], []
        for i, w in enumerate(windows):
            first = w.start + w.history - n  # first frame of the imagined chunk
            if w.mode == INVERSE or w.start < 0 or first < 1 or rng.random() >= cfg.self_forcing:
                continue
            k = min(cfg.history, first)  # recorded frames it is imagined from, as many as a rollout's
            picks.append(i)
            chunks.append(store.window(w.episode, first - k, k, n, FORWARD))
        if not picks:
            return cond, 0
        for i, z in zip(picks, self.imagine(gen, chunks, g)):
            h = windows[i].history
            cond[i] = torch.cat([z[:, -h:], x0[i][:, h:]], dim=1)
        return cond, len(picks)

    @torch.no_grad()
    def imagine(self, gen: Cosmos3Generator, windows: Sequence[Window], g: torch.Generator) -> list[torch.Tensor]:
        """Forward windows denoised as the engine denoises a chunk: from pure noise with the bundle's default sampler,
        then decoded and re-encoded (the engine conditions later chunks on decoded frames). Latents [C, T, h, w]."""
        z = self.encode_frames([w.frames for w in windows])
        actions = self.clean_actions(windows, gen.config.action_dim)
        ids = [self.prompt_ids(w.instruction, len(w.frames)) for w in windows]
        noisy = [list(w.vision_noisy) for w in windows]
        x = [zi.clone() for zi in z]
        like = [zi[:, nz] for zi, nz in zip(z, noisy)]
        parts = []
        for zi, nz, a in zip(z, noisy, actions):  # the engine's draws, in its order: vision noise, then action noise
            parts.append(torch.randn((1, *zi.shape), generator=g)[0, :, nz])
            torch.randn(a.shape, generator=g)
        start = flatten(parts)

        def velocity(flat: torch.Tensor, t: float) -> torch.Tensor:
            for xi, nz, part in zip(x, noisy, unflatten(flat, like)):
                xi[:, nz] = part
            out = self.velocity(gen, windows, ids, x, actions, torch.full((len(windows),), t))
            return flatten([o[:, nz] for o, nz in zip(out.sample, noisy)])

        sampler = FlowSampler(self._scheduler_config, SamplerConfig(**DEFAULT_SAMPLER))
        for xi, nz, part in zip(x, noisy, unflatten(sampler.sample(start, velocity), like)):
            xi[:, nz] = part
        return [self.codec.encode(self.codec.decode(xi[None]))[0] for xi in x]

    def noised(
        self,
        w: Window,
        z: torch.Tensor,
        a: torch.Tensor,
        s: float,
        g: torch.Generator,
        history: torch.Tensor | None = None,
    ):
        """One window's model inputs at noise level s: latents z [C, T, h, w] and actions a [A, d] noised where the
        mode denoises, and the velocity targets there ((noise - z) at the noisy frames, (noise - a) at the noisy
        action rows); the clean frames come from `history` (z if None); with `context_noise`, the clean history
        frames of forward / policy windows are perturbed."""
        cfg, emb = self.config, self.embodiment
        n = torch.randn(z.shape, generator=g)
        nz = list(w.vision_noisy)
        v_in = (z if history is None else history).clone()
        v_in[:, nz] = (1 - s) * z[:, nz] + s * n[:, nz]
        if cfg.context_noise > 0 and w.mode != INVERSE:
            k = w.history  # later chunks condition on the model's own, imperfect frames
            std = cfg.context_noise * float(torch.rand((), generator=g))
            v_in[:, :k] += std * torch.randn(v_in[:, :k].shape, generator=g)
        an = torch.randn(a.shape, generator=g)
        an[:, emb.action_dim :] = 0
        na = list(w.action_noisy)
        a_in = a.clone()
        a_in[na] = (1 - s) * a[na] + s * an[na]
        a_in[na, emb.action_dim :] = 0  # the rows being denoised carry the raw action only, as in the engine
        return v_in, a_in, ((n - z)[:, nz], (an - a)[na, : emb.action_dim])

    def motion_weights(self, w: Window, z: torch.Tensor, patch: int) -> torch.Tensor | None:
        """Loss weights [1, n, h, w] over a window's noisy frames: 1 + motion_weight on the tokens (patch x patch
        latents) that differ from the last history frame by more than MOTION_THRESHOLD anywhere, else 1."""
        if self.config.motion_weight <= 0 or not w.vision_noisy:
            return None
        ref = z[:, w.history - 1 : w.history]  # [C, 1, h, w]
        diff = (z[:, list(w.vision_noisy)] - ref).abs().amax(0)  # [n, h, w]
        moved = F.max_pool2d(diff[None], patch)[0] > MOTION_THRESHOLD  # [n, h / p, w / p]
        moved = moved.repeat_interleave(patch, 1).repeat_interleave(patch, 2)  # [n, h, w]
        return (1 + self.config.motion_weight * moved.float())[None]

    def _prefix(self, gen: Cosmos3Generator, ids: tuple[int, ...]):
        """The prompt's Reasoner K/V: with autograd when the understanding pathway trains, else encoded once."""
        if self.config.train_understanding:
            return gen.training_prefix(list(ids))
        key = (id(gen), ids)
        if key not in self._frozen_prefixes:
            self._frozen_prefixes[key] = gen.encode_prefix(list(ids))
        return self._frozen_prefixes[key]

    # ------------------------------------------------------------------ optimisation
    def _param_groups(self) -> list[list[torch.Tensor]]:
        """The generation pathway's trainable tensors, then (when it trains) the Reasoner pathway's: its own group,
        at `understanding_lr_scale` times the schedule's lr (`train_step`; it starts from random weights)."""
        und = self.model.understanding_parameters()
        ids = {id(p) for p in und}
        gen = [p for p in self.model.parameters() if p.requires_grad and id(p) not in ids]
        return [gen, und] if self.config.train_understanding else [gen]

    def lr_at(self, step: int) -> float:
        cfg = self.config
        if step < cfg.warmup_steps:
            return cfg.lr * (step + 1) / cfg.warmup_steps
        t = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.total_steps - cfg.warmup_steps))
        return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))

    def step_generators(self, step: int) -> tuple[np.random.Generator, torch.Generator]:
        """Per-step random streams: resuming at step s draws exactly what an uninterrupted run would."""
        seed = self.config.seed
        return np.random.default_rng([seed, step]), torch.Generator().manual_seed(seed * 1_000_003 + step)

    def train_step(self, sampler: WindowSampler) -> dict[str, float]:
        cfg = self.config
        rng, g = self.step_generators(self.step)
        windows = sampler.sample(rng, cfg.batch_size)
        lr = self.lr_at(self.step)
        for group, scale in zip(self.optimizer.param_groups, (1.0, cfg.understanding_lr_scale)):
            group["lr"] = lr * scale
        loss, stats = self.batch_loss(windows, g, rng, store=sampler.store)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.optimizer.step()
        self._update_ema()
        self.step += 1
        stats.update(step=self.step, lr=lr, grad_norm=float(grad_norm))
        return stats

    @torch.no_grad()
    def _update_ema(self) -> None:
        decay = min(self.config.ema_decay, (1 + self.step) / (10 + self.step))
        ema = [p for p in self.ema.parameters()]
        src = [p.detach() for p in self.model.parameters()]
        torch._foreach_lerp_(ema, src, 1 - decay)

    # ------------------------------------------------------------------ checkpoints and export
    @torch.no_grad()
    def zero_feature_columns(self, start: int | None = None) -> None:
        """Zero the action input weights of the columns from `start` (default: past the raw action) in model and
        EMA, so that switching features on leaves the function unchanged (those columns held only zeros until now)."""
        d = self.model.config.action_dim
        first = self.embodiment.action_dim if start is None else start
        for gen in (self.model, self.ema):
            proj = gen.action_proj_in
            w = proj.fc.weight.view(proj.num_domains, d, proj.output_size)  # fc.weight[domain]: flattened [in, out]
            w[self.embodiment.domain_id, first:] = 0

    def save(self, directory: str | Path | None = None) -> Path:
        """model/ and ema/ (published transformer layout) + trainer_state.pt; written aside, then swapped in."""
        final = Path(directory or self.run_dir / "checkpoint")
        tmp = final.with_name(final.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        self.model.save_pretrained(tmp / "model")
        self.ema.save_pretrained(tmp / "ema")
        torch.save({"optimizer": self.optimizer.state_dict(), "step": self.step, "config": asdict(self.config)},
                   tmp / "trainer_state.pt")  # fmt: skip
        old = final.with_name(final.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
        return final

    def load(self, directory: str | Path | None = None) -> None:
        """Restore model, EMA, optimizer and step from a `save` directory."""
        src = Path(directory or self.run_dir / "checkpoint")
        for module, sub in ((self.model, "model"), (self.ema, "ema")):
            loaded = Cosmos3Generator.from_pretrained(src, subfolder=sub)
            with torch.no_grad():
                for dst, val in zip(module.state_dict().values(), loaded.state_dict().values()):
                    dst.copy_(val)
        state = torch.load(src / "trainer_state.pt", weights_only=False)
        saved = state["optimizer"]["param_groups"]
        if [len(g["params"]) for g in saved] != [len(g["params"]) for g in self.optimizer.param_groups]:
            raise ValueError(
                f"{src} holds an optimizer over other parameter groups ({len(saved)}; this trainer "
                f"has {len(self.optimizer.param_groups)}): train_understanding must match the run's"
            )
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])

    def export(self, directory: str | Path, ema: bool = True, sampler: dict[str, Any] | None = None) -> Path:
        """A complete bundle (published layout) with the EMA (or raw) weights and the rollout defaults."""
        return export_bundle(self.ema if ema else self.model, self.base, directory, self.config, sampler=sampler)


def export_bundle(
    model: Cosmos3Generator,
    base: str | Path,
    directory: str | Path,
    config: TrainConfig,
    sampler: dict[str, Any] | None = None,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Copy `base`'s codec, tokenizer and scheduler, save `model` as transformer/, declare the defaults."""
    if config.train_sigmas == "sampler" and sampler is not None and dict(sampler) != DEFAULT_SAMPLER:
        raise ValueError(f"sampler {dict(sampler)} is not {DEFAULT_SAMPLER}, the only sampler a "
                         f"train_sigmas='sampler' run was trained for")  # fmt: skip
    base, out = Path(base), Path(directory)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for sub in ("vae", "text_tokenizer", "scheduler"):
        shutil.copytree(base / sub, tmp / sub)
    model = copy.deepcopy(model).to(dtype) if dtype != torch.float32 else model
    model.save_pretrained(tmp / "transformer")
    index = json.loads((base / "model_index.json").read_text())
    index[DEFAULTS_KEY] = {  # read by WorldModel.reset / from_pretrained
        "tier": None,  # native 64x64 frames, captioned 64x64 (as trained), no conditioning canvas
        "embodiment": EMBODIMENT,
        "chunk_size": config.chunk_size,
        "history": config.history,
        "sampler": dict(sampler or DEFAULT_SAMPLER),
        "action_fourier_octaves": config.action_fourier_octaves,
        "action_rotary_features": config.action_rotary_features,
        "action_target_positions": config.action_target_positions,
    }
    (tmp / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


def export_run(
    run_dir: str | Path, out: str | Path, sampler: dict[str, Any] | None = None, dtype: torch.dtype = torch.float32
) -> Path:
    """Export the EMA weights of a run's latest checkpoint as a bundle (works while the run goes on); `dtype` is
    the stored weights' (bfloat16 halves the bundle; loading upcasts to float32 by default)."""
    run = Path(run_dir)
    state = torch.load(run / "checkpoint" / "trainer_state.pt", weights_only=False)
    config = TrainConfig.from_dict(state["config"])
    ema = Cosmos3Generator.from_pretrained(run / "checkpoint", subfolder="ema")
    return export_bundle(ema, run / "base", out, config, sampler=sampler, dtype=dtype)


def bundle_defaults(bundle: str | Path) -> dict[str, Any]:
    """The rollout defaults a bundle declares in model_index.json (empty if none)."""
    index = json.loads((Path(bundle) / "model_index.json").read_text())
    return dict(index.get(DEFAULTS_KEY, {}))


# What a bundle's weights fix: how they read the actions, and the chunk layout they were trained on.
_BUNDLE_FIXED = ("action_fourier_octaves", "action_rotary_features", "action_target_positions", "chunk_size", "history")


def config_from_bundle(config: TrainConfig) -> TrainConfig:
    """`config` with the model config and action features of the bundle at `config.init_from` (a bundle this trainer
    exported), so that fine-tuning reads its inputs as the weights were trained to. A setting given that contradicts
    the bundle is an error (a default is taken from the bundle)."""
    bundle = Path(config.init_from or "")
    defaults = bundle_defaults(bundle) if (bundle / "model_index.json").is_file() else {}
    if defaults.get("embodiment") != EMBODIMENT:
        raise ValueError(f"init_from must be a bundle exported by this trainer (model_index.json declaring "
                         f"embodiment {EMBODIMENT!r}), got {str(bundle)!r}")  # fmt: skip
    fields, given, out = TrainConfig.__dataclass_fields__, asdict(config), {}
    if config.qk_norm_init != fields["qk_norm_init"].default:
        raise ValueError("qk_norm_init sets a fresh run's initial norms; with init_from the bundle's are kept")
    for key in _BUNDLE_FIXED:
        value, default = given[key], fields[key].default
        if value != default and value != defaults.get(key, default):
            raise ValueError(f"{key}={value!r} contradicts the bundle at {str(bundle)!r} ({defaults.get(key)!r}): "
                             f"its weights were trained that way; leave {key} unset")  # fmt: skip
        out[key] = defaults.get(key, default)
    saved = json.loads((bundle / "transformer" / "config.json").read_text())
    model = {k: saved[k] for k in {**EMBEDDED_MODEL_CONFIG, **config.model} if k in saved}
    if config.model != EMBEDDED_MODEL_CONFIG:
        clash = {k: v for k, v in config.model.items() if k in model and model[k] != v}
        if clash:
            raise ValueError(f"model overrides {clash} contradict the bundle at {str(bundle)!r} "
                             f"({ {k: model[k] for k in clash} }): leave model unset to fine-tune it")  # fmt: skip
    return TrainConfig.from_dict({**given, **out, "model": model})


# ---------------------------------------------------------------------------------------------
# The training loop
# ---------------------------------------------------------------------------------------------


def plot_losses(log_path: str | Path, png_path: str | Path) -> None:
    """Loss curve (raw and smoothed, per mode) from log.jsonl -> PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in Path(log_path).read_text().splitlines() if line.strip()]
    if not rows:
        return
    steps = np.array([r["step"] for r in rows])
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for key in ("loss", *(f"loss_{m}" for m in MODES)):
        y = np.array([r.get(key, np.nan) for r in rows], dtype=float)
        k = max(1, len(y) // 50)
        smooth = np.convolve(np.nan_to_num(y, nan=np.nanmean(y)), np.ones(k) / k, mode="valid")
        ax.plot(steps[k - 1 :], smooth, label=key, lw=1.5 if key == "loss" else 1.0)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("flow-matching MSE")
    ax.set_title("embedded world training")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)


def train(config: TrainConfig, resume: bool = False, progress: bool = True) -> Trainer:
    """Run (or resume) training until `total_steps` or `max_minutes`; checkpoints, exports and plots as it goes."""
    run = Path(config.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    if resume and (run / "checkpoint" / "trainer_state.pt").is_file():
        saved = torch.load(run / "checkpoint" / "trainer_state.pt", weights_only=False)["config"]
        saved.setdefault("policy_data", "all")  # a run from before the field drew policy windows from every episode
        # What a resume may change: where the run and its data are (a copied run directory branches off), the
        # schedule's length, the run's time, threads and autocast (the machine's), a window mix (and policy windows'
        # episodes) and the Reasoner's lr scale given anew, and a context noise, motion weight, self forcing, Fourier
        # or rotary action features given anew (a run can start plain and be made robust to its own frames, or
        # attentive to what moves, later).
        runtime = ("data", "run_dir", "total_steps", "max_minutes", "checkpoint_minutes", "threads", "log_every",
                   "bf16")  # fmt: skip
        anew = ("context_noise", "motion_weight", "action_fourier_octaves", "self_forcing", "action_rotary_features")
        if config.action_target_positions and not saved.get("action_target_positions", False):
            raise ValueError("action_target_positions cannot be switched on by a resume (it moves the action "
                             "tokens): start a fresh run")  # fmt: skip
        # the window mix and the Reasoner's lr scale: given anew when not the default
        mix = ("history_probs", "mode_probs", "policy_data", "understanding_lr_scale")
        fields = TrainConfig.__dataclass_fields__
        keep = {k: v for k, v in asdict(config).items()
                if k in runtime or (k in anew and v > 0) or (k in mix and v != fields[k].default)}  # fmt: skip
        config = TrainConfig.from_dict({**saved, **keep})
        trainer = Trainer(config)
        trainer.load()
        old_octaves = saved.get("action_fourier_octaves", 0)
        if old_octaves != config.action_fourier_octaves and saved.get("action_rotary_features"):
            raise ValueError("action_fourier_octaves cannot change once rotary action features are on (they follow)")
        if config.action_fourier_octaves and not old_octaves:  # new columns start out ignored: the same function
            trainer.zero_feature_columns()
        elif config.action_rotary_features and not saved.get("action_rotary_features"):
            trainer.zero_feature_columns(fourier_width(trainer.embodiment.action_dim, old_octaves))
    else:
        trainer = Trainer(config)
        config = trainer.config  # with init_from: the bundle's model config and action features
    (run / "config.json").write_text(json.dumps(asdict(config), indent=1))
    store = EpisodeStore(config.data, max_episodes=config.max_episodes, progress=progress)
    sampler = WindowSampler(store, chunk=config.chunk_size, history_probs=config.history_probs[: config.history],
                            mode_probs=config.mode_probs,
                            policy_from_success=config.policy_data == "success")  # fmt: skip
    log = (run / "log.jsonl").open("a")
    start = last_ckpt = time.time()
    bar = tqdm(total=config.total_steps, initial=trainer.step, desc="train", disable=not progress, mininterval=5)
    recent: list[float] = []
    try:
        while trainer.step < config.total_steps:
            t0 = time.time()
            stats = trainer.train_step(sampler)
            stats["sec"] = time.time() - t0
            recent.append(stats["loss"])
            if trainer.step % config.log_every == 0:
                log.write(json.dumps(stats) + "\n")
                log.flush()
                bar.set_postfix(loss=f"{np.mean(recent):.4f}", lr=f"{stats['lr']:.1e}", s=f"{stats['sec']:.2f}")
                recent = []
            bar.update(1)
            now = time.time()
            out_of_time = config.max_minutes is not None and now - start > 60 * config.max_minutes
            if now - last_ckpt > 60 * config.checkpoint_minutes or out_of_time:
                _checkpoint(trainer, run)
                last_ckpt = now
            if out_of_time:
                break
    finally:
        log.close()
        bar.close()
    _checkpoint(trainer, run)
    return trainer


def _checkpoint(trainer: Trainer, run: Path) -> None:
    trainer.save()
    trainer.export(run / "bundle")
    plot_losses(run / "log.jsonl", run / "loss.png")
    with (run / "checkpoints.txt").open("a") as f:
        f.write(f"{time.strftime('%H:%M:%S')} step {trainer.step}\n")


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m cosmos3_world.training.trainer --data DIR ... --run-dir DIR [--resume]`."""
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)  # fmt: skip
    add_train_arguments(p)
    args = p.parse_args(argv)
    run_from_args(args)


def run_from_args(args: Any) -> Trainer:
    cfg = config_from_args(args)
    os.makedirs(cfg.run_dir, exist_ok=True)
    trainer = train(cfg, resume=args.resume)
    print(f"step {trainer.step}; EMA bundle at {Path(cfg.run_dir) / 'bundle'}")
    return trainer


if __name__ == "__main__":
    main()
