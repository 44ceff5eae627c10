"""Building blocks of the Cosmos3 generator: norms, MLPs, the per-domain linear, timestep embedding,
and the mixture-of-transformers decoder layer with its two pathways.

Submodule and parameter names equal the published checkpoint's (e.g. `gate_proj`, `fc`, `linear_1`,
`self_attn.add_q_proj`). Linears go through `kernels.Linear` (oneDNN on CPU, plain PyTorch elsewhere).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..kernels import Linear
from .config import Cosmos3Config
from .plan import AttentionLayout
from .rope import apply_rotary


class RMSNorm(nn.Module):
    """RMSNorm over the last dim. `nemotron=True` computes the whole norm (and the weight product)
    in float32, as the Nemotron (relu2) backbones were trained; otherwise the variance is float32
    and the product runs in the weight's dtype, as in Qwen-style backbones."""

    def __init__(self, dim: int, eps: float, nemotron: bool = False):
        super().__init__()
        self.eps = eps
        self.nemotron = nemotron
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.nemotron:
            xf = x.float()
            xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
            return (self.weight.float() * xf).to(x.dtype)
        variance = x.float().pow(2).mean(-1, keepdim=True)
        x = x * torch.rsqrt(variance + self.eps)
        if self.weight.dtype in (torch.float16, torch.bfloat16):
            x = x.to(self.weight.dtype)
        return x * self.weight


class MLP(nn.Module):
    """Gated SiLU MLP (`hidden_act="silu"`) or squared-ReLU MLP (`"relu2"`, no gate)."""

    def __init__(self, hidden_size: int, intermediate_size: int, hidden_act: str):
        super().__init__()
        self.hidden_act = hidden_act
        if hidden_act == "silu":
            self.gate_proj = Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = Linear(intermediate_size, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.hidden_act == "relu2":
            return self.down_proj(self.up_proj(x).relu_().square_())
        h = F.silu(self.gate_proj(x), inplace=True)  # [N, intermediate]; in place: fewer big buffers
        return self.down_proj(h.mul_(self.up_proj(x)))


class DomainAwareLinear(nn.Module):
    """A linear layer with one weight/bias per embodiment domain, stored as embedding rows
    (`fc.weight[d]` is the flattened [in, out] matrix of domain d, `bias.weight[d]` its bias)."""

    def __init__(self, input_size: int, output_size: int, num_domains: int):
        super().__init__()
        self.input_size = input_size
        self.output_size = output_size
        self.num_domains = num_domains
        self.fc = nn.Embedding(num_domains, input_size * output_size)
        self.bias = nn.Embedding(num_domains, output_size)

    def check_domains(self, domain_ids: torch.Tensor) -> None:
        bad = (domain_ids < 0) | (domain_ids >= self.num_domains)
        if bool(bad.any()):
            raise ValueError(
                f"action domain ids must be in [0, {self.num_domains}), got {sorted(set(domain_ids[bad].tolist()))}"
            )

    def forward(self, x: torch.Tensor, domain_ids: torch.Tensor) -> torch.Tensor:
        """x [N, in], domain_ids [N] -> [N, out]. Tokens are grouped by domain: one matmul per domain."""
        domain_ids = domain_ids.to(x.device)
        out = x.new_empty(x.shape[0], self.output_size)
        for d in torch.unique(domain_ids).tolist():
            rows = (domain_ids == d).nonzero().squeeze(1)
            weight = self.fc.weight[d].view(self.input_size, self.output_size)
            out[rows] = torch.addmm(self.bias.weight[d], x[rows], weight).to(out.dtype)  # .to: autocast
        return out


def timestep_sinusoids(timesteps: torch.Tensor, dim: int = 256, max_period: float = 10000.0) -> torch.Tensor:
    """[N] -> [N, dim] float32 sinusoidal features, cosine half first."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half)
    args = timesteps.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepEmbedder(nn.Module):
    """Sinusoidal features -> Linear -> SiLU -> Linear (kept in float32 like the reference)."""

    def __init__(self, hidden_size: int, in_channels: int = 256):
        super().__init__()
        self.in_channels = in_channels
        self.linear_1 = nn.Linear(in_channels, hidden_size)
        self.linear_2 = nn.Linear(hidden_size, hidden_size)

    def forward(self, timesteps: torch.Tensor) -> torch.Tensor:
        x = timestep_sinusoids(timesteps, self.in_channels).to(self.linear_1.weight.dtype)
        return self.linear_2(F.silu(self.linear_1(x)))


def _head_norm(cfg: Cosmos3Config) -> nn.Module:
    return RMSNorm(cfg.head_dim, cfg.rms_norm_eps, nemotron=cfg.norm_type == "nemotron")


class MoTAttention(nn.Module):
    """Projections and per-head q/k norms of both pathways (`to_*` understanding, `add_*` generation)."""

    def __init__(self, cfg: Cosmos3Config):
        super().__init__()
        h, d, nq, nkv, bias = (
            cfg.hidden_size,
            cfg.head_dim,
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.attention_bias,
        )
        self.num_heads, self.num_kv_heads, self.head_dim = nq, nkv, d
        self.to_q = Linear(h, nq * d, bias=bias)
        self.to_k = Linear(h, nkv * d, bias=bias)
        self.to_v = Linear(h, nkv * d, bias=bias)
        self.to_out = Linear(nq * d, h, bias=bias)
        self.norm_q = _head_norm(cfg) if cfg.qk_norm_for_text else nn.Identity()
        self.norm_k = _head_norm(cfg) if cfg.qk_norm_for_text else nn.Identity()
        use_gen_k_norm = cfg.use_und_k_norm_for_gen and not cfg.qk_norm_for_text
        self.k_norm_und_for_gen = _head_norm(cfg) if use_gen_k_norm else None
        self.add_q_proj = Linear(h, nq * d, bias=bias)
        self.add_k_proj = Linear(h, nkv * d, bias=bias)
        self.add_v_proj = Linear(h, nkv * d, bias=bias)
        self.to_add_out = Linear(nq * d, h, bias=bias)
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
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        layout: AttentionLayout,
        layer_idx: int,
        out_rows: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Generation pass over the packed tokens of all sequences. x [N, H] -> [N, H], or [R, H] for
        `out_rows` [R] only: every token still contributes its K/V, but the output projection and
        MLP run on those rows alone (for the last layer, whose clean-token outputs nobody reads)."""
        attn = self.self_attn
        n = x.shape[0]
        hn = self.input_layernorm_moe_gen(x)
        q = attn.norm_added_q(attn.add_q_proj(hn).view(n, attn.num_heads, attn.head_dim))
        k = attn.norm_added_k(attn.add_k_proj(hn).view(n, attn.num_kv_heads, attn.head_dim))
        v = attn.add_v_proj(hn).view(n, attn.num_kv_heads, attn.head_dim)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        o = layout.attend(q, k, v, layer_idx)  # [N, heads * D]
        if out_rows is not None:
            x, o = x[out_rows], o[out_rows]  # [R, H], [R, heads * D]
        x = x + attn.to_add_out(o)
        return x + self.mlp_moe_gen(self.post_attention_layernorm_moe_gen(x))
