"""Loading and saving the generator in the published checkpoint's layout (diffusers naming).

`<dir>/config.json` plus `diffusion_pytorch_model.safetensors`, or shards with a
`diffusion_pytorch_model.safetensors.index.json`. Local directories and hub repo ids (through
huggingface_hub, so the HF cache and offline mode apply) both work. The model is built on the
meta device and each tensor is read (memory-mapped) straight into its final dtype and device,
so loading never holds two copies of the weights. Every error names the file and the keys.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .config import Cosmos3Config

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
WEIGHTS_INDEX_NAME = "diffusion_pytorch_model.safetensors.index.json"
_ALT_NAMES = ("model.safetensors",)


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded: missing files, bad keys or shapes, corrupted data."""


_DTYPE_NAMES = ("float32", "float16", "bfloat16", "float64")


def parse_dtype(value: Any, name: str = "torch_dtype") -> torch.dtype | None:
    """A floating torch dtype from a dtype or its name ("bfloat16", "torch.float16"); None stays None."""
    if value is None or isinstance(value, torch.dtype) and value.is_floating_point:
        return value
    dtype = getattr(torch, value.removeprefix("torch."), None) if isinstance(value, str) else None
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"{name} must be a floating torch dtype or one of {list(_DTYPE_NAMES)}, got {value!r}")
    return dtype


def resolve_directory(
    path_or_repo: str | os.PathLike,
    subfolder: str | None,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool | None = None,
    token: str | bool | None = None,
    allow_patterns: list[str] | None = None,
) -> Path:
    """A local directory holding `subfolder`, downloading (or finding in the HF cache) a hub repo."""
    local = Path(path_or_repo).expanduser()
    if local.is_dir():
        folder = local / subfolder if subfolder else local
        if not folder.is_dir():
            raise CheckpointError(f"{local}: no '{subfolder}' subfolder")
        return folder
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    repo_id = str(path_or_repo)
    patterns = allow_patterns or ([f"{subfolder}/*"] if subfolder else None)
    try:
        root = snapshot_download(
            repo_id, revision=revision, cache_dir=cache_dir, allow_patterns=patterns,
            local_files_only=bool(local_files_only), token=token,
        )  # fmt: skip
    except LocalEntryNotFoundError as e:
        raise CheckpointError(
            f"{repo_id!r} (revision {revision or 'main'}) is neither a local directory nor in the Hugging Face "
            f"cache{' at ' + str(cache_dir) if cache_dir else ''}, and downloading is off (offline mode): {e}"
        ) from e
    except (HfHubHTTPError, OSError, ValueError) as e:
        raise CheckpointError(f"could not fetch {repo_id!r} from the Hugging Face Hub: {e}") from e
    folder = Path(root) / subfolder if subfolder else Path(root)
    if not folder.is_dir():
        raise CheckpointError(f"{repo_id!r}: no '{subfolder}' subfolder in revision {revision or 'main'}")
    return folder


def weight_files(folder: Path) -> dict[str, Path]:
    """Map every tensor name to the safetensors file holding it (single file or index + shards)."""
    index = folder / WEIGHTS_INDEX_NAME
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise CheckpointError(f"{index}: not a safetensors index (expected a JSON 'weight_map'): {e}") from e
        files = {name: folder / fname for name, fname in weight_map.items()}
        missing = sorted({str(p) for p in files.values() if not p.is_file()})
        if missing:
            raise CheckpointError(f"{index} names shard files that do not exist: {missing}")
        return files
    for name in (WEIGHTS_NAME, *_ALT_NAMES):
        path = folder / name
        if path.is_file():
            with _open(path) as f:
                return {key: path for key in f.keys()}
    raise CheckpointError(f"{folder}: no {WEIGHTS_NAME} and no {WEIGHTS_INDEX_NAME}")


class _open:
    """safe_open that turns header/data errors into CheckpointError naming the file."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        try:
            self._ctx = safe_open(str(self.path), framework="pt", device="cpu")
            return self._ctx.__enter__()
        except Exception as e:  # safetensors raises its own error types for bad headers
            raise CheckpointError(f"{self.path}: corrupted or truncated safetensors file ({e})") from e

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


def _target_dtype(name: str, stored: torch.dtype, torch_dtype, keep_fp32: tuple[str, ...]) -> torch.dtype:
    if not stored.is_floating_point:
        return stored
    if any(name == m or name.startswith(m + ".") for m in keep_fp32):
        return torch.float32
    if torch_dtype == "auto":
        return stored
    return torch_dtype or torch.float32


def _set_tensor(model: torch.nn.Module, name: str, value: torch.Tensor) -> None:
    module_name, _, attr = name.rpartition(".")
    module = model.get_submodule(module_name) if module_name else model
    module._parameters[attr] = torch.nn.Parameter(value, requires_grad=False)


def load_generator(
    cls: type[torch.nn.Module],
    path_or_repo: str | os.PathLike,
    subfolder: str | None = "transformer",
    *,
    revision: str | None = None,
    torch_dtype: torch.dtype | str | None = None,
    device: str | torch.device | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool | None = None,
    token: str | bool | None = None,
) -> torch.nn.Module:
    """Build `cls(config)` (the generator) from config.json and load its safetensors without a second copy in memory.

    torch_dtype: None -> float32, "auto" -> as stored, or a dtype (the time embedder stays float32).
    """
    if torch_dtype != "auto":
        torch_dtype = parse_dtype(torch_dtype)
    folder = resolve_directory(
        path_or_repo, subfolder, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only, token=token
    )
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{folder}: no config.json")
    try:
        config = Cosmos3Config.from_json_file(config_path)
    except ValueError as e:
        raise CheckpointError(f"{config_path}: {e}") from e
    device = torch.device(device) if device is not None else torch.device("cpu")

    with torch.device("meta"):
        model = cls(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    files = weight_files(folder)

    unexpected = sorted(set(files) - set(expected))
    missing = sorted(set(expected) - set(files))
    if unexpected or missing:
        raise CheckpointError(_key_mismatch_message(folder, config, missing, unexpected))

    by_file: dict[Path, list[str]] = {}
    for key, path in files.items():
        by_file.setdefault(path, []).append(key)
    for path, keys in by_file.items():
        with _open(path) as f:
            present = set(f.keys())
            absent = sorted(set(keys) - present)
            if absent:
                raise CheckpointError(f"{path}: the index lists tensors this file does not hold: {absent[:8]}")
            for key in keys:
                shape = tuple(f.get_slice(key).get_shape())
                if shape != expected[key]:
                    raise CheckpointError(
                        f"{path}: tensor {key} has shape {list(shape)} but config.json "
                        f"({_config_summary(config)}) implies {list(expected[key])}: the config contradicts the weights"
                    )
                try:
                    tensor = f.get_tensor(key)
                except Exception as e:
                    raise CheckpointError(f"{path}: cannot read tensor {key}: corrupted or truncated file ({e})") from e
                dtype = _target_dtype(key, tensor.dtype, torch_dtype, cls.keep_in_fp32_modules)
                _set_tensor(model, key, tensor.to(device=device, dtype=dtype))
    return model.eval()


def _config_summary(config: Cosmos3Config) -> str:
    fields = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim",
              "intermediate_size", "vocab_size", "patch_latent_dim", "action_dim", "sound_dim")  # fmt: skip
    return ", ".join(f"{k}={getattr(config, k)}" for k in fields)


def _key_mismatch_message(folder: Path, config: Cosmos3Config, missing: list[str], unexpected: list[str]) -> str:
    parts = [f"{folder}: the weights do not match config.json ({_config_summary(config)})."]
    if missing:
        parts.append(f"Missing keys ({len(missing)}): {missing[:10]}{' ...' if len(missing) > 10 else ''}.")
    if unexpected:
        parts.append(f"Unexpected keys ({len(unexpected)}): {unexpected[:10]}{' ...' if len(unexpected) > 10 else ''}.")
        layer_ids = {int(k.split(".")[1]) for k in unexpected if k.startswith("layers.")}
        if layer_ids and min(layer_ids) >= config.num_hidden_layers:
            parts.append(f"The file has {max(layer_ids) + 1} layers but num_hidden_layers={config.num_hidden_layers}.")
        if any(k.startswith("action_") for k in unexpected) and not config.action_gen:
            parts.append("The file has action heads but action_gen=false.")
        if any(k.startswith("audio_") for k in unexpected) and not config.sound_gen:
            parts.append("The file has sound heads but sound_gen=false.")
        if any(k.startswith("model.") for k in unexpected):
            parts.append("Keys start with 'model.': strip that prefix to get the flat layout.")
    return " ".join(parts)


def save_generator(
    model: torch.nn.Module, save_directory: str | os.PathLike, max_shard_size: int | str = "5GB"
) -> None:
    """Write config.json and safetensors (sharded with an index when larger than max_shard_size)."""
    from diffusers import __version__ as diffusers_version
    from huggingface_hub import split_torch_state_dict_into_shards

    folder = Path(save_directory)
    folder.mkdir(parents=True, exist_ok=True)
    config = model.config.to_dict()
    config["_diffusers_version"] = diffusers_version
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")

    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    split = split_torch_state_dict_into_shards(
        state,
        filename_pattern=WEIGHTS_NAME.replace(".safetensors", "{suffix}.safetensors"),
        max_shard_size=max_shard_size,
    )
    for stale in [*folder.glob("diffusion_pytorch_model*.safetensors"), folder / WEIGHTS_INDEX_NAME]:
        stale.unlink(missing_ok=True)
    for filename, names in split.filename_to_tensors.items():
        save_file({n: state[n] for n in names}, str(folder / filename), metadata={"format": "pt"})
    if split.is_sharded:
        index = {"metadata": {"total_size": sum(math.prod(t.shape) * t.element_size() for t in state.values())},
                 "weight_map": split.tensor_to_filename}  # fmt: skip
        (folder / WEIGHTS_INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")
