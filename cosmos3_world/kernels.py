"""The one dispatch point for compute kernels: linears, attention, convolutions.

Each op has a plain PyTorch reference and a CPU fast path through oneDNN; the dispatcher takes
the fast path for CPU float32/bfloat16 inference and the reference everywhere else (GPUs,
autograd, other dtypes), like transformers' `ALL_ATTENTION_FUNCTIONS`; both are public so tests
and benchmarks can run them side by side. Why the fast paths exist: PyTorch sends float32 CPU
matmuls to MKL (AVX2 code on AMD CPUs) and small batch-1 float32 convolutions to a native kernel
several times slower than oneDNN's (figures in the README's Benchmarks).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

# oneDNN's linear, when this torch build has it.
_HAS_ONEDNN_LINEAR = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def native_bf16() -> bool:
    """True when this CPU multiplies bfloat16 in hardware (AVX-512 BF16 or AMX); elsewhere (AVX2) oneDNN emulates
    bf16 matmuls, far slower than float32 (`bench/train_step.py`), so callers choosing a dtype fall back."""
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


# oneDNN's bf16 primitives need AVX-512 (BW/VL/DQ) or AVX-NE-CONVERT; on an AVX2-only CPU they refuse to build.
_ONEDNN_BF16 = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def onednn_applies(x: torch.Tensor) -> bool:
    """True where the oneDNN paths can run: CPU tensors in float32, or bfloat16 where this CPU's oneDNN has it."""
    dtypes = (torch.float32, torch.bfloat16) if _ONEDNN_BF16 else (torch.float32,)
    return x.device.type == "cpu" and x.dtype in dtypes and torch.backends.mkldnn.is_available()


# ---------------------------------------------------------------------------------------------
# Linear
# ---------------------------------------------------------------------------------------------


def onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x [..., K] @ weight [N, K].T (+ bias [N]) -> [..., N] by oneDNN on CPU; float32 or bf16, no autograd."""
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


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear, through oneDNN for float32 CPU inference (bf16 CPU linears already run on oneDNN)."""
    if x.dtype == torch.float32 and onednn_applies(x) and not torch.is_grad_enabled():
        return onednn_linear(x, weight, bias)
    return F.linear(x, weight, bias)


class Linear(nn.Linear):
    """`nn.Linear` (same parameters and state dict) whose forward goes through `linear`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)


# ---------------------------------------------------------------------------------------------
# Attention
# ---------------------------------------------------------------------------------------------


def attention_eager(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Unmasked softmax(q k^T / sqrt(D)) v by PyTorch's SDPA. q [B, M, D], k/v [B, L, D] -> [B, M, D].

    Called with 4-D [1, B, ., D] views: SDPA sends 3-D inputs to its math path (3.5x slower with autograd on CPU).
    """
    return F.scaled_dot_product_attention(q[None], k[None], v[None])[0]


def attention_onednn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The same on CPU with both products as oneDNN matmuls (p v in bf16 for bf16 inputs).

    Precision as PyTorch's CPU flash kernel: float32 scores and softmax, probabilities rounded to
    the input dtype for p v. Scores [M, L] are made one batch row at a time (cache-sized).
    """
    qs, kf = q.float() * q.shape[-1] ** -0.5, k.float()  # [B, M, D], [B, L, D] float32
    vt = v.transpose(1, 2).contiguous()  # [B, D, L]
    out = torch.empty_like(q)
    for i in range(q.shape[0]):
        probs = torch.softmax(onednn_linear(qs[i], kf[i]), dim=-1).to(v.dtype)  # [M, L]
        out[i] = onednn_linear(probs, vt[i])  # [M, D]
    return out


ATTENTION_FUNCTIONS = {"eager": attention_eager, "onednn": attention_onednn}


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Unmasked attention q [B, M, D], k/v [B, L, D] -> [B, M, D] by the implementation that applies."""
    return ATTENTION_FUNCTIONS["onednn" if onednn_applies(q) and not torch.is_grad_enabled() else "eager"](q, k, v)


# ---------------------------------------------------------------------------------------------
# Convolution
# ---------------------------------------------------------------------------------------------


def conv3d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding, stride=(1, 1, 1)):
    """`F.conv3d`, through oneDNN on CPU (PyTorch sends small batch-1 float32 inputs to a slow kernel)."""
    if onednn_applies(x):
        return torch.mkldnn_convolution(x, weight, bias, padding, stride, (1, 1, 1), 1)
    return F.conv3d(x, weight, bias, stride=stride, padding=padding)


def _onednn_conv_forward(self: nn.Conv2d | nn.Conv3d, x: torch.Tensor, weight, bias) -> torch.Tensor:
    """A conv layer's `_conv_forward` through oneDNN where it applies (the class's own otherwise)."""
    if onednn_applies(x) and self.padding_mode == "zeros" and not isinstance(self.padding, str):
        return torch.mkldnn_convolution(x, weight, bias, self.padding, self.stride, self.dilation, self.groups)
    return type(self)._conv_forward(self, x, weight, bias)


_PLAIN_CONV_FORWARDS = (nn.Conv2d._conv_forward, nn.Conv3d._conv_forward)


def route_convs_through_onednn(module: nn.Module) -> None:
    """Send the plain Conv2d/Conv3d layers under `module` (this instance only) through `_onednn_conv_forward`.

    The layers keep their own forward; pickle and deepcopy keep the routing.
    """
    for m in module.modules():
        if getattr(type(m), "_conv_forward", None) in _PLAIN_CONV_FORWARDS:
            m._conv_forward = functools.partial(_onednn_conv_forward, m)
