"""Which world model an env runs, and one loaded copy of it per (path, device, dtype) shared by every env.

`default_model_path()` is the project's default model: the embedded Push-T world shipped in
`cosmos3_world/assets/embedded_world/` when it is there, else a tiny random-weight bundle built once
and cached on disk. `ModelCache` holds loaded `WorldModel`s so that N envs (or the N worlds of a
vector env) naming the same model share its weights instead of loading N copies.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch and the engine load on first use, not when the env module is imported
    from cosmos3_world.engine.world import WorldModel

import cosmos3_world

EMBEDDED_WORLD = Path(cosmos3_world.__file__).resolve().parent / "assets" / "embedded_world"
_TINY_VERSION = "tiny-s2d-v2"  # bump when build_tiny_bundle's output changes, so stale caches are rebuilt


def cache_dir() -> Path:
    """Where cosmos3-world keeps built artefacts: `$COSMOS3_WORLD_CACHE`, else `~/.cache/cosmos3_world`."""
    root = os.environ.get("COSMOS3_WORLD_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "cosmos3_world"


def embedded_world_path() -> Path | None:
    """The shipped embedded world bundle, or None while it is not shipped."""
    return EMBEDDED_WORLD if (EMBEDDED_WORLD / "model_index.json").is_file() else None


def default_model_path() -> Path:
    """The default model: the embedded world when shipped, else a tiny bundle built once into `cache_dir()`."""
    embedded = embedded_world_path()
    if embedded is not None:
        return embedded
    target = cache_dir() / _TINY_VERSION
    if (target / "model_index.json").is_file():
        return target
    from cosmos3_world.testing.tiny import build_tiny_bundle

    target.parent.mkdir(parents=True, exist_ok=True)
    # Build next to the target and rename: a concurrent builder or a crash never leaves a half bundle.
    staging = Path(tempfile.mkdtemp(prefix=f".{_TINY_VERSION}-", dir=target.parent))
    try:
        build_tiny_bundle(staging, codec="space_to_depth", seed=0)
        try:
            staging.rename(target)
        except OSError:  # another process won the race: use its bundle
            if not (target / "model_index.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


class ModelCache:
    """Loaded WorldModels by (path, device, dtype): every env that names the same model shares one copy.

    Explicit on purpose: pass your own `ModelCache()` to envs (keyword `model_cache`) to scope sharing, or
    call `clear()` on `DEFAULT_MODEL_CACHE` to release the weights once the envs are closed.
    """

    def __init__(self) -> None:
        self._models: dict[tuple[str, str, str], WorldModel] = {}
        self._lock = threading.Lock()

    @staticmethod
    def key(path: str | os.PathLike, device: Any = None, dtype: Any = None) -> tuple[str, str, str]:
        """Normalised cache key: resolved local path (or repo id), torch device, torch dtype."""
        import torch

        from cosmos3_world.model import parse_dtype

        local = Path(path).expanduser()
        where = str(local.resolve()) if local.exists() else str(path)
        dev = torch.device(device if device is not None else "cpu")
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        return where, str(dev), str(parse_dtype(dtype, "dtype") or torch.float32)

    def get(self, path: str | os.PathLike, device: Any = None, dtype: Any = None) -> WorldModel:
        """The WorldModel at `path` on `device` in `dtype`, loading it on the first request only."""
        key = self.key(path, device, dtype)
        with self._lock:
            model = self._models.get(key)
            if model is None:
                from cosmos3_world.engine.world import WorldModel

                model = WorldModel.from_pretrained(path, device=key[1], torch_dtype=key[2].removeprefix("torch."))
                self._models[key] = model
            return model

    def __contains__(self, key: tuple[str, str, str]) -> bool:
        return key in self._models

    def __len__(self) -> int:
        return len(self._models)

    def clear(self) -> None:
        """Forget every model (their memory is freed once no env holds them)."""
        with self._lock:
            self._models.clear()


DEFAULT_MODEL_CACHE = ModelCache()
