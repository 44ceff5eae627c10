"""Frames in and out of the engine: user images/videos -> [3, T, H, W] in [-1, 1], and back to uint8."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def to_pixels(x: Any, name: str, spatial_factor: int = 1) -> torch.Tensor:
    """An image [H, W, 3] or video [T, H, W, 3] (uint8, or float in [0, 1]; numpy, torch or PIL)
    -> float32 [3, T, H, W] in [-1, 1]."""
    try:
        from PIL import Image

        if isinstance(x, Image.Image):
            x = np.asarray(x.convert("RGB"))
    except ImportError:  # pragma: no cover - PIL ships with diffusers
        pass
    if isinstance(x, (list, tuple)):
        x = np.stack([np.asarray(f) for f in x])
    t = x.detach().cpu() if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
    if t.ndim == 3:
        t = t[None]
    if t.ndim != 4 or t.shape[-1] != 3:
        raise ValueError(f"{name} must be [H, W, 3] or [T, H, W, 3] RGB, got shape {tuple(t.shape)}")
    if t.dtype == torch.uint8:
        t = t.float() / 127.5 - 1.0
    elif t.dtype.is_floating_point:
        t = t.float()
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} holds NaN or inf values")
        if float(t.min()) < 0.0 or float(t.max()) > 1.0:
            raise ValueError(
                f"{name} as floats must lie in [0, 1], got values in [{float(t.min()):.3g}, {float(t.max()):.3g}]"
            )
        t = t * 2.0 - 1.0
    else:
        raise ValueError(f"{name} must be uint8 or float in [0, 1], got dtype {t.dtype}")
    h, w = t.shape[1:3]
    if h % spatial_factor or w % spatial_factor or h == 0 or w == 0:
        raise ValueError(f"{name} height and width must be positive multiples of {spatial_factor} "
                         f"(the codec's spatial factor), got {h}x{w}")  # fmt: skip
    return t.permute(3, 0, 1, 2).contiguous()


def to_uint8(pixels: torch.Tensor) -> np.ndarray:
    """[3, T, H, W] in [-1, 1] -> [T, H, W, 3] uint8."""
    x = pixels.permute(1, 2, 3, 0).clone(memory_format=torch.contiguous_format)  # [T, H, W, 3]; then in place
    return x.clamp_(-1, 1).add_(1.0).mul_(127.5).round_().to(torch.uint8).numpy()
