"""Training of the embedded world: push-simulator episodes -> windows laid out as engine chunks -> flow matching.

Names load lazily (torch comes with the first use), so the CLI can register its commands cheaply.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "FORWARD": "data", "INVERSE": "data", "MODES": "data", "POLICY": "data", "EpisodeStore": "data",
    "Window": "data", "WindowSampler": "data", "DEFAULT_SAMPLER": "config", "EMBEDDED_MODEL_CONFIG": "config",
    "TrainConfig": "config", "Trainer": "trainer", "bundle_defaults": "trainer", "export_bundle": "trainer",
    "export_run": "trainer",
    "plot_losses": "trainer", "train": "trainer",
}  # fmt: skip

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
