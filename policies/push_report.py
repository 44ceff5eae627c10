"""The push world's fidelity against its ground-truth simulator, on held-out seeds: recorded episodes, open-loop
imagination against copy-last-frame and shuffled actions, and success rates of policies in both.

`bench/fidelity.py` prints and plots the full report; the shipped-world tests use the same functions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cosmos3_world.engine import WorldModel
from cosmos3_world.sim.detect import PixelSuccessDetector, detect
from cosmos3_world.sim.env import PushSimEnv
from cosmos3_world.sim.policies import ExpertPushPolicy, RandomPushPolicy
from cosmos3_world.sim.push import TASKS

from .fidelity import psnr as frame_psnr
from .fidelity import ssim as frame_ssim

HELD_OUT_SEED = 10**9  # held-out episodes use seeds HELD_OUT_SEED + i (`collect` draws training seeds below 2**31 - 1
# from small master seeds)
CHUNK = 4  # control steps per chunk, as the embedded world's


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


def _mean_detected(errors: np.ndarray) -> float:
    """Mean of the errors where the detector found the object; NaN (without numpy's warning) where it never did."""
    found = errors[~np.isnan(errors)]
    return float(found.mean()) if found.size else float("nan")


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


def open_loop(wm: WorldModel, recs: list[Recording]) -> dict[str, np.ndarray]:
    """Frames after the start [N, C*4, H, W, 3]: simulated ("true"), imagined with the recorded actions ("model"),
    with the next recording's actions ("shuffled"), and the start frame held ("copy_last")."""
    n = len(recs)
    true = np.stack([r.frames[1:] for r in recs])
    return {"true": true, "model": imagine(wm, recs, [r.actions for r in recs]),
            "shuffled": imagine(wm, recs, [recs[(i + 1) % n].actions for i in range(n)]),
            "copy_last": np.repeat(np.stack([r.frames[:1] for r in recs]), true.shape[1], axis=1)}  # fmt: skip


def later_chunk_gains(wm: WorldModel, episodes: int = 8, chunks: int = 3) -> dict:
    """The shipped test's figure: PSNR over chunks 2..`chunks` of held-out episodes, model minus copy-last-frame
    (pooled and per episode) and right minus shuffled actions."""
    f = open_loop(wm, record([HELD_OUT_SEED + i for i in range(episodes)], chunks))
    later = slice(CHUNK, None)  # chunk 1 is left out: there copy-last-frame is nearly exact

    def gain(a: str, b: str, i: slice | int = slice(None)) -> float:
        return psnr(f[a][i, later], f["true"][i, later]) - psnr(f[b][i, later], f["true"][i, later])

    return {"copy": gain("model", "copy_last"), "shuffled": gain("model", "shuffled"),
            "per_episode": [gain("model", "copy_last", i) for i in range(episodes)]}  # fmt: skip


def open_loop_report(wm: WorldModel, recs: list[Recording]) -> dict:
    """Per-chunk PSNR/SSIM (model, shuffled actions, copy-last-frame) and detector position errors."""
    chunks = recs[0].actions.shape[0]
    frames = open_loop(wm, recs)
    true, model = frames["true"], frames["model"]
    rows = {}
    for name in ("model", "shuffled", "copy_last"):
        pred = frames[name]
        span = [slice(c * CHUNK, (c + 1) * CHUNK) for c in range(chunks)]
        rows[name] = {"psnr": [psnr(pred[:, s], true[:, s]) for s in span],
                      "ssim": [ssim(pred[:, s], true[:, s]) for s in span]}  # fmt: skip
        errs = {}
        for c in (1, 5, 10):
            if c > chunks:
                continue
            f = c * CHUNK  # frame index after c chunks (in r.frames; pred index f - 1)
            e = np.array([position_errors(pred[i, f - 1], r.agent[f], r.block[f]) for i, r in enumerate(recs)])
            errs[c] = {"agent": _mean_detected(e[:, 0]), "block": _mean_detected(e[:, 1]),
                       "detected": float(np.mean(~np.isnan(e).any(axis=1)))}  # fmt: skip
        rows[name]["position_error"] = errs
    return {"rows": rows, "model_frames": model, "true_frames": true}


# ---------------------------------------------------------------------------------------------
# Policies in the simulator and in the world
# ---------------------------------------------------------------------------------------------


def sim_success(policy, seeds: list[int], chunks: int, task: int | None = None) -> tuple[float, float]:
    """A (batched) policy in the simulator within `chunks` chunks: success rate, and the mean over episodes of the
    closest the block came to the instructed goal (workspace units; how near a policy that fails gets)."""
    envs = [PushSimEnv(chunk_size=CHUNK) for _ in seeds]
    opts = None if task is None else {"task": task}
    obs = [e.reset(seed=s, options=opts)[0] for e, s in zip(envs, seeds)]
    policy.reset(seed=seeds[0])
    done = np.zeros(len(seeds), bool)
    closest = np.array([e.sim.goal_distance() for e in envs])  # [N]
    for _ in range(chunks):
        batch = {"pixels": np.stack([o["pixels"] for o in obs]), "agent_pos": np.stack([o["agent_pos"] for o in obs]),
                 "task": [e.task for e in envs]}  # fmt: skip
        acts = policy.act(batch)
        for i, e in enumerate(envs):
            if not done[i]:
                obs[i], _, term, _, info = e.step(acts[i])
                done[i] |= term
                closest[i] = min(closest[i], info["goal_distance"])
        if done.all():
            break
    return float(done.mean()), float(closest.mean())


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


def model_policy_success(wm: WorldModel, seeds: list[int], chunks: int, task: int) -> tuple[float, float]:
    """The world model's policy mode driving the true simulator (each chunk it sees the real frame and acts):
    success rate and mean closest block-to-goal distance, as `sim_success`."""
    envs = [PushSimEnv(chunk_size=CHUNK) for _ in seeds]
    obs = [e.reset(seed=s, options={"task": task})[0] for e, s in zip(envs, seeds)]
    done = np.zeros(len(seeds), bool)
    closest = np.array([e.sim.goal_distance() for e in envs])  # [N]
    for c in range(chunks):
        live = [i for i in range(len(seeds)) if not done[i]]
        worlds = [wm.reset(image=obs[i]["pixels"], instruction=TASKS[task], embodiment="pusht", seed=seeds[i] + c)
                  for i in live]  # fmt: skip
        res = wm.predict(worlds)
        for i, r in zip(live, res):
            obs[i], _, term, _, info = envs[i].step(np.clip(r.actions, -1, 1))
            done[i] |= term
            closest[i] = min(closest[i], info["goal_distance"])
        if done.all():
            break
    return float(done.mean()), float(closest.mean())
