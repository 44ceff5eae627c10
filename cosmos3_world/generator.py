"""The Cosmos3 mixture-of-transformers generator: our own implementation, weight-compatible with
the published checkpoint and with diffusers' `Cosmos3OmniTransformer`.

Each layer has two pathways of the same width with their own Q/K/V/O, MLP and norms:
  understanding (Reasoner): causal self-attention over the text prefix;
  generation: unmasked attention from vision/sound/action tokens to [text K/V ; generation K/V].
The text never attends to generation tokens, so its K/V are computed once per instruction
(`encode_prefix`, `PrefixCache`) and every denoising step runs the generation pathway alone
(`plan` once per chunk, then `denoise_step` per step), for B sequences in one batched call.
`forward` keeps diffusers' signature for drop-in use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers.utils import BaseOutput

from .config import Cosmos3Config
from .layers import MLP, DomainAwareLinear, RMSNorm, TimestepEmbedder, linear, onednn_linear
from .prefix_cache import PrefixCache, PrefixKV
from .rope import MultimodalRotary, apply_rotary, grid_position_ids, text_position_ids


@dataclass
class GeneratorOutput(BaseOutput):
    """Per-item velocity predictions (zeros at clean positions), as diffusers' transformer returns them."""

    sample: list[torch.Tensor]
    sound: list[torch.Tensor] | None = None
    action: list[torch.Tensor] | None = None


# ---------------------------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------------------------


def _head_norm(cfg: Cosmos3Config) -> nn.Module:
    return RMSNorm(cfg.head_dim, cfg.rms_norm_eps, nemotron=cfg.norm_type == "nemotron")


class MoTAttention(nn.Module):
    """Projections and per-head q/k norms of both pathways (`to_*` understanding, `add_*` generation)."""

    def __init__(self, cfg: Cosmos3Config):
        super().__init__()
        h, d, nq, nkv, bias = cfg.hidden_size, cfg.head_dim, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.attention_bias
        self.num_heads, self.num_kv_heads, self.head_dim = nq, nkv, d
        self.to_q = nn.Linear(h, nq * d, bias=bias)
        self.to_k = nn.Linear(h, nkv * d, bias=bias)
        self.to_v = nn.Linear(h, nkv * d, bias=bias)
        self.to_out = nn.Linear(nq * d, h, bias=bias)
        self.norm_q = _head_norm(cfg) if cfg.qk_norm_for_text else nn.Identity()
        self.norm_k = _head_norm(cfg) if cfg.qk_norm_for_text else nn.Identity()
        use_gen_k_norm = cfg.use_und_k_norm_for_gen and not cfg.qk_norm_for_text
        self.k_norm_und_for_gen = _head_norm(cfg) if use_gen_k_norm else None
        self.add_q_proj = nn.Linear(h, nq * d, bias=bias)
        self.add_k_proj = nn.Linear(h, nkv * d, bias=bias)
        self.add_v_proj = nn.Linear(h, nkv * d, bias=bias)
        self.to_add_out = nn.Linear(nq * d, h, bias=bias)
        self.norm_added_q = _head_norm(cfg)
        self.norm_added_k = _head_norm(cfg)


class MoTDecoderLayer(nn.Module):
    """One layer: attention + MLP per pathway, pre-norm residual."""

    def __init__(self, cfg: Cosmos3Config):
        super().__init__()
        nemotron = cfg.norm_type == "nemotron"
        h, eps = cfg.hidden_size, cfg.rms_norm_eps
        self.self_attn = MoTAttention(cfg)
        self.mlp = MLP(h, cfg.intermediate_size, cfg.hidden_act)
        self.mlp_moe_gen = MLP(h, cfg.intermediate_size, cfg.hidden_act)
        self.input_layernorm = RMSNorm(h, eps, nemotron)
        self.input_layernorm_moe_gen = RMSNorm(h, eps, nemotron)
        self.post_attention_layernorm = RMSNorm(h, eps, nemotron)
        self.post_attention_layernorm_moe_gen = RMSNorm(h, eps, nemotron)

    def understanding(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, past: tuple | None, need_output: bool
    ) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Causal text pass. x [M, H] (tokens past_len..past_len+M-1) -> (x_out | None, keys, values, gen_keys),
        keys/values [kv_heads, past_len + M, D]. The output is skipped when no later layer needs it."""
        attn = self.self_attn
        m = x.shape[0]
        hn = self.input_layernorm(x)
        q = attn.norm_q(attn.to_q(hn).view(m, attn.num_heads, attn.head_dim))
        k = attn.norm_k(attn.to_k(hn).view(m, attn.num_kv_heads, attn.head_dim))
        v = attn.to_v(hn).view(m, attn.num_kv_heads, attn.head_dim)
        gk = attn.k_norm_und_for_gen(k) if attn.k_norm_und_for_gen is not None else None
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        k, v = k.transpose(0, 1), v.transpose(0, 1)  # [kv_heads, M, D]
        if gk is not None:
            gk = apply_rotary(gk, cos, sin).transpose(0, 1)
        if past is not None:
            pk, pv, pgk = past
            k, v = torch.cat([pk, k], dim=1), torch.cat([pv, v], dim=1)
            if gk is not None:
                gk = torch.cat([pgk, gk], dim=1)
        if not need_output:
            return None, k, v, gk
        n_past = k.shape[1] - m
        if n_past == 0:
            o = F.scaled_dot_product_attention(q.transpose(0, 1), k, v, is_causal=True, enable_gqa=True)
        else:  # new token i (absolute n_past + i) sees keys 0..n_past + i
            mask = torch.ones(m, k.shape[1], dtype=torch.bool, device=x.device).tril(diagonal=n_past)
            o = F.scaled_dot_product_attention(q.transpose(0, 1), k, v, attn_mask=mask, enable_gqa=True)
        x = x + attn.to_out(o.transpose(0, 1).reshape(m, -1))
        x = x + self.mlp(self.post_attention_layernorm(x))
        return x, k, v, gk

    def generation(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, layout: "AttentionLayout", layer_idx: int,
        out_rows: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Generation pass over the packed tokens of all sequences. x [N, H] -> [N, H], or [R, H] for
        `out_rows` [R] only: every token still contributes its K/V, but the output projection and
        MLP run on those rows alone (for the last layer, whose clean-token outputs nobody reads)."""
        attn = self.self_attn
        n = x.shape[0]
        hn = self.input_layernorm_moe_gen(x)
        q = attn.norm_added_q(linear(hn, attn.add_q_proj).view(n, attn.num_heads, attn.head_dim))
        k = attn.norm_added_k(linear(hn, attn.add_k_proj).view(n, attn.num_kv_heads, attn.head_dim))
        v = linear(hn, attn.add_v_proj).view(n, attn.num_kv_heads, attn.head_dim)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        o = layout.attend(q, k, v, layer_idx)  # [N, heads * D]
        if out_rows is not None:
            x, o = x[out_rows], o[out_rows]  # [R, H], [R, heads * D]
        x = x + linear(o, attn.to_add_out)
        return x + self.mlp_moe_gen(self.post_attention_layernorm_moe_gen(x))


# ---------------------------------------------------------------------------------------------
# Batched attention layout of the generation pathway
# ---------------------------------------------------------------------------------------------


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
            out[rows] = self._attend_bucket(bucket, q[rows], k[rows], v[rows], layer_idx, group)
        return out

    def _attend_bucket(self, bucket: _Bucket, q, k, v, layer_idx: int, group: int) -> torch.Tensor:
        b, n = bucket.count, bucket.gen_len
        kv_heads, d = k.shape[1], k.shape[2]
        keys = torch.cat([bucket.keys[layer_idx], k.view(b, n, kv_heads, d).transpose(1, 2)], dim=2)
        values = torch.cat([bucket.values[layer_idx], v.view(b, n, kv_heads, d).transpose(1, 2)], dim=2)
        queries = q.reshape(b, n, kv_heads, group, d).permute(0, 2, 3, 1, 4).reshape(b, kv_heads, group * n, d)
        if q.device.type == "cpu" and q.dtype in (torch.float32, torch.bfloat16) and not torch.is_grad_enabled():
            o = _cpu_attention(queries.flatten(0, 1), keys.flatten(0, 1), values.flatten(0, 1))
        else:
            o = F.scaled_dot_product_attention(queries, keys, values)  # [b, kv_heads, group * n, D]
        return o.view(b, kv_heads, group, n, d).permute(0, 3, 1, 2, 4).reshape(b * n, kv_heads * group * d)


def _cpu_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Unmasked softmax(q k^T / sqrt(D)) v on CPU, float32 or bf16, no autograd.
    q [B, M, D], k/v [B, L, D] -> [B, M, D].

    PyTorch's CPU flash kernel computes its blocks with float32 gemms (bf16 inputs too), at MKL's
    speed; here both products are oneDNN matmuls (p v a bf16 one in bf16), 1.5-1.8x faster at the
    bench shapes. Precision as in the flash kernel: float32 scores and softmax, probabilities
    rounded to the input dtype for p v. Scores [M, L] are made one slice at a time (cache-sized).
    """
    qs, kf = q.float() * q.shape[-1] ** -0.5, k.float()  # [B, M, D], [B, L, D] float32
    vt = v.transpose(1, 2).contiguous()  # [B, D, L]
    out = torch.empty_like(q)
    for i in range(q.shape[0]):
        probs = torch.softmax(onednn_linear(qs[i], kf[i]), dim=-1).to(v.dtype)  # [M, L]
        out[i] = onednn_linear(probs, vt[i])  # [M, D]
    return out


# ---------------------------------------------------------------------------------------------
# Static description of a generation sequence, and the per-chunk plan
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GenerationSpec:
    """What one sequence generates, fixed for a whole chunk (all denoising steps).

    vision_shape is the latent (T, H, W); vision_noisy the latent frames being denoised (the rest
    are clean conditioning). fps is the video frame rate used by fps-modulated positions (actions
    share it). Sound and action are optional; `domain_id` picks the action head of the embodiment.
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


def _scatter_noisy(pred: torch.Tensor, lengths: Sequence[int], noisy: Sequence[Sequence[int]]) -> list[torch.Tensor]:
    """Packed predictions of the noisy tokens [sum len(noisy_i), W] -> per item [length_i, W], zeros at clean tokens."""
    out = []
    for chunk, length, idx in zip(pred.split([len(n) for n in noisy]), lengths, noisy):
        full = chunk.new_zeros(length, pred.shape[-1])
        if len(idx):
            full[list(idx)] = chunk
        out.append(full)
    return out


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------


class Cosmos3Generator(nn.Module):
    """Cosmos3 MoT generator. Parameter names equal the checkpoint's flat layout."""

    def __init__(self, config: Cosmos3Config | dict):
        super().__init__()
        cfg = config if isinstance(config, Cosmos3Config) else Cosmos3Config.from_dict(config)
        self.config = cfg
        nemotron = cfg.norm_type == "nemotron"
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(MoTDecoderLayer(cfg) for _ in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, nemotron)
        self.norm_moe_gen = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, nemotron)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.proj_in = nn.Linear(cfg.patch_latent_dim, cfg.hidden_size)
        self.proj_out = nn.Linear(cfg.hidden_size, cfg.patch_latent_dim)
        self.time_embedder = TimestepEmbedder(cfg.hidden_size)
        if cfg.action_gen:
            self.action_proj_in = DomainAwareLinear(cfg.action_dim, cfg.hidden_size, cfg.num_embodiment_domains)
            self.action_proj_out = DomainAwareLinear(cfg.hidden_size, cfg.action_dim, cfg.num_embodiment_domains)
            self.action_modality_embed = nn.Parameter(torch.zeros(cfg.hidden_size))
        if cfg.sound_gen:
            self.audio_proj_in = nn.Linear(cfg.sound_dim, cfg.hidden_size)
            self.audio_proj_out = nn.Linear(cfg.hidden_size, cfg.sound_dim)
            self.audio_modality_embed = nn.Parameter(torch.zeros(cfg.hidden_size))
        self.rotary = MultimodalRotary(cfg.head_dim, cfg.rope_theta, cfg.rope_axes_dim)
        self.prefix_cache = PrefixCache(self)

    # Modules kept in float32 whatever the load dtype (as the reference does).
    keep_in_fp32_modules = ("time_embedder",)

    @property
    def dtype(self) -> torch.dtype:
        return self.embed_tokens.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.embed_tokens.weight.device

    # ------------------------------------------------------------------ loading (see checkpoint.py)
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, subfolder: str | None = "transformer", **kwargs):
        """Load from a local directory or a hub repo id; see `checkpoint.load_generator`."""
        from .checkpoint import load_generator

        return load_generator(cls, pretrained_model_name_or_path, subfolder=subfolder, **kwargs)

    def save_pretrained(self, save_directory, max_shard_size: int | str = "5GB") -> None:
        """Write config.json and (sharded) safetensors in the checkpoint's layout."""
        from .checkpoint import save_generator

        save_generator(self, save_directory, max_shard_size=max_shard_size)

    # ------------------------------------------------------------------ understanding pathway
    @torch.no_grad()
    def encode_prefix(self, token_ids: Sequence[int] | torch.Tensor, past: PrefixKV | None = None) -> PrefixKV:
        """Run the understanding pathway over `token_ids` and keep each layer's K/V.

        With `past` (the K/V of the first `past.length` of these tokens) only the rest is encoded.
        """
        ids = [int(t) for t in (token_ids.tolist() if torch.is_tensor(token_ids) else token_ids)]
        if not ids:
            raise ValueError("token_ids must hold at least one token")
        if max(ids) >= self.config.vocab_size or min(ids) < 0:
            raise ValueError(f"token_ids must be in [0, {self.config.vocab_size}), got ids up to {max(ids)}")
        start = 0
        if past is not None:
            if tuple(ids[: past.length]) != past.token_ids:
                raise ValueError("past.token_ids must be a prefix of token_ids")
            start = past.length
        new = torch.tensor(ids[start:], dtype=torch.long, device=self.device)
        hidden = self.embed_tokens(new)
        positions = text_position_ids(len(ids) - start, start=start).to(self.device)
        return self._encode_understanding(tuple(ids), hidden, positions, past)

    def _encode_understanding(
        self, ids: tuple[int, ...], hidden: torch.Tensor, positions: torch.Tensor, past: PrefixKV | None
    ) -> PrefixKV:
        cos, sin = self.rotary(positions, hidden.dtype)
        keys, values, gen_keys = [], [], []
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            layer_past = None
            if past is not None:
                layer_past = (past.keys[i], past.values[i], past.gen_keys[i] if past.gen_keys else None)
            hidden, k, v, gk = layer.understanding(hidden, cos, sin, layer_past, need_output=i < last)
            keys.append(k)
            values.append(v)
            gen_keys.append(gk)
        return PrefixKV(ids, tuple(keys), tuple(values), tuple(gen_keys) if gen_keys[0] is not None else None)

    # ------------------------------------------------------------------ planning
    def plan(self, specs: Sequence[GenerationSpec]) -> GenerationPlan:
        """Precompute positions, rotary tables, token rows and the attention layout for a batch."""
        cfg = self.config
        if not specs:
            raise ValueError("specs must hold at least one GenerationSpec")
        device, p = self.device, cfg.latent_patch_size
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
            grid = dict(temporal_offset=offset, base_fps=float(cfg.base_fps), reset_spatial_ids=cfg.unified_3d_mrope_reset_spatial_ids)
            seq_pos = [grid_position_ids(t, hp, wp, fps=fps, temporal_compression=4, **grid)]
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
                seq_pos.append(
                    grid_position_ids(
                        spec.action_len, 1, 1, fps=fps, temporal_compression=1, base_temporal_compression=4,
                        start_frame_offset=1, **grid,
                    )
                )
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
        cos, sin = self.rotary(torch.cat(positions, dim=1).to(device), self.dtype)
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

    # ------------------------------------------------------------------ generation pathway
    def _patchify(self, latents: Sequence[torch.Tensor]) -> torch.Tensor:
        """List of [C, T, H, W] -> packed patches [sum T*hp*wp, p*p*C] (H, W zero-padded to p)."""
        p, c = self.config.latent_patch_size, self.config.latent_channel
        out = []
        for x in latents:
            if x.ndim == 5 and x.shape[0] == 1:
                x = x[0]
            if x.ndim != 4 or x.shape[0] != c:
                raise ValueError(f"vision latents must be [{c}, T, H, W], got {tuple(x.shape)}")
            _, t, h, w = x.shape
            if h % p or w % p:
                x = F.pad(x, (0, -w % p, 0, -h % p))
            hp, wp = x.shape[2] // p, x.shape[3] // p
            x = x.reshape(c, t, hp, p, wp, p).permute(1, 2, 4, 3, 5, 0)  # t hp wp p q c
            out.append(x.reshape(t * hp * wp, p * p * c))
        return torch.cat(out)

    def _unpatchify(self, patches: torch.Tensor, shape: tuple[int, int, int], noisy: Sequence[int]) -> torch.Tensor:
        """Noisy-frame patches [len(noisy)*hp*wp, p*p*C] -> [C, T, H, W] with zeros at clean frames."""
        p, c = self.config.latent_patch_size, self.config.latent_channel
        t, h, w = shape
        hp, wp = -(-h // p), -(-w // p)
        out = patches.new_zeros(c, t, h, w)
        if len(noisy):
            x = patches.reshape(len(noisy), hp, wp, p, p, c).permute(5, 0, 1, 3, 2, 4)
            x = x.reshape(c, len(noisy), hp * p, wp * p)[:, :, :h, :w]
            out[:, list(noisy)] = x
        return out

    def _time_embedding(self, timesteps: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Per-token timesteps [N] -> embeddings [N, H]; the MLP runs once per distinct value."""
        values, inverse = torch.unique(timesteps.float(), return_inverse=True)
        emb = self.time_embedder(values * self.config.timestep_scale).to(dtype)
        return emb[inverse]

    def _embed_generation(
        self,
        plan: GenerationPlan,
        vision: Sequence[torch.Tensor],
        noisy_vision_t: torch.Tensor,
        sound: Sequence[torch.Tensor] | None,
        noisy_sound_t: torch.Tensor | None,
        action: Sequence[torch.Tensor] | None,
        noisy_action_t: torch.Tensor | None,
    ) -> torch.Tensor:
        """Packed generation tokens [N, H] for one step: projected latents plus timestep embeddings."""
        dtype = self.dtype
        x = torch.empty(plan.num_tokens, self.config.hidden_size, dtype=dtype, device=self.device)
        x[plan.vision_rows] = self.proj_in(self._patchify(vision).to(dtype))
        if len(plan.noisy_vision_rows):
            x[plan.noisy_vision_rows] += self._time_embedding(noisy_vision_t, dtype)
        if len(plan.sound_rows):
            s = torch.cat([t.permute(1, 0) for t, sp in zip(sound, plan.specs) if sp.sound_len]).to(dtype)  # [T, C]
            x[plan.sound_rows] = self.audio_proj_in(s) + self.audio_modality_embed
            if len(plan.noisy_sound_rows):
                x[plan.noisy_sound_rows] += self._time_embedding(noisy_sound_t, dtype)
        if len(plan.action_rows):
            a = torch.cat([t for t, sp in zip(action, plan.specs) if sp.action_len]).to(dtype)
            x[plan.action_rows] = self.action_proj_in(a, plan.action_domains) + self.action_modality_embed
            if len(plan.noisy_action_rows):
                x[plan.noisy_action_rows] += self._time_embedding(noisy_action_t, dtype)
        return x

    def compile_generation(self, **compile_kwargs) -> None:
        """torch.compile the generation layers of `denoise_step` (fuses the norms, RoPE and MLP
        elementwise work). The first call compiles (~20 s on CPU, less with a warm inductor cache);
        the first plan of other sizes (prompt length, batch) recompiles once with those sizes
        dynamic, later ones reuse it. Weights stay graph inputs: reloading them is safe."""
        self._run_generation = torch.compile(self._run_generation, **compile_kwargs)

    def _run_generation(self, plan: GenerationPlan, x: torch.Tensor) -> torch.Tensor:
        """Packed tokens [N, H] -> last-layer outputs at `plan.output_rows` [R, H]."""
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer.generation(x, plan.cos, plan.sin, plan.layout, i, out_rows=plan.output_rows if i == last else None)
        return x

    def _decode_generation(self, plan: GenerationPlan, x: torch.Tensor) -> GeneratorOutput:
        """Final norm + heads on the noisy tokens x [R, H] (at `plan.output_rows`); per-item full-shaped outputs."""
        specs = plan.specs
        x_vision, x_sound, x_action = x.split(
            [len(plan.noisy_vision_rows), len(plan.noisy_sound_rows), len(plan.noisy_action_rows)]
        )
        v = self.proj_out(self.norm_moe_gen(x_vision))
        counts = [len(s.vision_noisy) * (-(-s.vision_shape[1] // self.config.latent_patch_size))
                  * (-(-s.vision_shape[2] // self.config.latent_patch_size)) for s in specs]  # fmt: skip
        vision = [self._unpatchify(chunk, s.vision_shape, sorted(s.vision_noisy))
                  for chunk, s in zip(v.split(counts), specs)]  # fmt: skip
        sound = action = None
        if len(plan.sound_rows):
            pred = self.audio_proj_out(self.norm_moe_gen(x_sound))
            noisy = [s.sound_noisy_frames for s in specs]
            sound = [t.T for t in _scatter_noisy(pred, [s.sound_len for s in specs], noisy)]
        if len(plan.action_rows):
            pred = self.norm_moe_gen(x_action)
            pred = self.action_proj_out(pred, plan.noisy_action_domains) if len(pred) else pred.new_zeros(0, self.config.action_dim)
            noisy = [sorted(s.action_noisy) for s in specs]
            action = _scatter_noisy(pred, [s.action_len for s in specs], noisy)
        return GeneratorOutput(sample=vision, sound=sound, action=action)

    def _check_step_inputs(self, plan: GenerationPlan, vision, sound, action) -> None:
        """Each modality: one tensor per planned sequence, shaped as the plan says."""
        cfg = self.config
        expected = {
            "vision": [(cfg.latent_channel, *s.vision_shape) for s in plan.specs],
            "sound": [(cfg.sound_dim, s.sound_len) if s.sound_len else None for s in plan.specs],
            "action": [(s.action_len, cfg.action_dim) if s.action_len else None for s in plan.specs],
        }
        for name, value in (("vision", vision), ("sound", sound), ("action", action)):
            shapes = expected[name]
            if all(e is None for e in shapes):
                continue
            if value is None or len(value) != len(shapes):
                got = "None" if value is None else f"{len(value)} tensors"
                raise ValueError(f"{name} must hold one tensor per planned sequence ({len(shapes)}), got {got}")
            for i, (v, e) in enumerate(zip(value, shapes)):
                if e is not None and (v is None or tuple(v.shape[-len(e):]) != e or v.numel() != math.prod(e)):
                    got = None if v is None else tuple(v.shape)
                    raise ValueError(f"{name}[{i}] must have shape {e}, got {got}")

    @torch.no_grad()
    def denoise_step(
        self,
        plan: GenerationPlan,
        vision: Sequence[torch.Tensor] | torch.Tensor,
        timesteps: torch.Tensor | Sequence[float] | float,
        sound: Sequence[torch.Tensor] | torch.Tensor | None = None,
        action: Sequence[torch.Tensor] | torch.Tensor | None = None,
    ) -> GeneratorOutput:
        """Velocity of every sequence in `plan` at one denoising step, in one batched forward.

        vision: per sequence [C, T, H, W] latents (clean frames hold the conditioning); sound:
        per sequence [sound_dim, T]; action: per sequence [T, action_dim]. timesteps: one value
        per sequence (or one for all), in the scheduler's units (0..1000).
        """
        b = plan.batch_size
        self._check_step_inputs(plan, vision, sound, action)
        t = torch.as_tensor(timesteps, dtype=torch.float32, device=self.device).reshape(-1)
        if t.numel() == 1:
            t = t.expand(b)
        if t.numel() != b:
            raise ValueError(f"timesteps must hold 1 or {b} values, got {t.numel()}")
        x = self._embed_generation(
            plan, vision, t[plan.noisy_vision_owner],
            sound, t[plan.noisy_sound_owner], action, t[plan.noisy_action_owner],
        )  # fmt: skip
        return self._decode_generation(plan, self._run_generation(plan, x))

    # ------------------------------------------------------------------ diffusers-compatible forward
    def forward(
        self,
        input_ids: torch.Tensor,
        text_indexes: torch.Tensor,
        position_ids: torch.Tensor,
        und_len: int,
        sequence_length: int,
        vision_tokens: list[torch.Tensor],
        vision_token_shapes: list[tuple[int, int, int]],
        vision_sequence_indexes: torch.Tensor,
        vision_mse_loss_indexes: torch.Tensor,
        vision_timesteps: torch.Tensor,
        vision_noisy_frame_indexes: list[torch.Tensor],
        sound_tokens: list[torch.Tensor] | None = None,
        sound_token_shapes: list[tuple[int, int, int]] | None = None,
        sound_sequence_indexes: torch.Tensor | None = None,
        sound_mse_loss_indexes: torch.Tensor | None = None,
        sound_timesteps: torch.Tensor | None = None,
        sound_noisy_frame_indexes: list[torch.Tensor] | None = None,
        action_tokens: list[torch.Tensor] | None = None,
        action_token_shapes: list[tuple[int, int, int]] | None = None,
        action_sequence_indexes: torch.Tensor | None = None,
        action_mse_loss_indexes: torch.Tensor | None = None,
        action_timesteps: torch.Tensor | None = None,
        action_noisy_frame_indexes: list[torch.Tensor] | None = None,
        action_domain_ids: list[torch.Tensor] | None = None,
        return_dict: bool = True,
    ) -> GeneratorOutput | tuple:
        """One packed sequence, same arguments and outputs as diffusers' `Cosmos3OmniTransformer.forward`.

        Runs the understanding pathway on the text and the generation pathway on the rest; the
        text's own outputs are not computed (nothing reads them).
        """
        cfg, dtype, device = self.config, self.dtype, self.device
        has_sound = sound_tokens is not None and sound_sequence_indexes is not None
        has_action = action_tokens is not None and action_sequence_indexes is not None
        for name, idx in (("vision", vision_mse_loss_indexes), ("sound", sound_mse_loss_indexes if has_sound else None),
                          ("action", action_mse_loss_indexes if has_action else None)):  # fmt: skip
            if idx is not None and idx.numel() and int(idx.min()) < und_len:
                raise ValueError(f"{name}_mse_loss_indexes must point past the text (und_len={und_len})")
        hidden = torch.zeros(sequence_length, cfg.hidden_size, dtype=dtype, device=device)
        hidden[text_indexes] = self.embed_tokens(input_ids.to(device))
        vision_idx = vision_sequence_indexes.to(device)
        hidden[vision_idx] = self.proj_in(self._patchify(vision_tokens).to(dtype))

        def add_time(seq_idx, noisy_per_item, shapes, timesteps):
            """Add timestep embeddings to the noisy frames' tokens, in the order the timesteps are given."""
            packed, start = [], 0
            for noisy, shape in zip(noisy_per_item, shapes):
                per_frame = math.prod(shape[1:])
                frames = noisy.to(device)[:, None] * per_frame + torch.arange(per_frame, device=device)
                packed.append(frames.flatten() + start)
                start += math.prod(shape)
            rows = seq_idx[torch.cat(packed)]
            hidden[rows] += self._time_embedding(timesteps.to(device), dtype)

        add_time(vision_idx, vision_noisy_frame_indexes, vision_token_shapes, vision_timesteps)
        if has_sound:
            s = torch.cat([st[:, : sh[0]].permute(1, 0) for st, sh in zip(sound_tokens, sound_token_shapes)]).to(dtype)
            sound_idx = sound_sequence_indexes.to(device)
            hidden[sound_idx] = self.audio_proj_in(s) + self.audio_modality_embed
            add_time(sound_idx, sound_noisy_frame_indexes, sound_token_shapes, sound_timesteps)
        if has_action:
            a = torch.cat([at[: sh[0]] for at, sh in zip(action_tokens, action_token_shapes)]).to(dtype)
            doms = torch.cat([d.reshape(1).expand(sh[0]) for d, sh in zip(action_domain_ids, action_token_shapes)]).to(device)
            self.action_proj_in.check_domains(doms)
            action_idx = action_sequence_indexes.to(device)
            hidden[action_idx] = self.action_proj_in(a, doms) + self.action_modality_embed
            if action_mse_loss_indexes.numel():
                add_time(action_idx, action_noisy_frame_indexes, action_token_shapes, action_timesteps)

        position_ids = position_ids.to(device)
        ids = tuple(int(t) for t in input_ids.tolist())
        prefix = self._encode_understanding(ids, hidden[:und_len], position_ids[:, :und_len], None)
        layout = AttentionLayout([prefix], [sequence_length - und_len], device)
        cos, sin = self.rotary(position_ids[:, und_len:], dtype)
        x = hidden[und_len:]
        for i, layer in enumerate(self.layers):
            x = layer.generation(x, cos, sin, layout, i)
        x = self.norm_moe_gen(x)

        def read(idx):
            return x[idx.to(device) - und_len]

        original = [tuple(v.shape[-3:]) for v in vision_tokens]
        v = self.proj_out(read(vision_mse_loss_indexes))
        counts = [len(n) * sh[1] * sh[2] for n, sh in zip(vision_noisy_frame_indexes, vision_token_shapes)]
        vision = [self._unpatchify(c, shape, n.tolist()).unsqueeze(0)
                  for c, shape, n in zip(v.split(counts), original, vision_noisy_frame_indexes)]  # fmt: skip
        sound = action = None
        if has_sound:
            pred = self.audio_proj_out(read(sound_mse_loss_indexes))
            noisy = [n.tolist() for n in sound_noisy_frame_indexes]
            sound = [t.T for t in _scatter_noisy(pred, [sh[0] for sh in sound_token_shapes], noisy)]
        if has_action:
            doms = torch.cat([d.reshape(1).expand(len(n)) for d, n in zip(action_domain_ids, action_noisy_frame_indexes)])
            pred = self.action_proj_out(read(action_mse_loss_indexes), doms.to(device))
            noisy = [n.tolist() for n in action_noisy_frame_indexes]
            action = _scatter_noisy(pred, [sh[0] for sh in action_token_shapes], noisy)
        if not return_dict:
            return vision, sound, action
        return GeneratorOutput(sample=vision, sound=sound, action=action)
