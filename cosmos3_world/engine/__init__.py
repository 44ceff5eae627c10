"""The world engine: worlds rolled forward chunk after chunk (`WorldModel`, `World`), the sampler,
prompts, embodiments and the pixel conversions around them."""

from .embodiments import (
    DEFAULT_EMBODIMENTS,
    Embodiment,
    EmbodimentRegistry,
    get_embodiment,
    prepare_actions,
    register_embodiment,
    unnormalize_actions,
)
from .prompts import PromptEncoder, action_caption, load_tokenizer
from .sampler import FlowSampler, SamplerConfig
from .world import ChunkResult, World, WorldModel

__all__ = [
    "DEFAULT_EMBODIMENTS",
    "ChunkResult",
    "Embodiment",
    "EmbodimentRegistry",
    "FlowSampler",
    "PromptEncoder",
    "SamplerConfig",
    "World",
    "WorldModel",
    "action_caption",
    "get_embodiment",
    "load_tokenizer",
    "prepare_actions",
    "register_embodiment",
    "unnormalize_actions",
]
