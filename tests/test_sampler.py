"""Flow-matching sampling: schedules, solvers, CFG, and stepping many tensors as one flat vector."""

import numpy as np
import pytest
import torch
from diffusers import UniPCMultistepScheduler

from cosmos3_world.engine.chunk import guided
from cosmos3_world.engine.sampler import DEFAULT_SCHEDULER_CONFIG, FlowSampler, SamplerConfig, flatten, unflatten


def toy_velocity(target: torch.Tensor):
    """The exact flow-matching velocity towards `target` from noise x: v = (x - target) / sigma... of a
    straight path; with x_t = (1 - s) target + s eps, v = eps - target, recoverable from x and s."""

    def velocity(x: torch.Tensor, t: float):
        s = t / 1000.0
        eps = (x - (1 - s) * target) / max(s, 1e-6)
        return eps - target

    return velocity


@pytest.mark.parametrize("solver", ["unipc", "euler"])
def test_both_solvers_reach_the_target_of_an_exact_velocity(solver):
    target = torch.linspace(-1, 1, 50)
    sampler = FlowSampler(DEFAULT_SCHEDULER_CONFIG, SamplerConfig(num_steps=12, guidance_scale=1.0, solver=solver))
    out = sampler.sample(torch.randn(50, generator=torch.Generator().manual_seed(0)), toy_velocity(target))
    assert torch.allclose(out, target, atol=1e-3)


def test_fixed_sigma_schedule_is_used_as_given():
    sigmas = (1.0, 0.75, 0.4, 0.1)
    sampler = FlowSampler(None, SamplerConfig(sigmas=sigmas, guidance_scale=1.0))
    sched = sampler.make_scheduler()
    assert len(sched.timesteps) == 4
    assert np.allclose(sched.sigmas[:-1].numpy(), sigmas)
    seen = []
    sampler.sample(torch.zeros(3), lambda x, t: seen.append(t) or torch.zeros_like(x))
    assert np.allclose(seen, [s * 1000 for s in sigmas], rtol=1e-3)


def test_cfg_combines_cond_and_uncond():
    cond, uncond = torch.full((2,), 2.0), torch.full((2,), 1.0)
    assert torch.equal(guided(cond, uncond, 4.0), torch.full((2,), 5.0))  # 1 + 4 * (2 - 1)
    assert torch.equal(guided(cond, None, 4.0), cond)
    assert SamplerConfig(guidance_scale=4.0).uses_cfg and not SamplerConfig(guidance_scale=1.0).uses_cfg


def test_one_flat_scheduler_equals_separate_schedulers():
    """Elementwise updates: stepping [a ; b] together equals stepping a and b with their own schedulers."""
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(2, 3, 4, generator=g), torch.randn(5, 6, generator=g)
    va, vb = torch.randn(2, 3, 4, generator=g), torch.randn(5, 6, generator=g)
    sampler = FlowSampler(None, SamplerConfig(num_steps=6, guidance_scale=1.0))
    flat = sampler.sample(flatten([a, b]), lambda x, t: flatten([va * t / 1000, vb * t / 1000]))
    for x, v in ((a, va), (b, vb)):
        sched = UniPCMultistepScheduler.from_config(DEFAULT_SCHEDULER_CONFIG)
        sched.set_timesteps(6)
        y = x[None].clone()
        for t in sched.timesteps:
            y = sched.step((v * float(t) / 1000)[None], t, y, return_dict=False)[0]
        got = unflatten(flat, [a, b])[0 if x is a else 1]
        assert torch.allclose(got, y[0], atol=1e-6)


def test_bad_sampler_configs():
    for kwargs, message in (
        (dict(solver="ddim"), "solver must be one of"),
        (dict(num_steps=0), "num_steps"),
        (dict(sigmas=(0.2, 0.5)), "strictly decreasing"),
        (dict(sigmas=(1.5, 0.5)), r"in \[0, 1\]"),
        (dict(guidance_scale=float("nan")), "guidance_scale"),
    ):
        with pytest.raises(ValueError, match=message):
            SamplerConfig(**kwargs)
