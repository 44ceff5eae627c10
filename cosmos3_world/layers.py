"""Building blocks of the Cosmos3 generator: norms, MLPs, the per-domain linear, timestep embedding.

Submodule and parameter names equal the published checkpoint's (e.g. `gate_proj`, `fc`, `linear_1`).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

# oneDNN's linear, when this torch build has it (a fallback keeps other builds working).
_HAS_ONEDNN_LINEAR = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x [..., K] @ weight [N, K].T (+ bias [N]) -> [..., N] by oneDNN on CPU; float32 or bf16, no autograd.

    PyTorch sends float32 CPU matmuls to MKL, whose sgemm runs AVX2 code on AMD CPUs: about half
    the speed of oneDNN's AVX-512 kernel there (same float32 arithmetic, another summation order)."""
    if not _HAS_ONEDNN_LINEAR:
        return F.linear(x, weight, bias)
    if torch.compiler.is_compiling():  # inductor can't lower this op with non-constant weights
        return _onednn_linear_op(x, weight, bias)
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


# The same as an opaque custom op for torch.compile (in eager its dispatch costs ~3% of a step).
@torch.library.custom_op("cosmos3_world::onednn_linear", mutates_args=())
def _onednn_linear_op(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


@_onednn_linear_op.register_fake
def _(x, weight, bias=None):
    return x.new_empty(*x.shape[:-1], weight.shape[0])


def linear(x: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
    """layer(x), through `onednn_linear` for float32 CPU inference (bf16 linears already run on oneDNN)."""
    if x.dtype == torch.float32 and x.device.type == "cpu" and not torch.is_grad_enabled():
        return onednn_linear(x, layer.weight, layer.bias)
    return layer(x)


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
            return linear(linear(x, self.up_proj).relu_().square_(), self.down_proj)
        h = F.silu(linear(x, self.gate_proj), inplace=True)  # [N, intermediate]; in place: fewer big buffers
        return linear(h.mul_(linear(x, self.up_proj)), self.down_proj)


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
