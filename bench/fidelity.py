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
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm.auto import tqdm

from cosmos3_world.engine import WorldModel
from cosmos3_world.engine.sampler import SamplerConfig
from cosmos3_world.policies.fidelity import psnr as frame_psnr
from cosmos3_world.policies.fidelity import ssim as frame_ssim
from cosmos3_world.policies.stats import pearson, spearman
from cosmos3_world.sim.detect import PixelSuccessDetector, detect
from cosmos3_world.sim.env import PushSimEnv
from cosmos3_world.sim.policies import ExpertPushPolicy, RandomPushPolicy, graded_policies
from cosmos3_world.sim.push import TASKS

EMBEDDED = Path(__file__).resolve().parents[1] / "cosmos3_world" / "assets" / "embedded_world"
HELD_OUT_SEED = 10**9  # held-out episodes use seeds HELD_OUT_SEED + i (training seeds are drawn below 2**31 - 1
# by the recorder from small master seeds; the report checks the overlap against a dataset when given one)
CHUNK = 4


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of uint8 frame stacks [..., H, W, 3]: the mean over frames of the per-frame PSNR."""
    pairs = zip(a.reshape(-1, *a.shape[-3:]), b.reshape(-1, *b.shape[-3:]))
    return float(np.mean([min(frame_psnr(x, y), 100.0) for x, y in pairs]))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of uint8 frame stacks [..., H, W, 3]: the mean over frames of the per-frame SSIM."""
    pairs = zip(a.reshape(-1, *a.shape[-3:]), b.reshape(-1, *b.shape[-3:]))
    return float(np.mean([frame_ssim(x, y) for x, y in pairs]))


def position_errors(frame: np.ndarray, agent: np.ndarray, block: np.ndarray) -> tuple[float, float]:
    """Detected agent / block position error (workspace units) on a frame; NaN where not detected."""
    det = detect(frame)
    ea = float(np.hypot(*(det.agent - agent))) if det.agent is not None else np.nan
    eb = float(np.hypot(*(det.block - block[:2]))) if det.block is not None else np.nan
    return ea, eb


# ---------------------------------------------------------------------------------------------
# Ground truth and imagination
# ---------------------------------------------------------------------------------------------


@dataclass
class Recording:
    """A simulator episode of `chunks` chunks."""

    frames: np.ndarray  # [C * 4 + 1, H, W, 3] uint8
    actions: np.ndarray  # [C, 4, 2]
    agent: np.ndarray  # [C * 4 + 1, 2]
    block: np.ndarray  # [C * 4 + 1, 3]
    task: str
    seed: int


def record(seeds: list[int], chunks: int) -> list[Recording]:
    """Simulator episodes under a mix of policies (noisy expert, sloppy expert, random), cycling by seed."""
    out = []
    env = PushSimEnv(chunk_size=CHUNK)
    for i, seed in enumerate(seeds):
        policy = [ExpertPushPolicy(CHUNK, noise=0.08, seed=seed), RandomPushPolicy(CHUNK, seed=seed),
                  ExpertPushPolicy(CHUNK, noise=0.18, random_prob=0.15, seed=seed)][i % 3]  # fmt: skip
        obs, info = env.reset(seed=seed)
        policy.reset(seed=seed)
        frames, agent, block, actions = [info["frames"]], [info["agent_positions"]], [info["block_poses"]], []
        for _ in range(chunks):
            a = np.clip(policy.act({**obs, "task": env.task}), -1, 1).astype(np.float32)
            obs, _, _, _, info = env.step(a)
            actions.append(a)
            frames.append(info["frames"])
            agent.append(info["agent_positions"])
            block.append(info["block_poses"])
        out.append(Recording(np.concatenate(frames), np.stack(actions), np.concatenate(agent), np.concatenate(block),
                             env.task, seed))  # fmt: skip
    return out


def imagine(wm: WorldModel, recs: list[Recording], actions: list[np.ndarray], history: int | None = None) -> np.ndarray:
    """Open-loop rollouts of all recordings in one batch: [N, C * 4, H, W, 3] imagined frames after the start."""
    worlds = [wm.reset(image=r.frames[0], instruction=r.task, embodiment="pusht", seed=r.seed, history=history)
              for r in recs]  # fmt: skip
    out = []
    for c in range(actions[0].shape[0]):
        res = wm.step(worlds, [a[c] for a in actions])
        out.append(np.stack([r.frames for r in res]))
    return np.concatenate(out, axis=1)


def open_loop_report(wm: WorldModel, recs: list[Recording]) -> dict:
    """Per-chunk PSNR/SSIM (model, shuffled actions, copy-last-frame) and detector position errors."""
    n, chunks = len(recs), recs[0].actions.shape[0]
    true = np.stack([r.frames[1:] for r in recs])  # [N, C*4, H, W, 3]
    model = imagine(wm, recs, [r.actions for r in recs])
    shuffled = imagine(wm, recs, [recs[(i + 1) % n].actions for i in range(n)])
    copy = np.repeat(np.stack([r.frames[:1] for r in recs]), chunks * CHUNK, axis=1)
    rows = {}
    for name, pred in (("model", model), ("shuffled", shuffled), ("copy_last", copy)):
        span = [slice(c * CHUNK, (c + 1) * CHUNK) for c in range(chunks)]
        rows[name] = {"psnr": [psnr(pred[:, s], true[:, s]) for s in span],
                      "ssim": [ssim(pred[:, s], true[:, s]) for s in span]}  # fmt: skip
        errs = {}
        for c in (1, 5, 10):
            if c > chunks:
                continue
            f = c * CHUNK  # frame index after c chunks (in r.frames; pred index f - 1)
            e = np.array([position_errors(pred[i, f - 1], r.agent[f], r.block[f]) for i, r in enumerate(recs)])
            errs[c] = {"agent": float(np.nanmean(e[:, 0])), "block": float(np.nanmean(e[:, 1])),
                       "detected": float(np.mean(~np.isnan(e).any(axis=1)))}  # fmt: skip
        rows[name]["position_error"] = errs
    return {"rows": rows, "model_frames": model, "true_frames": true}


# ---------------------------------------------------------------------------------------------
# Policies in the simulator and in the world
# ---------------------------------------------------------------------------------------------


def sim_success(policy, seeds: list[int], chunks: int, task: int | None = None) -> float:
    """Success rate of a (batched) policy in the simulator within `chunks` chunks."""
    envs = [PushSimEnv(chunk_size=CHUNK) for _ in seeds]
    opts = None if task is None else {"task": task}
    obs = [e.reset(seed=s, options=opts)[0] for e, s in zip(envs, seeds)]
    policy.reset(seed=seeds[0])
    done = np.zeros(len(seeds), bool)
    for _ in range(chunks):
        batch = {"pixels": np.stack([o["pixels"] for o in obs]), "agent_pos": np.stack([o["agent_pos"] for o in obs]),
                 "task": [e.task for e in envs]}  # fmt: skip
        acts = policy.act(batch)
        for i, e in enumerate(envs):
            if not done[i]:
                obs[i], _, term, _, _ = e.step(acts[i])
                done[i] |= term
        if done.all():
            break
    return float(done.mean())


def world_success(wm: WorldModel, policy, seeds: list[int], chunks: int) -> float:
    """Success rate of a policy acting on imagined frames (agent_pos from the detector; success from pixels)."""
    env = PushSimEnv(chunk_size=CHUNK)
    starts = [env.reset(seed=s) for s in seeds]
    tasks = [info["task"] for _, info in starts]
    worlds = [wm.reset(image=o["pixels"], instruction=t, embodiment="pusht", seed=s)
              for (o, _), t, s in zip(starts, tasks, seeds)]  # fmt: skip
    pixels = np.stack([o["pixels"] for o, _ in starts])
    agent = np.stack([o["agent_pos"] for o, _ in starts])
    judge = PixelSuccessDetector()
    policy.reset(seed=seeds[0])
    done = np.zeros(len(seeds), bool)
    for _ in range(chunks):
        acts = policy.act({"pixels": pixels, "agent_pos": agent, "task": tasks})
        live = [i for i in range(len(seeds)) if not done[i]]
        res = wm.step([worlds[i] for i in live], [acts[i] for i in live])
        for i, r in zip(live, res):
            pixels[i] = r.frames[-1]
            det = detect(r.frames[-1])
            if det.agent is not None:
                agent[i] = det.agent
            done[i] = bool(judge(r.frames, tasks[i]))
        if done.all():
            break
    return float(done.mean())


def model_policy_success(wm: WorldModel, seeds: list[int], chunks: int, task: int) -> float:
    """The world model's policy mode driving the true simulator: each chunk it sees the real frame and acts."""
    envs = [PushSimEnv(chunk_size=CHUNK) for _ in seeds]
    obs = [e.reset(seed=s, options={"task": task})[0] for e, s in zip(envs, seeds)]
    done = np.zeros(len(seeds), bool)
    for c in range(chunks):
        live = [i for i in range(len(seeds)) if not done[i]]
        worlds = [wm.reset(image=obs[i]["pixels"], instruction=TASKS[task], embodiment="pusht", seed=seeds[i] + c)
                  for i in live]  # fmt: skip
        res = wm.predict(worlds)
        for i, r in zip(live, res):
            obs[i], _, term, _, _ = envs[i].step(np.clip(r.actions, -1, 1))
            done[i] |= term
        if done.all():
            break
    return float(done.mean())


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
    p.add_argument("--horizon", type=int, default=25, help="chunks per policy episode (25 x 4 = 100 control steps)")
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
            s = sim_success(policy, pseeds, args.horizon)
            w = world_success(wm, policy, pseeds, args.horizon)
            success[name] = {"sim": s, "world": w}
            print(f"  {name:18s} sim {s:5.0%}   world {w:5.0%}")
        sx, wx = [v["sim"] for v in success.values()], [v["world"] for v in success.values()]
        results["policy_success"] = success
        results["pearson"], results["spearman"] = pearson(sx, wx), spearman(sx, wx)
        print(f"  Pearson {results['pearson']:.2f}   Spearman {results['spearman']:.2f} (goal >= 0.9)")

        print("\nthe world model's policy mode acting in the true simulator vs random actions")
        mp = {}
        for t, instruction in enumerate(TASKS):
            m = model_policy_success(wm, pseeds, args.horizon, t)
            r = sim_success(RandomPushPolicy(CHUNK, seed=3), pseeds, args.horizon, task=t)
            mp[instruction] = {"model_policy": m, "random": r}
            print(f"  {instruction:45s} model {m:5.0%}   random {r:5.0%}")
        results["model_policy"] = mp
    plot(out, rows, success)
    results["seconds"] = time.time() - t0
    (out / "results.json").write_text(json.dumps(results, indent=1, default=float))
    print(f"\n{time.time() - t0:.0f} s; plots and results.json in {out}")


if __name__ == "__main__":
    main()
