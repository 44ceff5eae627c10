"""3D interleaved multimodal rotary embeddings (mRoPE) and the position ids of each modality.

Every token has a (t, h, w) position. The head's rotary frequency slots are shared out among the
three axes *interleaved* (t h w t h w ... t t): slot j reads the h id when j % 3 == 1 and
j < 3 * rope_axes_dim[1], the w id when j % 3 == 2 and j < 3 * rope_axes_dim[2], else the t id.
Text tokens carry the same id on all three axes, which reduces to ordinary 1-D RoPE.
"""

from __future__ import annotations

import math

import torch


def text_position_ids(num_tokens: int, start: int = 0, float_positions: bool = True) -> torch.Tensor:
    """Ids of text tokens: [3, num_tokens], the same monotonically increasing id on t, h and w."""
    dtype = torch.float32 if float_positions else torch.long
    ids = torch.arange(num_tokens, dtype=dtype) + start
    return ids.unsqueeze(0).expand(3, -1)


def grid_position_ids(
    grid_t: int,
    grid_h: int,
    grid_w: int,
    temporal_offset: float,
    *,
    fps: float | None = None,
    base_fps: float = 24.0,
    temporal_compression: int = 1,
    base_temporal_compression: int | None = None,
    start_frame_offset: int = 0,
    reset_spatial_ids: bool = True,
) -> torch.Tensor:
    """Ids of a (t, h, w) token grid, flattened t-major: [3, grid_t * grid_h * grid_w] float32.

    With `fps` (fps modulation on, and more than one frame) the temporal id is measured in the
    model's base tick rate: (frame + start_offset) / (fps / tcf) * (base_fps / base_tcf) + offset,
    so the same wall-clock time gets the same id whatever the clip's frame rate.
    """
    frames = torch.arange(grid_t, dtype=torch.float32) + start_frame_offset
    if fps is not None and grid_t > 1:
        base_tcf = base_temporal_compression if base_temporal_compression is not None else temporal_compression
        t = frames / (fps / temporal_compression) * (base_fps / base_tcf) + temporal_offset
    else:
        t = frames + math.floor(temporal_offset)
    h = torch.arange(grid_h, dtype=torch.float32)
    w = torch.arange(grid_w, dtype=torch.float32)
    if not reset_spatial_ids:
        h = h + math.floor(temporal_offset)
        w = w + math.floor(temporal_offset)
    t = t.view(-1, 1, 1).expand(grid_t, grid_h, grid_w)
    h = h.view(1, -1, 1).expand(grid_t, grid_h, grid_w)
    w = w.view(1, 1, -1).expand(grid_t, grid_h, grid_w)
    return torch.stack([t.flatten(), h.flatten(), w.flatten()])


class MultimodalRotary:
    """Computes rotary cos/sin tables for 3-axis position ids (no learned state, no buffers)."""

    def __init__(self, head_dim: int, theta: float, axes_dim: list[int]):
        half = head_dim // 2
        # Explicit CPU device: the tables stay real even when the model is built under a meta-device context.
        exponents = torch.arange(0, head_dim, 2, dtype=torch.float32, device="cpu") / head_dim
        self.inv_freq = 1.0 / (theta**exponents)  # [half]
        axis = torch.zeros(half, dtype=torch.long, device="cpu")
        for a, offset in ((1, 1), (2, 2)):
            axis[offset : axes_dim[a] * 3 : 3] = a
        self.axis = axis  # [half]: which of (t, h, w) each frequency slot reads

    def spatial_slots(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(inv_freq [S], axis [S]) of the slots that read h (axis 1) or w (axis 2)."""
        spatial = (self.axis > 0).nonzero().flatten()
        return self.inv_freq[spatial], self.axis[spatial]

    def __call__(self, position_ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """position_ids [3, N] -> (cos, sin), each [N, head_dim] in `dtype` (computed in float32)."""
        pos = position_ids.to(torch.float32)
        device = pos.device
        per_slot = pos[self.axis.to(device)]  # [half, N]
        freqs = per_slot.T * self.inv_freq.to(device)  # [N, half]
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate-half RoPE. x [N, heads, D]; cos/sin [N, D]."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos.unsqueeze(-2) + rotated * sin.unsqueeze(-2)
