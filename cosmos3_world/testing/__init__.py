"""Builders of small but real components for tests, benchmarks and demos (no downloads): tiny bundles
in the published layout, a tiny tokenizer, and the diffusers reference side of parity checks
(`cosmos3_world.testing.reference`, which imports diffusers' transformer and pipeline)."""

from .tiny import build_tiny_bundle, demo_image, tiny_config, tiny_wan_vae_config
from .tokenizer import TINY_SPECIAL_TOKENS, build_tiny_tokenizer

__all__ = [
    "TINY_SPECIAL_TOKENS",
    "build_tiny_bundle",
    "build_tiny_tokenizer",
    "demo_image",
    "tiny_config",
    "tiny_wan_vae_config",
]
