"""The generator's configuration: the checkpoint's `transformer/config.json`, validated.

Field names and defaults follow diffusers' `Cosmos3OmniTransformer`, so the same config.json drives
both. Unknown fields warn (newer checkpoints may add some); contradictory ones raise.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Bookkeeping keys written by diffusers / transformers that carry no architecture.
_BOOKKEEPING_KEYS = {"_class_name", "_diffusers_version", "_name_or_path", "dtype", "torch_dtype", "architectures"}


@dataclass
class Cosmos3Config:
    """Architecture of the Cosmos3 mixture-of-transformers generator."""

    hidden_size: int = 4096
    num_hidden_layers: int = 36
    num_attention_heads: int = 32
    num_key_value_heads: int = 8
    head_dim: int = 128
    intermediate_size: int = 12288
    hidden_act: str = "silu"  # "silu" (gated MLP, RMSNorm) or "relu2" (Nemotron: relu^2 MLP, fp32 RMSNorm)
    rms_norm_eps: float = 1e-6
    attention_bias: bool = False
    attention_dropout: float = 0.0
    qk_norm_for_text: bool = True
    use_und_k_norm_for_gen: bool = False
    vocab_size: int = 151936
    latent_channel: int = 48
    latent_patch_size: int = 2
    patch_latent_dim: int = 192
    rope_theta: float = 5000000.0
    rope_scaling: dict | None = None
    rope_axes_dim: list[int] | None = None
    base_fps: int = 24
    enable_fps_modulation: bool = True
    unified_3d_mrope_temporal_modality_margin: int = 15000
    unified_3d_mrope_reset_spatial_ids: bool = True
    timestep_scale: float = 0.001
    action_gen: bool = False
    action_dim: int | None = None
    num_embodiment_domains: int = 32
    sound_gen: bool = False
    sound_dim: int | None = None
    sound_latent_fps: float = 25.0
    extra: dict[str, Any] = field(default_factory=dict, repr=False)  # unknown fields, kept for round trips

    def __post_init__(self) -> None:
        section = (self.rope_scaling or {}).get("mrope_section")
        if self.rope_axes_dim is None:
            self.rope_axes_dim = list(section) if section is not None else [24, 20, 20]
        self.rope_axes_dim = [int(x) for x in self.rope_axes_dim]
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Raise ValueError for fields that contradict each other."""
        errors: list[str] = []
        if self.hidden_act not in ("silu", "relu2"):
            errors.append(f"hidden_act must be 'silu' or 'relu2', got {self.hidden_act!r}")
        if self.num_key_value_heads <= 0 or self.num_attention_heads % self.num_key_value_heads:
            errors.append(
                f"num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                f"num_key_value_heads ({self.num_key_value_heads})"
            )
        if self.head_dim % 2:
            errors.append(f"head_dim must be even for rotary embeddings, got {self.head_dim}")
        if len(self.rope_axes_dim) != 3:
            errors.append(f"rope_axes_dim must have 3 entries (t, h, w), got {self.rope_axes_dim}")
        elif sum(self.rope_axes_dim) != self.head_dim // 2:
            # diffusers accepts this (the interleave only reads the h/w sections), so we do too.
            warnings.warn(
                f"sum(rope_axes_dim)={sum(self.rope_axes_dim)} differs from head_dim // 2 = {self.head_dim // 2}; "
                "the temporal axis takes every frequency slot not claimed by h/w",
                stacklevel=3,
            )
        section = (self.rope_scaling or {}).get("mrope_section")
        if section is not None and list(section) != list(self.rope_axes_dim):
            errors.append(f"rope_axes_dim {self.rope_axes_dim} contradicts rope_scaling.mrope_section {list(section)}")
        p = self.latent_patch_size
        if self.patch_latent_dim != self.latent_channel * p * p:
            errors.append(
                f"patch_latent_dim ({self.patch_latent_dim}) must equal latent_channel * latent_patch_size**2 "
                f"= {self.latent_channel * p * p}"
            )
        if self.action_gen and not self.action_dim:
            errors.append("action_gen=True requires a positive action_dim")
        if self.sound_gen and not self.sound_dim:
            errors.append("sound_gen=True requires a positive sound_dim")
        if self.num_embodiment_domains < 1:
            errors.append(f"num_embodiment_domains must be >= 1, got {self.num_embodiment_domains}")
        if errors:
            raise ValueError("Invalid Cosmos3 config: " + "; ".join(errors))

    # ------------------------------------------------------------------ derived
    @property
    def num_kv_groups(self) -> int:
        return self.num_attention_heads // self.num_key_value_heads

    @property
    def norm_type(self) -> str:
        return "nemotron" if self.hidden_act == "relu2" else "rms"

    # ------------------------------------------------------------------ io
    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> "Cosmos3Config":
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        kwargs = {k: v for k, v in data.items() if k in known}
        extra = {k: v for k, v in data.items() if k not in known and k not in _BOOKKEEPING_KEYS}
        if extra:
            warnings.warn(f"{source}: ignoring unknown Cosmos3 config fields {sorted(extra)}", stacklevel=2)
        return cls(**kwargs, extra=extra)

    @classmethod
    def from_json_file(cls, path: str | Path) -> "Cosmos3Config":
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from e
        return cls.from_dict(data, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        return {"_class_name": "Cosmos3OmniTransformer", **data, **self.extra}

    def to_json_file(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n")
