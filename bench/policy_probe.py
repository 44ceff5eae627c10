"""Does the world model's policy mode read the instruction? Along expert trajectories on held-out seeds, the mean
distance of its predicted actions to the expert's with the right instruction and with a wrong one (same frame).

    python bench/policy_probe.py [--model BUNDLE] [--episodes 8] [--chunks 10] [--guidance G] [--threads 2]

Equal errors mean the policy ignores the instruction (what `embedded20` does; README). Two references: standing
still, and the expert for the wrong goal (the gap a policy that reads the instruction could open).
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import torch
from tqdm.auto import tqdm

from cosmos3_world.engine import WorldModel
from cosmos3_world.envs.models import default_model_path
from cosmos3_world.policies.push_report import CHUNK, HELD_OUT_SEED
from cosmos3_world.sim.env import PushSimEnv
from cosmos3_world.sim.policies import ExpertPushPolicy
from cosmos3_world.sim.push import TASKS


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="bundle directory (default: the shipped embedded world)")
    p.add_argument("--episodes", type=int, default=8)
    p.add_argument("--chunks", type=int, default=10)
    p.add_argument("--guidance", type=float, default=None, help="guidance scale (default: the bundle's)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    wm = WorldModel.from_pretrained(args.model or default_model_path())
    if args.guidance is not None:
        wm = wm.with_sampler(dataclasses.replace(wm.sampler.config, guidance_scale=args.guidance))
    # right / wrong: the model with the right / a wrong instruction; hold: the agent standing still; expert for the
    # wrong goal: what reading the instruction is worth (how far apart the two instructions' expert actions are)
    errors: dict[str, list[float]] = {"right": [], "wrong": [], "hold": [], "wrong_expert": []}
    for i in tqdm(range(args.episodes), desc="episodes"):
        seed, task = HELD_OUT_SEED + 20_000 + i, i % len(TASKS)
        env, expert = PushSimEnv(chunk_size=CHUNK), ExpertPushPolicy(chunk_size=CHUNK, seed=seed)
        other = ExpertPushPolicy(chunk_size=CHUNK, seed=seed)
        obs, _ = env.reset(seed=seed, options={"task": task})
        for c in range(args.chunks):
            target = expert.act({**obs, "task": task})  # [CHUNK, 2]
            baselines = {"hold": np.broadcast_to(obs["agent_pos"], target.shape),
                         "wrong_expert": other.act({**obs, "task": (task + 1) % len(TASKS)})}  # fmt: skip
            for name, a in baselines.items():
                errors[name].append(float(np.linalg.norm(a - target, axis=-1).mean()))
            instructions = {"right": TASKS[task], "wrong": TASKS[(task + 1) % len(TASKS)]}
            worlds = [wm.reset(image=obs["pixels"], instruction=t, embodiment="pusht", seed=seed + c)
                      for t in instructions.values()]  # fmt: skip
            for name, r in zip(instructions, wm.predict(worlds)):
                errors[name].append(float(np.linalg.norm(r.actions - target, axis=-1).mean()))
            obs, _, terminated, _, _ = env.step(target)
            if terminated:
                break
    m = {k: float(np.mean(v)) for k, v in errors.items()}
    print(f"action error to the expert over {len(errors['right'])} chunks (workspace units): right instruction "
          f"{m['right']:.3f}, wrong instruction {m['wrong']:.3f}, wrong - right {m['wrong'] - m['right']:+.3f}; "
          f"standing still {m['hold']:.3f}, the expert for the wrong goal {m['wrong_expert']:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
