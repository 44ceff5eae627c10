"""Policy evaluation: the statistics, the schedule, records that survive a SIGKILL, manifests that re-run, the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from cosmos3_world.policies.evaluate import evaluate, make_eval_env
from cosmos3_world.policies.runner import EpisodeStore, schedule
from cosmos3_world.policies.specs import make_policy
from cosmos3_world.policies.stats import mcnemar_exact, mmrv, paired_comparison, pearson, spearman, wilson_interval
from cosmos3_world.policies.suite import load_suite, suite_from_dict
from cosmos3_world.sim import graded_policies

CLI = [sys.executable, "-m", "cosmos3_world.cli"]


@pytest.mark.parametrize(
    ("k", "n", "expected"),
    [(0, 10, (0.0, 0.27753)), (10, 10, (0.72247, 1.0)), (5, 10, (0.23659, 0.76341)), (0, 1, (0.0, 0.79346)),
     (1, 3, (0.06149, 0.79235)), (0, 0, (0.0, 1.0))],
)  # fmt: skip
def test_wilson_interval_known_values(k, n, expected):
    lo, hi = wilson_interval(k, n)
    assert lo == pytest.approx(expected[0], abs=1e-5) and hi == pytest.approx(expected[1], abs=1e-5)
    with pytest.raises(ValueError, match="successes <= n"):
        wilson_interval(3, 2)


def test_paired_tests_and_rank_agreement():
    assert mcnemar_exact(5, 0) == pytest.approx(0.0625) and mcnemar_exact(3, 3) == 1.0
    cmp = paired_comparison([True, True, False, True], [False, True, False, False])
    assert cmp == {"episodes": 4, "difference": 0.5, "a_only": 2, "b_only": 0, "p_value": 0.5}
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert spearman([0.1, 0.5, 0.9, 0.3], [1, 3, 4, 2]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert mmrv([0.9, 0.5, 0.1], [0.8, 0.6, 0.2]) == 0.0
    # policies 0 and 1 swapped: each gets the reference gap 0.4 as its worst violation, policy 2 none
    assert mmrv([0.9, 0.5, 0.1], [0.5, 0.8, 0.2]) == pytest.approx((0.4 + 0.4 + 0.0) / 3)


def test_schedule_is_paired_and_in_waves():
    eps = schedule([("a", 3), ("b", 2)], seed=10, num_envs=2, policy_names=["p", "q"])
    p, q = [e for e in eps if e.policy == "p"], [e for e in eps if e.policy == "q"]
    assert [(e.task, e.index, e.seed) for e in p] == [(e.task, e.index, e.seed) for e in q]  # same episodes
    assert [e.seed for e in p] == [10, 11, 12, 13, 14] and [e.wave for e in p] == [0, 0, 1, 1, 2]


def test_suite_files_are_checked(tmp_path):
    suite = load_suite()  # the default suite ships with the package
    assert [t.name for t in suite.tasks] == ["green", "blue", "yellow"] and suite.max_episode_steps
    with pytest.raises(ValueError, match=r"tasks\[0\]: unknown keys \['colour'\]"):
        suite_from_dict({"tasks": [{"name": "x", "colour": "red"}]})
    with pytest.raises(ValueError, match="unique"):
        suite_from_dict({"tasks": [{"name": "x"}, {"name": "x"}]})
    with pytest.raises(FileNotFoundError, match="start file"):
        suite_from_dict({"tasks": [{"name": "x", "image": "missing.png"}]}, base=tmp_path)
    (tmp_path / "s.yaml").write_text("name: y\nepisodes: 2\ntasks:\n  - {name: g, task: 0}\n")
    assert load_suite(tmp_path / "s.yaml").episodes == 2


@pytest.fixture()
def sim_env():
    env = make_eval_env("Cosmos3PushSim-v0", 3)
    yield env
    env.close()


def test_evaluate_compares_policies_on_the_same_episodes(sim_env, tmp_path):
    table = graded_policies(chunk_size=4, seed=0)
    res = evaluate({"expert": table["expert"], "random": table["random"]}, sim_env, episodes=3, seed=5,
                   out=tmp_path, max_episode_steps=20, progress=False)  # fmt: skip
    expert, random = res["policies"]["expert"]["overall"], res["policies"]["random"]["overall"]
    assert expert["episodes"] == random["episodes"] == 9
    assert expert["success_rate"] > random["success_rate"]
    assert expert["ci95"] == list(wilson_interval(expert["successes"], 9))
    seeds = {p: [e["seed"] for e in res["episodes"] if e["policy"] == p] for p in ("expert", "random")}
    assert seeds["expert"] == seeds["random"] == list(range(5, 14))
    assert res["comparisons"][0]["episodes"] == 9
    for name in ("manifest.json", "results.json", "episodes.jsonl", "comparison.png"):
        assert (tmp_path / name).is_file()
    video = tmp_path / res["episodes"][0]["video"]
    from cosmos3_world.video import read_video

    assert read_video(video).shape[0] == 1 + 4 * res["episodes"][0]["steps"]  # start frame + every chunk frame
    with pytest.raises(ValueError, match="already holds an evaluation"):
        evaluate(table["expert"], sim_env, episodes=3, seed=5, out=tmp_path, max_episode_steps=20, progress=False)
    with pytest.raises(ValueError, match="manifest differs in"):
        evaluate({"expert": table["expert"], "random": table["random"]}, sim_env, episodes=3, seed=6, out=tmp_path,
                 resume=True, max_episode_steps=20, progress=False)  # fmt: skip


def test_vector_env_needs_autoreset_disabled():
    env = gym.make_vec("Cosmos3PushSim-v0", num_envs=2, vectorization_mode="sync")
    with pytest.raises(ValueError, match="autoreset_mode"):
        evaluate(make_policy("random", env), env, episodes=1, progress=False)


def test_a_torn_last_record_is_dropped(tmp_path):
    path = tmp_path / "episodes.jsonl"
    path.write_text(json.dumps({"key": "a"}) + "\n" + '{"key": "b", "succ')
    store = EpisodeStore(path)
    assert list(store.records) == ["a"] and path.read_text() == json.dumps({"key": "a"}) + "\n"
    store.add({"key": "a"})  # never twice
    store.add({"key": "c"})
    assert [json.loads(line)["key"] for line in path.read_text().splitlines()] == ["a", "c"]


def _eval_cli(out: Path, *extra: str) -> subprocess.Popen:
    args = [*CLI, "eval", "--env", "Cosmos3PushSim-v0", "--policy", "sim:expert_noisy", "--policy", "random",
            "--episodes", "6", "--num-envs", "2", "--seed", "3", "--out", str(out), *extra]  # fmt: skip
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _episodes(path: Path) -> list[dict]:
    return sorted(({k: v for k, v in r.items() if k != "video"} for r in json.loads(path.read_text())["episodes"]),
                  key=lambda r: r["key"])  # fmt: skip


def test_resume_after_sigkill_equals_an_uninterrupted_run(tmp_path):
    full = _eval_cli(tmp_path / "full", "--no-videos")
    assert full.wait(timeout=300) == 0, full.stderr.read()
    killed = _eval_cli(tmp_path / "killed", "--no-videos")
    records = tmp_path / "killed" / "episodes.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not records.is_file() or len(records.read_text().splitlines()) < 5):
        time.sleep(0.05)
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    done_before = len(records.read_text().splitlines())
    assert 5 <= done_before < 36, "the run must be cut short in the middle"
    resumed = _eval_cli(tmp_path / "killed", "--no-videos", "--resume")
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    keys = [json.loads(line)["key"] for line in records.read_text().splitlines()]
    assert len(keys) == len(set(keys)) == 36  # nothing lost, nothing twice
    assert _episodes(tmp_path / "killed" / "results.json") == _episodes(tmp_path / "full" / "results.json")
    full_results = json.loads((tmp_path / "full" / "results.json").read_text())
    resumed_results = json.loads((tmp_path / "killed" / "results.json").read_text())
    assert resumed_results["policies"] == full_results["policies"]


def test_manifest_rerun_has_identical_outcomes(tmp_path):
    first = _eval_cli(tmp_path / "a", "--no-videos")
    assert first.wait(timeout=300) == 0, first.stderr.read()
    args = [*CLI, "eval", "--manifest", str(tmp_path / "a" / "manifest.json"), "--out", str(tmp_path / "b")]
    again = subprocess.run([*args, "--no-videos"], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert _episodes(tmp_path / "a" / "results.json") == _episodes(tmp_path / "b" / "results.json")
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["policies"] == {"sim:expert_noisy": "sim:expert_noisy", "random": "random"}
    assert {"torch", "gymnasium", "numpy"} <= set(manifest["versions"])


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--suite", "missing.json"], "suite file missing.json does not exist"),
     (["--policy", "telepathy"], "policy must be one of"),
     (["--policy", "openpi:127.0.0.1:9"], "no OpenPI server reachable at 127.0.0.1:9"),
     (["--policy", "sim:wizard"], "unknown scripted push policy")],
)  # fmt: skip
def test_cli_errors_are_one_clear_line(args, message, tmp_path):
    out = subprocess.run([*CLI, "eval", "--env", "Cosmos3PushSim-v0", "--out", str(tmp_path / "o"), *args],
                         capture_output=True, text=True, cwd=tmp_path, timeout=120)  # fmt: skip
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr


def test_evaluate_in_the_world_model(tmp_path):
    """The batched world env: every episode recorded with its seed, frames and outcome."""
    env = make_eval_env("Cosmos3World-v0", 2, num_steps=2, guidance_scale=1.0)
    res = evaluate(make_policy("random", env), env, episodes=1, seed=0, max_episode_steps=2, out=tmp_path,
                   progress=False)  # fmt: skip
    assert res["overall"]["episodes"] == 3 and all(e["steps"] == 2 for e in res["episodes"])
    assert len({e["seed"] for e in res["episodes"]}) == 3
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert len(manifest["env"]["model"]["weights_sha256"]) == 64
    env.close()
    assert np.isfinite(res["overall"]["mean_return"])
