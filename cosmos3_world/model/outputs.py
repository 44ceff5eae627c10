"""What the generator returns: per-item velocity predictions, full-shaped with zeros at clean positions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from diffusers.utils import BaseOutput


@dataclass
class GeneratorOutput(BaseOutput):
    """Per-item velocity predictions (zeros at clean positions), as diffusers' transformer returns them."""

    sample: list[torch.Tensor]
    sound: list[torch.Tensor] | None = None
    action: list[torch.Tensor] | None = None


def scatter_noisy(pred: torch.Tensor, lengths: Sequence[int], noisy: Sequence[Sequence[int]]) -> list[torch.Tensor]:
    """Packed predictions of the noisy tokens [sum len(noisy_i), W] -> per item [length_i, W], zeros at clean tokens."""
    out = []
    for chunk, length, idx in zip(pred.split([len(n) for n in noisy]), lengths, noisy):
        full = chunk.new_zeros(length, pred.shape[-1])
        if len(idx):
            full[list(idx)] = chunk
        out.append(full)
    return out
