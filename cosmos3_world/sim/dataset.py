"""Record push-simulator episodes for world-model training, and read them back.

On-disk format (``FORMAT_VERSION`` 1), one directory:

``index.json``::

    {"format_version": 1, "image_size": 64, "chunk_size": 4, "control_fps": 10, "max_steps": 40,
     "seed": 0, "tasks": [instruction, ...], "mix": {policy: weight}, "learner_chunks": 0,
     "learner": null | name (a scripted learner's, or the bundle directory a DAgger learner was loaded from),
     "episodes": [{"file": "episode_000000.npz", "length": T, "success": bool, "task": int, "seed": int,
                   "policy": str, "expert_from": int}, ...]}

``episode_XXXXXX.npz`` (``np.savez_compressed``, loadable with ``allow_pickle=False``):

    frames       [T+1, H, W, 3] uint8   the start frame, then one frame per control step
    actions      [T, 2] float32         commanded target positions (already clipped to [-1, 1])
    agent_pos    [T+1, 2] float32       agent position on each frame
    block_pose   [T+1, 3] float32       ground-truth block (x, y, angle) on each frame
    goals        [K, 2] float32         goal centres, in the order of ``push.GOAL_COLOURS``
    success      bool                   the block reached the instructed goal (the episode then ends)
    instruction  str, task int (index into ``push.TASKS``), seed int (env reset seed), policy str
    expert_from  int (optional, 0 if absent)   the first step acted by ``policy``: the steps before it were a
                                            learner's (DAgger collection: ``collect(learner=...)``)

T is a multiple of the chunk size: episodes end at success or after ``max_steps`` control steps (rounded up to a
whole chunk). The default mix holds experts, noisy/lazy/sloppy experts and random play, so a world model sees both
purposeful pushes and arbitrary motions, contacts and misses.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .env import PushSimEnv
from .policies import PushPolicy, graded_policies
from .push import CONTROL_FPS, MAX_CONTROL_STEPS, TASKS

FORMAT_VERSION = 1

DEFAULT_MIX: dict[str, float] = {
    "expert": 0.3,
    "expert_noisy": 0.2,
    "expert_wrong_goal": 0.1,
    "expert_lazy": 0.1,
    "expert_sloppy": 0.1,
    "random": 0.2,
}


@dataclass
class Episode:
    """One recorded episode (see the module docstring for shapes)."""

    frames: np.ndarray  # [T+1, H, W, 3] uint8
    actions: np.ndarray  # [T, 2] float32
    agent_pos: np.ndarray  # [T+1, 2] float32
    block_pose: np.ndarray  # [T+1, 3] float32
    goals: np.ndarray  # [K, 2] float32
    success: bool
    instruction: str
    task: int
    seed: int
    policy: str
    expert_from: int = 0  # steps before it were acted by a learner (DAgger), the rest by `policy`

    def __len__(self) -> int:
        return len(self.actions)


def collect(
    out_dir: str | Path,
    episodes: int,
    mix: Mapping[str, float] | None = None,
    *,
    policies: Mapping[str, PushPolicy] | None = None,
    seed: int = 0,
    chunk_size: int = 4,
    max_steps: int = MAX_CONTROL_STEPS,
    image_size: int = 64,
    progress: bool = True,
    learner: PushPolicy | None = None,
    learner_chunks: int = 4,
    learner_name: str | None = None,
) -> Path:
    """Record ``episodes`` episodes into ``out_dir``; returns the path of ``index.json``.

    ``mix`` maps policy names to sampling weights (default ``DEFAULT_MIX``); names refer to ``policies`` (objects
    with ``reset(seed=)`` and ``act(obs)``), by default ``graded_policies(chunk_size, seed)``. Everything (policy
    choice, env and policy seeds) follows from ``seed``. With a ``learner`` (DAgger, Ross et al. 2011), each
    episode's first 1 .. ``learner_chunks`` chunks (uniformly) are the learner's and the mix's policy takes over
    from the state the learner left (``Episode.expert_from``): demonstrations of recovering from a learner's states.
    ``learner_name`` is recorded in the index (which learner made the episodes' openings).
    """
    if learner is not None and learner_chunks < 1:
        raise ValueError(f"learner_chunks must be >= 1 with a learner, got {learner_chunks}")
    policies = dict(policies) if policies is not None else graded_policies(chunk_size, seed)
    mix = dict(mix) if mix is not None else {k: v for k, v in DEFAULT_MIX.items() if k in policies}
    unknown = set(mix) - set(policies)
    if unknown:
        raise ValueError(f"mix names unknown policies {sorted(unknown)}; known: {sorted(policies)}")
    names = list(mix)
    weights = np.array([mix[n] for n in names], dtype=np.float64)
    if weights.min() < 0 or weights.sum() <= 0:
        raise ValueError(f"mix weights must be >= 0 with a positive sum, got {mix}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    learn_rng = np.random.default_rng([seed, 1])  # its own stream: the same seed starts the same episodes either way
    env = PushSimEnv(chunk_size=chunk_size, image_size=image_size)
    n_chunks = -(-max_steps // chunk_size)
    index = []
    for i in tqdm(range(episodes), desc="collect", disable=not progress):
        name = names[int(rng.choice(len(names), p=weights / weights.sum()))]
        ep_seed = int(rng.integers(2**31 - 1))
        learn = int(learn_rng.integers(1, learner_chunks + 1)) if learner is not None else 0
        episode = _record(env, policies[name], name, ep_seed, n_chunks, learner, learn)
        file = f"episode_{i:06d}.npz"
        save_episode(out / file, episode)
        index.append(
            {
                "file": file,
                "length": len(episode),
                "success": episode.success,
                "task": episode.task,
                "seed": ep_seed,
                "policy": name,
                "expert_from": episode.expert_from,
            }
        )
    env.close()
    meta = {
        "format_version": FORMAT_VERSION,
        "image_size": image_size,
        "chunk_size": chunk_size,
        "control_fps": CONTROL_FPS,
        "max_steps": max_steps,
        "seed": seed,
        "tasks": list(TASKS),
        "mix": mix,
        "learner_chunks": learner_chunks if learner is not None else 0,
        "learner": (learner_name or type(learner).__name__) if learner is not None else None,
        "episodes": index,
    }
    path = out / "index.json"
    path.write_text(json.dumps(meta, indent=1))
    return path


def _record(
    env: PushSimEnv,
    policy: PushPolicy,
    name: str,
    seed: int,
    n_chunks: int,
    learner: PushPolicy | None = None,
    learner_chunks: int = 0,
) -> Episode:
    """Run one episode from ``env.reset(seed=seed)`` until success or ``n_chunks`` chunks; the first
    ``learner_chunks`` chunks are ``learner``'s."""
    obs, info = env.reset(seed=seed)
    policy.reset(seed=seed)
    if learner is not None:
        learner.reset(seed=seed)
    frames, agent, block, actions = [info["frames"]], [info["agent_positions"]], [info["block_poses"]], []
    success = False
    for c in range(n_chunks):
        actor = learner if c < learner_chunks else policy
        action = np.asarray(actor.act({**obs, "task": env.task}), dtype=np.float32)
        actions.append(np.clip(action.reshape(env.chunk_size, 2), -1.0, 1.0))
        obs, _, terminated, truncated, info = env.step(action)
        frames.append(info["frames"])
        agent.append(info["agent_positions"])
        block.append(info["block_poses"])
        success = bool(info["is_success"])
        if terminated or truncated:
            break
    return Episode(
        frames=np.concatenate(frames),
        actions=np.concatenate(actions),
        agent_pos=np.concatenate(agent),
        block_pose=np.concatenate(block),
        goals=env.sim.state.goals.astype(np.float32),
        success=success,
        instruction=env.task,
        task=int(env.task_index),
        seed=seed,
        policy=name,
        expert_from=min(learner_chunks, len(actions)) * env.chunk_size,
    )


def save_episode(path: str | Path, episode: Episode) -> None:
    """Write one episode as a compressed ``.npz``."""
    np.savez_compressed(
        path,
        frames=episode.frames,
        actions=episode.actions,
        agent_pos=episode.agent_pos,
        block_pose=episode.block_pose,
        goals=episode.goals,
        success=np.bool_(episode.success),
        instruction=np.str_(episode.instruction),
        task=np.int64(episode.task),
        seed=np.int64(episode.seed),
        policy=np.str_(episode.policy),
        expert_from=np.int64(episode.expert_from),
    )


def load_episode(path: str | Path) -> Episode:
    """Read one ``.npz`` episode."""
    with np.load(path, allow_pickle=False) as data:
        return Episode(
            frames=data["frames"],
            actions=data["actions"],
            agent_pos=data["agent_pos"],
            block_pose=data["block_pose"],
            goals=data["goals"],
            success=bool(data["success"]),
            instruction=str(data["instruction"]),
            task=int(data["task"]),
            seed=int(data["seed"]),
            policy=str(data["policy"]),
            expert_from=int(data["expert_from"]) if "expert_from" in data else 0,
        )


def load_index(directory: str | Path) -> dict:
    """The dataset's ``index.json`` (checks the format version)."""
    meta = json.loads((Path(directory) / "index.json").read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"unsupported dataset format {meta.get('format_version')!r}; expected {FORMAT_VERSION}")
    return meta


def iter_episodes(directory: str | Path) -> Iterator[Episode]:
    """Episodes of a dataset directory in index order."""
    directory = Path(directory)
    for entry in load_index(directory)["episodes"]:
        yield load_episode(directory / entry["file"])
