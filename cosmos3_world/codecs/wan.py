"""The Wan 2.2 VAE (diffusers' `AutoencoderKLWan`) as a codec, normalised as the reference pipeline does."""

from __future__ import annotations

import os
from typing import Any

import torch
from diffusers import AutoencoderKLWan

from ..kernels import route_convs_through_onednn
from .base import Codec
from .wan_decoder import WanFastDecoder, unsupported_reason


class WanVAECodec(Codec):
    """The Wan 2.2 VAE (z_dim 48, 16x spatial, 4x temporal) with Cosmos3's latent normalisation.

    Encode takes the posterior mode and maps it to ``(mu - latents_mean) * (1 / latents_std)``;
    decode inverts that and runs the VAE decoder. Both run in the VAE's dtype, with the
    statistics cast to that dtype first, as the reference ``Cosmos3OmniPipeline`` does.

    Decoding runs `WanFastDecoder` on the VAE's own weights: the whole clip in one causal pass
    instead of diffusers' frame-by-frame loop (same result up to float rounding; speed-ups in the
    README's Benchmarks). Long high-resolution clips are split into passes of a few latent frames so that
    no activation exceeds 1 GiB; ``decode_frames_per_pass`` fixes the latent frames per pass
    instead. It falls back to ``vae.decode`` when the VAE has tiling enabled or accelerate hooks,
    or a structure the fast decoder does not know.
    """

    def __init__(self, vae: AutoencoderKLWan, decode_frames_per_pass: int | None = None) -> None:
        if not isinstance(vae, AutoencoderKLWan):
            raise TypeError(f"vae must be a diffusers AutoencoderKLWan, got {type(vae).__name__}")
        _check_wan_config(vae.config)
        if decode_frames_per_pass is not None and decode_frames_per_pass < 1:
            raise ValueError(f"decode_frames_per_pass must be >= 1 or None, got {decode_frames_per_pass}")
        self.vae = vae.eval()
        self.decode_frames_per_pass = decode_frames_per_pass
        self._fast_decoder = WanFastDecoder(vae) if unsupported_reason(vae) is None else None
        self._tune_for_cpu()

    @classmethod
    def from_pretrained(
        cls,
        path_or_repo: str | os.PathLike[str],
        subfolder: str | None = "vae",
        torch_dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        **hub_kwargs: Any,
    ) -> WanVAECodec:
        """Load the VAE from a local diffusers directory or a Hub repo (``<subfolder>/``)."""
        vae = AutoencoderKLWan.from_pretrained(path_or_repo, subfolder=subfolder, torch_dtype=torch_dtype, **hub_kwargs)
        return cls(vae).to(device=device)

    @property
    def latent_channels(self) -> int:
        return int(self.vae.config.z_dim)

    @property
    def spatial_factor(self) -> int:
        return int(self.vae.config.scale_factor_spatial)

    @property
    def temporal_factor(self) -> int:
        return int(self.vae.config.scale_factor_temporal)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.vae.parameters()).dtype  # diffusers' `vae.dtype` walks every module: ~0.5 ms

    @property
    def device(self) -> torch.device:
        return next(self.vae.parameters()).device

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> WanVAECodec:
        if device is not None:
            self.vae.to(device=device)
        if dtype is not None:
            self.vae.to(dtype=dtype)
        self._tune_for_cpu()
        return self

    def _tune_for_cpu(self) -> None:
        """On CPU: 3-D conv weights channels-last, so oneDNN runs the convolutions and the channel-wise
        RMS norms between them on contiguous channels (same math, faster); and the diffusers
        encoder's convolutions sent to oneDNN (`kernels.route_convs_through_onednn`)."""
        if self.device.type != "cpu":
            return
        for module in self.vae.modules():
            if isinstance(module, torch.nn.Conv3d):
                module.weight.data = module.weight.data.contiguous(memory_format=torch.channels_last_3d)
        route_convs_through_onednn(self.vae.encoder)

    def _stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, inv_std) as ``[1, C, 1, 1, 1]`` in the VAE's dtype, ``inv_std = 1 / std`` computed in it."""
        mean = torch.tensor(self.vae.config.latents_mean, dtype=self.dtype, device=self.device)
        inv_std = 1.0 / torch.tensor(self.vae.config.latents_std, dtype=self.dtype, device=self.device)
        return mean.view(1, -1, 1, 1, 1), inv_std.view(1, -1, 1, 1, 1)

    def _encode(self, pixels: torch.Tensor) -> torch.Tensor:
        mu = self.vae.encode(pixels).latent_dist.mode()  # [B, z_dim, t, H/16, W/16]
        mean, inv_std = self._stats()
        return (mu - mean) * inv_std

    def _decode(self, latents: torch.Tensor) -> torch.Tensor:
        mean, inv_std = self._stats()
        z = latents / inv_std + mean
        vae = self.vae
        if self._fast_decoder is None or vae.use_tiling or getattr(vae, "_hf_hook", None) is not None:
            return vae.decode(z).sample  # [B, 3, T, H, W]
        if vae.use_slicing and z.shape[0] > 1:
            return torch.cat([self._fast_decoder(zi, self.decode_frames_per_pass) for zi in z.split(1)])
        return self._fast_decoder(z, self.decode_frames_per_pass)


def _check_wan_config(config: Any) -> None:
    """Reject a VAE whose declared scale factors disagree with its architecture.

    diffusers reads ``scale_factor_spatial``/``scale_factor_temporal`` from the config without
    checking them, and its encoder always consumes frames as 1 + 4 + 4 + ..., silently dropping
    the rest; a wrong declaration would make this codec report wrong shapes.
    """
    downsamples = len(config.dim_mult) - 1
    spatial = (config.patch_size or 1) * 2**downsamples
    temporal = 2 ** sum(bool(t) for t in config.temperal_downsample[:downsamples])
    if config.scale_factor_spatial != spatial:
        raise ValueError(
            f"vae config scale_factor_spatial={config.scale_factor_spatial} contradicts the architecture "
            f"(patch_size={config.patch_size}, {downsamples} spatial downsamples -> {spatial})"
        )
    if config.scale_factor_temporal != temporal or temporal != 4:
        raise ValueError(
            f"vae config scale_factor_temporal={config.scale_factor_temporal} with temperal_downsample="
            f"{config.temperal_downsample} is not supported: the diffusers encoder chunks time by 4, "
            "so both must give a temporal factor of 4"
        )
    if len(config.latents_mean) != config.z_dim or len(config.latents_std) != config.z_dim:
        raise ValueError(f"vae config latents_mean and latents_std must have z_dim={config.z_dim} entries")
