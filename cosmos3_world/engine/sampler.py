"""Flow-matching sampling: the checkpoint's UniPC scheduler (or plain Euler) over one flat state.

The schedulers come from diffusers. Their updates are elementwise with per-step scalar
coefficients, so one scheduler instance can step the flattened noisy latents of every world and
every modality at once, exactly as separate instances would step each of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from tqdm.auto import tqdm

# Used when a bundle has no scheduler folder (tiny models): UniPC over flow-matching sigmas.
DEFAULT_SCHEDULER_CONFIG = {
    "_class_name": "UniPCMultistepScheduler",
    "num_train_timesteps": 1000,
    "prediction_type": "flow_prediction",
    "use_flow_sigmas": True,
    "flow_shift": 5.0,
    "solver_order": 2,
}

_SOLVERS = ("unipc", "euler")


@dataclass
class SamplerConfig:
    """How to denoise a chunk: solver, steps, guidance, and optionally a fixed (distilled) sigma schedule."""

    num_steps: int = 35
    guidance_scale: float = 6.0
    solver: str = "unipc"  # "unipc" (the checkpoint's scheduler) or "euler"
    sigmas: tuple[float, ...] | None = None  # fixed schedule, e.g. of a distilled model; overrides num_steps
    native_flow_schedule: bool = False  # linspace(1 - 1/T, 0) sigmas, as the reference's use_native_flow_schedule

    def __post_init__(self) -> None:
        if self.solver not in _SOLVERS:
            raise ValueError(f"solver must be one of {list(_SOLVERS)}, got {self.solver!r}")
        if self.sigmas is not None:
            sig = tuple(float(s) for s in self.sigmas)
            if not sig or any(not 0.0 <= s <= 1.0 for s in sig) or any(a <= b for a, b in zip(sig, sig[1:])):
                raise ValueError(
                    f"sigmas must be a non-empty, strictly decreasing schedule in [0, 1], got {self.sigmas}"
                )
            self.sigmas = sig
        elif self.num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {self.num_steps}")
        if not np.isfinite(self.guidance_scale):
            raise ValueError(f"guidance_scale must be finite, got {self.guidance_scale}")

    @property
    def uses_cfg(self) -> bool:
        return self.guidance_scale != 1.0


class FlowSampler:
    """Runs one denoising loop per chunk over a flat latent vector (guidance is the velocity's business)."""

    def __init__(self, scheduler_config: dict | None = None, config: SamplerConfig | None = None):
        self.scheduler_config = dict(scheduler_config or DEFAULT_SCHEDULER_CONFIG)
        self.config = config or SamplerConfig()

    def make_scheduler(self) -> SchedulerMixin:
        """A fresh scheduler with this chunk's timesteps set (schedulers keep per-loop state)."""
        cfg = self.config
        base = UniPCMultistepScheduler.from_config(self.scheduler_config)
        sigmas = None
        if cfg.sigmas is not None:
            # A fixed schedule is used verbatim: UniPC would otherwise apply its flow_shift to it.
            base = UniPCMultistepScheduler.from_config({**self.scheduler_config, "flow_shift": 1.0})
            sigmas = np.asarray(cfg.sigmas, dtype=np.float64)
        elif cfg.native_flow_schedule:  # shifted by flow_shift, exactly as the reference pipeline does
            sigmas = np.linspace(1.0 - 1.0 / base.config.num_train_timesteps, 0.0, cfg.num_steps + 1)[:-1]
        if sigmas is not None:
            base.set_timesteps(sigmas=sigmas)
        else:
            base.set_timesteps(cfg.num_steps)
        if cfg.solver == "unipc":
            return base
        # Plain Euler over the very sigmas UniPC would walk (shift 1: they are already shifted).
        euler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=base.config.num_train_timesteps, shift=1.0)
        euler.set_timesteps(sigmas=base.sigmas[:-1].numpy())
        return euler

    def sample(
        self,
        x: torch.Tensor,
        velocity: Callable[[torch.Tensor, float], torch.Tensor],
        after_step: Callable[[torch.Tensor], None] | None = None,
        progress: bool = False,
    ) -> torch.Tensor:
        """Denoise flat float32 latents x. velocity(x, t) -> v, flat like x (already guided).

        after_step(x) may edit x in place after every update (e.g. re-zero padded action dims).
        """
        sched = self.make_scheduler()
        x = x.float().unsqueeze(0)  # schedulers want a batch dim
        for t in tqdm(sched.timesteps, desc="denoising", leave=False, disable=not progress):
            v = velocity(x[0], float(t.item())).float()
            x = sched.step(v.unsqueeze(0), t, x, return_dict=False)[0]
            if after_step is not None:
                after_step(x[0])
        return x[0]


def flatten(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Concatenate tensors into one flat float32 vector (see `unflatten`)."""
    return torch.cat([t.reshape(-1).float() for t in tensors]) if tensors else torch.zeros(0)


def unflatten(flat: torch.Tensor, like: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Split a flat vector back into tensors shaped like `like` (views of `flat`)."""
    out, start = [], 0
    for t in like:
        out.append(flat[start : start + t.numel()].view(t.shape))
        start += t.numel()
    return out
