"""The machinery of an evaluation: the episode schedule, waves run in an env, records on disk, the manifest,
results and the comparison plot. `evaluate.py` drives it locally, `ray_backend.py` on a Ray cluster.

Episodes are fixed up front by the suite, the seed and the batch size: task by task, episode g of the
run gets seed `seed + g`, and episodes are grouped in *waves* of `num_envs` (one per env of a vector
env). Every policy runs the same waves (paired comparisons). A wave is deterministic given its
episodes, so a wave re-run gives the same outcomes whatever ran before it: an interrupted run resumes
by skipping the waves whose episodes are all recorded and re-running the others, recording only the
episodes it lacks. Each finished episode is appended to `episodes.jsonl` (flushed and fsynced) as it
finishes, so nothing is lost nor counted twice, even after a SIGKILL. Shapes: single env obs
pixels [H, W, 3]; vector env obs pixels [N, H, W, 3], actions [N, *action shape].
"""

from __future__ import annotations

import inspect
import json
import os
import platform
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from .stats import paired_comparison, wilson_interval
from .suite import SuiteTask, TaskSuite

MANIFEST_FORMAT = 1
# Manifest fields that fix which episodes a run holds and how they are batched: a resumed run must match them.
_SCHEDULE_FIELDS = ("suite", "seed", "num_envs", "max_episode_steps", "policies")


@dataclass(frozen=True)
class EpisodeSpec:
    """One episode of the schedule: which policy, task and seed, and where it runs (wave, env slot)."""

    policy: str
    task: str
    index: int  # the episode's number within its task
    seed: int
    wave: int
    slot: int

    @property
    def key(self) -> str:
        return f"{self.policy}/{self.task}/{self.index}"


def schedule(
    tasks: Sequence[tuple[str, int]], seed: int, num_envs: int, policy_names: Sequence[str]
) -> list[EpisodeSpec]:
    """Every episode of a run, in order: per policy, the (task name, episodes) pairs' episodes task by task,
    in waves of num_envs."""
    base = [(task, i) for task, count in tasks for i in range(count)]
    out = []
    for name in policy_names:
        for g, (task, i) in enumerate(base):
            out.append(EpisodeSpec(name, task, i, seed + g, g // num_envs, g % num_envs))
    return out


# ---------------------------------------------------------------------------------------------
# Records on disk
# ---------------------------------------------------------------------------------------------


class EpisodeStore:
    """Finished episodes in `episodes.jsonl`: appended one line at a time, read back tolerating a torn last line."""

    def __init__(self, path: Path):
        self.path = path
        self.records: dict[str, dict[str, Any]] = {}
        if path.is_file():
            with path.open("rb") as f:
                data = f.read()
            good = 0
            for line in data.splitlines(keepends=True):
                if not line.endswith(b"\n"):
                    break  # a write cut short by a crash: drop it (the episode re-runs)
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    break
                self.records.setdefault(record["key"], record)  # first record of a key wins
                good += len(line)
            if good != len(data):
                with path.open("r+b") as f:
                    f.truncate(good)

    def __contains__(self, key: str) -> bool:
        return key in self.records

    def add(self, record: dict[str, Any]) -> None:
        if record["key"] in self.records:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.records[record["key"]] = record


# ---------------------------------------------------------------------------------------------
# Running waves
# ---------------------------------------------------------------------------------------------


def num_envs_of(env: Any) -> int | None:
    """N for a vector env, None for a single env."""
    return int(env.num_envs) if isinstance(env, gym.vector.VectorEnv) else None


def check_vector_env(env: gym.vector.VectorEnv) -> None:
    mode = env.metadata.get("autoreset_mode")
    if mode != gym.vector.AutoresetMode.DISABLED:
        raise ValueError(
            "evaluate() resets each env itself, with the seed of its episode: make the vector env with "
            f"autoreset_mode=gymnasium.vector.AutoresetMode.DISABLED (this one has {mode})"
        )


def _reset_policy(policy: Any, seed: int) -> None:
    """policy.reset(seed=seed) when it takes a seed, else policy.reset()."""
    reset = getattr(policy, "reset", None)
    if reset is None:
        return
    try:
        takes_seed = "seed" in inspect.signature(reset).parameters
    except (TypeError, ValueError):
        takes_seed = False
    reset(seed=seed) if takes_seed else reset()


def _instruction(task: SuiteTask, env: Any, i: int | None) -> str:
    if task.instruction is not None:
        return task.instruction
    if i is None:
        return str(getattr(env.unwrapped, "task_description", "") or "")
    return str(env.call("task_description")[i] or "")


def _pick(info: Mapping[str, Any], key: str, i: int | None, default: Any = None) -> Any:
    """info[key] of env i (vector infos hold arrays with a `_key` mask), or of the single env."""
    if key not in info:
        return default
    if i is None:
        return info[key]
    mask = info.get(f"_{key}")
    if mask is not None and not mask[i]:
        return default
    return info[key][i]


def run_wave(
    policy: Any,
    env: Any,
    episodes: Sequence[EpisodeSpec],
    tasks: Mapping[str, SuiteTask],
    max_steps: int,
    keep_frames: bool,
) -> list[tuple[dict[str, Any], np.ndarray | None]]:
    """Run one wave (one episode per env slot) to its end; per episode its record and frames [T, H, W, 3]."""
    n = num_envs_of(env)
    slots = 1 if n is None else n
    if not 1 <= len(episodes) <= slots:
        raise ValueError(f"a wave holds 1..{slots} episodes, got {len(episodes)}")
    plan = list(episodes) + [episodes[0]] * (slots - len(episodes))  # idle slots replay the first episode, ignored
    if n is None:
        spec = plan[0]
        obs, info = env.reset(seed=spec.seed, options=tasks[spec.task].reset_options())
        infos = [info]
    else:
        # Every env with the first task's options, then the envs of each other task again with theirs (a vector
        # env's options apply to every env it resets).
        seeds = [s.seed for s in plan]
        order = list(dict.fromkeys(s.task for s in plan))
        obs, info = env.reset(seed=seeds, options=tasks[order[0]].reset_options())
        infos = [info] * slots
        for task in order[1:]:
            mask = np.array([s.task == task for s in plan])
            obs, info = env.reset(seed=seeds, options={**tasks[task].reset_options(), "reset_mask": mask})
            infos = [info if mask[i] else infos[i] for i in range(slots)]
    instructions = [_instruction(tasks[s.task], env, None if n is None else i) for i, s in enumerate(plan)]
    _reset_policy(policy, plan[0].seed)
    frames: list[list[np.ndarray]] = [[] for _ in plan]
    if keep_frames:
        for i in range(slots):
            pix = obs["pixels"] if n is None else obs["pixels"][i]
            start = _pick(infos[i], "frames", None if n is None else i)
            frames[i].extend(list(start) if start is not None else [pix])
    active = [True] * len(episodes) + [False] * (slots - len(episodes))
    returns, steps, success = [0.0] * slots, [0] * slots, [False] * slots
    scores: list[float | None] = [None] * slots
    while any(active):
        obs = {**obs, "task": instructions[0] if n is None else list(instructions)}
        actions = policy.act(obs)
        obs, reward, terminated, truncated, info = env.step(actions)
        for i in range(slots):
            if not active[i]:
                continue
            j = None if n is None else i
            returns[i] += float(reward if n is None else reward[i])
            steps[i] += 1
            success[i] = success[i] or bool(_pick(info, "is_success", j, False))
            score = _pick(info, "success_score", j)
            scores[i] = None if score is None else float(score)
            if keep_frames:
                chunk = _pick(info, "frames", j)
                frames[i].extend(
                    list(chunk) if chunk is not None else [obs["pixels"] if n is None else obs["pixels"][i]]
                )
            done = bool(terminated if n is None else terminated[i]) or bool(truncated if n is None else truncated[i])
            if done or steps[i] >= max_steps:
                active[i] = False
        if n is not None and any(active):
            # an env that ended may not be stepped again before a reset: restart its episode (its steps are ignored)
            ended = np.asarray(terminated) | np.asarray(truncated)
            for task in dict.fromkeys(plan[i].task for i in np.flatnonzero(ended)):
                mask = ended & np.array([s.task == task for s in plan])
                opts = {**tasks[task].reset_options(), "reset_mask": mask}
                obs, _ = env.reset(seed=[s.seed for s in plan], options=opts)
    out = []
    for i, spec in enumerate(episodes):
        record = {**asdict(spec), "key": spec.key, "instruction": instructions[i], "success": success[i],
                  "steps": steps[i], "return": returns[i]}  # fmt: skip
        if scores[i] is not None:
            record["score"] = scores[i]
        out.append((record, np.stack(frames[i]) if keep_frames and frames[i] else None))
    return out


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------


def _summary(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    n = len(records)
    k = sum(bool(r["success"]) for r in records)
    lo, hi = wilson_interval(k, n)
    return {
        "success_rate": k / n if n else 0.0,
        "ci95": [lo, hi],
        "successes": k,
        "episodes": n,
        "mean_steps": float(np.mean([r["steps"] for r in records])) if n else 0.0,
        "mean_return": float(np.mean([r["return"] for r in records])) if n else 0.0,
    }


def summarize(records: Sequence[dict[str, Any]], policy_names: Sequence[str], suite: TaskSuite) -> dict[str, Any]:
    """results.json: per policy overall and per task (rate, Wilson 95% interval, means), episodes, paired tests.

    With one policy the top level holds its `overall` and `tasks` directly, as the issue's format asks."""
    by_policy: dict[str, Any] = {}
    order = {spec: i for i, spec in enumerate((t.name, e) for t in suite.tasks for e in range(t.episodes))}
    for name in policy_names:
        mine = sorted((r for r in records if r["policy"] == name), key=lambda r: order[(r["task"], r["index"])])
        by_policy[name] = {
            "overall": _summary(mine),
            "tasks": {t.name: _summary([r for r in mine if r["task"] == t.name]) for t in suite.tasks},
        }
    comparisons = []
    for a_i, a in enumerate(policy_names):
        for b in policy_names[a_i + 1 :]:
            ra = {(r["task"], r["index"]): r["success"] for r in records if r["policy"] == a}
            rb = {(r["task"], r["index"]): r["success"] for r in records if r["policy"] == b}
            common = sorted(set(ra) & set(rb), key=order.__getitem__)
            comparisons.append({"a": a, "b": b, **paired_comparison([ra[k] for k in common], [rb[k] for k in common])})
    episodes = sorted(records, key=lambda r: (list(policy_names).index(r["policy"]), order[(r["task"], r["index"])]))
    results: dict[str, Any] = {"policies": by_policy, "comparisons": comparisons, "episodes": episodes}
    if len(policy_names) == 1:
        results.update(by_policy[policy_names[0]])
    return results


def plot_comparison(results: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """A PNG of success rate per task (and overall) with Wilson 95% interval bars, one bar per policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    policies = list(results["policies"])
    groups = [*next(iter(results["policies"].values()))["tasks"], "overall"]
    width = 0.8 / len(policies)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.3 * len(groups) * max(1, len(policies)) ** 0.5 + 2), 3.6))
    for p_i, name in enumerate(policies):
        stats = [*results["policies"][name]["tasks"].values(), results["policies"][name]["overall"]]
        rates = np.array([s["success_rate"] for s in stats])
        lo = rates - np.array([s["ci95"][0] for s in stats])
        hi = np.array([s["ci95"][1] for s in stats]) - rates
        x = np.arange(len(groups)) + (p_i - (len(policies) - 1) / 2) * width
        ax.bar(x, rates, width, yerr=[lo, hi], capsize=3, label=name)
    ax.set_xticks(np.arange(len(groups)), groups)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("success rate (Wilson 95%)")
    ax.legend(fontsize=8, loc="upper right")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------
# The manifest
# ---------------------------------------------------------------------------------------------


def library_versions() -> dict[str, str]:
    """Versions of what an evaluation's outcome depends on."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for dist in ("cosmos3-world", "torch", "diffusers", "transformers", "gymnasium", "numpy", "opencv-python-headless"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def make_eval_env(env_id: str, num_envs: int, **kwargs: Any) -> gym.vector.VectorEnv:
    """A vector env for evaluate(): autoreset DISABLED; Cosmos3World-v0 natively batched, others synchronous."""
    import cosmos3_world  # noqa: F401  (registers the ids)

    mode = gym.vector.AutoresetMode.DISABLED
    if env_id in ("Cosmos3World-v0", "cosmos3_world:Cosmos3World-v0"):
        return gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="vector_entry_point",
                            autoreset_mode=mode, **kwargs)  # fmt: skip
    return gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="sync", vector_kwargs={"autoreset_mode": mode},
                        **kwargs)  # fmt: skip


def describe_env(env: Any, env_spec: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What the manifest records of the env: how it was made (`env_spec`: id, kwargs) and its world model."""
    out: dict[str, Any] = {"class": type(getattr(env, "unwrapped", env)).__name__}
    if env_spec is not None:
        out.update(
            {"id": env_spec["id"], "kwargs": {k: v for k, v in env_spec.get("kwargs", {}).items() if _jsonable(v)}}
        )
    model = getattr(getattr(env, "unwrapped", env), "model", None)
    describe = getattr(model, "describe", None)
    if callable(describe):
        out["model"] = describe()
    return out


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError):
        return False


def make_manifest(
    suite: TaskSuite,
    seed: int,
    num_envs: int,
    max_episode_steps: int,
    policies: Mapping[str, str],
    env: Any,
    env_spec: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """manifest.json: everything that reproduces the run (suite with start-frame hashes, seeds, batch, policy
    specs, env and model with a hash of its weights, library versions)."""
    return {
        "format": MANIFEST_FORMAT,
        "suite": suite.describe(),
        "seed": seed,
        "num_envs": num_envs,
        "max_episode_steps": max_episode_steps,
        "policies": dict(policies),
        "env": describe_env(env, env_spec),
        "versions": library_versions(),
    }


def render_fps(env: Any) -> float:
    meta = getattr(getattr(env, "unwrapped", env), "metadata", None) or getattr(env, "metadata", {})
    return float(meta.get("render_fps") or 10.0)


class EvaluationRun:
    """The bookkeeping of one evaluation: schedule, records, resume, outputs."""

    def __init__(self, manifest: dict[str, Any], out: str | os.PathLike | None, resume: bool, videos: bool,
                 progress: bool):  # fmt: skip
        self.manifest = manifest
        self.out = None if out is None else Path(out)
        self.videos = videos and self.out is not None
        tasks = [(t["name"], t["episodes"]) for t in manifest["suite"]["tasks"]]
        self.policy_names = list(manifest["policies"])
        self.schedule = schedule(tasks, manifest["seed"], manifest["num_envs"], self.policy_names)
        self.store = EpisodeStore(self.out / "episodes.jsonl") if self.out is not None else None
        self.records: dict[str, dict[str, Any]] = {}
        if self.out is not None:
            self._open(resume)
            self.records.update(self.store.records)
        from tqdm.auto import tqdm

        self.bar = tqdm(total=len(self.schedule), initial=len(self.records), desc="episodes", unit="ep",
                        disable=not progress)  # fmt: skip

    def _open(self, resume: bool) -> None:
        path = self.out / "manifest.json"
        if path.is_file():
            old = json.loads(path.read_text())
            if not resume and self.store.records:
                raise ValueError(f"{self.out} already holds an evaluation: pass resume=True (--resume) to continue "
                                 "it, or choose another output directory")  # fmt: skip
            changed = [k for k in _SCHEDULE_FIELDS if old.get(k) != self.manifest.get(k)]
            if resume and changed:
                raise ValueError(f"cannot resume {self.out}: its manifest differs in {changed}")
        self.out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.manifest, indent=2) + "\n")

    def pending_waves(self, policy: str) -> list[list[EpisodeSpec]]:
        """The waves of `policy` with at least one episode not yet recorded."""
        waves: dict[int, list[EpisodeSpec]] = {}
        for spec in self.schedule:
            if spec.policy == policy:
                waves.setdefault(spec.wave, []).append(spec)
        return [w for w in waves.values() if any(s.key not in self.records for s in w)]

    def record(self, record: dict[str, Any], frames: np.ndarray | None, fps: float) -> None:
        if record["key"] in self.records:
            return  # finished in an earlier, interrupted run
        if frames is not None and self.videos:
            from cosmos3_world.video import write_video

            path = self.out / "videos" / record["policy"] / f"{record['task']}_{record['index']:03d}.mp4"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_video(frames, path, fps=fps, scale=max(1, 256 // max(frames.shape[1:3])))
            record["video"] = str(path.relative_to(self.out))
        if self.store is not None:
            self.store.add(record)
        self.records[record["key"]] = record
        self.bar.update(1)

    def finish(self, suite: TaskSuite) -> dict[str, Any]:
        self.bar.close()
        results = summarize(list(self.records.values()), self.policy_names, suite)
        results["manifest"] = "manifest.json" if self.out is not None else self.manifest
        if self.out is not None:
            (self.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
            plot_comparison(results, self.out / "comparison.png")
        return results
