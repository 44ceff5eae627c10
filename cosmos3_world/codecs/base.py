"""The codec interface: the map between pixel videos and the latent videos the world model works in.

The world engine only talks to `Codec`: `encode` pixels to normalised latents, `decode` them
back, and the spatial / temporal factors that relate their shapes. Codecs are causal in time:
latent frame 0 encodes pixel frame 0 alone and latent frame k >= 1 encodes pixel frames
`tf*(k-1)+1 .. tf*k`, so `T` pixel frames give `(T-1)//tf + 1` latent frames and only
`T = 1 + tf*n` is expressible.
"""

from __future__ import annotations

import abc
from typing import Any

import torch


class Codec(abc.ABC):
    """Encodes pixel videos ``[B, 3, T, H, W]`` in [-1, 1] to latents ``[B, C, t, h, w]`` and back.

    ``encode``/``decode`` validate their input, move it to the codec's device and dtype, run
    without autograd, and return float32 on the codec's device. Subclasses implement
    ``_encode``/``_decode`` on already-validated tensors.
    """

    @property
    @abc.abstractmethod
    def latent_channels(self) -> int:
        """Channels ``C`` of a latent frame."""

    @property
    @abc.abstractmethod
    def spatial_factor(self) -> int:
        """Pixels per latent along H and along W."""

    @property
    @abc.abstractmethod
    def temporal_factor(self) -> int:
        """Pixel frames per latent frame after the first (causal) one."""

    @property
    @abc.abstractmethod
    def dtype(self) -> torch.dtype:
        """Dtype the codec computes in."""

    @property
    @abc.abstractmethod
    def device(self) -> torch.device:
        """Device the codec computes on."""

    @property
    def pixel_channels(self) -> int:
        """Channels of a pixel frame: RGB."""
        return 3

    @abc.abstractmethod
    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Codec:
        """Move the codec to ``device`` and/or cast it to ``dtype`` in place; returns self."""

    @abc.abstractmethod
    def _encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Valid pixels on the codec's device and dtype -> latents ``[B, C, t, h, w]``."""

    @abc.abstractmethod
    def _decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Valid latents on the codec's device and dtype -> pixels ``[B, 3, T, H, W]``."""

    def latent_frames(self, num_pixel_frames: int) -> int:
        """Latent frames that encode ``num_pixel_frames`` pixel frames (which must be 1 + tf*n)."""
        tf = self.temporal_factor
        if num_pixel_frames < 1 or (num_pixel_frames - 1) % tf != 0:
            raise ValueError(
                f"num_pixel_frames must be 1 + {tf}*n for n >= 0 (causal codec, temporal factor {tf}), "
                f"got {num_pixel_frames}"
            )
        return (num_pixel_frames - 1) // tf + 1

    def pixel_frames(self, num_latent_frames: int) -> int:
        """Pixel frames that ``num_latent_frames`` latent frames decode to."""
        if num_latent_frames < 1:
            raise ValueError(f"num_latent_frames must be >= 1, got {num_latent_frames}")
        return (num_latent_frames - 1) * self.temporal_factor + 1

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels ``[B, 3, T, H, W]`` in [-1, 1] -> normalised float32 latents ``[B, C, t, h, w]``."""
        _check_video(pixels, "pixels", self.pixel_channels)
        _, _, frames, height, width = pixels.shape
        sf, tf = self.spatial_factor, self.temporal_factor
        if height % sf or width % sf:
            raise ValueError(
                f"pixels height and width must be multiples of the spatial factor {sf}, got H={height}, W={width}"
            )
        if (frames - 1) % tf:
            raise ValueError(f"pixels must have 1 + {tf}*n frames (causal codec, temporal factor {tf}), got T={frames}")
        return self._encode(pixels.to(device=self.device, dtype=self.dtype)).float()

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents ``[B, C, t, h, w]`` -> float32 pixels ``[B, 3, T, H, W]`` clamped to [-1, 1]."""
        _check_video(latents, "latents", self.latent_channels)
        pixels = self._decode(latents.to(device=self.device, dtype=self.dtype))
        return pixels.float().clamp_(-1.0, 1.0)


def _check_video(video: Any, name: str, channels: int) -> None:
    """Raise ValueError unless ``video`` is a finite, non-empty float tensor ``[B, channels, T, H, W]``."""
    if not isinstance(video, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(video).__name__}")
    if video.ndim != 5:
        raise ValueError(f"{name} must have rank 5 [B, C, T, H, W], got shape {tuple(video.shape)}")
    if video.shape[1] != channels:
        raise ValueError(f"{name} must have {channels} channels in dim 1, got shape {tuple(video.shape)}")
    if video.numel() == 0:
        raise ValueError(f"{name} must be non-empty, got shape {tuple(video.shape)}")
    if not video.is_floating_point():
        raise ValueError(f"{name} must have a floating dtype, got {video.dtype}")
    if not torch.isfinite(video).all():
        raise ValueError(f"{name} must contain only finite values (found NaN or inf)")
