"""Pixel detector for push-task frames, real or imagined by a world model, and the pixel success hook.

Pixels are labelled with the nearest palette colour (``push.BACKGROUND_RGB``, ``AGENT_RGB``, ``BLOCK_RGB``,
``GOAL_RGB``) when within ``colour_threshold`` of it (RGB distance), so anti-aliased edges, blur, noise and small
colour shifts are tolerated; specks are discarded with connected components.

* agent, block: centroid of the largest component of their label (the block's angle, modulo a quarter turn,
  from the minimum-area rectangle around it);
* goals: the block is drawn over the goals but is smaller than a goal edge, so it never hides a whole row or
  column of a goal: the centre is that of the bounding box of the goal's pieces (grouped within one goal size).
  Where the box is clearly narrower than a goal, the block (with the agent) hides one side and the centre is read
  from the opposite edge and the known goal size.

Positions are in the simulator's normalised coordinates ([-1, 1]^2, x right, y down).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from .push import (
    AGENT_RGB,
    BACKGROUND_RGB,
    BLOCK_RGB,
    GOAL_COLOURS,
    GOAL_RGB,
    TASK_GOALS,
    PushConfig,
    goal_score,
    task_index,
)

COLOUR_THRESHOLD = 90.0  # max RGB distance to the (nearest) palette colour; palette colours are >= 154 apart
_OCCLUSION_DEFICIT = 1.5  # pixels: a goal box narrower than a goal by more than this is occluded on one side
_GROUP_SLACK = 2  # pixels: goal pieces are grouped while their joint box stays within a goal side plus this
_LABELS = ("background", "agent", "block", *GOAL_COLOURS)
_PALETTE = np.array([BACKGROUND_RGB, AGENT_RGB, BLOCK_RGB, *(GOAL_RGB[c] for c in GOAL_COLOURS)], np.float32)


@dataclass
class Detection:
    """What one frame shows. Each field is None when the object is not found."""

    agent: np.ndarray | None = None  # [2] float64
    block: np.ndarray | None = None  # [2] float64
    block_angle: float | None = None  # radians in [-pi/4, pi/4) (the square is symmetric under quarter turns)
    goals: dict[str, np.ndarray | None] = field(default_factory=dict)  # colour -> [2] centre
    goal_areas: dict[str, int] = field(default_factory=dict)  # colour -> visible goal pixels


def label_frame(frame: np.ndarray, threshold: float = COLOUR_THRESHOLD) -> np.ndarray:
    """int8 [H, W] index into ``_LABELS`` of the nearest palette colour, -1 where none is within ``threshold``."""
    diff = frame.astype(np.float32)[:, :, None, :] - _PALETTE  # [H, W, P, 3]
    dist2 = np.einsum("hwpc,hwpc->hwp", diff, diff)
    label = dist2.argmin(-1).astype(np.int8)
    label[np.take_along_axis(dist2, label[..., None].astype(np.int64), -1)[..., 0] > threshold * threshold] = -1
    return label


def _components(mask: np.ndarray, min_area: int):
    """Connected components (8-connectivity) of at least ``min_area`` pixels: (labels, stats, centroids, ids)
    with ids sorted by decreasing area."""
    n, labels, stats, centroids = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    ids = [i for i in range(1, n) if stats[i, cv2.CC_STAT_AREA] >= min_area]
    ids.sort(key=lambda i: -stats[i, cv2.CC_STAT_AREA])
    return labels, stats, centroids, ids


def _to_workspace(u: float, v: float, width: int, height: int) -> np.ndarray:
    """Continuous pixel coordinates (pixel edges at integers) -> normalised workspace coordinates."""
    return np.array([2.0 * u / width - 1.0, 2.0 * v / height - 1.0])


class PushDetector:
    """Configurable detector (``colour_threshold``, the task geometry in ``config``); ``detect`` uses defaults."""

    def __init__(self, colour_threshold: float = COLOUR_THRESHOLD, config: PushConfig | None = None):
        self.colour_threshold = float(colour_threshold)
        self.config = config or PushConfig()

    def __call__(self, frame: np.ndarray) -> Detection:
        """Detect the agent, the block and the goals in one RGB uint8 frame [H, W, 3]."""
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[-1] != 3:
            raise ValueError(f"frame must be [H, W, 3], got shape {frame.shape}")
        height, width = frame.shape[:2]
        px_per_unit = width / 2.0
        cfg = self.config
        labels = label_frame(frame, self.colour_threshold)
        # Minimum areas: a fraction of each object's full area in pixels.
        agent_area = math.pi * (cfg.agent_radius * px_per_unit) ** 2
        block_area = (2 * cfg.block_half * px_per_unit) ** 2
        goal_side = 2 * cfg.goal_half * px_per_unit

        det = Detection()
        _, _, centroids, ids = _components(labels == _LABELS.index("agent"), max(2, int(0.2 * agent_area)))
        if ids:
            u, v = centroids[ids[0]]
            det.agent = _to_workspace(u + 0.5, v + 0.5, width, height)
        comp, _, centroids, ids = _components(labels == _LABELS.index("block"), max(2, int(0.15 * block_area)))
        if ids:
            u, v = centroids[ids[0]]
            det.block = _to_workspace(u + 0.5, v + 0.5, width, height)
            vs, us = np.nonzero(comp == ids[0])
            if len(us) >= 5:
                (_, _), (_, _), angle = cv2.minAreaRect(np.stack([us, vs], 1).astype(np.float32))
                det.block_angle = (math.radians(angle) + math.pi / 4) % (math.pi / 2) - math.pi / 4
        for colour in GOAL_COLOURS:
            det.goals[colour], det.goal_areas[colour] = self._goal_centre(
                labels == _LABELS.index(colour), goal_side, det.block
            )
        return det

    def _goal_centre(self, mask: np.ndarray, side: float, occluder: np.ndarray | None) -> tuple[np.ndarray | None, int]:
        """(centre, visible area) of one goal from its mask [H, W]; (None, 0) if less than 10% of it is seen."""
        height, width = mask.shape
        _, stats, _, ids = _components(mask, 2)
        lo = hi = None
        area = 0
        for i in ids:  # largest first: grow the group while it fits in one goal
            x0, y0, w, h, a = stats[i]
            if lo is None:
                lo, hi, area = np.array([x0, y0]), np.array([x0 + w, y0 + h]), int(a)
                continue
            new_lo, new_hi = np.minimum(lo, [x0, y0]), np.maximum(hi, [x0 + w, y0 + h])
            if (new_hi - new_lo).max() <= side + _GROUP_SLACK:
                lo, hi, area = new_lo, new_hi, area + int(a)
        if lo is None or area < 0.1 * side * side:
            return None, 0
        centre = (lo + hi) / 2.0
        if occluder is not None:
            occ = (occluder + 1.0) * np.array([width, height]) / 2.0  # occluder centre in pixels
            for axis in range(2):
                if hi[axis] - lo[axis] < side - _OCCLUSION_DEFICIT:
                    centre[axis] = lo[axis] + side / 2 if occ[axis] > centre[axis] else hi[axis] - side / 2
        return _to_workspace(centre[0], centre[1], width, height), area


def detect(frame: np.ndarray) -> Detection:
    """Detect agent, block (+ angle) and goal centres in an RGB uint8 frame [H, W, 3] with default thresholds."""
    return PushDetector()(frame)


class PixelSuccessDetector:
    """Success hook from pixels: ``detector(frames, task) -> bool`` and ``detector.score(frames, task) -> float``.

    ``frames`` [T, H, W, 3] (or [H, W, 3]) uint8 is a chunk; ``task`` an instruction (or task index). Success
    means the block centre on the last frame lies within ``tolerance`` (normalised units; the simulator's
    ``PushConfig.tolerance`` by default) of the instructed goal's centre. Goals do not move, so the goal centre is
    read on the frame of the chunk where that goal is least occluded.
    """

    def __init__(
        self,
        tolerance: float | None = None,
        colour_threshold: float = COLOUR_THRESHOLD,
        config: PushConfig | None = None,
    ):
        config = config or PushConfig()
        self.tolerance = float(config.tolerance if tolerance is None else tolerance)
        self.detector = PushDetector(colour_threshold, config)

    def distance(self, frames: np.ndarray, task: int | str) -> float | None:
        """Block-to-goal distance read from the frames, or None if the block or the goal is not visible."""
        frames = np.asarray(frames)
        if frames.ndim == 3:
            frames = frames[None]
        if frames.ndim != 4 or frames.shape[0] == 0:
            raise ValueError(f"frames must be [T, H, W, 3] with T >= 1, got shape {frames.shape}")
        colour = TASK_GOALS[task_index(task)]
        last = self.detector(frames[-1])
        goal, area = last.goals.get(colour), last.goal_areas.get(colour, 0)
        for frame in frames[:-1]:
            det = self.detector(frame)
            if det.goal_areas.get(colour, 0) > area:
                goal, area = det.goals[colour], det.goal_areas[colour]
        if last.block is None or goal is None:
            return None
        return float(np.hypot(*(last.block - goal)))

    def __call__(self, frames: np.ndarray, task: int | str) -> bool:
        dist = self.distance(frames, task)
        return dist is not None and dist <= self.tolerance

    def score(self, frames: np.ndarray, task: int | str) -> float:
        """Dense score in [0, 1] (1 on success, see ``push.goal_score``); 0 when nothing is found."""
        dist = self.distance(frames, task)
        return 0.0 if dist is None else goal_score(dist, self.tolerance)
