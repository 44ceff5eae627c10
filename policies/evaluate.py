"""Policy evaluation in a world model (or any Gymnasium env): Monte Carlo episodes, honest statistics,
reproducible runs, nothing lost (the machinery and its guarantees: `runner.py`).

Outputs in `out`: manifest.json (what reproduces the run), episodes.jsonl, results.json
(`overall: {success_rate, ci95, episodes}`, `tasks`, `episodes`, `comparisons`), comparison.png and
one mp4 per episode under videos/<policy>/.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from .runner import EvaluationRun, check_vector_env, make_eval_env, make_manifest, num_envs_of, render_fps, run_wave
from .suite import TaskSuite, resolve_suite

__all__ = ["evaluate", "make_eval_env"]


def _policy_table(policy: Any) -> dict[str, Any]:
    if isinstance(policy, Mapping):
        if not policy:
            raise ValueError("policy must be a policy or a non-empty {name: policy} mapping")
        return dict(policy)
    return {getattr(policy, "name", None) or type(policy).__name__: policy}


def evaluate(
    policy: Any,
    env: Any,
    *,
    suite: TaskSuite | str | os.PathLike | None = None,
    episodes: int | None = None,
    seed: int = 0,
    max_episode_steps: int | None = None,
    out: str | os.PathLike | None = None,
    resume: bool = False,
    videos: bool = True,
    progress: bool = True,
    policy_specs: Mapping[str, str] | None = None,
    env_spec: Mapping[str, Any] | None = None,
    backend: str = "local",
    **backend_options: Any,
) -> dict[str, Any]:
    """Evaluate one policy (or a {name: policy} mapping, compared paired on the same episodes) in `env`.

    env: a Gymnasium env, or a vector env made with autoreset_mode=DISABLED (batched waves). suite: a
    TaskSuite or a suite file (None: the default suite); `episodes` overrides its episodes per task.
    max_episode_steps: steps (chunks) before an episode ends unsuccessful (default: the suite's, else 25).
    out: a directory for manifest, records, results, plots and videos; resume=True continues a run there.
    policy_specs / env_spec: the strings naming the policies (see `specs.py`) and {id, kwargs} of the env,
    recorded in the manifest so that `cosmos3-world eval --manifest` can make the run again.
    backend="ray" runs the waves on Ray actors (see `ray_backend.evaluate_ray`; needs policy_specs and an
    env made from a spec). Returns the results dict (results.json's content).
    """
    if backend == "ray":
        from .ray_backend import evaluate_ray

        return evaluate_ray(policy_specs or policy, env_spec or env, suite=suite, episodes=episodes, seed=seed,
                            max_episode_steps=max_episode_steps, out=out, resume=resume, videos=videos,
                            progress=progress, **backend_options)  # fmt: skip
    if backend != "local":
        raise ValueError(f"backend must be 'local' or 'ray', got {backend!r}")
    if backend_options:
        raise ValueError(f"unknown keywords {sorted(backend_options)} (backend options are for backend='ray')")
    policies = _policy_table(policy)
    suite = resolve_suite(suite, episodes)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    max_steps = max_episode_steps or suite.max_episode_steps or 25
    n = num_envs_of(env)
    if n is not None:
        check_vector_env(env)
    specs = {name: (policy_specs or {}).get(name, repr(p)) for name, p in policies.items()}
    manifest = make_manifest(suite, int(seed), n or 1, max_steps, specs, env, env_spec)
    runner = EvaluationRun(manifest, out, resume, videos, progress)
    tasks = {t.name: t for t in suite.tasks}
    for name, pol in policies.items():
        for wave in runner.pending_waves(name):
            for record, frames in run_wave(pol, env, wave, tasks, max_steps, keep_frames=runner.videos):
                runner.record(record, frames, fps=render_fps(env))
    return runner.finish(suite)
