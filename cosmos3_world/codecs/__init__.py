"""Codecs between pixel videos and latents: the interface (`Codec`), the Wan 2.2 VAE (`WanVAECodec`,
decoded by our whole-clip `WanFastDecoder`) and a lossless space-to-depth codec for tiny models;
`load_codec` picks one from a bundle's `vae/config.json`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import hf_hub_download

from .base import Codec
from .space_to_depth import SpaceToDepthCodec
from .wan import WanVAECodec
from .wan_decoder import WanFastDecoder

__all__ = ["Codec", "SpaceToDepthCodec", "WanFastDecoder", "WanVAECodec", "load_codec"]

# Keyword arguments of `from_pretrained` that `hf_hub_download` understands too.
_HUB_DOWNLOAD_KEYS = ("revision", "cache_dir", "token", "local_files_only", "force_download", "proxies")


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
