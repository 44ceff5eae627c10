"""Pixel detector for push-task frames, real or imagined by a world model, and the pixel success hook.

Objects are segmented by RGB distance to their palette colour (``push.AGENT_RGB`` etc.) with a threshold, so
anti-aliased edges, blur and mild noise are tolerated; isolated specks are discarded with connected components.

* agent, block: centroid of the largest component of their colour (the block's angle, modulo a quarter turn,
  from the minimum-area rectangle around it);
* goals: the block is drawn over the goals, but it is smaller than a goal edge, so it never hides a whole row or
  column of a goal; the goal centre is the centre of the bounding box of its (possibly occluded) pixels.

Positions are in the simulator's normalised coordinates ([-1, 1]^2, x right, y down).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from .push import AGENT_RGB, BLOCK_RGB, GOAL_COLOURS, GOAL_RGB, TASK_GOALS, PushConfig, goal_score, task_index

COLOUR_THRESHOLD = 60.0  # max RGB distance to a palette colour (palette colours are >= ~140 apart)
_OCCLUSION_DEFICIT = 1.5  # pixels: a goal's box narrower than the goal by more than this is occluded on one side


@dataclass
class Detection:
    """What one frame shows. Each field is None when the object is not found."""

    agent: np.ndarray | None = None  # [2] float64
    block: np.ndarray | None = None  # [2] float64
    block_angle: float | None = None  # radians in [-pi/4, pi/4) (the square is symmetric under quarter turns)
    goals: dict[str, np.ndarray | None] = field(default_factory=dict)  # colour -> [2] centre
    goal_areas: dict[str, int] = field(default_factory=dict)  # colour -> visible goal pixels


def _colour_mask(frame: np.ndarray, rgb: Sequence[int], threshold: float) -> np.ndarray:
    """uint8 [H, W] mask of pixels within ``threshold`` (RGB distance) of ``rgb``."""
    diff = frame.astype(np.float32) - np.asarray(rgb, dtype=np.float32)
    return (np.einsum("hwc,hwc->hw", diff, diff) < threshold * threshold).astype(np.uint8)


def _components(mask: np.ndarray, min_area: int):
    """Connected components (8-connectivity) of at least ``min_area`` pixels: (labels, stats, centroids, ids)
    with ids sorted by decreasing area."""
    n, labels, stats, centroids = cv2.connectedComponentsWithStats(mask, connectivity=8)
    ids = [i for i in range(1, n) if stats[i, cv2.CC_STAT_AREA] >= min_area]
    ids.sort(key=lambda i: -stats[i, cv2.CC_STAT_AREA])
    return labels, stats, centroids, ids


def _to_workspace(u: float, v: float, width: int, height: int) -> np.ndarray:
    """Continuous pixel coordinates (pixel edges at integers) -> normalised workspace coordinates."""
    return np.array([2.0 * u / width - 1.0, 2.0 * v / height - 1.0])


class PushDetector:
    """Configurable detector; ``detect(frame)`` uses the defaults."""

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
        # Minimum component areas: a fraction of each object's full area, at least 2 pixels.
        agent_area = math.pi * (cfg.agent_radius * px_per_unit) ** 2
        block_area = (2 * cfg.block_half * px_per_unit) ** 2
        goal_area = (2 * cfg.goal_half * px_per_unit) ** 2

        det = Detection()
        det.agent = self._blob_centre(frame, AGENT_RGB, max(2, int(0.2 * agent_area)))
        mask = _colour_mask(frame, BLOCK_RGB, self.colour_threshold)
        labels, stats, _, ids = _components(mask, max(2, int(0.15 * block_area)))
        if ids:
            vs, us = np.nonzero(labels == ids[0])
            det.block = _to_workspace(us.mean() + 0.5, vs.mean() + 0.5, width, height)
            if len(us) >= 5:
                (_, _), (_, _), angle = cv2.minAreaRect(np.stack([us, vs], 1).astype(np.float32))
                det.block_angle = (math.radians(angle) + math.pi / 4) % (math.pi / 2) - math.pi / 4
        for colour in GOAL_COLOURS:
            det.goals[colour], det.goal_areas[colour] = self._goal_centre(
                frame, GOAL_RGB[colour], max(2, int(0.1 * goal_area)), det.block
            )
        return det

    def _blob_centre(self, frame: np.ndarray, rgb: Sequence[int], min_area: int) -> np.ndarray | None:
        mask = _colour_mask(frame, rgb, self.colour_threshold)
        _, _, centroids, ids = _components(mask, min_area)
        if not ids:
            return None
        u, v = centroids[ids[0]]
        return _to_workspace(u + 0.5, v + 0.5, frame.shape[1], frame.shape[0])

    def _goal_centre(
        self, frame: np.ndarray, rgb: Sequence[int], min_area: int, occluder: np.ndarray | None
    ) -> tuple[np.ndarray | None, int]:
        """Centre of a goal from the bounding box of its largest component and the pieces nearby (the block may
        cut it). Where the box is narrower than a goal, the block (with the agent) hides one side: the centre is
        then read from the opposite, visible edge and the known goal size."""
        height, width = frame.shape[:2]
        side = 2 * self.config.goal_half * width / 2.0  # goal side in pixels
        mask = _colour_mask(frame, rgb, self.colour_threshold)
        _, stats, centroids, ids = _components(mask, max(2, min_area // 8))
        if not ids or stats[ids[0], cv2.CC_STAT_AREA] < min_area:
            return None, 0
        main = centroids[ids[0]]
        keep = [i for i in ids if np.hypot(*(centroids[i] - main)) <= 0.8 * side]
        lo = np.array([min(stats[i, cv2.CC_STAT_LEFT] for i in keep), min(stats[i, cv2.CC_STAT_TOP] for i in keep)])
        hi = np.array(
            [
                max(stats[i, cv2.CC_STAT_LEFT] + stats[i, cv2.CC_STAT_WIDTH] for i in keep),
                max(stats[i, cv2.CC_STAT_TOP] + stats[i, cv2.CC_STAT_HEIGHT] for i in keep),
            ]
        )
        centre = (lo + hi) / 2.0
        if occluder is not None:
            occ = (occluder + 1.0) * np.array([width, height]) / 2.0  # occluder centre in pixels
            for axis in range(2):
                if hi[axis] - lo[axis] < side - _OCCLUSION_DEFICIT:
                    centre[axis] = lo[axis] + side / 2 if occ[axis] > centre[axis] else hi[axis] - side / 2
        area = int(sum(stats[i, cv2.CC_STAT_AREA] for i in keep))
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
