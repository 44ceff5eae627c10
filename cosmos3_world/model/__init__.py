"""The Cosmos3 mixture-of-transformers generator: config, rotary positions, layers, the per-chunk
plan, the model, the Reasoner prefix cache and checkpoint I/O in the published layout."""

from .checkpoint import CheckpointError, load_generator, parse_dtype, save_generator
from .config import Cosmos3Config
from .generator import Cosmos3Generator
from .outputs import GeneratorOutput
from .plan import GenerationPlan, GenerationSpec
from .prefix_cache import PrefixCache, PrefixCacheStats, PrefixKV

__all__ = [
    "CheckpointError",
    "Cosmos3Config",
    "Cosmos3Generator",
    "GenerationPlan",
    "GenerationSpec",
    "GeneratorOutput",
    "PrefixCache",
    "PrefixCacheStats",
    "PrefixKV",
    "load_generator",
    "parse_dtype",
    "save_generator",
]
