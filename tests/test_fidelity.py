"""Simulator fidelity: image metrics, open-loop replay with a known answer, the episode readers, rank agreement."""

from __future__ import annotations

import numpy as np
import pytest

from cosmos3_world.engine.sampler import SamplerConfig
from cosmos3_world.engine.world import WorldModel
from cosmos3_world.policies.fidelity import (
    RecordedEpisode,
    plot_drift,
    psnr,
    ranking_agreement,
    read_lerobot,
    read_video_npz,
    replay,
    replay_report,
    ssim,
)
from cosmos3_world.testing.lerobot import write_lerobot_v3
from cosmos3_world.testing.tiny import demo_image
from cosmos3_world.video import write_video


def test_image_metrics_known_values():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    assert psnr(a, a) == float("inf") and ssim(a, a) == pytest.approx(1.0)
    b = np.clip(a.astype(int) + 10, 0, 255).astype(np.uint8)
    mse = np.mean((a.astype(float) - b) ** 2)
    assert psnr(a, b) == pytest.approx(10 * np.log10(255**2 / mse))
    noisy = np.clip(a + rng.normal(0, 40, a.shape), 0, 255).astype(np.uint8)
    assert 0 < ssim(a, noisy) < ssim(a, b) < 1


@pytest.fixture(scope="module")
def wm(tiny_bundle):
    return WorldModel.from_pretrained(tiny_bundle, sampler=SamplerConfig(num_steps=2, guidance_scale=1.0))


def test_replay_of_the_models_own_rollout_is_exact(wm):
    """Known answer: an episode recorded from the world model itself, replayed with the same seed, is reproduced
    exactly (PSNR inf, SSIM 1), while the copy-last-frame baseline is not."""
    start = demo_image(seed=3)
    actions = np.random.default_rng(1).uniform(-1, 1, (8, 2)).astype(np.float32)
    world = wm.reset(start, "push the block", "pusht", seed=11, chunk_size=4)
    frames = [world.last_frame[None]] + [world.step(actions[i : i + 4]).frames for i in (0, 4)]
    episode = RecordedEpisode(np.concatenate(frames), actions, "push the block", name="own")
    out = replay(wm, episode, embodiment="pusht", chunk_size=4, seed=11)
    assert [r["chunk"] for r in out["chunks"]] == [1, 2]
    assert all(r["psnr"] == float("inf") and r["ssim"] == pytest.approx(1.0) for r in out["chunks"])
    assert all(np.isfinite(r["baseline_psnr"]) and r["baseline_ssim"] < 1 for r in out["chunks"])
    other = replay(wm, episode, embodiment="pusht", chunk_size=4, seed=12)  # other noise: not exact any more
    assert all(np.isfinite(r["psnr"]) for r in other["chunks"])
    report = replay_report([out, other])
    assert report[0]["episodes"] == 2 and report[0]["psnr"] == float("inf")


def test_video_npz_and_lerobot_readers(tmp_path):
    rng = np.random.default_rng(2)
    frames = np.stack([np.full((64, 64, 3), 20 * i, np.uint8) for i in range(9)])
    frames[:, 10:30, 10:30] = (200, 40, 40)
    actions = rng.uniform(-1, 1, (8, 2)).astype(np.float32)
    write_video(frames, tmp_path / "ep.mp4", fps=10)
    np.savez(tmp_path / "ep.npz", actions=actions, instruction="push", fps=10.0)
    ep = read_video_npz(tmp_path / "ep.mp4", tmp_path / "ep.npz")
    assert ep.frames.shape == (9, 64, 64, 3) and np.array_equal(ep.actions, actions) and ep.instruction == "push"
    assert psnr(ep.frames[4], frames[4]) > 30  # mp4 is lossy, but close
    # LeRobot v3: two episodes packed in one parquet file and one mp4; read the second
    second = np.stack([np.full((64, 64, 3), 255 - 20 * i, np.uint8) for i in range(6)])
    second_actions = rng.uniform(-1, 1, (6, 2)).astype(np.float32)
    root = write_lerobot_v3(tmp_path / "ds", [(frames, np.vstack([actions, actions[-1:]]), "push left"),
                                              (second, second_actions, "push right")])  # fmt: skip
    ep1 = read_lerobot(root, 1)
    assert ep1.frames.shape == (6, 64, 64, 3) and ep1.instruction == "push right" and ep1.fps == 10.0
    assert np.allclose(ep1.actions, second_actions[:-1])  # the last frame has no following action
    assert all(psnr(a, b) > 30 for a, b in zip(ep1.frames, second))
    with pytest.raises(ValueError, match="no episode 7"):
        read_lerobot(root, 7)
    with pytest.raises(ValueError, match="camera must be one of"):
        read_lerobot(root, 0, camera="observation.images.wrist")


def test_ranking_agreement_and_plots(tmp_path):
    ref = {"a": 0.9, "b": 0.6, "c": 0.3, "d": 0.1}
    out = ranking_agreement(ref, {"a": 0.8, "b": 0.65, "c": 0.2, "d": 0.15}, plot=tmp_path / "scatter.png")
    assert out["spearman"] == pytest.approx(1.0) and out["mmrv"] == 0.0 and out["policies"] == 4
    swapped = ranking_agreement(ref, {"a": 0.5, "b": 0.8, "c": 0.2, "d": 0.15})
    assert swapped["mmrv"] > 0 and swapped["spearman"] < 1
    assert (tmp_path / "scatter.png").stat().st_size > 1000
    report = [{"chunk": 1, "psnr": 30.0, "ssim": 0.9, "baseline_psnr": 25.0, "baseline_ssim": 0.8}]
    assert plot_drift(report, tmp_path / "drift.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="at least 2 common policies"):
        ranking_agreement({"a": 1.0}, {"a": 1.0})


def test_cli_replay_writes_report_plot_and_videos(tmp_path, tiny_bundle):
    import json
    import subprocess
    import sys

    rng = np.random.default_rng(5)
    frames = np.stack([demo_image(seed=i % 3) for i in range(9)])
    root = write_lerobot_v3(tmp_path / "ds", [(frames, rng.uniform(-1, 1, (9, 2)).astype(np.float32), "push")])
    args = [sys.executable, "-m", "cosmos3_world.cli", "replay", "--lerobot", str(root), "--model", str(tiny_bundle),
            "--embodiment", "pusht", "--chunk-size", "4", "--steps", "1", "--out", str(tmp_path / "out")]  # fmt: skip
    out = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads((tmp_path / "out" / "replay.json").read_text())
    assert [r["chunk"] for r in report["per_chunk"]] == [1, 2]
    assert (tmp_path / "out" / "drift.png").is_file() and (tmp_path / "out" / "episode_000000_imagined.mp4").is_file()


def test_push_report_success_and_closest_distance_in_the_simulator():
    """`sim_success`: the expert succeeds and brings the block within the tolerance; random fails far off; the
    closest distance is never above the start distance."""
    from cosmos3_world.policies.push_report import CHUNK, HELD_OUT_SEED, sim_success
    from cosmos3_world.sim.policies import ExpertPushPolicy, RandomPushPolicy

    seeds = [HELD_OUT_SEED + i for i in range(4)]
    start = float(np.mean([_start_distance(s) for s in seeds]))  # >= 0.7: the start keeps the block off the goal
    expert, expert_near = sim_success(ExpertPushPolicy(CHUNK, seed=0), seeds, 10, task=0)
    random, random_near = sim_success(RandomPushPolicy(CHUNK, seed=0), seeds, 1, task=0)
    assert expert == 1.0 and expert_near <= 0.1
    assert random == 0.0 and 0.3 < random_near <= start + 1e-9


def _start_distance(seed: int) -> float:
    from cosmos3_world.sim.env import PushSimEnv

    env = PushSimEnv(chunk_size=4)
    env.reset(seed=seed, options={"task": 0})
    return env.sim.goal_distance()
