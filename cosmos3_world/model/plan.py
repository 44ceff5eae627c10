"""The per-chunk plan of a batch of generation sequences: what each generates (`GenerationSpec`),
its positions, rotary tables and token rows (`GenerationPlan`), and the attention layout that
batches sequences of different prefix and generation lengths (`AttentionLayout`).

Built once per chunk by `build_plan`; every denoising step of the chunk reuses it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch

from ..kernels import attention
from .config import Cosmos3Config
from .prefix_cache import PrefixKV
from .rope import MultimodalRotary, grid_position_ids


@dataclass
class _Bucket:
    """Sequences with the same prefix length and generation length: one unpadded SDPA call."""

    rows: slice | torch.Tensor  # their packed generation rows (a slice when contiguous)
    count: int
    gen_len: int
    keys: list[torch.Tensor]  # per layer [count, kv_heads, prefix_len, D]
    values: list[torch.Tensor]


class AttentionLayout:
    """Batches B sequences (each: a prefix + some generation tokens) for the generation attention.

    Generation tokens stay packed [N, ...] for projections and MLPs. For the attention, sequences
    are bucketed by (prefix length, generation length) so each bucket is one dense SDPA call with
    no padding and no mask (cond and uncond of many worlds make two buckets). A bucket whose
    sequences share one prefix object reads it through a broadcast view instead of copies.
    """

    def __init__(self, prefixes: Sequence[PrefixKV], gen_lengths: Sequence[int], device: torch.device):
        self.num_tokens = sum(gen_lengths)
        offsets = [0]
        for g in gen_lengths:
            offsets.append(offsets[-1] + g)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, (p, g) in enumerate(zip(prefixes, gen_lengths)):
            groups.setdefault((p.length, g), []).append(i)
        num_layers = len(prefixes[0].keys)
        self.buckets: list[_Bucket] = []
        for (_, g), seqs in groups.items():
            if seqs == list(range(seqs[0], seqs[-1] + 1)):
                rows: slice | torch.Tensor = slice(offsets[seqs[0]], offsets[seqs[-1]] + g)
            else:
                rows = torch.cat([torch.arange(offsets[i], offsets[i] + g) for i in seqs]).to(device)
            members = [prefixes[i] for i in seqs]
            shared = all(m is members[0] for m in members)

            def stacked(tensors: list[torch.Tensor]) -> torch.Tensor:
                if shared:
                    return tensors[0].to(device)[None].expand(len(seqs), *tensors[0].shape)
                return torch.stack([t.to(device) for t in tensors])

            self.buckets.append(_Bucket(
                rows=rows, count=len(seqs), gen_len=g,
                keys=[stacked([m.keys_for_generation[i] for m in members]) for i in range(num_layers)],
                values=[stacked([m.values[i] for m in members]) for i in range(num_layers)],
            ))  # fmt: skip

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layer_idx: int) -> torch.Tensor:
        """q [N, heads, D], k/v [N, kv_heads, D] -> [N, heads * D].

        Query heads that share a K/V head are stacked along the query axis ([b, kv_heads,
        group * gen, D]), so one plain SDPA call reads each K/V head once (same result as GQA).
        """
        heads, kv_heads, d = q.shape[1], k.shape[1], k.shape[2]
        group = heads // kv_heads
        if len(self.buckets) == 1:
            return self._attend_bucket(self.buckets[0], q, k, v, layer_idx, group)
        out = q.new_empty(self.num_tokens, heads * d)
        for bucket in self.buckets:
            rows = bucket.rows
            out[rows] = self._attend_bucket(bucket, q[rows], k[rows], v[rows], layer_idx, group).to(out.dtype)
        return out

    def _attend_bucket(self, bucket: _Bucket, q, k, v, layer_idx: int, group: int) -> torch.Tensor:
        b, n = bucket.count, bucket.gen_len
        kv_heads, d = k.shape[1], k.shape[2]
        keys = torch.cat([bucket.keys[layer_idx], k.view(b, n, kv_heads, d).transpose(1, 2)], dim=2)
        values = torch.cat([bucket.values[layer_idx], v.view(b, n, kv_heads, d).transpose(1, 2)], dim=2)
        queries = q.reshape(b, n, kv_heads, group, d).permute(0, 2, 3, 1, 4).reshape(b, kv_heads, group * n, d)
        o = attention(queries.flatten(0, 1), keys.flatten(0, 1), values.flatten(0, 1))  # [b * kv_heads, group * n, D]
        return o.view(b, kv_heads, group, n, d).permute(0, 3, 1, 2, 4).reshape(b * n, kv_heads * group * d)


# ---------------------------------------------------------------------------------------------
# Static description of a generation sequence, and the per-chunk plan
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GenerationSpec:
    """What one sequence generates, fixed for a whole chunk (all denoising steps).

    vision_shape is the latent (T, H, W); vision_noisy the latent frames being denoised (the rest
    are clean conditioning). fps is the video frame rate used by fps-modulated positions (actions
    share it); temporal_compression is the codec's pixel frames per latent frame (the published Wan
    VAE's 4), so a latent frame sits at the time of its pixel frames and action i at that of frame i + 1.
    Sound and action are optional; `domain_id` picks the action head of the embodiment. `action_positions`
    places action tokens in space: (row, column) token coordinates per action token, for actions that point at
    image positions; None keeps every action token at spatial position 0 (the published layout).
    """

    prefix: PrefixKV
    vision_shape: tuple[int, int, int]
    vision_noisy: tuple[int, ...]
    fps: float = 24.0
    sound_len: int = 0
    sound_noisy: tuple[int, ...] | None = None  # None: every sound frame is noisy
    action_len: int = 0
    action_noisy: tuple[int, ...] = ()
    domain_id: int = 0
    temporal_compression: int = 4
    action_positions: tuple[tuple[float, float], ...] | None = None

    @property
    def sound_noisy_frames(self) -> tuple[int, ...]:
        return tuple(range(self.sound_len)) if self.sound_noisy is None else tuple(sorted(self.sound_noisy))


@dataclass
class GenerationPlan:
    """Everything about a batch of sequences that stays fixed across denoising steps."""

    specs: list[GenerationSpec]
    layout: AttentionLayout
    cos: torch.Tensor  # [N, D]
    sin: torch.Tensor  # [N, D]
    vision_rows: torch.Tensor  # packed rows of all vision tokens, item-major
    noisy_vision_rows: torch.Tensor  # packed rows of the noisy vision tokens
    noisy_vision_owner: torch.Tensor  # sequence index of each noisy vision token
    sound_rows: torch.Tensor
    noisy_sound_rows: torch.Tensor
    noisy_sound_owner: torch.Tensor
    action_rows: torch.Tensor
    action_domains: torch.Tensor  # per action token
    noisy_action_rows: torch.Tensor
    noisy_action_owner: torch.Tensor
    noisy_action_domains: torch.Tensor
    output_rows: torch.Tensor  # rows the heads read: [noisy vision ; noisy sound ; noisy action]
    num_tokens: int = field(default=0)

    @property
    def batch_size(self) -> int:
        return len(self.specs)


def build_plan(
    cfg: Cosmos3Config,
    rotary: MultimodalRotary,
    specs: Sequence[GenerationSpec],
    device: torch.device,
    dtype: torch.dtype,
) -> GenerationPlan:
    """Precompute positions, rotary tables, token rows and the attention layout for a batch."""
    if not specs:
        raise ValueError("specs must hold at least one GenerationSpec")
    p = cfg.latent_patch_size
    positions, gen_lengths = [], []
    rows = {k: [] for k in ("v", "nv", "nvo", "s", "ns", "nso", "a", "ad", "na", "nao", "nad")}
    cursor = 0
    for b, spec in enumerate(specs):
        t, h, w = spec.vision_shape
        hp, wp = -(-h // p), -(-w // p)
        per_frame = hp * wp
        if any(not 0 <= f < t for f in spec.vision_noisy):
            raise ValueError(f"vision_noisy frames {spec.vision_noisy} outside the {t} latent frames")
        if spec.action_len and not cfg.action_gen:
            raise ValueError("action tokens given but this generator has no action head (action_gen=False)")
        if spec.sound_len and not cfg.sound_gen:
            raise ValueError("sound tokens given but this generator has no sound head (sound_gen=False)")
        if spec.action_len and not 0 <= spec.domain_id < cfg.num_embodiment_domains:
            raise ValueError(f"domain_id must be in [0, {cfg.num_embodiment_domains}), got {spec.domain_id}")
        offset = spec.prefix.length + cfg.unified_3d_mrope_temporal_modality_margin
        fps = spec.fps if cfg.enable_fps_modulation else None
        grid = dict(
            temporal_offset=offset,
            base_fps=float(cfg.base_fps),
            reset_spatial_ids=cfg.unified_3d_mrope_reset_spatial_ids,
        )
        # Time in the model's base ticks (base_fps / 4 per second, the published VAE's rate) whatever the codec.
        seq_pos = [grid_position_ids(t, hp, wp, fps=fps, temporal_compression=spec.temporal_compression,
                                     base_temporal_compression=4, **grid)]  # fmt: skip
        rows["v"].append(torch.arange(cursor, cursor + t * per_frame))
        noisy = torch.tensor(sorted(spec.vision_noisy), dtype=torch.long)
        nv = (noisy[:, None] * per_frame + torch.arange(per_frame)).flatten() + cursor
        rows["nv"].append(nv)
        rows["nvo"].append(torch.full((len(nv),), b))
        cursor += t * per_frame
        if spec.sound_len:
            sfps = cfg.sound_latent_fps if cfg.enable_fps_modulation else None
            seq_pos.append(grid_position_ids(spec.sound_len, 1, 1, fps=sfps, **grid))
            rows["s"].append(torch.arange(cursor, cursor + spec.sound_len))
            ns = torch.tensor(spec.sound_noisy_frames, dtype=torch.long) + cursor
            rows["ns"].append(ns)
            rows["nso"].append(torch.full((len(ns),), b))
            cursor += spec.sound_len
        if spec.action_len:
            a_pos = grid_position_ids(spec.action_len, 1, 1, fps=fps, temporal_compression=1,
                                      base_temporal_compression=4, start_frame_offset=1, **grid)  # fmt: skip
            if spec.action_positions is not None:  # [3, A]: t as above; h, w where the actions point
                if len(spec.action_positions) != spec.action_len:
                    raise ValueError(f"action_positions holds {len(spec.action_positions)} (row, column) pairs "
                                     f"for {spec.action_len} action tokens")  # fmt: skip
                shift = 0 if cfg.unified_3d_mrope_reset_spatial_ids else math.floor(offset)  # as the vision grid's
                a_pos[1:] = torch.tensor(spec.action_positions, dtype=torch.float32).T + shift
            seq_pos.append(a_pos)
            rows["a"].append(torch.arange(cursor, cursor + spec.action_len))
            rows["ad"].append(torch.full((spec.action_len,), spec.domain_id))
            na = torch.tensor(sorted(spec.action_noisy), dtype=torch.long) + cursor
            rows["na"].append(na)
            rows["nao"].append(torch.full((len(na),), b))
            rows["nad"].append(torch.full((len(na),), spec.domain_id))
            cursor += spec.action_len
        pos = torch.cat(seq_pos, dim=1)
        positions.append(pos)
        gen_lengths.append(pos.shape[1])
    cat = lambda key: (torch.cat(rows[key]) if rows[key] else torch.zeros(0, dtype=torch.long)).to(device)  # noqa: E731
    cos, sin = rotary(torch.cat(positions, dim=1).to(device), dtype)
    return GenerationPlan(
        specs=list(specs),
        layout=AttentionLayout([s.prefix for s in specs], gen_lengths, device),
        cos=cos, sin=sin,
        vision_rows=cat("v"), noisy_vision_rows=cat("nv"), noisy_vision_owner=cat("nvo"),
        sound_rows=cat("s"), noisy_sound_rows=cat("ns"), noisy_sound_owner=cat("nso"),
        action_rows=cat("a"), action_domains=cat("ad"), noisy_action_rows=cat("na"),
        noisy_action_owner=cat("nao"), noisy_action_domains=cat("nad"),
        output_rows=torch.cat([cat("nv"), cat("ns"), cat("na")]), num_tokens=cursor,
    )  # fmt: skip
