"""cosmos3-world: NVIDIA's Cosmos3 world model as a robot simulator."""

__version__ = "0.1.0"

from .config import Cosmos3Config
from .generator import Cosmos3Generator, GenerationPlan, GenerationSpec, GeneratorOutput
from .prefix_cache import PrefixCache, PrefixKV

__all__ = [
    "Cosmos3Config",
    "Cosmos3Generator",
    "GenerationPlan",
    "GenerationSpec",
    "GeneratorOutput",
    "PrefixCache",
    "PrefixKV",
]
