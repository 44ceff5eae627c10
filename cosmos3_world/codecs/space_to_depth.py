"""A weightless, lossless space-to-depth codec for tiny models (64x64x3 pixels <-> 16x16x48 latents)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from .base import Codec


class SpaceToDepthCodec(Codec):
    """Lossless, weightless codec: each ``patch x patch`` pixel block becomes one latent position.

    Latent channel ``((k * channels + c) * patch + dy) * patch + dx`` holds pixel
    ``(c, dy, dx)`` of frame ``k`` in its temporal group, so with the defaults 64x64x3 pixels
    <-> 16x16x48 latents (``F.pixel_unshuffle`` per frame). With ``temporal_factor`` tf > 1 the
    codec is causal like the Wan VAE: latent frame 0 holds pixel frame 0 repeated tf times
    (decode keeps the last copy), latent k >= 1 holds pixel frames ``tf*(k-1)+1 .. tf*k``.
    """

    def __init__(self, patch: int = 4, channels: int = 3, temporal_factor: int = 1) -> None:
        for name, value in (("patch", patch), ("channels", channels), ("temporal_factor", temporal_factor)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.patch = patch
        self.channels = channels
        self._temporal_factor = temporal_factor
        self._device = torch.device("cpu")
        self._dtype = torch.float32

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> SpaceToDepthCodec:
        """Build from a ``config.json`` dict as written by :meth:`save_pretrained`."""
        name = config.get("_class_name", cls.__name__)
        if name != cls.__name__:
            raise ValueError(f"config _class_name must be {cls.__name__!r}, got {name!r}")
        return cls(
            patch=config["patch"],
            channels=config.get("channels", 3),
            temporal_factor=config.get("temporal_factor", 1),
        )

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike[str]) -> SpaceToDepthCodec:
        """Load from ``directory/config.json``."""
        return cls.from_config(json.loads((Path(directory) / "config.json").read_text()))

    def save_pretrained(self, directory: str | os.PathLike[str]) -> None:
        """Write ``directory/config.json`` (the codec has no weights)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = {
            "_class_name": type(self).__name__,
            "patch": self.patch,
            "channels": self.channels,
            "temporal_factor": self._temporal_factor,
        }
        (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n")

    @property
    def latent_channels(self) -> int:
        return self._temporal_factor * self.channels * self.patch**2

    @property
    def spatial_factor(self) -> int:
        return self.patch

    @property
    def temporal_factor(self) -> int:
        return self._temporal_factor

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def pixel_channels(self) -> int:
        return self.channels

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> SpaceToDepthCodec:
        if device is not None:
            self._device = torch.device(device)
        if dtype is not None:
            self._dtype = dtype
        return self

    def _encode(self, pixels: torch.Tensor) -> torch.Tensor:
        b, c, _, height, width = pixels.shape
        p, tf = self.patch, self._temporal_factor
        # Causal padding: frame 0 fills a whole temporal group -> [B, C, tf*t, H, W].
        x = torch.cat([pixels[:, :, :1].expand(-1, -1, tf - 1, -1, -1), pixels], dim=2)
        t, h, w = x.shape[2] // tf, height // p, width // p
        x = x.reshape(b, c, t, tf, h, p, w, p)
        x = x.permute(0, 3, 1, 5, 7, 2, 4, 6)  # [B, tf, C, p, p, t, h, w]
        return x.reshape(b, self.latent_channels, t, h, w)

    def _decode(self, latents: torch.Tensor) -> torch.Tensor:
        b, _, t, h, w = latents.shape
        p, tf, c = self.patch, self._temporal_factor, self.channels
        x = latents.reshape(b, tf, c, p, p, t, h, w)
        x = x.permute(0, 2, 5, 1, 6, 3, 7, 4)  # [B, C, t, tf, h, p, w, p]
        x = x.reshape(b, c, t * tf, h * p, w * p)
        return x[:, :, tf - 1 :]  # drop the causal padding copies of frame 0
