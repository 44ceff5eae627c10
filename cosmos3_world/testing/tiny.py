"""Tiny bundles in the published layout, built on the fly (no download): for tests, demos and CI.

A bundle is a directory with model_index.json and the transformer, vae, text_tokenizer and
scheduler folders, loadable by `WorldModel.from_pretrained` (and, with the Wan codec, by
diffusers' own classes). Weights are random: the dynamics are meaningless, the machinery is real.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..codecs import SpaceToDepthCodec
from ..engine.sampler import DEFAULT_SCHEDULER_CONFIG
from ..model import Cosmos3Config, Cosmos3Generator
from .tokenizer import build_tiny_tokenizer

_TINY_GENERATOR_CONFIG: dict[str, Any] = dict(
    hidden_size=128, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, head_dim=32,
    intermediate_size=256, rope_axes_dim=[6, 5, 5], vocab_size=2048, latent_channel=48, latent_patch_size=2,
    patch_latent_dim=192, action_gen=True, action_dim=64, num_embodiment_domains=32,
)  # fmt: skip


def tiny_config(**overrides: Any) -> dict[str, Any]:
    """The tiny generator config (48 latent channels, as the codecs make), with `overrides` applied."""
    return {**_TINY_GENERATOR_CONFIG, **overrides}


def build_tiny_bundle(
    directory: str | Path,
    *,
    codec: str = "space_to_depth",
    seed: int = 0,
    reasoner: bool | dict[str, Any] = False,
    **config_overrides: Any,
) -> Path:
    """Write a tiny random-weight bundle to `directory` and return its path.

    codec: "space_to_depth" (lossless 64x64x3 <-> 16x16x48, temporal factor 1) or "wan" (a small
    real AutoencoderKLWan: 16x spatial, 4x temporal).
    reasoner: also write the Reasoner at the bundle root in the published unified layout (config.json
    of model_type "cosmos3_omni", model.safetensors with the generator's flat keys + a tiny random ViT,
    preprocessor_config.json, tokenizer), loadable by `Cosmos3OmniForConditionalGeneration.from_pretrained`.
    A dict overrides the tiny vision config (`tiny_vision_config`). Off, the bundle is exactly as before.
    """
    from diffusers import UniPCMultistepScheduler
    from diffusers import __version__ as diffusers_version

    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = Cosmos3Config.from_dict(tiny_config(**config_overrides))
    generator = Cosmos3Generator(config)
    generator.save_pretrained(root / "transformer")
    if codec == "space_to_depth":
        SpaceToDepthCodec(patch=4, channels=3).save_pretrained(root / "vae")
        vae_entry = ["cosmos3_world", "SpaceToDepthCodec"]
    elif codec == "wan":
        from diffusers import AutoencoderKLWan

        AutoencoderKLWan(**tiny_wan_vae_config()).save_pretrained(root / "vae")
        vae_entry = ["diffusers", "AutoencoderKLWan"]
    else:
        raise ValueError(f"codec must be 'space_to_depth' or 'wan', got {codec!r}")
    build_tiny_tokenizer(root / "text_tokenizer")
    UniPCMultistepScheduler(
        **{k: v for k, v in DEFAULT_SCHEDULER_CONFIG.items() if not k.startswith("_")}
    ).save_pretrained(root / "scheduler")
    index = {
        "_class_name": "Cosmos3OmniPipeline",
        "_diffusers_version": diffusers_version,
        "transformer": ["diffusers", "Cosmos3OmniTransformer"],
        "vae": vae_entry,
        "text_tokenizer": ["transformers", "PreTrainedTokenizerFast"],
        "scheduler": ["diffusers", "UniPCMultistepScheduler"],
        # Our defaults: tiny models work on frames at their own size (not a tier's canvas), with a short sampler.
        "_cosmos3_world": {"tier": None, "sampler": {"num_steps": 10, "guidance_scale": 3.0}},
    }
    (root / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    if reasoner:
        vision = tiny_vision_config(**(reasoner if isinstance(reasoner, dict) else {}))
        _write_reasoner(root, generator, vision, seed)
    return root


_TINY_VISION_CONFIG: dict[str, Any] = dict(
    depth=2, hidden_size=64, intermediate_size=128, num_heads=2, patch_size=8, spatial_merge_size=2,
    temporal_patch_size=2, num_position_embeddings=64, deepstack_visual_indexes=[0, 1],
)  # fmt: skip


def tiny_vision_config(**overrides: Any) -> dict[str, Any]:
    """The tiny Reasoner ViT config (Qwen3-VL vision fields; 8x8 patches, 2x2 merge), with `overrides` applied."""
    return {**_TINY_VISION_CONFIG, **overrides}


def reasoner_text_config(config: Cosmos3Config) -> dict[str, Any]:
    """The Qwen3-VL text config of the Reasoner whose language model is `config`'s understanding pathway."""
    if config.hidden_act != "silu" or not config.qk_norm_for_text:
        raise ValueError("a Reasoner (Qwen3-VL) needs hidden_act='silu' and qk_norm_for_text=True")
    return dict(
        vocab_size=config.vocab_size, hidden_size=config.hidden_size, intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers, num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_key_value_heads, head_dim=config.head_dim, hidden_act="silu",
        rms_norm_eps=config.rms_norm_eps, attention_bias=config.attention_bias, max_position_embeddings=32768,
        rope_parameters=dict(rope_type="default", rope_theta=config.rope_theta,
                             mrope_section=list(config.rope_axes_dim), mrope_interleaved=True),
    )  # fmt: skip


def _write_reasoner(root: Path, generator: Cosmos3Generator, vision: dict[str, Any], seed: int) -> None:
    """The bundle root as transformers reads it: config.json, unified model.safetensors, processor and tokenizer."""
    from safetensors.torch import save_file
    from transformers import AutoModel, AutoTokenizer, Cosmos3OmniConfig, Qwen2VLImageProcessorPil

    tokenizer = AutoTokenizer.from_pretrained(str(root / "text_tokenizer"))
    ids = {name: tokenizer.convert_tokens_to_ids(f"<|{name}|>") for name in
           ("image_pad", "video_pad", "vision_start", "vision_end")}  # fmt: skip
    config = Cosmos3OmniConfig(
        text_config=reasoner_text_config(generator.config),
        vision_config={**vision, "out_hidden_size": generator.config.hidden_size},
        image_token_id=ids["image_pad"], video_token_id=ids["video_pad"],
        vision_start_token_id=ids["vision_start"], vision_end_token_id=ids["vision_end"], tie_word_embeddings=False,
    )  # fmt: skip
    config.save_pretrained(str(root))
    visual = AutoModel.from_config(config.vision_config)  # Qwen3VLVisionModel: keys blocks.*, merger.*, ...
    rng = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # random, non-trivial values everywhere (norms near 1, small biases) so wiring bugs show
        for name, p in visual.named_parameters():
            noise = torch.randn(p.shape, generator=rng)
            p.copy_(1.0 + 0.1 * noise if "norm" in name and p.ndim == 1 and name.endswith("weight") else 0.05 * noise)
    tensors = {k: v.detach().contiguous() for k, v in generator.state_dict().items()}
    tensors.update({k: v.detach().contiguous() for k, v in visual.state_dict().items()})
    save_file(tensors, str(root / "model.safetensors"), metadata={"format": "pt"})
    merge, patch = vision["spatial_merge_size"], vision["patch_size"]
    side = patch * merge  # frames are resized to multiples of one merged patch, at most 4x4 merged patches
    Qwen2VLImageProcessorPil(
        patch_size=patch, merge_size=merge, temporal_patch_size=vision["temporal_patch_size"],
        size={"shortest_edge": side * side, "longest_edge": 16 * side * side},
        image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5],
    ).save_pretrained(str(root))  # fmt: skip
    tokenizer.save_pretrained(str(root))


def demo_image(height: int = 64, width: int = 64, seed: int = 0) -> np.ndarray:
    """A deterministic synthetic tabletop scene [H, W, 3] uint8: a table, a few blocks, a gripper."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    img = np.stack([0.55 + 0.2 * y, 0.45 + 0.15 * x, 0.35 + 0.1 * y], axis=-1)  # warm table gradient
    for _ in range(3):
        h, w = rng.integers(height // 8, height // 4), rng.integers(width // 8, width // 4)
        top, left = rng.integers(height // 3, height - h), rng.integers(0, width - w)
        img[top : top + h, left : left + w] = rng.uniform(0.1, 0.9, size=3)
    img[: height // 4, width // 2 - width // 16 : width // 2 + width // 16] = (0.2, 0.2, 0.22)  # gripper
    return (img.clip(0, 1) * 255).round().astype(np.uint8)


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


def demo_actions(chunk: int, chunk_size: int, action_dim: int) -> np.ndarray:
    """Smooth, bounded actions in [-1, 1] for demos: each dimension follows its own slow sinusoid."""
    t = chunk * chunk_size + np.arange(chunk_size)[:, None]
    phase = np.arange(action_dim)[None, :]
    return (0.8 * np.sin(0.3 * t + 1.7 * phase)).astype(np.float32)
