"""The ground-truth 2-D push task: state, quasi-static contact physics and rendering (numpy + OpenCV only).

A disk-shaped agent moves toward a commanded target position (the action) with a bounded speed per control
step and pushes a square block. Several goal zones of distinct colours lie on the floor; the instruction
names the goal the block must be pushed onto. This is the simulator a small Cosmos3 world model is trained on
and measured against, so everything here is deterministic given the episode seed.

Coordinates: normalised workspace coordinates in [-1, 1]^2, x to the right and y downwards, as in image
coordinates: pixel column u (edges at integers, width W) corresponds to x = 2 u / W - 1.

Physics (per control step, ``substeps`` substeps; one control step lasts 1 / ``CONTROL_FPS`` s and renders one
frame):
  1. the agent moves straight toward the target by at most ``max_speed / substeps``; its centre stays
     ``agent_radius`` inside the walls (targets beyond are clipped there), so the disk is always fully in view;
  2. agent-block penetration is resolved by moving the block (never the agent) with a quasi-static pushing
     model: an ellipsoidal limit surface (planar friction of the block on the floor) and Coulomb friction at
     the agent-block contact. The block's twist is proportional to the contact wrench,
     ``v = F, omega = (rho x F) / c^2``, where ``rho`` is the contact point relative to the block centre and
     ``c`` the limit surface's characteristic length; the force ``F`` is the one that makes the contact point
     follow the agent (sticking) if it lies in the friction cone, else it lies on the cone's edge (sliding).
     An off-centre contact therefore turns the block;
  3. the block is translated back inside the workspace walls; if the walls keep it from yielding, the agent is
     pushed out of the block instead (the agent is blocked).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import cv2
import numpy as np

# Palette (RGB uint8). Colours are >= 154 apart and no blend of two of them comes within 90 of a third (the agent
# is darker than any red/blue mix), so pixels can be segmented by colour even on blurry, imagined frames.
BACKGROUND_RGB: tuple[int, int, int] = (228, 228, 228)  # the floor's colour at the workspace centre
# The floor is lit unevenly: red rises to the right and green downwards by this much per workspace unit (at most
# 34 from BACKGROUND_RGB, well inside the detector's threshold). Why: actions are absolute target positions, and a
# transformer with rotary positions only is translation-equivariant: without a landmark a frame's tokens cannot
# tell where in the workspace they are, so nor whether a commanded target names them.
FLOOR_GRADIENT: float = 24.0
BLOCK_RGB: tuple[int, int, int] = (214, 40, 40)
AGENT_RGB: tuple[int, int, int] = (45, 25, 70)
GOAL_RGB: dict[str, tuple[int, int, int]] = {
    "green": (60, 178, 80),
    "blue": (50, 110, 232),
    "yellow": (236, 196, 40),
}
GOAL_COLOURS: tuple[str, ...] = tuple(GOAL_RGB)

# One instruction per goal: TASKS[i] asks for the block on goal TASK_GOALS[i].
TASKS: tuple[str, ...] = tuple(f"push the red block onto the {colour} target" for colour in GOAL_COLOURS)
TASK_GOALS: tuple[str, ...] = GOAL_COLOURS

CONTROL_FPS = 10  # control steps (= rendered frames) per second of simulated time
MAX_CONTROL_STEPS = 40  # default episode horizon in control steps (an expert needs ~12-32)


@dataclass(frozen=True)
class PushConfig:
    """Geometry and physics constants (normalised workspace units; the workspace is 2 units wide)."""

    agent_radius: float = 0.1
    block_half: float = 0.15  # half side of the square block
    goal_half: float = 0.24  # half side of a goal zone; > block half-diagonal so the block never hides a goal edge
    max_speed: float = 0.15  # agent travel per control step: 4.8 px at 64 px, so one action moves it by most of a token
    substeps: int = 25  # 0.006 of agent travel per substep, so a contact step leaves < 0.002 of penetration
    contact_iters: int = 2  # contact resolutions per substep (the rotation is linearised)
    friction: float = 0.6  # Coulomb coefficient at the agent-block contact
    tolerance: float = 0.1  # success: block centre within this distance of the instructed goal centre
    goal_colours: tuple[str, ...] = GOAL_COLOURS
    # Start-state sampling.
    goal_range: float = 0.6  # goal centres in [-goal_range, goal_range]^2
    block_range: float = 0.5  # block start centre in [-block_range, block_range]^2
    agent_range: float = 0.85
    min_push_distance: float = 0.7  # start distance between the block and the instructed goal

    @property
    def limit_c2(self) -> float:
        """Squared characteristic length of the block's limit surface (uniform pressure on a square)."""
        return (0.765 * self.block_half) ** 2


@dataclass
class PushState:
    """Full simulator state. Arrays are float64; ``block`` is (x, y, angle in radians)."""

    agent: np.ndarray  # [2]
    block: np.ndarray  # [3]
    goals: np.ndarray  # [K, 2] goal centres, one per colour in PushConfig.goal_colours
    task: int  # index into TASKS

    def copy(self) -> PushState:
        return PushState(self.agent.copy(), self.block.copy(), self.goals.copy(), self.task)


def task_index(task: int | str) -> int:
    """Index into ``TASKS`` of an instruction (exact, or any text naming exactly one goal colour) or an index."""
    if isinstance(task, (int, np.integer)) and not isinstance(task, bool):
        if not 0 <= int(task) < len(TASKS):
            raise ValueError(f"task index {task} out of range [0, {len(TASKS)})")
        return int(task)
    if isinstance(task, str):
        if task in TASKS:
            return TASKS.index(task)
        named = [i for i, colour in enumerate(TASK_GOALS) if colour in task.lower()]
        if len(named) == 1:
            return named[0]
    raise ValueError(f"unknown task {task!r}; expected an index or one of {TASKS}")


def goal_score(distance: float, tolerance: float) -> float:
    """Dense score in [0, 1]: 1 within the tolerance, falling linearly to 0 one unit (half the workspace) further."""
    return float(np.clip(1.0 - (distance - tolerance), 0.0, 1.0))


def block_corners(block: np.ndarray, half: float) -> np.ndarray:
    """Corners [4, 2] of the square block (x, y, angle) with the given half side."""
    c, s = math.cos(block[2]), math.sin(block[2])
    local = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=np.float64) * half
    rot = np.array([[c, -s], [s, c]])
    return block[:2] + local @ rot.T


def _contact(ax: float, ay: float, block: np.ndarray, half: float, radius: float):
    """Disk-square contact: (depth, nx, ny, rx, ry); n points from the block to the disk, r is the contact point
    on the block boundary relative to the block centre. depth <= 0 means no contact."""
    bx, by, th = block
    c, s = math.cos(th), math.sin(th)
    dx, dy = ax - bx, ay - by
    qx, qy = c * dx + s * dy, -s * dx + c * dy  # disk centre in the block frame
    px, py = min(max(qx, -half), half), min(max(qy, -half), half)
    ex, ey = qx - px, qy - py
    dist = math.hypot(ex, ey)
    if dist > 1e-12:
        depth, lnx, lny = radius - dist, ex / dist, ey / dist
    elif half - abs(qx) < half - abs(qy):  # centre inside the square: leave through the nearest face
        sign = 1.0 if qx >= 0 else -1.0
        depth, lnx, lny, px = radius + half - abs(qx), sign, 0.0, sign * half
    else:
        sign = 1.0 if qy >= 0 else -1.0
        depth, lnx, lny, py = radius + half - abs(qy), 0.0, sign, sign * half
    return depth, c * lnx - s * lny, s * lnx + c * lny, c * px - s * py, s * px + c * py


def _push_block(block: np.ndarray, agent: np.ndarray, move: np.ndarray, cfg: PushConfig) -> bool:
    """Resolve agent-block penetration by moving the block in place (quasi-static pushing). Returns contact."""
    depth, nx, ny, rx, ry = _contact(agent[0], agent[1], block, cfg.block_half, cfg.agent_radius)
    if depth <= 0.0:
        return False
    dx, dy = -nx, -ny  # push direction (into the block)
    tx, ty = -dy, dx  # contact tangent
    wx, wy = -ry, rx  # z x rho: contact-point velocity per unit rotation
    c2 = cfg.limit_c2
    # Desired contact-point displacement: remove the penetration and, while the agent moves into the block,
    # follow its tangential motion (sticking).
    m_n = move[0] * dx + move[1] * dy
    m_t = move[0] * tx + move[1] * ty if m_n > 0.0 else 0.0
    ux, uy = depth * dx + m_t * tx, depth * dy + m_t * ty
    # Sticking force F = J^-1 u with J = I + w w^T / c2 (Sherman-Morrison).
    k = (wx * ux + wy * uy) / (c2 + wx * wx + wy * wy)
    fx, fy = ux - k * wx, uy - k * wy
    f_n, f_t = fx * dx + fy * dy, fx * tx + fy * ty
    if f_n <= 0.0 or abs(f_t) > cfg.friction * f_n:  # outside the friction cone: slide on the cone's edge
        mu = cfg.friction * (1.0 if f_t >= 0.0 else -1.0) if f_n > 0.0 else 0.0
        ex, ey = dx + mu * tx, dy + mu * ty
        denom = 1.0 + (wx * dx + wy * dy) * (wx * ex + wy * ey) / c2  # normal part of J e
        if denom < 0.2:  # ill-posed (jamming) configuration: fall back to a frictionless contact
            ex, ey = dx, dy
            denom = 1.0 + (wx * dx + wy * dy) ** 2 / c2
        fx, fy = ex * depth / denom, ey * depth / denom
    block[0] += fx
    block[1] += fy
    block[2] += (rx * fy - ry * fx) / c2
    return True


def _clamp_block(block: np.ndarray, cfg: PushConfig) -> None:
    """Translate the block so that all its corners are inside the workspace walls."""
    extent = cfg.block_half * (abs(math.cos(block[2])) + abs(math.sin(block[2])))
    block[0] = min(max(block[0], -1.0 + extent), 1.0 - extent)
    block[1] = min(max(block[1], -1.0 + extent), 1.0 - extent)


def _wrap_angle(theta: float) -> float:
    """Angle in [-pi/4, pi/4): the square block is symmetric under quarter turns (unchanged when already in)."""
    if -math.pi / 4 <= theta < math.pi / 4:
        return theta
    return (theta + math.pi / 4) % (math.pi / 2) - math.pi / 4


def physics_step(state: PushState, target: np.ndarray, cfg: PushConfig) -> bool:
    """Advance ``state`` in place by one control step toward ``target`` [2] (clipped to the workspace).

    Returns whether the agent touched the block during the step.
    """
    lim = 1.0 - cfg.agent_radius
    target = np.clip(np.asarray(target, dtype=np.float64), -lim, lim)
    agent, block = state.agent, state.block
    step_len = cfg.max_speed / cfg.substeps
    touched = False
    for _ in range(cfg.substeps):
        delta = target - agent
        dist = math.hypot(delta[0], delta[1])
        move = delta if dist <= step_len else delta * (step_len / dist)
        agent += move
        for it in range(cfg.contact_iters):
            touched |= _push_block(block, agent, move if it == 0 else np.zeros(2), cfg)
        _clamp_block(block, cfg)
        depth, nx, ny, _, _ = _contact(agent[0], agent[1], block, cfg.block_half, cfg.agent_radius)
        if depth > 0.0:  # the walls hold the block: the agent yields
            agent += (depth * nx, depth * ny)
        np.clip(agent, -lim, lim, out=agent)
    block[2] = _wrap_angle(block[2])
    return touched


def goal_distance(state: PushState, cfg: PushConfig) -> float:
    """Distance between the block centre and the instructed goal centre."""
    goal = state.goals[cfg.goal_colours.index(TASK_GOALS[state.task])]
    return float(math.hypot(state.block[0] - goal[0], state.block[1] - goal[1]))


def is_success(state: PushState, cfg: PushConfig) -> bool:
    """Geometric success: the block centre lies within ``cfg.tolerance`` of the instructed goal's centre."""
    return goal_distance(state, cfg) <= cfg.tolerance


def sample_state(rng: np.random.Generator, cfg: PushConfig, task: int | None = None) -> PushState:
    """Draw a start state: goals apart, the block outside every goal and far from the instructed one, the agent
    clear of the block. The instruction is always drawn first (then overridden by ``task`` if given), so that a given
    ``task`` equal to the drawn one yields the same state; other instructions yield other layouts (the block must
    start far from the instructed goal)."""
    drawn = int(rng.integers(len(TASKS)))
    task = drawn if task is None else task_index(task)
    n_goals = len(cfg.goal_colours)
    goal_gap = 2 * cfg.goal_half + 0.14
    block_clear = cfg.goal_half + cfg.block_half * math.sqrt(2) + 0.02
    for _ in range(10_000):
        goals = rng.uniform(-cfg.goal_range, cfg.goal_range, size=(n_goals, 2))
        gaps = np.linalg.norm(goals[:, None] - goals[None], axis=-1) + np.eye(n_goals) * 10
        if gaps.min() < goal_gap:
            continue
        target = goals[cfg.goal_colours.index(TASK_GOALS[task])]
        for _ in range(100):
            block_xy = rng.uniform(-cfg.block_range, cfg.block_range, size=2)
            to_goals = np.linalg.norm(goals - block_xy, axis=-1)
            if to_goals.min() >= block_clear and np.linalg.norm(target - block_xy) >= cfg.min_push_distance:
                break
        else:
            continue
        angle = float(rng.uniform(-math.pi / 4, math.pi / 4))
        for _ in range(100):
            agent = rng.uniform(-cfg.agent_range, cfg.agent_range, size=2)
            if np.linalg.norm(agent - block_xy) >= cfg.block_half * math.sqrt(2) + cfg.agent_radius + 0.15:
                break
        else:
            continue
        return PushState(agent=agent, block=np.array([*block_xy, angle]), goals=goals, task=int(task))
    raise RuntimeError("could not sample a start state; check PushConfig")  # pragma: no cover


def floor_image(size: int) -> np.ndarray:
    """The empty floor, RGB uint8 [size, size, 3]: BACKGROUND_RGB at the centre, red + FLOOR_GRADIENT * x and
    green + FLOOR_GRADIENT * y (pixel-centre coordinates)."""
    coord = (np.arange(size) + 0.5) * (2.0 / size) - 1.0  # [size] workspace coordinate of each pixel centre
    img = np.empty((size, size, 3), dtype=np.float64)
    img[:] = BACKGROUND_RGB
    img[:, :, 0] += FLOOR_GRADIENT * coord[None, :]
    img[:, :, 1] += FLOOR_GRADIENT * coord[:, None]
    return np.round(img).astype(np.uint8)


def render_state(state: PushState, cfg: PushConfig, image_size: int = 64, supersample: int = 4) -> np.ndarray:
    """Render the scene as RGB uint8 [image_size, image_size, 3].

    Drawn at ``supersample`` x the resolution with anti-aliasing and sub-pixel coordinates, then area-averaged
    down, so that motion is smooth at 64x64. Layering: background, goals, block, agent on top.
    """
    if image_size % 16 or image_size <= 0:
        raise ValueError(f"image_size must be a positive multiple of 16, got {image_size}")
    size = image_size * supersample
    img = floor_image(size)
    shift = 4  # fractional bits of OpenCV's fixed-point coordinates
    scale = size / 2.0

    def px(xy: np.ndarray) -> np.ndarray:
        # workspace -> OpenCV pixel coordinates (pixel centres at integers), fixed point
        return np.round(((np.asarray(xy) + 1.0) * scale - 0.5) * (1 << shift)).astype(np.int32)

    for colour, centre in zip(cfg.goal_colours, state.goals):
        square = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * cfg.goal_half + centre
        cv2.fillPoly(img, [px(square)], GOAL_RGB[colour], cv2.LINE_AA, shift)
    cv2.fillPoly(img, [px(block_corners(state.block, cfg.block_half))], BLOCK_RGB, cv2.LINE_AA, shift)
    centre = px(state.agent)
    radius = int(round(cfg.agent_radius * scale * (1 << shift)))
    cv2.circle(img, (int(centre[0]), int(centre[1])), radius, AGENT_RGB, -1, cv2.LINE_AA, shift)
    if supersample == 1:
        return img
    return cv2.resize(img, (image_size, image_size), interpolation=cv2.INTER_AREA)


@dataclass
class PushSim:
    """The simulator: a state plus the config it evolves under. Use ``reset(rng)`` then ``step(target)``."""

    config: PushConfig = field(default_factory=PushConfig)
    image_size: int = 64
    supersample: int = 4
    state: PushState | None = None

    def reset(self, rng: np.random.Generator, task: int | None = None) -> PushState:
        self.state = sample_state(rng, self.config, task)
        return self.state

    def step(self, target: np.ndarray) -> bool:
        """One control step toward ``target`` [2]; returns whether the agent touched the block."""
        return physics_step(self._require_state(), target, self.config)

    def render(self) -> np.ndarray:
        """RGB uint8 [H, W, 3] of the current state."""
        return render_state(self._require_state(), self.config, self.image_size, self.supersample)

    def goal_distance(self) -> float:
        return goal_distance(self._require_state(), self.config)

    def is_success(self) -> bool:
        return is_success(self._require_state(), self.config)

    def with_state(self, state: PushState) -> PushSim:
        """A copy of this simulator holding (a copy of) ``state``."""
        return replace(self, state=state.copy())

    def _require_state(self) -> PushState:
        if self.state is None:
            raise RuntimeError("PushSim.reset() must be called first")
        return self.state
