"""Building blocks of the Cosmos3 generator: norms, MLPs, the per-domain linear, timestep embedding.

Submodule and parameter names equal the published checkpoint's (e.g. `gate_proj`, `fc`, `linear_1`).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


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
            self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.hidden_act == "relu2":
            return self.down_proj(torch.relu(self.up_proj(x)).square())
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


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
            out[rows] = torch.addmm(self.bias.weight[d], x[rows], weight)
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
