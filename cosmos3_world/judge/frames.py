"""Episode frames for the judge: validation (clear errors, nothing silently coerced) and sampling.

An episode is uint8 RGB frames: an array [T, H, W, 3], one frame [H, W, 3], or a sequence of
[H, W, 3] arrays (torch tensors are accepted and read as numpy). The judge looks at a few frames
spread over the episode: `sample_indices` picks them (always including the last, where success shows).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

SPACINGS = ("uniform", "last")


def as_frames(frames: Any, name: str = "frames") -> list[np.ndarray]:
    """The episode's frames as a list of [H, W, 3] uint8 arrays; ValueError naming what is wrong."""
    if hasattr(frames, "detach") and hasattr(frames, "cpu"):  # a torch tensor
        frames = frames.detach().cpu().numpy()
    if isinstance(frames, np.ndarray):
        if frames.ndim == 3:
            frames = frames[None]
        if frames.ndim != 4:
            raise ValueError(f"{name} must be [T, H, W, 3] or [H, W, 3] uint8, got an array of shape {frames.shape}")
        items = list(frames)
    elif isinstance(frames, Sequence) and not isinstance(frames, (str, bytes)):
        items = [np.asarray(f.detach().cpu().numpy() if hasattr(f, "detach") else f) for f in frames]
    else:
        raise ValueError(f"{name} must be an array [T, H, W, 3] or a sequence of [H, W, 3] frames, got {type(frames)}")
    if not items:
        raise ValueError(f"{name} is empty: the judge needs at least one frame")
    for i, f in enumerate(items):
        if f.ndim != 3 or f.shape[-1] != 3:
            raise ValueError(f"{name}[{i}] must be [H, W, 3] RGB, got shape {f.shape}")
        if f.dtype != np.uint8:
            raise ValueError(
                f"{name}[{i}] must be uint8 (0..255), got {f.dtype}; convert floats in [0, 1] with "
                "(x * 255).round().astype(np.uint8)"
            )
        h, w = f.shape[:2]
        if min(h, w) < 1 or max(h, w) / min(h, w) > 200:
            raise ValueError(f"{name}[{i}] has an unusable size {h}x{w} (empty, or aspect ratio above 200)")
    return items


def sample_indices(total: int, num_frames: int | None, spacing: str | int = "uniform") -> list[int]:
    """Which of `total` frames the judge sees: `num_frames` of them (None: all), in time order, the last included.

    spacing: "uniform" (evenly spread from the first frame to the last), "last" (the final ones), or an int
    stride k (the last frame and every k-th one before it).
    """
    n = total if num_frames is None else min(num_frames, total)
    if spacing == "uniform":
        return sorted({int(round(x)) for x in np.linspace(0, total - 1, n)}) if n > 1 else [total - 1]
    if spacing == "last":
        return list(range(total - n, total))
    if isinstance(spacing, (int, np.integer)) and not isinstance(spacing, bool) and spacing >= 1:
        return list(range(total - 1, -1, -int(spacing)))[:n][::-1]
    raise ValueError(f"spacing must be one of {SPACINGS} or a positive int stride, got {spacing!r}")
