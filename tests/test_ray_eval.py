"""evaluate(backend="ray") on a real local Ray cluster: the same outcomes as a local run, also when an actor dies."""

from __future__ import annotations

import os
import sys
import textwrap

import pytest

ray = pytest.importorskip("ray")

from cosmos3_world.policies.evaluate import evaluate, make_eval_env  # noqa: E402
from cosmos3_world.policies.specs import make_policy  # noqa: E402

POLICIES = {"noisy": "sim:expert_noisy", "random": "random"}
ENV = {"id": "Cosmos3PushSim-v0", "kwargs": {}, "num_envs": 2}


def _episodes(results):
    return sorted(({k: v for k, v in e.items() if k != "video"} for e in results["episodes"]), key=lambda e: e["key"])


@pytest.fixture(scope="module")
def local_results():
    env = make_eval_env(ENV["id"], ENV["num_envs"])
    policies = {name: make_policy(spec, env, seed=4) for name, spec in POLICIES.items()}
    return evaluate(policies, env, episodes=3, seed=4, max_episode_steps=15, videos=False, progress=False)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Two simulated nodes of one CPU each (ray.cluster_utils.Cluster), with a crashing policy importable."""
    from ray.cluster_utils import Cluster

    module_dir = tmp_path_factory.mktemp("crashy")
    (module_dir / "crashy_policy.py").write_text(textwrap.dedent(f'''
        import os
        from pathlib import Path
        from cosmos3_world.policies.specs import make_policy

        MARK = Path({str(module_dir)!r}) / "crashed"

        class CrashOnce:
            """The noisy expert, except that the first process to act dies (as a lost node would)."""
            def __init__(self, env):
                self.inner = make_policy("sim:expert_noisy", env, seed=4)
            def reset(self, seed=None):
                self.inner.reset(seed=seed)
            def act(self, obs):
                if not MARK.exists():
                    MARK.write_text(str(os.getpid()))
                    os._exit(1)
                return self.inner.act(obs)
        '''))  # fmt: skip
    old_path = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(module_dir), old_path) if p)
    sys.path.insert(0, str(module_dir))
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    c.add_node(num_cpus=1)
    ray.init(address=c.address, include_dashboard=False, log_to_driver=False)
    yield module_dir
    ray.shutdown()
    c.shutdown()
    sys.path.remove(str(module_dir))
    if old_path is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = old_path


def test_ray_equals_local_and_survives_a_dead_actor(cluster, local_results, tmp_path):
    assert len(ray.nodes()) == 2
    res = evaluate(POLICIES, ENV, backend="ray", workers=2, episodes=3, seed=4, max_episode_steps=15, out=tmp_path,
                   videos=False, progress=False)  # fmt: skip
    assert _episodes(res) == _episodes(local_results)
    assert res["policies"] == local_results["policies"]
    # one actor dies in its first wave: the wave is retried on a fresh actor, nothing lost or counted twice
    crashing = {"noisy": "crashy_policy:CrashOnce", "random": "random"}
    res2 = evaluate(crashing, ENV, backend="ray", workers=2, episodes=3, seed=4, max_episode_steps=15,
                    out=tmp_path / "crash", videos=False, progress=False)  # fmt: skip
    assert (cluster / "crashed").is_file()
    lines = (tmp_path / "crash" / "episodes.jsonl").read_text().splitlines()
    assert len(lines) == len(set(lines)) == 18
    assert [e["success"] for e in _episodes(res2)] == [e["success"] for e in _episodes(local_results)]


def test_ray_backend_needs_specs():
    with pytest.raises(ValueError, match="env as a spec"):
        evaluate(POLICIES, object(), backend="ray")
