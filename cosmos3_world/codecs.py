"""Codecs: the map between pixel videos and the latent videos the world model works in.

The world engine only talks to the :class:`Codec` interface: ``encode`` pixels to normalised
latents, ``decode`` them back, and the spatial / temporal factors that relate their shapes.
Two implementations:

* :class:`WanVAECodec` wraps the Wan 2.2 VAE (``diffusers.AutoencoderKLWan``) used by the
  published Cosmos3 checkpoint, normalising latents exactly as the reference pipeline does.
* :class:`SpaceToDepthCodec` is a weightless, lossless pixel-unshuffle for tiny models
  (64x64x3 pixels <-> 16x16x48 latents).

Both are causal in time: latent frame 0 encodes pixel frame 0 alone and latent frame k >= 1
encodes pixel frames ``tf*(k-1)+1 .. tf*k``, so ``T`` pixel frames give ``(T-1)//tf + 1``
latent frames and only ``T = 1 + tf*n`` is expressible.
"""

from __future__ import annotations

import abc
import json
import os
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKLWan
from huggingface_hub import hf_hub_download

from .wan_decoder import WanFastDecoder, route_convs_through_onednn, unsupported_reason

__all__ = [
    "Codec",
    "WanVAECodec",
    "SpaceToDepthCodec",
    "load_codec",
    "tiny_wan_vae_config",
]

# Keyword arguments of `from_pretrained` that `hf_hub_download` understands too.
_HUB_DOWNLOAD_KEYS = ("revision", "cache_dir", "token", "local_files_only", "force_download", "proxies")


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


class WanVAECodec(Codec):
    """The Wan 2.2 VAE (z_dim 48, 16x spatial, 4x temporal) with Cosmos3's latent normalisation.

    Encode takes the posterior mode and maps it to ``(mu - latents_mean) * (1 / latents_std)``;
    decode inverts that and runs the VAE decoder. Both run in the VAE's dtype, with the
    statistics cast to that dtype first, as the reference ``Cosmos3OmniPipeline`` does.

    Decoding runs :class:`~cosmos3_world.wan_decoder.WanFastDecoder` on the VAE's own weights:
    the whole clip in one causal pass instead of diffusers' frame-by-frame loop (same result up
    to float rounding; for a 3-latent-frame clip on a 2-core CPU ~1.7x faster in bfloat16, ~7x
    in float32). Long high-resolution clips are split into passes of a few latent frames so that
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
        RMS norms between them on contiguous channels (~1.6x faster decode, same math); and the
        diffusers encoder's convolutions sent to oneDNN (`route_convs_through_onednn`)."""
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


def load_codec(
    path_or_repo: str | os.PathLike[str],
    subfolder: str | None = "vae",
    torch_dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    **hub_kwargs: Any,
) -> Codec:
    """Load the codec saved in ``<path_or_repo>/<subfolder>``, dispatching on its config ``_class_name``.

    ``path_or_repo`` is a local directory or a Hub repo id; Hub files go through the HF cache,
    so ``HF_HUB_OFFLINE=1`` / ``local_files_only=True`` work. ``hub_kwargs`` (revision,
    cache_dir, token, ...) are passed on to the download.
    """
    config = _read_config(path_or_repo, subfolder, hub_kwargs)
    class_name = config.get("_class_name")
    if class_name == "AutoencoderKLWan":
        return WanVAECodec.from_pretrained(
            path_or_repo, subfolder=subfolder, torch_dtype=torch_dtype, device=device, **hub_kwargs
        )
    if class_name == "SpaceToDepthCodec":
        return SpaceToDepthCodec.from_config(config).to(device=device, dtype=torch_dtype)
    raise ValueError(
        f"unknown codec _class_name {class_name!r} in the config.json of {path_or_repo!s} "
        f"(subfolder {subfolder!r}); expected 'AutoencoderKLWan' or 'SpaceToDepthCodec'"
    )


def _read_config(path_or_repo: str | os.PathLike[str], subfolder: str | None, hub_kwargs: dict[str, Any]) -> dict:
    """The ``config.json`` under ``subfolder`` of a local directory or Hub repo."""
    local = Path(path_or_repo)
    if local.is_dir():
        path = local / (subfolder or "") / "config.json"
        if not path.is_file():
            raise FileNotFoundError(f"no codec config at {path}")
    else:
        download_kwargs = {k: v for k, v in hub_kwargs.items() if k in _HUB_DOWNLOAD_KEYS}
        path = Path(hf_hub_download(str(path_or_repo), "config.json", subfolder=subfolder or None, **download_kwargs))
    return json.loads(path.read_text())


def tiny_wan_vae_config() -> dict[str, Any]:
    """Config of a small random-weight ``AutoencoderKLWan`` in the Wan 2.2 layout (~5M parameters).

    Same structure as the published VAE (z_dim 48, residual blocks, 2x2 patchify so 12 in/out
    channels, 16x spatial, 4x causal temporal, separate decoder width) with narrow layers, for
    tests: ``AutoencoderKLWan(**tiny_wan_vae_config())``. The latent statistics are arbitrary
    but non-trivial so normalisation bugs show.
    """
    z_dim = 48
    return {
        "base_dim": 16,
        "decoder_base_dim": 24,
        "z_dim": z_dim,
        "dim_mult": [1, 2, 4, 4],
        "num_res_blocks": 1,
        "attn_scales": [],
        "temperal_downsample": [False, True, True],
        "dropout": 0.0,
        "is_residual": True,
        "in_channels": 12,  # 3 RGB channels x 2x2 patch: patchify runs before the encoder
        "out_channels": 12,
        "patch_size": 2,
        "scale_factor_spatial": 16,  # 2 (patch) x 2^3 (downsamples); diffusers defaults to 8
        "scale_factor_temporal": 4,
        "latents_mean": [round(0.1 * (i % 7 - 3), 4) for i in range(z_dim)],
        "latents_std": [round(0.5 + 0.05 * (i % 11), 4) for i in range(z_dim)],
    }
