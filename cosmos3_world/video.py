"""Writing rollouts as mp4 videos (OpenCV) and reading them back."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_video(frames: np.ndarray, path: str | Path, fps: float = 10.0, scale: int = 1) -> Path:
    """Write RGB frames [T, H, W, 3] uint8 to an mp4 file; `scale` enlarges small frames (nearest)."""
    import cv2

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise ValueError(f"frames must be a non-empty [T, H, W, 3] uint8 array, got {frames.dtype} {frames.shape}")
    if scale > 1:
        frames = frames.repeat(scale, axis=1).repeat(scale, axis=2)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (w, h))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV could not open {path} for writing an mp4 video")
    try:
        for frame in frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    return path


def read_video(path: str | Path) -> np.ndarray:
    """Read a video file back as RGB frames [T, H, W, 3] uint8."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    cap.release()
    if not frames:
        raise ValueError(f"{path}: no frames could be read")
    return np.stack(frames)
