"""Building the Reasoner (transformers `Cosmos3OmniForConditionalGeneration`), alone or on a world model's weights.

Its language model is the generator's understanding pathway, tensor for tensor (DESIGN.md, "The
Reasoner"). Given a loaded generator we build the transformers model with its parameters on the meta
device (buffers such as the RoPE tables are computed for real), hand each language-model slot the
generator's own `Parameter` (same object, same storage: no second copy, and later weight updates are
seen), and read only the vision tower from the bundle root's unified safetensors. Without a generator,
transformers loads the whole Reasoner itself.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..model.checkpoint import CheckpointError, resolve_directory

if TYPE_CHECKING:
    from transformers import Cosmos3OmniConfig, Cosmos3OmniForConditionalGeneration

    from ..model import Cosmos3Generator

# transformers' Reasoner names <- the unified checkpoint's flat names (conversion_mapping.py, "cosmos3_omni")
_LM_PREFIX = "model.language_model."
_ATTN_RENAMES = {".self_attn.q_proj.": ".self_attn.to_q.", ".self_attn.k_proj.": ".self_attn.to_k.",
                 ".self_attn.v_proj.": ".self_attn.to_v.", ".self_attn.o_proj.": ".self_attn.to_out.",
                 ".self_attn.q_norm.": ".self_attn.norm_q.", ".self_attn.k_norm.": ".self_attn.norm_k."}  # fmt: skip
VISION_PREFIXES = ("blocks.", "merger.", "patch_embed.", "pos_embed.", "deepstack_merger_list.")
_VISION_MODULE = "model.visual."


_SMALL_FILES = ["*.json", "*.jinja", "*.txt", "tokenizer*", "text_tokenizer/*"]


def resolve_root(bundle: str | os.PathLike, shared: bool, **hub: Any) -> Path:
    """The bundle root on disk. A hub repo downloads its config, processor and tokenizer files, then only the
    weight shards needed: those holding the ViT when the language model comes from a world model, else all."""
    local = Path(bundle).expanduser()
    if local.is_dir():
        return local
    root = resolve_directory(bundle, None, allow_patterns=_SMALL_FILES, **hub)
    index = root / "model.safetensors.index.json"
    shards = ["model*.safetensors"]
    if shared and index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        shards = sorted({f for k, f in weight_map.items() if k.startswith(VISION_PREFIXES)}) or shards
    return resolve_directory(bundle, None, allow_patterns=shards, **hub)


def generator_name(name: str) -> str:
    """The generator's flat parameter name for a transformers language-model parameter name."""
    flat = name.removeprefix(_LM_PREFIX)
    for ours, theirs in _ATTN_RENAMES.items():
        flat = flat.replace(ours, theirs)
    return flat


def load_config(root: Path) -> "Cosmos3OmniConfig":
    """The bundle root's Reasoner config (config.json, model_type "cosmos3_omni")."""
    from transformers import Cosmos3OmniConfig

    path = root / "config.json"
    if not path.is_file():
        raise CheckpointError(
            f"{root}: no config.json at the bundle root, so no Reasoner (build tiny bundles with reasoner=True)"
        )
    model_type = json.loads(path.read_text()).get("model_type")
    if model_type != "cosmos3_omni":
        raise CheckpointError(f"{path}: model_type is {model_type!r}, expected 'cosmos3_omni' (the Reasoner)")
    return Cosmos3OmniConfig.from_pretrained(str(root))


def check_compatible(config: "Cosmos3OmniConfig", generator: "Cosmos3Generator") -> None:
    """Raise if the Reasoner's language model is not the generator's understanding pathway."""
    text, gen = config.text_config, generator.config
    fields = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
              "num_key_value_heads", "head_dim", "rms_norm_eps", "attention_bias")  # fmt: skip
    diffs = [f"{f}: Reasoner {getattr(text, f)} vs generator {getattr(gen, f)}" for f in fields
             if getattr(text, f) != getattr(gen, f)]  # fmt: skip
    rope = text.rope_parameters or {}
    if rope.get("rope_theta") != gen.rope_theta:
        diffs.append(f"rope_theta: Reasoner {rope.get('rope_theta')} vs generator {gen.rope_theta}")
    if list(rope.get("mrope_section", [24, 20, 20])) != list(gen.rope_axes_dim):
        diffs.append(
            f"mrope_section: Reasoner {rope.get('mrope_section')} vs generator rope_axes_dim {gen.rope_axes_dim}"
        )
    if gen.hidden_act != "silu" or text.hidden_act != "silu" or not gen.qk_norm_for_text:
        diffs.append("the Reasoner is Qwen3-VL: it needs hidden_act='silu' and q/k norms on the text pathway")
    if diffs:
        raise ValueError("the bundle's Reasoner does not match the world model's generator: " + "; ".join(diffs))


@contextlib.contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Modules built inside get their parameters on the meta device (no memory); buffers are made for real.

    Patches `nn.Module.register_parameter` process-wide while active (as accelerate's init_empty_weights does)."""
    original = nn.Module.register_parameter

    def register(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None and param.device.type != "meta":
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        original(module, name, param)

    nn.Module.register_parameter = register
    try:
        yield
    finally:
        nn.Module.register_parameter = original


def _set(model: nn.Module, name: str, value: nn.Parameter) -> None:
    module_name, _, attr = name.rpartition(".")
    model.get_submodule(module_name)._parameters[attr] = value


def root_weight_files(root: Path) -> dict[str, Path]:
    """Tensor name -> safetensors file at the bundle root (model.safetensors, or an index and shards)."""
    from safetensors import safe_open

    index = root / "model.safetensors.index.json"
    if index.is_file():
        return {k: root / f for k, f in json.loads(index.read_text())["weight_map"].items()}
    single = root / "model.safetensors"
    if not single.is_file():
        raise CheckpointError(f"{root}: no model.safetensors or model.safetensors.index.json at the bundle root")
    with safe_open(str(single), framework="pt") as f:
        return {k: single for k in f.keys()}


def share_reasoner(
    root: Path, config: "Cosmos3OmniConfig", generator: "Cosmos3Generator"
) -> "Cosmos3OmniForConditionalGeneration":
    """The Reasoner on `generator`'s parameters (shared, not copied) plus the vision tower read from `root`."""
    from safetensors import safe_open
    from transformers import Cosmos3OmniForConditionalGeneration

    check_compatible(config, generator)
    device, dtype = generator.device, generator.dtype
    with parameters_on_meta():
        model = Cosmos3OmniForConditionalGeneration(config)
    # language model + head: the generator's own Parameters
    ours = dict(generator.named_parameters())
    for name, _ in list(model.named_parameters(remove_duplicate=False)):
        if name.startswith(_VISION_MODULE):
            continue
        if name == "lm_head.weight" and config.tie_word_embeddings:
            flat = "embed_tokens.weight"
        else:
            flat = generator_name(name)
        if flat not in ours:
            raise CheckpointError(f"the generator has no tensor {flat!r} for the Reasoner's {name!r}")
        if ours[flat].shape != model.get_parameter(name).shape:
            raise CheckpointError(f"{flat}: generator shape {list(ours[flat].shape)} vs Reasoner {name} shape "
                                  f"{list(model.get_parameter(name).shape)}")  # fmt: skip
        _set(model, name, ours[flat])
    # vision tower: the only tensors read from disk
    expected = {
        n.removeprefix(_VISION_MODULE): p.shape for n, p in model.named_parameters() if n.startswith(_VISION_MODULE)
    }
    files = {k: f for k, f in root_weight_files(root).items() if k.startswith(VISION_PREFIXES)}
    missing, unexpected = sorted(set(expected) - set(files)), sorted(set(files) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{root}: the vision tower's keys do not match config.json's vision_config: "
                              f"missing {missing[:8]}, unexpected {unexpected[:8]}")  # fmt: skip
    for path in sorted(set(files.values())):
        with safe_open(str(path), framework="pt") as f:
            for key in (k for k, p in files.items() if p == path):
                tensor = f.get_tensor(key)
                if tensor.shape != expected[key]:
                    raise CheckpointError(f"{path}: {key} has shape {list(tensor.shape)}, config.json implies "
                                          f"{list(expected[key])}")  # fmt: skip
                _set(model, _VISION_MODULE + key, nn.Parameter(tensor.to(device, dtype), requires_grad=False))
    for module in model.modules():  # RoPE tables etc. were built on the CPU in float32
        for name, buf in module._buffers.items():
            if buf is not None:
                module._buffers[name] = buf.to(device)
    left = [n for n, p in model.named_parameters() if p.device.type == "meta"]
    if left:
        raise CheckpointError(f"Reasoner tensors left unset: {left[:8]}")
    return model.eval()


def load_reasoner(root: Path, device: torch.device, torch_dtype: torch.dtype) -> "Cosmos3OmniForConditionalGeneration":
    """The whole Reasoner from the bundle root, loaded by transformers (its key mapping, its checks)."""
    from transformers import Cosmos3OmniForConditionalGeneration

    load_config(root)
    model, info = Cosmos3OmniForConditionalGeneration.from_pretrained(
        str(root), dtype=torch_dtype, output_loading_info=True
    )
    bad = {k: sorted(v)[:8] for k, v in info.items() if k != "error_msgs" and v}
    if bad or info.get("error_msgs"):
        raise CheckpointError(
            f"{root}: transformers could not load the Reasoner cleanly: {bad} {info.get('error_msgs')}"
        )
    return model.to(device).eval()


def vision_tensors(model: nn.Module) -> list[torch.Tensor]:
    """The vision tower's parameters and buffers (what a shared judge adds to a world model)."""
    visual = model.get_submodule("model.visual")
    return [*visual.parameters(), *visual.buffers()]


def unique_bytes(tensors: Any) -> int:
    """Bytes of the distinct storages behind `tensors` (shared ones counted once)."""
    seen: dict[int, int] = {}
    for t in tensors:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())
