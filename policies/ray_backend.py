"""evaluate() on a Ray cluster: actors each load the env (and its world model) once and run whole waves.

The driver keeps the bookkeeping of a local run (schedule, episodes.jsonl, resume, results), so the
aggregate equals the local run's for the same manifest: a wave is deterministic given its episodes,
wherever it runs. Waves go to whichever actor is free; a wave whose actor dies is queued again for
another (a replacement actor is started), and its episodes are recorded once, when a wave returns.
One actor per GPU when the cluster has GPUs (`num_gpus=1`), else `num_cpus` each.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from .runner import EpisodeSpec, EvaluationRun, make_manifest, run_wave
from .suite import SuiteTask, TaskSuite, resolve_suite


class _Worker:
    """A Ray actor: one vector env (one model) and the named policies, running waves on request."""

    def __init__(self, env_spec: Mapping[str, Any], policy_specs: Mapping[str, str], seed: int):
        from .runner import make_eval_env
        from .specs import make_policy

        self.env = make_eval_env(env_spec["id"], int(env_spec.get("num_envs", 1)), **dict(env_spec.get("kwargs", {})))
        self.policies = {name: make_policy(spec, self.env, seed=seed) for name, spec in policy_specs.items()}

    def describe(self) -> tuple[dict[str, Any], float]:
        """The env as the manifest records it, and its render fps (for the videos)."""
        from .runner import describe_env, render_fps

        return describe_env(self.env), render_fps(self.env)

    def pid(self) -> int:
        return os.getpid()

    def run(self, policy: str, wave: Sequence[EpisodeSpec], tasks: Mapping[str, SuiteTask], max_steps: int,
            keep_frames: bool):  # fmt: skip
        return run_wave(self.policies[policy], self.env, wave, tasks, max_steps, keep_frames)


def evaluate_ray(
    policy_specs: Mapping[str, str] | Sequence[str],
    env_spec: Mapping[str, Any],
    *,
    suite: TaskSuite | str | os.PathLike | None = None,
    episodes: int | None = None,
    seed: int = 0,
    max_episode_steps: int | None = None,
    out: str | os.PathLike | None = None,
    resume: bool = False,
    videos: bool = True,
    progress: bool = True,
    address: str | None = None,
    workers: int = 2,
    num_cpus: float = 1,
    max_retries: int = 3,
) -> dict[str, Any]:
    """evaluate(..., backend="ray"): policies and env given by spec (strings, {id, kwargs, num_envs}).

    address: a cluster to join ("auto", "ray://..."); None joins the one already initialised in this process
    or starts a local one. workers: actors to start (each loads the model once). A wave is retried on
    another actor up to `max_retries` times when its actor dies.
    """
    import ray

    if not isinstance(env_spec, Mapping) or "id" not in env_spec:
        raise ValueError("backend='ray' needs the env as a spec {'id': ..., 'kwargs': {...}, 'num_envs': N}, "
                         "so that every actor can make its own")  # fmt: skip
    specs = {s: s for s in policy_specs} if not isinstance(policy_specs, Mapping) else dict(policy_specs)
    if not specs or not all(isinstance(v, str) for v in specs.values()):
        raise ValueError("backend='ray' needs the policies as spec strings (see cosmos3_world.policies.specs)")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive int, got {workers!r}")
    suite = resolve_suite(suite, episodes)
    max_steps = max_episode_steps or suite.max_episode_steps or 25
    num_envs = int(env_spec.get("num_envs", 1))
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    actor_cls = ray.remote(num_gpus=gpus, num_cpus=0 if gpus else num_cpus, max_restarts=0)(_Worker)

    def start() -> Any:
        return actor_cls.remote(dict(env_spec), specs, int(seed))

    actors = [start() for _ in range(workers)]
    env_description, fps = ray.get(actors[0].describe.remote())
    manifest = make_manifest(suite, int(seed), num_envs, max_steps, specs, None, None)
    manifest["env"] = {**env_description, "id": env_spec["id"], "kwargs": dict(env_spec.get("kwargs", {}))}
    manifest["backend"] = {"name": "ray", "workers": workers}
    run = EvaluationRun(manifest, out, resume, videos, progress)
    tasks = {t.name: t for t in suite.tasks}
    queue = [(name, wave, 0) for name in specs for wave in run.pending_waves(name)]
    running: dict[Any, tuple[Any, str, list[EpisodeSpec], int]] = {}  # ref -> (actor, policy, wave, tries)
    idle = list(actors)
    try:
        while queue or running:
            while queue and idle:
                name, wave, tries = queue.pop(0)
                actor = idle.pop()
                ref = actor.run.remote(name, wave, tasks, max_steps, run.videos)
                running[ref] = (actor, name, wave, tries)
            done, _ = ray.wait(list(running), num_returns=1)
            actor, name, wave, tries = running.pop(done[0])
            try:
                results = ray.get(done[0])
            except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError):
                if tries + 1 > max_retries:
                    raise RuntimeError(f"a wave of policy {name!r} failed on {tries + 1} actors; giving up") from None
                queue.insert(0, (name, wave, tries + 1))  # the same wave, first in line, on another actor
                idle.append(start())  # replace the dead actor
                continue
            for record, frames in results:
                run.record(record, frames, fps=fps)
            idle.append(actor)
    finally:
        for actor in actors + idle:
            try:
                ray.kill(actor)
            except Exception:  # already dead
                pass
    return run.finish(suite)
