"""Scripted push policies of graded skill that act from observations only.

They read the pixels through the detector, ``agent_pos`` and the instruction (``obs["task"]``, or ``task=`` given to
the constructor / ``reset``), never the simulator's state, so they run unchanged on the world-model env.

Protocol: ``reset(seed=None, task=None)``; ``act(obs)`` returns target positions float32 [chunk_size, 2] for one
observation (pixels [H, W, 3], agent_pos [2], task str) and [N, chunk_size, 2] for a batch (pixels [N, H, W, 3],
agent_pos [N, 2], task: list of N str). Per-environment state (random streams, plans) is kept per batch index.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .detect import Detection, PushDetector
from .push import GOAL_COLOURS, TASK_GOALS, PushConfig, task_index


@runtime_checkable
class PushPolicy(Protocol):
    """What the recorder and the evaluation harness need from a policy."""

    def reset(self, seed: int | None = None) -> None: ...

    def act(self, obs: dict[str, Any]) -> np.ndarray: ...


@dataclass
class _Slot:
    """Per-environment (batch index) state of a policy."""

    rng: np.random.Generator
    plan: list[np.ndarray] = field(default_factory=list)  # queued targets [2]
    goal: str | None = None  # goal colour pursued this episode
    target: np.ndarray | None = None  # random policy: held target
    hold: int = 0  # random policy: steps left on the held target


class _Policy:
    """Shared plumbing: single vs batched observations, tasks, per-slot random streams."""

    def __init__(self, chunk_size: int = 4, seed: int | None = None, task: int | str | None = None):
        self.chunk_size = int(chunk_size)
        self.config = PushConfig()
        self.detector = PushDetector(config=self.config)
        self._seed = seed
        self._task = task
        self._slots: dict[int, _Slot] = {}

    def reset(self, seed: int | None = None, task: int | str | None = None) -> None:
        """Start new episodes: forget plans; reseed if ``seed`` is given; set a default task if ``task`` is."""
        if seed is not None:
            self._seed = seed
            self._slots = {}
        for slot in self._slots.values():
            slot.plan, slot.goal, slot.target, slot.hold = [], None, None, 0
        if task is not None:
            self._task = task

    def act(self, obs: dict[str, Any]) -> np.ndarray:
        """Target positions float32 [chunk_size, 2] (single obs) or [N, chunk_size, 2] (batched obs)."""
        pixels = np.asarray(obs["pixels"])
        agent_pos = np.asarray(obs["agent_pos"], dtype=np.float64)
        task = obs.get("task", self._task)
        if pixels.ndim == 3:
            return self._act_one(self._slot(0), pixels, agent_pos.reshape(2), self._goal_colour(task))
        if pixels.ndim != 4:
            raise ValueError(f"obs['pixels'] must be [H, W, 3] or [N, H, W, 3], got shape {pixels.shape}")
        n = pixels.shape[0]
        tasks = list(task) if isinstance(task, (list, tuple, np.ndarray)) else [task] * n
        if len(tasks) != n:
            raise ValueError(f"obs['task'] has {len(tasks)} entries for a batch of {n}")
        agent_pos = agent_pos.reshape(n, 2)
        return np.stack(
            [self._act_one(self._slot(i), pixels[i], agent_pos[i], self._goal_colour(tasks[i])) for i in range(n)]
        )

    def _act_one(self, slot: _Slot, pixels: np.ndarray, agent: np.ndarray, goal: str) -> np.ndarray:
        raise NotImplementedError

    def _slot(self, i: int) -> _Slot:
        if i not in self._slots:
            rng = np.random.default_rng(None if self._seed is None else [self._seed, i])
            self._slots[i] = _Slot(rng)
        return self._slots[i]

    @staticmethod
    def _goal_colour(task: Any) -> str:
        if task is None:
            raise ValueError("the policy needs the instruction: pass obs['task'] or task= to the constructor/reset")
        return TASK_GOALS[task_index(task)]


def _support(direction: np.ndarray, angle: float, half: float) -> float:
    """Distance from the square's centre to its boundary along the unit ``direction``."""
    c, s = math.cos(angle), math.sin(angle)
    ux, uy = c * direction[0] + s * direction[1], -s * direction[0] + c * direction[1]
    return half / max(abs(ux), abs(uy), 1e-9)


def _walk(path: list[np.ndarray], step: float, count: int) -> list[np.ndarray]:
    """Points at arc lengths step, 2 step, ... count step along the polyline ``path`` (clamped to its end)."""
    out, seg, pos, travelled = [], 0, path[0], 0.0
    for k in range(1, count + 1):
        goal_len = k * step
        while seg < len(path) - 1:
            nxt = path[seg + 1]
            length = float(np.hypot(*(nxt - pos)))
            if travelled + length >= goal_len:
                pos = pos + (nxt - pos) * ((goal_len - travelled) / max(length, 1e-12))
                travelled = goal_len
                break
            travelled += length
            pos, seg = nxt, seg + 1
        out.append(pos.copy())
    return out


class ExpertPushPolicy(_Policy):
    """Approach behind the block (relative to the instructed goal) around it, then push it through to the goal.

    Skill knobs: ``noise`` (std of Gaussian noise on the targets), ``wrong_goal_prob`` (per episode, pursue another
    goal), ``replan_every`` (chunks executed open-loop from one observation), ``random_prob`` (per chunk, head for a
    uniformly random target instead), ``speed`` (fraction of the agent's top speed).
    """

    def __init__(
        self,
        chunk_size: int = 4,
        noise: float = 0.0,
        seed: int | None = None,
        task: int | str | None = None,
        wrong_goal_prob: float = 0.0,
        replan_every: int = 1,
        random_prob: float = 0.0,
        speed: float = 1.0,
    ):
        super().__init__(chunk_size, seed, task)
        self.noise = float(noise)
        self.wrong_goal_prob = float(wrong_goal_prob)
        self.replan_every = int(replan_every)
        self.random_prob = float(random_prob)
        self.speed = float(speed)

    def _act_one(self, slot: _Slot, pixels: np.ndarray, agent: np.ndarray, goal: str) -> np.ndarray:
        if slot.goal is None:  # decided once per episode
            slot.goal = goal
            if self.wrong_goal_prob > 0 and slot.rng.random() < self.wrong_goal_prob:
                slot.goal = str(slot.rng.choice([c for c in GOAL_COLOURS if c != goal]))
        if self.random_prob > 0 and slot.rng.random() < self.random_prob:
            slot.plan = []
            targets = slot.rng.uniform(-1, 1, size=(1, 2)).repeat(self.chunk_size, 0)
        else:
            if len(slot.plan) < self.chunk_size:
                det = self.detector(pixels)
                step = self.config.max_speed * self.speed
                slot.plan = _walk(self.plan_path(agent, det, slot.goal), step, self.chunk_size * self.replan_every)
            targets = np.stack(slot.plan[: self.chunk_size])
            slot.plan = slot.plan[self.chunk_size :]
        if self.noise > 0:
            targets = targets + slot.rng.normal(0.0, self.noise, size=targets.shape)
        return np.clip(targets, -1.0, 1.0).astype(np.float32)

    def plan_path(self, agent: np.ndarray, det: Detection, goal_colour: str) -> list[np.ndarray]:
        """Polyline [p0 = agent, ...] the agent should follow from this observation."""
        cfg = self.config
        goal = det.goals.get(goal_colour)
        if det.block is None or goal is None:
            return [agent]  # nothing to push toward: hold still
        block = det.block
        offset = goal - block
        dist = float(np.hypot(*offset))
        if dist < 0.3 * cfg.tolerance:
            return [agent]
        d = offset / dist  # push direction
        t = np.array([-d[1], d[0]])
        standoff = cfg.agent_radius + _support(-d, det.block_angle or 0.0, cfg.block_half)
        end = goal - d * standoff  # agent position when the block sits on the goal
        rel = agent - block
        along, lat = -float(rel @ d), float(rel @ t)
        if abs(lat) < 0.4 * cfg.block_half and standoff - 0.03 < along < standoff + 0.15:
            # In contact (or nearly) behind the block: push, moving back onto the centre line early.
            on_line = block - d * (standoff - 0.1)
            return [agent, on_line, end] if float((on_line - agent) @ d) > 0 else [agent, end]
        behind = block - d * (standoff + 0.05)
        if along > 0 and abs(lat) < cfg.block_half + cfg.agent_radius:  # already behind: slide in
            return [agent, behind, end]
        radius = cfg.block_half * math.sqrt(2) + cfg.agent_radius + 0.05  # clearance circle around the block
        entry = block - d * radius
        if _segment_clear(agent, entry, block, radius * 0.97):
            return [agent, entry, behind, end]
        return [agent, *self._arc(agent, block, entry, radius), behind, end]

    def _arc(self, agent: np.ndarray, block: np.ndarray, entry: np.ndarray, radius: float) -> list[np.ndarray]:
        """Way points around the block's clearance circle from the agent's side to ``entry``, the shorter way
        that stays inside the workspace."""
        lim = 1.0 - self.config.agent_radius
        a0 = math.atan2(agent[1] - block[1], agent[0] - block[0])
        a1 = math.atan2(entry[1] - block[1], entry[0] - block[0])
        sweep = (a1 - a0 + math.pi) % (2 * math.pi) - math.pi  # shorter signed sweep
        best, best_cost = [], math.inf
        for signed in (sweep, sweep - math.copysign(2 * math.pi, sweep)):
            n = max(1, int(abs(signed) / math.radians(20)) + 1)
            pts = [
                block + radius * np.array([math.cos(a0 + signed * k / n), math.sin(a0 + signed * k / n)])
                for k in range(n + 1)
            ]
            outside = sum(float(np.abs(p).max() > lim) for p in pts)
            cost = abs(signed) + 10.0 * outside
            if cost < best_cost:
                best, best_cost = pts, cost
        return [np.clip(p, -lim, lim) for p in best]


def _segment_clear(a: np.ndarray, b: np.ndarray, centre: np.ndarray, radius: float) -> bool:
    """Whether the segment a-b stays at least ``radius`` away from ``centre``."""
    ab = b - a
    t = float(np.clip((centre - a) @ ab / max(float(ab @ ab), 1e-12), 0.0, 1.0))
    return float(np.hypot(*(a + t * ab - centre))) >= radius


class RandomPushPolicy(_Policy):
    """Random targets, each held for ``hold`` control steps; with probability ``block_bias`` the target is drawn
    near the detected block, so that random play touches the block often (diverse contact data)."""

    def __init__(
        self,
        chunk_size: int = 4,
        seed: int | None = None,
        task: int | str | None = None,
        hold: int = 4,
        block_bias: float = 0.5,
    ):
        super().__init__(chunk_size, seed, task)
        self.hold = int(hold)
        self.block_bias = float(block_bias)

    def act(self, obs: dict[str, Any]) -> np.ndarray:
        if "task" not in obs and self._task is None:  # the random policy does not need the instruction
            obs = {**obs, "task": 0 if np.asarray(obs["pixels"]).ndim == 3 else [0] * len(obs["pixels"])}
        return super().act(obs)

    def _act_one(self, slot: _Slot, pixels: np.ndarray, agent: np.ndarray, goal: str) -> np.ndarray:
        out = np.empty((self.chunk_size, 2), np.float32)
        block: np.ndarray | None = None  # detected lazily, at most once per chunk
        for k in range(self.chunk_size):
            if slot.hold <= 0 or slot.target is None:
                if block is None and self.block_bias > 0:
                    block = self.detector(pixels).block
                if block is not None and slot.rng.random() < self.block_bias:
                    slot.target = np.clip(block + slot.rng.normal(0.0, 0.3, size=2), -1, 1)
                else:
                    slot.target = slot.rng.uniform(-1.0, 1.0, size=2)
                slot.hold = self.hold
            out[k] = slot.target
            slot.hold -= 1
        return out


def graded_policies(chunk_size: int = 4, seed: int = 0) -> dict[str, PushPolicy]:
    """Policies of clearly different skill, best first.

    Success within ``MAX_CONTROL_STEPS`` = 40 control steps, measured on the simulator over 200 seeds with
    chunk_size 4: expert 100%, expert_noisy 86%, expert_wrong_goal 62%, expert_lazy 34%, expert_sloppy 14%,
    random 1%.
    """
    return {
        "expert": ExpertPushPolicy(chunk_size, seed=seed),
        "expert_noisy": ExpertPushPolicy(chunk_size, noise=0.1, seed=seed + 1),
        "expert_wrong_goal": ExpertPushPolicy(chunk_size, noise=0.05, wrong_goal_prob=0.45, seed=seed + 2),
        "expert_lazy": ExpertPushPolicy(chunk_size, noise=0.15, replan_every=2, seed=seed + 3),
        "expert_sloppy": ExpertPushPolicy(chunk_size, noise=0.18, random_prob=0.3, seed=seed + 4),
        "random": RandomPushPolicy(chunk_size, seed=seed + 5),
    }


def scripted_learners(chunk_size: int = 4, seed: int = 0) -> dict[str, PushPolicy]:
    """Scripted learners for DAgger-style collection (`collect --learner NAME`). ``expert_other_goal`` pushes the block
    toward a goal other than the instructed one (drawn per episode): the mix's expert then recovers from states whose
    layout points the wrong way, so only the instruction tells which way to go."""
    return {"expert_other_goal": ExpertPushPolicy(chunk_size, wrong_goal_prob=1.0, seed=seed)}
