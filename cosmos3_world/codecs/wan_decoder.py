"""A whole-clip causal decoder for diffusers' ``AutoencoderKLWan`` (Wan 2.1 and 2.2 layouts).

diffusers decodes one latent frame at a time, carrying a cache of the last two input frames of
every causal convolution from one call to the next. Over a whole clip that cache is equivalent
to zero-padding each causal convolution by two frames in time, except in two places that treat
the first latent frame specially, handled here explicitly:

* ``upsample3d`` resamplers skip the temporal upsampling on the first latent frame and run their
  ``time_conv`` over the later frames only (zero-padded, never seeing frame 0);
* ``DupUp3D`` shortcuts of residual up blocks drop the first ``factor_t - 1`` copies of frame 0.

:class:`WanFastDecoder` runs the diffusers module's own parameters with its own forward pass:

* one pass over all frames (or a few frames per pass, with a two-frame causal cache per
  convolution, to bound memory), activations in the layout of the convolutions (channels-last
  on CPU), convolutions always through oneDNN on CPU;
* the causal context written once, with the activation, into the buffer a convolution reads;
  with zero context the first output frames skip the taps on the zero frames;
* RMS norm + SiLU as a float32 reduction, one multiply by an outer-product scale and an
  in-place SiLU (diffusers: ~8 passes with float32 copies); residual adds in place;
* each ``nearest 2x upsample + 3x3 conv`` folded into one stride-2 transposed convolution
  (2.25x fewer multiply-adds, same result up to float rounding).

Results equal ``vae.decode`` to float rounding; in bfloat16 the error against float32 is at or
below diffusers' own (tested; figures in the README).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from diffusers.models.autoencoders import autoencoder_kl_wan as wan
from torch import nn

from ..kernels import conv3d, onednn_applies

__all__ = ["WanFastDecoder", "unsupported_reason"]

_CL3D = torch.channels_last_3d
# Elementwise passes over activations run on this many elements at a time (~2 MB in float32).
_CHUNK_ELEMENTS = 1 << 19


def _layout(x: torch.Tensor) -> torch.memory_format:
    """The memory format to give tensors derived from ``x``."""
    return _CL3D if x.is_contiguous(memory_format=_CL3D) and not x.is_contiguous() else torch.contiguous_format


def unsupported_reason(vae: nn.Module) -> str | None:
    """Why :class:`WanFastDecoder` cannot run ``vae``'s decoder (None when it can).

    Checks the structure the fast forward relies on, so that a diffusers release that changes the
    Wan modules makes callers fall back to ``vae.decode`` instead of computing something else.
    """
    dec = getattr(vae, "decoder", None)
    if not isinstance(dec, wan.WanDecoder3d) or not isinstance(
        getattr(vae, "post_quant_conv", None), wan.WanCausalConv3d
    ):
        return "no WanDecoder3d decoder / WanCausalConv3d post_quant_conv"
    for name, m in [("post_quant_conv", vae.post_quant_conv), *dec.named_modules()]:
        if isinstance(m, wan.WanCausalConv3d):
            if m.stride != (1, 1, 1) or m.dilation != (1, 1, 1) or m.groups != 1 or m.padding != (0, 0, 0):
                return f"{name}: unexpected causal conv geometry"
            pw0, pw1, ph0, ph1, _, pt1 = m._padding
            if pw0 != pw1 or ph0 != ph1 or pt1 != 0:
                return f"{name}: unexpected causal padding {m._padding}"
        elif isinstance(m, nn.Conv3d):
            return f"{name}: a Conv3d that is not a WanCausalConv3d"
        elif isinstance(m, wan.WanResidualBlock):
            if not isinstance(m.nonlinearity, nn.SiLU):
                return f"{name}: non-SiLU activation"
        elif isinstance(m, wan.WanRMS_norm):
            if not m.channel_first:
                return f"{name}: channel-last RMS norm"
        elif isinstance(m, wan.WanResample):
            if m.mode not in ("upsample2d", "upsample3d"):
                return f"{name}: resample mode {m.mode}"
            up, conv = m.resample[0], m.resample[1]
            if (tuple(up.scale_factor or ()) != (2.0, 2.0) or up.mode not in ("nearest", "nearest-exact")
                    or conv.kernel_size != (3, 3) or conv.stride != (1, 1) or conv.padding != (1, 1)
                    or conv.dilation != (1, 1) or conv.groups != 1):  # fmt: skip
                return f"{name}: unexpected upsampling"
            if m.mode == "upsample3d" and m.time_conv.out_channels != 2 * m.time_conv.in_channels:
                return f"{name}: unexpected time_conv"
        elif isinstance(m, wan.WanUpBlock | wan.WanResidualUpBlock | wan.WanMidBlock | wan.WanAttentionBlock):
            continue
        elif isinstance(m, wan.DupUp3D):
            if m.out_channels * m.factor != m.in_channels * m.repeats:
                return f"{name}: unexpected DupUp3D"
    if not isinstance(dec.nonlinearity, nn.SiLU):
        return "decoder: non-SiLU activation"
    return None


class WanFastDecoder:
    """Decodes latents with the weights of ``vae`` (a diffusers ``AutoencoderKLWan``), equal to ``vae.decode``.

    ``decoder(z)`` takes raw (de-normalised) latents ``[B, z_dim, t, h, w]`` in the VAE's dtype and
    returns pixels ``[B, 3, T, H, W]`` clamped to [-1, 1], like ``vae.decode(z).sample``.
    Long clips at high resolution are decoded a few latent frames per pass, with a causal cache of
    two frames per convolution, so that no activation exceeds ``max_activation_bytes`` (default
    1 GiB; the clips of a world-model rollout take one pass). Derived weights (RMS scales, folded
    upsampling kernels) are cached and recomputed whenever a parameter changes.
    """

    def __init__(self, vae: nn.Module, max_activation_bytes: int = 1 << 30) -> None:
        self.vae = vae
        self.max_activation_bytes = max_activation_bytes
        # Geometry from the architecture (not the config's declared scale factors).
        modes = [m.mode for m in vae.decoder.modules() if isinstance(m, wan.WanResample)]
        self._patch = vae.config.patch_size or 1
        self._spatial = 2 ** len(modes)  # per decoder pass, before unpatchify
        self._temporal = 2 ** modes.count("upsample3d")
        self._widest = max(m.out_channels for m in vae.decoder.modules() if isinstance(m, nn.Conv3d | nn.Conv2d))
        self._derived: dict[tuple[int, str], tuple[tuple, torch.Tensor]] = {}

    # --- derived weights ----------------------------------------------------------------------

    def _cached(self, module: nn.Module, kind: str, sources: tuple[torch.Tensor, ...], build) -> torch.Tensor:
        key = (id(module), kind)
        stamp = tuple((t.data_ptr(), t._version, t.dtype, t.device, t.shape) for t in sources)
        hit = self._derived.get(key)
        if hit is None or hit[0] != stamp:
            hit = (stamp, build())
            self._derived[key] = hit
        return hit[1]

    def _rms_weight(self, norm: nn.Module) -> torch.Tensor:
        """``sqrt(C) * gamma`` as float32 ``[C]``: WanRMS_norm is ``F.normalize(x, dim=1) * sqrt(C) * gamma + bias``."""
        gamma = norm.gamma

        def build() -> torch.Tensor:
            return gamma.detach().float().flatten() * math.sqrt(gamma.numel())

        return self._cached(norm, "rms", (gamma,), build)

    def _up_kernel(self, conv: nn.Conv2d) -> torch.Tensor:
        """``nearest 2x upsample + conv3x3(pad 1)`` == ``conv_transpose2d(stride 2, pad 1)`` with this 4x4 kernel.

        Along one axis, output row ``2h + a`` reads input rows ``h - 1 + a`` and ``h + a``; for
        ``a = 0`` with taps ``(w0, w1 + w2)``, for ``a = 1`` with ``(w0 + w1, w2)``. A transposed
        convolution with kernel ``k = (w2, w1 + w2, w0 + w1, w0)`` sends input row ``h`` to output
        ``2h - 1 + j`` with tap ``k[j]``, which is the same map.
        """
        weight = conv.weight

        def build() -> torch.Tensor:
            w = weight.detach().float()  # [Cout, Cin, 3, 3]
            fold = torch.tensor([[0, 0, 1], [0, 1, 1], [1, 1, 0], [1, 0, 0]], dtype=w.dtype, device=w.device)
            k = torch.einsum("ya,xb,oiab->ioyx", fold, fold, w)  # [Cin, Cout, 4, 4]
            return k.to(weight.dtype).contiguous(memory_format=torch.channels_last)

        return self._cached(conv, "up", (weight,), build)

    def _kernel(self, conv: nn.Conv3d, kt0: int, wide: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``conv``'s weight from time tap ``kt0`` on, optionally widened (see ``_conv``), and bias."""
        weight, bias = conv.weight, conv.bias
        if kt0 == 0 and not wide:
            return weight, bias

        def build() -> torch.Tensor:
            w = weight.detach()[:, :, kt0:]
            if wide:  # output channel p * C + o is output o at column 2w + p: kernel shifted by p
                co, ci, kt, kh, kw = w.shape
                shifted = w.new_zeros((2, co, ci, kt, kh, kw + 1))
                shifted[0, ..., :kw] = w
                shifted[1, ..., 1:] = w
                w = shifted.view(2 * co, ci, kt, kh, kw + 1)
            return w.contiguous(memory_format=_CL3D if onednn_applies(weight) else torch.contiguous_format)

        weight = self._cached(conv, f"kernel{kt0}{'w' if wide else ''}", (weight,), build)
        if wide and bias is not None:
            bias = self._cached(conv, "bias_w", (bias,), lambda: bias.detach().repeat(2))
        return weight, bias

    def _conv(self, x: torch.Tensor, conv: nn.Conv3d, padding: tuple[int, int, int], kt0: int = 0) -> torch.Tensor:
        """``conv`` (stride 1, 'same' padding in H and W) over ``x``, already padded in time, with the time
        taps from ``kt0`` on.

        oneDNN computes output channels in blocks of 16 and is slow on a trailing half block:
        a 24-channel output (the last stage of a narrow decoder) runs faster as 48
        channels holding outputs ``(w, w + 1)`` for every even ``w`` (stride 2, one more kernel
        column, 4/3 of the arithmetic), which in the channels-last layout is the same memory.
        """
        co, kw = conv.out_channels, conv.kernel_size[2]
        b, _, _, h, w = x.shape
        wide = co % 16 == 8 and co < 32 and kw > 1 and kw == 2 * padding[2] + 1 and w % 2 == 0 and onednn_applies(x)
        weight, bias = self._kernel(conv, kt0, wide)
        if not wide:
            return conv3d(x, weight, bias, padding)
        y = conv3d(x, weight, bias, padding, (1, 1, 2))  # [B, 2C, T', H, W / 2]
        return y.view(b, 2, co, y.shape[2], h, w // 2).permute(0, 2, 3, 4, 5, 1).reshape(b, co, y.shape[2], h, w)

    # --- building blocks ----------------------------------------------------------------------

    def _rms_norm(self, x: torch.Tensor, norm: nn.Module, out: torch.Tensor) -> torch.Tensor:
        """``out = norm(x)`` for a channel-first WanRMS_norm: ``x / |x| * w`` over channels, ``w = sqrt(C) gamma``.

        In bfloat16 the per-pixel factor times the per-channel weight is built as an outer
        product by a matrix multiply (a bfloat16 broadcast multiply over rows of C < 64 channels
        runs scalar on CPU), from the float32 ``1 / |x|`` split into bfloat16 high and low parts,
        so that it is rounded once: no per-pixel rounding error common to all channels, and
        accuracy at least diffusers' (which normalises in float32 and rounds four times).
        """
        b, c = x.shape[:2]
        channel = (1, c, *([1] * (x.ndim - 2)))
        weight = self._rms_weight(norm)
        if x.dtype == torch.float32:
            n = torch.linalg.vector_norm(x, dim=1, keepdim=True).clamp_min_(1e-12)  # F.normalize's eps
            torch.mul(x, torch.reciprocal_(n), out=out).mul_(weight.view(channel))
        elif x.dtype == torch.bfloat16:
            n = torch.linalg.vector_norm(x, dim=1, keepdim=True, dtype=torch.float32).clamp_min_(1e-12)
            inv = torch.reciprocal_(n).reshape(-1, 1)
            # (s_hi + s_lo) (w_hi + w_lo) ~ s_hi w_hi + s_hi w_lo + s_lo w_hi, summed in float32.
            s_hi = inv.to(x.dtype)
            s_lo = (inv - s_hi.float()).to(x.dtype)
            w_hi = weight.to(x.dtype)
            w_lo = (weight - w_hi.float()).to(x.dtype)
            scale = torch.mm(torch.cat([s_hi, s_hi, s_lo], dim=1), torch.stack([w_hi, w_lo, w_hi]))
            torch.mul(x, scale.view(b, *x.shape[2:], c).movedim(-1, 1), out=out)
        else:  # float16 & co: the factor could overflow; normalise in float32 like diffusers
            out.copy_(F.normalize(x.float(), dim=1) * weight.view(channel))
        if isinstance(norm.bias, torch.Tensor):
            out.add_(norm.bias.view(channel))
        return out

    def _norm_silu(self, x: torch.Tensor, norm: nn.Module, out: torch.Tensor) -> torch.Tensor:
        """``out = silu(norm(x))``, a few frames at a time so that the temporaries stay in cache."""
        step = max(1, _CHUNK_ELEMENTS // x[:, :, :1].numel())
        for i in range(0, x.shape[2], step):
            F.silu(self._rms_norm(x[:, :, i : i + step], norm, out[:, :, i : i + step]), inplace=True)
        return out

    def _causal_conv(
        self, x: torch.Tensor, conv: nn.Conv3d, state: dict | None, norm: nn.Module | None = None
    ) -> torch.Tensor:
        """WanCausalConv3d over all frames of ``silu(norm(x))`` (or of ``x``), stride 1.

        The activation is written once, into the buffer the convolution reads, after the causal
        context: two zero frames, or the last two input frames of the previous pass. With zero
        context, the first output frames skip the taps on the zeros: frame 0 uses the last time
        tap only, frame 1 the last two (a third, a sixth of a frame's work), at the price of
        concatenating the three results, worth it from 32x32 pixels.
        """
        pw, _, ph, _, pt, _ = conv._padding
        padding = (0, ph, pw)
        b, c, t, h, w = x.shape
        prev = state.get(conv) if state is not None and pt else None
        split = pt == 2 and conv.kernel_size[0] == 3 and prev is None and (t == 1 or h * w >= 1024)
        lead = 0 if split else pt
        if lead == 0 and norm is None:
            buf = body = x
        else:
            buf = torch.empty((b, c, lead + t, h, w), dtype=x.dtype, device=x.device, memory_format=_layout(x))
            if lead and prev is None:
                buf[:, :, :lead].zero_()
            elif lead:
                buf[:, :, :lead].copy_(prev)
            body = buf[:, :, lead:]
            if norm is not None:
                self._norm_silu(x, norm, body)
            else:
                body.copy_(x)
        if state is not None and pt:  # the next pass's context: the last pt frames of (context, body)
            if t >= pt:
                state[conv] = body[:, :, -pt:].clone()
            else:
                context = prev if prev is not None else body.new_zeros((b, c, pt, h, w))
                state[conv] = torch.cat([context[:, :, t:], body], dim=2)
        if not split:
            return self._conv(buf, conv, padding)
        first = self._conv(body[:, :, :1], conv, padding, kt0=2)
        if t == 1:
            return first
        out = torch.empty((b, conv.out_channels, t, *first.shape[3:]), dtype=x.dtype, device=x.device,
                          memory_format=_layout(body))  # fmt: skip
        out[:, :, :1].copy_(first)
        out[:, :, 1:2].copy_(self._conv(body[:, :, :2], conv, padding, kt0=1))
        if t >= 3:
            out[:, :, 2:].copy_(self._conv(body, conv, padding))
        return out

    def _residual(self, x: torch.Tensor, block: nn.Module, state: dict | None) -> torch.Tensor:
        """WanResidualBlock (dropout is inactive: the VAE runs in eval mode)."""
        shortcut = block.conv_shortcut
        h = x if isinstance(shortcut, nn.Identity) else self._causal_conv(x, shortcut, state)
        y = self._causal_conv(x, block.conv1, state, block.norm1)
        y = self._causal_conv(y, block.conv2, state, block.norm2)
        return y.add_(h)

    def _attention(self, x: torch.Tensor, block: nn.Module) -> torch.Tensor:
        """WanAttentionBlock: single-head self-attention within each frame."""
        b, c, t, h, w = x.shape
        normed = self._rms_norm(x, block.norm, torch.empty_like(x))
        tokens = normed.permute(0, 2, 3, 4, 1).reshape(b * t, h * w, c)
        qkv = F.linear(tokens, block.to_qkv.weight.view(3 * c, c), block.to_qkv.bias)
        q, k, v = qkv.unsqueeze(1).chunk(3, dim=-1)
        out = F.scaled_dot_product_attention(q, k, v).squeeze(1)
        out = F.linear(out, block.proj.weight.view(c, c), block.proj.bias)
        out = out.view(b, t, h, w, c).permute(0, 4, 1, 2, 3)
        return out.add_(x) if out.is_contiguous(memory_format=_layout(x)) else x + out

    def _upsample_spatial(self, x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
        """Per frame: nearest-exact 2x upsampling then a 3x3 conv, as one transposed convolution."""
        b, c, t, h, w = x.shape
        frames = x.transpose(1, 2).reshape(b * t, c, h, w)
        y = F.conv_transpose2d(frames, self._up_kernel(conv), conv.bias, stride=2, padding=1)
        return y.view(b, t, *y.shape[1:]).transpose(1, 2)

    def _resample(self, x: torch.Tensor, resample: nn.Module, state: dict | None) -> torch.Tensor:
        """WanResample in 'upsample2d' / 'upsample3d' mode."""
        if resample.mode == "upsample3d":
            first = state is None or not state.get((resample, "started"))
            rest = x[:, :, 1:] if first else x
            if rest.shape[2]:
                b, c, t, h, w = rest.shape
                y = self._causal_conv(rest, resample.time_conv, state)  # [B, 2C, t, H, W]
                # Channel block i of the time conv is output frame 2k + i.
                y = y.view(b, 2, c, t, h, w).permute(0, 2, 3, 1, 4, 5)
                frames = 2 * t + (1 if first else 0)
                out = torch.empty((b, c, frames, h, w), dtype=x.dtype, device=x.device, memory_format=_layout(x))
                if first:
                    out[:, :, :1].copy_(x[:, :, :1])
                out[:, :, frames - 2 * t :].view(b, c, t, 2, h, w).copy_(y)
                x = out
            if state is not None:
                state[(resample, "started")] = True
        elif resample.mode != "upsample2d":
            raise NotImplementedError(f"WanResample mode {resample.mode!r} is not a decoder mode")
        return self._upsample_spatial(x, resample.resample[1])

    @staticmethod
    def _add_dup_up(out: torch.Tensor, x: torch.Tensor, dup: nn.Module, first: bool) -> torch.Tensor:
        """``out += DupUp3D(x)`` (dropping the first ``factor_t - 1`` frames of the first pass)."""
        ft, fs, r = dup.factor_t, dup.factor_s, dup.repeats
        b, _, t, h, w = x.shape
        co = dup.out_channels
        # Output channel o at sub-position (i, j, k) of (ft, fs, fs) reads input channel
        # (o * factor + (i * fs + j) * fs + k) // r: the last sub-positions, r of them, share one.
        sub = [ft, fs, fs]
        kept, rest = list(sub), r
        for d in (2, 1, 0):
            if rest % sub[d]:
                break
            kept[d], rest = 1, rest // sub[d]
        if rest != 1:  # the repeats do not split along the sub-positions: materialise the shortcut
            src = x.repeat_interleave(r, dim=1).view(b, co, ft, fs, fs, t, h, w)
        else:
            groups = kept[0] * kept[1] * kept[2]
            if groups > 1:
                # Channel o * groups + q -> q * co + o, so each sub-position reads contiguous channels.
                src = F.channel_shuffle(x, co).view(b, *kept, co, t, h, w).permute(0, 4, 1, 2, 3, 5, 6, 7)
            else:
                src = x.view(b, co, 1, 1, 1, t, h, w)
        src = src.permute(0, 1, 5, 2, 6, 3, 7, 4)  # [B, C, t, ft, h, fs, w, fs], broadcasting where kept is 1
        # A bfloat16 add broadcasting over rows shorter than the CPU vector loop (2 x 32 lanes)
        # runs scalar; copying the broadcast into a temporary (no arithmetic) and adding densely is faster.
        dense = out.dtype == torch.bfloat16 and co < 64 and out.device.type == "cpu"
        target = torch.empty_like(out) if dense else out
        assign = torch.Tensor.copy_ if dense else torch.Tensor.add_
        if first and ft > 1:  # frame 0 keeps only its last copy
            assign(target[:, :, :1].view(b, co, 1, 1, h, fs, w, fs), src[:, :, :1, -1:])
            if t > 1:
                assign(target[:, :, 1:].view(b, co, t - 1, ft, h, fs, w, fs), src[:, :, 1:])
        else:
            assign(target.view(b, co, t, ft, h, fs, w, fs), src)
        return out.add_(target) if dense else out

    def _up_block(self, x: torch.Tensor, block: nn.Module, state: dict | None) -> torch.Tensor:
        """WanResidualUpBlock (Wan 2.2) or WanUpBlock (Wan 2.1)."""
        first = state is None or not state.get((block, "started"))
        x_in = x
        for resnet in block.resnets:
            x = self._residual(x, resnet, state)
        upsampler = getattr(block, "upsampler", None)
        if upsampler is None and getattr(block, "upsamplers", None) is not None:
            upsampler = block.upsamplers[0]
        if upsampler is not None:
            x = self._resample(x, upsampler, state)
        dup = getattr(block, "avg_shortcut", None)
        if dup is not None:
            x = self._add_dup_up(x, x_in, dup, first)
        if state is not None:
            state[(block, "started")] = True
        return x

    # --- the decoder --------------------------------------------------------------------------

    def _decoder_pass(self, z: torch.Tensor, state: dict | None) -> torch.Tensor:
        """post_quant_conv + WanDecoder3d over the latent frames ``z`` (one pass)."""
        vae = self.vae
        dec = vae.decoder
        x = self._causal_conv(z, vae.post_quant_conv, state)
        x = self._causal_conv(x, dec.conv_in, state)
        mid = dec.mid_block
        x = self._residual(x, mid.resnets[0], state)
        for attn, resnet in zip(mid.attentions, mid.resnets[1:]):
            if attn is not None:
                x = self._attention(x, attn)
            x = self._residual(x, resnet, state)
        for block in dec.up_blocks:
            x = self._up_block(x, block, state)
        return self._causal_conv(x, dec.conv_out, state, dec.norm_out)

    def _unpatchify_into(self, out: torch.Tensor, x: torch.Tensor) -> None:
        """``out = unpatchify(x)``: channel ``(c, p1, p2)`` of a patch is pixel ``(2h + p2, 2w + p1)`` of channel c."""
        p = self._patch
        b, cp, t, h, w = x.shape
        c = cp // (p * p)
        out.view(b, c, t, h, p, w, p).copy_(x.view(b, c, p, p, t, h, w).permute(0, 1, 4, 5, 3, 6, 2))

    def max_frames_per_pass(self, z: torch.Tensor) -> int:
        """Latent frames per pass keeping every activation of ``z``'s decode within ``max_activation_bytes``.

        A bound, not an estimate: the widest decoder layer times the output's size per latent frame.
        """
        b, _, _, h, w = z.shape
        per_frame = b * self._widest * self._temporal * (h * self._spatial) * (w * self._spatial) * z.element_size()
        return max(1, self.max_activation_bytes // per_frame)

    @torch.no_grad()
    def __call__(self, z: torch.Tensor, frames_per_pass: int | None = None) -> torch.Tensor:
        """Raw latents ``[B, z_dim, t, h, w]`` -> pixels ``[B, C, T, H, W]`` in [-1, 1], ``frames_per_pass``
        latent frames at a time (None: as many as :meth:`max_frames_per_pass` allows)."""
        if frames_per_pass is not None and frames_per_pass < 1:
            raise ValueError(f"frames_per_pass must be >= 1 or None, got {frames_per_pass}")
        step = frames_per_pass or self.max_frames_per_pass(z)
        z = z.contiguous(memory_format=_CL3D if onednn_applies(z) else torch.contiguous_format)
        b, _, frames, h, w = z.shape
        p, tf, sf = self._patch, self._temporal, self._spatial * self._patch
        channels = self.vae.decoder.conv_out.out_channels // (p * p)
        out = torch.empty((b, channels, 1 + tf * (frames - 1), h * sf, w * sf), dtype=z.dtype, device=z.device)
        state: dict | None = None if step >= frames else {}
        done = 0
        for i in range(0, frames, step):
            part = self._decoder_pass(z[:, :, i : i + step], state)
            self._unpatchify_into(out[:, :, done : done + part.shape[2]], part)
            done += part.shape[2]
        return out.clamp_(-1.0, 1.0)
