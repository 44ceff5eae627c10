"""Episodes per minute of policy evaluation on the default model: one env at a time vs the batched vector env
vs Ray actors, side by side in one run (same suite, seeds, policy and episode length).

    python bench/eval.py [--episodes 8] [--steps 3] [--max-episode-steps 5] [--workers 2]

Each row evaluates the same `episodes` episodes of the default suite with the random policy:
  sequential  a vector env of 1 world (one episode at a time)
  batched     the native vector env with B = 8 worlds (one batched forward per denoising step)
  ray         `workers` Ray actors, each with a vector env of B = 8 // workers worlds
"""

from __future__ import annotations

import argparse
import time

from cosmos3_world.policies.evaluate import evaluate, make_eval_env
from cosmos3_world.policies.specs import make_policy
from cosmos3_world.policies.suite import load_suite


def run_local(num_envs: int, suite, args) -> float:
    env = make_eval_env("Cosmos3World-v0", num_envs, num_steps=args.steps)
    policy = make_policy("random", env, seed=0)
    evaluate(policy, env, suite=suite.with_episodes(1), max_episode_steps=1, videos=False, progress=False)  # warm-up
    start = time.perf_counter()
    res = evaluate(policy, env, suite=suite, seed=0, max_episode_steps=args.max_episode_steps, videos=False,
                   progress=False)  # fmt: skip
    elapsed = time.perf_counter() - start
    env.close()
    return res["overall"]["episodes"] / elapsed * 60


def run_ray(suite, args) -> float:
    import ray

    ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
    spec = {"id": "Cosmos3World-v0", "kwargs": {"num_steps": args.steps}, "num_envs": max(1, 8 // args.workers)}
    try:
        start = time.perf_counter()
        res = evaluate({"random": "random"}, spec, backend="ray", workers=args.workers, suite=suite, seed=0,
                       max_episode_steps=args.max_episode_steps, videos=False, progress=False)  # fmt: skip
        elapsed = time.perf_counter() - start  # includes the actors' model loading, as a user would see it
    finally:
        ray.shutdown()
    return res["overall"]["episodes"] / elapsed * 60


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=8, help="episodes per task of the default suite (3 tasks)")
    parser.add_argument("--steps", type=int, default=3, help="denoising steps per chunk")
    parser.add_argument("--max-episode-steps", type=int, default=5, help="chunks per episode")
    parser.add_argument("--workers", type=int, default=2, help="Ray actors")
    parser.add_argument("--no-ray", action="store_true")
    args = parser.parse_args()
    suite = load_suite(episodes=args.episodes)
    rows = [("sequential (B=1)", run_local(1, suite, args)), ("batched vector env (B=8)", run_local(8, suite, args))]
    if not args.no_ray:
        rows.append((f"ray, {args.workers} workers x B={max(1, 8 // args.workers)}", run_ray(suite, args)))
    base = rows[0][1]
    print(f"{suite.episodes} episodes of {args.max_episode_steps} chunks, {args.steps} denoising steps, random policy")
    for name, rate in rows:
        print(f"  {name:32s} {rate:8.1f} episodes/min   {rate / base:5.2f}x sequential")


if __name__ == "__main__":
    main()
