"""cosmos3-world: NVIDIA's Cosmos3 world model as a robot simulator.

The import is light: public names load their module (and torch, diffusers, transformers) on
first use (PEP 562), so a controller-side client or the numpy simulator starts fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(
        ["CheckpointError", "Cosmos3Config", "Cosmos3Generator", "GenerationPlan", "GenerationSpec",
         "GeneratorOutput", "PrefixCache", "PrefixKV"],
        "cosmos3_world.model",
    ),
    **dict.fromkeys(
        ["Codec", "SpaceToDepthCodec", "WanFastDecoder", "WanVAECodec", "load_codec"], "cosmos3_world.codecs"
    ),
    **dict.fromkeys(
        ["DEFAULT_EMBODIMENTS", "Embodiment", "EmbodimentRegistry", "get_embodiment", "prepare_actions",
         "register_embodiment", "unnormalize_actions"],
        "cosmos3_world.engine.embodiments",
    ),
    **dict.fromkeys(
        ["PromptEncoder", "action_caption", "load_tokenizer"], "cosmos3_world.engine.prompts"
    ),
    **dict.fromkeys(["FlowSampler", "SamplerConfig"], "cosmos3_world.engine.sampler"),
    **dict.fromkeys(["ChunkResult", "World", "WorldModel"], "cosmos3_world.engine.world"),
    **dict.fromkeys(["ReasonerJudge", "ReasonerProcessor"], "cosmos3_world.judge"),
    **dict.fromkeys(["build_tiny_bundle", "demo_image"], "cosmos3_world.testing.tiny"),
    **dict.fromkeys(["read_video", "write_video"], "cosmos3_world.video"),
}  # fmt: skip

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'cosmos3_world' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


def _register_envs() -> None:
    """Register the gym ids with string entry points: nothing heavy (torch, the engine) loads before gym.make."""
    from gymnasium.envs.registration import register, registry

    if "Cosmos3World-v0" not in registry:
        register(
            id="Cosmos3World-v0",
            entry_point="cosmos3_world.envs.world_env:Cosmos3WorldEnv",
            vector_entry_point="cosmos3_world.envs.vector_env:Cosmos3WorldVectorEnv",
        )
    if "Cosmos3PushSim-v0" not in registry:
        register(id="Cosmos3PushSim-v0", entry_point="cosmos3_world.sim.env:PushSimEnv")


_register_envs()
