"""cosmos3-world: NVIDIA's Cosmos3 world model as a robot simulator."""

__version__ = "0.1.0"

from .checkpoint import CheckpointError
from .codecs import Codec, SpaceToDepthCodec, WanVAECodec, load_codec
from .config import Cosmos3Config
from .embodiments import (
    DEFAULT_EMBODIMENTS,
    Embodiment,
    EmbodimentRegistry,
    get_embodiment,
    prepare_actions,
    register_embodiment,
    unnormalize_actions,
)
from .generator import Cosmos3Generator, GenerationPlan, GenerationSpec, GeneratorOutput
from .prefix_cache import PrefixCache, PrefixKV
from .prompts import PromptEncoder, action_caption, load_tokenizer, resolution_for_tier
from .sampler import FlowSampler, SamplerConfig
from .tiny import build_tiny_bundle, demo_image
from .video import read_video, write_video
from .wan_decoder import WanFastDecoder
from .world import ChunkResult, World, WorldModel

__all__ = [
    "CheckpointError",
    "ChunkResult",
    "Codec",
    "Cosmos3Config",
    "Cosmos3Generator",
    "DEFAULT_EMBODIMENTS",
    "Embodiment",
    "EmbodimentRegistry",
    "FlowSampler",
    "GenerationPlan",
    "GenerationSpec",
    "GeneratorOutput",
    "PrefixCache",
    "PrefixKV",
    "PromptEncoder",
    "SamplerConfig",
    "SpaceToDepthCodec",
    "WanFastDecoder",
    "WanVAECodec",
    "World",
    "WorldModel",
    "action_caption",
    "build_tiny_bundle",
    "demo_image",
    "get_embodiment",
    "load_codec",
    "load_tokenizer",
    "prepare_actions",
    "read_video",
    "register_embodiment",
    "resolution_for_tier",
    "unnormalize_actions",
    "write_video",
]
