"""Fidelity report of a push world model against the ground-truth simulator, on held-out seeds.

1. Open-loop imagination: from a simulator start frame the world gets the actions a (mixed-skill) policy took in
   the simulator, for 10 chunks. Per-chunk PSNR / SSIM of imagined vs simulated frames, against copy-last-frame
   (the start frame held) and against the same world fed another episode's actions (shuffled: does it follow the
   actions?); agent and block position error from the pixel detector after 1, 5 and 10 chunks.
2. Policy ranking: success rates of the graded scripted policies in the simulator and in the world model
   (success read by the pixel detector on imagined frames), with Pearson and Spearman correlation.
3. The world model's own policy mode acting in the true simulator, per instruction, against random actions.
4. `--sweep`: PSNR after 5 chunks against sampler settings (solver, steps, guidance), to choose the defaults.

Uses the engine directly (`WorldModel` / `World`). Prints tables, writes PNG plots and results.json to --out.

    python bench/fidelity.py [--model DIR] [--episodes 16] [--policy-episodes 12] [--sweep] [--out fidelity_out]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm.auto import tqdm

from cosmos3_world.engine import WorldModel
from cosmos3_world.engine.sampler import SamplerConfig
from cosmos3_world.policies.push_report import (
    CHUNK,
    HELD_OUT_SEED,
    imagine,
    model_policy_success,
    open_loop_report,
    psnr,
    record,
    sim_success,
    world_success,
)
from cosmos3_world.policies.stats import pearson, spearman
from cosmos3_world.sim.env import default_max_episode_steps
from cosmos3_world.sim.policies import RandomPushPolicy, graded_policies
from cosmos3_world.sim.push import TASKS

EMBEDDED = Path(__file__).resolve().parents[1] / "cosmos3_world" / "assets" / "embedded_world"


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def strip_png(path: Path, true: np.ndarray, model: np.ndarray, every: int = 2, scale: int = 2) -> None:
    """Two rows (simulator, world model) of every `every`-th frame of one rollout, upscaled."""
    idx = list(range(0, true.shape[0], every))
    rows = [np.concatenate([f[i] for i in idx], axis=1) for f in (true, model)]
    img = np.concatenate(rows, axis=0)
    img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    cv2.imwrite(str(path), img[:, :, ::-1])


def plot(out: Path, rows: dict, success: dict | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3 if success else 2, figsize=(15 if success else 10, 4))
    for metric, ax in zip(("psnr", "ssim"), axes):
        for name, r in rows.items():
            ax.plot(range(1, len(r[metric]) + 1), r[metric], marker="o", label=name)
        ax.set_xlabel("chunk")
        ax.set_ylabel(metric.upper())
        ax.grid(alpha=0.3)
        ax.legend()
    if success:
        ax = axes[2]
        names = list(success)
        sx, wx = [success[n]["sim"] for n in names], [success[n]["world"] for n in names]
        ax.scatter(sx, wx)
        for n, x, y in zip(names, sx, wx):
            ax.annotate(n, (x, y), fontsize=8)
        ax.plot([0, 1], [0, 1], "k--", lw=0.5)
        ax.set_xlabel("success in simulator")
        ax.set_ylabel("success in world model")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "fidelity.png", dpi=100)
    plt.close(fig)


def load(model: str, sampler: SamplerConfig | None = None, threads: int = 1) -> WorldModel:
    torch.set_num_threads(threads)  # two OpenMP threads collapse on an oversubscribed 2-core machine
    return WorldModel.from_pretrained(model, sampler=sampler)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default=str(EMBEDDED), help="bundle directory (default: the shipped embedded world)")
    p.add_argument("--episodes", type=int, default=16, help="held-out episodes of the open-loop report")
    p.add_argument("--chunks", type=int, default=10, help="chunks of the open-loop report")
    p.add_argument("--policy-episodes", type=int, default=12, help="episodes per policy (0: skip parts 2 and 3)")
    p.add_argument("--horizon", type=int, default=default_max_episode_steps(CHUNK),
                   help="chunks per policy episode (default: the push task's 40 control steps)")  # fmt: skip
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default: the bundle's)")
    p.add_argument("--solver", default=None, help="sampler solver (default: the bundle's)")
    p.add_argument("--guidance", type=float, default=None, help="guidance scale (default: the bundle's)")
    p.add_argument("--sweep", action="store_true", help="PSNR at 5 chunks against sampler settings")
    p.add_argument("--out", default="fidelity_out", help="directory for plots and results.json")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    wm = load(args.model, threads=args.threads)
    cfg = wm.sampler.config
    over = {k: v for k, v in (("num_steps", args.steps), ("solver", args.solver), ("guidance_scale", args.guidance))
            if v is not None}  # fmt: skip
    if over:
        from dataclasses import replace

        wm.sampler.config = cfg = replace(cfg, **over)
    print(f"model {args.model}; sampler {cfg.solver} x {cfg.num_steps} steps, guidance {cfg.guidance_scale}")
    seeds = [HELD_OUT_SEED + i for i in range(args.episodes)]
    results: dict = {"model": args.model, "sampler": vars(cfg).copy()}
    t0 = time.time()
    recs = record(seeds, args.chunks)

    if args.sweep:
        print("\nsampler sweep: PSNR (dB) after 5 chunks, mean over chunks 1-5, seconds per batched chunk")
        sweep_recs = recs[:8]
        true = np.stack([r.frames[1 : 5 * CHUNK + 1] for r in sweep_recs])
        sweep = []
        grid = [("euler", 1, 1.0), ("euler", 2, 1.0), ("euler", 4, 1.0), ("euler", 8, 1.0), ("unipc", 4, 1.0),
                ("unipc", 8, 1.0), ("euler", 4, 2.0), ("euler", 4, 4.0)]  # fmt: skip
        for solver, steps, g in grid:
            from dataclasses import replace

            wm.sampler.config = replace(cfg, solver=solver, num_steps=steps, guidance_scale=g)
            t = time.time()
            pred = imagine(wm, sweep_recs, [r.actions[:5] for r in sweep_recs])
            sec = (time.time() - t) / 5
            row = {"solver": solver, "steps": steps, "guidance": g, "psnr5": psnr(pred[:, -CHUNK:], true[:, -CHUNK:]),
                   "psnr_mean": psnr(pred, true), "sec_per_chunk": sec}  # fmt: skip
            sweep.append(row)
            print(f"  {solver:6s} {steps} steps  g={g:<4}  psnr@5 {row['psnr5']:6.2f}  mean {row['psnr_mean']:6.2f}  "
                  f"{sec:.3f} s/chunk ({len(sweep_recs)} worlds)")  # fmt: skip
        wm.sampler.config = cfg
        results["sweep"] = sweep

    rep = open_loop_report(wm, recs)
    rows = rep["rows"]
    results["open_loop"] = rows
    print(f"\nopen loop, {len(recs)} held-out episodes, PSNR (dB) / SSIM per chunk")
    print("  chunk      " + " ".join(f"{c:>6d}" for c in range(1, args.chunks + 1)))
    for name, r in rows.items():
        print(f"  {name:10s} " + " ".join(f"{v:6.2f}" for v in r["psnr"]))
    for name, r in rows.items():
        print(f"  {name:10s} " + " ".join(f"{v:6.3f}" for v in r["ssim"]))
    gain5 = rows["model"]["psnr"][4] - rows["copy_last"]["psnr"][4] if args.chunks >= 5 else float("nan")
    follow5 = rows["model"]["psnr"][4] - rows["shuffled"]["psnr"][4] if args.chunks >= 5 else float("nan")
    print(
        f"  at chunk 5: model - copy_last = {gain5:+.2f} dB (goal >= 2), right - shuffled actions = "
        f"{follow5:+.2f} dB (goal >= 1)"
    )
    print("\nposition error (workspace units, [-1, 1]^2) from the pixel detector: agent / block (detected)")
    for name, r in rows.items():
        cells = [
            f"@{c}: {e['agent']:.3f} / {e['block']:.3f} ({e['detected']:.0%})" for c, e in r["position_error"].items()
        ]
        print(f"  {name:10s} " + "   ".join(cells))
    for i in range(min(3, len(recs))):
        strip_png(out / f"rollout_{i}.png", rep["true_frames"][i], rep["model_frames"][i])

    success = None
    if args.policy_episodes:
        pseeds = [HELD_OUT_SEED + 10_000 + i for i in range(args.policy_episodes)]
        success = {}
        print(f"\nsuccess rates, {len(pseeds)} episodes x {args.horizon} chunks: simulator vs world model")
        for name, policy in tqdm(graded_policies(CHUNK, seed=7).items(), desc="policies", leave=False):
            s = sim_success(policy, pseeds, args.horizon)[0]
            w = world_success(wm, policy, pseeds, args.horizon)
            success[name] = {"sim": s, "world": w}
            tqdm.write(f"  {name:18s} sim {s:5.0%}   world {w:5.0%}")  # above the bar, not inside it
        sx, wx = [v["sim"] for v in success.values()], [v["world"] for v in success.values()]
        results["policy_success"] = success
        results["pearson"], results["spearman"] = pearson(sx, wx), spearman(sx, wx)
        print(f"  Pearson {results['pearson']:.2f}   Spearman {results['spearman']:.2f} (goal >= 0.9)")

        print("\nthe world model's policy mode acting in the true simulator vs random actions")
        mp = {}
        for t, instruction in enumerate(TASKS):
            m, m_near = model_policy_success(wm, pseeds, args.horizon, t)
            r, r_near = sim_success(RandomPushPolicy(CHUNK, seed=3), pseeds, args.horizon, task=t)
            mp[instruction] = {"model_policy": m, "random": r, "model_closest": m_near, "random_closest": r_near}
            print(f"  {instruction:45s} model {m:5.0%} (closest {m_near:.2f})   random {r:5.0%} (closest {r_near:.2f})")
        results["model_policy"] = mp
    plot(out, rows, success)
    results["seconds"] = time.time() - t0
    (out / "results.json").write_text(json.dumps(results, indent=1, default=float))
    print(f"\n{time.time() - t0:.0f} s; plots and results.json in {out}")


if __name__ == "__main__":
    main()
