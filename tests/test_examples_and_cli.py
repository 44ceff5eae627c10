"""The examples and the CLI run as a newcomer would run them, and produce what they promise."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cosmos3_world.video import read_video

ROOT = Path(__file__).resolve().parents[1]


def run(args, cwd):
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "examples").glob("*.py") if p.name != "rollout.py"))
def test_example_runs(script, tmp_path):
    out = run([str(ROOT / "examples" / script)], tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip()


def test_example_rollout_writes_a_video(tmp_path):
    out = run([str(ROOT / "examples" / "rollout.py"), "--chunks", "2", "--out", "v.mp4"], tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert read_video(tmp_path / "v.mp4").shape == (1 + 2 * 3, 256, 256, 3)


def test_cli_rollout_writes_a_video(tmp_path):
    out = run(["-m", "cosmos3_world.cli", "rollout", "--chunks", "2", "--steps", "2", "--out", "r.mp4"], tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "chunks/s" in out.stdout
    frames = int(re.search(r"2 chunks, (\d+) frames", out.stdout).group(1))  # 1 + 2 x the default model's chunk
    assert read_video(tmp_path / "r.mp4").shape[0] == frames and (frames - 1) % 2 == 0 and frames > 1


def test_cli_policy_mode_and_build_tiny(tmp_path):
    out = run(["-m", "cosmos3_world.cli", "build-tiny", "bundle"], tmp_path)
    assert out.returncode == 0 and (tmp_path / "bundle" / "model_index.json").is_file()
    out = run(
        [
            "-m",
            "cosmos3_world.cli",
            "rollout",
            "--model",
            "bundle",
            "--policy",
            "model",
            "--chunks",
            "1",
            "--steps",
            "1",
            "--out",
            "p.mp4",
        ],
        tmp_path,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert (tmp_path / "p.mp4").stat().st_size > 0


def test_cli_rejects_bad_arguments(tmp_path):
    out = run(["-m", "cosmos3_world.cli", "rollout", "--embodiment", "nope", "--chunks", "1"], tmp_path)
    assert out.returncode != 0 and "nope" in out.stderr


def test_readme_python_example_is_the_tested_quickstart():
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Using it from Python", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    assert block == (ROOT / "examples" / "quickstart.py").read_text()


def test_cli_help_shows_defaults_and_user_mistakes_are_one_line(tmp_path):
    out = run(["-m", "cosmos3_world.cli", "rollout", "--help"], tmp_path)
    assert out.returncode == 0 and "(default: 8)" in out.stdout and "(unset: the model's)" in out.stdout
    out = run(["-m", "cosmos3_world.cli", "rollout", "--image", "missing.png", "--chunks", "1"], tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "error: --image missing.png: cannot read it as an image" in out.stderr


def test_cli_collect_with_the_shipped_world_as_dagger_learner(tmp_path):
    """`collect --learner`: the world model's policy mode opens each episode, the expert takes over."""
    from cosmos3_world.sim.dataset import iter_episodes, load_index

    out = run(["-m", "cosmos3_world.cli", "collect", "d", "--episodes", "3", "--mix", "expert=1", "--seed", "4",
               "--learner", str(ROOT / "cosmos3_world" / "assets" / "embedded_world"), "--learner-chunks", "2",
               "--max-steps", "24", "--threads", "1"], tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    meta = load_index(tmp_path / "d")
    assert "3 episodes" in out.stdout and meta["learner_chunks"] == 2
    assert meta["learner"] == str((ROOT / "cosmos3_world" / "assets" / "embedded_world").resolve())  # which learner
    assert {ep.expert_from for ep in iter_episodes(tmp_path / "d")} <= {4, 8}


def test_cli_collect_with_a_scripted_learner_pushing_toward_another_goal(tmp_path):
    """`collect --learner expert_other_goal`: each episode opens with the expert of a goal other than the instructed
    one (its first chunk is that expert's, not the instructed goal's), then the instructed expert recovers."""
    from cosmos3_world.sim.dataset import iter_episodes, load_index
    from cosmos3_world.sim.env import PushSimEnv
    from cosmos3_world.sim.policies import ExpertPushPolicy
    from cosmos3_world.sim.push import TASKS

    out = run(["-m", "cosmos3_world.cli", "collect", "d", "--episodes", "4", "--mix", "expert=1", "--seed", "5",
               "--learner", "expert_other_goal", "--learner-chunks", "3", "--max-steps", "60"], tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert load_index(tmp_path / "d")["learner"] == "expert_other_goal"
    for ep in iter_episodes(tmp_path / "d"):
        assert ep.expert_from in (4, 8, 12)
        obs, _ = PushSimEnv(chunk_size=4).reset(seed=ep.seed)
        first = {k: ExpertPushPolicy(4, task=k).act(obs) for k in range(len(TASKS))}  # each goal's expert, chunk 1
        matches = [k for k, a in first.items() if np.allclose(a, ep.actions[:4], atol=1e-6)]
        assert matches and ep.task not in matches, (ep.task, matches)
