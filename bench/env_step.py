"""What the Gymnasium layer costs and what native batching buys, on the default model (not a test).

Side by side in one run, rounds alternating so that machine load hits every row alike (medians):
  1. chunks/s of `env.step` vs `World.step` on the same model, world and actions (goal: env overhead < 5%);
  2. the native vector env at N = 1, 4, 8 vs gymnasium's SyncVectorEnv over N single envs sharing the model
     (goal: per-world throughput at N = 8 >= 3x SyncVectorEnv's);
  3. the world-model policy loop (`WorldModelPolicy.act` + `env.step`, the step committing the imagined chunk)
     at N = 1 and 8.

    python bench/env_step.py [--steps 4] [--guidance 1.0] [--chunks 4] [--rounds 3] [--sizes 1 4 8] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import gymnasium as gym
import numpy as np
import torch

import cosmos3_world  # noqa: F401  (registers the gym ids)
from cosmos3_world.envs import Cosmos3WorldEnv, default_model_path
from cosmos3_world.policies import WorldModelPolicy


def timed(fn: Callable[[], None], repeats: int) -> float:
    """Seconds per call of fn, over `repeats` calls."""
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="bundle (default: the project's default model)")
    parser.add_argument("--steps", type=int, default=4, help="denoising steps per chunk")
    parser.add_argument("--guidance", type=float, default=1.0, help="CFG scale (1.0: no uncond pass)")
    parser.add_argument("--chunks", type=int, default=4, help="chunks timed per row and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (1 on a machine shared with others)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = args.model or default_model_path()
    kw = dict(model=model, num_steps=args.steps, guidance_scale=args.guidance, success=None)
    print(
        f"model {model} | {args.steps} denoising steps, guidance {args.guidance} | torch threads "
        f"{torch.get_num_threads()}, cpus {os.cpu_count()} | {args.rounds} rounds x {args.chunks} chunks"
    )

    # 1. env.step vs World.step: two worlds started alike, stepped with the same actions.
    env = Cosmos3WorldEnv(**kw)
    first, info = env.reset(seed=0)
    action = np.zeros(env.action_space.shape, np.float32)
    raw = env.model.reset(image=first["pixels"], instruction=info["task"], embodiment=env.world.embodiment, seed=0,
                          chunk_size=env.chunk_size)  # fmt: skip
    chunk = action.reshape(env.chunk_size, -1)
    rows: dict[str, list[float]] = {}
    inside = {"env": 0.0, "model": 0.0}  # env.step's own wall time, and the WorldModel.step time within it
    model_step = env.model.step

    def timed_model_step(*a, **k):
        start = time.perf_counter()
        try:
            return model_step(*a, **k)
        finally:
            inside["model"] += time.perf_counter() - start

    def world_step() -> None:
        raw.step(chunk)

    def env_step() -> None:
        env.model.step = timed_model_step  # instance attribute on the env's model view, for this call only
        start = time.perf_counter()
        try:
            env.step(action)
        finally:
            inside["env"] += time.perf_counter() - start
            del env.model.step

    # 2. native vector env vs SyncVectorEnv, 3. the world-model policy loop.
    vec = {n: gym.make_vec("Cosmos3World-v0", num_envs=n, **kw) for n in args.sizes}
    sync = {n: gym.make_vec("Cosmos3World-v0", num_envs=n, vectorization_mode="sync", **kw) for n in args.sizes}
    policy_sizes = sorted({min(args.sizes), max(args.sizes)})
    for e in (*vec.values(), *sync.values()):
        e.reset(seed=0)
    policy = {n: WorldModelPolicy(vec[n]) for n in policy_sizes}
    obs = {n: vec[n].reset(seed=0)[0] for n in policy_sizes}

    def vec_step(n: int) -> Callable[[], None]:
        acts = np.zeros(vec[n].action_space.shape, np.float32)
        return lambda: vec[n].step(acts)

    def sync_step(n: int) -> Callable[[], None]:
        acts = np.zeros(sync[n].action_space.shape, np.float32)
        return lambda: sync[n].step(acts)

    def policy_loop(n: int) -> Callable[[], None]:
        def run() -> None:
            obs[n], *_ = vec[n].step(policy[n].act(obs[n]))

        return run

    plan: list[tuple[str, Callable[[], None]]] = [("World.step", world_step), ("env.step", env_step)]
    plan += [(f"vector N={n}", vec_step(n)) for n in args.sizes]
    plan += [(f"sync N={n}", sync_step(n)) for n in args.sizes]
    plan += [(f"policy N={n}", policy_loop(n)) for n in policy_sizes]
    for _, fn in plan:  # warm up: prompt caches, allocator, first-call costs
        fn()
    inside.update(env=0.0, model=0.0)
    for r in range(args.rounds):
        for name, fn in plan:
            rows.setdefault(name, []).append(timed(fn, args.chunks))
        print(f"round {r + 1}/{args.rounds} done", flush=True)

    sec = {name: statistics.median(v) for name, v in rows.items()}
    n_of = {name: int(name.split("=")[1]) if "=" in name else 1 for name in sec}
    print(f"\n{'row':<14}{'s/step':>10}{'steps/s':>10}{'chunks/s (all worlds)':>24}")
    for name, s in sec.items():
        print(f"{name:<14}{s:>10.4f}{1 / s:>10.2f}{n_of[name] / s:>24.2f}")
    overhead = sec["env.step"] / sec["World.step"] - 1
    own = inside["env"] / inside["model"] - 1
    print(f"\nenv overhead: {100 * own:+.2f}% measured inside env.step (its time beyond WorldModel.step); "
          f"{100 * overhead:+.1f}% wall clock vs World.step (goal < 5%)")  # fmt: skip
    for n in args.sizes:
        print(f"N={n}: native vector {n / sec[f'vector N={n}']:.2f} chunks/s vs sync {n / sec[f'sync N={n}']:.2f} "
              f"-> {sec[f'sync N={n}'] / sec[f'vector N={n}']:.2f}x")  # fmt: skip
    big = max(args.sizes)
    print(f"per-world throughput at N={big}: {sec[f'sync N={big}'] / sec[f'vector N={big}']:.2f}x SyncVectorEnv "
          f"(goal >= 3x); native N={big} vs N=1 per world: "
          f"{(big / sec[f'vector N={big}']) / (1 / sec[f'vector N={min(args.sizes)}']):.2f}x")  # fmt: skip
    for n in policy_sizes:
        print(f"world-model policy act + step, N={n}: {n / sec[f'policy N={n}']:.2f} chunks/s "
              f"({sec[f'policy N={n}'] / sec[f'vector N={n}']:.2f}x a forward-dynamics step)")  # fmt: skip


if __name__ == "__main__":
    main()
