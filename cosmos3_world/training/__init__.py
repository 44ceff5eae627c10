"""Training of the embedded world: push-simulator episodes -> windows laid out as engine chunks -> flow matching."""

from .data import FORWARD, INVERSE, MODES, POLICY, EpisodeStore, Window, WindowSampler
from .trainer import (
    DEFAULT_SAMPLER,
    EMBEDDED_MODEL_CONFIG,
    TrainConfig,
    Trainer,
    bundle_defaults,
    export_bundle,
    plot_losses,
    train,
)

__all__ = [
    "DEFAULT_SAMPLER", "EMBEDDED_MODEL_CONFIG", "FORWARD", "INVERSE", "MODES", "POLICY", "EpisodeStore",
    "TrainConfig", "Trainer", "Window", "WindowSampler", "bundle_defaults", "export_bundle", "plot_losses", "train",
]  # fmt: skip
